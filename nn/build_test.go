package nn

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"gorgonia.org/tensor"
)

// buildNoPanic is NewModel with a panic turned into a test failure: a wrong
// shape must be an error at build time, never a panic.
func buildNoPanic(t *testing.T, root Module, in Shape) (m *Model, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("NewModel panicked: %v", r)
		}
	}()
	return NewModel(root, in)
}

func TestBuildShapeErrors(t *testing.T) {
	tests := []struct {
		name  string
		root  func() Module
		in    Shape
		layer string   // dotted path of the layer at fault ("" for the root)
		want  []string // substrings of the error: both shapes
	}{
		{
			name: "conv channel mismatch in nested sequential",
			root: func() Module {
				features := NewSequential(Conv(3, 8, 3, 1, 1, true), NewReLU(), NewMaxPool2D(2, 2, 0, false), Conv(4, 16, 3, 1, 1, true))
				return NewNamedSequential(Child{"features", features}, Child{"pool", NewAdaptiveAvgPool2D(1, 1)})
			},
			in:    Shape{3, 16, 16},
			layer: "features.3",
			want:  []string{"[8 8 8]", "[4, H, W]"},
		},
		{
			name: "conv channel mismatch deep in residual and concat",
			root: func() Module {
				block := NewResidual(NewSequential(Conv(4, 4, 3, 1, 1, false), NewBatchNorm2D(4)), "downsample", nil, NewReLU())
				inc := NewConcat(Child{"branch1", Conv(4, 2, 1, 1, 0, false)}, Child{"branch2", NewSequential(Conv(4, 3, 1, 1, 0, false), Conv(2, 2, 3, 1, 1, false))})
				return NewNamedSequential(Child{"layer1", NewSequential(block)}, Child{"inception3a", inc})
			},
			in:    Shape{4, 6, 6},
			layer: "inception3a.branch2.1",
			want:  []string{"[3 6 6]", "[2, H, W]"},
		},
		{
			name:  "linear in_features",
			root:  func() Module { return NewSequential(Conv(2, 3, 3, 1, 0, true), NewFlatten(), NewLinear(10, 5, true)) },
			in:    Shape{2, 4, 4},
			layer: "2",
			want:  []string{"[12]", "[10]"},
		},
		{
			name: "concat H and W mismatch",
			root: func() Module {
				return NewSequential(NewConcat(Child{"branch1", Conv(3, 2, 3, 1, 1, false)}, Child{"branch2", Conv(3, 2, 3, 1, 0, false)}))
			},
			in:    Shape{3, 7, 7},
			layer: "0",
			want:  []string{"[2 7 7]", "[2 5 5]"},
		},
		{
			name: "residual body and shortcut differ",
			root: func() Module {
				body := NewSequential(Conv(4, 8, 3, 2, 1, false), NewBatchNorm2D(8))
				return NewNamedSequential(Child{"layer2", NewSequential(NewResidual(body, "downsample", nil, NewReLU()))})
			},
			in:    Shape{4, 8, 8},
			layer: "layer2.0",
			want:  []string{"[8 4 4]", "[4 8 8]"},
		},
		{
			name: "residual projection shortcut with the wrong stride",
			root: func() Module {
				body := NewSequential(Conv(4, 8, 3, 2, 1, false))
				return NewSequential(NewResidual(body, "downsample", NewSequential(Conv(4, 8, 1, 1, 0, false)), nil))
			},
			in:    Shape{4, 8, 8},
			layer: "0",
			want:  []string{"[8 4 4]", "[8 8 8]"},
		},
		{
			name:  "input too small for conv kernel",
			root:  func() Module { return NewSequential(Conv(3, 4, 3, 1, 0, true), Conv(4, 4, 5, 1, 0, true)) },
			in:    Shape{3, 6, 6},
			layer: "1",
			want:  []string{"[4 4 4]", "5x5"},
		},
		{
			name: "input too small for dilated conv",
			root: func() Module {
				return NewSequential(NewConv2D(ConvConfig{In: 1, Out: 1, KH: 3, KW: 3, DilH: 3, DilW: 3}))
			},
			in:    Shape{1, 6, 6},
			layer: "0",
			want:  []string{"[1 6 6]", "3x3"},
		},
		{
			name:  "input too small for max pool",
			root:  func() Module { return NewSequential(Conv(1, 2, 3, 1, 0, true), NewMaxPool2D(3, 2, 0, false)) },
			in:    Shape{1, 4, 4},
			layer: "1",
			want:  []string{"[2 2 2]", "3x3"},
		},
		{
			name:  "input too small for strided conv",
			root:  func() Module { return NewSequential(Conv(1, 2, 5, 2, 0, true)) },
			in:    Shape{1, 4, 4},
			layer: "0",
			want:  []string{"[1 4 4]", "5x5"},
		},
		{
			name:  "input too small for strided avg pool",
			root:  func() Module { return NewSequential(NewAvgPool2D(3, 2, 0)) },
			in:    Shape{2, 2, 2},
			layer: "0",
			want:  []string{"[2 2 2]", "3x3"},
		},
		{
			name:  "batchnorm channels",
			root:  func() Module { return NewSequential(Conv(3, 6, 1, 1, 0, false), NewBatchNorm2D(5)) },
			in:    Shape{3, 4, 4},
			layer: "1",
			want:  []string{"[6 4 4]", "[5, H, W]"},
		},
		{
			name:  "conv on a flat input",
			root:  func() Module { return NewSequential(NewFlatten(), Conv(3, 3, 1, 1, 0, false)) },
			in:    Shape{3, 2, 2},
			layer: "1",
			want:  []string{"[12]", "[C, H, W]"},
		},
		{
			name:  "softmax needs flat input",
			root:  func() Module { return NewSequential(NewSoftmax()) },
			in:    Shape{3, 2, 2},
			layer: "0",
			want:  []string{"[3 2 2]", "[F]"},
		},
		{
			name:  "groups do not divide channels",
			root:  func() Module { return NewSequential(NewConv2D(ConvConfig{In: 4, Out: 6, KH: 1, KW: 1, Groups: 4})) },
			in:    Shape{4, 3, 3},
			layer: "0",
			want:  []string{"groups 4"},
		},
		{
			name:  "pool padding larger than half the kernel",
			root:  func() Module { return NewSequential(NewMaxPool2D(2, 2, 2, false)) },
			in:    Shape{1, 8, 8},
			layer: "0",
			want:  []string{"padding 2x2"},
		},
		{
			name:  "dropout probability",
			root:  func() Module { return NewSequential(NewDropout(1)) },
			in:    Shape{4},
			layer: "0",
			want:  []string{"probability 1"},
		},
		{
			name:  "root layer error has no path",
			root:  func() Module { return NewLinear(3, 2, true) },
			in:    Shape{4},
			layer: "",
			want:  []string{"[4]", "[3]"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := buildNoPanic(t, tc.root(), tc.in)
			if err == nil {
				t.Fatalf("NewModel succeeded (output %v), want an error", m.Out)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			var le *LayerError
			if tc.layer == "" {
				if errors.As(err, &le) {
					t.Errorf("root error attributed to layer %q", le.Layer)
				}
				return
			}
			if !errors.As(err, &le) {
				t.Fatalf("error %q is not a *LayerError", msg)
			}
			if le.Layer != tc.layer {
				t.Errorf("error names layer %q, want %q (%s)", le.Layer, tc.layer, msg)
			}
			if !strings.Contains(msg, "layer "+tc.layer+":") {
				t.Errorf("error %q does not name layer %q", msg, tc.layer)
			}
		})
	}
}

func TestModelForwardBackwardShapeErrors(t *testing.T) {
	m, err := NewModel(NewSequential(Conv(3, 4, 3, 1, 1, true), NewFlatten(), NewLinear(4*5*6, 2, true)), Shape{3, 5, 6})
	if err != nil {
		t.Fatal(err)
	}
	s := &State{Train: true}
	bad := []struct {
		name  string
		shape []int
		dtype tensor.Dtype
	}{
		{"wrong channels", []int{2, 4, 5, 6}, tensor.Float32},
		{"transposed H W", []int{2, 3, 6, 5}, tensor.Float32},
		{"missing batch dimension", []int{3, 5, 6}, tensor.Float32},
		{"extra dimension", []int{1, 2, 3, 5, 6}, tensor.Float32},
		{"empty batch", []int{0, 3, 5, 6}, tensor.Float32},
		{"float64", []int{2, 3, 5, 6}, tensor.Float64},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Forward panicked: %v", r)
				}
			}()
			x := tensor.New(tensor.Of(b.dtype), tensor.WithShape(b.shape...))
			y, err := m.Forward(s, x)
			if err == nil {
				t.Fatalf("Forward of %v %v returned %v, want an error", b.dtype, b.shape, y.Shape())
			}
			if b.dtype == tensor.Float32 && !strings.Contains(err.Error(), "[N 3 5 6]") {
				t.Errorf("error %q does not state the expected shape", err)
			}
			if b.dtype == tensor.Float32 && !strings.Contains(err.Error(), fmt.Sprint(tensor.Shape(b.shape))) {
				t.Errorf("error %q does not state the given shape %v", err, b.shape)
			}
		})
	}
	x := tensor.New(tensor.WithShape(2, 3, 5, 6), tensor.WithBacking(make([]float32, 2*3*5*6)))
	if _, err := m.Forward(s, x); err != nil {
		t.Fatal(err)
	}
	dy := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(make([]float32, 6)))
	if err := m.Backward(s, dy); err == nil || !strings.Contains(err.Error(), "(2, 3)") || !strings.Contains(err.Error(), "[N 2]") {
		t.Errorf("Backward with gradient [2 3] for output [N 2]: error %v", err)
	}
}

// TestPoolOut compares poolOut with PyTorch 1.13's max_pool2d output size
// (0: PyTorch raises "output size is too small").
func TestPoolOut(t *testing.T) {
	tests := []struct {
		in, k, pad, stride int
		ceil               bool
		want               int
	}{
		{2, 3, 0, 2, false, 0},
		{2, 3, 0, 2, true, 1},
		{4, 5, 0, 2, false, 0},
		{5, 5, 0, 2, false, 1},
		{7, 2, 0, 2, true, 4},
		{7, 3, 1, 2, true, 4},
		{8, 3, 1, 2, true, 5},
		{6, 3, 1, 2, true, 4},
		{1, 2, 1, 2, true, 1},
		{1, 2, 1, 3, false, 1},
		{3, 3, 0, 1, false, 1},
		{10, 3, 0, 3, true, 4},
	}
	for _, tc := range tests {
		got := poolOut(tc.in, tc.k, tc.pad, tc.stride, tc.ceil)
		if got != tc.want && !(tc.want == 0 && got <= 0) {
			t.Errorf("poolOut(in %d, k %d, pad %d, stride %d, ceil %v) = %d, PyTorch %d", tc.in, tc.k, tc.pad, tc.stride, tc.ceil, got, tc.want)
		}
	}
}
