package nn_test

import (
	"math/rand/v2"
	"testing"

	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/optim"
	"gorgonia.org/tensor"
)

// smallConvNet is a LeNet-sized net with every common layer kind.
func smallConvNet(t testing.TB) *nn.Model {
	t.Helper()
	root := nn.NewNamedSequential(
		nn.Child{Name: "features", Module: nn.NewSequential(
			nn.Conv(3, 8, 3, 1, 1, true), nn.NewBatchNorm2D(8), nn.NewReLU(), nn.NewMaxPool2D(2, 2, 0, false),
			nn.Conv(8, 16, 3, 1, 1, false), nn.NewBatchNorm2D(16), nn.NewReLU(),
		)},
		nn.Child{Name: "pool", Module: nn.NewAdaptiveAvgPool2D(1, 1)},
		nn.Child{Name: "flatten", Module: nn.NewFlatten()},
		nn.Child{Name: "dropout", Module: nn.NewDropout(0.2)},
		nn.Child{Name: "fc", Module: nn.NewLinear(16, 10, true)},
	)
	m, err := nn.NewModel(root, nn.Shape{3, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	m.Reset(rand.New(rand.NewPCG(1, 1)))
	return m
}

// trainStep returns one steady-state training step: zero grads, forward,
// loss, backward, SGD update.
func trainStep(t testing.TB, pool *kernels.Pool) func() {
	m := smallConvNet(t)
	const n = 8
	rng := rand.New(rand.NewPCG(2, 2))
	x := make([]float32, n*3*16*16)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	xt := tensor.New(tensor.WithShape(n, 3, 16, 16), tensor.WithBacking(x))
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(i % 10)
	}
	opt, err := optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9, WeightDecay: 5e-4})
	if err != nil {
		t.Fatal(err)
	}
	s := &nn.State{Train: true, Pool: pool, RNG: rng, GradReady: func(*nn.Param) {}}
	loss := &nn.CrossEntropy{LabelSmoothing: 0.1}
	return func() {
		m.ZeroGrad()
		y, err := m.Forward(s, xt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := loss.Forward(y, labels); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(s, loss.Backward()); err != nil {
			t.Fatal(err)
		}
		opt.Step(0.01)
	}
}

// TestTrainStepAllocs: a steady-state training step allocates nothing
// (no buffer grows, and every loop a layer hands to the pool is bound once
// to the layer, not built per call). 30 with the nil pool and 66 with two
// threads before they were, on 2026-11-27.
func TestTrainStepAllocs(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, tc := range []struct {
		name string
		pool *kernels.Pool
		max  float64
	}{
		{"threads=1", nil, 0},
		{"threads=2", pool, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			step := trainStep(t, tc.pool)
			for range 3 { // warm up: buffers grow to the batch
				step()
			}
			allocs := testing.AllocsPerRun(20, step)
			t.Logf("allocations per training step: %v", allocs)
			if allocs > tc.max {
				t.Errorf("%v allocations per steady-state training step, want ≤ %v", allocs, tc.max)
			}
		})
	}
}

func BenchmarkTrainStep(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(map[int]string{1: "threads=1", 2: "threads=2"}[threads], func(b *testing.B) {
			var pool *kernels.Pool
			if threads > 1 {
				pool = kernels.NewPool(threads)
				defer pool.Close()
			}
			step := trainStep(b, pool)
			step()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				step()
			}
		})
	}
}

// The same for the reference nets (their block kinds: residual, inception
// concat, dense layers, LRN, dropout), at small inputs.
func TestReferenceNetTrainStepAllocs(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, tc := range []struct {
		net   string
		input int
	}{{"resnet18", 32}, {"resnet50", 32}, {"googlenet", 32}, {"densenet121", 32}, {"vgg11_bn", 32}, {"alexnet-2012", 67}, {"nin", 67}} {
		t.Run(tc.net, func(t *testing.T) {
			m, err := nets.Build(tc.net, nets.Config{Classes: 10, InputSize: tc.input})
			if err != nil {
				t.Fatal(err)
			}
			step := netStep(t, m, pool, 2)
			for range 2 {
				step()
			}
			if allocs := testing.AllocsPerRun(3, step); allocs > 0 {
				t.Errorf("%v allocations per steady-state training step, want 0", allocs)
			}
			// Inference (evaluation mode, forward only), as prediction runs.
			x := tensor.New(tensor.WithShape(append([]int{2}, m.In...)...), tensor.WithBacking(make([]float32, 2*m.In.Size())))
			eval := &nn.State{Inference: true, Pool: pool}
			predict := func() {
				if _, err := m.Forward(eval, x); err != nil {
					t.Fatal(err)
				}
			}
			predict()
			if allocs := testing.AllocsPerRun(3, predict); allocs > 0 {
				t.Errorf("%v allocations per steady-state inference forward, want 0", allocs)
			}
		})
	}
}

func netStep(t *testing.T, m *nn.Model, pool *kernels.Pool, n int) func() {
	rng := rand.New(rand.NewPCG(2, 2))
	x := make([]float32, n*m.In.Size())
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	xt := tensor.New(tensor.WithShape(append([]int{n}, m.In...)...), tensor.WithBacking(x))
	labels := make([]int32, n)
	opt, err := optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	optim.UsePool(opt, pool)
	s := &nn.State{Train: true, Pool: pool, RNG: rng}
	loss := &nn.CrossEntropy{}
	return func() {
		m.ZeroGrad()
		y, err := m.Forward(s, xt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := loss.Forward(y, labels); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(s, loss.Backward()); err != nil {
			t.Fatal(err)
		}
		opt.Step(0.01)
	}
}
