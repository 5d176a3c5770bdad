package nn

import (
	"fmt"
	"strconv"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Sequential runs its children in order, like nn.Sequential. Children are
// named "0", "1", ... unless built with NewNamedSequential.
type Sequential struct {
	noParams
	children []Child
}

var _ Module = (*Sequential)(nil)

// NewSequential names children by index (features.0, features.1, ...).
func NewSequential(mods ...Module) *Sequential {
	s := &Sequential{}
	for _, m := range mods {
		s.Add(m)
	}
	return s
}

// NewNamedSequential keeps the given names (conv1, bn1, layer1, ...).
func NewNamedSequential(children ...Child) *Sequential {
	return &Sequential{children: children}
}

// Add appends m under the next index name.
func (q *Sequential) Add(m Module) *Sequential {
	q.children = append(q.children, Child{Name: strconv.Itoa(len(q.children)), Module: m})
	return q
}

// AddNamed appends m under name.
func (q *Sequential) AddNamed(name string, m Module) *Sequential {
	q.children = append(q.children, Child{Name: name, Module: m})
	return q
}

func (q *Sequential) Children() []Child { return q.children }
func (q *Sequential) Kind() string      { return "Sequential" }
func (q *Sequential) Len() int          { return len(q.children) }

func (q *Sequential) Build(b *Builder, in Shape) (Shape, error) {
	cur := in
	for _, c := range q.children {
		out, err := b.Child(c.Name, c.Module, cur)
		if err != nil {
			return nil, err
		}
		cur = out
	}
	q.planInPlace()
	return cur, nil
}

// planInPlace lets a ReLU overwrite its input when this Sequential alone
// can prove it safe: the input is the output of the BatchNorm2D just before
// it (consumed by nothing else; BatchNorm2D's backward does not read its
// output), and the gradient it receives is the input gradient of the
// Conv2D just after it (that conv's own buffer, read by nothing else). The
// first and last children are never changed: their input or gradient comes
// from outside, where others may read it too. Likewise a BatchNorm2D right
// after a Conv2D normalises that conv's output in place in inference.
func (q *Sequential) planInPlace() {
	// A module built again in another place keeps no plan from before.
	for _, c := range q.children {
		switch m := c.Module.(type) {
		case *ReLU:
			m.inPlace, m.gradInPlace, m.fused = false, false, false
		case *BatchNorm2D:
			m.reluFwd, m.reluBwd, m.afterConv = false, false, false
		}
	}
	for i := 1; i < len(q.children); i++ {
		if bn, ok := q.children[i].Module.(*BatchNorm2D); ok {
			_, bn.afterConv = q.children[i-1].Module.(*Conv2D)
		}
		r, ok := q.children[i].Module.(*ReLU)
		if !ok {
			continue
		}
		bn, afterBN := q.children[i-1].Module.(*BatchNorm2D)
		r.inPlace = afterBN
		r.gradInPlace = false
		if i+1 < len(q.children) {
			_, r.gradInPlace = q.children[i+1].Module.(*Conv2D)
		}
		// Both in place: the BatchNorm2D does the ReLU's work in its own
		// passes (BatchNorm2D.reluFwd), one pass over the activation and
		// one over its gradient fewer.
		r.fused = r.inPlace && r.gradInPlace
		if afterBN {
			bn.reluFwd, bn.reluBwd = r.fused, r.fused
		}
	}
}

func (q *Sequential) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	for _, c := range q.children {
		x = c.Module.Forward(s, x)
	}
	return x
}

// Backward runs children in reverse and stops below the lowest child that
// still has a trainable parameter (nothing beneath it needs a gradient).
func (q *Sequential) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	lowest := 0 // children below this index need no gradient at all
	if !needDx {
		lowest = len(q.children)
		for i, c := range q.children {
			if anyTrainable(c.Module) {
				lowest = i
				break
			}
		}
	}
	for i := len(q.children) - 1; i >= lowest; i-- {
		dy = q.children[i].Module.Backward(s, dy, needDx || i > lowest)
	}
	if needDx {
		return dy
	}
	return nil
}

// Concat feeds the same input to every branch and concatenates their
// outputs along channels (Inception, DenseNet).
type Concat struct {
	noParams
	children []Child
	outs     []Shape
	in, os   Shape
	out, dx  buf
	dys      []buf
	dysT     []*tensor.Dense
	blocks   blockCopy
}

// blockCopy copies, per sample, a block of sz floats between a tensor
// where each sample holds stride floats (the block at off) and one where
// it holds just the block: Concat's gather and scatter. Its loop over
// samples is bound once, so running it over the pool allocates nothing.
type blockCopy struct {
	wide, narrow    []float32
	stride, off, sz int
	toWide          bool
	run             func(lo, hi int)
}

func (b *blockCopy) do(s *State, n int, wide, narrow []float32, stride, off, sz int, toWide bool) {
	b.wide, b.narrow, b.stride, b.off, b.sz, b.toWide = wide, narrow, stride, off, sz, toWide
	if b.run == nil {
		b.run = b.samples
	}
	s.Pool.ParallelFor(n, b.run)
}

func (b *blockCopy) samples(lo, hi int) {
	for k := lo; k < hi; k++ {
		w, nw := b.wide[k*b.stride+b.off:][:b.sz], b.narrow[k*b.sz:(k+1)*b.sz]
		if b.toWide {
			copy(w, nw)
		} else {
			copy(nw, w)
		}
	}
}

var _ Module = (*Concat)(nil)

// NewConcat names branches as given (branch1, ...).
func NewConcat(branches ...Child) *Concat { return &Concat{children: branches} }

func (c *Concat) Children() []Child { return c.children }
func (c *Concat) Kind() string      { return "Concat" }

func (c *Concat) Build(b *Builder, in Shape) (Shape, error) {
	if len(c.children) == 0 {
		return nil, fmt.Errorf("Concat: no branches")
	}
	c.in, c.outs = in, nil
	ch := 0
	for _, br := range c.children {
		out, err := b.Child(br.Name, br.Module, in)
		if err != nil {
			return nil, err
		}
		if len(out) != 3 {
			return nil, fmt.Errorf("Concat: branch %s output shape %v is not [C, H, W]", br.Name, out)
		}
		if len(c.outs) > 0 && (out[1] != c.outs[0][1] || out[2] != c.outs[0][2]) {
			return nil, fmt.Errorf("Concat: branch %s output shape %v does not match branch %s output shape %v in H and W",
				br.Name, out, c.children[0].Name, c.outs[0])
		}
		c.outs = append(c.outs, out)
		ch += out[0]
	}
	c.os = Shape{ch, c.outs[0][1], c.outs[0][2]}
	c.dys = make([]buf, len(c.children))
	c.dysT = make([]*tensor.Dense, len(c.children))
	return c.os, nil
}

// Forward: every branch maps [N, C, H, W] -> [N, C_b, H', W']; y is [N, ΣC_b, H', W'].
func (c *Concat) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	n := batch(x)
	y := c.out.get(n, c.os)
	yd := f32(y)
	plane := c.os[1] * c.os[2]
	off := 0
	for i, b := range c.children {
		bd := f32(b.Module.Forward(s, x))
		sz := c.outs[i][0] * plane
		c.blocks.do(s, n, yd, bd, c.os[0]*plane, off, sz, true)
		off += sz
	}
	return y
}

func (c *Concat) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	n := batch(dy)
	dyd := f32(dy)
	plane := c.os[1] * c.os[2]
	var dx *tensor.Dense
	off := 0
	for i, b := range c.children {
		sz := c.outs[i][0] * plane
		if !needDx && !anyTrainable(b.Module) {
			off += sz
			continue
		}
		bdy := c.dys[i].get(n, c.outs[i])
		c.blocks.do(s, n, dyd, f32(bdy), c.os[0]*plane, off, sz, false)
		off += sz
		g := b.Module.Backward(s, bdy, needDx)
		if !needDx {
			continue
		}
		if dx == nil {
			dx = c.dx.get(n, c.in)
			copy(f32(dx), f32(g))
		} else {
			addInto(f32(dx), f32(g))
		}
	}
	return dx
}

// Residual computes After(Body(x) + Shortcut(x)); a nil Shortcut is the
// identity and a nil After is no activation (ResNet uses a ReLU).
type Residual struct {
	noParams
	Body            *Sequential
	Shortcut, After Module
	children        []Child
	os              Shape
	out, dx         buf
	sum             adder
}

var _ Module = (*Residual)(nil)

// NewResidual makes x ↦ body(x) + shortcut(x). Names are PyTorch-flat: the
// body's children appear directly under the block (layer1.0.conv1), and the
// shortcut under shortcutName (layer1.0.downsample).
func NewResidual(body *Sequential, shortcutName string, shortcut Module, after Module) *Residual {
	r := &Residual{Body: body, Shortcut: shortcut, After: after}
	r.children = append(r.children, body.Children()...)
	if shortcut != nil {
		r.children = append(r.children, Child{Name: shortcutName, Module: shortcut})
	}
	if after != nil {
		r.children = append(r.children, Child{Name: "after", Module: after})
	}
	return r
}

func (r *Residual) Children() []Child { return r.children }
func (r *Residual) Kind() string      { return "Residual" }

func (r *Residual) Build(b *Builder, in Shape) (Shape, error) {
	out, err := r.Body.Build(b, in) // body children are named directly under the block
	if err != nil {
		return nil, err
	}
	sc := in
	if r.Shortcut != nil {
		if sc, err = b.Child(r.children[len(r.Body.Children())].Name, r.Shortcut, in); err != nil {
			return nil, err
		}
	}
	if !out.Equal(sc) {
		return nil, fmt.Errorf("Residual: body output shape %v differs from shortcut output shape %v (add a projection shortcut)", out, sc)
	}
	r.os = out
	if r.After != nil {
		if out, err = b.Child("after", r.After, out); err != nil {
			return nil, err
		}
		// The sum is this block's own buffer and its backward does not read
		// it, so a ReLU after the join may overwrite it.
		if relu, ok := r.After.(*ReLU); ok {
			relu.inPlace = true
		}
	}
	return out, nil
}

func (r *Residual) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	b := r.Body.Forward(s, x)
	sc := x
	if r.Shortcut != nil {
		sc = r.Shortcut.Forward(s, x)
	}
	y := r.out.get(batch(x), r.os)
	r.sum.set(f32(y), f32(b), f32(sc))
	s.Pool.ForElems(len(r.sum.dst), r.sum.run)
	if r.After != nil {
		return r.After.Forward(s, y)
	}
	return y
}

func (r *Residual) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if r.After != nil {
		dy = r.After.Backward(s, dy, true)
	}
	// The shortcut runs first so that the body (which usually holds more
	// parameters) can release gradients last; order does not change results.
	var sdx *tensor.Dense
	if r.Shortcut != nil {
		if needDx || anyTrainable(r.Shortcut) {
			sdx = r.Shortcut.Backward(s, dy, needDx)
		}
	} else if needDx {
		sdx = dy
	}
	bdx := r.Body.Backward(s, dy, needDx)
	if !needDx {
		return nil
	}
	dx := r.dx.get(batch(dy), Shape(bdx.Shape()[1:]))
	r.sum.set(f32(dx), f32(bdx), f32(sdx))
	s.Pool.ForElems(len(r.sum.dst), r.sum.run)
	return dx
}

// adder is dst = a + b over a pool, its loop bound once (no allocation per
// call).
type adder struct {
	dst, a, b []float32
	run       func(lo, hi int)
}

func (d *adder) set(dst, a, b []float32) {
	d.dst, d.a, d.b = dst, a, b
	if d.run == nil {
		d.run = func(lo, hi int) { kernels.Add(d.dst[lo:hi], d.a[lo:hi], d.b[lo:hi]) }
	}
}

func addInto(dst, src []float32) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] += v
	}
}
