package allreduce

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Op selects the reduction and the wire encoding of AllReduce. Flags combine:
// Avg|FP16 averages with fp16 on the wire.
type Op uint8

const (
	// Sum adds the buffers of all ranks.
	Sum Op = 0
	// Avg adds, then divides by the world size.
	Avg Op = 1 << 0
	// FP16 sends values as IEEE binary16 and accumulates in float32. The
	// result is rounded to fp16 on every rank so that ranks stay bitwise
	// identical.
	FP16 Op = 1 << 1
)

func (o Op) String() string {
	s := "sum"
	if o&Avg != 0 {
		s = "avg"
	}
	if o&FP16 != 0 {
		s += "+fp16"
	}
	return s
}

// Communicator runs collectives over one ring generation.
//
// Every rank must issue the same collectives in the same order; a
// Communicator is not safe for concurrent collectives (calls are serialised).
// Buffers are owned by the caller and only used during the call. Every
// blocking call returns within the configured timeout of the last progress
// made, or when ctx is done. After any error the Communicator is broken:
// later calls fail with an error wrapping ErrBroken, and the caller should
// Close it and form a new ring generation.
type Communicator interface {
	Rank() int
	Size() int
	Generation() uint64
	// AllReduce reduces buf element-wise across all ranks, in place.
	AllReduce(ctx context.Context, buf []float32, op Op) error
	// Broadcast copies root's buf into every rank's buf (same length on all).
	Broadcast(ctx context.Context, buf []float32, root int) error
	// BroadcastBytes returns root's data on every rank; data is ignored on
	// non-roots. The result on non-roots is newly allocated.
	BroadcastBytes(ctx context.Context, data []byte, root int) ([]byte, error)
	// AllGatherUint64 returns every rank's v, indexed by rank (e.g. replica
	// checksums).
	AllGatherUint64(ctx context.Context, v uint64) ([]uint64, error)
	// Barrier returns once every rank has entered it.
	Barrier(ctx context.Context) error
	// Close breaks the links; in-flight and later calls fail. Idempotent.
	Close() error
}

var (
	// ErrBroken: an earlier failure broke this ring generation; re-form it.
	ErrBroken = errors.New("ring broken")
	// ErrClosed: the Communicator was closed.
	ErrClosed = errors.New("communicator closed")
	// ErrTimeout: a peer made no progress within the timeout.
	ErrTimeout = errors.New("peer timeout")
	// ErrGeneration: a frame or handshake from another ring generation.
	ErrGeneration = errors.New("ring generation mismatch")
	// ErrDesync: a peer sent a frame of another collective or step.
	ErrDesync = errors.New("collective out of step")
	// ErrPeerDown: the link to a peer broke (process died, connection reset).
	ErrPeerDown = errors.New("peer link down")
)

// errCleanClose marks a link that its neighbour closed after its last
// collective (not a failure: what was sent on it was delivered).
var errCleanClose = errors.New("closed cleanly")

// cleanClose is a clean-close reason that reads as msg.
type cleanClose string

func (c cleanClose) Error() string        { return string(c) }
func (c cleanClose) Is(target error) bool { return target == errCleanClose }

// PeerError is returned by a collective that failed because of a peer.
type PeerError struct {
	Op         string // collective, e.g. "allreduce"
	Rank       int    // this rank
	Peer       int    // the peer at fault (left or right neighbour)
	Addr       string // its address, when known
	Generation uint64
	Err        error
}

func (e *PeerError) Error() string {
	addr := ""
	if e.Addr != "" {
		addr = " (" + e.Addr + ")"
	}
	return fmt.Sprintf("allreduce: %s on rank %d, ring generation %d: peer rank %d%s: %v",
		e.Op, e.Rank, e.Generation, e.Peer, addr, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// Options tune a Communicator; zero values get defaults.
type Options struct {
	// Timeout bounds how long a collective waits without progress from a
	// peer before failing (default 30s).
	Timeout time.Duration
	// SubChunkBytes is the pipelining unit on the wire (default 512 KiB).
	SubChunkBytes int
	// Logger receives debug and failure logs (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.SubChunkBytes <= 0 {
		o.SubChunkBytes = 512 << 10
	}
	o.SubChunkBytes = max(o.SubChunkBytes, 64)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// pipe is what a transport gives the ring. Frames are pooled buffers holding
// header and payload; sending one hands it to the transport, receiving one
// hands it to the ring, which puts it back into pool when done.
type pipe struct {
	out     chan<- frame    // to the right neighbour
	in      <-chan frame    // from the left neighbour
	outDown <-chan struct{} // closed when the right link broke
	inDown  <-chan struct{} // closed when the left link broke
	outErr  func() error    // why the right link broke
	inErr   func() error    // why the left link broke
	pool    *bufPool
}

// ring implements Communicator over a pipe.
type ring struct {
	rank, size int
	gen        uint64
	addrs      []string // for error messages; may be nil
	p          pipe
	opt        Options
	t          transport
	closed     chan struct{}

	views *viewTracker // payloads borrowed from the caller's buffer

	mu      sync.Mutex // serialises collectives
	seq     uint64
	broken  error
	timer   *time.Timer
	lastIn  time.Time
	lastOut time.Time

	closeOnce sync.Once
	log       *slog.Logger
}

var _ Communicator = (*ring)(nil)

// transport is the I/O shell behind a pipe.
type transport interface {
	// shutdown breaks the links so that peers notice; it does not block and
	// is idempotent.
	shutdown(err error)
	// wait returns when the transport's goroutines have ended.
	wait()
}

func newRing(rank, size int, gen uint64, addrs []string, p pipe, opt Options, t transport) *ring {
	opt = opt.withDefaults()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	return &ring{
		rank: rank, size: size, gen: gen, addrs: addrs, p: p, opt: opt,
		t: t, closed: make(chan struct{}), timer: timer, views: newViewTracker(),
		log: opt.Logger.With("rank", rank, "gen", gen),
	}
}

func (r *ring) Rank() int          { return r.rank }
func (r *ring) Size() int          { return r.size }
func (r *ring) Generation() uint64 { return r.gen }
func (r *ring) left() int          { return mod(r.rank-1, r.size) }
func (r *ring) right() int         { return mod(r.rank+1, r.size) }

func (r *ring) Close() error {
	r.closeOnce.Do(func() {
		close(r.closed)
		r.t.shutdown(ErrClosed)
	})
	r.t.wait()
	return nil
}

// begin takes the collective lock and checks the ring is usable.
func (r *ring) begin(op string) error {
	r.mu.Lock()
	if r.broken != nil {
		r.mu.Unlock()
		return fmt.Errorf("allreduce: %s on rank %d, ring generation %d: %w: %w", op, r.rank, r.gen, ErrBroken, r.broken)
	}
	select {
	case <-r.closed:
		r.mu.Unlock()
		return fmt.Errorf("allreduce: %s on rank %d, ring generation %d: %w", op, r.rank, r.gen, ErrClosed)
	default:
	}
	r.seq++
	now := time.Now()
	r.lastIn, r.lastOut = now, now
	r.timer.Reset(r.opt.Timeout)
	return nil
}

// end releases the lock; a failure breaks the ring and its links so that
// neighbours fail fast instead of waiting for their timeout.
func (r *ring) end(err error) error {
	r.timer.Stop()
	if err != nil {
		r.broken = err
		r.log.Warn("collective failed; ring generation broken", "err", err)
		r.t.shutdown(err)
	}
	r.mu.Unlock()
	return err
}

func (r *ring) peerErr(op string, peer int, err error) error {
	addr := ""
	if peer < len(r.addrs) {
		addr = r.addrs[peer]
	}
	return &PeerError{Op: op, Rank: r.rank, Peer: peer, Addr: addr, Generation: r.gen, Err: err}
}

func (r *ring) progress(in bool) {
	now := time.Now()
	if in {
		r.lastIn = now
	} else {
		r.lastOut = now
	}
	r.timer.Reset(r.opt.Timeout)
}

// waitErr turns the non-data select cases into errors. waitingIn/waitingOut
// say what the caller was blocked on, to name the peer at fault on timeout.
func (r *ring) timeoutErr(op string, waitingIn, waitingOut bool, what string) error {
	peer := r.left()
	dir := "receiving from left neighbour"
	if !waitingIn || (waitingOut && r.lastOut.Before(r.lastIn)) {
		peer, dir = r.right(), "sending to right neighbour"
	}
	return r.peerErr(op, peer, fmt.Errorf("%w: no progress for %v %s (%s)", ErrTimeout, r.opt.Timeout, dir, what))
}

// outWatch is the right link's down signal to watch while this rank has
// nothing left to send: none once the right neighbour closed cleanly (it
// finished), otherwise the signal. A transport cuts both of a rank's links
// when one fails, so a rank that only receives must also end when its
// right link fails, at once rather than at the timeout.
func (r *ring) outWatch() <-chan struct{} {
	select {
	case <-r.p.outDown:
		if errors.Is(r.p.outErr(), errCleanClose) {
			return nil
		}
	default:
	}
	return r.p.outDown
}

func (r *ring) downErr(op string, in bool) error {
	if in {
		return r.peerErr(op, r.left(), fmt.Errorf("%w: %w", ErrPeerDown, r.p.inErr()))
	}
	return r.peerErr(op, r.right(), fmt.Errorf("%w: %w", ErrPeerDown, r.p.outErr()))
}

func (r *ring) ctxErr(op string, ctx context.Context) error {
	return fmt.Errorf("allreduce: %s on rank %d, ring generation %d: %w", op, r.rank, r.gen, ctx.Err())
}

func (r *ring) closedErr(op string) error {
	return fmt.Errorf("allreduce: %s on rank %d, ring generation %d: %w", op, r.rank, r.gen, ErrClosed)
}

// check validates a received frame against what this rank expects next.
func (r *ring) check(op string, f frame, kind Kind, dt DType, step, sub, payload int) (Header, []byte, error) {
	var h Header
	var pl []byte
	var err error
	if f.view != nil || f.seg != nil {
		if h, err = DecodeHeader(*f.b); err == nil && int(h.PayloadLen) != f.payloadLen() {
			err = fmt.Errorf("%w: payload length %d, frame has %d", ErrBadFrame, h.PayloadLen, f.payloadLen())
		}
		pl = f.view // nil for seg: the caller reads f.seg's pieces
	} else {
		h, pl, err = DecodeFrame(*f.b)
	}
	if err != nil {
		return h, nil, r.peerErr(op, r.left(), fmt.Errorf("decoding frame: %w", err))
	}
	if h.Generation != r.gen {
		return h, nil, r.peerErr(op, r.left(), fmt.Errorf("%w: frame of generation %d, this ring is %d", ErrGeneration, h.Generation, r.gen))
	}
	if h.Kind != kind || h.Seq != r.seq || h.DType != dt || int(h.Step) != step || int(h.Sub) != sub || int(h.From) != r.left() ||
		(payload >= 0 && f.payloadLen() != payload) {
		return h, nil, r.peerErr(op, r.left(), fmt.Errorf("%w: got %s seq %d dtype %d step %d sub %d from %d with %d bytes, want %s seq %d dtype %d step %d sub %d from %d with %d bytes",
			ErrDesync, h.Kind, h.Seq, h.DType, h.Step, h.Sub, h.From, f.payloadLen(), kind, r.seq, dt, step, sub, r.left(), payload))
	}
	return h, pl, nil
}

func (r *ring) header(kind Kind, dt DType, step, sub, payload int) Header {
	return Header{Kind: kind, DType: dt, Generation: r.gen, Seq: r.seq, Step: uint32(step), Sub: uint32(sub), PayloadLen: uint32(payload), From: uint32(r.rank)}
}

// release gives a consumed or unsent frame back.
func (r *ring) release(f frame) {
	r.p.pool.Put(f.b)
	if f.owner != nil {
		f.owner.release()
	}
	if f.seg != nil {
		f.seg.release()
	}
}

// contiguous turns a segmented frame into an owned one (for the collectives
// that are not on the hot path).
func (r *ring) contiguous(f frame) frame {
	if f.seg == nil {
		return f
	}
	n := f.payloadLen()
	b := r.p.pool.Get(headerSize + n)
	copy(*b, (*f.b)[:headerSize])
	off := headerSize
	for _, p := range f.seg.pieces() {
		off += copy((*b)[off:], p)
	}
	r.release(f)
	return frame{b: b}
}

// send hands fb to the right neighbour, blocking while the link is full.
// The frame is tracked until written (see waitSent).
func (r *ring) send(ctx context.Context, op string, fb *[]byte, what string) error {
	r.views.borrow()
	f := frame{b: fb, owner: r.views}
	select {
	case r.p.out <- f:
		r.progress(false)
		return nil
	case <-ctx.Done():
		r.release(f)
		return r.ctxErr(op, ctx)
	case <-r.timer.C:
		r.release(f)
		return r.timeoutErr(op, false, true, what)
	case <-r.p.outDown:
		r.release(f)
		return r.downErr(op, false)
	case <-r.closed:
		r.release(f)
		return r.closedErr(op)
	}
}

// recv returns the next frame from the left neighbour; the caller puts it
// back into the pool.
// A link that went down after delivering frames still delivers them: a
// neighbour that finished and closed is not an error unless more is needed.
func (r *ring) recv(ctx context.Context, op string, what string) (frame, error) {
	outDown := r.outWatch()
	for {
		select {
		case f := <-r.p.in:
			r.progress(true)
			return r.contiguous(f), nil
		case <-ctx.Done():
			return frame{}, r.ctxErr(op, ctx)
		case <-r.timer.C:
			return frame{}, r.timeoutErr(op, true, false, what)
		case <-r.p.inDown:
			if len(r.p.in) > 0 {
				continue
			}
			return frame{}, r.downErr(op, true)
		case <-outDown:
			if errors.Is(r.p.outErr(), errCleanClose) {
				// The right neighbour finished after taking everything this
				// rank sent; what it sent us may still be on its way.
				outDown = nil
				continue
			}
			if len(r.p.in) > 0 {
				continue // frames that arrived before the links were cut
			}
			return frame{}, r.downErr(op, false)
		case <-r.closed:
			return frame{}, r.closedErr(op)
		}
	}
}

// AllReduce runs the chunked ring: NumSteps(n) steps, each cut into
// sub-chunks; a sub-chunk is forwarded as soon as it has been received and
// reduced, so sending, receiving and reducing overlap.
func (r *ring) AllReduce(ctx context.Context, buf []float32, op Op) error {
	const name = "allreduce"
	if r.size == 1 {
		return nil
	}
	if err := r.begin(name); err != nil {
		return err
	}
	return r.end(r.allReduce(ctx, buf, op))
}

func (r *ring) allReduce(ctx context.Context, buf []float32, op Op) error {
	const name = "allreduce"
	n, L := r.size, len(buf)
	dt, esz := DTypeF32, 4
	if op&FP16 != 0 {
		dt, esz = DTypeF16, 2
	}
	sub := max(r.opt.SubChunkBytes/esz, 1)
	steps := NumSteps(n)
	nsub := func(g int) int { return NumSub(StepAt(r.rank, n, L, g).Send.Len, sub) }
	rsub := func(g int) int { return NumSub(StepAt(r.rank, n, L, g).Recv.Len, sub) }
	// Positions of the next sub-chunk to send / receive, skipping empty steps.
	sg, sk, rg, rk := 0, 0, 0, 0
	for sg < steps && nsub(sg) == 0 {
		sg++
	}
	for rg < steps && rsub(rg) == 0 {
		rg++
	}
	var pending frame // encoded, not yet accepted by the transport
	defer func() {
		if pending.b != nil {
			r.release(pending)
		}
	}()
	scale := float32(n)
	for sg < steps || rg < steps {
		var out chan<- frame
		if sg < steps && SendReady(sg, sk, rg, rk) {
			if pending.b == nil {
				st := StepAt(r.rank, n, L, sg)
				s := SubSpan(st.Send, sub, sk)
				if dt == DTypeF32 && s.Len*4 >= borrowMin {
					// Zero copy: the transport reads the caller's buffer. The
					// sub-chunk is not written again until it has come round
					// the ring, and we wait for every release before returning.
					pending.b = r.p.pool.Get(headerSize)
					v := f32Bytes(buf[s.Off:s.End()])
					pending.view = v[:len(v):len(v)]
				} else {
					pending.b = r.p.pool.Get(headerSize + s.Len*esz)
					encodePayload((*pending.b)[headerSize:], buf[s.Off:s.End()], dt)
				}
				// Every frame is tracked until the transport has written
				// it, so that a rank that returns and closes loses nothing.
				pending.owner = r.views
				r.views.borrow()
				PutHeader(*pending.b, r.header(KindAllReduce, dt, sg, sk, s.Len*esz))
			}
			out = r.p.out
		}
		// Watch a link only while it is needed: a neighbour that has
		// finished its part may close before this rank is done.
		var in <-chan frame
		var inDown, outDown <-chan struct{}
		if rg < steps {
			in, inDown = r.p.in, r.p.inDown
		}
		if sg < steps {
			outDown = r.p.outDown
		} else {
			outDown = r.outWatch()
		}
		select {
		case out <- pending:
			pending = frame{}
			r.progress(false)
			if sk++; sk == nsub(sg) {
				sk = 0
				for sg++; sg < steps && nsub(sg) == 0; sg++ {
				}
			}
		case f := <-in:
			r.progress(true)
			st := StepAt(r.rank, n, L, rg)
			s := SubSpan(st.Recv, sub, rk)
			_, pl, err := r.check(name, f, KindAllReduce, dt, rg, rk, s.Len*esz)
			if err != nil {
				r.release(f)
				return err
			}
			dst := buf[s.Off:s.End()]
			if f.seg != nil {
				reducePieces(dst, f.seg.pieces(), dt, st.Reduce)
			} else {
				reducePayload(dst, pl, dt, st.Reduce)
			}
			r.release(f)
			if rg == n-2 {
				// Last reduce-scatter step: this sub-chunk of the owned chunk
				// is complete. Finish it before the all-gather sends it, so
				// that every rank ends with the very same bits.
				if op&Avg != 0 {
					for i := range dst {
						dst[i] /= scale
					}
				}
				if op&FP16 != 0 {
					RoundF16(dst)
				}
			}
			if rk++; rk == rsub(rg) {
				rk = 0
				for rg++; rg < steps && rsub(rg) == 0; rg++ {
				}
			}
		case <-ctx.Done():
			return r.ctxErr(name, ctx)
		case <-r.timer.C:
			return r.timeoutErr(name, rg < steps, out != nil, fmt.Sprintf("step %d sub-chunk %d of %d steps", rg, rk, steps))
		case <-inDown:
			if len(r.p.in) > 0 {
				continue // deliver what arrived before the link went down
			}
			return r.downErr(name, true)
		case <-outDown:
			if sg >= steps && errors.Is(r.p.outErr(), errCleanClose) {
				continue // it finished first: nothing more goes to it
			}
			return r.downErr(name, false)
		case <-r.closed:
			return r.closedErr(name)
		}
	}
	return r.waitSent(ctx, name)
}

// waitSent returns once the transport has written every frame of the
// collective (and let go of every borrowed payload, so that the caller may
// write its buffer again).
func (r *ring) waitSent(ctx context.Context, name string) error {
	outDown := r.p.outDown
	var grace <-chan time.Time
	for r.views.n.Load() != 0 {
		select {
		case <-r.views.sig:
		case <-ctx.Done():
			return r.ctxErr(name, ctx)
		case <-r.timer.C:
			return r.timeoutErr(name, false, true, "waiting for the last frames to be written")
		case <-outDown:
			// The right neighbour closed: fine if it had everything, which
			// the writer may not have reported yet. Give it a moment.
			outDown = nil
			grace = time.After(min(r.opt.Timeout, 2*time.Second))
		case <-grace:
			return r.downErr(name, false)
		case <-r.closed:
			return r.closedErr(name)
		}
	}
	return nil
}

// Broadcast pipelines root's buf around the ring: each rank but the last
// forwards every sub-chunk as soon as it arrives.
func (r *ring) Broadcast(ctx context.Context, buf []float32, root int) error {
	if root < 0 || root >= r.size {
		return fmt.Errorf("allreduce: broadcast root %d outside world of %d", root, r.size)
	}
	if r.size == 1 {
		return nil
	}
	if err := r.begin("broadcast"); err != nil {
		return err
	}
	_, err := r.broadcast(ctx, f32Bytes(buf), root, true)
	return r.end(err)
}

func (r *ring) BroadcastBytes(ctx context.Context, data []byte, root int) ([]byte, error) {
	if root < 0 || root >= r.size {
		return nil, fmt.Errorf("allreduce: broadcast root %d outside world of %d", root, r.size)
	}
	if r.size == 1 {
		return data, nil
	}
	if err := r.begin("broadcast"); err != nil {
		return nil, err
	}
	out, err := r.broadcast(ctx, data, root, false)
	return out, r.end(err)
}

// broadcast sends a length frame (sub 0) then the data in sub-chunks
// (sub 1..). With fixed, every rank's data has the expected length and is
// filled in place; otherwise non-roots allocate.
func (r *ring) broadcast(ctx context.Context, data []byte, root int, fixed bool) ([]byte, error) {
	const name = "broadcast"
	sub := r.opt.SubChunkBytes
	last := mod(root-1, r.size) // does not forward
	if r.rank == root {
		fb := r.p.pool.Get(headerSize + 8)
		PutHeader(*fb, r.header(KindBroadcast, DTypeU64, 0, 0, 8))
		binary.LittleEndian.PutUint64((*fb)[headerSize:], uint64(len(data)))
		if err := r.send(ctx, name, fb, "length"); err != nil {
			return nil, err
		}
		for k := 0; k < NumSub(len(data), sub); k++ {
			s := SubSpan(Span{Len: len(data)}, sub, k)
			fb := r.p.pool.Get(headerSize + s.Len)
			PutHeader(*fb, r.header(KindBroadcast, DTypeBytes, 0, k+1, s.Len))
			copy((*fb)[headerSize:], data[s.Off:s.End()])
			if err := r.send(ctx, name, fb, fmt.Sprintf("sub-chunk %d", k)); err != nil {
				return nil, err
			}
		}
		return data, r.waitSent(ctx, name)
	}
	// forward patches the sender field and passes the frame on unchanged.
	// Broadcast frames are never borrowed views: they are owned, and
	// forwarded as they are with the sender field patched.
	forward := func(f frame, what string) error {
		if r.rank == last {
			r.release(f)
			return nil
		}
		if f.owner != nil {
			f.owner.release() // consumed here; the forward is tracked anew
		}
		binary.LittleEndian.PutUint32((*f.b)[36:], uint32(r.rank))
		return r.send(ctx, name, f.b, what)
	}
	f, err := r.recv(ctx, name, "length")
	if err != nil {
		return nil, err
	}
	_, pl, err := r.check(name, f, KindBroadcast, DTypeU64, 0, 0, 8)
	if err != nil {
		r.release(f)
		return nil, err
	}
	size := binary.LittleEndian.Uint64(pl)
	if fixed && size != uint64(len(data)) {
		r.release(f)
		return nil, r.peerErr(name, r.left(), fmt.Errorf("%w: root %d broadcasts %d bytes, this rank expects %d", ErrDesync, root, size, len(data)))
	}
	if size > 1<<40 {
		r.release(f)
		return nil, r.peerErr(name, r.left(), fmt.Errorf("%w: broadcast of %d bytes", ErrBadFrame, size))
	}
	if err := forward(f, "length"); err != nil {
		return nil, err
	}
	if !fixed {
		data = make([]byte, size)
	}
	for k := 0; k < NumSub(len(data), sub); k++ {
		s := SubSpan(Span{Len: len(data)}, sub, k)
		what := fmt.Sprintf("sub-chunk %d", k)
		f, err := r.recv(ctx, name, what)
		if err != nil {
			return nil, err
		}
		_, pl, err := r.check(name, f, KindBroadcast, DTypeBytes, 0, k+1, s.Len)
		if err != nil {
			r.release(f)
			return nil, err
		}
		copy(data[s.Off:s.End()], pl)
		if err := forward(f, what); err != nil {
			return nil, err
		}
	}
	return data, r.waitSent(ctx, name)
}

// AllGatherUint64 passes values around the ring: at step s a rank forwards
// the value of rank (r-s) mod n.
func (r *ring) AllGatherUint64(ctx context.Context, v uint64) ([]uint64, error) {
	out := make([]uint64, r.size)
	out[r.rank] = v
	if r.size == 1 {
		return out, nil
	}
	if err := r.begin("allgather"); err != nil {
		return nil, err
	}
	return out, r.end(r.gather(ctx, "allgather", out))
}

// Barrier is an all-gather of nothing: after n-1 dependent steps every rank
// has (transitively) heard from every other.
func (r *ring) Barrier(ctx context.Context) error {
	if r.size == 1 {
		return nil
	}
	if err := r.begin("barrier"); err != nil {
		return err
	}
	var buf [64]uint64
	vals := buf[:0]
	if r.size <= len(buf) {
		vals = buf[:r.size]
	} else {
		vals = make([]uint64, r.size)
	}
	return r.end(r.gather(ctx, "barrier", vals))
}

func (r *ring) gather(ctx context.Context, name string, vals []uint64) error {
	n := r.size
	for s := 0; s < n-1; s++ {
		fb := r.p.pool.Get(headerSize + 8)
		PutHeader(*fb, r.header(KindGather, DTypeU64, s, 0, 8))
		binary.LittleEndian.PutUint64((*fb)[headerSize:], vals[mod(r.rank-s, n)])
		if err := r.send(ctx, name, fb, fmt.Sprintf("step %d", s)); err != nil {
			return err
		}
		f, err := r.recv(ctx, name, fmt.Sprintf("step %d", s))
		if err != nil {
			return err
		}
		_, pl, err := r.check(name, f, KindGather, DTypeU64, s, 0, 8)
		if err != nil {
			r.release(f)
			return err
		}
		vals[mod(r.rank-s-1, n)] = binary.LittleEndian.Uint64(pl)
		r.release(f)
	}
	return r.waitSent(ctx, name)
}
