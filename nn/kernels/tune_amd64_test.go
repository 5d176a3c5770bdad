//go:build amd64

package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// TestTuneBlocks compares cache-block sizes of this CPU's best path
// (AVX-512 or AVX2) in interleaved rounds (FLOPs per CPU-second, single
// thread). It is a tuning tool, not a check:
// RINGTRAIN_TUNE=1 [RINGTRAIN_TUNE_N=2048] go test -run TuneBlocks -v
func TestTuneBlocks(t *testing.T) {
	if os.Getenv("RINGTRAIN_TUNE") == "" {
		t.Skip("set RINGTRAIN_TUNE=1 to run")
	}
	base := defaultKernel
	if base.name == PathGeneric {
		t.Skip("no vector path to tune")
	}
	n := 1024
	if v, err := strconv.Atoi(os.Getenv("RINGTRAIN_TUNE_N")); err == nil {
		n = v
	}
	rng := rand.New(rand.NewPCG(1, 1))
	x, y, z := randSlice(rng, n*n), randSlice(rng, n*n), make([]float32, n*n)
	mr := base.mr
	cfgs := [][3]int{{base.mc, base.kc, base.nc}, {8 * mr, 256, 4096}, {16 * mr, 256, 4096}, {16 * mr, 384, 4096},
		{8 * mr, 512, 4096}, {16 * mr, 512, 4096}, {12 * mr, 768, 4096}, {32 * mr, 256, 4096}}
	res := make([][]float64, len(cfgs))
	pools := make([]*Pool, len(cfgs))
	for i, c := range cfgs {
		kern := *base
		kern.mc, kern.kc, kern.nc = c[0], c[1], c[2]
		pools[i] = NewPool(1)
		pools[i].kern = &kern
		defer pools[i].Close()
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
		line := fmt.Sprintf("mc=%d kc=%d nc=%d cpu-GFLOP/s:", c[0], c[1], c[2])
		for _, v := range res[i] {
			line += fmt.Sprintf(" %.0f", v)
		}
		t.Log(line)
	}
}
