package nets

import "github.com/ringtrain/ringtrain/nn"

func init() {
	register(Spec{
		Name:            "nin",
		Description:     "Network in Network (Lin et al. 2013) as d2l.ai builds it: NiN blocks, global average pooling, no dense layers",
		DefaultInput:    224,
		DefaultChannels: 3,
		MinInput:        67,
		Preprocess:      "torch",
		build:           buildNiN,
		init:            initNiN,
	})
}

// ninBlock: {0 conv k s p, 1 relu, 2 conv 1×1, 3 relu, 4 conv 1×1, 5 relu}.
func ninBlock(in, out, k, stride, pad int) *nn.Sequential {
	return nn.NewSequential(
		nn.Conv(in, out, k, stride, pad, true), nn.NewReLU(),
		nn.Conv(out, out, 1, 1, 0, true), nn.NewReLU(),
		nn.Conv(out, out, 1, 1, 0, true), nn.NewReLU(),
	)
}

// buildNiN keeps d2l's module indices (0.0.weight, 2.0.weight, ...): {0 block
// 96@11 s4, 1 pool 3 s2, 2 block 256@5 p2, 3 pool, 4 block 384@3 p1, 5 pool,
// 6 dropout, 7 block classes@3 p1, 8 global avg pool, 9 flatten}. Without the
// top it ends after 5 (the last max pool).
func buildNiN(cfg Config) (nn.Module, error) {
	root := nn.NewSequential(
		ninBlock(cfg.InChannels, 96, 11, 4, 0), nn.NewMaxPool2D(3, 2, 0, false),
		ninBlock(96, 256, 5, 1, 2), nn.NewMaxPool2D(3, 2, 0, false),
		ninBlock(256, 384, 3, 1, 1), nn.NewMaxPool2D(3, 2, 0, false),
	)
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	root.Add(nn.NewDropout(0.5))
	root.Add(ninBlock(384, cfg.Classes, 3, 1, 1))
	root.Add(nn.NewAdaptiveAvgPool2D(1, 1))
	root.Add(nn.NewFlatten())
	return root, nil
}
