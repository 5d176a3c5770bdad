package nets

import "github.com/ringtrain/ringtrain/nn"

func init() {
	register(Spec{
		Name:            "lenet",
		Description:     "LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: conv5-6, pool, conv5-16, pool, fc120, fc84, fc",
		DefaultInput:    28,
		DefaultChannels: 1,
		MinInput:        12,
		Preprocess:      "unit",
		build:           buildLeNet,
	})
}

// buildLeNet: features.{0 conv 6@5×5 pad 2, 1 relu, 2 maxpool, 3 conv 16@5×5,
// 4 relu, 5 maxpool}, classifier.{0 fc 120, 2 fc 84, 4 fc classes}.
func buildLeNet(cfg Config) (nn.Module, error) {
	features := nn.NewSequential(
		nn.Conv(cfg.InChannels, 6, 5, 1, 2, true), nn.NewReLU(), nn.NewMaxPool2D(2, 2, 0, false),
		nn.Conv(6, 16, 5, 1, 0, true), nn.NewReLU(), nn.NewMaxPool2D(2, 2, 0, false),
	)
	root := nn.NewNamedSequential(nn.Child{Name: "features", Module: features})
	if cfg.NoTop {
		if p := globalPool(cfg); p != nil {
			root.AddNamed("pool", p)
		}
		return root, nil
	}
	s := (cfg.InputSize/2 - 4) / 2 // side after the second pool
	classifier := nn.NewSequential(
		nn.NewLinear(16*s*s, 120, true), nn.NewReLU(),
		nn.NewLinear(120, 84, true), nn.NewReLU(),
		nn.NewLinear(84, cfg.Classes, true),
	)
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("classifier", classifier)
	return root, nil
}
