//go:build amd64

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/cpu"
)

// withVec runs f with the AVX2 loops switched on or off.
func withVec(on bool, f func()) {
	old := vecOK
	vecOK = on
	defer func() { vecOK = old }()
	f()
}

// TestVecMatchesScalar: every AVX2 loop against the scalar loop it
// replaces, on lengths around the vector width and special values: bit for
// bit (any NaN for a NaN), except the float64 sums, which add in another
// order.
func TestVecMatchesScalar(t *testing.T) {
	if !vecOK {
		t.Skip("no AVX2/FMA (or RINGTRAIN_KERNELS=generic)")
	}
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-45, -1e-45, float32(math.Inf(1)), float32(math.Inf(-1)),
		float32(math.NaN()), math.Float32frombits(0xffc00000), math.Float32frombits(0x7f800001), math.MaxFloat32}
	rng := rand.New(rand.NewPCG(7, 9))
	gen := func(n int, specials bool) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
			if specials && rng.IntN(8) == 0 {
				s[i] = special[rng.IntN(len(special))]
			}
		}
		return s
	}
	same := func(what string, n int, a, b []float32) {
		t.Helper()
		for i := range a {
			if a[i] != a[i] && b[i] != b[i] {
				continue // NaN payloads follow operand order, which Go's compiler may swap
			}
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%s n=%d [%d]: AVX2 %v (%#x), scalar %v (%#x)", what, n, i, a[i], math.Float32bits(a[i]), b[i], math.Float32bits(b[i]))
			}
		}
	}
	closeTo := func(what string, n int, a, b float64) {
		t.Helper()
		if math.Abs(a-b) > 1e-12*(1+math.Abs(b)) {
			t.Fatalf("%s n=%d: AVX2 %v, scalar %v", what, n, a, b)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 64, 1000, 1003} {
		x, o, w0, g, b0 := gen(n, true), gen(n, true), gen(n, true), gen(n, true), gen(n, true)
		both := func(f func() []float32) (vec, sc []float32) {
			withVec(true, func() { vec = f() })
			withVec(false, func() { sc = f() })
			return
		}
		out := func(f func(y []float32)) func() []float32 {
			return func() []float32 { y := make([]float32, n); f(y); return y }
		}
		v, s := both(out(func(y []float32) { ReLU(y, x) }))
		same("ReLU", n, v, s)
		v, s = both(out(func(y []float32) { ReLUBackward(y, o, x) }))
		same("ReLUBackward", n, v, s)
		v, s = both(out(func(y []float32) { Add(y, x, o) }))
		same("Add", n, v, s)
		v, s = both(out(func(y []float32) { Normalize(y, x, 0.3, 1.7, -0.9, 0.25) }))
		same("Normalize", n, v, s)
		v, s = both(out(func(y []float32) { BNInputGrad(y, o, x, -0.2, 2.5, 0.8, 0.01, -0.03) }))
		same("BNInputGrad", n, v, s)
		for _, decay := range []bool{false, true} {
			var bv, bs []float32
			v, s = both(func() []float32 {
				w, b := append([]float32(nil), w0...), append([]float32(nil), b0...)
				SGDMomentum(w, g, b, 1e-4, 0.9, 0.5, 0.1, decay)
				if vecOK {
					bv = b
				} else {
					bs = b
				}
				return w
			})
			same("SGDMomentum w", n, v, s)
			same("SGDMomentum buf", n, bv, bs)
		}
		for _, noNaN := range []bool{false, true} {
			src, b0 := gen(n, true), gen(n, true)
			for i, v := range b0 { // a running maximum is never NaN (MaxTap reports those)
				if v != v {
					b0[i] = float32(math.Inf(-1))
				}
			}
			if noNaN {
				for i, v := range src {
					if v != v {
						src[i] = 3
					}
				}
			}
			var nans [2]bool
			var args [2][]int32
			var bests [2][]float32
			for k, on := range []bool{true, false} {
				withVec(on, func() {
					best, arg := append([]float32(nil), b0...), make([]int32, n)
					for i := range arg {
						arg[i] = -7
					}
					nans[k] = MaxTap(best, arg, src, 100, 3)
					args[k], bests[k] = arg, best
				})
			}
			if nans[0] != nans[1] {
				t.Fatalf("MaxTap n=%d: NaN seen %v (AVX2), %v (scalar)", n, nans[0], nans[1])
			}
			for i := range src {
				if args[0][i] != args[1][i] || (!nans[0] && bests[0][i] != bests[1][i]) {
					t.Fatalf("MaxTap n=%d [%d]: AVX2 %v at %d, scalar %v at %d", n, i, bests[0][i], args[0][i], bests[1][i], args[1][i])
				}
			}
		}
		// Sums on finite data.
		fx, fo := gen(n, false), gen(n, false)
		var a1, a2, c1, c2 float64
		withVec(true, func() { a1, a2 = Sum(fx), SumSqDev(fx, 0.1) })
		withVec(false, func() { c1, c2 = Sum(fx), SumSqDev(fx, 0.1) })
		closeTo("Sum", n, a1, c1)
		closeTo("SumSqDev", n, a2, c2)
		withVec(true, func() { a1, a2 = BNGradSums(fo, fx, 0.1, 1.3) })
		withVec(false, func() { c1, c2 = BNGradSums(fo, fx, 0.1, 1.3) })
		closeTo("BNGradSums dy", n, a1, c1)
		closeTo("BNGradSums dy·x̂", n, a2, c2)
	}
}

// unfoldPaths are UnfoldTable's paths this CPU can run, as the settings of
// vecOK (AVX2 gathers) and unfoldVecOK (AVX-512 permutes) that select them.
func unfoldPaths() []struct {
	name        string
	vec, unfold bool
} {
	ps := []struct {
		name        string
		vec, unfold bool
	}{{"scalar", false, false}}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ps = append(ps, struct {
			name        string
			vec, unfold bool
		}{"avx2", true, false})
	}
	if cpu.X86.HasAVX512F {
		ps = append(ps, struct {
			name        string
			vec, unfold bool
		}{"avx512", true, true})
	}
	return ps
}

// TestUnfoldTableBothPaths: every path against the per-element loops, and
// each vector path bit for bit against the scalar one on random small
// geometries with −0, ±Inf and NaN, k planes per call.
func TestUnfoldTableBothPaths(t *testing.T) {
	oldVec, oldOK, oldMin := vecOK, unfoldVecOK, unfoldVecMin
	defer func() { vecOK, unfoldVecOK, unfoldVecMin = oldVec, oldOK, oldMin }()
	unfoldVecMin = 1
	paths := unfoldPaths()
	for _, p := range paths {
		vecOK, unfoldVecOK = p.vec, p.unfold
		t.Run(p.name, checkUnfoldTables)
	}
	for _, vp := range paths[1:] {
		t.Run(vp.name+" agrees with scalar", func(t *testing.T) {
			rng := rand.New(rand.NewPCG(31, 37))
			specials := []float32{float32(math.Copysign(0, -1)), 0, float32(math.Inf(1)), float32(math.Inf(-1))}
			sprinkle := func(v []float32, nan bool) {
				for i := range v {
					switch r := rng.IntN(8); {
					case r == 0:
						v[i] = specials[rng.IntN(len(specials))]
					case r == 1 && nan:
						v[i] = float32(math.NaN())
					}
				}
			}
			same := func(what string, g ConvGeom, a, b []float32) {
				t.Helper()
				for i := range a {
					if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
						t.Fatalf("%+v: %s [%d]: %s %v (%#x), scalar %v (%#x)", g, what, i, vp.name, a[i], math.Float32bits(a[i]), b[i], math.Float32bits(b[i]))
					}
				}
			}
			vector := func() { vecOK, unfoldVecOK = vp.vec, vp.unfold }
			scalar := func() { vecOK, unfoldVecOK = false, false }
			for it := 0; it < 600; it++ {
				h, w := 1+rng.IntN(8), 1+rng.IntN(8)
				g := NewConvGeom(1, h, w, 1+rng.IntN(4), 1+rng.IntN(4), 1+rng.IntN(2), 1+rng.IntN(2), rng.IntN(3), rng.IntN(3), 1+rng.IntN(2), 1+rng.IntN(2))
				if g.OH <= 0 || g.OW <= 0 {
					continue
				}
				tab, ok := NewUnfoldTable(g)
				if !ok {
					continue
				}
				ld := g.ColCols() + rng.IntN(3)
				k := 1 + rng.IntN(3) // consecutive planes per call
				img := randSlice(rng, k*h*w)
				sprinkle(img, true) // NaN only on one side of the col2im sums: its payload is then unambiguous
				colV, colS := randSlice(rng, k*g.ColRows()*ld), make([]float32, k*g.ColRows()*ld)
				copy(colS, colV)
				vector()
				tab.Im2colPlanes(img, colV, ld, k)
				scalar()
				tab.Im2colPlanes(img, colS, ld, k)
				same("im2col", g, colV, colS)
				col := randSlice(rng, k*g.ColRows()*ld)
				sprinkle(col, false)
				imgV, imgS := append([]float32(nil), img...), append([]float32(nil), img...)
				vector()
				tab.Col2imPlanes(col, imgV, ld, k)
				scalar()
				tab.Col2imPlanes(col, imgS, ld, k)
				same("col2im", g, imgV, imgS)
			}
		})
	}
}

// BenchmarkUnfoldTable: one channel plane of ResNet-18 at 32×32 input
// (8×8, 4×4 and 2×2 maps, 3×3 kernels) and of its last stage at 224 (7×7),
// on each path this CPU has.
func BenchmarkUnfoldTable(b *testing.B) {
	oldVec, oldOK := vecOK, unfoldVecOK
	defer func() { vecOK, unfoldVecOK = oldVec, oldOK }()
	for _, g := range []ConvGeom{
		NewConvGeom(1, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1),
		NewConvGeom(1, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1),
		NewConvGeom(1, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1),
	} {
		tab, _ := NewUnfoldTable(g)
		img := make([]float32, g.H*g.W)
		col := make([]float32, g.ColRows()*g.ColCols())
		for _, p := range unfoldPaths() {
			name := fmt.Sprintf("H%dS%d/%s", g.H, g.SH, p.name)
			b.Run("im2col/"+name, func(b *testing.B) {
				vecOK, unfoldVecOK = p.vec, p.unfold
				for b.Loop() {
					tab.Im2col(img, col, g.ColCols())
				}
			})
			b.Run("col2im/"+name, func(b *testing.B) {
				vecOK, unfoldVecOK = p.vec, p.unfold
				for b.Loop() {
					tab.Col2im(col, img, g.ColCols())
				}
			})
		}
	}
}

// TestStridedRowsBothPaths: stridedCopy and stridedAdd (bit for bit) against
// their loops, for every stride-2 length up to 100 with 0 to 2 spare
// values of s or d, on the scalar, AVX2 and AVX-512 paths this CPU has
// (odd entries of d hold −0 and NaN, which the add must leave alone);
// and the im2col geometries through them.
func TestStridedRowsBothPaths(t *testing.T) {
	oldVec, oldUnfold := vecOK, unfoldVecOK
	defer func() { vecOK, unfoldVecOK = oldVec, oldUnfold }()
	rng := rand.New(rand.NewPCG(41, 43))
	negZero := float32(math.Copysign(0, -1))
	for _, path := range []struct {
		name        string
		vec, unfold bool
		ok          bool
	}{{"scalar", false, false, true}, {"avx2", true, false, cpu.X86.HasAVX2 && cpu.X86.HasFMA},
		{"avx512", true, true, cpu.X86.HasAVX512F}} {
		if !path.ok {
			continue
		}
		vecOK, unfoldVecOK = path.vec, path.unfold
		vec := path.name
		for n := 0; n <= 100; n++ {
			for spare := 0; spare < 3; spare++ {
				src := randSlice(rng, max(0, 2*n-1)+spare)
				got, want := randSlice(rng, n), make([]float32, n)
				stridedCopy(got, src, 2)
				for i := range want {
					want[i] = src[2*i]
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s n=%d spare=%d: stridedCopy [%d] = %v, want %v", vec, n, spare, i, got[i], want[i])
					}
				}
				d := randSlice(rng, max(0, 2*n-1)+spare)
				for i := 1; i < len(d); i += 2 {
					switch i % 6 {
					case 1:
						d[i] = negZero
					case 3:
						d[i] = float32(math.NaN())
					}
				}
				wantD := append([]float32(nil), d...)
				add := randSlice(rng, n)
				stridedAdd(d, add, 2)
				for i, v := range add {
					wantD[2*i] += v
				}
				for i := range wantD {
					if math.Float32bits(d[i]) != math.Float32bits(wantD[i]) {
						t.Fatalf("%s n=%d spare=%d: stridedAdd [%d] = %v, want %v", vec, n, spare, i, d[i], wantD[i])
					}
				}
			}
		}
		for _, g := range convGeoms {
			checkUnfoldAgainstRef(t, rng, g)
		}
	}
}
