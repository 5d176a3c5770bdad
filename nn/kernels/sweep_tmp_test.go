package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

func TestSweepTmp(t *testing.T) {
	if os.Getenv("SWEEP") == "" {
		t.Skip()
	}
	n := 1024
	rng := rand.New(rand.NewPCG(1, 1))
	x, y, z := randSlice(rng, n*n), randSlice(rng, n*n), make([]float32, n*n)
	for _, mc := range []int{96, 192, 384} {
		for _, kc := range []int{128, 192, 256, 384} {
			for _, nc := range []int{512, 4096} {
				kern := *avx512Kernel
				kern.mc, kern.kc, kern.nc = mc, kc, nc
				p := NewPool(1)
				p.kern = &kern
				p.Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
				best := 0.0
				for r := 0; r < 3; r++ {
					c0 := processCPUTime()
					w0 := time.Now()
					for i := 0; i < 3; i++ {
						p.Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
					}
					_ = w0
					g := 3 * 2 * float64(n*n*n) / (processCPUTime() - c0).Seconds() / 1e9
					best = max(best, g)
				}
				fmt.Printf("mc=%d kc=%d nc=%d cpu-GFLOP/s=%.1f\n", mc, kc, nc, best)
				p.Close()
			}
		}
	}
}
