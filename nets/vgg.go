package nets

import (
	"fmt"

	"github.com/ringtrain/ringtrain/nn"
)

// vggConfigs are torchvision's cfgs A, B, D, E: convolution widths per block;
// every block ends in a 2×2 max pool.
var vggConfigs = map[string][][]int{
	"vgg11": {{64}, {128}, {256, 256}, {512, 512}, {512, 512}},
	"vgg13": {{64, 64}, {128, 128}, {256, 256}, {512, 512}, {512, 512}},
	"vgg16": {{64, 64}, {128, 128}, {256, 256, 256}, {512, 512, 512}, {512, 512, 512}},
	"vgg19": {{64, 64}, {128, 128}, {256, 256, 256, 256}, {512, 512, 512, 512}, {512, 512, 512, 512}},
}

func init() {
	for _, depth := range []string{"11", "13", "16", "19"} {
		for _, bn := range []bool{false, true} {
			name, desc := "vgg"+depth, "VGG-"+depth+" (Simonyan & Zisserman 2014)"
			if bn {
				name, desc = name+"_bn", desc+" with batch normalisation"
			}
			blocks, withBN := vggConfigs["vgg"+depth], bn
			register(Spec{
				Name:            name,
				Description:     desc + ", torchvision layout",
				DefaultInput:    224,
				DefaultChannels: 3,
				MinInput:        32, // five 2×2 max pools
				Preprocess:      "caffe",
				build:           func(cfg Config) (nn.Module, error) { return buildVGG(cfg, blocks, withBN) },
				init:            initVGG,
			})
		}
	}
}

// vggBlock appends one VGG block to features: n 3×3 convolutions (each
// followed by batch norm when bn, and ReLU) and a 2×2 max pool. Layers go
// straight into features so that names stay torchvision's flat features.N.
func vggBlock(features *nn.Sequential, in int, widths []int, bn bool) int {
	for _, w := range widths {
		features.Add(nn.Conv(in, w, 3, 1, 1, true))
		if bn {
			features.Add(nn.NewBatchNorm2D(w))
		}
		features.Add(nn.NewReLU())
		in = w
	}
	features.Add(nn.NewMaxPool2D(2, 2, 0, false))
	return in
}

// buildVGG: features (blocks), avgpool AdaptiveAvgPool2d(7,7), flatten,
// classifier.{0 fc 4096, 1 relu, 2 dropout, 3 fc 4096, 4 relu, 5 dropout, 6 fc}.
// Without the top it ends after the last max pool, like Keras's
// VGG16(include_top=False).
func buildVGG(cfg Config, blocks [][]int, bn bool) (nn.Module, error) {
	if len(blocks) == 0 {
		return nil, fmt.Errorf("vgg: no blocks")
	}
	features := nn.NewSequential()
	ch := cfg.InChannels
	for _, b := range blocks {
		ch = vggBlock(features, ch, b, bn)
	}
	root := nn.NewNamedSequential(nn.Child{Name: "features", Module: features})
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	root.AddNamed("avgpool", nn.NewAdaptiveAvgPool2D(7, 7))
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("classifier", nn.NewSequential(
		nn.NewLinear(ch*7*7, 4096, true), nn.NewReLU(), nn.NewDropout(0.5),
		nn.NewLinear(4096, 4096, true), nn.NewReLU(), nn.NewDropout(0.5),
		nn.NewLinear(4096, cfg.Classes, true),
	))
	return root, nil
}

// addGlobalPool appends Keras's optional global pooling to a headless net.
func addGlobalPool(root *nn.Sequential, cfg Config) {
	if p := globalPool(cfg); p != nil {
		root.AddNamed("pool", p)
	}
}
