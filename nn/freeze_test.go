package nn

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// spy wraps a module and records its Backward calls.
type spy struct {
	Module
	needDx []bool // one entry per Backward call
}

// ResetParameters forwards initialisation (an embedded interface does not
// promote it).
func (s *spy) ResetParameters(rng *rand.Rand) {
	if in, ok := s.Module.(Initializer); ok {
		in.ResetParameters(rng)
	}
}

func (s *spy) Backward(st *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	s.needDx = append(s.needDx, needDx)
	return s.Module.Backward(st, dy, needDx)
}

type spyNet struct {
	m                               *Model
	conv0, bn0, relu0, conv1, relu1 *spy
	pool, fc, inc1, inc2, res       *spy
	spies                           []*spy
	x, dy                           *tensor.Dense
}

// newSpyNet: features (conv0 bn0 relu0 conv1 relu1), block (a residual
// with a projection shortcut), inception (two branches), pool, flatten, fc.
func newSpyNet(t *testing.T) *spyNet {
	t.Helper()
	n := &spyNet{}
	sp := func(m Module) *spy { s := &spy{Module: m}; n.spies = append(n.spies, s); return s }
	n.conv0, n.bn0, n.relu0 = sp(Conv(3, 4, 3, 1, 1, true)), sp(NewBatchNorm2D(4)), sp(NewReLU())
	n.conv1, n.relu1 = sp(Conv(4, 4, 3, 1, 1, true)), sp(NewReLU())
	n.res = sp(Conv(4, 6, 3, 2, 1, false))
	block := NewResidual(NewSequential(n.res, NewBatchNorm2D(6)), "downsample",
		NewSequential(Conv(4, 6, 1, 2, 0, false), NewBatchNorm2D(6)), NewReLU())
	n.inc1, n.inc2 = sp(Conv(6, 2, 1, 1, 0, true)), sp(Conv(6, 3, 3, 1, 1, true))
	inc := NewConcat(Child{"branch1", n.inc1}, Child{"branch2", NewSequential(n.inc2, NewReLU())})
	n.pool, n.fc = sp(NewAdaptiveAvgPool2D(1, 1)), sp(NewLinear(5, 3, true))
	root := NewNamedSequential(
		Child{"features", NewSequential(n.conv0, n.bn0, n.relu0, n.conv1, n.relu1)},
		Child{"block", block},
		Child{"inception", inc},
		Child{"pool", n.pool},
		Child{"flatten", NewFlatten()},
		Child{"fc", n.fc},
	)
	m, err := NewModel(root, Shape{3, 6, 6})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	m.Reset(rng)
	randomizeBN(m, rng)
	n.m = m
	n.x = tensor.New(tensor.WithShape(2, 3, 6, 6), tensor.WithBacking(normals(rng, 2*3*6*6)))
	n.dy = tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(normals(rng, 6)))
	return n
}

// step runs forward and Model.Backward and returns the GradReady calls.
func (n *spyNet) step(t *testing.T, pool *kernels.Pool) map[*Param]int {
	t.Helper()
	for _, s := range n.spies {
		s.needDx = nil
	}
	ready := map[*Param]int{}
	st := &State{Train: true, Pool: pool, GradReady: func(p *Param) { ready[p]++ }}
	if _, err := n.m.Forward(st, n.x); err != nil {
		t.Fatal(err)
	}
	if err := n.m.Backward(st, n.dy); err != nil {
		t.Fatal(err)
	}
	return ready
}

func nonzero(v []float32) bool { return slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) }

// checkFrozen: frozen weights have an all-zero gradient and no GradReady,
// trainable ones a non-zero gradient and exactly one GradReady.
func checkFrozen(t *testing.T, m *Model, ready map[*Param]int) {
	t.Helper()
	for _, p := range m.Weights {
		switch {
		case !p.Trainable && nonzero(p.Grad):
			t.Errorf("frozen %s has a gradient", p.Name)
		case !p.Trainable && ready[p] != 0:
			t.Errorf("GradReady called %d times for frozen %s", ready[p], p.Name)
		case p.Trainable && !nonzero(p.Grad):
			t.Errorf("trainable %s has no gradient", p.Name)
		case p.Trainable && ready[p] != 1:
			t.Errorf("GradReady called %d times for %s, want 1", ready[p], p.Name)
		}
	}
}

func checkCalls(t *testing.T, name string, s *spy, want ...bool) {
	t.Helper()
	if !slices.Equal(s.needDx, want) {
		t.Errorf("%s: Backward calls with needDx %v, want %v", name, s.needDx, want)
	}
}

func TestFreezeBottomLayersSkipsTheirBackward(t *testing.T) {
	n := newSpyNet(t)
	if err := n.m.FreezeUntil("features.1"); err != nil { // conv0 and bn0
		t.Fatal(err)
	}
	checkFrozen(t, n.m, n.step(t, nil))
	checkCalls(t, "conv0 (frozen, bottom)", n.conv0)
	checkCalls(t, "bn0 (frozen)", n.bn0)
	checkCalls(t, "relu0 (below the lowest trainable layer)", n.relu0)
	checkCalls(t, "conv1 (lowest trainable: no dx needed)", n.conv1, false)
	checkCalls(t, "relu1", n.relu1, true)
	checkCalls(t, "block body conv", n.res, true)
	checkCalls(t, "fc", n.fc, true)
}

func TestFreezeAllButHead(t *testing.T) {
	n := newSpyNet(t)
	if err := n.m.FreezeUntil("pool"); err != nil {
		t.Fatal(err)
	}
	if _, trainable := n.m.NumParams(); trainable != 5*3+3 {
		t.Fatalf("trainable parameters %d, want the head's %d", trainable, 5*3+3)
	}
	checkFrozen(t, n.m, n.step(t, nil))
	for i, s := range n.spies {
		if s != n.fc && len(s.needDx) > 0 {
			t.Errorf("spy %d (%s): Backward called below the trainable head", i, s.Kind())
		}
	}
	checkCalls(t, "fc (head)", n.fc, false)
}

func TestFreezeMiddleLayerStillPropagates(t *testing.T) {
	n := newSpyNet(t)
	if got := n.m.SetTrainable("features.3", false); got != 2 {
		t.Fatalf("SetTrainable(features.3) matched %d parameters, want 2", got)
	}
	if got := n.m.SetTrainable("inception.branch1", false); got != 2 {
		t.Fatalf("SetTrainable(inception.branch1) matched %d parameters, want 2", got)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	checkFrozen(t, n.m, n.step(t, pool))
	checkCalls(t, "conv1 (frozen, but conv0 below is trainable)", n.conv1, true)
	checkCalls(t, "conv0 (lowest trainable)", n.conv0, false)
	// A frozen Concat branch still routes dx to the layers below.
	checkCalls(t, "inception.branch1 (frozen)", n.inc1, true)
}

func TestFreezeBranchOfConcatAtTheBottom(t *testing.T) {
	n := newSpyNet(t)
	n.m.FreezeUntil("block.downsample.1")
	n.m.SetTrainable("inception.branch1", false)
	checkFrozen(t, n.m, n.step(t, nil))
	checkCalls(t, "inception.branch1 (frozen, nothing below trainable)", n.inc1)
	checkCalls(t, "inception.branch2", n.inc2, false)
	checkCalls(t, "block body", n.res)
}

func TestFreezePartOfALayer(t *testing.T) {
	n := newSpyNet(t)
	bias, _ := n.m.Param("features.0.bias")
	bnw, _ := n.m.Param("features.1.weight")
	bias.Trainable, bnw.Trainable = false, false
	checkFrozen(t, n.m, n.step(t, nil))
}

func TestFreezeEverything(t *testing.T) {
	n := newSpyNet(t)
	n.m.SetTrainable("", false)
	checkFrozen(t, n.m, n.step(t, nil))
	for i, s := range n.spies {
		if len(s.needDx) > 0 {
			t.Errorf("spy %d (%s): Backward called on a frozen model", i, s.Kind())
		}
	}
	if nonzero(n.m.Grad) {
		t.Error("frozen model has gradients")
	}
}

// TestGradReadyComplete: GradReady fires once per trainable parameter, and
// when it fires the gradient is final (a DDP bucket may be sent at once).
// Gradients accumulate across backward passes until ZeroGrad.
func TestGradReadyComplete(t *testing.T) {
	for _, pool := range []*kernels.Pool{nil, kernels.NewPool(2)} {
		n := newSpyNet(t)
		snap := map[*Param][]float32{}
		st := &State{Train: true, Pool: pool, GradReady: func(p *Param) {
			if _, dup := snap[p]; dup {
				t.Errorf("GradReady twice for %s", p.Name)
			}
			snap[p] = slices.Clone(p.Grad)
		}}
		if _, err := n.m.Forward(st, n.x); err != nil {
			t.Fatal(err)
		}
		if err := n.m.Backward(st, n.dy); err != nil {
			t.Fatal(err)
		}
		if len(snap) != len(n.m.Weights) {
			t.Errorf("threads %d: GradReady for %d of %d parameters", pool.Threads(), len(snap), len(n.m.Weights))
		}
		for _, p := range n.m.Weights {
			if !slices.Equal(snap[p], p.Grad) {
				t.Errorf("threads %d: %s changed after GradReady", pool.Threads(), p.Name)
			}
		}
		first := slices.Clone(n.m.Grad)
		if !nonzero(first) {
			t.Fatal("no gradients")
		}
		clear(snap)
		n.m.Forward(st, n.x)
		n.m.Backward(st, n.dy)
		for i, g := range n.m.Grad {
			// BN's running statistics moved between the passes, but in
			// training the output uses batch statistics only.
			if d := g - 2*first[i]; d > 1e-5*max(1, abs32(first[i])) || d < -1e-5*max(1, abs32(first[i])) {
				t.Fatalf("threads %d: gradient %d after two passes %v, want 2×%v (accumulation)", pool.Threads(), i, g, first[i])
			}
		}
		n.m.ZeroGrad()
		if nonzero(n.m.Grad) {
			t.Error("ZeroGrad left gradients")
		}
		pool.Close()
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// TestFrozenBatchNormUsesRunningStats: a BatchNorm2D with both affine
// parameters frozen normalises with its running statistics in training
// too and leaves them unchanged (Keras fine-tuning behaviour).
func TestFrozenBatchNormUsesRunningStats(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	m, err := NewModel(NewSequential(NewBatchNorm2D(3)), Shape{3, 2, 2})
	if err != nil {
		t.Fatal(err)
	}
	randomizeBN(m, rng)
	x := tensor.New(tensor.WithShape(4, 3, 2, 2), tensor.WithBacking(normals(rng, 48)))
	eval, _ := m.Forward(&State{}, x)
	want := slices.Clone(f32(eval))
	m.SetTrainable("", false)
	before := slices.Clone(m.State[2].Data)
	train, _ := m.Forward(&State{Train: true}, x)
	if !slices.Equal(f32(train), want) {
		t.Error("frozen BN in training differs from evaluation")
	}
	if !slices.Equal(m.State[2].Data, before) || m.State[4].Data[0] != 0 {
		t.Error("frozen BN updated its running statistics")
	}
}
