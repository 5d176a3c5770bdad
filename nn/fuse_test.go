package nn

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// TestFusedBNReLUMatchesUnfused: conv → BN → ReLU → conv, the BN+ReLU pair
// fused as planned, against the same model with the fusion switched off:
// outputs and every parameter gradient (the first conv's through BN's input
// gradient) bit for bit, in
// training (batch statistics) and evaluation (running statistics).
func TestFusedBNReLUMatchesUnfused(t *testing.T) {
	build := func() (*Model, *BatchNorm2D, *ReLU) {
		bn, relu := NewBatchNorm2D(6), NewReLU()
		seq := NewSequential(
			NewConv2D(ConvConfig{In: 3, Out: 6, KH: 3, KW: 3, PadH: 1, PadW: 1}),
			bn, relu,
			NewConv2D(ConvConfig{In: 6, Out: 4, KH: 3, KW: 3, PadH: 1, PadW: 1, Bias: true}),
		)
		m, err := NewModel(seq, Shape{3, 9, 7})
		if err != nil {
			t.Fatal(err)
		}
		m.Reset(rand.New(rand.NewPCG(5, 6)))
		return m, bn, relu
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	// frozen: the layer prefix frozen in both models: none, the BN (its
	// backward then uses running statistics and only passes dx down), or
	// the first conv (the BN is then the lowest layer backward runs, asked
	// for no input gradient).
	for _, frozen := range []string{"", "1", "0"} {
		t.Run("frozen="+frozen, func(t *testing.T) {
			fused, fbn, frelu := build()
			plain, pbn, prelu := build()
			if !frelu.fused || !fbn.reluFwd || !fbn.reluBwd {
				t.Fatalf("conv-BN-ReLU-conv not fused: relu.fused=%v bn=%v/%v", frelu.fused, fbn.reluFwd, fbn.reluBwd)
			}
			prelu.fused, pbn.reluFwd, pbn.reluBwd = false, false, false
			if frozen != "" {
				if fused.SetTrainable(frozen, false) == 0 || plain.SetTrainable(frozen, false) == 0 {
					t.Fatalf("no layer %q to freeze", frozen)
				}
			}
			checkFusedAgainstPlain(t, pool, fused, plain, frelu)
		})
	}
}

func checkFusedAgainstPlain(t *testing.T, pool *kernels.Pool, fused, plain *Model, frelu *ReLU) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, train := range []bool{true, false} {
		// Shift the inputs so that about half of the BN outputs are negative.
		xd := randFloats(rng, 5*3*9*7)
		for i := range xd {
			xd[i] += 0.3
		}
		for _, m := range []*Model{fused, plain} {
			m.ZeroGrad()
		}
		s := &State{Train: train, Pool: pool}
		var ys [2][]float32
		for j, m := range []*Model{fused, plain} {
			x := tensor.New(tensor.WithShape(5, 3, 9, 7), tensor.WithBacking(append([]float32(nil), xd...)))
			y, err := m.Forward(s, x)
			if err != nil {
				t.Fatal(err)
			}
			ys[j] = append([]float32(nil), f32(y)...)
			dy := tensor.New(tensor.WithShape(y.Shape()...), tensor.WithBacking(randFloats(rand.New(rand.NewPCG(9, 9)), y.Shape().TotalSize())))
			if err := m.Backward(s, dy); err != nil {
				t.Fatal(err)
			}
		}
		same := func(what string, a, b []float32) {
			t.Helper()
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("train=%v %s[%d]: fused %v, unfused %v", train, what, i, a[i], b[i])
				}
			}
		}
		same("y", ys[0], ys[1])
		same("grad", fused.Grad, plain.Grad)
		var zeros int
		for _, v := range f32(frelu.y) {
			if v == 0 {
				zeros++
			}
		}
		if zeros == 0 || zeros == len(f32(frelu.y)) {
			t.Fatalf("train=%v: %d of %d ReLU outputs are zero: the mask is not exercised", train, zeros, len(f32(frelu.y)))
		}
	}
}

// TestInferenceBNInPlace: with State.Inference a BatchNorm2D right after a
// Conv2D normalises the conv's output in place (no buffer of its own), and
// the model's output equals evaluation mode's bit for bit.
func TestInferenceBNInPlace(t *testing.T) {
	bn := NewBatchNorm2D(6)
	seq := NewSequential(
		NewConv2D(ConvConfig{In: 3, Out: 6, KH: 3, KW: 3, PadH: 1, PadW: 1}),
		bn, NewReLU(),
		NewConv2D(ConvConfig{In: 6, Out: 4, KH: 1, KW: 1}),
		NewBatchNorm2D(4),
	)
	m, err := NewModel(seq, Shape{3, 8, 8})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	m.Reset(rng)
	for i := range bn.RunningMean.Data { // non-trivial running statistics
		bn.RunningMean.Data[i], bn.RunningVar.Data[i] = rng.Float32()-0.5, 0.5+rng.Float32()
	}
	x := tensor.New(tensor.WithShape(2, 3, 8, 8), tensor.WithBacking(randFloats(rng, 2*3*8*8)))
	y, err := m.Forward(&State{Inference: true}, x)
	if err != nil {
		t.Fatal(err)
	}
	got := append([]float32(nil), f32(y)...)
	if bn.out.t != nil {
		t.Fatal("inference allocated the BatchNorm2D's own output buffer")
	}
	y, err = m.Forward(&State{}, x)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range f32(y) {
		if math.Float32bits(v) != math.Float32bits(got[i]) {
			t.Fatalf("y[%d]: inference %v, evaluation %v", i, got[i], v)
		}
	}
}

// TestBackwardAfterInferenceFails: State.Inference promises that no
// backward follows; Model.Backward refuses instead of returning gradients
// computed from overwritten activations.
func TestBackwardAfterInferenceFails(t *testing.T) {
	seq := NewSequential(
		NewConv2D(ConvConfig{In: 1, Out: 2, KH: 3, KW: 3, PadH: 1, PadW: 1}),
		NewBatchNorm2D(2), NewReLU(),
		NewConv2D(ConvConfig{In: 2, Out: 2, KH: 1, KW: 1}),
	)
	m, err := NewModel(seq, Shape{1, 4, 4})
	if err != nil {
		t.Fatal(err)
	}
	m.Reset(rand.New(rand.NewPCG(1, 2)))
	x := tensor.New(tensor.WithShape(1, 1, 4, 4), tensor.WithBacking(make([]float32, 16)))
	y, err := m.Forward(&State{Inference: true}, x)
	if err != nil {
		t.Fatal(err)
	}
	dy := tensor.New(tensor.WithShape(y.Shape()...), tensor.WithBacking(make([]float32, y.Shape().TotalSize())))
	if err := m.Backward(&State{}, dy); err == nil || !strings.Contains(err.Error(), "Inference") {
		t.Fatalf("backward after an inference forward: err = %v, want one naming State.Inference", err)
	}
	if _, err := m.Forward(&State{}, x); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(&State{}, dy); err != nil {
		t.Fatalf("backward after an evaluation forward: %v", err)
	}
}
