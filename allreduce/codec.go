package allreduce

import (
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Payload codecs. The wire is little-endian; on a little-endian host a
// float32 payload is the buffer's own memory, so encoding is one copy and
// decoding reads the frame in place. littleEndian guards the reinterpretation.

func littleEndian() bool {
	var x uint16 = 1
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// f32Bytes views x as bytes (no copy).
func f32Bytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

// bytesF32 views b (length a multiple of 4, 4-byte aligned) as float32s.
func bytesF32(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func encodePayload(dst []byte, src []float32, dt DType) {
	if dt == DTypeF16 {
		encodeF16(dst, src)
		return
	}
	copy(dst, f32Bytes(src))
}

// encodeF16Generic is F32ToF16 over a slice, with the normal case inlined.
func encodeF16Generic(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		b := math.Float32bits(v)
		var h uint16
		if e := b >> 23 & 0xff; e-113 < 30 {
			m := b & 0x7fffff
			x := (e-112)<<10 | m>>13
			x += (m&0x1fff + 0xfff + x&1) >> 13
			h = uint16(b>>16)&0x8000 | uint16(x)
		} else {
			h = f32ToF16Slow(v)
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
}

// decodeF16Generic adds or copies fp16 values into dst, with the normal
// case of F16ToF32 inlined.
func decodeF16Generic(dst []float32, src []byte, reduce bool) {
	src = src[:2*len(dst)]
	for i := range dst {
		h := binary.LittleEndian.Uint16(src[2*i:])
		var f float32
		if e := h & 0x7c00; e != 0 && e != 0x7c00 {
			f = math.Float32frombits(uint32(h&0x8000)<<16 | (uint32(h&0x7fff)<<13 + 112<<23))
		} else {
			f = f16ToF32Slow(h)
		}
		if reduce {
			dst[i] += f
		} else {
			dst[i] = f
		}
	}
}

// reducePayload adds (reduce) or copies the payload into dst.
func reducePayload(dst []float32, src []byte, dt DType, reduce bool) {
	if dt == DTypeF16 {
		decodeF16(dst, src, reduce)
		return
	}
	if !reduce {
		copy(f32Bytes(dst), src)
		return
	}
	addF32(dst, bytesF32(src))
}

// addF32Generic does dst[i] += src[i], unrolled by 8 to help the compiler
// (addF32 uses AVX2 where it can).
func addF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		d := dst[i : i+8 : i+8]
		s := src[i : i+8 : i+8]
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
		d[4] += s[4]
		d[5] += s[5]
		d[6] += s[6]
		d[7] += s[7]
	}
	for ; i < len(dst); i++ {
		dst[i] += src[i]
	}
}

// bufPool recycles frame buffers. It implements grpc's mem.BufferPool, so
// gRPC hands a sent frame back here once it has been written. Headers and
// small frames are kept apart from payload-sized ones so that neither
// evicts the other.
type bufPool struct {
	mu         sync.Mutex
	small, big []*[]byte
}

const (
	poolMax   = 128
	smallSize = 4 << 10
)

// Get returns a buffer of length n.
func (p *bufPool) Get(n int) *[]byte {
	p.mu.Lock()
	list := &p.big
	if n <= smallSize {
		list = &p.small
	}
	for i := len(*list) - 1; i >= 0; i-- {
		if b := (*list)[i]; cap(*b) >= n {
			last := len(*list) - 1
			(*list)[i] = (*list)[last]
			(*list)[last] = nil
			*list = (*list)[:last]
			p.mu.Unlock()
			*b = (*b)[:n]
			return b
		}
	}
	p.mu.Unlock()
	c := n
	if n <= smallSize {
		c = max(n, 64)
	}
	b := make([]byte, n, c)
	return &b
}

// Put returns b to the pool; the caller must not use it afterwards.
func (p *bufPool) Put(b *[]byte) {
	if b == nil {
		return
	}
	p.mu.Lock()
	list := &p.big
	if cap(*b) <= smallSize {
		list = &p.small
	}
	if len(*list) < poolMax {
		*list = append(*list, b)
	}
	p.mu.Unlock()
}

// borrowMin is the smallest payload sent straight from the caller's buffer
// instead of being copied into a frame (gRPC copies buffers under 1 KiB
// anyway and would never report them released).
const borrowMin = 4 << 10

// frame is the unit a pipe carries: b is a pooled buffer with the header
// (and the payload, unless view is set). view is payload borrowed from the
// sender's buffer; whoever consumes it calls owner.release().
type frame struct {
	b     *[]byte
	view  []byte
	owner *viewTracker
	seg   segmented // payload left in the transport's buffers, if set
}

// segmented is a received payload that a transport keeps in pieces.
type segmented interface {
	pieces() [][]byte // valid until release
	release()
}

// reducePieces is reducePayload over a payload in pieces whose boundaries
// may split elements.
func reducePieces(dst []float32, ps [][]byte, dt DType, reduce bool) {
	esz := dt.size()
	var carry [4]byte
	nc, i := 0, 0
	for _, p := range ps {
		if nc > 0 {
			k := copy(carry[nc:esz], p)
			nc += k
			p = p[k:]
			if nc < esz {
				continue
			}
			reducePayload(dst[i:i+1], carry[:esz], dt, reduce)
			i, nc = i+1, 0
		}
		whole := len(p) / esz
		if whole > 0 {
			d := dst[i : i+whole]
			if dt == DTypeF32 && uintptr(unsafe.Pointer(&p[0]))%4 != 0 {
				reduceF32Unaligned(d, p, reduce)
			} else {
				reducePayload(d, p[:whole*esz], dt, reduce)
			}
			i += whole
		}
		nc = copy(carry[:], p[whole*esz:])
	}
}

func reduceF32Unaligned(dst []float32, src []byte, reduce bool) {
	src = src[:4*len(dst)]
	for i := range dst {
		v := math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		if reduce {
			dst[i] += v
		} else {
			dst[i] = v
		}
	}
}

// payloadLen is the payload size in bytes.
func (f frame) payloadLen() int {
	if f.seg != nil {
		n := 0
		for _, p := range f.seg.pieces() {
			n += len(p)
		}
		return n
	}
	return len(f.payload())
}

func (f frame) payload() []byte {
	if f.view != nil {
		return f.view
	}
	return (*f.b)[headerSize:]
}

// viewTracker counts borrowed payloads not yet released, so that a
// collective returns only when no transport still reads the caller's
// buffer. As a grpc mem.BufferPool it hands out holders for views; Put is
// gRPC saying it has written the view.
type viewTracker struct {
	n       atomic.Int64
	sig     chan struct{} // a release reached zero
	mu      sync.Mutex
	holders []*[]byte
}

func newViewTracker() *viewTracker { return &viewTracker{sig: make(chan struct{}, 1)} }

func (t *viewTracker) borrow() { t.n.Add(1) }

func (t *viewTracker) release() {
	if t.n.Add(-1) == 0 {
		select {
		case t.sig <- struct{}{}:
		default:
		}
	}
}

// holder wraps a view for mem.NewBuffer.
func (t *viewTracker) holder(view []byte) *[]byte {
	t.mu.Lock()
	var h *[]byte
	if k := len(t.holders); k > 0 {
		h = t.holders[k-1]
		t.holders = t.holders[:k-1]
	}
	t.mu.Unlock()
	if h == nil {
		h = new([]byte)
	}
	*h = view
	return h
}

// Get is never called by gRPC for a buffer it did not allocate.
func (t *viewTracker) Get(n int) *[]byte { b := make([]byte, n); return &b }

// Put releases the view held by h.
func (t *viewTracker) Put(h *[]byte) {
	*h = nil
	t.mu.Lock()
	if len(t.holders) < poolMax {
		t.holders = append(t.holders, h)
	}
	t.mu.Unlock()
	t.release()
}
