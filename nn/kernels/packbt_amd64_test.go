//go:build amd64

package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestPackBTransAVX512(t *testing.T) {
	if !cpuHasPath(PathAVX512) {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for _, kc := range []int{16, 64, 304} {
		for _, ld := range []int{kc, kc + 3, 4096} {
			src := randSlice(rng, 31*ld+kc)
			got, want := make([]float32, 32*kc+1), make([]float32, 32*kc+1)
			got[32*kc], want[32*kc] = 7, 7 // guard
			packBTransAVX512(&got[0], &src[0], ld, kc)
			interleavePanel(want, 32, src, ld, 0, 32, kc)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("kc=%d ld=%d: dst[%d] = %g, want %g", kc, ld, i, got[i], want[i])
				}
			}
		}
	}
}

func BenchmarkPackBTrans(b *testing.B) {
	for _, ld := range []int{4096, 3136} {
		const kc = 512
		rng := rand.New(rand.NewPCG(1, 1))
		src := randSlice(rng, 32*ld)
		dst := make([]float32, 32*kc)
		for _, impl := range []string{"go", "avx512"} {
			if impl == "avx512" && !cpuHasPath(PathAVX512) {
				continue
			}
			b.Run(fmt.Sprintf("%s/ld=%d", impl, ld), func(b *testing.B) {
				b.SetBytes(32 * kc * 4)
				c0 := processCPUTime()
				for b.Loop() {
					if impl == "go" {
						interleavePanel(dst, 32, src, ld, 0, 32, kc)
					} else {
						packBTransAVX512(&dst[0], &src[0], ld, kc)
					}
				}
				b.ReportMetric(float64(32*kc*4*b.N)/(processCPUTime()-c0).Seconds()/1e9, "cpuGB/s")
			})
		}
	}
}
