package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// gRPC transport: every rank serves one bidirectional streaming method and
// opens one long-lived stream to its right neighbour. Frames travel
// client -> server only; the server answers the handshake and otherwise stays
// silent. Frames are raw bytes (a custom codec, no protobuf): the codec hands
// a sent frame back to the pool once gRPC has written it, and copies a
// received one into a pooled buffer, so the steady state allocates nothing in
// this package.

const (
	linkMethod  = "/ringtrain.allreduce.Ring/Link"
	linkQueue   = 8       // frames buffered between the ring and the stream
	grpcWindow  = 1 << 24 // flow-control window per stream and connection
	grpcIOBufSz = 1 << 19 // transport read/write buffers
)

// RingConfig describes one rank of a gRPC ring.
type RingConfig struct {
	Rank       int
	Addrs      []string // listen address of every rank, in ring order
	Generation uint64   // ring generation; frames of another one are rejected
	// Listener, if set, is used instead of listening on Addrs[Rank]; DialRing
	// takes ownership of it.
	Listener net.Listener
	Options
}

// Validate checks the rank and addresses.
func (c RingConfig) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("ring config: no addresses")
	}
	if c.Rank < 0 || c.Rank >= len(c.Addrs) {
		return fmt.Errorf("ring config: rank %d outside world of %d", c.Rank, len(c.Addrs))
	}
	for i, a := range c.Addrs {
		if a == "" {
			return fmt.Errorf("ring config: empty address for rank %d", i)
		}
	}
	return nil
}

// downSignal records the first reason a link broke.
type downSignal struct {
	ch   chan struct{}
	once sync.Once
	err  error
}

func newDown() *downSignal { return &downSignal{ch: make(chan struct{})} }

func (d *downSignal) fail(err error) {
	d.once.Do(func() {
		d.err = err
		close(d.ch)
	})
}

func (d *downSignal) reason() error { return d.err }

// inFrame is what the codec's Unmarshal fills: an owned contiguous frame,
// or for large frames the header in b and the payload left in gRPC's
// receive buffers (seg).
type inFrame struct {
	b   *[]byte
	seg *grpcSeg
}

// grpcPad is sent before every frame: with gRPC's 5-byte message prefix it
// puts our payload at a multiple of 4 in gRPC's receive buffers (one per
// 16 KiB HTTP/2 DATA frame), so float32s can be reduced in place.
const grpcPad = 3

// segMin is the smallest payload reduced straight from gRPC's buffers.
const segMin = 32 << 10

type frameCodec struct {
	pool *bufPool
	segs *segPool
	pad  []byte // grpcPad zero bytes, never written
}

func newFrameCodec(pool *bufPool) frameCodec {
	return frameCodec{pool: pool, segs: &segPool{}, pad: make([]byte, grpcPad)}
}

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	pad := mem.SliceBuffer(c.pad)
	switch f := v.(type) {
	case *[]byte:
		return mem.BufferSlice{pad, mem.NewBuffer(f, c.pool)}, nil
	case *frame:
		if f.view == nil {
			return mem.BufferSlice{pad, mem.NewBuffer(f.b, c.pool)}, nil
		}
		// The header, then the caller's memory itself; gRPC reports each
		// buffer freed once written (the view to its tracker).
		return mem.BufferSlice{pad, mem.NewBuffer(f.b, c.pool), mem.NewBuffer(f.owner.holder(f.view), f.owner)}, nil
	}
	return nil, fmt.Errorf("frame codec: cannot marshal %T", v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*inFrame)
	if !ok {
		return fmt.Errorf("frame codec: cannot unmarshal into %T", v)
	}
	n := data.Len() - grpcPad
	if n < headerSize {
		return fmt.Errorf("frame codec: %w: message of %d bytes", ErrBadFrame, data.Len())
	}
	if n-headerSize < segMin {
		f.b, f.seg = c.pool.Get(n), nil
		copyFrom(*f.b, data, grpcPad)
		return nil
	}
	// Keep gRPC's buffers (one reference each) and only copy the header.
	f.b = c.pool.Get(headerSize)
	copyFrom(*f.b, data, grpcPad)
	sg := c.segs.get()
	skip := grpcPad + headerSize
	for _, buf := range data {
		p := buf.ReadOnlyData()
		if skip >= len(p) {
			skip -= len(p)
			continue
		}
		buf.Ref()
		sg.bufs = append(sg.bufs, buf)
		sg.ps = append(sg.ps, p[skip:])
		skip = 0
	}
	f.seg = sg
	return nil
}

// copyFrom fills dst with data's bytes from offset off on.
func copyFrom(dst []byte, data mem.BufferSlice, off int) {
	for _, buf := range data {
		p := buf.ReadOnlyData()
		if off >= len(p) {
			off -= len(p)
			continue
		}
		k := copy(dst, p[off:])
		dst, off = dst[k:], 0
		if len(dst) == 0 {
			return
		}
	}
}

// grpcSeg is a payload in gRPC's receive buffers (implements segmented).
type grpcSeg struct {
	bufs []mem.Buffer
	ps   [][]byte
	pool *segPool
}

func (s *grpcSeg) pieces() [][]byte { return s.ps }

func (s *grpcSeg) release() {
	for i, b := range s.bufs {
		b.Free()
		s.bufs[i], s.ps[i] = nil, nil
	}
	s.bufs, s.ps = s.bufs[:0], s.ps[:0]
	s.pool.put(s)
}

type segPool struct {
	mu   sync.Mutex
	free []*grpcSeg
}

func (p *segPool) get() *grpcSeg {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := len(p.free); k > 0 {
		s := p.free[k-1]
		p.free = p.free[:k-1]
		return s
	}
	return &grpcSeg{pool: p}
}

func (p *segPool) put(s *grpcSeg) {
	p.mu.Lock()
	if len(p.free) < poolMax {
		p.free = append(p.free, s)
	}
	p.mu.Unlock()
}

func (frameCodec) Name() string { return "ringtrain-frame" }

// linkServer is the handler type of the hand-written service description.
type linkServer interface {
	serveLink(grpc.ServerStream) error
}

func ringServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "ringtrain.allreduce.Ring",
		HandlerType: (*linkServer)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Link",
			Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(linkServer).serveLink(ss) },
			ServerStreams: true,
			ClientStreams: true,
		}},
		Metadata: "allreduce/grpc.go",
	}
}

// grpcLink owns the server, the client connection and their goroutines.
type grpcLink struct {
	rank, size int
	gen        uint64
	addrs      []string
	pool       *bufPool

	srv    *grpc.Server
	conn   *grpc.ClientConn
	cancel context.CancelFunc // of the outbound stream

	out, in         chan frame
	outDown, inDown *downSignal
	inReady         chan struct{} // closed once the left neighbour's stream is accepted

	grace     time.Duration // bound on a graceful close
	rightDone chan struct{} // closed when watchRight returns

	mu       sync.Mutex
	accepted bool
	stopped  bool
	graceful bool // stop came from Close: half-close and let peers finish
	stop     chan struct{}
	wg       sync.WaitGroup
}

// DialRing starts this rank's server, connects to the right neighbour and
// waits until the left neighbour has connected, all within ctx. The
// handshake checks generation, rank and world size on both ends.
func DialRing(ctx context.Context, cfg RingConfig) (Communicator, error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	if !littleEndian() {
		return nil, errors.New("allreduce: gRPC transport needs a little-endian host")
	}
	opt := cfg.Options.withDefaults()
	n := len(cfg.Addrs)
	pool := &bufPool{}
	l := &grpcLink{
		rank: cfg.Rank, size: n, gen: cfg.Generation, addrs: cfg.Addrs, pool: pool,
		out: make(chan frame, linkQueue), in: make(chan frame, linkQueue),
		outDown: newDown(), inDown: newDown(), inReady: make(chan struct{}),
		stop: make(chan struct{}), grace: min(opt.Timeout, 5*time.Second), rightDone: make(chan struct{}),
	}
	p := pipe{
		out: l.out, in: l.in, outDown: l.outDown.ch, inDown: l.inDown.ch,
		outErr: l.outDown.reason, inErr: l.inDown.reason, pool: pool,
	}
	r := newRing(cfg.Rank, n, cfg.Generation, cfg.Addrs, p, opt, l)
	if n == 1 {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		l.stopped = true
		close(l.stop)
		return r, nil
	}
	fail := func(err error) (Communicator, error) {
		l.shutdown(err) // not ErrClosed: no graceful wait
		l.wait()
		return nil, err
	}

	lis := cfg.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.Addrs[cfg.Rank]); err != nil {
			return nil, fmt.Errorf("allreduce: rank %d listening on %s: %w", cfg.Rank, cfg.Addrs[cfg.Rank], err)
		}
	}
	codec := newFrameCodec(pool)
	l.srv = grpc.NewServer(
		grpc.ForceServerCodecV2(codec),
		grpc.InitialWindowSize(grpcWindow), grpc.InitialConnWindowSize(grpcWindow),
		grpc.ReadBufferSize(grpcIOBufSz), grpc.WriteBufferSize(grpcIOBufSz),
		grpc.MaxRecvMsgSize(math.MaxInt32),
	)
	l.srv.RegisterService(ringServiceDesc(), l)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.srv.Serve(lis); err != nil {
			l.inDown.fail(fmt.Errorf("serving on %s: %w", lis.Addr(), err))
		}
	}()

	right := mod(cfg.Rank+1, n)
	conn, err := grpc.NewClient(cfg.Addrs[right],
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(grpcWindow), grpc.WithInitialConnWindowSize(grpcWindow),
		grpc.WithReadBufferSize(grpcIOBufSz), grpc.WithWriteBufferSize(grpcIOBufSz),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec),
			grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
	)
	if err != nil {
		return fail(r.peerErr("dial", right, err))
	}
	l.conn = conn
	sctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	// The stream lives as long as the ring; ctx only bounds the handshake.
	stopAfter := context.AfterFunc(ctx, cancel)
	cs, err := conn.NewStream(sctx, &ringServiceDesc().Streams[0], linkMethod, grpc.WaitForReady(true))
	if err == nil {
		err = l.handshake(cs)
	}
	if !stopAfter() || err != nil {
		if err == nil || ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), errOr(err))
		}
		return fail(r.peerErr("dial", right, err))
	}
	l.wg.Add(2)
	go l.writeLoop(cs)
	go l.watchRight(cs)

	select {
	case <-l.inReady:
		return r, nil
	case <-ctx.Done():
		return fail(r.peerErr("dial", mod(cfg.Rank-1, n), fmt.Errorf("waiting for the left neighbour to connect: %w", ctx.Err())))
	case <-l.inDown.ch:
		return fail(r.peerErr("dial", mod(cfg.Rank-1, n), l.inDown.reason()))
	}
}

func errOr(err error) error {
	if err == nil {
		return errors.New("handshake not finished")
	}
	return err
}

// handshake sends hello and waits for the right neighbour's answer.
func (l *grpcLink) handshake(cs grpc.ClientStream) error {
	fb := l.pool.Get(headerSize)
	// Step carries the world size, so that mismatched configs are caught.
	PutHeader(*fb, Header{Kind: KindHello, DType: DTypeBytes, Generation: l.gen, Step: uint32(l.size), From: uint32(l.rank)})
	if err := cs.SendMsg(fb); err != nil {
		// The real reason is in the status.
		var f inFrame
		if rerr := cs.RecvMsg(&f); rerr != nil {
			err = rerr
		}
		return handshakeErr(err)
	}
	var f inFrame
	if err := cs.RecvMsg(&f); err != nil {
		return handshakeErr(err)
	}
	defer l.pool.Put(f.b)
	h, _, err := DecodeFrame(*f.b)
	if err != nil {
		return fmt.Errorf("handshake answer: %w", err)
	}
	right := mod(l.rank+1, l.size)
	if h.Kind != KindHello || h.Generation != l.gen || int(h.From) != right || int(h.Step) != l.size {
		return fmt.Errorf("%w: handshake answer from rank %d of world %d, generation %d; want rank %d of world %d, generation %d",
			ErrGeneration, h.From, h.Step, h.Generation, right, l.size, l.gen)
	}
	return nil
}

func handshakeErr(err error) error {
	if status.Code(err) == codes.FailedPrecondition {
		return fmt.Errorf("%w: %s", ErrGeneration, status.Convert(err).Message())
	}
	return fmt.Errorf("handshake: %w", err)
}

// serveLink accepts the left neighbour's stream, checks its hello, answers,
// then reads frames into l.in until the stream or the ring ends.
func (l *grpcLink) serveLink(ss grpc.ServerStream) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return status.Error(codes.Unavailable, "ring closed")
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()

	var f inFrame
	if err := ss.RecvMsg(&f); err != nil {
		return err
	}
	h, _, err := DecodeFrame(*f.b)
	l.pool.Put(f.b)
	left := mod(l.rank-1, l.size)
	switch {
	case err != nil:
		return status.Errorf(codes.InvalidArgument, "rank %d: hello: %v", l.rank, err)
	case h.Kind != KindHello:
		return status.Errorf(codes.InvalidArgument, "rank %d: expected hello, got %s", l.rank, h.Kind)
	case h.Generation != l.gen:
		return status.Errorf(codes.FailedPrecondition, "rank %d is in ring generation %d, peer rank %d dialled with generation %d", l.rank, l.gen, h.From, h.Generation)
	case int(h.From) != left || int(h.Step) != l.size:
		return status.Errorf(codes.FailedPrecondition, "rank %d of world %d (generation %d) expects its left neighbour %d, got rank %d of world %d", l.rank, l.size, l.gen, left, h.From, h.Step)
	}
	l.mu.Lock()
	dup := l.accepted
	l.accepted = true
	l.mu.Unlock()
	if dup {
		return status.Errorf(codes.AlreadyExists, "rank %d: left neighbour already connected", l.rank)
	}
	ack := l.pool.Get(headerSize)
	PutHeader(*ack, Header{Kind: KindHello, DType: DTypeBytes, Generation: l.gen, Step: uint32(l.size), From: uint32(l.rank)})
	if err := ss.SendMsg(ack); err != nil {
		l.inDown.fail(fmt.Errorf("answering hello: %w", err))
		return err
	}
	close(l.inReady)
	// Read in a goroutine so that the handler can end the stream cleanly (OK
	// status, which the left neighbour reads as a close, not a failure) as
	// soon as this rank stops, even while a read is blocked.
	readDone := make(chan struct{})
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		defer close(readDone)
		l.readLoop(ss)
	}()
	select {
	case <-readDone:
	case <-l.stop:
	}
	l.mu.Lock()
	failed := l.stopped && !l.graceful
	l.mu.Unlock()
	if failed {
		// An OK status would read as a clean close: the left neighbour
		// must learn at once that this rank broke the ring.
		return status.Errorf(codes.Aborted, "rank %d left ring generation %d after a failure", l.rank, l.gen)
	}
	return nil
}

func (l *grpcLink) readLoop(ss grpc.ServerStream) {
	var f inFrame
	for {
		if err := ss.RecvMsg(&f); err != nil {
			select {
			case <-l.stop:
				return // we ended the stream ourselves
			default:
			}
			if err == io.EOF {
				// The left neighbour closed after its last collective: not
				// a failure unless this rank still needs frames from it.
				l.inDown.fail(cleanClose("left neighbour closed its stream"))
				return
			}
			l.inDown.fail(fmt.Errorf("receiving: %w", err))
			l.shutdown(err)
			return
		}
		fr := frame{b: f.b}
		if f.seg != nil {
			fr.seg = f.seg
		}
		select {
		case l.in <- fr:
		case <-l.stop:
			l.pool.Put(f.b)
			if f.seg != nil {
				f.seg.release()
			}
			return
		}
	}
}

// writeLoop sends the ring's frames on the outbound stream.
func (l *grpcLink) writeLoop(cs grpc.ClientStream) {
	defer l.wg.Done()
	var msg frame // reused: SendMsg's argument escapes
	for {
		select {
		case msg = <-l.out:
			err := cs.SendMsg(&msg)
			if msg.owner != nil && msg.view == nil {
				// Queued in gRPC's stream, ahead of any half-close. (A view
				// is released by the codec once gRPC has written it.)
				msg.owner.release()
			}
			if err != nil {
				if err != io.EOF { // on EOF watchRight reports the status
					l.outDown.fail(fmt.Errorf("sending: %w", err))
					l.shutdown(err)
				}
				return
			}
		case <-l.stop:
			l.mu.Lock()
			graceful := l.graceful
			l.mu.Unlock()
			if graceful {
				cs.CloseSend() // after every frame already sent
			}
			return
		}
	}
}

// watchRight notices the right neighbour going away: the server never sends
// after the handshake, so RecvMsg returns only with the stream's end.
func (l *grpcLink) watchRight(cs grpc.ClientStream) {
	defer l.wg.Done()
	defer close(l.rightDone)
	var f inFrame
	err := cs.RecvMsg(&f)
	if err == io.EOF {
		// The right neighbour ended the stream cleanly (it closed, or we
		// half-closed): frames already sent were delivered.
		l.outDown.fail(cleanClose("right neighbour closed the stream"))
		return
	}
	if err == nil {
		l.pool.Put(f.b)
		err = errors.New("unexpected frame from right neighbour")
	}
	l.outDown.fail(fmt.Errorf("stream closed: %w", err))
	l.shutdown(err)
}

// shutdown stops everything without waiting; safe from any goroutine,
// including gRPC handlers. After a failure the links are cut at once so that
// neighbours fail fast; on Close (err is ErrClosed) the outbound stream is
// half-closed behind the frames already queued and the neighbours get up to
// the timeout to finish their last collective.
func (l *grpcLink) shutdown(err error) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	l.graceful = errors.Is(err, ErrClosed)
	graceful := l.graceful
	close(l.stop)
	l.mu.Unlock()
	if !graceful && l.cancel != nil {
		l.cancel()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if graceful && l.srv != nil {
			// Our handler returns on stop; GracefulStop flushes its status.
			expired := make(chan struct{})
			t := time.AfterFunc(l.grace, func() { close(expired) })
			done := make(chan struct{})
			go func() { l.srv.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-expired:
			}
			if l.conn != nil {
				select {
				case <-l.rightDone: // the right neighbour read our half-close
				case <-expired:
				}
			}
			t.Stop()
		}
		if l.cancel != nil {
			l.cancel()
		}
		if l.srv != nil {
			l.srv.Stop()
		}
		if l.conn != nil {
			l.conn.Close()
		}
	}()
}

func (l *grpcLink) wait() { l.wg.Wait() }
