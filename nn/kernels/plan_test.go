package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestSgemmEverySplit runs each split mode and thread count on shapes that
// cross block edges, whatever planGemm would have chosen.
func TestSgemmEverySplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, p := range pathPools(t, 3) {
		kern := p.kernel()
		for _, mode := range []int{splitN, splitM, splitShared} {
			for _, s := range [][3]int{{97, 131, 70}, {3 * kern.mr, 2*kern.nr + 1, kern.kc + 3}, {kern.mc + 5, kern.nr*3 - 1, 2*kern.kc + 1}} {
				for _, tr := range [][2]bool{{false, false}, {true, true}, {false, true}, {true, false}} {
					g := gemmCase{transA: tr[0], transB: tr[1], m: s[0], n: s[1], k: s[2], padA: 2, padB: 1, padC: 1, alpha: -0.5, beta: 0.5}
					mt, nt := (g.m+kern.mr-1)/kern.mr, (g.n+kern.nr-1)/kern.nr
					for th := 1; th <= 3; th++ {
						if (mode == splitN && th > nt) || (mode != splitN && th > mt) {
							continue
						}
						for _, direct := range []bool{false, true} {
							if direct && (g.transB || mode == splitShared) {
								continue
							}
							pl := gemmPlan{mode: mode, threads: th, directB: direct}
							o := g.operands(rng)
							want := append([]float32(nil), o.c0...)
							sgemmNaive(g.transA, g.transB, 0, g.m, g.n, g.k, g.alpha, o.a, o.lda, o.b, o.ldb, g.beta, want, o.ldc)
							got := append([]float32(nil), o.c0...)
							p.sgemmPlanned(pl, g.transA, g.transB, g.m, g.n, g.k, g.alpha, o.a, o.lda, o.b, o.ldb, g.beta, got, o.ldc)
							t.Run(fmt.Sprintf("%s/%+v/%s", kern.name, pl, g), func(t *testing.T) { assertClose(t, got, want, 1e-4) })
						}
					}
				}
			}
		}
	}
}

func TestPlanGemm(t *testing.T) {
	kern := &microKernel{mr: 12, nr: 32, mc: 96, kc: 512, nc: 4096, rows: map[int]kernelFunc{4: nil, 8: nil}}
	tests := []struct {
		transB           bool
		m, n, k, threads int
		want             gemmPlan
	}{
		{false, 1024, 1024, 1024, 2, gemmPlan{splitShared, 2, false}}, // ldb 4 KiB: pack B, not in place
		{false, 8, 8, 8, 2, gemmPlan{splitN, 1, true}},                // tiny: not worth a fork
		{false, 2048, 2048, 2048, 1, gemmPlan{splitN, 1, false}},      // one thread, big m: pack B
		{false, 2048, 2048, 2048, 2, gemmPlan{splitShared, 2, false}}, // square: pack B̃ once, together
		{true, 512, 512, 512, 2, gemmPlan{splitShared, 2, false}},     // B transposed: must pack
		{false, 512, 384, 512, 2, gemmPlan{splitM, 2, true}},          // B read in place: split Ã packing
		{false, 64, 3136, 576, 2, gemmPlan{splitN, 2, true}},          // conv forward: few rows, many columns
		{true, 64, 576, 3136, 2, gemmPlan{splitN, 2, false}},          // conv weight gradient
		{true, 16, 1000, 4096, 2, gemmPlan{splitN, 2, false}},         // linear forward, small batch
		{false, 4096, 40, 1000, 2, gemmPlan{splitM, 2, false}},        // tall and thin
	}
	for _, tt := range tests {
		ldb := tt.n
		if tt.transB {
			ldb = tt.k
		}
		if got := planGemm(tt.transB, tt.m, tt.n, tt.k, ldb, tt.threads, kern); got != tt.want {
			t.Errorf("planGemm(transB=%v, %d,%d,%d, threads=%d) = %+v, want %+v", tt.transB, tt.m, tt.n, tt.k, tt.threads, got, tt.want)
		}
	}
}
