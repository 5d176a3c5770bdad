package nets

import (
	"math/rand/v2"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// benchStep measures one forward+backward (no update) of net at size×size,
// batch 8, on the machine's threads.
func benchStep(b *testing.B, net string, size int) {
	m, err := Build(net, Config{Classes: 10, InputSize: size})
	if err != nil {
		b.Fatal(err)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 8
	xd := make([]float32, n*m.In.Size())
	for i := range xd {
		xd[i] = float32(rng.NormFloat64())
	}
	x := tensor.New(tensor.WithShape(append([]int{n}, m.In...)...), tensor.WithBacking(xd))
	labels := make([]int32, n)
	s := &nn.State{Train: true, Pool: pool, RNG: rng}
	var ce nn.CrossEntropy
	step := func() {
		y, err := m.Forward(s, x)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ce.Forward(y, labels); err != nil {
			b.Fatal(err)
		}
		m.ZeroGrad()
		if err := m.Backward(s, ce.Backward()); err != nil {
			b.Fatal(err)
		}
	}
	step() // buffers reach their steady-state size
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "img/s")
}

func BenchmarkResNet18At32(b *testing.B)    { benchStep(b, "resnet18", 32) }
func BenchmarkDenseNet121At32(b *testing.B) { benchStep(b, "densenet121", 32) }
func BenchmarkGoogLeNetAt32(b *testing.B)   { benchStep(b, "googlenet", 32) }
