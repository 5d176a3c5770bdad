package kernels

import "fmt"

// Sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices, where
// op(A) is m×k (A is k×m when transA), op(B) is k×n (B is n×k when transB)
// and C is m×n with leading dimension ldc. beta = 0 overwrites C (NaNs in C
// do not propagate). The call blocks until C is complete.
//
// Work is split over the pool's threads (see planGemm); packing buffers live
// in the pool and are reused, so a steady stream of calls allocates nothing.
// Sgemm may be called from several goroutines at once, but not from inside a
// ParallelFor body of the same pool. Slices too short for the given shape
// are a programmer error and panic.
func (p *Pool) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if m*n*k <= smallGemm {
		sgemmNaive(transA, transB, 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	pl := planGemm(transB, m, n, k, ldb, p.Threads(), p.kernel())
	p.sgemmPlanned(pl, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// smallGemm is the size (m·n·k) up to which the unpacked reference loop
// beats packing (measured: 4×4×4 faster unpacked, 8×8×8 faster packed).
const smallGemm = 6 * 6 * 6

// sgemmPlanned runs a checked, non-trivial Sgemm with the split pl.
func (p *Pool) sgemmPlanned(pl gemmPlan, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	kern := p.kernel()
	job := p.getJob(kern)
	job.set(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	job.kcb = balancedBlock(k, kern.kc)
	job.directB = pl.directB
	job.assign(pl)
	if pl.mode != splitShared {
		job.phase = phaseAll
		p.fork(job, pl.threads)
	} else {
		// One fork-join packs B̃ (each part a share of its micro-panels), the
		// next multiplies (each part its rows) — per (nc, kc) block.
		for jc := 0; jc < n; jc += kern.nc {
			nc := min(kern.nc, n-jc)
			for pc := 0; pc < k; pc += job.kcb {
				kc := min(job.kcb, k-pc)
				job.jc, job.nc, job.pc, job.kc = jc, nc, pc, kc
				job.sharedB = grow(job.sharedB, kc*roundUp(nc, kern.nr))
				job.phase = phasePackB
				p.fork(job, pl.threads)
				job.phase = phaseMultiply
				p.fork(job, pl.threads)
			}
		}
	}
	job.set(false, false, 0, 0, 0, 0, nil, 0, nil, 0, 0, nil, 0) // drop caller's slices
	p.putJob(job)
}

// fork runs parts [0,t) of job, part 0 on the caller, and waits for all.
func (p *Pool) fork(job *gemmJob, t int) {
	job.join.add(t - 1)
	for i := 1; i < t; i++ {
		p.work <- job.parts[i].run
	}
	job.parts[0].exec()
	job.join.wait()
}

// How a call is split across threads.
const (
	splitN      = iota // each part owns a range of C's columns; packs all of Ã, its share of B̃
	splitM             // each part owns a range of C's rows; packs its share of Ã, all of B̃
	splitShared        // rows split; B̃ packed once, cooperatively, per (nc,kc) block
)

// gemmPlan is planGemm's choice: a split mode and how many threads to use.
type gemmPlan struct {
	mode, threads int
	// directB: the kernel reads B (not transposed) in place, ldb apart, for
	// full-width column tiles; only the last partial tile is packed.
	directB bool
}

// Cost model constants, in FLOP-equivalents of one thread's time: packing
// one element of Ã (a transposing copy) or B̃ (mostly a memcpy), and one
// fork-join of the pool.
const (
	costPackA = 60
	costPackB = 35
	costFork  = 2_000_000
)

// directBMaxM is the largest m for which reading B in place beats packing
// it: packing costs O(k·n) once per call and pays off only when the m/mr
// row tiles reuse it often (measured single-thread, Zen 5: m=64 n=3136
// k=576 90→160 GFLOP/s, m=512 cube +8 %, m=2048 cube −4 %).
const directBMaxM = 1024

// planGemm picks the split that minimises the busiest thread's modelled
// time: its micro-tile FLOPs (whole tiles, so imbalance counts) plus its
// packing, plus fork-joins. It is a pure function of the shape.
func planGemm(transB bool, m, n, k, ldb, threads int, kern *microKernel) gemmPlan {
	mr, nr := kern.mr, kern.nr
	// B in place is read kc rows ldb apart; with ldb a multiple of 2 KiB
	// those rows crowd a few cache sets and evict each other (n=1024 ran at
	// 0.6× of packed), so such B is packed.
	directB := !transB && m <= directBMaxM && ldb%512 != 0
	rowStep := mr // rows an edge tile really computes: the smallest row variant
	for r := range kern.rows {
		rowStep = min(rowStep, r)
	}
	packB := float64(costPackB)
	if directB {
		packB = 0 // only the last partial micro-panel is packed
	}
	mt, nt := (m+mr-1)/mr, (n+nr-1)/nr
	kBlocks := float64((k + kern.kc - 1) / kern.kc)
	fk := float64(k)
	cost := func(mode, t int) float64 {
		switch mode {
		case splitN:
			cols := float64((nt + t - 1) / t * nr)
			nBlocks := float64((int(cols) + kern.nc - 1) / kern.nc)
			return 2*float64(roundUp(m, rowStep))*cols*fk + costPackA*float64(m)*fk*nBlocks + packB*fk*cols + costFork*float64(min(t-1, 1))
		case splitM:
			rows := float64((mt + t - 1) / t * mr)
			nBlocks := float64((n + kern.nc - 1) / kern.nc)
			return 2*rows*float64(roundUp(n, nr))*fk + costPackA*rows*fk*nBlocks + packB*fk*float64(n) + costFork*float64(min(t-1, 1))
		default: // splitShared
			rows := float64((mt + t - 1) / t * mr)
			nBlocks := float64((n + kern.nc - 1) / kern.nc)
			return 2*rows*float64(roundUp(n, nr))*fk + costPackA*rows*fk*nBlocks + costPackB*fk*float64(n)/float64(t) + costFork*2*kBlocks*nBlocks
		}
	}
	best := gemmPlan{mode: splitN, threads: 1, directB: directB}
	bestCost := cost(splitN, 1)
	for t := 2; t <= threads; t++ {
		for _, mode := range []int{splitN, splitM, splitShared} {
			if (mode == splitN && t > nt) || (mode != splitN && t > mt) || (mode == splitShared && directB) {
				continue
			}
			if c := cost(mode, t); c < bestCost {
				best, bestCost = gemmPlan{mode: mode, threads: t, directB: directB}, c
			}
		}
	}
	return best
}

// Phases of a part's exec.
const (
	phaseAll      = iota // the whole block [m0,m1)×[n0,n1), own packing (splitN, splitM)
	phasePackB           // pack micro-panels [b0,b1) of job.sharedB for (jc,nc,pc,kc)
	phaseMultiply        // rows [m0,m1) times job.sharedB
)

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
	join           join

	directB        bool
	kcb            int // kc block: ≤ kern.kc, splitting k evenly
	phase          int
	jc, nc, pc, kc int       // current block in splitShared
	sharedB        []float32 // B̃ block packed cooperatively in splitShared
}

// gemmPart computes its block of C with its own packing buffers.
type gemmPart struct {
	job            *gemmJob
	m0, m1, n0, n1 int
	b0, b1         int  // micro-panels of the shared B̃ block this part packs
	lazyB          bool // pack B̃ one micro-panel at a time, in multiply
	packA, packB   []float32
	tile           []float32
	run            func() // exec + Done, bound once so sending it allocates nothing
}

func newGemmJob(kern *microKernel, threads int) *gemmJob {
	j := &gemmJob{kern: kern, parts: make([]*gemmPart, threads)}
	for i := range j.parts {
		pt := &gemmPart{job: j, tile: make([]float32, kern.mr*kern.nr)}
		pt.run = func() { pt.exec(); j.join.done() }
		j.parts[i] = pt
	}
	return j
}

func (j *gemmJob) set(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	j.transA, j.transB, j.m, j.n, j.k = transA, transB, m, n, k
	j.alpha, j.a, j.lda, j.b, j.ldb, j.beta, j.c, j.ldc = alpha, a, lda, b, ldb, beta, c, ldc
}

// assign gives parts [0, pl.threads) their blocks of C in whole micro-tiles.
func (j *gemmJob) assign(pl gemmPlan) {
	mr, nr := j.kern.mr, j.kern.nr
	mt, nt := (j.m+mr-1)/mr, (j.n+nr-1)/nr
	t := pl.threads
	for i := 0; i < t; i++ {
		pt := j.parts[i]
		if pl.mode == splitN {
			lo, hi := i*nt/t, (i+1)*nt/t
			pt.m0, pt.m1, pt.n0, pt.n1 = 0, j.m, min(lo*nr, j.n), min(hi*nr, j.n)
			continue
		}
		lo, hi := i*mt/t, (i+1)*mt/t
		pt.m0, pt.m1, pt.n0, pt.n1 = min(lo*mr, j.m), min(hi*mr, j.m), 0, j.n
		// Shared B̃: split the micro-panels of the widest block evenly.
		panels := (min(j.kern.nc, j.n) + nr - 1) / nr
		pt.b0, pt.b1 = i*panels/t, (i+1)*panels/t
	}
}

func (pt *gemmPart) exec() {
	j, kern := pt.job, pt.job.kern
	switch j.phase {
	case phasePackB:
		nr := kern.nr
		p0, p1 := min(pt.b0*nr, j.nc), min(pt.b1*nr, j.nc)
		if p0 < p1 {
			packB(j.sharedB[p0*j.kc:], j.transB, j.b, j.ldb, j.pc, j.kc, j.jc+p0, p1-p0, nr, kern.packBT)
		}
		return
	case phaseMultiply:
		pt.multiply(j.sharedB, j.jc, j.nc, j.pc, j.kc)
		return
	}
	// phaseAll: the BLIS loops over the part's own block; for each nc-wide
	// column block and kc-deep slice, pack B̃ once (directB: only its last,
	// partial micro-panel), then multiply. With at most one row block, B̃
	// is packed a micro-panel at a time inside multiply (lazyB), so the
	// packed copy never leaves L1/L2: all its reuse happens right away.
	pt.lazyB = !j.directB && pt.m1-pt.m0 <= kern.mc
	defer func() { pt.lazyB = false }()
	for jc := pt.n0; jc < pt.n1; jc += kern.nc {
		nc := min(kern.nc, pt.n1-jc)
		for pc := 0; pc < j.k; pc += j.kcb {
			kc := min(j.kcb, j.k-pc)
			if pt.lazyB {
				pt.packB = grow(pt.packB, kc*kern.nr)
			} else if !j.directB {
				pt.packB = grow(pt.packB, kc*roundUp(nc, kern.nr))
				packB(pt.packB, j.transB, j.b, j.ldb, pc, kc, jc, nc, kern.nr, kern.packBT)
			} else if rem := nc % kern.nr; rem != 0 {
				pt.packB = grow(pt.packB, kc*kern.nr)
				packB(pt.packB, false, j.b, j.ldb, pc, kc, jc+nc-rem, rem, kern.nr, nil)
			}
			pt.multiply(pt.packB, jc, nc, pc, kc)
		}
	}
}

// multiply does rows [m0,m1) of C[:, jc:jc+nc] += Ã[:, pc:pc+kc]·B̃, with bp
// the packed B̃ block (directB: B read in place, bp holding only the last
// partial micro-panel): for each mc-tall row block pack Ã, then sweep
// micro-tiles, B̃ micro-panel outer so it stays close while Ã micro-panels
// stream from L2. The first kc slice applies beta, later ones accumulate.
func (pt *gemmPart) multiply(bp []float32, jc, nc, pc, kc int) {
	j, kern := pt.job, pt.job.kern
	mr, nr := kern.mr, kern.nr
	beta := j.beta
	if pc > 0 {
		beta = 1
	}
	mcb := roundUp(balancedBlock(pt.m1-pt.m0, kern.mc), mr)
	for ic := pt.m0; ic < pt.m1; ic += mcb {
		mc := min(mcb, pt.m1-ic)
		pt.packA = grow(pt.packA, kc*roundUp(mc, mr))
		packA(pt.packA, j.transA, j.a, j.lda, ic, mc, pc, kc, mr)
		for jr := 0; jr < nc; jr += nr {
			nrr := min(nr, nc-jr)
			var b *float32
			ldb := nr
			switch {
			case pt.lazyB:
				packB(bp, j.transB, j.b, j.ldb, pc, kc, jc+jr, nrr, nr, kern.packBT)
				b = &bp[0]
			case j.directB && nrr == nr:
				b, ldb = &j.b[pc*j.ldb+jc+jr], j.ldb
			case j.directB:
				b = &bp[0]
			default:
				b = &bp[jr*kc]
			}
			for ir := 0; ir < mc; ir += mr {
				mrr := min(mr, mc-ir)
				a := &pt.packA[ir*kc]
				ci := (ic+ir)*j.ldc + jc + jr
				if mrr == mr && nrr == nr {
					kern.fn(kc, a, b, ldb, &j.c[ci], j.ldc, j.alpha, beta)
					continue
				}
				fn, exact := kern.edge(mrr)
				if exact && nrr == nr {
					fn(kc, a, b, ldb, &j.c[ci], j.ldc, j.alpha, beta)
					continue
				}
				fn(kc, a, b, ldb, &pt.tile[0], nr, 1, 0)
				mergeTile(pt.tile, nr, mrr, nrr, j.alpha, beta, j.c[ci:], j.ldc)
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

// balancedBlock splits total into the fewest blocks of at most max and
// returns the (equal, rounded-up) block size: 576 by 512 gives 288, not
// 512 + 64, so no slice is too thin to amortise its pass over C.
func balancedBlock(total, max int) int {
	if total <= 0 {
		return max
	}
	blocks := (total + max - 1) / max
	return (total + blocks - 1) / blocks
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
