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
	taps         taps // the kernel window that ever reads the input, when smaller than the kernel
	out, dx      buf
	x            *tensor.Dense
	chunkLimit   int      // floats per batched im2col matrix; 0 = chunkFloats
	params       []*Param // Weight (and Bias), built once: Params is on the backward path
	unf          unfold
	reg          regroup
	bias         struct {
		yd         []float32
		outSz, ohw int
		run        func(lo, hi int)
	}
}

// addBias adds the bias to samples [lo, hi) of the output.
func (c *Conv2D) addBias(lo, hi int) {
	for i := lo; i < hi; i++ {
		yi := c.bias.yd[i*c.bias.outSz:]
		for o, b := range c.Bias.Data {
			row := yi[o*c.bias.ohw : (o+1)*c.bias.ohw]
			for j := range row {
				row[j] += b
			}
		}
	}
}

// regroup moves one chunk's group of channels between NCHW (sample-major)
// and the batched GEMM layout [og, cn·OHW] (channel-major), one sample per
// unit of work. Its loop is bound once, so running it allocates nothing.
type regroup struct {
	nchw, mat      []float32 // nchw at the chunk's first sample and the group's first channel
	outSz, og, ohw int
	ld             int // row stride of mat (≥ cn·OHW)
	toNCHW         bool
	run            func(lo, hi int)
}

func (r *regroup) do(s *State, cn int, nchw, mat []float32, outSz, og, ohw, ld int, toNCHW bool) {
	r.nchw, r.mat, r.outSz, r.og, r.ohw, r.ld, r.toNCHW = nchw, mat, outSz, og, ohw, ld, toNCHW
	if r.run == nil {
		r.run = r.samples
	}
	s.Pool.ParallelFor(cn, r.run)
}

func (r *regroup) samples(lo, hi int) {
	for i := lo; i < hi; i++ {
		yi := r.nchw[i*r.outSz:]
		for o := 0; o < r.og; o++ {
			a, m := yi[o*r.ohw:(o+1)*r.ohw], r.mat[o*r.ld+i*r.ohw:][:r.ohw]
			if r.toNCHW {
				copy(a, m)
			} else {
				copy(m, a)
			}
		}
	}
}

// unfold runs im2col, or col2im, for the samples of one chunk and group over
// the pool, split by (sample, channel). Channels are independent in both
// directions, so a chunk of one sample still uses every thread. Its loop is
// bound once, so running it allocates nothing.
type unfold struct {
	g        kernels.ConvGeom
	tab      *kernels.UnfoldTable // small planes: the table-driven loops
	img, col []float32            // the chunk's first sample (group offset applied); its first column
	inSz     int                  // floats per sample in img
	ohw, ld  int                  // columns per sample; row stride of col
	fold     bool                 // col2im into img (each plane cleared first) instead of im2col
	run      func(lo, hi int)
}

func (u *unfold) do(s *State, g kernels.ConvGeom, samples int, img, col []float32, inSz, ld int, fold bool) {
	u.g, u.img, u.col, u.inSz, u.ohw, u.ld, u.fold = g, img, col, inSz, g.OH*g.OW, ld, fold
	if u.run == nil {
		u.run = u.units
	}
	s.Pool.ParallelFor(samples*g.C, u.run)
}

func (u *unfold) units(lo, hi int) {
	g := u.g
	one := g
	one.C = 1
	plane, rows := g.H*g.W, g.KH*g.KW
	if u.tab != nil {
		// A sample's channels in [lo, hi) at once: their planes follow each
		// other in img, and their rows in col.
		for p := lo; p < hi; {
			i, c := p/g.C, p%g.C
			k := min(hi-p, g.C-c)
			img := u.img[i*u.inSz+c*plane:][:k*plane]
			col := u.col[c*rows*u.ld+i*u.ohw:]
			if u.fold {
				clear(img)
				u.tab.Col2imPlanes(col, img, u.ld, k)
			} else {
				u.tab.Im2colPlanes(img, col, u.ld, k)
			}
			p += k
		}
		return
	}
	for p := lo; p < hi; p++ {
		i, c := p/g.C, p%g.C
		img := u.img[i*u.inSz+c*plane:][:plane]
		col := u.col[c*rows*u.ld+i*u.ohw:]
		if u.fold {
			clear(img)
			kernels.Col2imLd(one, col, img, u.ld)
		} else {
			kernels.Im2colLd(one, img, col, u.ld)
		}
	}
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
	c.params = []*Param{c.Weight}
	if cfg.Bias {
		c.Bias = newParam("bias", Weight, true, cfg.Out)
		c.params = append(c.params, c.Bias)
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

func (c *Conv2D) Params() []*Param { return c.params }

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
	case cfg.PadH < 0 || cfg.PadW < 0 || cfg.StrideH <= 0 || cfg.StrideW <= 0 || cfg.DilH <= 0 || cfg.DilW <= 0:
		return nil, fmt.Errorf("Conv2D: invalid stride %dx%d, padding %dx%d or dilation %dx%d",
			cfg.StrideH, cfg.StrideW, cfg.PadH, cfg.PadW, cfg.DilH, cfg.DilW)
	}
	g := kernels.NewConvGeom(cfg.In/cfg.Groups, in[1], in[2], cfg.KH, cfg.KW, cfg.StrideH, cfg.StrideW, cfg.PadH, cfg.PadW, cfg.DilH, cfg.DilW)
	// The dilated kernel must fit the padded input; OutSize truncates a
	// negative quotient towards zero, so check the extent itself.
	tooSmall := in[1]+2*cfg.PadH < cfg.DilH*(cfg.KH-1)+1 || in[2]+2*cfg.PadW < cfg.DilW*(cfg.KW-1)+1
	if tooSmall || g.OH <= 0 || g.OW <= 0 {
		return nil, fmt.Errorf("Conv2D: input shape %v is too small for kernel %dx%d (dilation %dx%d, padding %dx%d)",
			in, cfg.KH, cfg.KW, cfg.DilH, cfg.DilW, cfg.PadH, cfg.PadW)
	}
	c.taps = taps{}
	if t, rg, ok := liveTaps(g); ok {
		c.taps, g = t, rg
		c.taps.w = make([]float32, cfg.Out*g.ColRows())
		c.taps.dw = make([]float32, cfg.Out*g.ColRows())
	}
	c.geom = g
	c.unf.tab, _ = kernels.NewUnfoldTable(g)
	c.direct = g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.PH == 0 && g.PW == 0
	return Shape{cfg.Out, g.OH, g.OW}, nil
}

// taps is the part [ki0, ki1)×[kj0, kj1) of a kernel whose taps read the
// input for some output; the taps outside it only ever see zero padding
// (a 3×3 padded convolution on a 1×1 map, ResNet's last stage at 32×32
// input, uses its centre tap only). The convolution then runs as one with
// that smaller kernel, skipping the GEMM work on padding as oneDNN does:
// w holds the live weights, gathered each forward, dw their gradient,
// added into the full one after backward.
type taps struct {
	ki0, ki1, kj0, kj1 int
	w, dw              []float32
	grad               bool             // moveLive's direction: add dw into the gradient
	run                func(lo, hi int) // moveLive, bound once
}

// liveTaps finds the live window of g's kernel and the geometry of the
// convolution with only those taps; ok is false when every tap is live or
// the window cannot be expressed as a plain convolution.
func liveTaps(g kernels.ConvGeom) (t taps, rg kernels.ConvGeom, ok bool) {
	live := func(k, out, stride, dil, pad, size int) bool {
		for o := 0; o < out; o++ {
			if i := o*stride + k*dil - pad; i >= 0 && i < size {
				return true
			}
		}
		return false
	}
	span := func(kn, out, stride, dil, pad, size int) (lo, hi int, ok bool) {
		lo, hi = -1, -1
		for k := 0; k < kn; k++ {
			if live(k, out, stride, dil, pad, size) {
				if lo < 0 {
					lo = k
				} else if hi != k {
					return 0, 0, false // a dead tap between live ones
				}
				hi = k + 1
			}
		}
		return lo, hi, lo >= 0
	}
	ki0, ki1, okH := span(g.KH, g.OH, g.SH, g.DH, g.PH, g.H)
	kj0, kj1, okW := span(g.KW, g.OW, g.SW, g.DW, g.PW, g.W)
	if !okH || !okW || (ki1-ki0 == g.KH && kj1-kj0 == g.KW) {
		return taps{}, g, false
	}
	ph, pw := g.PH-ki0*g.DH, g.PW-kj0*g.DW
	rg = kernels.NewConvGeom(g.C, g.H, g.W, ki1-ki0, kj1-kj0, g.SH, g.SW, ph, pw, g.DH, g.DW)
	if ph < 0 || pw < 0 || rg.OH != g.OH || rg.OW != g.OW {
		return taps{}, g, false
	}
	return taps{ki0: ki0, ki1: ki1, kj0: kj0, kj1: kj1}, rg, true
}

// liveWeights is the weight matrix the GEMMs use: the full one, or the
// live taps gathered from it over the pool (a strided, memory-bound pass:
// 9.4 MB read per 512×512 3×3 layer for its centre tap).
func (c *Conv2D) liveWeights(s *State) []float32 {
	if c.taps.w == nil {
		return c.Weight.Data
	}
	c.taps.grad = false
	c.runLive(s)
	return c.taps.w
}

// addLiveGrad adds the live taps' gradient into the full weight gradient.
func (c *Conv2D) addLiveGrad(s *State) {
	c.taps.grad = true
	c.runLive(s)
}

func (c *Conv2D) runLive(s *State) {
	if c.taps.run == nil {
		c.taps.run = c.moveLive
	}
	s.Pool.ParallelFor(c.cfg.Out*c.geom.C, c.taps.run)
}

// moveLive does liveWeights' gather (or addLiveGrad's scatter-add) for the
// (output, input) channel pairs [lo, hi), element by element: the live
// window is often one tap, where a copy call per tap cost more than this.
func (c *Conv2D) moveLive(lo, hi int) {
	t := &c.taps
	kk, kw := c.cfg.KH*c.cfg.KW, c.cfg.KW
	live := (t.ki1 - t.ki0) * (t.kj1 - t.kj0)
	w, g := c.Weight.Data, c.Weight.Grad
	for oc := lo; oc < hi; oc++ {
		n := oc * live
		for ki := t.ki0; ki < t.ki1; ki++ {
			base := oc*kk + ki*kw
			for kj := t.kj0; kj < t.kj1; kj++ {
				if t.grad {
					g[base+kj] += t.dw[n]
				} else {
					t.w[n] = w[base+kj]
				}
				n++
			}
		}
	}
}

// chunkFloats bounds the im2col matrix of one batched GEMM (16 MiB): enough
// columns for efficient GEMM shapes on small feature maps, bounded memory
// on large ones.
const chunkFloats = 4 << 20

// perSampleOHW: feature maps of at least this many positions (28×28) get
// one GEMM per sample, written straight into the NCHW output: wide enough
// for an efficient GEMM, and it saves gathering dy and scattering y through
// a batched matrix. Measured on ResNet-50 224 b4 (CPU time per step, on a
// shared machine): 784 −5.5%, 196 −3%, 3136 −3% against batching always.
const perSampleOHW = 784

// matLd is the row stride of a batched GEMM operand with cols columns: one
// cache line more when cols is a multiple of 512 floats (2 KiB), whose rows
// would otherwise map to the same few cache sets; the GEMM then reads it in
// place instead of packing it (planGemm's directB). ResNet-18 at 32×32 b64
// has 4096 and 1024 columns in its first two stages.
func matLd(cols int) int {
	if cols >= 512 && cols%512 == 0 {
		return cols + 16
	}
	return cols
}

// chunk returns how many samples share one GEMM.
func (c *Conv2D) chunk(n int) int {
	limit := chunkFloats
	if c.chunkLimit > 0 {
		limit = c.chunkLimit
	} else if c.geom.OH*c.geom.OW >= perSampleOHW {
		return 1
	}
	per := c.geom.ColRows() * c.geom.ColCols()
	return max(1, min(n, limit/max(per, 1)))
}

// Forward: x [N, In, H, W] -> y [N, Out, OH, OW]. Samples are batched into
// one GEMM per group and chunk: Y'[og, cn·OHW] = W_g[og, kg] · col[kg, cn·OHW],
// then scattered to NCHW.
func (c *Conv2D) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	c.x = x
	n := batch(x)
	g, cfg := c.geom, c.cfg
	y := c.out.get(n, Shape{cfg.Out, g.OH, g.OW})
	xd, yd, w := f32(x), f32(y), c.liveWeights(s)
	inSz, outSz, ohw := cfg.In*g.H*g.W, cfg.Out*g.OH*g.OW, g.OH*g.OW
	og, kg, gsz := cfg.Out/cfg.Groups, g.ColRows(), g.C*g.H*g.W
	nc := c.chunk(n)
	for c0 := 0; c0 < n; c0 += nc {
		cn := min(nc, n-c0)
		cols := cn * ohw
		ld := matLd(cols)
		for gi := 0; gi < cfg.Groups; gi++ {
			wg := w[gi*og*kg:]
			if cn == 1 { // the GEMM writes y's block directly
				xg, yg := xd[c0*inSz+gi*gsz:], yd[c0*outSz+gi*og*ohw:]
				src := xg
				if !c.direct {
					src = s.scratch(scratchCol, kg*ohw)
					c.unf.do(s, g, 1, xg, src, inSz, ohw, false)
				}
				s.Pool.Sgemm(false, false, og, ohw, kg, 1, wg, kg, src, ohw, 0, yg, ohw)
				continue
			}
			col := s.scratch(scratchCol, kg*ld)
			c.unf.do(s, g, cn, xd[c0*inSz+gi*gsz:], col, inSz, ld, false)
			tmp := s.scratch(scratchGemm, og*ld)
			s.Pool.Sgemm(false, false, og, cols, kg, 1, wg, kg, col, ld, 0, tmp, ld)
			c.reg.do(s, cn, yd[c0*outSz+gi*og*ohw:], tmp, outSz, og, ohw, ld, true)
		}
	}
	if c.Bias != nil {
		c.bias.yd, c.bias.outSz, c.bias.ohw = yd, outSz, ohw
		if c.bias.run == nil {
			c.bias.run = c.addBias
		}
		s.Pool.ParallelFor(n, c.bias.run)
	}
	return y
}

// Backward: dy [N, Out, OH, OW] -> dx [N, In, H, W], batched as Forward:
// dW_g += dY'·colᵀ, db += Σ dy, dcol = W_gᵀ·dY' folded back by col2im.
// im2col is recomputed rather than kept from forward (memory over compute).
func (c *Conv2D) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	n := batch(dy)
	g, cfg := c.geom, c.cfg
	xd, dyd, w := f32(c.x), f32(dy), c.Weight.Data
	dw := c.Weight.Grad
	if c.taps.w != nil {
		w, dw = c.taps.w, c.taps.dw // gathered by Forward
		clear(dw)
	}
	inSz, outSz, ohw := cfg.In*g.H*g.W, cfg.Out*g.OH*g.OW, g.OH*g.OW
	og, kg, gsz := cfg.Out/cfg.Groups, g.ColRows(), g.C*g.H*g.W
	wantW := c.Weight.Trainable
	if c.Bias != nil && c.Bias.Trainable {
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
	var dx *tensor.Dense
	var dxd []float32
	if needDx {
		dx = c.dx.get(n, Shape{cfg.In, g.H, g.W})
		dxd = f32(dx)
	}
	if !wantW && !needDx {
		s.gradDone(c.Bias)
		return nil
	}
	nc := c.chunk(n)
	for c0 := 0; c0 < n; c0 += nc {
		cn := min(nc, n-c0)
		cols := cn * ohw
		for gi := 0; gi < cfg.Groups; gi++ {
			wg := w[gi*og*kg:]
			// dY' [og, cols]: the group's rows of dy for the chunk's samples.
			dyg := dyd[c0*outSz+gi*og*ohw:]
			// One sample keeps its plain strides, as in Forward (a direct 1×1
			// convolution reads x itself as its column matrix).
			ld, cld := ohw, cols
			if cn > 1 {
				cld = matLd(cols)
				tmp := s.scratch(scratchGemm, og*cld)
				c.reg.do(s, cn, dyd[c0*outSz+gi*og*ohw:], tmp, outSz, og, ohw, cld, false)
				dyg, ld = tmp, cld
			}
			if wantW {
				var col []float32
				if c.direct && cn == 1 {
					col = xd[c0*inSz+gi*gsz:]
				} else {
					col = s.scratch(scratchCol, kg*cld)
					c.unf.do(s, g, cn, xd[c0*inSz+gi*gsz:], col, inSz, cld, false)
				}
				s.Pool.Sgemm(false, true, og, kg, cols, 1, dyg, ld, col, cld, 1, dw[gi*og*kg:], kg)
			}
			if !needDx {
				continue
			}
			if c.direct && cn == 1 {
				s.Pool.Sgemm(true, false, kg, ohw, og, 1, wg, kg, dyg, ld, 0, dxd[c0*inSz+gi*gsz:], ohw)
				continue
			}
			dcol := s.scratch(scratchCol, kg*cld)
			s.Pool.Sgemm(true, false, kg, cols, og, 1, wg, kg, dyg, ld, 0, dcol, cld)
			c.unf.do(s, g, cn, dxd[c0*inSz+gi*gsz:], dcol, inSz, cld, true)
		}
	}
	if wantW && c.taps.w != nil {
		c.addLiveGrad(s)
	}
	s.gradDone(c.Weight, c.Bias)
	return dx
}

func uniform(rng *rand.Rand, d []float32, bound float64) {
	for i := range d {
		d[i] = float32((rng.Float64()*2 - 1) * bound)
	}
}
