package nets

import (
	"fmt"
	"strconv"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// densenetConfigs: layers per dense block (growth 32, bn_size 4, 64 initial
// features, compression 0.5), as torchvision.
var densenetConfigs = []struct {
	depth  int
	blocks [4]int
}{
	{121, [4]int{6, 12, 24, 16}},
	{169, [4]int{6, 12, 32, 32}},
	{201, [4]int{6, 12, 48, 32}},
}

const (
	denseGrowth = 32
	denseBNSize = 4
	denseInit   = 64
)

func init() {
	for _, d := range densenetConfigs {
		blocks := d.blocks
		register(Spec{
			Name:            "densenet" + strconv.Itoa(d.depth),
			Description:     fmt.Sprintf("DenseNet-%d (Huang et al. 2016), growth 32, bn_size 4, compression 0.5, torchvision layout", d.depth),
			DefaultInput:    224,
			DefaultChannels: 3,
			MinInput:        29, // conv0 s2, pool0 s2, three 2×2 average pools
			Preprocess:      "torch",
			build:           func(cfg Config) (nn.Module, error) { return buildDenseNet(cfg, blocks) },
			init:            initDenseNet,
		})
	}
}

// buildDenseNet: features.{conv0 7×7 s2 p3, norm0, relu0, pool0 3 s2 p1,
// denseblock1, transition1, ..., denseblock4, norm5}, then relu, adaptive
// average pool (1,1), flatten, classifier. Without the top it ends after
// the final relu (Keras's DenseNet121(include_top=False)).
func buildDenseNet(cfg Config, blocks [4]int) (nn.Module, error) {
	c0, n0 := convBN(cfg.InChannels, denseInit, 7, 2, 3)
	features := nn.NewNamedSequential(
		nn.Child{Name: "conv0", Module: c0}, nn.Child{Name: "norm0", Module: n0},
		nn.Child{Name: "relu0", Module: nn.NewReLU()}, nn.Child{Name: "pool0", Module: nn.NewMaxPool2D(3, 2, 1, false)},
	)
	ch := denseInit
	for i, n := range blocks {
		block := nn.NewNamedSequential()
		for j := 0; j < n; j++ {
			block.AddNamed("denselayer"+strconv.Itoa(j+1), newDenseLayer(ch+j*denseGrowth))
		}
		ch += n * denseGrowth
		features.AddNamed("denseblock"+strconv.Itoa(i+1), block)
		if i == len(blocks)-1 {
			break
		}
		features.AddNamed("transition"+strconv.Itoa(i+1), nn.NewNamedSequential(
			nn.Child{Name: "norm", Module: nn.NewBatchNorm2D(ch)},
			nn.Child{Name: "relu", Module: nn.NewReLU()},
			nn.Child{Name: "conv", Module: nn.Conv(ch, ch/2, 1, 1, 0, false)},
			nn.Child{Name: "pool", Module: nn.NewAvgPool2D(2, 2, 0)},
		))
		ch /= 2
	}
	features.AddNamed("norm5", nn.NewBatchNorm2D(ch))
	root := nn.NewNamedSequential(
		nn.Child{Name: "features", Module: features},
		nn.Child{Name: "relu", Module: nn.NewReLU()},
	)
	if cfg.NoTop {
		addGlobalPool(root, cfg)
		return root, nil
	}
	root.AddNamed("avgpool", nn.NewAdaptiveAvgPool2D(1, 1))
	root.AddNamed("flatten", nn.NewFlatten())
	root.AddNamed("classifier", nn.NewLinear(ch, cfg.Classes, true))
	return root, nil
}

// denseLayer is torchvision's _DenseLayer: y = cat(x, body(x)) along
// channels with body = norm1, relu1, conv1 1×1 (bn_size·growth), norm2,
// relu2, conv2 3×3 (growth). The body's layers are named directly under the
// layer (denselayer1.norm1), as in PyTorch.
//
// Forward: x [N, C, H, W] -> y [N, C+growth, H, W]. Backward splits dy into
// the pass-through part (added to dx) and the body's part.
type denseLayer struct {
	body        *nn.Sequential
	in, os      nn.Shape
	bodyOut     nn.Shape
	out, dx, db denseBuf
	// The current call's slices and the per-sample loops over them, bound
	// once so that a step allocates nothing.
	yd, xd, bd, dyd, dxd, gd []float32
	join, split, passDown    func(lo, hi int)
}

// joinSamples writes, per sample, x then the body's output into y.
func (d *denseLayer) joinSamples(lo, hi int) {
	as, bs := d.in.Size(), d.bodyOut.Size()
	for i := lo; i < hi; i++ {
		copy(d.yd[i*(as+bs):], d.xd[i*as:(i+1)*as])
		copy(d.yd[i*(as+bs)+as:], d.bd[i*bs:(i+1)*bs])
	}
}

// splitSamples copies, per sample, the body's part of dy into its gradient.
func (d *denseLayer) splitSamples(lo, hi int) {
	xs, bs := d.in.Size(), d.bodyOut.Size()
	for i := lo; i < hi; i++ {
		copy(d.bd[i*bs:(i+1)*bs], d.dyd[i*(xs+bs)+xs:(i+1)*(xs+bs)])
	}
}

// passDownSamples adds, per sample, the pass-through part of dy to the
// body's input gradient.
func (d *denseLayer) passDownSamples(lo, hi int) {
	xs, bs := d.in.Size(), d.bodyOut.Size()
	for i := lo; i < hi; i++ {
		kernels.Add(d.dxd[i*xs:(i+1)*xs], d.dyd[i*(xs+bs):i*(xs+bs)+xs], d.gd[i*xs:(i+1)*xs])
	}
}

var _ nn.Module = (*denseLayer)(nil)

func newDenseLayer(in int) *denseLayer {
	mid := denseBNSize * denseGrowth
	return &denseLayer{body: nn.NewNamedSequential(
		nn.Child{Name: "norm1", Module: nn.NewBatchNorm2D(in)},
		nn.Child{Name: "relu1", Module: nn.NewReLU()},
		nn.Child{Name: "conv1", Module: nn.Conv(in, mid, 1, 1, 0, false)},
		nn.Child{Name: "norm2", Module: nn.NewBatchNorm2D(mid)},
		nn.Child{Name: "relu2", Module: nn.NewReLU()},
		nn.Child{Name: "conv2", Module: nn.Conv(mid, denseGrowth, 3, 1, 1, false)},
	)}
}

func (d *denseLayer) Kind() string         { return "DenseLayer" }
func (d *denseLayer) Params() []*nn.Param  { return nil }
func (d *denseLayer) Children() []nn.Child { return d.body.Children() }

func (d *denseLayer) Build(b *nn.Builder, in nn.Shape) (nn.Shape, error) {
	out, err := d.body.Build(b, in) // children are named directly under the layer
	if err != nil {
		return nil, err
	}
	if len(out) != 3 || out[1] != in[1] || out[2] != in[2] {
		return nil, fmt.Errorf("DenseLayer: body output shape %v does not keep the input's H and W %v", out, in)
	}
	d.in, d.bodyOut = in, out
	d.os = nn.Shape{in[0] + out[0], in[1], in[2]}
	return d.os, nil
}

func (d *denseLayer) Forward(s *nn.State, x *tensor.Dense) *tensor.Dense {
	bo := d.body.Forward(s, x)
	n := x.Shape()[0]
	y := d.out.get(n, d.os)
	d.yd, d.xd, d.bd = y.Float32s(), x.Float32s(), bo.Float32s()
	if d.join == nil {
		d.join, d.split, d.passDown = d.joinSamples, d.splitSamples, d.passDownSamples
	}
	s.Pool.ParallelFor(n, d.join) // the copies are most of this layer's own time
	return y
}

func (d *denseLayer) Backward(s *nn.State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	n := dy.Shape()[0]
	dyd := dy.Float32s()
	var g *tensor.Dense
	if needDx || trainable(d.body) {
		dbody := d.db.get(n, d.bodyOut)
		d.bd, d.dyd = dbody.Float32s(), dyd
		s.Pool.ParallelFor(n, d.split)
		g = d.body.Backward(s, dbody, needDx)
	}
	if !needDx {
		return nil
	}
	dx := d.dx.get(n, d.in)
	d.dxd, d.dyd, d.gd = dx.Float32s(), dyd, g.Float32s()
	s.Pool.ParallelFor(n, d.passDown)
	return dx
}

// trainable reports whether m or a descendant has a trainable weight.
func trainable(m nn.Module) bool {
	for _, p := range m.Params() {
		if p.Kind == nn.Weight && p.Trainable {
			return true
		}
	}
	for _, c := range m.Children() {
		if trainable(c.Module) {
			return true
		}
	}
	return false
}

// denseBuf is a reusable [n, shape...] tensor (contents unspecified).
type denseBuf struct {
	data []float32
	t    *tensor.Dense
	n    int
}

func (b *denseBuf) get(n int, shape nn.Shape) *tensor.Dense {
	if b.t != nil && b.n == n {
		return b.t
	}
	size := n * shape.Size()
	if cap(b.data) < size {
		b.data = make([]float32, size)
	}
	b.t = tensor.New(tensor.WithShape(append([]int{n}, shape...)...), tensor.WithBacking(b.data[:size]))
	b.n = n
	return b.t
}
