package nn

import (
	"fmt"
	"math"

	"gorgonia.org/tensor"
)

// LocalResponseNorm is nn.LocalResponseNorm (AlexNet 2012):
// y_c = x_c · (K + α/Size · Σ_{c'∈win(c)} x_{c'}²)^(−β), win(c) =
// [c − ⌊Size/2⌋, c + ⌊(Size−1)/2⌋] clipped to the channels.
type LocalResponseNorm struct {
	leaf
	noParams
	Size           int
	Alpha, Beta, K float32
	in             Shape
	out, dx        buf
	x              *tensor.Dense
	scale          []float32 // K + α/n·Σx², per element
	// The current call's slices and the per-sample loops over them, bound
	// once so that a step allocates nothing.
	xd, yd, dyd, dxd []float32
	fwd, bwd         func(lo, hi int)
}

// NewLocalResponseNorm uses PyTorch's argument order (size, alpha, beta, k).
func NewLocalResponseNorm(size int, alpha, beta, k float32) *LocalResponseNorm {
	return &LocalResponseNorm{Size: size, Alpha: alpha, Beta: beta, K: k}
}

func (*LocalResponseNorm) Kind() string { return "LocalResponseNorm" }

func (l *LocalResponseNorm) Build(b *Builder, in Shape) (Shape, error) {
	if len(in) != 3 {
		return nil, fmt.Errorf("LocalResponseNorm: input shape %v is not [C, H, W]", in)
	}
	if l.Size <= 0 {
		return nil, fmt.Errorf("LocalResponseNorm: size %d must be positive", l.Size)
	}
	l.in = in
	return in, nil
}

func (l *LocalResponseNorm) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	l.x = x
	n := batch(x)
	y := l.out.get(n, l.in)
	l.xd, l.yd = f32(x), f32(y)
	if cap(l.scale) < len(l.xd) {
		l.scale = make([]float32, len(l.xd))
	}
	l.scale = l.scale[:len(l.xd)]
	if l.fwd == nil {
		l.fwd, l.bwd = l.forwardSamples, l.backwardSamples
	}
	s.Pool.ParallelFor(n, l.fwd)
	return y
}

func (l *LocalResponseNorm) forwardSamples(lo, hi int) {
	xd, yd := l.xd, l.yd
	C, hw := l.in[0], l.in[1]*l.in[2]
	an := l.Alpha / float32(l.Size)
	for i := lo; i < hi; i++ {
		base := i * C * hw
		for c := 0; c < C; c++ {
			c0, c1 := max(c-l.Size/2, 0), min(c+(l.Size-1)/2, C-1)
			for j := 0; j < hw; j++ {
				var sum float32
				for cc := c0; cc <= c1; cc++ {
					v := xd[base+cc*hw+j]
					sum += v * v
				}
				sc := l.K + an*sum
				o := base + c*hw + j
				l.scale[o] = sc
				yd[o] = xd[o] * float32(math.Pow(float64(sc), -float64(l.Beta)))
			}
		}
	}
}

// Backward: dx_i = dy_i·s_i^−β − 2αβ/n · x_i · Σ_{c: i∈win(c)} dy_c·x_c·s_c^(−β−1).
func (l *LocalResponseNorm) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	if !needDx {
		return nil
	}
	n := batch(dy)
	dx := l.dx.get(n, l.in)
	l.xd, l.dyd, l.dxd = f32(l.x), f32(dy), f32(dx)
	s.Pool.ParallelFor(n, l.bwd)
	return dx
}

func (l *LocalResponseNorm) backwardSamples(lo, hi int) {
	xd, dyd, dxd := l.xd, l.dyd, l.dxd
	C, hw := l.in[0], l.in[1]*l.in[2]
	k := 2 * l.Alpha * l.Beta / float32(l.Size)
	beta := float64(l.Beta)
	for i := lo; i < hi; i++ {
		base := i * C * hw
		for c := 0; c < C; c++ {
			// c lies in win(j) for j in [c − ⌊(Size−1)/2⌋, c + ⌊Size/2⌋].
			j0, j1 := max(c-(l.Size-1)/2, 0), min(c+l.Size/2, C-1)
			for p := 0; p < hw; p++ {
				o := base + c*hw + p
				var acc float32
				for j := j0; j <= j1; j++ {
					q := base + j*hw + p
					acc += dyd[q] * xd[q] * float32(math.Pow(float64(l.scale[q]), -beta-1))
				}
				dxd[o] = dyd[o]*float32(math.Pow(float64(l.scale[o]), -beta)) - k*xd[o]*acc
			}
		}
	}
}
