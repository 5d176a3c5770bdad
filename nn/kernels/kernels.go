// Package kernels holds the float32 compute kernels of the engine: SGEMM,
// im2col/col2im and friends. It knows nothing of modules or tensors: every
// function works on plain row-major []float32 slices whose ownership stays
// with the caller. Kernels never allocate in steady state.
package kernels

// ConvGeom describes one 2-D convolution (or pooling) window geometry for a
// single image: input C×H×W, kernel KH×KW, stride, zero padding, dilation,
// and the output size OH×OW it implies.
type ConvGeom struct {
	C, H, W int
	KH, KW  int
	SH, SW  int
	PH, PW  int
	DH, DW  int
	OH, OW  int
}

// OutSize returns the output extent of a window sweep along one axis
// (PyTorch's formula, floor mode).
func OutSize(in, k, stride, pad, dil int) int {
	return (in+2*pad-dil*(k-1)-1)/stride + 1
}

// NewConvGeom fills in OH and OW from the rest.
func NewConvGeom(c, h, w, kh, kw, sh, sw, ph, pw, dh, dw int) ConvGeom {
	return ConvGeom{C: c, H: h, W: w, KH: kh, KW: kw, SH: sh, SW: sw, PH: ph, PW: pw, DH: dh, DW: dw,
		OH: OutSize(h, kh, sh, ph, dh), OW: OutSize(w, kw, sw, pw, dw)}
}

// ColRows is the row count of the im2col matrix (C·KH·KW); ColCols its column count (OH·OW).
func (g ConvGeom) ColRows() int { return g.C * g.KH * g.KW }
func (g ConvGeom) ColCols() int { return g.OH * g.OW }

// Im2col unfolds img (C×H×W) into col ((C·KH·KW)×(OH·OW)), zero where the
// window falls into padding. col is overwritten.
func Im2col(g ConvGeom, img, col []float32) { Im2colLd(g, img, col, g.OH*g.OW) }

// Im2colLd is Im2col into a wider matrix whose rows are ld apart, so that
// several images can fill adjacent column blocks of one GEMM operand.
func Im2colLd(g ConvGeom, img, col []float32, ld int) {
	ohw := g.OH * g.OW
	if g.SH == 1 && g.SW == 1 && g.OW == g.W {
		im2colShifted(g, img, col, ld)
		return
	}
	var buf [16]colSpan
	spans := colSpans(g, buf[:0])
	for c := 0; c < g.C; c++ {
		for ki := 0; ki < g.KH; ki++ {
			for kj, sp := range spans {
				row := col[((c*g.KH+ki)*g.KW+kj)*ld:][:ohw]
				for oy := 0; oy < g.OH; oy++ {
					iy := oy*g.SH - g.PH + ki*g.DH
					dst := row[oy*g.OW:][:g.OW]
					if iy < 0 || iy >= g.H || sp.lo >= sp.hi {
						zero(dst)
						continue
					}
					src := img[(c*g.H+iy)*g.W:][:g.W]
					zero(dst[:sp.lo])
					zero(dst[sp.hi:])
					if g.SW == 1 {
						move(dst[sp.lo:sp.hi], src[sp.lo+sp.off:sp.hi+sp.off])
						continue
					}
					stridedCopy(dst[sp.lo:sp.hi], src[sp.lo*g.SW+sp.off:], g.SW)
				}
			}
		}
	}
}

// im2colShifted is Im2colLd for stride 1 with OW = W ("same" width, as
// every 3×3 pad-1 and 1×1 convolution): an im2col row is then the image
// plane shifted by d = dy·W + dx, so the valid rows are one contiguous copy,
// and only the |dx| columns that wrapped around a row edge, and the rows
// outside the image, are zeroed afterwards. On the small maps of ResNet at
// 32×32 (8×8 down to 1×1) that replaces OH short copies per row.
func im2colShifted(g ConvGeom, img, col []float32, ld int) {
	ohw, plane := g.OH*g.OW, g.H*g.W
	W := g.W
	for c := 0; c < g.C; c++ {
		src := img[c*plane:][:plane]
		for ki := 0; ki < g.KH; ki++ {
			for kj := 0; kj < g.KW; kj++ {
				row := col[((c*g.KH+ki)*g.KW+kj)*ld:][:ohw]
				t, ok := shiftOf(g, ki, kj)
				if !ok {
					zero(row)
					continue
				}
				zero(row[:t.y0*W])
				zero(row[t.y1*W:])
				// Rows [y0, y1) of row = src shifted by d; the first and last
				// elements may fall outside src, and they are wrapped columns.
				move(row[t.a:t.b], src[t.a+t.d:t.b+t.d])
				t.zeroWrapped(row, W)
			}
		}
	}
}

// shift is where tap (ki, kj) of a stride-1, OW = W geometry reads: output
// rows [y0, y1) and columns [x0, x1) read inside the image, output index i
// reads plane index i + d, and [a, b) is the contiguous output span from
// the first valid element to the last.
type shift struct{ y0, y1, x0, x1, d, a, b int }

// shiftOf is tap (ki, kj)'s shift; ok is false when the tap reads only
// padding.
func shiftOf(g ConvGeom, ki, kj int) (t shift, ok bool) {
	dy, dx := ki*g.DH-g.PH, kj*g.DW-g.PW
	t.y0, t.y1 = max(0, -dy), min(g.OH, g.H-dy)
	t.x0, t.x1 = max(0, -dx), min(g.W, g.W-dx)
	if t.y0 >= t.y1 || t.x0 >= t.x1 {
		return t, false
	}
	t.d = dy*g.W + dx
	t.a, t.b = t.y0*g.W+t.x0, t.y1*g.W-(g.W-t.x1)
	return t, true
}

// zeroWrapped clears, in rows [y0, y1) of an output row of width W, the
// columns outside [x0, x1): the values a contiguous span shifted across a
// row edge.
func (t shift) zeroWrapped(row []float32, W int) {
	if t.x0 == 0 && t.x1 == W {
		return
	}
	for oy := t.y0; oy < t.y1; oy++ {
		r := row[oy*W:][:W]
		zero(r[:t.x0])
		zero(r[t.x1:])
	}
}

// colSpan is, for one kernel column kj, the input offset of output column
// ox (ix = ox·SW + off) and the outputs [lo, hi) whose input is inside the
// image. It depends on kj only, so im2col computes it once per call rather
// than per channel and kernel row (ValidRange divides).
type colSpan struct{ off, lo, hi int }

func colSpans(g ConvGeom, buf []colSpan) []colSpan {
	for kj := 0; kj < g.KW; kj++ {
		off := kj*g.DW - g.PW
		lo, hi := ValidRange(g.OW, g.SW, off, g.W)
		buf = append(buf, colSpan{off, lo, hi})
	}
	return buf
}

// zero and move are clear and copy for the short rows of small feature
// maps (ResNet at 32×32 input ends at 1×1 to 4×4), where the runtime's
// memclr/memmove call costs more than the loop; long rows still use them.
func zero(d []float32) {
	if len(d) > 16 {
		clear(d)
		return
	}
	for i := range d {
		d[i] = 0
	}
}

// stridedCopy sets d[i] = s[i·stride] (im2col's row for a strided
// convolution); stride 2 goes 16 at a time on AVX-512, 8 on AVX2.
func stridedCopy(d, s []float32, stride int) {
	i := 0
	if stride == 2 && vecOK {
		// Each block of 16 (8) reads 32 (16) values of s.
		if n := min(len(d), len(s)/2); unfoldVecOK && n >= 16 {
			i = n &^ 15
			stride2CopyAVX512(&d[0], &s[0], i)
		} else if n >= 8 {
			i = n &^ 7
			stride2CopyAVX2(&d[0], &s[0], i)
		}
	}
	for ; i < len(d); i++ {
		d[i] = s[i*stride]
	}
}

// stridedAdd adds s[i] into d[i·stride] (col2im's row for a strided
// convolution); stride 2 goes 16 at a time on AVX-512, 8 on AVX2, adding
// exactly the same pairs.
func stridedAdd(d, s []float32, stride int) {
	i := 0
	if stride == 2 && vecOK {
		if n := min(len(s), len(d)/2); unfoldVecOK && n >= 16 {
			i = n &^ 15
			stride2AddAVX512(&d[0], &s[0], i)
		} else if n >= 8 {
			i = n &^ 7
			stride2AddAVX2(&d[0], &s[0], i)
		}
	}
	for ; i < len(s); i++ {
		d[i*stride] += s[i]
	}
}

func move(d, s []float32) {
	if len(d) > 16 {
		copy(d, s)
		return
	}
	s = s[:len(d)]
	for i, v := range s {
		d[i] = v
	}
}

// Col2im folds col ((C·KH·KW)×(OH·OW)) back into img (C×H×W), adding
// overlapping contributions. img is accumulated into, not overwritten.
func Col2im(g ConvGeom, col, img []float32) { Col2imLd(g, col, img, g.OH*g.OW) }

// Col2imLd is Col2im from a wider matrix whose rows are ld apart.
//
// For stride 1 with OW = W it zeroes the entries of col whose input lies
// outside the image (they contribute nothing), so that each row folds back
// as one contiguous add: col is scratch to the caller. Adding those zeros
// can turn a −0 sum into +0; every other value is bitwise what the
// per-row loop gives, contributions arriving in the same order.
func Col2imLd(g ConvGeom, col, img []float32, ld int) {
	ohw := g.OH * g.OW
	if g.SH == 1 && g.SW == 1 && g.OW == g.W {
		col2imShifted(g, col, img, ld)
		return
	}
	var buf [16]colSpan
	spans := colSpans(g, buf[:0])
	for c := 0; c < g.C; c++ {
		for ki := 0; ki < g.KH; ki++ {
			for kj, sp := range spans {
				row := col[((c*g.KH+ki)*g.KW+kj)*ld:][:ohw]
				off, lo, hi := sp.off, sp.lo, sp.hi
				if lo >= hi {
					continue
				}
				for oy := 0; oy < g.OH; oy++ {
					iy := oy*g.SH - g.PH + ki*g.DH
					if iy < 0 || iy >= g.H {
						continue
					}
					dst := img[(c*g.H+iy)*g.W:][:g.W]
					src := row[oy*g.OW:][lo:hi]
					if g.SW == 1 {
						d := dst[lo+off : hi+off]
						Add(d, d, src)
						continue
					}
					stridedAdd(dst[lo*g.SW+off:], src, g.SW)
				}
			}
		}
	}
}

// col2imShifted is im2colShifted's adjoint: img += each row shifted back.
func col2imShifted(g ConvGeom, col, img []float32, ld int) {
	ohw, plane := g.OH*g.OW, g.H*g.W
	for c := 0; c < g.C; c++ {
		dst := img[c*plane:][:plane]
		for ki := 0; ki < g.KH; ki++ {
			for kj := 0; kj < g.KW; kj++ {
				t, ok := shiftOf(g, ki, kj)
				if !ok {
					continue
				}
				row := col[((c*g.KH+ki)*g.KW+kj)*ld:][:ohw]
				t.zeroWrapped(row, g.W)
				out := dst[t.a+t.d : t.b+t.d]
				Add(out, out, row[t.a:t.b])
			}
		}
	}
}

// ValidRange returns the outputs [lo,hi) of a sweep of n positions whose
// input index ox·stride + off lies in [0, size); lo ≤ hi, both in [0, n].
// Window sweeps elsewhere (max pooling) use it too.
func ValidRange(n, stride, off, size int) (lo, hi int) {
	if off < 0 {
		lo = (-off + stride - 1) / stride
	}
	if size-off > 0 {
		hi = (size - off + stride - 1) / stride // first ox with ox·stride+off ≥ size
	}
	lo, hi = min(lo, n), min(hi, n)
	return lo, max(lo, hi)
}

// SmallPlane is the largest image plane (H·W) an UnfoldTable handles: its
// copy lives on the stack.
const SmallPlane = 64

// UnfoldTable is im2col and col2im for one channel of a small image (at
// most SmallPlane pixels, ResNet's maps at 32×32 input) through a table of
// source indices built once per geometry. On such planes the row-by-row
// loops spend their time on bounds and calls for rows of 1 to 8 values; the
// table makes each a branch-free gather (padding reads a zero kept after
// the plane) or scatter-add (padding adds into that spare slot). With
// AVX-512 the plane (im2col) or a col row (col2im) is held in four
// registers and the table drives lane permutes (unfold_amd64.s); with AVX2
// VGATHERDPS reads eight entries at a time (vec_amd64.s), col2im by pixel
// through the inverse table.
type UnfoldTable struct {
	plane, ohw, taps int
	idx              []int32 // taps×ohw: index into the plane, or plane for padding
	// inv is col2im's table for the permute loops (nil when ohw > 64):
	// taps×64, the col row entry that adds into each pixel, or 64 for none.
	inv []int32
}

// NewUnfoldTable builds the table of g (its C is ignored: one channel);
// ok is false when the plane is too large.
func NewUnfoldTable(g ConvGeom) (u *UnfoldTable, ok bool) {
	plane, ohw, taps := g.H*g.W, g.OH*g.OW, g.KH*g.KW
	if plane > SmallPlane || ohw == 0 {
		return nil, false
	}
	u = &UnfoldTable{plane: plane, ohw: ohw, taps: taps, idx: make([]int32, taps*ohw)}
	for ki := 0; ki < g.KH; ki++ {
		for kj := 0; kj < g.KW; kj++ {
			row := u.idx[(ki*g.KW+kj)*ohw:][:ohw]
			for oy := 0; oy < g.OH; oy++ {
				for ox := 0; ox < g.OW; ox++ {
					iy, ix := oy*g.SH-g.PH+ki*g.DH, ox*g.SW-g.PW+kj*g.DW
					k := int32(plane)
					if iy >= 0 && iy < g.H && ix >= 0 && ix < g.W {
						k = int32(iy*g.W + ix)
					}
					row[oy*g.OW+ox] = k
				}
			}
		}
	}
	if ohw <= 64 {
		// A tap reads each pixel at most once (strides are ≥ 1), so the
		// inverse is well defined.
		u.inv = make([]int32, taps*64)
		for t := 0; t < taps; t++ {
			inv := u.inv[t*64:][:64]
			for q := range inv {
				inv[q] = 64
			}
			for p, k := range u.idx[t*ohw:][:ohw] {
				if int(k) < plane {
					inv[k] = int32(p)
				}
			}
		}
	}
	return u, true
}

// lanes returns a mask with the low n of 64 bits set.
func lanes(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return uint64(1)<<n - 1
}

// Im2col writes the taps rows of one channel plane img into col, row t at
// col[t·ld:], ohw values each.
func (u *UnfoldTable) Im2col(img, col []float32, ld int) { u.Im2colPlanes(img, col, ld, 1) }

// Im2colPlanes is Im2col for k consecutive channel planes of img, plane j
// at img[j·plane:] with its rows at col[j·taps·ld:] (one call for a run of
// channels: on 8×8 planes a call per plane cost a third of the copy).
func (u *UnfoldTable) Im2colPlanes(img, col []float32, ld, k int) {
	if k <= 0 {
		return
	}
	if unfoldVecOK && u.ohw >= unfoldVecMin {
		_, _ = img[k*u.plane-1], col[(k*u.taps-1)*ld+u.ohw-1]
		unfoldPermIm2col(&col[0], ld, &img[0], &u.idx[0], u.ohw, u.taps, lanes(u.plane), lanes(u.ohw%16), k, u.plane)
		return
	}
	gather := vecOK && u.ohw >= 8
	for j := 0; j < k; j++ {
		u.im2colPlane(img[j*u.plane:], col[j*u.taps*ld:], ld, gather)
	}
}

// im2colPlane is one plane's im2col: with gather, the first ohw&^7 values
// of every row by AVX2 gathers, the rest by the scalar loop.
func (u *UnfoldTable) im2colPlane(img, col []float32, ld int, gather bool) {
	var buf [2 * SmallPlane]float32    // a power of two: the mask below drops the bounds check
	copy(buf[:u.plane], img[:u.plane]) // buf[plane] stays 0: the padding
	p0 := 0
	if gather {
		_ = col[(u.taps-1)*ld+u.ohw-1]
		unfoldGatherIm2col(&col[0], ld, &buf[0], &u.idx[0], u.ohw, u.taps)
		p0 = u.ohw &^ 7
		if p0 == u.ohw {
			return
		}
	}
	for t := 0; t < u.taps; t++ {
		row := col[t*ld:][:u.ohw]
		idx := u.idx[t*u.ohw:][:u.ohw]
		for p := p0; p < len(idx); p++ {
			row[p] = buf[idx[p]&(SmallPlane*2-1)]
		}
	}
}

// Col2im adds col's taps rows back into the channel plane img, in the
// order of Col2imLd (tap by tap, then output position), so the sums are
// the same.
func (u *UnfoldTable) Col2im(col, img []float32, ld int) { u.Col2imPlanes(col, img, ld, 1) }

// Col2imPlanes is Col2im for k consecutive channel planes, laid out as in
// Im2colPlanes.
func (u *UnfoldTable) Col2imPlanes(col, img []float32, ld, k int) {
	if k <= 0 {
		return
	}
	if unfoldVecOK && u.inv != nil && u.ohw >= unfoldVecMin {
		_, _ = img[k*u.plane-1], col[(k*u.taps-1)*ld+u.ohw-1]
		unfoldPermCol2im(&col[0], ld, &img[0], &u.inv[0], u.taps, (u.plane+15)/16, lanes(u.plane), lanes(u.ohw), k, u.plane)
		return
	}
	// By pixel the work is taps·plane/8 gathers against taps·ohw scalar
	// adds: 2–3× faster at stride 1, 2× slower at stride 2 (ohw = plane/4)
	// on Zen 3 (BenchmarkUnfoldTable).
	if vecOK && u.inv != nil && u.plane >= 8 && 2*u.ohw >= u.plane {
		for j := 0; j < k; j++ {
			u.col2imGather(col[j*u.taps*ld:], img[j*u.plane:], ld)
		}
		return
	}
	for j := 0; j < k; j++ {
		u.col2imScalar(col[j*u.taps*ld:], img[j*u.plane:], ld)
	}
}

// col2imGather is col2imScalar by pixel instead of by col entry, through
// the inverse table: each pixel still adds its taps' values in tap order,
// so the sums are bitwise the same. AVX2 gathers take eight pixels at a
// time; the last plane%8 go through the same loop in Go.
func (u *UnfoldTable) col2imGather(col, img []float32, ld int) {
	_, _ = img[u.plane-1], col[(u.taps-1)*ld+u.ohw-1]
	full := u.plane &^ 7
	unfoldGatherCol2im(&col[0], ld, &img[0], &u.inv[0], u.taps, full/8)
	for q := full; q < u.plane; q++ {
		v := img[q]
		for t := 0; t < u.taps; t++ {
			if p := u.inv[t*64+q]; p < 64 {
				v += col[t*ld+int(p)]
			}
		}
		img[q] = v
	}
}

func (u *UnfoldTable) col2imScalar(col, img []float32, ld int) {
	var buf [2 * SmallPlane]float32
	copy(buf[:u.plane], img[:u.plane])
	for t := 0; t < u.taps; t++ {
		row := col[t*ld:][:u.ohw]
		for p, k := range u.idx[t*u.ohw:][:u.ohw] {
			buf[k&(SmallPlane*2-1)] += row[p]
		}
	}
	copy(img[:u.plane], buf[:u.plane])
}

// unfoldVecMin is the smallest output plane the AVX-512 permute loops
// take (BenchmarkUnfoldTable).
var unfoldVecMin = 4
