package nets

import "github.com/ringtrain/ringtrain/nn"

func init() {
	register(Spec{
		Name:            "alexnet",
		Description:     "AlexNet, torchvision's single-tower variant (Krizhevsky 2014, 'one weird trick')",
		DefaultInput:    224,
		DefaultChannels: 3,
		MinInput:        63,
		Preprocess:      "torch",
		build:           buildAlexNet,
	})
	register(Spec{
		Name:            "alexnet-2012",
		Description:     "AlexNet as Krizhevsky et al. 2012: 96/256/384/384/256 convolutions, groups=2 (two GPUs), LRN",
		DefaultInput:    227,
		DefaultChannels: 3,
		MinInput:        67,
		Preprocess:      "torch",
		build:           buildAlexNet2012,
	})
}

// buildAlexNet is torchvision's alexnet: features.{0 conv 64@11 s4 p2, 1 relu,
// 2 pool 3 s2, 3 conv 192@5 p2, 4 relu, 5 pool, 6 conv 384@3, 7 relu,
// 8 conv 256@3, 9 relu, 10 conv 256@3, 11 relu, 12 pool}, avgpool (6,6),
// classifier.{0 dropout, 1 fc 4096, 2 relu, 3 dropout, 4 fc 4096, 5 relu, 6 fc}.
func buildAlexNet(cfg Config) (nn.Module, error) {
	features := nn.NewSequential(
		nn.Conv(cfg.InChannels, 64, 11, 4, 2, true), nn.NewReLU(), nn.NewMaxPool2D(3, 2, 0, false),
		nn.Conv(64, 192, 5, 1, 2, true), nn.NewReLU(), nn.NewMaxPool2D(3, 2, 0, false),
		nn.Conv(192, 384, 3, 1, 1, true), nn.NewReLU(),
		nn.Conv(384, 256, 3, 1, 1, true), nn.NewReLU(),
		nn.Conv(256, 256, 3, 1, 1, true), nn.NewReLU(), nn.NewMaxPool2D(3, 2, 0, false),
	)
	root := nn.NewNamedSequential(nn.Child{Name: "features", Module: features})
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	root.AddNamed("avgpool", nn.NewAdaptiveAvgPool2D(6, 6))
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("classifier", nn.NewSequential(
		nn.NewDropout(0.5), nn.NewLinear(256*6*6, 4096, true), nn.NewReLU(),
		nn.NewDropout(0.5), nn.NewLinear(4096, 4096, true), nn.NewReLU(),
		nn.NewLinear(4096, cfg.Classes, true),
	))
	return root, nil
}

// groupedConv is a square convolution with groups.
func groupedConv(in, out, k, stride, pad, groups int) *nn.Conv2D {
	return nn.NewConv2D(nn.ConvConfig{In: in, Out: out, KH: k, KW: k, StrideH: stride, StrideW: stride,
		PadH: pad, PadW: pad, Groups: groups, Bias: true})
}

// buildAlexNet2012 follows the paper (and Caffe's bvlc_alexnet layer order):
// features.{0 conv 96@11 s4, 1 relu, 2 LRN(5, 1e-4, 0.75, 2), 3 pool 3 s2,
// 4 conv 256@5 p2 g2, 5 relu, 6 LRN, 7 pool, 8 conv 384@3 p1, 9 relu,
// 10 conv 384@3 p1 g2, 11 relu, 12 conv 256@3 p1 g2, 13 relu, 14 pool},
// avgpool (6,6) (the identity at 227×227), classifier.{0 fc 4096, 1 relu,
// 2 dropout, 3 fc 4096, 4 relu, 5 dropout, 6 fc}.
func buildAlexNet2012(cfg Config) (nn.Module, error) {
	lrn := func() nn.Module { return nn.NewLocalResponseNorm(5, 1e-4, 0.75, 2) }
	features := nn.NewSequential(
		nn.Conv(cfg.InChannels, 96, 11, 4, 0, true), nn.NewReLU(), lrn(), nn.NewMaxPool2D(3, 2, 0, false),
		groupedConv(96, 256, 5, 1, 2, 2), nn.NewReLU(), lrn(), nn.NewMaxPool2D(3, 2, 0, false),
		nn.Conv(256, 384, 3, 1, 1, true), nn.NewReLU(),
		groupedConv(384, 384, 3, 1, 1, 2), nn.NewReLU(),
		groupedConv(384, 256, 3, 1, 1, 2), nn.NewReLU(), nn.NewMaxPool2D(3, 2, 0, false),
	)
	root := nn.NewNamedSequential(nn.Child{Name: "features", Module: features})
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	root.AddNamed("avgpool", nn.NewAdaptiveAvgPool2D(6, 6))
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("classifier", nn.NewSequential(
		nn.NewLinear(256*6*6, 4096, true), nn.NewReLU(), nn.NewDropout(0.5),
		nn.NewLinear(4096, 4096, true), nn.NewReLU(), nn.NewDropout(0.5),
		nn.NewLinear(4096, cfg.Classes, true),
	))
	return root, nil
}
