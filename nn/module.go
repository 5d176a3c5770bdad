// Package nn is ringtrain's training engine: modules with explicit forward
// and backward passes over NCHW float32 batches, named parameters that live
// in one flat arena, and a loss. Activations cross module boundaries as
// gorgonia tensor Dense float32; inside a layer the work is done on the
// backing []float32 by nn/kernels.
//
// Ownership: a module owns the tensor it returns from Forward or Backward;
// it stays valid until that module's next call of the same method.
package nn

import (
	"fmt"
	"math/rand/v2"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Shape is the shape of one sample (without the batch dimension), e.g.
// [C, H, W] for images and [F] for feature vectors.
type Shape []int

// Size is the number of elements of one sample.
func (s Shape) Size() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

func (s Shape) String() string { return fmt.Sprint([]int(s)) }

// Equal reports whether both shapes are identical.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// ParamKind tells learnable weights from buffers.
type ParamKind int

const (
	// Weight is a learnable parameter (PyTorch's nn.Parameter).
	Weight ParamKind = iota
	// Buffer is state that is saved but not learned (BN running stats).
	Buffer
	// Counter is an integer buffer (BN num_batches_tracked), kept as float32
	// here and written as int64 in checkpoints.
	Counter
)

// Param is one named tensor of a model. After NewModel, Data and Grad are
// views into the model's arenas, so a contiguous run of parameters is a
// contiguous run of memory (an all-reduce bucket is a slice).
type Param struct {
	Name  string // full dotted name (layer1.0.bn1.running_var) once in a Model
	Local string // name within its module (weight, bias, running_var)
	Shape []int
	Kind  ParamKind
	Data  []float32
	Grad  []float32 // nil for buffers
	// Trainable is false for frozen weights: they receive no gradient.
	Trainable bool
	// NoDecay marks biases and BN affine parameters, which optimizers may
	// exclude from weight decay.
	NoDecay bool
}

func newParam(local string, kind ParamKind, noDecay bool, shape ...int) *Param {
	n := 1
	for _, d := range shape {
		n *= d
	}
	p := &Param{Local: local, Shape: shape, Kind: kind, Data: make([]float32, n), NoDecay: noDecay}
	if kind == Weight {
		p.Grad = make([]float32, n)
		p.Trainable = true
	}
	return p
}

// Size is the element count.
func (p *Param) Size() int { return len(p.Data) }

// Tensor returns a Dense view of the parameter's data (no copy).
func (p *Param) Tensor() *tensor.Dense {
	return tensor.New(tensor.WithShape(p.Shape...), tensor.WithBacking(p.Data))
}

// Child is a named submodule.
type Child struct {
	Name   string
	Module Module
}

// Module is one node of a network. Leaves (Conv2D, ReLU, ...) compute;
// composites (Sequential, Concat, Residual) wire children together.
type Module interface {
	// Build checks the per-sample input shape and returns the output shape.
	// It is called once when the model is assembled; errors name the layer
	// and both shapes.
	Build(b *Builder, in Shape) (Shape, error)
	// Forward maps x [N, in...] to y [N, out...].
	Forward(s *State, x *tensor.Dense) *tensor.Dense
	// Backward takes dL/dy for the last Forward, accumulates the gradients
	// of trainable parameters, and returns dL/dx when needDx (else nil).
	Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense
	// Params lists the module's own parameters and buffers (not children's)
	// in PyTorch registration order.
	Params() []*Param
	// Children lists submodules in forward (and state_dict) order.
	Children() []Child
	// Kind names the layer type in summaries ("Conv2D").
	Kind() string
}

// Initializer is implemented by modules with parameters: it sets them to
// PyTorch's default initialisation for that layer.
type Initializer interface {
	ResetParameters(rng *rand.Rand)
}

// State carries what one forward/backward pass needs besides tensors. It is
// owned by the training loop and reused across steps.
type State struct {
	// Train selects training behaviour (batch statistics, dropout).
	Train bool
	// Inference promises that no Backward follows this forward (as
	// torch.no_grad): layers may then overwrite activations that their
	// backward would have read. Prediction and evaluation set it.
	Inference bool
	// Pool runs the kernels; nil means single-threaded.
	Pool *kernels.Pool
	// RNG drives dropout; nil is an error in training mode with dropout.
	RNG *rand.Rand
	// GradReady, when set, is called once per trainable parameter as soon
	// as its gradient for this backward pass is complete (DDP buckets).
	GradReady func(p *Param)
	// work is scratch memory (im2col columns, GEMM staging) shared by every
	// layer, so a deep net holds one set of buffers rather than one per layer.
	work [numScratch][]float32
}

// Scratch slots: a layer may hold one buffer of each slot at a time.
const (
	scratchCol = iota
	scratchGemm
	numScratch
)

// scratch returns the slot's buffer with length size; it is shared by all
// layers and valid only until the next call for the same slot.
func (s *State) scratch(slot, size int) []float32 {
	if cap(s.work[slot]) < size {
		s.work[slot] = make([]float32, size)
	}
	return s.work[slot][:size]
}

func (s *State) gradDone(ps ...*Param) {
	if s.GradReady == nil {
		return
	}
	for _, p := range ps {
		if p != nil && p.Trainable {
			s.GradReady(p)
		}
	}
}

// leaf provides the Children method for modules without submodules.
type leaf struct{}

func (leaf) Children() []Child { return nil }

// noParams provides the Params method for modules without parameters.
type noParams struct{}

func (noParams) Params() []*Param { return nil }

// buf is a reusable batch tensor: the backing slice grows to the largest
// batch seen and the Dense header is rebuilt only when the batch changes.
type buf struct {
	data  []float32
	t     *tensor.Dense
	n     int
	shape Shape
}

// get returns an [n, shape...] tensor whose contents are unspecified.
func (b *buf) get(n int, shape Shape) *tensor.Dense {
	if b.t != nil && b.n == n && b.shape.Equal(shape) {
		return b.t
	}
	size := n * shape.Size()
	if cap(b.data) < size {
		b.data = make([]float32, size)
	}
	dims := append([]int{n}, shape...)
	b.t = tensor.New(tensor.WithShape(dims...), tensor.WithBacking(b.data[:size]))
	b.n, b.shape = n, append(b.shape[:0], shape...)
	return b.t
}

// zeroed is get with the contents cleared.
func (b *buf) zeroed(n int, shape Shape) *tensor.Dense {
	t := b.get(n, shape)
	clear(t.Float32s())
	return t
}

// f32 returns the backing slice of a Dense float32 tensor.
func f32(t *tensor.Dense) []float32 { return t.Float32s() }

// batch returns the leading (batch) dimension.
func batch(t *tensor.Dense) int { return t.Shape()[0] }

// anyTrainable reports whether m or any descendant has a trainable weight.
func anyTrainable(m Module) bool {
	for _, p := range m.Params() {
		if p.Kind == Weight && p.Trainable {
			return true
		}
	}
	for _, c := range m.Children() {
		if anyTrainable(c.Module) {
			return true
		}
	}
	return false
}
