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
	for c := 0; c < g.C; c++ {
		for ki := 0; ki < g.KH; ki++ {
			for kj := 0; kj < g.KW; kj++ {
				row := col[((c*g.KH+ki)*g.KW+kj)*ld:][:ohw]
				off := kj*g.DW - g.PW // ix = ox·SW + off
				lo, hi := validRange(g.OW, g.SW, off, g.W)
				for oy := 0; oy < g.OH; oy++ {
					iy := oy*g.SH - g.PH + ki*g.DH
					dst := row[oy*g.OW:][:g.OW]
					if iy < 0 || iy >= g.H || lo >= hi {
						clear(dst)
						continue
					}
					src := img[(c*g.H+iy)*g.W:][:g.W]
					clear(dst[:lo])
					clear(dst[hi:])
					if g.SW == 1 {
						copy(dst[lo:hi], src[lo+off:hi+off])
						continue
					}
					for ox := lo; ox < hi; ox++ {
						dst[ox] = src[ox*g.SW+off]
					}
				}
			}
		}
	}
}

// Col2im folds col ((C·KH·KW)×(OH·OW)) back into img (C×H×W), adding
// overlapping contributions. img is accumulated into, not overwritten.
func Col2im(g ConvGeom, col, img []float32) { Col2imLd(g, col, img, g.OH*g.OW) }

// Col2imLd is Col2im from a wider matrix whose rows are ld apart.
func Col2imLd(g ConvGeom, col, img []float32, ld int) {
	ohw := g.OH * g.OW
	for c := 0; c < g.C; c++ {
		for ki := 0; ki < g.KH; ki++ {
			for kj := 0; kj < g.KW; kj++ {
				row := col[((c*g.KH+ki)*g.KW+kj)*ld:][:ohw]
				off := kj*g.DW - g.PW
				lo, hi := validRange(g.OW, g.SW, off, g.W)
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
						for i, v := range src {
							d[i] += v
						}
						continue
					}
					for i, v := range src {
						dst[(lo+i)*g.SW+off] += v
					}
				}
			}
		}
	}
}

// validRange returns the outputs [lo,hi) of a sweep of n positions whose
// input index ox·stride + off lies in [0, size); lo ≤ hi, both in [0, n].
func validRange(n, stride, off, size int) (lo, hi int) {
	if off < 0 {
		lo = (-off + stride - 1) / stride
	}
	if size-off > 0 {
		hi = (size - off + stride - 1) / stride // first ox with ox·stride+off ≥ size
	}
	lo, hi = min(lo, n), min(hi, n)
	return lo, max(lo, hi)
}
