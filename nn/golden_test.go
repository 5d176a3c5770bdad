package nn

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Golden values come from scripts/gen_golden.py (PyTorch 1.13, computed in
// float64 from float32 inputs). The engine computes in float32, so the
// tolerance is float32 round-off: the norm-based relative error
// max|a−b| / max(max|b|, 1e-6) must stay ≤ goldenTol for every tensor.
const goldenTol = 1e-4

// goldenTensor is {"shape": [...], "data": base64 little-endian float32}.
type goldenTensor struct {
	Shape []int  `json:"shape"`
	Data  string `json:"data"`
}

func (g goldenTensor) floats(t testing.TB) []float32 {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(g.Data)
	if err != nil {
		t.Fatalf("golden tensor: %v", err)
	}
	if len(raw)%4 != 0 {
		t.Fatalf("golden tensor: %d bytes is not a float32 array", len(raw))
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if n := Shape(g.Shape).Size(); n != len(out) {
		t.Fatalf("golden tensor: shape %v wants %d values, has %d", g.Shape, n, len(out))
	}
	return out
}

func (g goldenTensor) dense(t testing.TB) *tensor.Dense {
	return tensor.New(tensor.WithShape(g.Shape...), tensor.WithBacking(g.floats(t)))
}

type goldenCase struct {
	Name   string                  `json:"name"`
	Layer  string                  `json:"layer"`
	Cfg    json.RawMessage         `json:"cfg"`
	Train  bool                    `json:"train"`
	X      goldenTensor            `json:"x"`
	X1     *goldenTensor           `json:"x1"`
	Dy     goldenTensor            `json:"dy"`
	Y      goldenTensor            `json:"y"`
	Dx     goldenTensor            `json:"dx"`
	Mask   *goldenTensor           `json:"mask"`
	Params map[string]goldenTensor `json:"params"`
	Grads  map[string]goldenTensor `json:"grads"`
	After  map[string]goldenTensor `json:"after"`
	Labels []int32                 `json:"labels"`
	Loss   float64                 `json:"loss"`
}

type goldenFile struct {
	Torch string       `json:"torch"`
	Cases []goldenCase `json:"cases"`
}

func loadGolden(t testing.TB, name string) []goldenCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatalf("golden file (regenerate with /usr/bin/python3 scripts/gen_golden.py): %v", err)
	}
	var f goldenFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("golden file %s: %v", name, err)
	}
	if len(f.Cases) == 0 {
		t.Fatalf("golden file %s: no cases", name)
	}
	return f.Cases
}

// relErr is max|a−b| / max(max|b|, 1e-6); a length mismatch is +Inf.
func relErr(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var diff, scale float64
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d != d { // NaN
			return math.Inf(1)
		}
		diff = max(diff, d)
		scale = max(scale, math.Abs(float64(b[i])))
	}
	return diff / max(scale, 1e-6)
}

func checkClose(t testing.TB, what string, got, want []float32, tol float64) {
	t.Helper()
	if e := relErr(got, want); e > tol {
		n := min(len(got), len(want), 6)
		t.Errorf("%s: relative error %.3g > %.1g (len %d vs %d)\n got %v\nwant %v", what, e, tol, len(got), len(want), got[:n], want[:n])
	}
}

// layerCfg holds the numbers of every non-conv layer's cfg.
type layerCfg struct {
	Max                                  bool
	KH, KW, StrideH, StrideW, PadH, PadW int
	CeilMode, CountIncludePad            bool
	OH, OW, C, Size, In, Out, Stride     int
	Alpha, Beta, K, P                    float32
	Bias, Project, After                 bool
}

// goldenModule builds the Go module that scripts/gen_golden.py describes
// with layer and cfg.
func goldenModule(t testing.TB, c goldenCase) Module {
	t.Helper()
	var cc ConvConfig
	var pc layerCfg
	if len(c.Cfg) > 0 {
		if err := json.Unmarshal(c.Cfg, &cc); err != nil {
			t.Fatalf("%s: cfg: %v", c.Name, err)
		}
		if err := json.Unmarshal(c.Cfg, &pc); err != nil {
			t.Fatalf("%s: cfg: %v", c.Name, err)
		}
	}
	switch c.Layer {
	case "conv":
		return NewConv2D(cc)
	case "bn":
		return NewBatchNorm2D(pc.C)
	case "pool":
		cfg := PoolConfig{KH: pc.KH, KW: pc.KW, StrideH: pc.StrideH, StrideW: pc.StrideW, PadH: pc.PadH, PadW: pc.PadW,
			CeilMode: pc.CeilMode, CountIncludePad: pc.CountIncludePad}
		if pc.Max {
			return NewMaxPool(cfg)
		}
		return NewAvgPool(cfg)
	case "adaptive":
		if pc.Max {
			return NewAdaptiveMaxPool2D(pc.OH, pc.OW)
		}
		return NewAdaptiveAvgPool2D(pc.OH, pc.OW)
	case "lrn":
		return NewLocalResponseNorm(pc.Size, pc.Alpha, pc.Beta, pc.K)
	case "linear":
		return NewLinear(pc.In, pc.Out, pc.Bias)
	case "relu":
		return NewReLU()
	case "flatten":
		return NewFlatten()
	case "softmax":
		return NewSoftmax()
	case "dropout":
		return NewDropout(pc.P)
	case "concat":
		return NewConcat(
			Child{"branch1", Conv(4, 3, 1, 1, 0, true)},
			Child{"branch2", NewSequential(Conv(4, 2, 3, 1, 1, false), NewBatchNorm2D(2), NewReLU())},
			Child{"branch3", NewSequential(NewMaxPool2D(3, 1, 1, false), Conv(4, 2, 1, 1, 0, false))},
		)
	case "residual":
		body := NewSequential(Conv(pc.In, pc.Out, 3, pc.Stride, 1, false), NewBatchNorm2D(pc.Out), NewReLU(),
			Conv(pc.Out, pc.Out, 3, 1, 1, false), NewBatchNorm2D(pc.Out))
		var sc, after Module
		if pc.Project {
			sc = NewSequential(Conv(pc.In, pc.Out, 1, pc.Stride, 0, false), NewBatchNorm2D(pc.Out))
		}
		if pc.After {
			after = NewReLU()
		}
		return NewResidual(body, "downsample", sc, after)
	}
	t.Fatalf("%s: unknown layer %q", c.Name, c.Layer)
	return nil
}

// goldenModel builds the case's module into a Model and loads the golden
// parameters and buffers by state_dict name: every golden name must exist
// and every model tensor must be given.
func goldenModel(t testing.TB, c goldenCase) *Model {
	t.Helper()
	m, err := NewModel(goldenModule(t, c), Shape(c.X.Shape[1:]))
	if err != nil {
		t.Fatalf("%s: %v", c.Name, err)
	}
	if len(m.State) != len(c.Params) {
		names := []string{}
		for _, p := range m.State {
			names = append(names, p.Name)
		}
		t.Fatalf("%s: model has %d tensors %v, golden has %d", c.Name, len(m.State), names, len(c.Params))
	}
	for name, g := range c.Params {
		p, ok := m.Param(name)
		if !ok {
			t.Fatalf("%s: golden parameter %q not in model", c.Name, name)
		}
		v := g.floats(t)
		if len(v) != len(p.Data) || !Shape(g.Shape).Equal(p.Shape) {
			t.Fatalf("%s: %s shape %v, golden %v", c.Name, name, p.Shape, g.Shape)
		}
		copy(p.Data, v)
	}
	return m
}

// goldenPools runs every golden case single-threaded (nil pool) and on a
// two-thread pool (the per-sample parallel paths).
func goldenPools(t *testing.T) []*kernels.Pool {
	p := kernels.NewPool(2)
	t.Cleanup(p.Close)
	return []*kernels.Pool{nil, p}
}

func runLayerGolden(t *testing.T, file string) {
	for _, c := range loadGolden(t, file) {
		modes := []bool{c.Train}
		if modeFree[c.Layer] { // the golden is valid in both modes
			modes = append(modes, !c.Train)
		}
		for _, pool := range goldenPools(t) {
			for _, train := range modes {
				c := c
				c.Train = train
				t.Run(fmt.Sprintf("%s/train=%v/threads=%d", c.Name, train, pool.Threads()), func(t *testing.T) {
					switch {
					case c.Layer == "dropout":
						checkDropoutGolden(t, c, pool)
					case c.X1 != nil:
						checkBNRunningGolden(t, c, pool)
					default:
						checkLayerGolden(t, c, pool)
					}
				})
			}
		}
	}
}

// modeFree lists the layers that behave the same in training and
// evaluation; their golden cases run in both modes.
var modeFree = map[string]bool{"conv": true, "pool": true, "adaptive": true, "lrn": true, "linear": true,
	"relu": true, "flatten": true, "softmax": true}

func checkLayerGolden(t *testing.T, c goldenCase, pool *kernels.Pool) {
	m := goldenModel(t, c)
	ready := map[*Param]int{}
	s := &State{Train: c.Train, Pool: pool, RNG: rand.New(rand.NewPCG(1, 2)), GradReady: func(p *Param) { ready[p]++ }}
	y, err := m.Forward(s, c.X.dense(t))
	if err != nil {
		t.Fatal(err)
	}
	if !Shape(y.Shape()).Equal(c.Y.Shape) {
		t.Fatalf("output shape %v, golden %v", y.Shape(), c.Y.Shape)
	}
	checkClose(t, "y", f32(y), c.Y.floats(t), goldenTol)
	dx := m.Root.Backward(s, c.Dy.dense(t), true)
	if dx == nil || !Shape(dx.Shape()).Equal(c.Dx.Shape) {
		t.Fatalf("dx shape %v, golden %v", dx, c.Dx.Shape)
	}
	checkClose(t, "dx", f32(dx), c.Dx.floats(t), goldenTol)
	for _, p := range m.Weights {
		g, ok := c.Grads[p.Name]
		if !ok {
			t.Fatalf("no golden gradient for %s", p.Name)
		}
		checkClose(t, "grad "+p.Name, p.Grad, g.floats(t), goldenTol)
		if ready[p] != 1 {
			t.Errorf("GradReady called %d times for %s, want 1", ready[p], p.Name)
		}
	}
	for name, g := range c.After {
		p, _ := m.Param(name)
		checkClose(t, "buffer after forward "+name, p.Data, g.floats(t), goldenTol)
	}
}

// checkBNRunningGolden: running_mean, running_var (unbiased, momentum 0.1)
// and num_batches_tracked after two training forwards of different batches.
func checkBNRunningGolden(t *testing.T, c goldenCase, pool *kernels.Pool) {
	m := goldenModel(t, c)
	s := &State{Train: true, Pool: pool}
	// The model is built for x's shape and refuses x1 (another H×W) before
	// touching any layer; a BatchNorm2D itself takes any H×W.
	if _, err := m.Forward(s, c.X1.dense(t)); err == nil {
		t.Fatal("Model.Forward of a batch with another H×W: want an error")
	}
	bn := m.Root.(*BatchNorm2D)
	bn.Forward(s, c.X1.dense(t))
	y := bn.Forward(s, c.X.dense(t))
	checkClose(t, "y of second forward", f32(y), c.Y.floats(t), goldenTol)
	for name, g := range c.After {
		p, ok := m.Param(name)
		if !ok {
			t.Fatalf("no buffer %s", name)
		}
		checkClose(t, name, p.Data, g.floats(t), goldenTol)
	}
	if got := bn.NumBatches.Data[0]; got != 2 {
		t.Errorf("num_batches_tracked %v, want 2", got)
	}
}

// checkDropoutGolden: PyTorch's and Go's RNGs differ, so the Go forward is
// checked for the form of its own mask (y = x·mask, mask ∈ {0, 1/(1−p)},
// drop rate near p) and the backward with PyTorch's mask injected.
func checkDropoutGolden(t *testing.T, c goldenCase, pool *kernels.Pool) {
	m := goldenModel(t, c)
	d := m.Root.(*Dropout)
	s := &State{Train: c.Train, Pool: pool, RNG: rand.New(rand.NewPCG(7, 8))}
	x := c.X.floats(t)
	y, err := m.Forward(s, c.X.dense(t))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Train {
		checkClose(t, "eval y", f32(y), c.Y.floats(t), 0)
		dx := m.Root.Backward(s, c.Dy.dense(t), true)
		checkClose(t, "eval dx", f32(dx), c.Dx.floats(t), 0)
		return
	}
	scale := 1 / (1 - d.P)
	dropped := 0
	for i, v := range f32(y) {
		switch d.mask[i] {
		case 0:
			dropped++
		case scale:
		default:
			t.Fatalf("mask[%d] = %v, want 0 or %v", i, d.mask[i], scale)
		}
		if v != x[i]*d.mask[i] {
			t.Fatalf("y[%d] = %v, want x·mask = %v", i, v, x[i]*d.mask[i])
		}
	}
	n := float64(len(x))
	rate := float64(dropped) / n
	if sd := math.Sqrt(float64(d.P) * (1 - float64(d.P)) / n); math.Abs(rate-float64(d.P)) > 5*sd {
		t.Errorf("drop rate %.3f, want %.2f ± %.3f", rate, d.P, 5*sd)
	}
	copy(d.mask, c.Mask.floats(t))
	dx := m.Root.Backward(s, c.Dy.dense(t), true)
	checkClose(t, "dx with PyTorch's mask", f32(dx), c.Dx.floats(t), goldenTol)
}

func TestGoldenConv2D(t *testing.T)      { runLayerGolden(t, "conv.json") }
func TestGoldenBatchNorm2D(t *testing.T) { runLayerGolden(t, "batchnorm.json") }
func TestGoldenPooling(t *testing.T)     { runLayerGolden(t, "pool.json") }
func TestGoldenMisc(t *testing.T)        { runLayerGolden(t, "misc.json") }
func TestGoldenComposite(t *testing.T)   { runLayerGolden(t, "composite.json") }

func TestGoldenCrossEntropy(t *testing.T) {
	for _, c := range loadGolden(t, "loss.json") {
		t.Run(c.Name, func(t *testing.T) {
			var cfg struct{ LabelSmoothing float32 }
			if err := json.Unmarshal(c.Cfg, &cfg); err != nil {
				t.Fatal(err)
			}
			l := &CrossEntropy{LabelSmoothing: cfg.LabelSmoothing}
			loss, err := l.Forward(c.X.dense(t), c.Labels)
			if err != nil {
				t.Fatal(err)
			}
			if e := math.Abs(float64(loss)-c.Loss) / max(math.Abs(c.Loss), 1e-6); e > goldenTol {
				t.Errorf("loss %v, golden %v (relative error %.3g)", loss, c.Loss, e)
			}
			checkClose(t, "dlogits", f32(l.Backward()), c.Dx.floats(t), goldenTol)
		})
	}
}
