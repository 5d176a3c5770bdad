// Package dense converts checkpoint tensors to and from gorgonia.org/tensor
// Dense float32, the engine's public tensor type.
package dense

import (
	"fmt"

	"gorgonia.org/tensor"

	"github.com/ringtrain/ringtrain/checkpoint"
)

// ToDense wraps t.Data (not copied) in a gorgonia Dense of t.Shape.
// A scalar becomes a Dense of shape (1).
func ToDense(t checkpoint.Tensor) *tensor.Dense {
	shape := t.Shape
	if len(shape) == 0 {
		shape = []int{1}
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(t.Data))
}

// FromDense copies a float32 Dense into a named Tensor.
func FromDense(name string, d *tensor.Dense) (checkpoint.Tensor, error) {
	data, ok := d.Data().([]float32)
	if !ok {
		return checkpoint.Tensor{}, fmt.Errorf("tensor %q: dtype %v, want float32", name, d.Dtype())
	}
	if d.IsView() {
		return checkpoint.Tensor{}, fmt.Errorf("tensor %q: is a view; materialize it first", name)
	}
	shape := append([]int(nil), d.Shape()...)
	if len(data) != numel(shape) {
		return checkpoint.Tensor{}, fmt.Errorf("tensor %q: shape %v has %d elements, backing has %d (a view?)", name, shape, numel(shape), len(data))
	}
	return checkpoint.Tensor{Name: name, Shape: shape, Data: append([]float32(nil), data...)}, nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
