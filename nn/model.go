package nn

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"gorgonia.org/tensor"
)

// Builder carries the dotted path of the module being built, so that shape
// errors name the layer, and records every module's output shape for
// summaries.
type Builder struct {
	path   []string
	shapes map[Module]Shape
	paths  map[Module]string
}

// Child builds a named child module on input shape in.
func (b *Builder) Child(name string, m Module, in Shape) (Shape, error) {
	b.path = append(b.path, name)
	defer func() { b.path = b.path[:len(b.path)-1] }()
	out, err := m.Build(b, in)
	if err != nil {
		var le *LayerError
		if asLayerError(err, &le) {
			return nil, err
		}
		return nil, &LayerError{Layer: strings.Join(b.path, "."), Err: err}
	}
	b.shapes[m] = out
	b.paths[m] = strings.Join(b.path, ".")
	return out, nil
}

// LayerError is a build error attributed to the innermost named layer.
type LayerError struct {
	Layer string
	Err   error
}

func (e *LayerError) Error() string { return "layer " + e.Layer + ": " + e.Err.Error() }
func (e *LayerError) Unwrap() error { return e.Err }

func asLayerError(err error, target **LayerError) bool {
	le, ok := err.(*LayerError)
	if ok {
		*target = le
	}
	return ok
}

// Layer is one leaf module of a model in forward order, as Keras's
// model.layers lists them.
type Layer struct {
	Index  int
	Name   string // dotted path (features.0, layer1.0.conv1)
	Module Module
	Out    Shape
}

// Model is an assembled network: shapes checked, parameters named, weights
// and gradients laid out in two flat arenas in registration order.
type Model struct {
	Root    Module
	In, Out Shape

	// State lists every parameter and buffer in PyTorch state_dict order.
	State []*Param
	// Weights lists the learnable parameters in registration order; their
	// Data and Grad are consecutive views of the Data and Grad arenas.
	Weights    []*Param
	Data, Grad []float32
	Layers     []Layer
	byName     map[string]*Param
	inferred   bool // the last Forward ran with State.Inference
}

// NewModel builds root for per-sample input shape in and lays out its
// parameters. Parameter values are kept (see Reset for initialisation).
func NewModel(root Module, in Shape) (*Model, error) {
	b := &Builder{shapes: map[Module]Shape{}, paths: map[Module]string{}}
	out, err := root.Build(b, in)
	if err != nil {
		return nil, fmt.Errorf("building model for input %v: %w", in, err)
	}
	m := &Model{Root: root, In: append(Shape(nil), in...), Out: out, byName: map[string]*Param{}}
	var walk func(prefix string, mod Module)
	walk = func(prefix string, mod Module) {
		for _, p := range mod.Params() {
			p.Name = prefix + p.Local
			m.State = append(m.State, p)
			if p.Kind == Weight {
				m.Weights = append(m.Weights, p)
			}
		}
		children := mod.Children()
		if len(children) == 0 && mod != root {
			name := strings.TrimSuffix(prefix, ".")
			m.Layers = append(m.Layers, Layer{Index: len(m.Layers), Name: name, Module: mod, Out: b.shapes[mod]})
		}
		for _, c := range children {
			walk(prefix+c.Name+".", c.Module)
		}
	}
	walk("", root)
	for _, p := range m.State {
		if _, dup := m.byName[p.Name]; dup {
			return nil, fmt.Errorf("building model: parameter name %q used twice", p.Name)
		}
		m.byName[p.Name] = p
	}
	total := 0
	for _, p := range m.Weights {
		total += len(p.Data)
	}
	m.Data, m.Grad = make([]float32, total), make([]float32, total)
	off := 0
	for _, p := range m.Weights {
		n := len(p.Data)
		copy(m.Data[off:off+n], p.Data)
		p.Data, p.Grad = m.Data[off:off+n:off+n], m.Grad[off:off+n:off+n]
		off += n
	}
	return m, nil
}

// Reset initialises every layer with PyTorch's defaults from rng, in
// state_dict order.
func (m *Model) Reset(rng *rand.Rand) {
	var walk func(mod Module)
	walk = func(mod Module) {
		if in, ok := mod.(Initializer); ok {
			in.ResetParameters(rng)
		}
		for _, c := range mod.Children() {
			walk(c.Module)
		}
	}
	walk(m.Root)
}

// Param returns the parameter or buffer with the given state_dict name.
func (m *Model) Param(name string) (*Param, bool) {
	p, ok := m.byName[name]
	return p, ok
}

// NumParams counts learnable parameters: all of them and the trainable ones.
func (m *Model) NumParams() (total, trainable int) {
	for _, p := range m.Weights {
		total += len(p.Data)
		if p.Trainable {
			trainable += len(p.Data)
		}
	}
	return total, trainable
}

// checkInput verifies x is [N, In...] with N ≥ 1.
func (m *Model) checkInput(x *tensor.Dense) error {
	sh := x.Shape()
	if x.Dtype() != tensor.Float32 {
		return fmt.Errorf("model input: dtype %v, want float32", x.Dtype())
	}
	if len(sh) != len(m.In)+1 || sh[0] < 1 || !Shape(sh[1:]).Equal(m.In) {
		return fmt.Errorf("model input: shape %v, want [N %s]", sh, strings.Trim(fmt.Sprint([]int(m.In)), "[]"))
	}
	return nil
}

// Forward runs the network on x [N, In...] and returns logits (or
// features) [N, Out...], owned by the model until the next Forward.
func (m *Model) Forward(s *State, x *tensor.Dense) (*tensor.Dense, error) {
	if err := m.checkInput(x); err != nil {
		return nil, err
	}
	m.inferred = s.Inference
	return m.Root.Forward(s, x), nil
}

// Backward propagates dL/dout of the last Forward and accumulates weight
// gradients into Grad. Input gradients are not computed.
func (m *Model) Backward(s *State, dy *tensor.Dense) error {
	sh := dy.Shape()
	if len(sh) != len(m.Out)+1 || !Shape(sh[1:]).Equal(m.Out) {
		return fmt.Errorf("model backward: gradient shape %v, want [N %s]", sh, strings.Trim(fmt.Sprint([]int(m.Out)), "[]"))
	}
	if m.inferred {
		// Layers may have overwritten what their backward reads.
		return fmt.Errorf("model backward: the last forward ran with State.Inference (no backward may follow); run it without")
	}
	m.Root.Backward(s, dy, false)
	return nil
}

// ZeroGrad clears every gradient.
func (m *Model) ZeroGrad() { clear(m.Grad) }

// SetTrainable marks every learnable parameter of the layers whose dotted
// name equals prefix or starts with prefix+"." as trainable or frozen.
// An empty prefix matches all.
func (m *Model) SetTrainable(prefix string, trainable bool) int {
	n := 0
	for _, p := range m.Weights {
		if prefix == "" || strings.HasPrefix(p.Name, prefix+".") {
			p.Trainable = trainable
			n++
		}
	}
	return n
}

// FreezeFirst freezes the parameters of the first k layers (Keras's
// `for layer in model.layers[:k]: layer.trainable = False`).
func (m *Model) FreezeFirst(k int) error {
	if k < 0 || k > len(m.Layers) {
		return fmt.Errorf("freeze first %d layers: model has %d layers", k, len(m.Layers))
	}
	for _, l := range m.Layers[:k] {
		for _, p := range l.Module.Params() {
			if p.Kind == Weight {
				p.Trainable = false
			}
		}
	}
	return nil
}

// FreezeUntil freezes every layer up to and including the named one.
func (m *Model) FreezeUntil(name string) error {
	for i, l := range m.Layers {
		if l.Name == name {
			return m.FreezeFirst(i + 1)
		}
	}
	return fmt.Errorf("freeze until %q: no such layer (see `ringtrain layers`)", name)
}
