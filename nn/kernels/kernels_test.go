package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// convGeoms covers strides, padding, dilation, non-square and empty-ish cases.
var convGeoms = []ConvGeom{
	NewConvGeom(1, 5, 5, 3, 3, 1, 1, 0, 0, 1, 1),
	NewConvGeom(3, 8, 7, 3, 3, 1, 1, 1, 1, 1, 1),
	NewConvGeom(2, 9, 11, 5, 3, 2, 1, 2, 1, 1, 1),
	NewConvGeom(4, 12, 10, 3, 3, 2, 3, 1, 0, 2, 1),
	NewConvGeom(2, 7, 7, 1, 1, 2, 2, 0, 0, 1, 1),
	NewConvGeom(3, 10, 10, 3, 2, 1, 1, 3, 4, 3, 2),
	NewConvGeom(1, 4, 4, 7, 7, 1, 1, 3, 3, 1, 1),
	NewConvGeom(3, 16, 16, 11, 11, 4, 4, 2, 2, 1, 1),
	NewConvGeom(2, 3, 3, 2, 2, 3, 3, 5, 5, 1, 1),
	// stride 1 with OW = W: im2colShifted
	NewConvGeom(2, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1),
	NewConvGeom(3, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1),
	NewConvGeom(2, 6, 5, 5, 5, 1, 1, 2, 2, 1, 1),
	NewConvGeom(2, 7, 9, 3, 3, 1, 1, 2, 2, 2, 2),
	NewConvGeom(2, 5, 6, 1, 3, 1, 1, 0, 1, 1, 1),
	NewConvGeom(2, 6, 4, 3, 1, 1, 1, 0, 0, 1, 1),
	NewConvGeom(3, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1),
	NewConvGeom(1, 3, 5, 2, 3, 1, 1, 4, 1, 1, 1),
	// wide stride-2 rows: the AVX-512 stride-2 copies and adds, with tails
	NewConvGeom(2, 5, 75, 3, 7, 2, 2, 1, 3, 1, 1),
	NewConvGeom(1, 3, 66, 1, 1, 2, 2, 0, 0, 1, 1),
	NewConvGeom(1, 4, 40, 3, 3, 2, 2, 1, 1, 2, 2),
}

// convDirect is the textbook convolution: out[o][oy][ox] = Σ w·img.
func convDirect(g ConvGeom, img, w []float32, cout int) []float32 {
	out := make([]float32, cout*g.OH*g.OW)
	for o := 0; o < cout; o++ {
		for oy := 0; oy < g.OH; oy++ {
			for ox := 0; ox < g.OW; ox++ {
				var s float64
				for c := 0; c < g.C; c++ {
					for ki := 0; ki < g.KH; ki++ {
						for kj := 0; kj < g.KW; kj++ {
							iy, ix := oy*g.SH-g.PH+ki*g.DH, ox*g.SW-g.PW+kj*g.DW
							if iy < 0 || iy >= g.H || ix < 0 || ix >= g.W {
								continue
							}
							s += float64(w[((o*g.C+c)*g.KH+ki)*g.KW+kj]) * float64(img[(c*g.H+iy)*g.W+ix])
						}
					}
				}
				out[(o*g.OH+oy)*g.OW+ox] = float32(s)
			}
		}
	}
	return out
}

// convInputGradDirect is the gradient of convDirect wrt img given dOut.
func convInputGradDirect(g ConvGeom, w, dout []float32, cout int) []float32 {
	din := make([]float32, g.C*g.H*g.W)
	for o := 0; o < cout; o++ {
		for oy := 0; oy < g.OH; oy++ {
			for ox := 0; ox < g.OW; ox++ {
				d := dout[(o*g.OH+oy)*g.OW+ox]
				for c := 0; c < g.C; c++ {
					for ki := 0; ki < g.KH; ki++ {
						for kj := 0; kj < g.KW; kj++ {
							iy, ix := oy*g.SH-g.PH+ki*g.DH, ox*g.SW-g.PW+kj*g.DW
							if iy >= 0 && iy < g.H && ix >= 0 && ix < g.W {
								din[(c*g.H+iy)*g.W+ix] += w[((o*g.C+c)*g.KH+ki)*g.KW+kj] * d
							}
						}
					}
				}
			}
		}
	}
	return din
}

func TestIm2colConvMatchesDirect(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 5))
	p := NewPool(2)
	defer p.Close()
	for _, g := range convGeoms {
		t.Run(fmt.Sprintf("%+v", g), func(t *testing.T) {
			const cout = 5
			img, w := randSlice(rng, g.C*g.H*g.W), randSlice(rng, cout*g.ColRows())
			col := randSlice(rng, g.ColRows()*g.ColCols()) // garbage: Im2col must overwrite
			Im2col(g, img, col)
			got := make([]float32, cout*g.ColCols())
			p.Sgemm(false, false, cout, g.ColCols(), g.ColRows(), 1, w, g.ColRows(), col, g.ColCols(), 0, got, g.ColCols())
			assertClose(t, got, convDirect(g, img, w, cout), 1e-5)

			// backward: dcol = Wᵀ·dout, then Col2im accumulates into din.
			dout := randSlice(rng, cout*g.ColCols())
			dcol := make([]float32, g.ColRows()*g.ColCols())
			p.Sgemm(true, false, g.ColRows(), g.ColCols(), cout, 1, w, g.ColRows(), dout, g.ColCols(), 0, dcol, g.ColCols())
			din := make([]float32, g.C*g.H*g.W)
			for i := range din {
				din[i] = 1 // Col2im accumulates: start from 1
			}
			Col2im(g, dcol, din)
			want := convInputGradDirect(g, w, dout, cout)
			for i := range want {
				want[i]++
			}
			assertClose(t, din, want, 1e-5)
		})
	}
}

// TestIm2colAdjoint checks ⟨Im2col(x), y⟩ = ⟨x, Col2im(y)⟩ for every geometry.
func TestIm2colAdjoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 5))
	for _, g := range convGeoms {
		x, y := randSlice(rng, g.C*g.H*g.W), randSlice(rng, g.ColRows()*g.ColCols())
		col := make([]float32, len(y))
		Im2col(g, x, col)
		img := make([]float32, len(x))
		Col2im(g, y, img)
		var l, r float64
		for i := range y {
			l += float64(col[i]) * float64(y[i])
		}
		for i := range x {
			r += float64(x[i]) * float64(img[i])
		}
		if math.Abs(l-r) > 1e-4*(1+math.Abs(l)) {
			t.Errorf("%+v: <Im2col x, y> = %g, <x, Col2im y> = %g", g, l, r)
		}
	}
}

func TestValidRange(t *testing.T) {
	tests := []struct{ n, stride, off, size, lo, hi int }{
		{5, 1, 0, 5, 0, 5},
		{5, 1, -1, 5, 1, 5},
		{5, 1, 1, 5, 0, 4},
		{4, 2, -3, 7, 2, 4},
		{3, 3, -5, 3, 2, 3},
		{3, 1, 10, 5, 0, 0},
		{3, 1, -10, 5, 3, 3},
	}
	for _, tt := range tests {
		lo, hi := ValidRange(tt.n, tt.stride, tt.off, tt.size)
		if lo != tt.lo || hi != tt.hi {
			t.Errorf("ValidRange(%d,%d,%d,%d) = [%d,%d), want [%d,%d)", tt.n, tt.stride, tt.off, tt.size, lo, hi, tt.lo, tt.hi)
		}
		for ox := 0; ox < tt.n; ox++ {
			ix := ox*tt.stride + tt.off
			if in := ix >= 0 && ix < tt.size; in != (ox >= lo && ox < hi) {
				t.Errorf("ValidRange(%d,%d,%d,%d): ox=%d inside=%v disagrees with [%d,%d)", tt.n, tt.stride, tt.off, tt.size, ox, in, lo, hi)
			}
		}
	}
}

func BenchmarkIm2col(b *testing.B) {
	for _, g := range []ConvGeom{
		NewConvGeom(64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1),  // ResNet 3×3
		NewConvGeom(3, 224, 224, 7, 7, 2, 2, 3, 3, 1, 1), // ResNet stem
		NewConvGeom(128, 56, 56, 3, 3, 2, 2, 1, 1, 1, 1), // ResNet stage 3's first 3×3
	} {
		img := make([]float32, g.C*g.H*g.W)
		col := make([]float32, g.ColRows()*g.ColCols())
		b.Run(fmt.Sprintf("C%dH%dK%dS%d", g.C, g.H, g.KH, g.SH), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(4 * len(col)))
			for b.Loop() {
				Im2col(g, img, col)
			}
		})
		b.Run(fmt.Sprintf("col2im/C%dH%dK%dS%d", g.C, g.H, g.KH, g.SH), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(4 * len(col)))
			for b.Loop() {
				Col2im(g, col, img)
			}
		})
	}
}

// im2colRef and col2imRef are the original per-element implementations;
// the fast ones must match them bit for bit.
func im2colRef(g ConvGeom, img, col []float32) {
	ohw := g.OH * g.OW
	for c := 0; c < g.C; c++ {
		for ki := 0; ki < g.KH; ki++ {
			for kj := 0; kj < g.KW; kj++ {
				row := col[((c*g.KH+ki)*g.KW+kj)*ohw:][:ohw]
				for oy := 0; oy < g.OH; oy++ {
					iy := oy*g.SH - g.PH + ki*g.DH
					dst := row[oy*g.OW:][:g.OW]
					for ox := range dst {
						ix := ox*g.SW - g.PW + kj*g.DW
						if iy < 0 || iy >= g.H || ix < 0 || ix >= g.W {
							dst[ox] = 0
						} else {
							dst[ox] = img[(c*g.H+iy)*g.W+ix]
						}
					}
				}
			}
		}
	}
}

func col2imRef(g ConvGeom, col, img []float32) {
	ohw := g.OH * g.OW
	for c := 0; c < g.C; c++ {
		for ki := 0; ki < g.KH; ki++ {
			for kj := 0; kj < g.KW; kj++ {
				for oy := 0; oy < g.OH; oy++ {
					for ox := 0; ox < g.OW; ox++ {
						iy, ix := oy*g.SH-g.PH+ki*g.DH, ox*g.SW-g.PW+kj*g.DW
						if iy >= 0 && iy < g.H && ix >= 0 && ix < g.W {
							img[(c*g.H+iy)*g.W+ix] += col[((c*g.KH+ki)*g.KW+kj)*ohw+oy*g.OW+ox]
						}
					}
				}
			}
		}
	}
}

func TestIm2colMatchesReferenceExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for _, g := range convGeoms {
		checkUnfoldAgainstRef(t, rng, g)
	}
}

// checkUnfoldAgainstRef runs Im2col (bit for bit) and Col2im (equal as
// numbers: the shifted path may add +0 where the reference adds nothing)
// on random data against the per-element references.
func checkUnfoldAgainstRef(t *testing.T, rng *rand.Rand, g ConvGeom) {
	t.Helper()
	img := randSlice(rng, g.C*g.H*g.W)
	got, want := randSlice(rng, g.ColRows()*g.ColCols()), make([]float32, g.ColRows()*g.ColCols())
	Im2col(g, img, got)
	im2colRef(g, img, want)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%+v: Im2col col[%d] = %g, reference %g", g, i, got[i], want[i])
		}
	}
	col := randSlice(rng, g.ColRows()*g.ColCols())
	ref := append([]float32(nil), col...)
	base := randSlice(rng, len(img))
	gotImg, wantImg := append([]float32(nil), base...), append([]float32(nil), base...)
	Col2im(g, col, gotImg) // may clear col's out-of-image entries
	col2imRef(g, ref, wantImg)
	for i := range wantImg {
		if gotImg[i] != wantImg[i] {
			t.Fatalf("%+v: Col2im img[%d] = %g, reference %g", g, i, gotImg[i], wantImg[i])
		}
	}
}

func BenchmarkIm2colRef(b *testing.B) {
	g := NewConvGeom(64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1)
	img := make([]float32, g.C*g.H*g.W)
	col := make([]float32, g.ColRows()*g.ColCols())
	b.SetBytes(int64(4 * len(col)))
	for b.Loop() {
		im2colRef(g, img, col)
	}
}

// randomConvGeom draws a small geometry: with same, stride 1 with OW = W
// (the shifted-plane paths), otherwise any strides and padding. ok is
// false for an empty output.
func randomConvGeom(rng *rand.Rand, same bool) (g ConvGeom, ok bool) {
	c, h, w := 1+rng.IntN(3), 1+rng.IntN(9), 1+rng.IntN(9)
	kh, kw := 1+rng.IntN(5), 1+rng.IntN(5)
	dh, dw := 1+rng.IntN(2), 1+rng.IntN(2)
	sh, sw := 1, 1
	var ph, pw int
	if same { // (KW−1)·DW = 2·PW
		pw = (kw - 1) * dw / 2
		if (kw-1)*dw%2 != 0 {
			kw, pw = 1, 0
		}
		ph = rng.IntN(kh * dh)
	} else {
		sh, sw, ph, pw = 1+rng.IntN(3), 1+rng.IntN(3), rng.IntN(4), rng.IntN(4)
	}
	g = NewConvGeom(c, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
	return g, g.OH > 0 && g.OW > 0
}

// TestUnfoldRandomGeoms: Im2col (bit for bit) and Col2im (equal as
// numbers: the shifted path may add +0 where the reference adds nothing)
// against the per-element references on random geometries.
func TestUnfoldRandomGeoms(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	for it := 0; it < 800; it++ {
		g, ok := randomConvGeom(rng, it%2 == 0)
		if !ok {
			continue
		}
		if it%2 == 0 && g.OW != g.W {
			t.Fatalf("%+v: test geometry should have OW = W", g)
		}
		checkUnfoldAgainstRef(t, rng, g)
	}
}

// TestUnfoldTableMatchesLoops: the table-driven im2col/col2im against the
// row loops, bit for bit, on random small geometries.
func TestUnfoldTableMatchesLoops(t *testing.T) { checkUnfoldTables(t) }

// checkUnfoldTables runs UnfoldTable's Im2col (bit for bit) and Col2im
// (equal as numbers: the row loops may add +0 where the table adds
// nothing) against the row loops on ResNet's small geometries
// (full 64-pixel planes, a 64-entry and a longer output row among them),
// then on random ones.
func checkUnfoldTables(t *testing.T) {
	t.Helper()
	fixed := []ConvGeom{
		NewConvGeom(1, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1),
		NewConvGeom(1, 8, 8, 1, 1, 2, 2, 0, 0, 1, 1),
		NewConvGeom(1, 8, 8, 3, 3, 1, 1, 2, 2, 1, 1), // 10×10 output: col2im's row loops
		NewConvGeom(1, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 4, 8, 3, 3, 1, 1, 1, 1, 1, 1), // 32 pixels: the padding index has bit 5
	}
	rng := rand.New(rand.NewPCG(23, 29))
	tested := 0
	for it := 0; it < 2000 && tested < 300; it++ {
		var g ConvGeom
		if it < len(fixed) {
			g = fixed[it]
		} else {
			h, w := 1+rng.IntN(10), 1+rng.IntN(10)
			kh, kw := 1+rng.IntN(5), 1+rng.IntN(5)
			g = NewConvGeom(1, h, w, kh, kw, 1+rng.IntN(3), 1+rng.IntN(3), rng.IntN(3), rng.IntN(3), 1+rng.IntN(2), 1+rng.IntN(2))
		}
		h, w := g.H, g.W
		if g.OH <= 0 || g.OW <= 0 {
			continue
		}
		tab, ok := NewUnfoldTable(g)
		if ok != (h*w <= SmallPlane) {
			t.Fatalf("%+v: NewUnfoldTable ok=%v for a %d-pixel plane", g, ok, h*w)
		}
		if !ok {
			continue
		}
		tested++
		ld := g.ColCols() + rng.IntN(3)
		img := randSlice(rng, h*w)
		got, want := randSlice(rng, g.ColRows()*ld), randSlice(rng, g.ColRows()*ld)
		copy(got, want)
		tab.Im2col(img, got, ld)
		Im2colLd(g, img, want, ld)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: table im2col [%d] = %v, loops %v", g, i, got[i], want[i])
			}
		}
		col := randSlice(rng, g.ColRows()*ld)
		gi := randSlice(rng, h*w)
		wi := append([]float32(nil), gi...)
		tab.Col2im(col, gi, ld)
		Col2imLd(g, append([]float32(nil), col...), wi, ld)
		for i := range wi {
			if gi[i] != wi[i] {
				t.Fatalf("%+v: table col2im [%d] = %v, loops %v", g, i, gi[i], wi[i])
			}
		}
	}
	if tested < 100 {
		t.Fatalf("only %d geometries tested", tested)
	}
}
