package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// ConvConfig configures a Conv2D. Zero values mean: stride 1, padding 0,
// dilation 1, groups 1.
type ConvConfig struct {
	In, Out          int
	KH, KW           int
	StrideH, StrideW int
	PadH, PadW       int
	DilH, DilW       int
	Groups           int
	Bias             bool
}

// Conv2D is PyTorch's nn.Conv2d: weight [Out, In/Groups, KH, KW], bias [Out].
//
// Forward: x [N, In, H, W] -> y [N, Out, OH, OW], per sample and group
// y_g = W_g · im2col(x)_g (+ bias); 1×1 stride-1 unpadded convolutions use x
// as the column matrix directly. Backward recomputes im2col rather than
// caching it (memory over a little compute), and keeps x.
type Conv2D struct {
	leaf
	cfg          ConvConfig
	Weight, Bias *Param
	geom         kernels.ConvGeom
	direct       bool // 1×1, stride 1, no padding: no im2col needed
	out, dx      buf
	x            *tensor.Dense
}

var _ Module = (*Conv2D)(nil)

// NewConv2D makes a convolution; a square kernel k, stride s, padding p is
// the common case: NewConv2D(ConvConfig{In: 3, Out: 64, KH: 3, KW: 3, PadH: 1, PadW: 1, Bias: true}).
func NewConv2D(cfg ConvConfig) *Conv2D {
	if cfg.StrideH == 0 {
		cfg.StrideH = 1
	}
	if cfg.StrideW == 0 {
		cfg.StrideW = 1
	}
	if cfg.DilH == 0 {
		cfg.DilH = 1
	}
	if cfg.DilW == 0 {
		cfg.DilW = 1
	}
	if cfg.Groups == 0 {
		cfg.Groups = 1
	}
	c := &Conv2D{cfg: cfg}
	g := max(cfg.Groups, 1)
	c.Weight = newParam("weight", Weight, false, cfg.Out, cfg.In/g, cfg.KH, cfg.KW)
	if cfg.Bias {
		c.Bias = newParam("bias", Weight, true, cfg.Out)
	}
	return c
}

// Conv is shorthand for a square kernel: Conv(in, out, k, stride, pad, bias).
func Conv(in, out, k, stride, pad int, bias bool) *Conv2D {
	return NewConv2D(ConvConfig{In: in, Out: out, KH: k, KW: k, StrideH: stride, StrideW: stride, PadH: pad, PadW: pad, Bias: bias})
}

// Config returns the layer's configuration.
func (c *Conv2D) Config() ConvConfig { return c.cfg }

func (c *Conv2D) Kind() string { return "Conv2D" }

func (c *Conv2D) Params() []*Param {
	if c.Bias != nil {
		return []*Param{c.Weight, c.Bias}
	}
	return []*Param{c.Weight}
}

// ResetParameters is PyTorch's default: kaiming_uniform(a=√5), i.e.
// U(±1/√fan_in) for weight and bias.
func (c *Conv2D) ResetParameters(rng *rand.Rand) {
	fanIn := c.cfg.In / c.cfg.Groups * c.cfg.KH * c.cfg.KW
	bound := 1 / math.Sqrt(float64(fanIn))
	uniform(rng, c.Weight.Data, bound)
	if c.Bias != nil {
		uniform(rng, c.Bias.Data, bound)
	}
}

func (c *Conv2D) Build(b *Builder, in Shape) (Shape, error) {
	cfg := c.cfg
	switch {
	case len(in) != 3:
		return nil, fmt.Errorf("Conv2D: input shape %v is not [C, H, W]", in)
	case cfg.In <= 0 || cfg.Out <= 0 || cfg.KH <= 0 || cfg.KW <= 0:
		return nil, fmt.Errorf("Conv2D: channels %d->%d and kernel %dx%d must be positive", cfg.In, cfg.Out, cfg.KH, cfg.KW)
	case cfg.In%cfg.Groups != 0 || cfg.Out%cfg.Groups != 0:
		return nil, fmt.Errorf("Conv2D: channels %d->%d not divisible by groups %d", cfg.In, cfg.Out, cfg.Groups)
	case in[0] != cfg.In:
		return nil, fmt.Errorf("Conv2D: input shape %v has %d channels, layer expects %d (shape [%d, H, W])", in, in[0], cfg.In, cfg.In)
	case cfg.PadH < 0 || cfg.PadW < 0 || cfg.StrideH <= 0 || cfg.StrideW <= 0:
		return nil, fmt.Errorf("Conv2D: invalid stride %dx%d or padding %dx%d", cfg.StrideH, cfg.StrideW, cfg.PadH, cfg.PadW)
	}
	g := kernels.NewConvGeom(cfg.In/cfg.Groups, in[1], in[2], cfg.KH, cfg.KW, cfg.StrideH, cfg.StrideW, cfg.PadH, cfg.PadW, cfg.DilH, cfg.DilW)
	if g.OH <= 0 || g.OW <= 0 {
		return nil, fmt.Errorf("Conv2D: input shape %v is too small for kernel %dx%d (dilation %d, padding %d): output would be %dx%d",
			in, cfg.KH, cfg.KW, cfg.DilH, cfg.PadH, g.OH, g.OW)
	}
	c.geom = g
	c.direct = cfg.KH == 1 && cfg.KW == 1 && cfg.StrideH == 1 && cfg.StrideW == 1 && cfg.PadH == 0 && cfg.PadW == 0
	return Shape{cfg.Out, g.OH, g.OW}, nil
}

// Forward: x [N, In, H, W] -> y [N, Out, OH, OW].
func (c *Conv2D) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	c.x = x
	n := batch(x)
	g, cfg := c.geom, c.cfg
	y := c.out.get(n, Shape{cfg.Out, g.OH, g.OW})
	xd, yd, w := f32(x), f32(y), c.Weight.Data
	inSz, outSz, ohw := cfg.In*g.H*g.W, cfg.Out*g.OH*g.OW, g.OH*g.OW
	og, kg := cfg.Out/cfg.Groups, g.ColRows() // per group: out channels, column rows
	// Parallelise over samples when the batch covers the pool; otherwise the
	// GEMM itself is parallel.
	threads := s.Pool.Threads()
	perSample := n >= threads && threads > 1
	var inner *kernels.Pool
	if !perSample {
		inner = s.Pool
	}
	cols := s.scratch(threads, kg*ohw)
	run := func(tid, lo, hi int) {
		col := cols[tid]
		for i := lo; i < hi; i++ {
			xi, yi := xd[i*inSz:(i+1)*inSz], yd[i*outSz:(i+1)*outSz]
			for gi := 0; gi < cfg.Groups; gi++ {
				xg := xi[gi*g.C*g.H*g.W:]
				src := col
				if c.direct {
					src = xg[:kg*ohw]
				} else {
					kernels.Im2col(g, xg, col)
				}
				inner.Sgemm(false, false, og, ohw, kg, 1, w[gi*og*kg:], kg, src, ohw, 0, yi[gi*og*ohw:], ohw)
			}
			if c.Bias != nil {
				for o, b := range c.Bias.Data {
					row := yi[o*ohw : (o+1)*ohw]
					for j := range row {
						row[j] += b
					}
				}
			}
		}
	}
	if perSample {
		parallelChunks(s.Pool, n, run)
	} else {
		run(0, 0, n)
	}
	return y
}

// Backward: dy [N, Out, OH, OW] -> dx [N, In, H, W];
// dW_g += dy_g · im2col(x)_gᵀ, db += Σ dy, dcol = W_gᵀ · dy_g folded by col2im.
func (c *Conv2D) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	n := batch(dy)
	g, cfg := c.geom, c.cfg
	xd, dyd, w := f32(c.x), f32(dy), c.Weight.Data
	inSz, outSz, ohw := cfg.In*g.H*g.W, cfg.Out*g.OH*g.OW, g.OH*g.OW
	og, kg := cfg.Out/cfg.Groups, g.ColRows()
	wantW := c.Weight.Trainable
	wantB := c.Bias != nil && c.Bias.Trainable
	if wantB {
		db := c.Bias.Grad
		for i := 0; i < n; i++ {
			dyi := dyd[i*outSz:]
			for o := range db {
				var sum float32
				for _, v := range dyi[o*ohw : (o+1)*ohw] {
					sum += v
				}
				db[o] += sum
			}
		}
	}
	if wantW {
		// Weight gradient: a reduction over samples, so loop samples and let
		// the GEMM use the pool.
		col := s.scratch(1, kg*ohw)[0]
		for i := 0; i < n; i++ {
			xi, dyi := xd[i*inSz:(i+1)*inSz], dyd[i*outSz:(i+1)*outSz]
			for gi := 0; gi < cfg.Groups; gi++ {
				xg := xi[gi*g.C*g.H*g.W:]
				src := col
				if c.direct {
					src = xg[:kg*ohw]
				} else {
					kernels.Im2col(g, xg, col)
				}
				s.Pool.Sgemm(false, true, og, kg, ohw, 1, dyi[gi*og*ohw:], ohw, src, ohw, 1, c.Weight.Grad[gi*og*kg:], kg)
			}
		}
	}
	s.gradDone(c.Weight, c.Bias)
	if !needDx {
		return nil
	}
	dx := c.dx.get(n, Shape{cfg.In, g.H, g.W})
	dxd := f32(dx)
	threads := s.Pool.Threads()
	perSample := n >= threads && threads > 1
	var inner *kernels.Pool
	if !perSample {
		inner = s.Pool
	}
	dcols := s.scratch(threads, kg*ohw)
	run := func(tid, lo, hi int) {
		dcol := dcols[tid]
		for i := lo; i < hi; i++ {
			dxi, dyi := dxd[i*inSz:(i+1)*inSz], dyd[i*outSz:(i+1)*outSz]
			for gi := 0; gi < cfg.Groups; gi++ {
				dxg := dxi[gi*g.C*g.H*g.W : (gi+1)*g.C*g.H*g.W]
				if c.direct {
					inner.Sgemm(true, false, kg, ohw, og, 1, w[gi*og*kg:], kg, dyi[gi*og*ohw:], ohw, 0, dxg, ohw)
					continue
				}
				inner.Sgemm(true, false, kg, ohw, og, 1, w[gi*og*kg:], kg, dyi[gi*og*ohw:], ohw, 0, dcol, ohw)
				clear(dxg)
				kernels.Col2im(g, dcol, dxg)
			}
		}
	}
	if perSample {
		parallelChunks(s.Pool, n, run)
	} else {
		run(0, 0, n)
	}
	return dx
}

// parallelChunks splits [0,n) over the pool, passing each chunk its thread id.
func parallelChunks(p *kernels.Pool, n int, f func(tid, lo, hi int)) {
	t := min(p.Threads(), n)
	p.ParallelFor(t, func(lo, hi int) {
		for tid := lo; tid < hi; tid++ {
			f(tid, tid*n/t, (tid+1)*n/t)
		}
	})
}

func uniform(rng *rand.Rand, d []float32, bound float64) {
	for i := range d {
		d[i] = float32((rng.Float64()*2 - 1) * bound)
	}
}
