package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// TCP transport: the same frames as gRPC, written back to back on one plain
// TCP connection per ring edge (the header carries the payload length). It
// exists because gRPC's HTTP/2 framing costs CPU that a 2-core machine does
// not have: sends go from the caller's buffer to the kernel with writev,
// receives go from the kernel into a pooled frame; no other copy.

type tcpLink struct {
	rank, size int
	gen        uint64
	pool       *bufPool
	lis        net.Listener

	out, in         chan frame
	outDown, inDown *downSignal
	inReady         chan struct{}

	mu      sync.Mutex
	right   net.Conn // we write frames
	left    net.Conn // we read frames
	stopped bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// DialRingTCP is DialRing over plain TCP connections.
func DialRingTCP(ctx context.Context, cfg RingConfig) (Communicator, error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	if !littleEndian() {
		return nil, errors.New("allreduce: TCP transport needs a little-endian host")
	}
	opt := cfg.Options.withDefaults()
	n := len(cfg.Addrs)
	l := &tcpLink{
		rank: cfg.Rank, size: n, gen: cfg.Generation, pool: &bufPool{},
		out: make(chan frame, linkQueue), in: make(chan frame, linkQueue),
		outDown: newDown(), inDown: newDown(), inReady: make(chan struct{}),
		stop: make(chan struct{}),
	}
	p := pipe{out: l.out, in: l.in, outDown: l.outDown.ch, inDown: l.inDown.ch,
		outErr: l.outDown.reason, inErr: l.inDown.reason, pool: l.pool}
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
		l.shutdown(err)
		l.wait()
		return nil, err
	}
	l.lis = cfg.Listener
	if l.lis == nil {
		var err error
		if l.lis, err = net.Listen("tcp", cfg.Addrs[cfg.Rank]); err != nil {
			return nil, fmt.Errorf("allreduce: rank %d listening on %s: %w", cfg.Rank, cfg.Addrs[cfg.Rank], err)
		}
	}
	l.wg.Add(1)
	go l.acceptLoop()

	right := mod(cfg.Rank+1, n)
	conn, err := l.dialRight(ctx, cfg.Addrs[right])
	if err != nil {
		return fail(r.peerErr("dial", right, err))
	}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		conn.Close()
		return fail(r.peerErr("dial", right, ErrClosed))
	}
	l.right = conn
	l.wg.Add(2)
	l.mu.Unlock()
	go l.writeLoop(conn)
	go l.watchRight(conn)

	select {
	case <-l.inReady:
		return r, nil
	case <-ctx.Done():
		return fail(r.peerErr("dial", mod(cfg.Rank-1, n), fmt.Errorf("waiting for the left neighbour to connect: %w", ctx.Err())))
	case <-l.inDown.ch:
		return fail(r.peerErr("dial", mod(cfg.Rank-1, n), l.inDown.reason()))
	}
}

func (l *tcpLink) hello() []byte {
	b := make([]byte, headerSize)
	PutHeader(b, Header{Kind: KindHello, DType: DTypeBytes, Generation: l.gen, Step: uint32(l.size), From: uint32(l.rank)})
	return b
}

func readHello(c net.Conn, deadline time.Time) (Header, error) {
	var b [headerSize]byte
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return Header{}, fmt.Errorf("reading hello: %w", err)
	}
	h, err := DecodeHeader(b[:])
	if err == nil && (h.Kind != KindHello || h.PayloadLen != 0) {
		err = fmt.Errorf("%w: expected hello, got %s", ErrBadFrame, h.Kind)
	}
	return h, err
}

// dialRight connects to the right neighbour, retrying while it is not yet
// listening, and exchanges hellos.
func (l *tcpLink) dialRight(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	delay := 10 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			if err = l.handshakeRight(ctx, c); err == nil {
				return c, nil
			}
			c.Close()
			if errors.Is(err, ErrGeneration) {
				return nil, err
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
		select {
		case <-time.After(delay):
			delay = min(2*delay, 500*time.Millisecond)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-l.stop:
			return nil, ErrClosed
		}
	}
}

func (l *tcpLink) handshakeRight(ctx context.Context, c net.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	c.SetWriteDeadline(deadline)
	_, err := c.Write(l.hello())
	c.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	h, err := readHello(c, deadline)
	if err != nil {
		return err
	}
	right := mod(l.rank+1, l.size)
	if h.Generation != l.gen || int(h.From) != right || int(h.Step) != l.size {
		return fmt.Errorf("%w: right neighbour answered as rank %d of world %d in generation %d; want rank %d of world %d in generation %d",
			ErrGeneration, h.From, h.Step, h.Generation, right, l.size, l.gen)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return nil
}

// acceptLoop takes connections until the left neighbour of this generation
// has connected; others get our hello (so they learn our generation) and are
// closed.
func (l *tcpLink) acceptLoop() {
	defer l.wg.Done()
	left := mod(l.rank-1, l.size)
	for {
		c, err := l.lis.Accept()
		if err != nil {
			select {
			case <-l.stop:
			default:
				l.inDown.fail(fmt.Errorf("accepting on %s: %w", l.lis.Addr(), err))
			}
			return
		}
		h, err := readHello(c, time.Now().Add(10*time.Second))
		if err == nil {
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Write(l.hello())
			c.SetWriteDeadline(time.Time{})
		}
		if err != nil || h.Generation != l.gen || int(h.From) != left || int(h.Step) != l.size {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.left = c
		l.wg.Add(1)
		l.mu.Unlock()
		close(l.inReady)
		go l.readLoop(c)
		return
	}
}

func (l *tcpLink) readLoop(c net.Conn) {
	defer l.wg.Done()
	var hb [headerSize]byte
	for {
		if _, err := io.ReadFull(c, hb[:]); err != nil {
			l.readFailed(err)
			return
		}
		h, err := DecodeHeader(hb[:])
		if err != nil {
			l.inDown.fail(err)
			l.shutdown(err)
			return
		}
		fb := l.pool.Get(headerSize + int(h.PayloadLen))
		copy(*fb, hb[:])
		if _, err := io.ReadFull(c, (*fb)[headerSize:]); err != nil {
			l.pool.Put(fb)
			l.readFailed(err)
			return
		}
		select {
		case l.in <- frame{b: fb}:
		case <-l.stop:
			l.pool.Put(fb)
			return
		}
	}
}

func (l *tcpLink) readFailed(err error) {
	select {
	case <-l.stop:
		return
	default:
	}
	if errors.Is(err, io.EOF) {
		// The left neighbour closed after its last collective.
		l.inDown.fail(cleanClose("left neighbour closed its connection"))
		return
	}
	l.inDown.fail(fmt.Errorf("receiving: %w", err))
	l.shutdown(err)
}

func (l *tcpLink) writeLoop(c net.Conn) {
	defer l.wg.Done()
	// Allocated once: WriteTo consumes the slice it is called on.
	vec := new([2][]byte)
	bufs := new(net.Buffers)
	for {
		select {
		case f := <-l.out:
			*bufs = append(vec[:0], *f.b)
			if f.view != nil {
				*bufs = append(*bufs, f.view)
			}
			_, err := bufs.WriteTo(c)
			vec[0], vec[1] = nil, nil
			l.pool.Put(f.b)
			if f.owner != nil {
				f.owner.release() // the kernel has the bytes
			}
			if err != nil {
				select {
				case <-l.stop:
				default:
					l.outDown.fail(fmt.Errorf("sending: %w", err))
					l.shutdown(err)
				}
				return
			}
		case <-l.stop:
			return
		}
	}
}

// watchRight reads the write-only connection to notice the right
// neighbour going away.
func (l *tcpLink) watchRight(c net.Conn) {
	defer l.wg.Done()
	var b [1]byte
	_, err := c.Read(b[:])
	select {
	case <-l.stop:
		return
	default:
	}
	if errors.Is(err, io.EOF) {
		l.outDown.fail(cleanClose("right neighbour closed the connection"))
		return
	}
	if err == nil {
		err = errors.New("unexpected bytes from right neighbour")
	}
	if errors.Is(err, syscall.ECONNRESET) {
		err = fmt.Errorf("connection reset: %w", err)
	}
	l.outDown.fail(fmt.Errorf("connection to right neighbour: %w", err))
	l.shutdown(err)
}

func (l *tcpLink) shutdown(err error) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	graceful := errors.Is(err, ErrClosed)
	close(l.stop)
	right, left := l.right, l.left
	l.mu.Unlock()
	if l.lis != nil {
		l.lis.Close()
	}
	for _, c := range []net.Conn{right, left} {
		if c == nil {
			continue
		}
		// After a failure reset the connections so that neighbours fail
		// at once instead of reading a clean close. On Close, unsent data
		// still goes out before the FIN (no frame is unread: the last
		// collective consumed everything).
		if tc, ok := c.(*net.TCPConn); ok && !graceful {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

func (l *tcpLink) wait() { l.wg.Wait() }
