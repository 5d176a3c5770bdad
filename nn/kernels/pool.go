package kernels

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
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
	p := &Pool{threads: threads, work: make(chan func(), threads), kern: defaultKernel}
	for i := 1; i < threads; i++ { // the caller's goroutine is the last thread
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Labelled so that a CPU profile tells the pool's threads from
			// the caller's (pprof -tagfocus pool=worker), which shows the
			// caller's serial phases.
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("pool", "worker")))
			for {
				f, ok := p.next()
				if !ok {
					return
				}
				f()
			}
		}()
	}
	return p
}

// SpinEnv names the environment variable that sets how long an idle pool
// thread (and a caller waiting for its parts) spins before it parks: a Go
// duration ("200us", "1ms"; "0" parks at once).
const SpinEnv = "RINGTRAIN_POOL_SPIN"

// spinFor is that time. A training step forks hundreds of times; waking a
// parked goroutine on another CPU took 60-95 µs on the 2-vCPU dev VM (most
// of the ~12 % of a ResNet step that one core sat idle). Spinning 200 µs
// on both sides of a fork cut that to 4-11 µs and raised ResNet-18 224 b8
// from 14.2-15.0 to 16.6-17.4 img/s, ResNet-18 32×32 b64 by 12 % and
// ResNet-50 224 b4 by 10-19 %, with no more CPU time per step (quiet
// machine, alternating builds). OpenMP runtimes spin for the same reason
// (GOMP: ~300k iterations); a machine shared with other work can turn it
// down or off.
var spinFor = spinDuration(os.Getenv(SpinEnv))

func spinDuration(env string) time.Duration {
	const def = 200 * time.Microsecond
	if env == "" {
		return def
	}
	d, err := time.ParseDuration(env)
	if err != nil || d < 0 {
		slog.Warn("nn/kernels: ignoring invalid spin time", "env", SpinEnv, "value", env, "default", def)
		return def
	}
	return d
}

// spin bounds one busy-wait to spinFor, reading the clock only every 64
// rounds.
type spin struct {
	i     int
	start time.Time
}

// over reports whether the wait has used up spinFor (at once when it is 0).
func (s *spin) over() bool {
	if spinFor <= 0 {
		return true
	}
	if s.i++; s.i&63 != 0 {
		return false
	}
	if s.start.IsZero() {
		s.start = time.Now()
		return false
	}
	return time.Since(s.start) > spinFor
}

// next returns the next part to run, spinning up to spinFor before it
// blocks; ok is false once the pool is closed.
func (p *Pool) next() (f func(), ok bool) {
	for s := (spin{}); !s.over(); {
		select {
		case f, ok = <-p.work:
			return f, ok
		default:
		}
	}
	f, ok = <-p.work
	return f, ok
}

// join is a fork-join barrier whose waiter spins up to spinFor on an
// atomic count before it parks on the WaitGroup: a parked caller woken by
// the last part would otherwise wait for an idle CPU to wake and take it
// over, while the spinning pool thread keeps its own.
type join struct {
	pending atomic.Int32
	wg      sync.WaitGroup
}

func (j *join) add(n int) {
	j.pending.Add(int32(n))
	j.wg.Add(n)
}

func (j *join) done() {
	j.pending.Add(-1)
	j.wg.Done()
}

func (j *join) wait() {
	for s := (spin{}); j.pending.Load() != 0 && !s.over(); {
	}
	j.wg.Wait()
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
	j.join.add(t - 1)
	for i := 0; i < t-1; i++ {
		j.parts[i].lo, j.parts[i].hi = i*n/t, (i+1)*n/t
		p.work <- j.parts[i].run
	}
	f((t-1)*n/t, n)
	j.join.wait()
	j.f = nil
	p.mu.Lock()
	p.forJob = append(p.forJob, j)
	p.mu.Unlock()
}

// forJob is one ParallelFor call's shared state, reused so that a steady
// stream of calls allocates nothing (beyond what the caller's f does).
type forJob struct {
	f     func(lo, hi int)
	join  join
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
		pt.run = func() { j.f(pt.lo, pt.hi); j.join.done() }
	}
	return j
}
