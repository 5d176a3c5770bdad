package allreduce

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
)

// split cuts b into random pieces, each copied to a random (often odd)
// offset of its own allocation, as gRPC's receive buffers may be.
func split(rng *rand.Rand, b []byte) [][]byte {
	var ps [][]byte
	for len(b) > 0 {
		k := min(len(b), 1+rng.IntN(64))
		if rng.IntN(4) == 0 {
			k = min(len(b), 1+rng.IntN(20000))
		}
		off := rng.IntN(4)
		p := make([]byte, off+k)[off:]
		copy(p, b[:k])
		ps, b = append(ps, p), b[k:]
	}
	return ps
}

func TestReducePieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for iter := 0; iter < 300; iter++ {
		n := rng.IntN(5000)
		dt := []DType{DTypeF32, DTypeF16}[rng.IntN(2)]
		reduce := rng.IntN(2) == 0
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(rng.IntN(200) - 100)
		}
		payload := make([]byte, n*dt.size())
		encodePayload(payload, src, dt)
		want := make([]float32, n)
		got := make([]float32, n)
		for i := range want {
			want[i] = float32(i % 13)
			got[i] = want[i]
		}
		reducePayload(want, payload, dt, reduce)
		reducePieces(got, split(rng, payload), dt, reduce)
		if !sameBits(got, want) {
			t.Fatalf("iter %d (%d elems, dtype %d, reduce %v): pieces differ from contiguous", iter, n, dt, reduce)
		}
	}
}

// The gRPC codec's Unmarshal sees a message in arbitrary pieces; large
// payloads stay in those pieces, small ones are copied.
func TestFrameCodecPieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	pool := &bufPool{}
	c := newFrameCodec(pool)
	for _, n := range []int{0, 100, segMin - 1, segMin, 3*segMin + 7} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		h := pool.Get(headerSize)
		PutHeader(*h, Header{Kind: KindBroadcast, DType: DTypeBytes, Generation: 3, PayloadLen: uint32(n)})
		tr := newViewTracker()
		out := frame{b: h}
		if n >= borrowMin {
			out.view, out.owner = payload, tr
			tr.borrow()
		} else {
			out.b = pool.Get(headerSize + n)
			copy(*out.b, *h)
			copy((*out.b)[headerSize:], payload)
		}
		bs, err := c.Marshal(&out)
		if err != nil {
			t.Fatal(err)
		}
		wire := bs.Materialize()
		bs.Free()
		if tr.n.Load() != 0 {
			t.Fatalf("n=%d: view not released after gRPC freed it", n)
		}
		var in mem.BufferSlice
		for _, p := range split(rng, wire) {
			in = append(in, mem.SliceBuffer(p))
		}
		var f inFrame
		if err := c.Unmarshal(in, &f); err != nil {
			t.Fatal(err)
		}
		r := &ring{p: pipe{pool: pool}}
		fr := r.contiguous(frame{b: f.b, seg: segOrNil(f.seg)})
		if (f.seg != nil) != (n >= segMin) {
			t.Fatalf("n=%d: segmented=%v", n, f.seg != nil)
		}
		hd, pl, err := DecodeFrame(*fr.b)
		if err != nil || hd.Generation != 3 || !bytes.Equal(pl, payload) {
			t.Fatalf("n=%d: decoded %+v, %d bytes, err %v", n, hd, len(pl), err)
		}
	}
}

func segOrNil(s *grpcSeg) segmented {
	if s == nil {
		return nil
	}
	return s
}

func TestAddF32MatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 100, 1000, 4099} {
		for off := 0; off < 3; off++ { // unaligned starts too
			a := make([]float32, n+off)[off:]
			b := make([]float32, n+off)[off:]
			for i := range a {
				a[i], b[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
			}
			want := append([]float32(nil), a...)
			addF32Generic(want, b)
			addF32(a, b)
			if !sameBits(a, want) {
				t.Fatalf("n=%d off=%d: addF32 differs from the generic loop", n, off)
			}
		}
	}
}

func BenchmarkAddF32(b *testing.B) {
	dst := make([]float32, 1<<16)
	src := make([]float32, 1<<16)
	b.Run("dispatch", func(b *testing.B) {
		b.SetBytes(4 << 16)
		for b.Loop() {
			addF32(dst, src)
		}
	})
	b.Run("generic", func(b *testing.B) {
		b.SetBytes(4 << 16)
		for b.Loop() {
			addF32Generic(dst, src)
		}
	})
}
