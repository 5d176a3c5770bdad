package jpeg

import "math"

// Reduced-size inverse DCTs: an 8×8 block of coefficients becomes 4×4, 2×2
// or 1×1 pixels, each the mean of the 2×2, 4×4 or 8×8 pixels that the full
// IDCT would give (the method of libjpeg's jidctred.c, derived here anew).
//
// With the 1-D IDCT s(n) = Σ_k C(k)/2 X(k) cos((2n+1)kπ/16), C(0) = 1/√2,
// the sum of r = 8/N adjacent outputs is
//
//	Σ_{j<r} s(rm+j) = Σ_k X(k) C(k)/2 Σ_{j<r} cos((2(rm+j)+1)kπ/16)
//
// For N = 4 the weights vanish for k = 4, for N = 2 for every even k > 0,
// and output N-1-m has the weights of output m times (-1)^k, so each pass
// is an even part (DC, and X2, X6 for N = 4) plus or minus an odd part.
// The constants below are those weights times 2√2 (so that X0 weighs r),
// in fixed point with constBits fractional bits; TestReducedIDCTConstants
// recomputes them. Intermediate values keep pass1Bits fractional bits, and
// every shift rounds, as in the full-size integer IDCTs.

const (
	constBits = 13
	pass1Bits = 2

	// 4×4, outputs 0 (and 3): 2√2 C(k)/2 (cos((2·0+1)kπ/16) + cos((2·1+1)kπ/16)).
	r4e2  = 15137  // k=2: 2 cos(π/8)
	r4e6  = -6270  // k=6: -2 cos(3π/8)
	r4o01 = 20995  // k=1, output 0
	r4o03 = 7373   // k=3
	r4o05 = -4926  // k=5
	r4o07 = -4176  // k=7
	r4o11 = 8697   // k=1, output 1 (and 2)
	r4o13 = -17799 // k=3
	r4o15 = 11893  // k=5
	r4o17 = -1730  // k=7

	// 2×2, output 0 (and 1): the odd weights.
	r2o1 = 29692  // k=1
	r2o3 = -10426 // k=3
	r2o5 = 6967   // k=5
	r2o7 = -5906  // k=7
)

// descale divides by 2^n, rounding half up.
func descale(x int, n uint) int { return (x + 1<<(n-1)) >> n }

// pixel level-shifts v by 128 and clamps it to 0..255.
func pixel(v int) uint8 {
	v += 128
	if uint(v) > 255 {
		if v < 0 {
			return 0
		}
		return 255
	}
	return uint8(v)
}

// idct4x4 dequantizes b with q (both in natural order) and writes the 4×4
// reduced IDCT to dst (rows stride bytes apart).
func idct4x4(b *block, q *block, dst []byte, stride int) {
	var ws [4 * 8]int // ws[4*c+m]: column c, output row m
	for c := range 8 {
		if c == 4 { // the row pass gives k=4 no weight
			continue
		}
		w := ws[4*c : 4*c+4 : 4*c+4]
		if b[8+c] == 0 && b[16+c] == 0 && b[24+c] == 0 && b[40+c] == 0 && b[48+c] == 0 && b[56+c] == 0 {
			dc := int(b[c]) * int(q[c]) << pass1Bits
			w[0], w[1], w[2], w[3] = dc, dc, dc, dc
			continue
		}
		x0 := int(b[c]) * int(q[c]) << (constBits + 1)
		t2 := r4e2*int(b[16+c])*int(q[16+c]) + r4e6*int(b[48+c])*int(q[48+c])
		e0, e1 := x0+t2, x0-t2
		x1 := int(b[8+c]) * int(q[8+c])
		x3 := int(b[24+c]) * int(q[24+c])
		x5 := int(b[40+c]) * int(q[40+c])
		x7 := int(b[56+c]) * int(q[56+c])
		o0 := r4o01*x1 + r4o03*x3 + r4o05*x5 + r4o07*x7
		o1 := r4o11*x1 + r4o13*x3 + r4o15*x5 + r4o17*x7
		const sh = constBits - pass1Bits + 1
		w[0] = descale(e0+o0, sh)
		w[3] = descale(e0-o0, sh)
		w[1] = descale(e1+o1, sh)
		w[2] = descale(e1-o1, sh)
	}
	for m := range 4 {
		out := dst[m*stride : m*stride+4 : m*stride+4]
		x0, x1, x2, x3 := ws[m], ws[4+m], ws[8+m], ws[12+m]
		x5, x6, x7 := ws[20+m], ws[24+m], ws[28+m]
		if x1 == 0 && x2 == 0 && x3 == 0 && x5 == 0 && x6 == 0 && x7 == 0 {
			v := pixel(descale(x0, pass1Bits+3))
			out[0], out[1], out[2], out[3] = v, v, v, v
			continue
		}
		t0 := x0 << (constBits + 1)
		t2 := r4e2*x2 + r4e6*x6
		e0, e1 := t0+t2, t0-t2
		o0 := r4o01*x1 + r4o03*x3 + r4o05*x5 + r4o07*x7
		o1 := r4o11*x1 + r4o13*x3 + r4o15*x5 + r4o17*x7
		const sh = constBits + pass1Bits + 3 + 1
		out[0] = pixel(descale(e0+o0, sh))
		out[3] = pixel(descale(e0-o0, sh))
		out[1] = pixel(descale(e1+o1, sh))
		out[2] = pixel(descale(e1-o1, sh))
	}
}

// idct2x2 is idct4x4 for a 2×2 output.
func idct2x2(b *block, q *block, dst []byte, stride int) {
	var ws [2 * 8]int // ws[2*c+m]
	for _, c := range [...]int{0, 1, 3, 5, 7} {
		if b[8+c] == 0 && b[24+c] == 0 && b[40+c] == 0 && b[56+c] == 0 {
			dc := int(b[c]) * int(q[c]) << pass1Bits
			ws[2*c], ws[2*c+1] = dc, dc
			continue
		}
		t := int(b[c]) * int(q[c]) << (constBits + 2)
		o := r2o1*int(b[8+c])*int(q[8+c]) + r2o3*int(b[24+c])*int(q[24+c]) +
			r2o5*int(b[40+c])*int(q[40+c]) + r2o7*int(b[56+c])*int(q[56+c])
		const sh = constBits - pass1Bits + 2
		ws[2*c] = descale(t+o, sh)
		ws[2*c+1] = descale(t-o, sh)
	}
	for m := range 2 {
		out := dst[m*stride : m*stride+2 : m*stride+2]
		x0, x1, x3, x5, x7 := ws[m], ws[2+m], ws[6+m], ws[10+m], ws[14+m]
		if x1 == 0 && x3 == 0 && x5 == 0 && x7 == 0 {
			v := pixel(descale(x0, pass1Bits+3))
			out[0], out[1] = v, v
			continue
		}
		t := x0 << (constBits + 2)
		o := r2o1*x1 + r2o3*x3 + r2o5*x5 + r2o7*x7
		const sh = constBits + pass1Bits + 3 + 2
		out[0] = pixel(descale(t+o, sh))
		out[1] = pixel(descale(t-o, sh))
	}
}

// idct1x1 writes the block's mean: the DC coefficient over 8.
func idct1x1(b *block, q *block, dst []byte) {
	dst[0] = pixel(descale(int(b[0])*int(q[0]), 3))
}

// idctWeights[i] are the weights of the 8→n 1-D pass, n = 8>>i, in the same
// fixed point as the constants above (X0 weighs r = 8/n): row m, column k.
var idctWeights = func() (w [4][8][8]int) {
	for i := range 4 {
		r := 1 << i
		for m := range 8 >> i {
			for k := range 8 {
				c := 1.0
				if k == 0 {
					c = 1 / math.Sqrt2
				}
				var s float64
				for j := range r {
					s += math.Cos(float64(2*(r*m+j)+1) * float64(k) * math.Pi / 16)
				}
				w[i][m][k] = int(math.Floor(math.Sqrt2*c*s*(1<<constBits) + 0.5))
			}
		}
	}
	return w
}()

// log2n is log2 of 8/n for n = 1, 2, 4, 8.
func log2n(n int) uint {
	switch n {
	case 8:
		return 0
	case 4:
		return 1
	case 2:
		return 2
	}
	return 3
}

// idctMixed writes an nw×nh block (nw, nh in 1, 2, 4, 8) of means of the
// full IDCT's (8/nw)×(8/nh) pixel groups: a chroma block whose source
// subsampling differs horizontally and vertically (4:2:2, 4:4:0, 4:1:1)
// comes out at the luma's resolution, with no upsampling afterwards.
// Zero coefficients (most of a chroma block) cost nothing.
func idctMixed(b, q *block, nw, nh int, dst []byte, stride int) {
	wv, wh := &idctWeights[log2n(nh)], &idctWeights[log2n(nw)]
	var ws [8 * 8]int // ws[8*c+m]: column c, output row m
	var cols [8]int   // the columns with any nonzero output
	nc := 0
	sh1 := constBits - pass1Bits + log2n(nh)
	for c := range 8 {
		var ks [8]int // the nonzero rows k of column c, and their values
		var xs [8]int
		n := 0
		for k := 1; k < 8; k++ {
			if x := b[8*k+c]; x != 0 {
				ks[n], xs[n] = k, int(x)*int(q[8*k+c])
				n++
			}
		}
		dc := int(b[c]) * int(q[c])
		if n == 0 && dc == 0 {
			continue
		}
		if wh[0][c] == 0 && (nw == 1 || wh[1][c] == 0) {
			continue // no horizontal output reads column c (c = 4 for nw = 4, ...)
		}
		cols[nc] = c
		nc++
		w := ws[8*c : 8*c+8 : 8*c+8]
		if n == 0 {
			for m := range nh {
				w[m] = dc << pass1Bits
			}
			continue
		}
		for m := range nh {
			wm := &wv[m]
			s := dc << (constBits + log2n(nh))
			for j := range n {
				s += wm[ks[j]] * xs[j]
			}
			w[m] = descale(s, sh1)
		}
	}
	sh2 := constBits + pass1Bits + 3 + log2n(nw)
	for m := range nh {
		out := dst[m*stride : m*stride+nw]
		for n := range nw {
			wn := &wh[n]
			s := 1 << (sh2 - 1)
			for _, c := range cols[:nc] {
				s += wn[c] * ws[8*c+m]
			}
			out[n] = pixel(s >> sh2)
		}
	}
}
