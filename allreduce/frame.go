package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire frame: a fixed little-endian header followed by the payload.
//
//	off size field
//	  0    4 magic "RTAR"
//	  4    1 version (1)
//	  5    1 kind
//	  6    1 dtype of the payload
//	  7    1 reserved (0)
//	  8    8 ring generation
//	 16    8 collective sequence number
//	 24    4 step
//	 28    4 sub-chunk index
//	 32    4 payload length in bytes
//	 36    4 sender rank
//	 40    - payload
//
// Every frame carries the generation so that a frame from an old ring is
// rejected, and (seq, step, sub) so that a receiver detects a peer that runs
// a different collective or is out of step.
const (
	headerSize   = 40
	frameMagic   = 0x52415452 // "RTAR" little-endian
	frameVersion = 1
	// maxPayload bounds what a decoder accepts from the network.
	maxPayload = 1 << 30
)

// Kind says which collective a frame belongs to.
type Kind uint8

const (
	KindHello Kind = iota + 1
	KindAllReduce
	KindBroadcast
	KindGather
)

func (k Kind) String() string {
	switch k {
	case KindHello:
		return "hello"
	case KindAllReduce:
		return "allreduce"
	case KindBroadcast:
		return "broadcast"
	case KindGather:
		return "allgather"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// DType is the payload encoding.
type DType uint8

const (
	DTypeF32 DType = iota + 1 // little-endian IEEE float32
	DTypeF16                  // little-endian IEEE binary16
	DTypeBytes
	DTypeU64
)

func (d DType) size() int {
	switch d {
	case DTypeF32:
		return 4
	case DTypeF16:
		return 2
	case DTypeU64:
		return 8
	}
	return 1
}

// Header is the decoded fixed part of a frame.
type Header struct {
	Kind       Kind
	DType      DType
	Generation uint64
	Seq        uint64
	Step       uint32
	Sub        uint32
	PayloadLen uint32
	From       uint32
}

// ErrBadFrame is wrapped by every frame decoding error.
var ErrBadFrame = errors.New("bad frame")

// PutHeader writes h into b[:headerSize].
func PutHeader(b []byte, h Header) {
	_ = b[headerSize-1]
	binary.LittleEndian.PutUint32(b[0:], frameMagic)
	b[4] = frameVersion
	b[5] = byte(h.Kind)
	b[6] = byte(h.DType)
	b[7] = 0
	binary.LittleEndian.PutUint64(b[8:], h.Generation)
	binary.LittleEndian.PutUint64(b[16:], h.Seq)
	binary.LittleEndian.PutUint32(b[24:], h.Step)
	binary.LittleEndian.PutUint32(b[28:], h.Sub)
	binary.LittleEndian.PutUint32(b[32:], h.PayloadLen)
	binary.LittleEndian.PutUint32(b[36:], h.From)
}

// DecodeFrame parses a whole frame and returns its header and payload (a
// sub-slice of b). It checks the magic, version, kind, dtype and that the
// payload length matches the frame and is a multiple of the element size.
func DecodeFrame(b []byte) (Header, []byte, error) {
	h, err := DecodeHeader(b)
	if err != nil {
		return h, nil, err
	}
	if int(h.PayloadLen) != len(b)-headerSize {
		return Header{}, nil, fmt.Errorf("%w: payload length %d, frame has %d", ErrBadFrame, h.PayloadLen, len(b)-headerSize)
	}
	return h, b[headerSize:], nil
}

// DecodeHeader parses and checks the fixed header at the start of b; the
// payload may live elsewhere.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < headerSize {
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrBadFrame, len(b), headerSize)
	}
	if m := binary.LittleEndian.Uint32(b[0:]); m != frameMagic {
		return Header{}, fmt.Errorf("%w: magic %#x", ErrBadFrame, m)
	}
	if b[4] != frameVersion {
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrBadFrame, b[4], frameVersion)
	}
	h := Header{
		Kind:       Kind(b[5]),
		DType:      DType(b[6]),
		Generation: binary.LittleEndian.Uint64(b[8:]),
		Seq:        binary.LittleEndian.Uint64(b[16:]),
		Step:       binary.LittleEndian.Uint32(b[24:]),
		Sub:        binary.LittleEndian.Uint32(b[28:]),
		PayloadLen: binary.LittleEndian.Uint32(b[32:]),
		From:       binary.LittleEndian.Uint32(b[36:]),
	}
	if h.Kind < KindHello || h.Kind > KindGather {
		return Header{}, fmt.Errorf("%w: kind %d", ErrBadFrame, b[5])
	}
	if h.DType < DTypeF32 || h.DType > DTypeU64 {
		return Header{}, fmt.Errorf("%w: dtype %d", ErrBadFrame, b[6])
	}
	if b[7] != 0 {
		return Header{}, fmt.Errorf("%w: reserved byte %d", ErrBadFrame, b[7])
	}
	if h.PayloadLen > maxPayload {
		return Header{}, fmt.Errorf("%w: payload length %d", ErrBadFrame, h.PayloadLen)
	}
	if int(h.PayloadLen)%h.DType.size() != 0 {
		return Header{}, fmt.Errorf("%w: payload length %d not a multiple of element size %d", ErrBadFrame, h.PayloadLen, h.DType.size())
	}
	return h, nil
}
