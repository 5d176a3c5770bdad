package nets

import (
	"fmt"

	"github.com/ringtrain/ringtrain/nn"
)

func init() {
	register(Spec{
		Name:            "googlenet",
		Description:     "GoogLeNet / Inception v1 (Szegedy et al. 2014), torchvision layout (BN, 3×3 in branch3), optional aux classifiers",
		DefaultInput:    224,
		DefaultChannels: 3,
		MinInput:        15,
		Preprocess:      "torch",
		build:           buildGoogLeNet,
		init:            initGoogLeNet,
	})
}

// basicConv2d is torchvision's BasicConv2d: {conv (no bias), bn (eps 0.001), relu}.
func basicConv2d(in, out, k, stride, pad int) *nn.Sequential {
	bn := nn.NewBatchNorm2D(out)
	bn.Eps = 0.001
	return nn.NewNamedSequential(
		nn.Child{Name: "conv", Module: nn.Conv(in, out, k, stride, pad, false)},
		nn.Child{Name: "bn", Module: bn},
		nn.Child{Name: "relu", Module: nn.NewReLU()},
	)
}

// inception is torchvision's Inception block: branch1 1×1; branch2 1×1 then
// 3×3; branch3 1×1 then 3×3 (torchvision's known deviation from the paper's
// 5×5); branch4 3×3 s1 max pool (ceil mode) then 1×1; concatenated.
func inception(in, c1, c3r, c3, c5r, c5, proj int) (*nn.Concat, int) {
	return nn.NewConcat(
		nn.Child{Name: "branch1", Module: basicConv2d(in, c1, 1, 1, 0)},
		nn.Child{Name: "branch2", Module: nn.NewSequential(basicConv2d(in, c3r, 1, 1, 0), basicConv2d(c3r, c3, 3, 1, 1))},
		nn.Child{Name: "branch3", Module: nn.NewSequential(basicConv2d(in, c5r, 1, 1, 0), basicConv2d(c5r, c5, 3, 1, 1))},
		nn.Child{Name: "branch4", Module: nn.NewSequential(nn.NewMaxPool2D(3, 1, 1, true), basicConv2d(in, proj, 1, 1, 0))},
	), c1 + c3 + c5 + proj
}

// buildGoogLeNet: conv1 7×7 s2 p3, maxpool1 3 s2 ceil, conv2 1×1, conv3 3×3,
// maxpool2, inception3a, 3b, maxpool3, inception4a..4e, maxpool4 2 s2 ceil,
// inception5a, 5b, avgpool (1,1), flatten, dropout 0.2, fc. Without the top
// it ends after inception5b. With AuxLogits, taps after inception4a and 4d
// run the auxiliary heads aux1/aux2 in training (see AuxHead).
func buildGoogLeNet(cfg Config) (nn.Module, error) {
	if cfg.AuxLogits && cfg.NoTop {
		return nil, fmt.Errorf("googlenet: auxiliary classifiers need the top (AuxLogits with NoTop)")
	}
	var aux1, aux2 *AuxHead
	if cfg.AuxLogits {
		aux1, aux2 = newAuxHead("aux1", 512, cfg.Classes), newAuxHead("aux2", 528, cfg.Classes)
	}
	root := nn.NewNamedSequential(
		nn.Child{Name: "conv1", Module: basicConv2d(cfg.InChannels, 64, 7, 2, 3)},
		nn.Child{Name: "maxpool1", Module: nn.NewMaxPool2D(3, 2, 0, true)},
		nn.Child{Name: "conv2", Module: basicConv2d(64, 64, 1, 1, 0)},
		nn.Child{Name: "conv3", Module: basicConv2d(64, 192, 3, 1, 1)},
		nn.Child{Name: "maxpool2", Module: nn.NewMaxPool2D(3, 2, 0, true)},
	)
	ch := 192
	add := func(name string, c1, c3r, c3, c5r, c5, proj int) {
		var m nn.Module
		m, ch = inception(ch, c1, c3r, c3, c5r, c5, proj)
		root.AddNamed(name, m)
	}
	add("inception3a", 64, 96, 128, 16, 32, 32)
	add("inception3b", 128, 128, 192, 32, 96, 64)
	root.AddNamed("maxpool3", nn.NewMaxPool2D(3, 2, 0, true))
	add("inception4a", 192, 96, 208, 16, 48, 64)
	if aux1 != nil {
		root.AddNamed("aux1_tap", &auxTap{aux1})
	}
	add("inception4b", 160, 112, 224, 24, 64, 64)
	add("inception4c", 128, 128, 256, 24, 64, 64)
	add("inception4d", 112, 144, 288, 32, 64, 64)
	if aux2 != nil {
		root.AddNamed("aux2_tap", &auxTap{aux2})
	}
	add("inception4e", 256, 160, 320, 32, 128, 128)
	root.AddNamed("maxpool4", nn.NewMaxPool2D(2, 2, 0, true))
	add("inception5a", 256, 160, 320, 32, 128, 128)
	add("inception5b", 384, 192, 384, 48, 128, 128)
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	if aux1 != nil {
		root.AddNamed("aux1", &auxHolder{aux1})
		root.AddNamed("aux2", &auxHolder{aux2})
	}
	root.AddNamed("avgpool", nn.NewAdaptiveAvgPool2D(1, 1))
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("dropout", nn.NewDropout(0.2))
	root.AddNamed("fc", nn.NewLinear(ch, cfg.Classes, true))
	return root, nil
}
