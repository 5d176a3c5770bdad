package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gorgonia.org/tensor"
)

// Linear is PyTorch's nn.Linear: y = x·Wᵀ + b with weight [Out, In].
type Linear struct {
	leaf
	In, Out      int
	Weight, Bias *Param
	out, dx      buf
	x            *tensor.Dense
	params       []*Param // built once: Params is on the backward path
}

var _ Module = (*Linear)(nil)

// NewLinear makes a fully connected layer.
func NewLinear(in, out int, bias bool) *Linear {
	l := &Linear{In: in, Out: out}
	l.Weight = newParam("weight", Weight, false, out, in)
	l.params = []*Param{l.Weight}
	if bias {
		l.Bias = newParam("bias", Weight, true, out)
		l.params = append(l.params, l.Bias)
	}
	return l
}

func (l *Linear) Kind() string { return "Linear" }

func (l *Linear) Params() []*Param { return l.params }

// ResetParameters: U(±1/√in) for weight and bias, as PyTorch.
func (l *Linear) ResetParameters(rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.In))
	uniform(rng, l.Weight.Data, bound)
	if l.Bias != nil {
		uniform(rng, l.Bias.Data, bound)
	}
}

func (l *Linear) Build(b *Builder, in Shape) (Shape, error) {
	if len(in) != 1 || in[0] != l.In {
		return nil, fmt.Errorf("Linear: input shape %v, layer expects [%d] (insert a Flatten or fix in_features)", in, l.In)
	}
	return Shape{l.Out}, nil
}

// Forward: x [N, In] -> y [N, Out].
func (l *Linear) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	l.x = x
	n := batch(x)
	y := l.out.get(n, Shape{l.Out})
	yd := f32(y)
	if l.Bias != nil {
		for i := 0; i < n; i++ {
			copy(yd[i*l.Out:(i+1)*l.Out], l.Bias.Data)
		}
		s.Pool.Sgemm(false, true, n, l.Out, l.In, 1, f32(x), l.In, l.Weight.Data, l.In, 1, yd, l.Out)
	} else {
		s.Pool.Sgemm(false, true, n, l.Out, l.In, 1, f32(x), l.In, l.Weight.Data, l.In, 0, yd, l.Out)
	}
	return y
}

// Backward: dW += dyᵀ·x, db += Σ_n dy, dx = dy·W.
func (l *Linear) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	n := batch(dy)
	dyd := f32(dy)
	if l.Weight.Trainable {
		s.Pool.Sgemm(true, false, l.Out, l.In, n, 1, dyd, l.Out, f32(l.x), l.In, 1, l.Weight.Grad, l.In)
	}
	if l.Bias != nil && l.Bias.Trainable {
		g := l.Bias.Grad
		for i := 0; i < n; i++ {
			for o, v := range dyd[i*l.Out : (i+1)*l.Out] {
				g[o] += v
			}
		}
	}
	s.gradDone(l.Weight, l.Bias)
	if !needDx {
		return nil
	}
	dx := l.dx.get(n, Shape{l.In})
	s.Pool.Sgemm(false, false, n, l.In, l.Out, 1, dyd, l.Out, l.Weight.Data, l.In, 0, f32(dx), l.In)
	return dx
}
