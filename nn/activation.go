package nn

import (
	"fmt"
	"math"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// ReLU is max(x, 0). Backward uses its own output as the mask.
//
// Like torchvision's ReLU(inplace=True), it overwrites its input when the
// enclosing Sequential knows that is safe (see Sequential.Build): forward
// in place after a BatchNorm2D (whose backward needs its input, not its
// output), backward in place when a Conv2D follows (whose input gradient
// is its own buffer, read by nothing else). Each saves an activation-sized
// buffer per layer.
type ReLU struct {
	leaf
	noParams
	out, dx              buf
	y                    *tensor.Dense
	inPlace, gradInPlace bool
	// fused: the BatchNorm2D before it rectifies its output and masks the
	// gradient itself (BatchNorm2D.reluFwd/reluBwd); this layer passes
	// both through and only keeps its output for that mask.
	fused bool
	// The current call's slices, and the loops over them bound once so that
	// a step allocates nothing.
	xs, ys, dys, dxs []float32
	fwd, bwd         func(lo, hi int)
}

func NewReLU() *ReLU                                      { return &ReLU{} }
func (r *ReLU) Kind() string                              { return "ReLU" }
func (r *ReLU) Build(b *Builder, in Shape) (Shape, error) { return in, nil }

func (r *ReLU) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	if r.fused {
		r.y = x
		return x
	}
	y := x
	if !r.inPlace {
		sh := x.Shape()
		y = r.out.get(sh[0], Shape(sh[1:]))
	}
	r.xs, r.ys = f32(x), f32(y)
	if r.fwd == nil {
		r.fwd = func(lo, hi int) { kernels.ReLU(r.ys[lo:hi], r.xs[lo:hi]) }
	}
	s.Pool.ForElems(len(r.xs), r.fwd)
	r.y = y
	return y
}

func (r *ReLU) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	if r.fused {
		return dy
	}
	dx := dy
	if !r.gradInPlace {
		sh := dy.Shape()
		dx = r.dx.get(sh[0], Shape(sh[1:]))
	}
	r.ys, r.dys, r.dxs = f32(r.y), f32(dy), f32(dx)
	if r.bwd == nil {
		r.bwd = func(lo, hi int) { kernels.ReLUBackward(r.dxs[lo:hi], r.dys[lo:hi], r.ys[lo:hi]) }
	}
	s.Pool.ForElems(len(r.dys), r.bwd)
	return dx
}

// Identity passes x through unchanged (an identity shortcut, or a Concat
// branch that keeps the input as DenseNet does).
type Identity struct {
	leaf
	noParams
}

func NewIdentity() *Identity                                      { return &Identity{} }
func (*Identity) Kind() string                                    { return "Identity" }
func (*Identity) Build(b *Builder, in Shape) (Shape, error)       { return in, nil }
func (*Identity) Forward(s *State, x *tensor.Dense) *tensor.Dense { return x }
func (*Identity) Backward(s *State, dy *tensor.Dense, need bool) *tensor.Dense {
	if !need {
		return nil
	}
	return dy
}

// Flatten reshapes [N, C, H, W] to [N, C·H·W] without copying.
type Flatten struct {
	leaf
	noParams
	in      Shape
	out, dx *tensor.Dense
}

func NewFlatten() *Flatten    { return &Flatten{} }
func (*Flatten) Kind() string { return "Flatten" }
func (f *Flatten) Build(b *Builder, in Shape) (Shape, error) {
	f.in = append(Shape(nil), in...)
	return Shape{in.Size()}, nil
}

func (f *Flatten) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	f.out = view(f.out, f32(x), batch(x), Shape{f.in.Size()})
	return f.out
}

func (f *Flatten) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	f.dx = view(f.dx, f32(dy), batch(dy), f.in)
	return f.dx
}

// view returns a Dense of shape [n, shape...] over data, reusing t's header
// when it already wraps the same memory with the same shape.
func view(t *tensor.Dense, data []float32, n int, shape Shape) *tensor.Dense {
	size := n * shape.Size()
	data = data[:size]
	if t != nil && t.Shape()[0] == n && len(f32(t)) == size && &f32(t)[0] == &data[0] && Shape(t.Shape()[1:]).Equal(shape) {
		return t
	}
	return tensor.New(tensor.WithShape(append([]int{n}, shape...)...), tensor.WithBacking(data))
}

// Dropout zeroes each element with probability P in training and scales the
// rest by 1/(1-P); evaluation is the identity.
type Dropout struct {
	leaf
	noParams
	P       float32
	mask    []float32
	out, dx buf
	train   bool
}

func NewDropout(p float32) *Dropout { return &Dropout{P: p} }
func (*Dropout) Kind() string       { return "Dropout" }
func (d *Dropout) Build(b *Builder, in Shape) (Shape, error) {
	if d.P < 0 || d.P >= 1 {
		return nil, fmt.Errorf("Dropout: probability %v outside [0, 1)", d.P)
	}
	return in, nil
}

func (d *Dropout) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	d.train = s.Train && d.P > 0
	if !d.train {
		return x
	}
	if s.RNG == nil {
		panic("nn: Dropout in training mode needs State.RNG")
	}
	sh := x.Shape()
	y := d.out.get(sh[0], Shape(sh[1:]))
	xd, yd := f32(x), f32(y)
	if cap(d.mask) < len(xd) {
		d.mask = make([]float32, len(xd))
	}
	d.mask = d.mask[:len(xd)]
	scale := 1 / (1 - d.P)
	for i, v := range xd {
		if s.RNG.Float32() < d.P {
			d.mask[i], yd[i] = 0, 0
		} else {
			d.mask[i], yd[i] = scale, v*scale
		}
	}
	return y
}

func (d *Dropout) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	if !d.train {
		return dy
	}
	sh := dy.Shape()
	dx := d.dx.get(sh[0], Shape(sh[1:]))
	dxd := f32(dx)
	for i, g := range f32(dy) {
		dxd[i] = g * d.mask[i]
	}
	return dx
}

// Softmax over the features of [N, F] (dim 1).
type Softmax struct {
	leaf
	noParams
	out, dx buf
	y       *tensor.Dense
}

func NewSoftmax() *Softmax    { return &Softmax{} }
func (*Softmax) Kind() string { return "Softmax" }
func (*Softmax) Build(b *Builder, in Shape) (Shape, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("Softmax: input shape %v, want [F] (flatten first)", in)
	}
	return in, nil
}

func (m *Softmax) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	sh := x.Shape()
	y := m.out.get(sh[0], Shape{sh[1]})
	softmaxRows(f32(x), f32(y), sh[0], sh[1])
	m.y = y
	return y
}

// Backward: dx = y ⊙ (dy − Σ dy·y).
func (m *Softmax) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	sh := dy.Shape()
	n, f := sh[0], sh[1]
	dx := m.dx.get(n, Shape{f})
	yd, dyd, dxd := f32(m.y), f32(dy), f32(dx)
	for i := 0; i < n; i++ {
		ys, gs, ds := yd[i*f:(i+1)*f], dyd[i*f:(i+1)*f], dxd[i*f:(i+1)*f]
		var dot float32
		for j, g := range gs {
			dot += g * ys[j]
		}
		for j, g := range gs {
			ds[j] = ys[j] * (g - dot)
		}
	}
	return dx
}

// softmaxRows writes the row-wise softmax of x [n, f] into y (max-shifted).
func softmaxRows(x, y []float32, n, f int) {
	for i := 0; i < n; i++ {
		xs, ys := x[i*f:(i+1)*f], y[i*f:(i+1)*f]
		mx := xs[0]
		for _, v := range xs {
			mx = max(mx, v)
		}
		var sum float64
		for j, v := range xs {
			e := math.Exp(float64(v - mx))
			ys[j] = float32(e)
			sum += e
		}
		inv := float32(1 / sum)
		for j := range ys {
			ys[j] *= inv
		}
	}
}
