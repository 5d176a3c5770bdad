package optim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
)

// Golden values from scripts/gen_golden.py (PyTorch 1.13, float64). The
// optimizers run in float32: parameters after three steps must match with
// norm-based relative error max|a−b| / max(max|b|, 1e-6) ≤ 1e-4.
const goldenTol = 1e-4

type goldenTensor struct {
	Shape []int  `json:"shape"`
	Data  string `json:"data"`
}

func (g goldenTensor) floats(t testing.TB) []float32 {
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

func readGolden(t testing.TB, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatalf("golden file (regenerate with /usr/bin/python3 scripts/gen_golden.py): %v", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("golden file %s: %v", name, err)
	}
}

func relErr(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var diff, scale float64
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d != d {
			return math.Inf(1)
		}
		diff, scale = max(diff, d), max(scale, math.Abs(float64(b[i])))
	}
	return diff / max(scale, 1e-6)
}

type optimCase struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Cfg holds the effective hyper-parameters (PyTorch's names).
	Cfg struct {
		Momentum    float64  `json:"momentum"`
		Dampening   float64  `json:"dampening"`
		WeightDecay float64  `json:"weight_decay"`
		Eps         float64  `json:"eps"`
		Beta1       float64  `json:"beta1"`
		Beta2       float64  `json:"beta2"`
		Nesterov    bool     `json:"nesterov"`
		NoDecay     bool     `json:"nodecay"`
		Frozen      []string `json:"frozen"`
	} `json:"cfg"`
	LRs   []float64                          `json:"lrs"`
	Init  map[string]goldenTensor            `json:"init"`
	Grads []map[string]goldenTensor          `json:"grads"`
	Want  map[string]goldenTensor            `json:"want"`
	State map[string]map[string]goldenTensor `json:"state"`
}

// optimModel is the generator's parameter set: 0.weight [3,5], 0.bias [3]
// (NoDecay), 1.weight [2,3].
func optimModel(t testing.TB) *nn.Model {
	t.Helper()
	m, err := nn.NewModel(nn.NewSequential(nn.NewLinear(5, 3, true), nn.NewLinear(3, 2, false)), nn.Shape{5})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGoldenOptimizers(t *testing.T) {
	var f struct {
		Cases []optimCase `json:"cases"`
	}
	readGolden(t, "optim.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			m := optimModel(t)
			for _, p := range m.Weights {
				copy(p.Data, c.Init[p.Name].floats(t))
				p.Trainable = !slices.Contains(c.Cfg.Frozen, p.Name)
			}
			var opt Optimizer
			var err error
			cfg := c.Cfg
			switch c.Kind {
			case "sgd":
				opt, err = NewSGD(m, SGDConfig{Momentum: cfg.Momentum, Dampening: cfg.Dampening, WeightDecay: cfg.WeightDecay,
					Nesterov: cfg.Nesterov, NoDecayOnBiasAndBN: cfg.NoDecay})
			case "adam", "adamw":
				opt, err = NewAdam(m, AdamConfig{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay,
					Decoupled: c.Kind == "adamw", NoDecayOnBiasAndBN: cfg.NoDecay})
			default:
				t.Fatalf("unknown kind %q", c.Kind)
			}
			if err != nil {
				t.Fatal(err)
			}
			for step, lr := range c.LRs {
				for _, p := range m.Weights {
					if p.Trainable {
						copy(p.Grad, c.Grads[step][p.Name].floats(t))
					} else {
						clear(p.Grad) // a frozen weight's gradient stays zero
					}
				}
				opt.Step(lr)
			}
			if opt.Steps() != len(c.LRs) {
				t.Errorf("Steps() = %d, want %d", opt.Steps(), len(c.LRs))
			}
			for _, p := range m.Weights {
				if e := relErr(p.Data, c.Want[p.Name].floats(t)); e > goldenTol {
					t.Errorf("%s after %d steps: relative error %.3g\n got %v\nwant %v", p.Name, len(c.LRs), e, p.Data, c.Want[p.Name].floats(t))
				}
			}
			slots := map[string][]float32{}
			for _, s := range opt.State() {
				slots[s.Name] = s.Data
			}
			if len(slots) != len(c.State) {
				t.Errorf("optimizer state slots %v, PyTorch has %d", keys(slots), len(c.State))
			}
			for name, per := range c.State {
				data, ok := slots[name]
				if !ok {
					t.Errorf("no state slot %q", name)
					continue
				}
				off := 0
				for _, p := range m.Weights {
					got := data[off : off+len(p.Data)]
					off += len(p.Data)
					want := make([]float32, len(p.Data)) // PyTorch keeps no state for frozen params
					if g, ok := per[p.Name]; ok {
						want = g.floats(t)
					}
					if e := relErr(got, want); e > goldenTol {
						t.Errorf("state %s of %s: relative error %.3g\n got %v\nwant %v", name, p.Name, e, got, want)
					}
				}
			}
		})
	}
}

func keys(m map[string][]float32) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type scheduleCase struct {
	Name  string          `json:"name"`
	Cfg   *ScheduleConfig `json:"cfg"`
	Base  float64         `json:"base"`
	Total int             `json:"total"`
	LRs   []float64       `json:"lrs"`
}

// TestGoldenSchedules compares the learning rate of every step (the value
// the optimizer uses for update number step, 0-based) with PyTorch's
// schedulers stepped once per update. PyTorch's chainable forms compute in
// float64 recursively, so agreement is to ~1e-12.
func TestGoldenSchedules(t *testing.T) {
	var f struct {
		Cases []scheduleCase `json:"cases"`
	}
	readGolden(t, "schedule.json", &f)
	if len(f.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			s, err := c.Cfg.Build(c.Base, c.Total)
			if err != nil {
				t.Fatal(err)
			}
			for step, want := range c.LRs {
				got := s.LR(step)
				if math.Abs(got-want) > 1e-9*max(math.Abs(want), 1e-6) {
					t.Errorf("step %d: lr %.12g, PyTorch %.12g", step, got, want)
				}
			}
		})
	}
}
