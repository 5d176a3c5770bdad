package nn

import (
	"fmt"
	"math"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// PoolConfig configures MaxPool2D and AvgPool2D as PyTorch does. Stride 0
// means stride = kernel. CountIncludePad applies to average pooling only
// (PyTorch's default is true).
type PoolConfig struct {
	KH, KW           int
	StrideH, StrideW int
	PadH, PadW       int
	CeilMode         bool
	CountIncludePad  bool
}

// poolOut is PyTorch's pooling_output_shape: with ceil mode the last window
// must still start inside the input or the left padding.
func poolOut(in, k, pad, stride int, ceil bool) int {
	num := in + 2*pad - (k - 1) - 1
	if ceil {
		num += stride - 1
	}
	if num < 0 { // window larger than the padded input: PyTorch's div_rtn floors
		return -((-num + stride - 1) / stride) + 1
	}
	out := num/stride + 1
	if ceil && (out-1)*stride >= in+pad {
		out--
	}
	return out
}

func (c *PoolConfig) fill() {
	if c.StrideH == 0 {
		c.StrideH = c.KH
	}
	if c.StrideW == 0 {
		c.StrideW = c.KW
	}
}

func (c PoolConfig) build(kind string, in Shape) (Shape, error) {
	if len(in) != 3 {
		return nil, fmt.Errorf("%s: input shape %v is not [C, H, W]", kind, in)
	}
	if c.KH <= 0 || c.KW <= 0 || c.StrideH <= 0 || c.StrideW <= 0 {
		return nil, fmt.Errorf("%s: kernel %dx%d and stride %dx%d must be positive", kind, c.KH, c.KW, c.StrideH, c.StrideW)
	}
	if c.PadH*2 > c.KH || c.PadW*2 > c.KW {
		return nil, fmt.Errorf("%s: padding %dx%d must be at most half the kernel %dx%d", kind, c.PadH, c.PadW, c.KH, c.KW)
	}
	oh, ow := poolOut(in[1], c.KH, c.PadH, c.StrideH, c.CeilMode), poolOut(in[2], c.KW, c.PadW, c.StrideW, c.CeilMode)
	if oh <= 0 || ow <= 0 {
		return nil, fmt.Errorf("%s: input shape %v is smaller than the %dx%d window: output would be %dx%d", kind, in, c.KH, c.KW, oh, ow)
	}
	return Shape{in[0], oh, ow}, nil
}

// MaxPool2D is nn.MaxPool2d (dilation 1). Forward remembers the argmax of
// every window for backward.
type MaxPool2D struct {
	leaf
	noParams
	cfg     PoolConfig
	in, os  Shape
	out, dx buf
	argmax  []int32
	io      planeIO
}

// NewMaxPool2D: square kernel k, stride s (0 = k), padding p.
func NewMaxPool2D(k, s, p int, ceil bool) *MaxPool2D {
	return NewMaxPool(PoolConfig{KH: k, KW: k, StrideH: s, StrideW: s, PadH: p, PadW: p, CeilMode: ceil})
}

// NewMaxPool takes the full configuration.
func NewMaxPool(cfg PoolConfig) *MaxPool2D {
	cfg.fill()
	return &MaxPool2D{cfg: cfg}
}

func (*MaxPool2D) Kind() string { return "MaxPool2D" }

func (m *MaxPool2D) Build(b *Builder, in Shape) (Shape, error) {
	out, err := m.cfg.build("MaxPool2D", in)
	m.in, m.os = in, out
	return out, err
}

// Forward: x [N, C, H, W] -> y [N, C, OH, OW]; padding acts as −∞.
func (m *MaxPool2D) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	n := batch(x)
	y := m.out.get(n, m.os)
	xd, yd := f32(x), f32(y)
	if cap(m.argmax) < len(yd) {
		m.argmax = make([]int32, len(yd))
	}
	m.argmax = m.argmax[:len(yd)]
	if m.io.fwd == nil {
		m.io.fwd = m.forwardPlanes
	}
	m.io.run(s, n*m.in[0], xd, yd, m.io.fwd)
	return y
}

// maxPoolRow bounds the output rows forwardPlanes handles with its
// on-stack row buffer; wider rows take the per-window loop.
const maxPoolRow = 512

// forwardPlanes sweeps a whole output row per window tap, so that each
// output's running maximum is an independent chain and the argmax update is
// a conditional move (the per-window loop's branch mispredicted on random
// data: 3.5 ns per element). It keeps PyTorch's rule exactly: the first
// maximum in row-major order wins, y is that element (so −0 stays −0), and
// a window holding a NaN is redone by the sequential rule, where the last
// NaN wins.
func (m *MaxPool2D) forwardPlanes(lo, hi int) {
	xd, yd := m.io.in, m.io.out
	c := m.cfg
	H, W, OH, OW := m.in[1], m.in[2], m.os[1], m.os[2]
	if OW > maxPoolRow {
		m.forwardWindows(lo, hi)
		return
	}
	var rowBest [maxPoolRow]float32
	var phases [2 * maxPoolRow]float32 // a strided input row, deinterleaved
	best := rowBest[:OW]
	for p := lo; p < hi; p++ {
		xp := xd[p*H*W : (p+1)*H*W]
		for oy := 0; oy < OH; oy++ {
			y0 := oy*c.StrideH - c.PadH
			y1 := min(y0+c.KH, H)
			y0 = max(y0, 0)
			o := p*OH*OW + oy*OW
			arg, y := m.argmax[o:o+OW], yd[o:o+OW]
			for ox := range arg {
				arg[ox] = int32(y0*W + max(ox*c.StrideW-c.PadW, 0))
				best[ox] = float32(math.Inf(-1))
			}
			sawNaN := false
			for iy := y0; iy < y1; iy++ {
				row := xp[iy*W : (iy+1)*W]
				// src holds the row as s phases of plen values, phase r being
				// row[r], row[r+s], …: every tap is then a contiguous sweep
				// for the vector loop. Stride 1 is the row itself.
				s := c.StrideW
				src, plen, vec := row, W, s == 1
				if n := (W + s - 1) / s; s > 1 && s <= 4 && s*n <= len(phases) {
					src, plen, vec = phases[:s*n], n, true
					for r := 0; r < s; r++ {
						ph := src[r*plen : (r+1)*plen]
						for j := range ph {
							if ix := j*s + r; ix < W {
								ph[j] = row[ix]
							}
						}
					}
				}
				for kx := 0; kx < c.KW; kx++ {
					off := kx - c.PadW
					lo, hi := kernels.ValidRange(OW, s, off, W)
					if lo >= hi {
						continue
					}
					if vec { // ix = ox·s + off lies in phase off mod s, at ox + (off − r)/s
						r := ((off % s) + s) % s
						q := (off - r) / s
						if kernels.MaxTap(best[lo:hi], arg[lo:hi], src[r*plen+lo+q:r*plen+hi+q], int32(iy*W+lo*s+off), int32(s)) {
							sawNaN = true
						}
						continue
					}
					for ox := lo; ox < hi; ox++ {
						ix := ox*c.StrideW + off
						v := row[ix]
						if v > best[ox] {
							arg[ox] = int32(iy*W + ix)
						}
						best[ox] = max(best[ox], v) // NaN sticks
					}
				}
			}
			for ox, a := range arg {
				if b := best[ox]; b != b || sawNaN {
					y[ox], arg[ox] = m.window(xp, oy, ox)
					continue
				}
				y[ox] = xp[a]
			}
		}
	}
}

// forwardWindows is the per-window loop: PyTorch's rule as written.
func (m *MaxPool2D) forwardWindows(lo, hi int) {
	xd, yd := m.io.in, m.io.out
	H, W, OH, OW := m.in[1], m.in[2], m.os[1], m.os[2]
	for p := lo; p < hi; p++ {
		xp := xd[p*H*W : (p+1)*H*W]
		for oy := 0; oy < OH; oy++ {
			for ox := 0; ox < OW; ox++ {
				o := p*OH*OW + oy*OW + ox
				yd[o], m.argmax[o] = m.window(xp, oy, ox)
			}
		}
	}
}

// window is output (oy, ox)'s maximum and its index in plane xp: the first
// maximum in row-major order, or the last NaN (as PyTorch).
func (m *MaxPool2D) window(xp []float32, oy, ox int) (float32, int32) {
	c := m.cfg
	H, W := m.in[1], m.in[2]
	y0 := oy*c.StrideH - c.PadH
	y1 := min(y0+c.KH, H)
	y0 = max(y0, 0)
	x0 := ox*c.StrideW - c.PadW
	x1 := min(x0+c.KW, W)
	x0 = max(x0, 0)
	best, arg := float32(math.Inf(-1)), int32(-1)
	for iy := y0; iy < y1; iy++ {
		for ix := x0; ix < x1; ix++ {
			v := xp[iy*W+ix]
			if v > best || arg < 0 || v != v { // NaN wins, as in PyTorch
				best, arg = v, int32(iy*W+ix)
			}
		}
	}
	return best, arg
}

// Backward routes each output gradient to its window's argmax.
func (m *MaxPool2D) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	n := batch(dy)
	dx := m.dx.zeroed(n, m.in)
	if m.io.bwd == nil {
		m.io.bwd = m.backwardPlanes
	}
	m.io.run(s, n*m.in[0], f32(dy), f32(dx), m.io.bwd)
	return dx
}

func (m *MaxPool2D) backwardPlanes(lo, hi int) {
	dyd, dxd := m.io.in, m.io.out
	hw, ohw := m.in[1]*m.in[2], m.os[1]*m.os[2]
	for p := lo; p < hi; p++ {
		dxp := dxd[p*hw : (p+1)*hw]
		for o := p * ohw; o < (p+1)*ohw; o++ {
			if a := m.argmax[o]; a >= 0 {
				dxp[a] += dyd[o]
			}
		}
	}
}

// AvgPool2D is nn.AvgPool2d with ceil_mode and count_include_pad.
type AvgPool2D struct {
	leaf
	noParams
	cfg     PoolConfig
	in, os  Shape
	out, dx buf
	div     []float32 // divisor per output position (shared by all planes)
	io      planeIO
}

// NewAvgPool2D: square kernel k, stride s (0 = k), padding p, counting the
// padding in the divisor as PyTorch's default.
func NewAvgPool2D(k, s, p int) *AvgPool2D {
	return NewAvgPool(PoolConfig{KH: k, KW: k, StrideH: s, StrideW: s, PadH: p, PadW: p, CountIncludePad: true})
}

// NewAvgPool takes the full configuration.
func NewAvgPool(cfg PoolConfig) *AvgPool2D {
	cfg.fill()
	return &AvgPool2D{cfg: cfg}
}

func (*AvgPool2D) Kind() string { return "AvgPool2D" }

func (a *AvgPool2D) Build(b *Builder, in Shape) (Shape, error) {
	out, err := a.cfg.build("AvgPool2D", in)
	if err != nil {
		return nil, err
	}
	a.in, a.os = in, out
	c := a.cfg
	H, W := in[1], in[2]
	a.div = make([]float32, out[1]*out[2])
	for oy := 0; oy < out[1]; oy++ {
		for ox := 0; ox < out[2]; ox++ {
			y0, x0 := oy*c.StrideH-c.PadH, ox*c.StrideW-c.PadW
			y1, x1 := min(y0+c.KH, H+c.PadH), min(x0+c.KW, W+c.PadW)
			size := (y1 - y0) * (x1 - x0)
			if !c.CountIncludePad {
				size = (min(y1, H) - max(y0, 0)) * (min(x1, W) - max(x0, 0))
			}
			a.div[oy*out[2]+ox] = float32(size)
		}
	}
	return out, nil
}

func (a *AvgPool2D) window(oy, ox int) (y0, y1, x0, x1 int) {
	c := a.cfg
	y0, x0 = oy*c.StrideH-c.PadH, ox*c.StrideW-c.PadW
	y1, x1 = min(y0+c.KH, a.in[1]), min(x0+c.KW, a.in[2])
	return max(y0, 0), y1, max(x0, 0), x1
}

// Forward: x [N, C, H, W] -> y [N, C, OH, OW].
func (a *AvgPool2D) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	n := batch(x)
	y := a.out.get(n, a.os)
	if a.io.fwd == nil {
		a.io.fwd = a.forwardPlanes
	}
	a.io.run(s, n*a.in[0], f32(x), f32(y), a.io.fwd)
	return y
}

func (a *AvgPool2D) forwardPlanes(lo, hi int) {
	xd, yd := a.io.in, a.io.out
	H, W, OH, OW := a.in[1], a.in[2], a.os[1], a.os[2]
	for p := lo; p < hi; p++ {
		xp := xd[p*H*W : (p+1)*H*W]
		for oy := 0; oy < OH; oy++ {
			for ox := 0; ox < OW; ox++ {
				y0, y1, x0, x1 := a.window(oy, ox)
				var sum float32
				for iy := y0; iy < y1; iy++ {
					for _, v := range xp[iy*W+x0 : iy*W+x1] {
						sum += v
					}
				}
				yd[p*OH*OW+oy*OW+ox] = sum / a.div[oy*OW+ox]
			}
		}
	}
}

func (a *AvgPool2D) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	n := batch(dy)
	dx := a.dx.zeroed(n, a.in)
	if a.io.bwd == nil {
		a.io.bwd = a.backwardPlanes
	}
	a.io.run(s, n*a.in[0], f32(dy), f32(dx), a.io.bwd)
	return dx
}

func (a *AvgPool2D) backwardPlanes(lo, hi int) {
	dyd, dxd := a.io.in, a.io.out
	H, W, OH, OW := a.in[1], a.in[2], a.os[1], a.os[2]
	for p := lo; p < hi; p++ {
		dxp := dxd[p*H*W : (p+1)*H*W]
		for oy := 0; oy < OH; oy++ {
			for ox := 0; ox < OW; ox++ {
				y0, y1, x0, x1 := a.window(oy, ox)
				g := dyd[p*OH*OW+oy*OW+ox] / a.div[oy*OW+ox]
				for iy := y0; iy < y1; iy++ {
					row := dxp[iy*W+x0 : iy*W+x1]
					for j := range row {
						row[j] += g
					}
				}
			}
		}
	}
}

// AdaptivePool2D is nn.AdaptiveAvgPool2d / AdaptiveMaxPool2d: output OH×OW,
// window i covering [⌊i·H/OH⌋, ⌈(i+1)·H/OH⌉). OH=OW=1 is global pooling.
type AdaptivePool2D struct {
	leaf
	noParams
	OH, OW  int
	Max     bool
	in      Shape
	out, dx buf
	argmax  []int32
	io      planeIO
}

// NewAdaptiveAvgPool2D pools to oh×ow by averaging.
func NewAdaptiveAvgPool2D(oh, ow int) *AdaptivePool2D { return &AdaptivePool2D{OH: oh, OW: ow} }

// NewAdaptiveMaxPool2D pools to oh×ow by maximum.
func NewAdaptiveMaxPool2D(oh, ow int) *AdaptivePool2D {
	return &AdaptivePool2D{OH: oh, OW: ow, Max: true}
}

func (a *AdaptivePool2D) Kind() string {
	if a.Max {
		return "AdaptiveMaxPool2D"
	}
	return "AdaptiveAvgPool2D"
}

func (a *AdaptivePool2D) Build(b *Builder, in Shape) (Shape, error) {
	if len(in) != 3 {
		return nil, fmt.Errorf("%s: input shape %v is not [C, H, W]", a.Kind(), in)
	}
	if a.OH <= 0 || a.OW <= 0 {
		return nil, fmt.Errorf("%s: output size %dx%d must be positive", a.Kind(), a.OH, a.OW)
	}
	a.in = in
	return Shape{in[0], a.OH, a.OW}, nil
}

func adaptiveRange(i, in, out int) (int, int) {
	return i * in / out, ((i+1)*in + out - 1) / out
}

func (a *AdaptivePool2D) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	n := batch(x)
	y := a.out.get(n, Shape{a.in[0], a.OH, a.OW})
	yd := f32(y)
	if a.Max {
		if cap(a.argmax) < len(yd) {
			a.argmax = make([]int32, len(yd))
		}
		a.argmax = a.argmax[:len(yd)]
	}
	if a.io.fwd == nil {
		a.io.fwd = a.forwardPlanes
	}
	a.io.run(s, n*a.in[0], f32(x), yd, a.io.fwd)
	return y
}

func (a *AdaptivePool2D) forwardPlanes(lo, hi int) {
	xd, yd := a.io.in, a.io.out
	H, W := a.in[1], a.in[2]
	for p := lo; p < hi; p++ {
		xp := xd[p*H*W : (p+1)*H*W]
		for oy := 0; oy < a.OH; oy++ {
			y0, y1 := adaptiveRange(oy, H, a.OH)
			for ox := 0; ox < a.OW; ox++ {
				x0, x1 := adaptiveRange(ox, W, a.OW)
				o := p*a.OH*a.OW + oy*a.OW + ox
				if a.Max {
					best, arg := float32(math.Inf(-1)), int32(-1)
					for iy := y0; iy < y1; iy++ {
						for ix := x0; ix < x1; ix++ {
							if v := xp[iy*W+ix]; v > best || arg < 0 || v != v {
								best, arg = v, int32(iy*W+ix)
							}
						}
					}
					yd[o], a.argmax[o] = best, arg
					continue
				}
				var sum float32
				for iy := y0; iy < y1; iy++ {
					for _, v := range xp[iy*W+x0 : iy*W+x1] {
						sum += v
					}
				}
				yd[o] = sum / float32((y1-y0)*(x1-x0))
			}
		}
	}
}

func (a *AdaptivePool2D) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	n := batch(dy)
	dx := a.dx.zeroed(n, a.in)
	if a.io.bwd == nil {
		a.io.bwd = a.backwardPlanes
	}
	a.io.run(s, n*a.in[0], f32(dy), f32(dx), a.io.bwd)
	return dx
}

func (a *AdaptivePool2D) backwardPlanes(lo, hi int) {
	dyd, dxd := a.io.in, a.io.out
	H, W := a.in[1], a.in[2]
	for p := lo; p < hi; p++ {
		dxp := dxd[p*H*W : (p+1)*H*W]
		for oy := 0; oy < a.OH; oy++ {
			y0, y1 := adaptiveRange(oy, H, a.OH)
			for ox := 0; ox < a.OW; ox++ {
				x0, x1 := adaptiveRange(ox, W, a.OW)
				o := p*a.OH*a.OW + oy*a.OW + ox
				if a.Max {
					if arg := a.argmax[o]; arg >= 0 {
						dxp[arg] += dyd[o]
					}
					continue
				}
				g := dyd[o] / float32((y1-y0)*(x1-x0))
				for iy := y0; iy < y1; iy++ {
					row := dxp[iy*W+x0 : iy*W+x1]
					for j := range row {
						row[j] += g
					}
				}
			}
		}
	}
}

// planeIO is a pooling layer's per-call input and output slices and its
// loops over planes, bound once (a method value) so that handing them to
// the pool allocates nothing per call.
type planeIO struct {
	in, out  []float32
	fwd, bwd func(lo, hi int)
}

// run points the loops at in and out and runs loop (fwd or bwd) over planes.
func (io *planeIO) run(s *State, planes int, in, out []float32, loop func(lo, hi int)) {
	io.in, io.out = in, out
	s.Pool.ParallelFor(planes, loop)
}
