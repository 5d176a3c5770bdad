package allreduce

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

type job struct {
	b   int
	ctx context.Context
}

// Segment is one parameter's gradient inside the flat gradient arena, in
// registration (forward) order.
type Segment struct {
	Name        string
	Offset, Len int
}

// Bucket is a contiguous slice of the arena reduced as one all-reduce.
type Bucket struct {
	Span   Span
	Params []int // indices into the segments, in the order they were added
}

// CompressionHook reduces one bucket; it lets compression plug in (DDP's
// communication hooks). It runs on the reducer's goroutine, one bucket at a
// time, in bucket order, and must leave the same values on every rank.
type CompressionHook interface {
	AllReduce(ctx context.Context, comm Communicator, bucket []float32, op Op) error
}

// FP16Hook sends buckets as fp16 and accumulates in float32.
type FP16Hook struct{}

func (FP16Hook) AllReduce(ctx context.Context, comm Communicator, bucket []float32, op Op) error {
	return comm.AllReduce(ctx, bucket, op|FP16)
}

type plainHook struct{}

func (plainHook) AllReduce(ctx context.Context, comm Communicator, bucket []float32, op Op) error {
	return comm.AllReduce(ctx, bucket, op)
}

// Reducer overlaps gradient all-reduce with backward, as PyTorch DDP does.
// Segments are grouped into buckets of about bucketBytes in reverse
// registration order (backward produces the last layers first). Backward
// calls GradReady for each parameter whose gradient is complete; when a
// bucket and every bucket before it are complete, the reducer's goroutine
// all-reduces it while backward goes on. Buckets are launched in index order
// whatever order GradReady is called in, so every rank issues the same
// collectives. Wait returns when the step's buckets are all reduced; the
// result equals reducing the whole arena after backward.
//
// GradReady and Wait are called from one goroutine (the training loop). The
// reducer writes into the arena only between the first GradReady of a step
// and the return of Wait.
type Reducer struct {
	comm    Communicator
	arena   []float32
	segs    []Segment
	buckets []Bucket
	bucket  []int // segment -> bucket
	hook    CompressionHook
	op      Op

	// Per step, owned by the training loop's goroutine.
	pending []int  // unready parameters per bucket
	ready   []bool // per segment
	next    int    // next bucket to launch
	misuse  error
	stepCtx context.Context
	cancel  context.CancelFunc

	work chan job      // buckets to the worker
	done chan struct{} // one signal per completed step
	quit chan struct{}
	wg   sync.WaitGroup

	mu  sync.Mutex // guards err, written by the worker
	err error
}

// NewReducer builds the buckets and starts the reducer's goroutine; Close
// stops it. Segments must lie in arena in increasing, non-overlapping
// order (gaps are allowed: one inside a bucket is reduced with it, one
// between buckets is left alone). A nil hook
// all-reduces in float32. op is Sum or Avg (plus FP16 if wanted).
func NewReducer(comm Communicator, arena []float32, segments []Segment, bucketBytes int, hook CompressionHook, op Op) (*Reducer, error) {
	if len(segments) == 0 {
		return nil, errors.New("allreduce: reducer with no segments")
	}
	if bucketBytes <= 0 {
		return nil, fmt.Errorf("allreduce: bucket size %d bytes", bucketBytes)
	}
	end := 0
	for i, s := range segments {
		if s.Len < 0 || s.Offset < end || s.Offset+s.Len > len(arena) {
			return nil, fmt.Errorf("allreduce: segment %d %q [%d,+%d) overlaps the previous one or leaves the arena of %d", i, s.Name, s.Offset, s.Len, len(arena))
		}
		end = s.Offset + s.Len
	}
	if hook == nil {
		hook = plainHook{}
	}
	r := &Reducer{
		comm: comm, arena: arena, segs: segments, hook: hook, op: op,
		bucket: make([]int, len(segments)), ready: make([]bool, len(segments)),
		quit: make(chan struct{}), done: make(chan struct{}, 1),
	}
	// Reverse order: the last segments form bucket 0.
	var cur Bucket
	curBytes := 0
	flush := func() {
		first, last := segments[cur.Params[len(cur.Params)-1]], segments[cur.Params[0]]
		cur.Span = Span{Off: first.Offset, Len: last.Offset + last.Len - first.Offset}
		r.buckets = append(r.buckets, cur)
		cur, curBytes = Bucket{}, 0
	}
	for i := len(segments) - 1; i >= 0; i-- {
		cur.Params = append(cur.Params, i)
		r.bucket[i] = len(r.buckets)
		curBytes += 4 * segments[i].Len
		if curBytes >= bucketBytes {
			flush()
		}
	}
	if len(cur.Params) > 0 {
		flush()
	}
	r.pending = make([]int, len(r.buckets))
	r.work = make(chan job, len(r.buckets))
	r.reset()
	r.wg.Add(1)
	go r.run()
	return r, nil
}

// Buckets returns the bucket layout (for logs and tests); do not modify.
func (r *Reducer) Buckets() []Bucket { return r.buckets }

func (r *Reducer) reset() {
	for b := range r.buckets {
		r.pending[b] = len(r.buckets[b].Params)
	}
	clear(r.ready)
	r.next, r.misuse = 0, nil
	r.stepCtx, r.cancel = nil, nil
}

func (r *Reducer) begin() {
	if r.stepCtx == nil {
		r.stepCtx, r.cancel = context.WithCancel(context.Background())
	}
}

// GradReady marks parameter i's gradient complete for this step and launches
// every bucket that became complete, in order. It does not block.
func (r *Reducer) GradReady(i int) {
	if i < 0 || i >= len(r.segs) {
		if r.misuse == nil {
			r.misuse = fmt.Errorf("allreduce: GradReady(%d): only %d parameters", i, len(r.segs))
		}
		return
	}
	if r.ready[i] {
		if r.misuse == nil {
			r.misuse = fmt.Errorf("allreduce: gradient of %q marked ready twice in one step", r.segs[i].Name)
		}
		return
	}
	r.begin()
	r.ready[i] = true
	r.pending[r.bucket[i]]--
	r.launch(false)
}

// launch sends complete buckets (all remaining ones with all) to the worker.
func (r *Reducer) launch(all bool) {
	for r.next < len(r.buckets) && (all || r.pending[r.next] == 0) {
		r.work <- job{b: r.next, ctx: r.stepCtx}
		r.next++
	}
}

// Wait launches any bucket not yet launched (parameters never marked ready
// are reduced with whatever their gradient holds, normally zero), waits for
// all of the step's buckets and readies the reducer for the next step. If ctx
// ends first the in-flight all-reduce is cancelled (which breaks the ring);
// Wait still returns only once the worker has let go of the arena.
func (r *Reducer) Wait(ctx context.Context) error {
	r.begin()
	r.launch(true)
	var err error
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancel()
		<-r.done
		err = fmt.Errorf("allreduce: waiting for gradient buckets: %w", ctx.Err())
	}
	r.cancel()
	r.mu.Lock()
	if r.err != nil {
		err = errors.Join(err, r.err)
		r.err = nil
	}
	r.mu.Unlock()
	err = errors.Join(r.misuse, err)
	r.reset()
	return err
}

// run is the worker: it reduces buckets in order and signals the end of each
// step. After an error it skips the step's remaining buckets.
func (r *Reducer) run() {
	defer r.wg.Done()
	failed := false
	for {
		var j job
		select {
		case j = <-r.work:
		case <-r.quit:
			return
		}
		b := j.b
		if !failed {
			s := r.buckets[b].Span
			if err := r.hook.AllReduce(j.ctx, r.comm, r.arena[s.Off:s.End()], r.op); err != nil {
				failed = true
				r.mu.Lock()
				r.err = fmt.Errorf("allreduce: bucket %d (%d parameters from %q, %d floats): %w",
					b, len(r.buckets[b].Params), r.segs[r.buckets[b].Params[0]].Name, s.Len, err)
				r.mu.Unlock()
			}
		}
		if b == len(r.buckets)-1 {
			failed = false
			r.done <- struct{}{}
		}
	}
}

// Close stops the reducer's goroutine; call it after Wait. It does not
// close the Communicator.
func (r *Reducer) Close() error {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	r.wg.Wait()
	if r.cancel != nil {
		r.cancel()
	}
	return nil
}
