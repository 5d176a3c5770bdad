package nn_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/optim"
	"gorgonia.org/tensor"
)

type trainTensor struct {
	Shape []int  `json:"shape"`
	Data  string `json:"data"`
}

func (g trainTensor) floats(t testing.TB) []float32 {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(g.Data)
	if err != nil || len(raw)%4 != 0 {
		t.Fatalf("golden tensor: %d bytes, %v", len(raw), err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

type trainCase struct {
	Name      string                 `json:"name"`
	Optimizer string                 `json:"optimizer"`
	Init      map[string]trainTensor `json:"init"`
	Batches   []struct {
		X      trainTensor `json:"x"`
		Labels []int32     `json:"labels"`
	} `json:"batches"`
	Losses []float64              `json:"losses"`
	Want   map[string]trainTensor `json:"want"`
}

// tinyNet is scripts/gen_golden.py's TinyNet.
func tinyNet(t testing.TB) *nn.Model {
	t.Helper()
	root := nn.NewNamedSequential(
		nn.Child{Name: "features", Module: nn.NewSequential(
			nn.Conv(3, 4, 3, 1, 1, false), nn.NewBatchNorm2D(4), nn.NewReLU(), nn.NewMaxPool2D(2, 0, 0, false),
			nn.Conv(4, 6, 3, 1, 0, true), nn.NewReLU())},
		nn.Child{Name: "pool", Module: nn.NewAdaptiveAvgPool2D(1, 1)},
		nn.Child{Name: "flatten", Module: nn.NewFlatten()},
		nn.Child{Name: "fc", Module: nn.NewLinear(6, 5, true)},
	)
	m, err := nn.NewModel(root, nn.Shape{3, 9, 9})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGoldenTraining runs three end-to-end training steps (forward,
// cross-entropy with label smoothing, Model.Backward, optimizer step) and
// compares every step's loss and the whole state_dict afterwards (BN
// running statistics and num_batches_tracked included) with PyTorch.
func TestGoldenTraining(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "golden", "train.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []trainCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) == 0 {
		t.Fatal("no cases")
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, c := range f.Cases {
		for _, p := range []*kernels.Pool{nil, pool} {
			t.Run(fmt.Sprintf("%s/threads=%d", c.Name, p.Threads()), func(t *testing.T) {
				m := tinyNet(t)
				if len(m.State) != len(c.Init) {
					t.Fatalf("model has %d tensors, golden %d", len(m.State), len(c.Init))
				}
				for name, g := range c.Init {
					q, ok := m.Param(name)
					if !ok {
						t.Fatalf("golden tensor %s not in model", name)
					}
					copy(q.Data, g.floats(t))
				}
				var opt optim.Optimizer
				var lr float64
				switch c.Optimizer {
				case "sgd":
					opt, err = optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9, Nesterov: true, WeightDecay: 1e-3})
					lr = 0.05
				case "adamw":
					cfg := optim.DefaultAdam()
					cfg.WeightDecay, cfg.Decoupled = 0.01, true
					opt, err = optim.NewAdam(m, cfg)
					lr = 0.01
				}
				if err != nil {
					t.Fatal(err)
				}
				s := &nn.State{Train: true, Pool: p}
				loss := &nn.CrossEntropy{LabelSmoothing: 0.1}
				for i, b := range c.Batches {
					x := tensor.New(tensor.WithShape(b.X.Shape...), tensor.WithBacking(b.X.floats(t)))
					m.ZeroGrad()
					y, err := m.Forward(s, x)
					if err != nil {
						t.Fatal(err)
					}
					l, err := loss.Forward(y, b.Labels)
					if err != nil {
						t.Fatal(err)
					}
					if e := math.Abs(float64(l)-c.Losses[i]) / c.Losses[i]; e > 1e-5 {
						t.Errorf("step %d: loss %v, PyTorch %v", i, l, c.Losses[i])
					}
					if err := m.Backward(s, loss.Backward()); err != nil {
						t.Fatal(err)
					}
					opt.Step(lr)
				}
				for name, g := range c.Want {
					q, _ := m.Param(name)
					want := g.floats(t)
					var diff, scale float64
					for i := range want {
						diff = max(diff, math.Abs(float64(q.Data[i])-float64(want[i])))
						scale = max(scale, math.Abs(float64(want[i])))
					}
					if e := diff / max(scale, 1e-6); e > 1e-4 {
						t.Errorf("%s after %d steps: relative error %.3g", name, len(c.Batches), e)
					}
				}
			})
		}
	}
}
