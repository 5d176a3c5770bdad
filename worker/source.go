package worker

import (
	"context"
	"fmt"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
)

// Source loads samples by their global index into a batch. Implementations
// are safe for concurrent use; Load blocks until the batch is filled.
type Source interface {
	// Len is the number of samples.
	Len() int
	// Shape is one sample's shape after preprocessing, [C, H, W].
	Shape() nn.Shape
	// Classes names the labels.
	Classes() []string
	// Load writes samples idx into x (len(idx)·Shape().Size() floats) and
	// their labels into labels.
	Load(ctx context.Context, idx []int32, x []float32, labels []int32) error
}

// ArraysSource serves an in-memory dataset normalised with one mean and
// standard deviation (grey images such as MNIST).
type ArraysSource struct {
	A         *dataset.Arrays
	Mean, Std float32
}

var _ Source = (*ArraysSource)(nil)

// NewArraysSource normalises a built-in grey dataset with its usual
// statistics.
func NewArraysSource(a *dataset.Arrays, name string) *ArraysSource {
	mean, std := normalization(name)
	return &ArraysSource{A: a, Mean: mean, Std: std}
}

func (s *ArraysSource) Len() int          { return s.A.N }
func (s *ArraysSource) Shape() nn.Shape   { return nn.Shape{s.A.C, s.A.H, s.A.W} }
func (s *ArraysSource) Classes() []string { return s.A.Classes }

func (s *ArraysSource) Load(_ context.Context, idx []int32, x []float32, labels []int32) error {
	sz := s.A.C * s.A.H * s.A.W
	if len(x) < len(idx)*sz || len(labels) < len(idx) {
		return fmt.Errorf("load %d samples: buffers hold %d floats and %d labels", len(idx), len(x), len(labels))
	}
	for b, i := range idx {
		if i < 0 || int(i) >= s.A.N {
			return fmt.Errorf("load sample %d: outside [0, %d)", i, s.A.N)
		}
		dst := x[b*sz : (b+1)*sz]
		for j, v := range s.A.Sample(int(i)) {
			dst[j] = (v - s.Mean) / s.Std
		}
		labels[b] = s.A.Labels[i]
	}
	return nil
}
