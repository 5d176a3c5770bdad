package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

func TestSweepTmp(t *testing.T) {
	if os.Getenv("SWEEP") == "" {
		t.Skip()
	}
	n := 1024
	fmt.Sscan(os.Getenv("SWEEPN"), &n)
	rng := rand.New(rand.NewPCG(1, 1))
	x, y, z := randSlice(rng, n*n), randSlice(rng, n*n), make([]float32, n*n)
	cfgs := [][3]int{{48, 512, 4096}, {96, 512, 4096}, {72, 768, 4096}, {96, 1024, 4096}}
	res := make([][]float64, len(cfgs))
	pools := make([]*Pool, len(cfgs))
	for i, c := range cfgs {
		kern := *avx512Kernel
		kern.mc, kern.kc, kern.nc = c[0], c[1], c[2]
		pools[i] = NewPool(1)
		pools[i].kern = &kern
		pools[i].Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
	}
	for r := 0; r < 6; r++ {
		for i, p := range pools {
			c0 := processCPUTime()
			for j := 0; j < 2; j++ {
				p.Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
			}
			res[i] = append(res[i], 2*2*float64(n*n*n)/(processCPUTime()-c0).Seconds()/1e9)
		}
	}
	for i, c := range cfgs {
		fmt.Printf("mc=%d kc=%d nc=%d: ", c[0], c[1], c[2])
		for _, v := range res[i] {
			fmt.Printf("%.0f ", v)
		}
		fmt.Println()
	}
}
