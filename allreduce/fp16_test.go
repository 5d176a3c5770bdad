package allreduce

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestF16Table(t *testing.T) {
	tests := []struct {
		f float32
		h uint16
	}{
		{0, 0},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},
		{65520, 0x7c00}, // rounds up to Inf
		{1e6, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
		{5.960464477539063e-08, 0x0001}, // smallest subnormal
		{2.9802322387695312e-08, 0},     // half of it: tie to even (0)
		{6.103515625e-05, 0x0400},       // smallest normal
		{1 + 1.0/2048, 0x3c00},          // tie, even stays
		{1 + 3.0/2048, 0x3c02},          // tie, odd rounds up
	}
	for _, tt := range tests {
		if got := F32ToF16(tt.f); got != tt.h {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", tt.f, got, tt.h)
		}
	}
	if h := F32ToF16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("NaN -> %#04x", h)
	}
}

// Every half value converts to float32 and back unchanged.
func TestF16RoundTripExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if f != f { // NaN
			continue
		}
		if got := F32ToF16(f); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
	}
}

// F32ToF16 picks the nearest half (ties to even) for random finite inputs.
func TestF16Nearest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		x := float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-28)))
		h := F32ToF16(x)
		if math.Abs(float64(x)) >= 65520 {
			continue
		}
		d := math.Abs(float64(F16ToF32(h)) - float64(x))
		for _, nb := range []uint16{h + 1, h - 1} {
			if nb&0x7c00 == 0x7c00 {
				continue
			}
			dn := math.Abs(float64(F16ToF32(nb)) - float64(x))
			if dn < d || (dn == d && nb&1 == 0 && nb&0x7fff != 0) {
				t.Fatalf("x=%g: got %#04x (err %g), neighbour %#04x (err %g) is nearer or even tie", x, h, d, nb, dn)
			}
		}
	}
}

// The bulk codecs agree with the scalar conversions on every half value and
// on random floats.
func TestF16BulkMatchesScalar(t *testing.T) {
	src := make([]float32, 1<<16)
	for h := range src {
		src[h] = F16ToF32(uint16(h))
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 100000; i++ {
		src = append(src, math.Float32frombits(rng.Uint32()))
	}
	enc := make([]byte, 2*len(src))
	encodeF16(enc, src)
	dec := make([]float32, len(src))
	decodeF16(dec, enc, false)
	for i, v := range src {
		h := uint16(enc[2*i]) | uint16(enc[2*i+1])<<8
		if want := F32ToF16(v); h != want && !(v != v) {
			t.Fatalf("encodeF16(%g) = %#04x, F32ToF16 = %#04x", v, h, want)
		}
		if want := F16ToF32(h); math.Float32bits(dec[i]) != math.Float32bits(want) && want == want {
			t.Fatalf("decodeF16(%#04x) = %g, F16ToF32 = %g", h, dec[i], want)
		}
	}
}

func BenchmarkEncodeF16(b *testing.B) {
	src := make([]float32, 1<<16)
	for i := range src {
		src[i] = float32(i) * 0.001
	}
	dst := make([]byte, 2*len(src))
	b.SetBytes(int64(4 * len(src)))
	b.ReportAllocs()
	for b.Loop() {
		encodeF16(dst, src)
	}
}

func BenchmarkDecodeAddF16(b *testing.B) {
	src := make([]byte, 1<<17)
	dst := make([]float32, 1<<16)
	b.SetBytes(int64(4 * len(dst)))
	b.ReportAllocs()
	for b.Loop() {
		decodeF16(dst, src, true)
	}
}
