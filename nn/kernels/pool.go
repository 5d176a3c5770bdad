package kernels

import (
	"context"
	"fmt"
	"runtime/pprof"
	"sync"
)

// Pool is a worker's compute pool: a fixed set of goroutines that kernels
// split their work across, so that a process never runs more compute threads
// than it was given. A nil *Pool is valid and runs everything on the caller's
// goroutine.
type Pool struct {
	threads int
	work    chan func()
	wg      sync.WaitGroup
	kern    *microKernel // SGEMM micro-kernel, fixed at construction

	mu     sync.Mutex
	jobs   []*gemmJob // idle SGEMM jobs with their packing buffers
	forJob []*forJob  // idle ParallelFor jobs
}

// NewPool starts a pool of threads goroutines (threads ≥ 1). The caller owns
// it and must Close it.
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = 1
	}
	p := &Pool{threads: threads, work: make(chan func()), kern: defaultKernel}
	for i := 1; i < threads; i++ { // the caller's goroutine is the last thread
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Labelled so that a CPU profile tells the pool's threads from
			// the caller's (pprof -tagfocus pool=worker), which shows the
			// caller's serial phases.
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("pool", "worker")))
			for f := range p.work {
				f()
			}
		}()
	}
	return p
}

// NewPoolWithKernel is NewPool with the SGEMM kernel path forced to path
// ("generic", "avx2", "avx512"; "" means the default). It fails with
// ErrKernelUnsupported if this CPU cannot run path.
func NewPoolWithKernel(threads int, path string) (*Pool, error) {
	kern := defaultKernel
	if path != "" {
		var err error
		if kern, err = chooseKernel(path, supportedKernels()); err != nil {
			return nil, fmt.Errorf("new pool with kernel %q: %w", path, err)
		}
	}
	p := NewPool(threads)
	p.kern = kern
	return p, nil
}

// KernelPath reports which SGEMM micro-kernel path the pool uses.
func (p *Pool) KernelPath() string { return p.kernel().name }

func (p *Pool) kernel() *microKernel {
	if p == nil {
		return defaultKernel
	}
	return p.kern
}

// nilPoolJobs caches SGEMM packing buffers for the nil (single-threaded)
// pool, so it too allocates nothing in steady state. It is a cache only.
var nilPoolJobs = sync.Pool{New: func() any { return newGemmJob(defaultKernel, 1) }}

// getJob takes an idle SGEMM job (with warm packing buffers) or makes one.
func (p *Pool) getJob(kern *microKernel) *gemmJob {
	if p == nil {
		return nilPoolJobs.Get().(*gemmJob)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.jobs); n > 0 {
		j := p.jobs[n-1]
		p.jobs = p.jobs[:n-1]
		return j
	}
	return newGemmJob(kern, p.threads)
}

func (p *Pool) putJob(j *gemmJob) {
	if p == nil {
		nilPoolJobs.Put(j)
		return
	}
	p.mu.Lock()
	p.jobs = append(p.jobs, j)
	p.mu.Unlock()
}

// Threads reports how many threads kernels may use.
func (p *Pool) Threads() int {
	if p == nil {
		return 1
	}
	return p.threads
}

// Close stops the pool's goroutines. The pool must be idle.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	close(p.work)
	p.wg.Wait()
}

// ParallelFor splits [0,n) into at most Threads() contiguous ranges and runs
// f on each, one on the calling goroutine; it returns when all are done.
func (p *Pool) ParallelFor(n int, f func(lo, hi int)) { p.parallel(n, min(p.Threads(), n), f) }

// parallel runs f over [0,n) split into t contiguous ranges (t ≤ threads).
func (p *Pool) parallel(n, t int, f func(lo, hi int)) {
	if t <= 1 {
		if n > 0 {
			f(0, n)
		}
		return
	}
	j := p.getForJob()
	j.f = f
	j.wg.Add(t - 1)
	for i := 0; i < t-1; i++ {
		j.parts[i].lo, j.parts[i].hi = i*n/t, (i+1)*n/t
		p.work <- j.parts[i].run
	}
	f((t-1)*n/t, n)
	j.wg.Wait()
	j.f = nil
	p.mu.Lock()
	p.forJob = append(p.forJob, j)
	p.mu.Unlock()
}

// forJob is one ParallelFor call's shared state, reused so that a steady
// stream of calls allocates nothing (beyond what the caller's f does).
type forJob struct {
	f     func(lo, hi int)
	wg    sync.WaitGroup
	parts []forPart
}

type forPart struct {
	lo, hi int
	run    func() // bound once: f(lo, hi) then Done
}

func (p *Pool) getForJob() *forJob {
	p.mu.Lock()
	if n := len(p.forJob); n > 0 {
		j := p.forJob[n-1]
		p.forJob = p.forJob[:n-1]
		p.mu.Unlock()
		return j
	}
	p.mu.Unlock()
	j := &forJob{parts: make([]forPart, p.threads-1)}
	for i := range j.parts {
		pt := &j.parts[i]
		pt.run = func() { j.f(pt.lo, pt.hi); j.wg.Done() }
	}
	return j
}
