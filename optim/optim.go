// Package optim updates a model's weights from its gradients: SGD (momentum,
// Nesterov, weight decay), Adam and AdamW as PyTorch defines them, and the
// learning-rate schedules used to train the reference CNNs.
//
// Optimizers work on the model's flat weight and gradient arenas, so their
// state is flat too; frozen parameters are skipped (PyTorch skips
// parameters whose grad is None).
package optim

import (
	"fmt"
	"math"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
)

// Optimizer applies one update with the given learning rate.
type Optimizer interface {
	Step(lr float64)
	// State returns named optimizer buffers (for checkpoints); the slices
	// alias the optimizer's memory: writing them restores state.
	State() []Slot
	// Steps is how many updates have been applied.
	Steps() int
	// SetSteps restores the update count (Adam's bias correction needs it).
	SetSteps(int)
}

// UsePool lets o spread its updates over p's threads (nil: the caller's
// goroutine only). Every element is updated by the same expression either
// way, so results do not depend on the pool.
func UsePool(o Optimizer, p *kernels.Pool) {
	switch o := o.(type) {
	case *SGD:
		o.pool = p
	case *Adam:
		o.pool = p
	}
}

// Slot is one named buffer of optimizer state, laid out like the weights
// arena (Data aliases the optimizer's memory).
type Slot struct {
	Name string
	Data []float32
}

// SGDConfig is torch.optim.SGD's arguments.
type SGDConfig struct {
	Momentum, Dampening, WeightDecay float64
	Nesterov                         bool
	// NoDecayOnBiasAndBN skips weight decay for biases and BN parameters
	// (param.NoDecay), as Goyal et al. (2017) recommend.
	NoDecayOnBiasAndBN bool
}

// Validate rejects configurations PyTorch rejects too.
func (c SGDConfig) Validate() error {
	switch {
	case c.Momentum < 0:
		return fmt.Errorf("sgd: momentum %v < 0", c.Momentum)
	case c.WeightDecay < 0:
		return fmt.Errorf("sgd: weight decay %v < 0", c.WeightDecay)
	case c.Nesterov && (c.Momentum <= 0 || c.Dampening != 0):
		return fmt.Errorf("sgd: Nesterov momentum requires a momentum and zero dampening")
	}
	return nil
}

// SGD is stochastic gradient descent with momentum.
type SGD struct {
	cfg   SGDConfig
	model *nn.Model
	buf   []float32 // momentum buffer, one per weight element
	steps int
	pool  *kernels.Pool
	cur   sgdSlice         // the parameter Step is updating
	run   func(lo, hi int) // cur.update, bound once
}

// NewSGD makes an SGD optimizer over m's weights.
func NewSGD(m *nn.Model, cfg SGDConfig) (*SGD, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &SGD{cfg: cfg, model: m}
	if cfg.Momentum != 0 {
		s.buf = make([]float32, len(m.Data))
	}
	return s, nil
}

func (s *SGD) Steps() int     { return s.steps }
func (s *SGD) SetSteps(n int) { s.steps = n }
func (s *SGD) State() []Slot {
	if s.buf == nil {
		return nil
	}
	return []Slot{{Name: "momentum_buffer", Data: s.buf}}
}

// Step: g = grad + wd·w; b = μ·b + (1−τ)·g (b = g on the first step);
// g = g + μ·b (Nesterov) or b; w −= lr·g.
func (s *SGD) Step(lr float64) {
	c := s.cfg
	off := 0
	for _, p := range s.model.Weights {
		n := len(p.Data)
		if !p.Trainable {
			off += n
			continue
		}
		wd := float32(c.WeightDecay)
		if c.NoDecayOnBiasAndBN && p.NoDecay {
			wd = 0
		}
		mu, damp, lr32 := float32(c.Momentum), float32(1-c.Dampening), float32(lr)
		var b []float32
		if s.buf != nil {
			b = s.buf[off : off+n]
		}
		s.cur = sgdSlice{w: p.Data, g: p.Grad, b: b, wd: wd, mu: mu, damp: damp, lr: lr32, first: s.steps == 0, nesterov: c.Nesterov}
		if s.run == nil {
			s.run = func(lo, hi int) { s.cur.update(lo, hi) }
		}
		s.pool.ForElems(n, s.run)
		off += n
	}
	s.steps++
}

// sgdSlice is one parameter's update: its slices and coefficients.
type sgdSlice struct {
	w, g, b          []float32
	wd, mu, damp, lr float32
	first, nesterov  bool
}

func (u *sgdSlice) update(lo, hi int) {
	w, g, b := u.w, u.g, u.b
	if b != nil && !u.first && !u.nesterov { // the steady state of momentum SGD
		kernels.SGDMomentum(w[lo:hi], g[lo:hi], b[lo:hi], u.wd, u.mu, u.damp, u.lr, u.wd != 0)
		return
	}
	// Explicit float32 conversions stop the compiler fusing multiply-adds,
	// so every path rounds as kernels.SGDMomentum does.
	for i := lo; i < hi; i++ {
		d := g[i]
		if u.wd != 0 {
			d += float32(u.wd * w[i])
		}
		if b != nil {
			if u.first {
				b[i] = d
			} else {
				b[i] = float32(u.mu*b[i]) + float32(u.damp*d)
			}
			if u.nesterov {
				d += float32(u.mu * b[i])
			} else {
				d = b[i]
			}
		}
		w[i] -= float32(u.lr * d)
	}
}

// AdamConfig is torch.optim.Adam / AdamW's arguments. Decoupled selects
// AdamW (decay applied to the weights, not folded into the gradient).
type AdamConfig struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Decoupled                      bool
	NoDecayOnBiasAndBN             bool
}

// DefaultAdam is PyTorch's Adam default; AdamW's default weight decay is 0.01.
func DefaultAdam() AdamConfig { return AdamConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8} }

// Validate checks the ranges PyTorch checks.
func (c AdamConfig) Validate() error {
	switch {
	case c.Beta1 < 0 || c.Beta1 >= 1:
		return fmt.Errorf("adam: beta1 %v outside [0, 1)", c.Beta1)
	case c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("adam: beta2 %v outside [0, 1)", c.Beta2)
	case c.Eps < 0:
		return fmt.Errorf("adam: eps %v < 0", c.Eps)
	case c.WeightDecay < 0:
		return fmt.Errorf("adam: weight decay %v < 0", c.WeightDecay)
	}
	return nil
}

// Adam is Adam or AdamW.
type Adam struct {
	cfg   AdamConfig
	model *nn.Model
	m, v  []float32
	steps int
	pool  *kernels.Pool
	cur   adamSlice        // the parameter Step is updating
	run   func(lo, hi int) // cur.update, bound once
}

// NewAdam makes Adam (or AdamW when cfg.Decoupled) over m's weights.
func NewAdam(m *nn.Model, cfg AdamConfig) (*Adam, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Adam{cfg: cfg, model: m, m: make([]float32, len(m.Data)), v: make([]float32, len(m.Data))}, nil
}

func (a *Adam) Steps() int     { return a.steps }
func (a *Adam) SetSteps(n int) { a.steps = n }
func (a *Adam) State() []Slot {
	return []Slot{{Name: "exp_avg", Data: a.m}, {Name: "exp_avg_sq", Data: a.v}}
}

// Step follows torch.optim.Adam(W) (non-amsgrad, single-tensor path).
func (a *Adam) Step(lr float64) {
	c := a.cfg
	a.steps++
	t := float64(a.steps)
	bc1 := 1 - math.Pow(c.Beta1, t)
	bc2 := 1 - math.Pow(c.Beta2, t)
	stepSize := float32(lr / bc1)
	sqrtBC2 := float32(math.Sqrt(bc2))
	b1, b2, eps := float32(c.Beta1), float32(c.Beta2), float32(c.Eps)
	off := 0
	for _, p := range a.model.Weights {
		n := len(p.Data)
		if !p.Trainable {
			off += n
			continue
		}
		wd := float32(c.WeightDecay)
		if c.NoDecayOnBiasAndBN && p.NoDecay {
			wd = 0
		}
		m, v := a.m[off:off+n], a.v[off:off+n]
		w, g := p.Data, p.Grad
		a.cur = adamSlice{w: w, g: g, m: m, v: v, wd: wd, decay: float32(1 - lr*float64(wd)), decoupled: c.Decoupled,
			b1: b1, b2: b2, eps: eps, stepSize: stepSize, sqrtBC2: sqrtBC2}
		if a.run == nil {
			a.run = func(lo, hi int) { a.cur.update(lo, hi) }
		}
		a.pool.ForElems(n, a.run)
		off += n
	}
}

// adamSlice is one parameter's update: its slices and coefficients.
type adamSlice struct {
	w, g, m, v                                []float32
	wd, decay, b1, b2, eps, stepSize, sqrtBC2 float32
	decoupled                                 bool
}

func (u *adamSlice) update(lo, hi int) {
	w, g, m, v := u.w, u.g, u.m, u.v
	for i := lo; i < hi; i++ {
		d := g[i]
		if u.wd != 0 {
			if u.decoupled {
				w[i] *= u.decay
			} else {
				d += u.wd * w[i]
			}
		}
		m[i] = m[i]*u.b1 + (1-u.b1)*d // torch: exp_avg.lerp_(grad, 1-beta1)
		v[i] = v[i]*u.b2 + (1-u.b2)*d*d
		denom := float32(math.Sqrt(float64(v[i])))/u.sqrtBC2 + u.eps
		w[i] -= u.stepSize * m[i] / denom
	}
}
