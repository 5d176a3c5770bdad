package kernels

import "sync"

// Pool is a worker's compute pool: a fixed set of goroutines that kernels
// split their work across, so that a process never runs more compute threads
// than it was given. A nil *Pool is valid and runs everything on the caller's
// goroutine.
type Pool struct {
	threads int
	work    chan func()
	wg      sync.WaitGroup
}

// NewPool starts a pool of threads goroutines (threads ≥ 1). The caller owns
// it and must Close it.
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = 1
	}
	p := &Pool{threads: threads, work: make(chan func())}
	for i := 1; i < threads; i++ { // the caller's goroutine is the last thread
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for f := range p.work {
				f()
			}
		}()
	}
	return p
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
func (p *Pool) ParallelFor(n int, f func(lo, hi int)) {
	t := p.Threads()
	if t > n {
		t = n
	}
	if t <= 1 {
		if n > 0 {
			f(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	wg.Add(t - 1)
	for i := 0; i < t-1; i++ {
		lo, hi := i*n/t, (i+1)*n/t
		p.work <- func() { defer wg.Done(); f(lo, hi) }
	}
	f((t-1)*n/t, n)
	wg.Wait()
}
