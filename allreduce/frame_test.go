package allreduce

import (
	"errors"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	h := Header{Kind: KindAllReduce, DType: DTypeF16, Generation: 7, Seq: 1 << 40, Step: 3, Sub: 9, PayloadLen: 6, From: 2}
	b := make([]byte, headerSize+6)
	PutHeader(b, h)
	copy(b[headerSize:], "abcdef")
	got, pl, err := DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != h || string(pl) != "abcdef" {
		t.Fatalf("got %+v %q, want %+v", got, pl, h)
	}
}

func TestDecodeFrameErrors(t *testing.T) {
	good := func() []byte {
		b := make([]byte, headerSize+8)
		PutHeader(b, Header{Kind: KindGather, DType: DTypeU64, PayloadLen: 8})
		return b
	}
	tests := []struct {
		name string
		mut  func([]byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:10] }},
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"version", func(b []byte) []byte { b[4] = 9; return b }},
		{"kind", func(b []byte) []byte { b[5] = 0; return b }},
		{"dtype", func(b []byte) []byte { b[6] = 99; return b }},
		{"reserved", func(b []byte) []byte { b[7] = 1; return b }},
		{"truncated payload", func(b []byte) []byte { return b[:len(b)-1] }},
		{"ragged elements", func(b []byte) []byte { b[32] = 7; return b[:len(b)-1] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := DecodeFrame(tt.mut(good())); !errors.Is(err, ErrBadFrame) {
				t.Fatalf("err = %v, want ErrBadFrame", err)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	b := make([]byte, headerSize+4)
	PutHeader(b, Header{Kind: KindAllReduce, DType: DTypeF32, Generation: 1, PayloadLen: 4})
	f.Add(b)
	f.Add([]byte("RTAR"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, pl, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if int(h.PayloadLen) != len(pl) || len(pl)%h.DType.size() != 0 {
			t.Fatalf("accepted inconsistent frame %+v with %d payload bytes", h, len(pl))
		}
		// Re-encoding the header reproduces the input.
		c := make([]byte, len(b))
		PutHeader(c, h)
		copy(c[headerSize:], pl)
		if string(c) != string(b) {
			t.Fatalf("re-encoded frame differs")
		}
	})
}
