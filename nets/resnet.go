package nets

import (
	"fmt"
	"strconv"

	"github.com/ringtrain/ringtrain/nn"
)

// resnetDepths: blocks per stage and whether the stage uses bottlenecks.
var resnetDepths = []struct {
	depth      int
	blocks     [4]int
	bottleneck bool
}{
	{18, [4]int{2, 2, 2, 2}, false},
	{34, [4]int{3, 4, 6, 3}, false},
	{50, [4]int{3, 4, 6, 3}, true},
	{101, [4]int{3, 4, 23, 3}, true},
	{152, [4]int{3, 8, 36, 3}, true},
}

func init() {
	for _, d := range resnetDepths {
		blocks, bottleneck := d.blocks, d.bottleneck
		kind := "basic"
		if bottleneck {
			kind = "bottleneck"
		}
		register(Spec{
			Name:            "resnet" + strconv.Itoa(d.depth),
			Description:     fmt.Sprintf("ResNet-%d (He et al. 2015), %s blocks, torchvision v1.5 (stride in the 3×3)", d.depth, kind),
			DefaultInput:    224,
			DefaultChannels: 3,
			MinInput:        1, // stride 32 overall, but every stage also builds at 1×1
			Preprocess:      "torch",
			build:           func(cfg Config) (nn.Module, error) { return buildResNet(cfg, blocks, bottleneck) },
			init:            initResNet,
		})
	}
}

// convBN is conv (no bias) followed by batch norm, the ResNet/DenseNet unit.
func convBN(in, out, k, stride, pad int) (*nn.Conv2D, *nn.BatchNorm2D) {
	return nn.Conv(in, out, k, stride, pad, false), nn.NewBatchNorm2D(out)
}

// basicBlock: conv1 3×3 stride, bn1, relu, conv2 3×3, bn2; + shortcut; relu.
func basicBlock(in, planes, stride int) (nn.Module, int) {
	c1, b1 := convBN(in, planes, 3, stride, 1)
	c2, b2 := convBN(planes, planes, 3, 1, 1)
	body := nn.NewNamedSequential(
		nn.Child{Name: "conv1", Module: c1}, nn.Child{Name: "bn1", Module: b1}, nn.Child{Name: "relu1", Module: nn.NewReLU()},
		nn.Child{Name: "conv2", Module: c2}, nn.Child{Name: "bn2", Module: b2},
	)
	return nn.NewResidual(body, "downsample", downsample(in, planes, stride), nn.NewReLU()), planes
}

// bottleneck: conv1 1×1, bn1, relu, conv2 3×3 stride, bn2, relu, conv3 1×1
// (4× planes), bn3; + shortcut; relu.
func bottleneck(in, planes, stride int) (nn.Module, int) {
	out := planes * 4
	c1, b1 := convBN(in, planes, 1, 1, 0)
	c2, b2 := convBN(planes, planes, 3, stride, 1)
	c3, b3 := convBN(planes, out, 1, 1, 0)
	body := nn.NewNamedSequential(
		nn.Child{Name: "conv1", Module: c1}, nn.Child{Name: "bn1", Module: b1}, nn.Child{Name: "relu1", Module: nn.NewReLU()},
		nn.Child{Name: "conv2", Module: c2}, nn.Child{Name: "bn2", Module: b2}, nn.Child{Name: "relu2", Module: nn.NewReLU()},
		nn.Child{Name: "conv3", Module: c3}, nn.Child{Name: "bn3", Module: b3},
	)
	return nn.NewResidual(body, "downsample", downsample(in, out, stride), nn.NewReLU()), out
}

// downsample is the projection shortcut {0 conv 1×1 stride, 1 bn} when the
// shape changes, else nil (identity).
func downsample(in, out, stride int) nn.Module {
	if in == out && stride == 1 {
		return nil
	}
	c, b := convBN(in, out, 1, stride, 0)
	return nn.NewSequential(c, b)
}

// buildResNet: conv1 7×7 s2 p3, bn1, relu, maxpool 3 s2 p1, layer1..layer4,
// avgpool (1,1), flatten, fc. Without the top it ends after layer4.
func buildResNet(cfg Config, blocks [4]int, bottle bool) (nn.Module, error) {
	c1, b1 := convBN(cfg.InChannels, 64, 7, 2, 3)
	root := nn.NewNamedSequential(
		nn.Child{Name: "conv1", Module: c1}, nn.Child{Name: "bn1", Module: b1},
		nn.Child{Name: "relu", Module: nn.NewReLU()}, nn.Child{Name: "maxpool", Module: nn.NewMaxPool2D(3, 2, 1, false)},
	)
	in := 64
	for stage, n := range blocks {
		planes := 64 << stage
		layer := nn.NewSequential()
		for i := 0; i < n; i++ {
			stride := 1
			if i == 0 && stage > 0 {
				stride = 2
			}
			var blk nn.Module
			if bottle {
				blk, in = bottleneck(in, planes, stride)
			} else {
				blk, in = basicBlock(in, planes, stride)
			}
			layer.Add(blk)
		}
		root.AddNamed("layer"+strconv.Itoa(stage+1), layer)
	}
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	root.AddNamed("avgpool", nn.NewAdaptiveAvgPool2D(1, 1))
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("fc", nn.NewLinear(in, cfg.Classes, true))
	return root, nil
}
