package kernels

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkSgemmShapes times the engine's typical calls (nn/conv.go,
// nn/linear.go) on one thread: conv forward (W·col), conv weight gradient
// (dY·colᵀ), conv input gradient (Wᵀ·dY), linear forward (x·Wᵀ).
func BenchmarkSgemmShapes(b *testing.B) {
	shapes := []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"conv3x3-fwd", false, false, 64, 3136, 576},
		{"conv3x3-dW", false, true, 64, 576, 3136},
		{"conv3x3-dX", true, false, 576, 3136, 64},
		{"l2-fwd", false, false, 128, 784, 1152},
		{"l3-fwd", false, false, 256, 196, 2304},
		{"l4-fwd", false, false, 512, 49, 4608},
		{"l4-dW", false, true, 512, 4608, 49},
		{"l4-dX", true, false, 4608, 49, 512},
		{"linear-fwd-b16", false, true, 16, 4096, 4096},
		{"linear-dW-b16", true, false, 4096, 4096, 16},
	}
	for _, s := range shapes {
		b.Run(s.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			x, y, z := randSlice(rng, s.m*s.k), randSlice(rng, s.k*s.n), make([]float32, s.m*s.n)
			lda, ldb := s.k, s.n
			if s.transA {
				lda = s.m
			}
			if s.transB {
				ldb = s.k
			}
			p := NewPool(1)
			defer p.Close()
			call := func() { p.Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, x, lda, y, ldb, 0, z, s.n) }
			call()
			b.ReportAllocs()
			cpu0 := processCPUTime()
			for b.Loop() {
				call()
			}
			flops := 2 * float64(s.m*s.n*s.k) * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			if cpu := processCPUTime() - cpu0; cpu > 0 {
				b.ReportMetric(flops/cpu.Seconds()/1e9, "cpu-GFLOP/s")
			}
		})
	}
}
