package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func BenchmarkPackTmp(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const ld = 1024
	src := randSlice(rng, ld*ld)
	dst := make([]float32, 384*384)
	for _, tr := range []bool{false, true} {
		b.Run(fmt.Sprintf("A/trans=%v", tr), func(b *testing.B) {
			cpu0 := processCPUTime()
			for b.Loop() {
				packA(dst, tr, src, ld, 0, 192, 0, 256, 12)
			}
			b.ReportMetric(float64(192*256*4)*float64(b.N)/(processCPUTime()-cpu0).Seconds()/1e9, "cpuGB/s")
		})
		b.Run(fmt.Sprintf("B/trans=%v", tr), func(b *testing.B) {
			cpu0 := processCPUTime()
			for b.Loop() {
				packB(dst, tr, src, ld, 0, 256, 0, 192, 32)
			}
			b.ReportMetric(float64(192*256*4)*float64(b.N)/(processCPUTime()-cpu0).Seconds()/1e9, "cpuGB/s")
		})
	}
}

func packAv2(dst []float32, a []float32, lda, i0, mc, p0, kc, mr int) {
	for ir := 0; ir < mc; ir += mr {
		mrr := min(mr, mc-ir)
		d := dst[ir*kc : ir*kc+mr*kc]
		if mrr == 12 {
			base := (i0+ir)*lda + p0
			r0 := a[base:][:kc]
			r1 := a[base+lda:][:kc]
			r2 := a[base+2*lda:][:kc]
			r3 := a[base+3*lda:][:kc]
			r4 := a[base+4*lda:][:kc]
			r5 := a[base+5*lda:][:kc]
			r6 := a[base+6*lda:][:kc]
			r7 := a[base+7*lda:][:kc]
			r8 := a[base+8*lda:][:kc]
			r9 := a[base+9*lda:][:kc]
			r10 := a[base+10*lda:][:kc]
			r11 := a[base+11*lda:][:kc]
			for l := range r0 {
				dl := d[l*12 : l*12+12 : l*12+12]
				dl[0], dl[1], dl[2], dl[3] = r0[l], r1[l], r2[l], r3[l]
				dl[4], dl[5], dl[6], dl[7] = r4[l], r5[l], r6[l], r7[l]
				dl[8], dl[9], dl[10], dl[11] = r8[l], r9[l], r10[l], r11[l]
			}
			continue
		}
	}
}

func BenchmarkPackTmpV2(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const ld = 1024
	src := randSlice(rng, ld*ld)
	dst := make([]float32, 384*384)
	cpu0 := processCPUTime()
	for b.Loop() {
		packAv2(dst, src, ld, 0, 192, 0, 256, 12)
	}
	b.ReportMetric(float64(192*256*4)*float64(b.N)/(processCPUTime()-cpu0).Seconds()/1e9, "cpuGB/s")
}
