package kernels

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

// gemmCase is one Sgemm call; makeOperands fills it with random data.
type gemmCase struct {
	transA, transB   bool
	m, n, k          int
	padA, padB, padC int
	alpha, beta      float32
}

func (g gemmCase) String() string {
	return fmt.Sprintf("tA=%v tB=%v m=%d n=%d k=%d pad=%d/%d/%d alpha=%g beta=%g",
		g.transA, g.transB, g.m, g.n, g.k, g.padA, g.padB, g.padC, g.alpha, g.beta)
}

type gemmOperands struct {
	a, b, c0      []float32
	lda, ldb, ldc int
}

func (g gemmCase) operands(rng *rand.Rand) gemmOperands {
	ar, ac := g.m, g.k
	if g.transA {
		ar, ac = g.k, g.m
	}
	br, bc := g.k, g.n
	if g.transB {
		br, bc = g.n, g.k
	}
	o := gemmOperands{lda: ac + g.padA, ldb: bc + g.padB, ldc: g.n + g.padC}
	o.a = randSlice(rng, ar*o.lda)
	o.b = randSlice(rng, br*o.ldb)
	o.c0 = randSlice(rng, g.m*o.ldc)
	return o
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}

// checkGemm runs g on pool p and compares with sgemmNaive within a bound
// scaled by |alpha|·|A|·|B| + |beta|·|C|; padding in C must stay untouched
// and beta = 0 must overwrite NaNs.
func checkGemm(t testing.TB, p *Pool, g gemmCase, rng *rand.Rand) {
	t.Helper()
	o := g.operands(rng)
	want := append([]float32(nil), o.c0...)
	sgemmNaive(g.transA, g.transB, 0, g.m, g.n, g.k, g.alpha, o.a, o.lda, o.b, o.ldb, g.beta, want, o.ldc)
	absA, absB := absSlice(o.a), absSlice(o.b)
	bound := make([]float32, len(o.c0))
	sgemmNaive(g.transA, g.transB, 0, g.m, g.n, g.k, abs32(g.alpha), absA, o.lda, absB, o.ldb, 0, bound, o.ldc)

	got := append([]float32(nil), o.c0...)
	if g.beta == 0 {
		for i := 0; i < g.m; i++ {
			for j := 0; j < g.n; j++ {
				got[i*o.ldc+j] = float32(math.NaN())
			}
		}
	}
	p.Sgemm(g.transA, g.transB, g.m, g.n, g.k, g.alpha, o.a, o.lda, o.b, o.ldb, g.beta, got, o.ldc)
	eps := float64(g.k+4) * 2e-7
	for i := 0; i < g.m; i++ {
		for j := 0; j < o.ldc; j++ {
			idx := i*o.ldc + j
			if j >= g.n {
				if got[idx] != o.c0[idx] {
					t.Fatalf("%s path=%s: padding C[%d,%d] changed %g -> %g", g, p.KernelPath(), i, j, o.c0[idx], got[idx])
				}
				continue
			}
			tol := eps*(float64(bound[idx])+float64(abs32(g.beta*o.c0[idx]))) + 1e-6
			if d := math.Abs(float64(got[idx] - want[idx])); !(d <= tol) {
				t.Fatalf("%s path=%s threads=%d: C[%d,%d]=%g want %g (|diff| %g > tol %g)", g, p.KernelPath(), p.Threads(), i, j, got[idx], want[idx], d, tol)
			}
		}
	}
}

func absSlice(s []float32) []float32 {
	out := make([]float32, len(s))
	for i, v := range s {
		out[i] = abs32(v)
	}
	return out
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

// pathPools returns a pool per (supported path, threads); the CPU here has
// AVX-512, so a path is only missing on other machines.
func pathPools(t testing.TB, threads ...int) []*Pool {
	t.Helper()
	var pools []*Pool
	for _, path := range []string{PathGeneric, PathAVX2, PathAVX512} {
		for _, th := range threads {
			p, err := NewPoolWithKernel(th, path)
			if errors.Is(err, ErrKernelUnsupported) {
				t.Logf("skipping path %s: %v", path, err)
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			pools = append(pools, p)
		}
	}
	return pools
}

var testDims = []int{1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 16, 17, 31, 32, 33, 47, 64, 97, 130, 257}

func TestSgemmRandomShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphas := []float32{1, 0.5, -2, 0}
	betas := []float32{0, 1, -0.5, 2}
	for _, p := range pathPools(t, 1, 2, 3) {
		t.Run(fmt.Sprintf("%s/threads=%d", p.KernelPath(), p.Threads()), func(t *testing.T) {
			for trial := 0; trial < 120; trial++ {
				g := gemmCase{
					transA: rng.IntN(2) == 1, transB: rng.IntN(2) == 1,
					m: testDims[rng.IntN(len(testDims))], n: testDims[rng.IntN(len(testDims))], k: testDims[rng.IntN(len(testDims))],
					padA: rng.IntN(3) * 3, padB: rng.IntN(3) * 5, padC: rng.IntN(3) * 2,
					alpha: alphas[rng.IntN(len(alphas))], beta: betas[rng.IntN(len(betas))],
				}
				checkGemm(t, p, g, rng)
			}
		})
	}
}

// TestSgemmBlockEdges crosses every cache-block boundary (mc, kc, nc) with
// all four transpose combinations.
func TestSgemmBlockEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	shapes := [][3]int{{400, 70, 600}, {13, 2100, 9}, {1, 2053, 300}, {197, 1, 513}, {0, 5, 5}, {5, 0, 5}, {5, 5, 0}, {1, 1, 1}}
	if testing.Short() {
		shapes = shapes[3:]
	}
	for _, p := range pathPools(t, 2) {
		for _, s := range shapes {
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				checkGemm(t, p, gemmCase{transA: tr[0], transB: tr[1], m: s[0], n: s[1], k: s[2], padA: 1, padB: 2, padC: 3, alpha: 1.5, beta: 0.25}, rng)
			}
		}
	}
}

func TestSgemmNilPool(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var p *Pool
	for _, d := range []int{1, 17, 97} {
		checkGemm(t, p, gemmCase{m: d, n: d + 3, k: d + 1, alpha: 1, beta: 0}, rng)
		checkGemm(t, p, gemmCase{transA: true, transB: true, m: d, n: d, k: d, alpha: -1, beta: 1}, rng)
	}
}

func TestSgemmConcurrentCallers(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < 10; i++ {
				g := gemmCase{m: 50 + w, n: 70, k: 60 + i, alpha: 1, beta: 0}
				o := g.operands(rng)
				want := make([]float32, len(o.c0))
				sgemmNaive(false, false, 0, g.m, g.n, g.k, 1, o.a, o.lda, o.b, o.ldb, 0, want, o.ldc)
				p.Sgemm(false, false, g.m, g.n, g.k, 1, o.a, o.lda, o.b, o.ldb, 0, o.c0, o.ldc)
				for j := range want {
					if math.Abs(float64(want[j]-o.c0[j])) > 1e-4 {
						errs <- fmt.Sprintf("worker %d call %d: C[%d]=%g want %g", w, i, j, o.c0[j], want[j])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestSgemmPanicsOnShortSlices(t *testing.T) {
	tests := []struct {
		name string
		call func(p *Pool)
	}{
		{"short a", func(p *Pool) {
			p.Sgemm(false, false, 4, 4, 4, 1, make([]float32, 15), 4, make([]float32, 16), 4, 0, make([]float32, 16), 4)
		}},
		{"short b trans", func(p *Pool) {
			p.Sgemm(false, true, 4, 4, 4, 1, make([]float32, 16), 4, make([]float32, 15), 4, 0, make([]float32, 16), 4)
		}},
		{"short c", func(p *Pool) {
			p.Sgemm(false, false, 4, 4, 4, 1, make([]float32, 16), 4, make([]float32, 16), 4, 0, make([]float32, 15), 4)
		}},
		{"ldc too small", func(p *Pool) {
			p.Sgemm(false, false, 4, 4, 4, 1, make([]float32, 16), 4, make([]float32, 16), 4, 0, make([]float32, 16), 3)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tt.call(nil)
		})
	}
}

func TestChooseKernel(t *testing.T) {
	avail := []*microKernel{{name: PathAVX2}, genericKernel}
	tests := []struct {
		want, got string
		err       bool
	}{
		{"", PathAVX2, false},
		{"auto", PathAVX2, false},
		{"generic", PathGeneric, false},
		{" AVX2 ", PathAVX2, false},
		{"avx512", PathAVX2, true},
		{"sse9", PathAVX2, true},
	}
	for _, tt := range tests {
		k, err := chooseKernel(tt.want, avail)
		if k.name != tt.got || (err != nil) != tt.err {
			t.Errorf("chooseKernel(%q) = %s, %v; want %s, err=%v", tt.want, k.name, err, tt.got, tt.err)
		}
	}
	if _, err := chooseKernel("avx512", avail); !errors.Is(err, ErrKernelUnsupported) {
		t.Errorf("unsupported path error %v is not ErrKernelUnsupported", err)
	}
}

func TestSgemmZeroAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	const m, n, k = 150, 170, 300
	a, b, c := randSlice(rng, m*k), randSlice(rng, k*n), make([]float32, m*n)
	pools := append(pathPools(t, 1, 2), nil)
	for _, p := range pools {
		call := func() { p.Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n) }
		call()
		if allocs := testing.AllocsPerRun(20, call); allocs != 0 {
			t.Errorf("path=%s threads=%d: %v allocs per Sgemm, want 0", p.KernelPath(), p.Threads(), allocs)
		}
	}
}

func FuzzSgemm(f *testing.F) {
	f.Add(uint8(3), uint8(5), uint8(7), uint8(0), uint8(1), int8(2), int8(0), uint64(1))
	f.Add(uint8(13), uint8(33), uint8(1), uint8(3), uint8(2), int8(-4), int8(3), uint64(2))
	f.Add(uint8(1), uint8(1), uint8(40), uint8(2), uint8(0), int8(1), int8(1), uint64(3))
	pools := pathPools(f, 2)
	f.Fuzz(func(t *testing.T, m, n, k, trans, pad uint8, alpha, beta int8, seed uint64) {
		g := gemmCase{
			transA: trans&1 != 0, transB: trans&2 != 0,
			m: int(m % 70), n: int(n % 70), k: int(k % 70),
			padA: int(pad % 4), padB: int(pad / 4 % 4), padC: int(pad / 16 % 4),
			alpha: float32(alpha) / 4, beta: float32(beta) / 4,
		}
		for _, p := range pools {
			checkGemm(t, p, g, rand.New(rand.NewPCG(seed, 11)))
		}
	})
}

func BenchmarkSgemmSquare(b *testing.B) {
	for _, path := range KernelPaths() {
		for _, threads := range []int{1, 2} {
			for _, n := range []int{64, 256, 512, 1024, 2048} {
				b.Run(fmt.Sprintf("path=%s/threads=%d/n=%d", path, threads, n), func(b *testing.B) {
					if path == PathGeneric && n > 512 {
						b.Skip("generic path: too slow for big n")
					}
					p, err := NewPoolWithKernel(threads, path)
					if err != nil {
						b.Fatal(err)
					}
					defer p.Close()
					rng := rand.New(rand.NewPCG(1, 1))
					x, y, z := randSlice(rng, n*n), randSlice(rng, n*n), make([]float32, n*n)
					p.Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n) // warm the packing buffers
					b.ReportAllocs()
					cpu0 := processCPUTime()
					for b.Loop() {
						p.Sgemm(false, false, n, n, n, 1, x, n, y, n, 0, z, n)
					}
					flops := 2 * float64(n) * float64(n) * float64(n) * float64(b.N)
					b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					if cpu := processCPUTime() - cpu0; cpu > 0 {
						b.ReportMetric(flops/cpu.Seconds()/1e9*float64(threads), "cpu-GFLOP/s")
					}
				})
			}
		}
	}
}

// BenchmarkMicroKernel times one micro-kernel on L1/L2-resident packed
// panels (k=256): the ceiling the blocked driver can reach. cpu-GFLOP/s
// divides by process CPU time, which is robust to a busy machine.
func BenchmarkMicroKernel(b *testing.B) {
	for _, kern := range supportedKernels() {
		for _, k := range []int{256, 512} {
			b.Run(fmt.Sprintf("path=%s/k=%d", kern.name, k), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				ap, bp := randSlice(rng, kern.mr*k), randSlice(rng, kern.nr*k)
				c := make([]float32, kern.mr*kern.nr)
				b.ReportAllocs()
				cpu0 := processCPUTime()
				for b.Loop() {
					kern.fn(k, &ap[0], &bp[0], kern.nr, &c[0], kern.nr, 1, 1)
				}
				flops := 2 * float64(kern.mr*kern.nr*k) * float64(b.N)
				b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				if cpu := processCPUTime() - cpu0; cpu > 0 {
					b.ReportMetric(flops/cpu.Seconds()/1e9, "cpu-GFLOP/s")
				}
			})
		}
	}
}

// TestSgemmEdgeRows covers every edge-tile height (exact row-variant
// kernels, smaller variants into the scratch tile, and the full kernel) with
// full and partial column tiles.
func TestSgemmEdgeRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 11))
	for _, p := range pathPools(t, 1) {
		for m := 1; m <= 2*p.kernel().mr+1; m++ {
			for _, n := range []int{p.kernel().nr * 2, p.kernel().nr + 5} {
				checkGemm(t, p, gemmCase{m: m, n: n, k: 37, padC: 1, alpha: 2, beta: 0.5}, rng)
				checkGemm(t, p, gemmCase{transA: true, m: m, n: n, k: 9, alpha: 1, beta: 0}, rng)
			}
		}
	}
}

func TestBalancedBlock(t *testing.T) {
	tests := []struct{ total, max, want int }{
		{576, 512, 288}, {512, 512, 512}, {513, 512, 257}, {3136, 512, 448}, {10, 512, 10}, {0, 512, 512},
	}
	for _, tt := range tests {
		if got := balancedBlock(tt.total, tt.max); got != tt.want {
			t.Errorf("balancedBlock(%d, %d) = %d, want %d", tt.total, tt.max, got, tt.want)
		}
	}
}
