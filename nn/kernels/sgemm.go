package kernels

import (
	"fmt"
	"sync"
)

// Sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices, where
// op(A) is m×k (A is k×m when transA), op(B) is k×n (B is n×k when transB)
// and C is m×n with leading dimension ldc. beta = 0 overwrites C (NaNs in C
// do not propagate). The call blocks until C is complete.
//
// Work is split over the pool's threads by blocks of rows or columns of C;
// packing buffers live in the pool and are reused, so a steady stream of
// calls allocates nothing. Sgemm may be called from several goroutines at
// once, but not from inside a ParallelFor body of the same pool. Slices too
// short for the given shape are a programmer error and panic.
func (p *Pool) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	kern := p.kernel()
	job := p.getJob(kern)
	job.set(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	t := job.split(p.Threads())
	job.wg.Add(t - 1)
	for i := 1; i < t; i++ {
		p.work <- job.parts[i].run
	}
	job.parts[0].exec()
	job.wg.Wait()
	job.set(false, false, 0, 0, 0, 0, nil, 0, nil, 0, 0, nil, 0) // drop caller's slices
	p.putJob(job)
}

// parallelMinFlops is the size (m·n·k) below which splitting across threads
// costs more than it gains.
const parallelMinFlops = 48 * 48 * 48

// gemmJob is one Sgemm call's shared arguments plus its per-thread parts,
// reused from call to call.
type gemmJob struct {
	kern           *microKernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
	parts          []*gemmPart
	wg             sync.WaitGroup
}

// gemmPart computes the block [m0,m1)×[n0,n1) of C with its own packing buffers.
type gemmPart struct {
	job            *gemmJob
	m0, m1, n0, n1 int
	packA, packB   []float32
	tile           []float32
	run            func() // exec + Done, bound once so sending it allocates nothing
}

func newGemmJob(kern *microKernel, threads int) *gemmJob {
	j := &gemmJob{kern: kern, parts: make([]*gemmPart, threads)}
	for i := range j.parts {
		pt := &gemmPart{job: j, tile: make([]float32, kern.mr*kern.nr)}
		pt.run = func() { pt.exec(); j.wg.Done() }
		j.parts[i] = pt
	}
	return j
}

func (j *gemmJob) set(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	j.transA, j.transB, j.m, j.n, j.k = transA, transB, m, n, k
	j.alpha, j.a, j.lda, j.b, j.ldb, j.beta, j.c, j.ldc = alpha, a, lda, b, ldb, beta, c, ldc
}

// split assigns C's blocks to at most threads parts, in whole micro-tiles,
// along the dimension with more tiles; it returns the number of parts used.
func (j *gemmJob) split(threads int) int {
	mr, nr := j.kern.mr, j.kern.nr
	mt, nt := (j.m+mr-1)/mr, (j.n+nr-1)/nr
	t := min(threads, len(j.parts))
	if j.m*j.n*j.k < parallelMinFlops {
		t = 1
	}
	byN := nt >= mt
	tiles := max(mt, nt)
	t = max(1, min(t, tiles))
	for i := 0; i < t; i++ {
		lo, hi := i*tiles/t, (i+1)*tiles/t
		pt := j.parts[i]
		if byN {
			pt.m0, pt.m1, pt.n0, pt.n1 = 0, j.m, min(lo*nr, j.n), min(hi*nr, j.n)
		} else {
			pt.m0, pt.m1, pt.n0, pt.n1 = min(lo*mr, j.m), min(hi*mr, j.m), 0, j.n
		}
	}
	return t
}

// exec runs the blocked loops (BLIS order) over the part's block of C:
// for each nc-wide column block and kc-deep slice, pack B̃ once; for each
// mc-tall row block pack Ã; then sweep micro-tiles, B̃ micro-panel outer
// so it stays in L1 while Ã micro-panels stream from L2.
func (pt *gemmPart) exec() {
	j, kern := pt.job, pt.job.kern
	mr, nr := kern.mr, kern.nr
	for jc := pt.n0; jc < pt.n1; jc += kern.nc {
		nc := min(kern.nc, pt.n1-jc)
		for pc := 0; pc < j.k; pc += kern.kc {
			kc := min(kern.kc, j.k-pc)
			pt.packB = grow(pt.packB, kc*roundUp(nc, nr))
			packB(pt.packB, j.transB, j.b, j.ldb, pc, kc, jc, nc, nr)
			beta := j.beta
			if pc > 0 {
				beta = 1
			}
			for ic := pt.m0; ic < pt.m1; ic += kern.mc {
				mc := min(kern.mc, pt.m1-ic)
				pt.packA = grow(pt.packA, kc*roundUp(mc, mr))
				packA(pt.packA, j.transA, j.a, j.lda, ic, mc, pc, kc, mr)
				for jr := 0; jr < nc; jr += nr {
					nrr := min(nr, nc-jr)
					bp := &pt.packB[jr*kc]
					for ir := 0; ir < mc; ir += mr {
						mrr := min(mr, mc-ir)
						ap := &pt.packA[ir*kc]
						ci := (ic+ir)*j.ldc + jc + jr
						if mrr == mr && nrr == nr {
							kern.fn(kc, ap, bp, &j.c[ci], j.ldc, j.alpha, beta)
							continue
						}
						kern.fn(kc, ap, bp, &pt.tile[0], nr, 1, 0)
						mergeTile(pt.tile, nr, mrr, nrr, j.alpha, beta, j.c[ci:], j.ldc)
					}
				}
			}
		}
	}
}

// mergeTile writes C[0:mr,0:nr] = alpha·T + beta·C for an edge tile.
func mergeTile(t []float32, ldt, mr, nr int, alpha, beta float32, c []float32, ldc int) {
	for i := 0; i < mr; i++ {
		trow := t[i*ldt : i*ldt+nr]
		crow := c[i*ldc : i*ldc+nr]
		if beta == 0 {
			for j, v := range trow {
				crow[j] = alpha * v
			}
		} else {
			for j, v := range trow {
				crow[j] = alpha*v + beta*crow[j]
			}
		}
	}
}

// scaleC sets C = beta·C (beta = 0 clears, so NaNs do not survive).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(row)
		case 1:
		default:
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

func checkGemmArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("kernels: Sgemm: negative shape m=%d n=%d k=%d", m, n, k))
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	check := func(name string, s []float32, rows, cols, ld int) {
		if rows == 0 || cols == 0 {
			return
		}
		if ld < cols {
			panic(fmt.Sprintf("kernels: Sgemm: ld%s=%d < %d columns", name, ld, cols))
		}
		if need := (rows-1)*ld + cols; len(s) < need {
			panic(fmt.Sprintf("kernels: Sgemm: len(%s)=%d < %d for %d×%d with ld=%d", name, len(s), need, rows, cols, ld))
		}
	}
	if k > 0 {
		check("a", a, ar, ac, lda)
		check("b", b, br, bc, ldb)
	}
	check("c", c, m, n, ldc)
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

// grow returns s with length n, reusing its storage when it is big enough.
func grow(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]float32, n)
}

// sgemmNaive is the reference: rows [lo,hi) of C.
func sgemmNaive(transA, transB bool, lo, hi, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := lo; i < hi; i++ {
		crow := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(crow)
		} else if beta != 1 {
			for j := range crow {
				crow[j] *= beta
			}
		}
		for l := 0; l < k; l++ {
			var av float32
			if transA {
				av = a[l*lda+i]
			} else {
				av = a[i*lda+l]
			}
			av *= alpha
			if av == 0 {
				continue
			}
			if transB {
				for j := range crow {
					crow[j] += av * b[j*ldb+l]
				}
			} else {
				brow := b[l*ldb : l*ldb+n]
				for j, bv := range brow {
					crow[j] += av * bv
				}
			}
		}
	}
}
