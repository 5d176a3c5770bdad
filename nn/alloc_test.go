package nn_test

import (
	"math/rand/v2"
	"testing"

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

// TestTrainStepAllocs bounds the allocations of one steady-state training
// step (no buffer grows: all are small objects). Measured on 2026-11-27:
// 13 with the nil pool and with two threads (30 and 66 before the layers
// bound their pool loops once: elementwise, optimizers, pooling, batch
// norm, im2col); the rest are Conv2D's remaining closures (output scatter,
// dy gather, bias) and Params() slices built by anyTrainable in
// Sequential.Backward. Lower the bounds as they go.
func TestTrainStepAllocs(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, tc := range []struct {
		name string
		pool *kernels.Pool
		max  float64
	}{
		{"threads=1", nil, 15},
		{"threads=2", pool, 15},
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
