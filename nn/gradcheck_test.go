package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Finite-difference gradient checks. The loss is L = Σ y·r for a fixed
// random r, accumulated in float64; the engine computes in float32. Central
// differences with step eps have truncation error O(eps²) and float32 noise
// of about 1e-7·|L|/eps, so with eps = 1e-2 on tensors of a few hundred
// elements both stay well under 1e-3 of the gradient's norm, while a wrong
// gradient is off by O(1). Inputs keep clear of kinks: ReLU inputs are at
// least 0.05 from 0 and max-pool inputs are distinct by at least 0.05, far
// more than eps. Cases with BN in training followed by more layers have
// more curvature (and the ReLU after a residual sum has kinks that the
// inputs cannot steer clear of), so they use eps = 1e-3.

type gradCase struct {
	name  string
	mod   func() Module
	in    Shape // per sample
	n     int   // batch
	train bool
	// input draws x (default: standard normal).
	input func(rng *rand.Rand, size int) []float32
	eps   float64 // default 1e-2
	tol   float64 // default 2e-3
}

func normals(rng *rand.Rand, size int) []float32 {
	x := make([]float32, size)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// awayFromZero is normal with |x| ≥ 0.05 (ReLU's kink is at 0).
func awayFromZero(rng *rand.Rand, size int) []float32 {
	x := normals(rng, size)
	for i, v := range x {
		if math.Abs(float64(v)) < 0.05 {
			x[i] = float32(math.Copysign(0.05, float64(v))) + v
		}
	}
	return x
}

// distinctValues is a random permutation of evenly spaced values 0.05
// apart: no window of a max pool has a near-tie.
func distinctValues(rng *rand.Rand, size int) []float32 {
	x := make([]float32, size)
	for i, p := range rng.Perm(size) {
		x[i] = float32(p-size/2) * 0.05
	}
	return x
}

// randomizeBN gives every BatchNorm2D of m non-trivial affine parameters
// and running statistics (eval mode uses them).
func randomizeBN(m *Model, rng *rand.Rand) {
	for _, l := range m.Layers {
		bn, ok := l.Module.(*BatchNorm2D)
		if !ok {
			continue
		}
		for c := 0; c < bn.C; c++ {
			bn.Weight.Data[c] = float32(1 + 0.3*rng.NormFloat64())
			bn.Bias.Data[c] = float32(0.5 * rng.NormFloat64())
			bn.RunningMean.Data[c] = float32(0.5 * rng.NormFloat64())
			bn.RunningVar.Data[c] = float32(0.5 + rng.Float64())
		}
	}
}

func l2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// gradRelErr is ‖a − n‖₂ / max(‖a‖₂, ‖n‖₂, 1e-8).
func gradRelErr(a []float32, n []float64) float64 {
	d := make([]float64, len(a))
	af := make([]float64, len(a))
	for i := range a {
		af[i] = float64(a[i])
		d[i] = af[i] - n[i]
	}
	return l2(d) / max(l2(af), l2(n), 1e-8)
}

func runGradCheck(t *testing.T, c gradCase, pool *kernels.Pool) {
	t.Helper()
	eps, tol := c.eps, c.tol
	if eps == 0 {
		eps = 1e-2
	}
	if tol == 0 {
		tol = 2e-3
	}
	rng := rand.New(rand.NewPCG(42, uint64(len(c.name))))
	m, err := NewModel(c.mod(), c.in)
	if err != nil {
		t.Fatal(err)
	}
	m.Reset(rng)
	randomizeBN(m, rng)
	input := c.input
	if input == nil {
		input = normals
	}
	x := input(rng, c.n*c.in.Size())
	xt := tensor.New(tensor.WithShape(append([]int{c.n}, c.in...)...), tensor.WithBacking(x))
	r := normals(rng, c.n*m.Out.Size())
	rt := tensor.New(tensor.WithShape(append([]int{c.n}, m.Out...)...), tensor.WithBacking(r))

	s := &State{Train: c.train, Pool: pool}
	loss := func() float64 {
		s.RNG = rand.New(rand.NewPCG(7, 7)) // the same dropout mask every time
		y, err := m.Forward(s, xt)
		if err != nil {
			t.Fatal(err)
		}
		var l float64
		for i, v := range f32(y) {
			l += float64(v) * float64(r[i])
		}
		return l
	}
	numeric := func(v []float32) []float64 {
		g := make([]float64, len(v))
		for i, orig := range v {
			v[i] = orig + float32(eps)
			lp := loss()
			v[i] = orig - float32(eps)
			lm := loss()
			v[i] = orig
			// the step actually taken in float32
			g[i] = (lp - lm) / (float64(orig+float32(eps)) - float64(orig-float32(eps)))
		}
		return g
	}

	// Analytic gradients first, at the unperturbed point.
	m.ZeroGrad()
	loss()
	dxt := m.Root.Backward(s, rt, true)
	dx := append([]float32(nil), f32(dxt)...)
	grads := map[*Param][]float32{}
	for _, p := range m.Weights {
		grads[p] = append([]float32(nil), p.Grad...)
	}

	check := func(what string, a []float32, v []float32) {
		n := numeric(v)
		e := gradRelErr(a, n)
		if e > tol || math.IsNaN(e) {
			k := min(len(a), 6)
			t.Errorf("%s: gradient relative error %.3g > %.1g\nanalytic %v\nnumeric  %.6g", what, e, tol, a[:k], n[:k])
		}
		t.Logf("%s: relative error %.2g", what, e)
		if l2(n) == 0 {
			t.Errorf("%s: numeric gradient is zero: the check proves nothing", what)
		}
	}
	check("dx", dx, x)
	for _, p := range m.Weights {
		check("d"+p.Name, grads[p], p.Data)
	}
}

func gradCases() []gradCase {
	conv := func(cfg ConvConfig) func() Module { return func() Module { return NewConv2D(cfg) } }
	maxp := func(cfg PoolConfig) func() Module { return func() Module { return NewMaxPool(cfg) } }
	avgp := func(cfg PoolConfig) func() Module { return func() Module { return NewAvgPool(cfg) } }
	bn := func() Module { return NewBatchNorm2D(3) }
	return []gradCase{
		{name: "conv/k3s1p1_bias", mod: conv(ConvConfig{In: 3, Out: 4, KH: 3, KW: 3, PadH: 1, PadW: 1, Bias: true}), in: Shape{3, 5, 6}, n: 2},
		{name: "conv/k3x2_s2x1_p1x0_nobias", mod: conv(ConvConfig{In: 2, Out: 3, KH: 3, KW: 2, StrideH: 2, StrideW: 1, PadH: 1}), in: Shape{2, 7, 5}, n: 2},
		{name: "conv/dil2_p2", mod: conv(ConvConfig{In: 2, Out: 2, KH: 3, KW: 3, PadH: 2, PadW: 2, DilH: 2, DilW: 2, Bias: true}), in: Shape{2, 6, 5}, n: 1},
		{name: "conv/dil1x2_s2", mod: conv(ConvConfig{In: 2, Out: 3, KH: 2, KW: 3, StrideH: 2, StrideW: 2, PadW: 1, DilH: 1, DilW: 2, Bias: true}), in: Shape{2, 7, 7}, n: 3},
		{name: "conv/groups2", mod: conv(ConvConfig{In: 4, Out: 6, KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, Groups: 2, Bias: true}), in: Shape{4, 5, 5}, n: 2},
		{name: "conv/depthwise", mod: conv(ConvConfig{In: 3, Out: 3, KH: 3, KW: 3, PadH: 1, PadW: 1, Groups: 3}), in: Shape{3, 4, 5}, n: 2},
		{name: "conv/1x1_direct", mod: conv(ConvConfig{In: 4, Out: 3, KH: 1, KW: 1, Bias: true}), in: Shape{4, 3, 4}, n: 3},
		{name: "conv/1x1_direct_groups", mod: conv(ConvConfig{In: 4, Out: 4, KH: 1, KW: 1, Groups: 2, Bias: true}), in: Shape{4, 3, 3}, n: 2},
		{name: "conv/1x1_stride2_pad1", mod: conv(ConvConfig{In: 3, Out: 2, KH: 1, KW: 1, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, Bias: true}), in: Shape{3, 5, 4}, n: 2},

		{name: "bn/train", mod: bn, in: Shape{3, 4, 3}, n: 3, train: true},
		{name: "bn/eval", mod: bn, in: Shape{3, 4, 3}, n: 3},
		{name: "bn/train_1x1", mod: bn, in: Shape{3, 1, 1}, n: 5, train: true},

		{name: "relu", mod: func() Module { return NewReLU() }, in: Shape{2, 3, 4}, n: 2, input: awayFromZero},

		{name: "maxpool/k3s2p1", mod: maxp(PoolConfig{KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}), in: Shape{2, 7, 6}, n: 2, input: distinctValues},
		{name: "maxpool/k2_ceil", mod: maxp(PoolConfig{KH: 2, KW: 2, CeilMode: true}), in: Shape{2, 5, 7}, n: 2, input: distinctValues},
		{name: "maxpool/k3x2_s2x1_p1x0_ceil", mod: maxp(PoolConfig{KH: 3, KW: 2, StrideH: 2, StrideW: 1, PadH: 1, CeilMode: true}), in: Shape{2, 6, 5}, n: 2, input: distinctValues},
		{name: "maxpool/k3s1p1_overlap", mod: maxp(PoolConfig{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}), in: Shape{2, 4, 4}, n: 2, input: distinctValues},
		{name: "avgpool/k3s2p1_incl", mod: avgp(PoolConfig{KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, CountIncludePad: true}), in: Shape{2, 7, 6}, n: 2},
		{name: "avgpool/k3s2p1_excl", mod: avgp(PoolConfig{KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}), in: Shape{2, 7, 6}, n: 2},
		{name: "avgpool/ceil_incl", mod: avgp(PoolConfig{KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, CeilMode: true, CountIncludePad: true}), in: Shape{2, 6, 8}, n: 2},
		{name: "avgpool/ceil_excl", mod: avgp(PoolConfig{KH: 3, KW: 2, StrideH: 2, StrideW: 2, PadH: 1, CeilMode: true}), in: Shape{2, 6, 7}, n: 2},
		{name: "adaptive/avg_7x5_to_3x2", mod: func() Module { return NewAdaptiveAvgPool2D(3, 2) }, in: Shape{2, 7, 5}, n: 2},
		{name: "adaptive/avg_3x2_to_4x5", mod: func() Module { return NewAdaptiveAvgPool2D(4, 5) }, in: Shape{2, 3, 2}, n: 2},
		{name: "adaptive/max_7x5_to_3x2", mod: func() Module { return NewAdaptiveMaxPool2D(3, 2) }, in: Shape{2, 7, 5}, n: 2, input: distinctValues},
		{name: "adaptive/max_global", mod: func() Module { return NewAdaptiveMaxPool2D(1, 1) }, in: Shape{3, 3, 4}, n: 2, input: distinctValues},

		{name: "lrn/s5_alexnet_like", mod: func() Module { return NewLocalResponseNorm(5, 0.5, 0.75, 2) }, in: Shape{7, 2, 3}, n: 2},
		{name: "lrn/s4_even", mod: func() Module { return NewLocalResponseNorm(4, 0.8, 0.6, 1.5) }, in: Shape{6, 2, 2}, n: 2},
		{name: "lrn/s9_wider_than_C", mod: func() Module { return NewLocalResponseNorm(9, 1, 0.9, 1) }, in: Shape{4, 2, 2}, n: 2},

		{name: "linear/bias", mod: func() Module { return NewLinear(7, 5, true) }, in: Shape{7}, n: 3},
		{name: "linear/nobias", mod: func() Module { return NewLinear(4, 6, false) }, in: Shape{4}, n: 2},
		{name: "dropout/fixed_mask", mod: func() Module { return NewDropout(0.4) }, in: Shape{3, 4, 4}, n: 2, train: true},
		{name: "flatten_linear", mod: func() Module { return NewSequential(NewFlatten(), NewLinear(12, 3, true)) }, in: Shape{3, 2, 2}, n: 2},
		{name: "softmax", mod: func() Module { return NewSoftmax() }, in: Shape{6}, n: 3},

		{name: "concat/inception", mod: func() Module {
			return NewConcat(
				Child{"branch1", NewMaxPool2D(3, 1, 1, false)},
				Child{"branch2", Conv(3, 2, 1, 1, 0, true)},
				Child{"branch3", NewSequential(Conv(3, 2, 3, 1, 1, false), NewBatchNorm2D(2))},
				Child{"branch4", NewAvgPool2D(3, 1, 1)},
			)
		}, in: Shape{3, 4, 5}, n: 2, train: true, input: distinctValues},
		{name: "residual/identity_after", mod: func() Module {
			return NewResidual(NewSequential(Conv(3, 3, 3, 1, 1, false), NewBatchNorm2D(3)), "downsample", nil, NewReLU())
		}, in: Shape{3, 4, 4}, n: 2, train: true, eps: 1e-3, tol: 4e-3},
		{name: "residual/identity_noafter", mod: func() Module {
			return NewResidual(NewSequential(Conv(2, 2, 3, 1, 1, true), NewLocalResponseNorm(2, 0.5, 0.75, 1)), "downsample", nil, nil)
		}, in: Shape{2, 3, 4}, n: 2},
		{name: "residual/projection_s2_after", mod: func() Module {
			body := NewSequential(Conv(2, 4, 3, 2, 1, false), NewBatchNorm2D(4), NewLocalResponseNorm(3, 0.5, 0.75, 1), Conv(4, 4, 3, 1, 1, false), NewBatchNorm2D(4))
			sc := NewSequential(Conv(2, 4, 1, 2, 0, false), NewBatchNorm2D(4))
			return NewResidual(body, "downsample", sc, NewLocalResponseNorm(3, 0.5, 0.75, 1))
		}, in: Shape{2, 5, 6}, n: 2, train: true, eps: 1e-3, tol: 4e-3},
		{name: "residual/projection_eval", mod: func() Module {
			body := NewSequential(Conv(2, 4, 3, 2, 1, false), NewBatchNorm2D(4))
			sc := NewSequential(Conv(2, 4, 1, 2, 0, false), NewBatchNorm2D(4))
			return NewResidual(body, "downsample", sc, NewLocalResponseNorm(3, 0.5, 0.75, 1))
		}, in: Shape{2, 5, 6}, n: 2},
	}
}

func TestGradCheck(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, c := range gradCases() {
		t.Run(c.name, func(t *testing.T) {
			p := pool
			if c.n == 1 {
				p = nil
			}
			runGradCheck(t, c, p)
		})
	}
}

// TestGradCheckCrossEntropy checks dL/dlogits of the mean cross-entropy,
// with and without label smoothing.
func TestGradCheckCrossEntropy(t *testing.T) {
	for _, ls := range []float32{0, 0.1, 0.35} {
		rng := rand.New(rand.NewPCG(3, 4))
		n, k := 4, 5
		x := normals(rng, n*k)
		for i := range x {
			x[i] *= 2
		}
		labels := make([]int32, n)
		for i := range labels {
			labels[i] = int32(rng.IntN(k))
		}
		xt := tensor.New(tensor.WithShape(n, k), tensor.WithBacking(x))
		l := &CrossEntropy{LabelSmoothing: ls}
		loss := func() float64 {
			v, err := l.Forward(xt, labels)
			if err != nil {
				t.Fatal(err)
			}
			return float64(v)
		}
		loss()
		a := append([]float32(nil), f32(l.Backward())...)
		const eps = 1e-2
		num := make([]float64, len(x))
		for i, orig := range x {
			x[i] = orig + eps
			lp := loss()
			x[i] = orig - eps
			lm := loss()
			x[i] = orig
			num[i] = (lp - lm) / (2 * eps)
		}
		if e := gradRelErr(a, num); e > 2e-3 {
			t.Errorf("label smoothing %v: gradient relative error %.3g\nanalytic %v\nnumeric  %v", ls, e, a, num)
		}
	}
}
