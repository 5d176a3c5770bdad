package nets

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
)

// torchvisionKeys is nets/testdata/torchvision_keys.json, written by
// scripts/gen_nets.py keys: per net, its learnable parameter count and the
// ordered state_dict keys with shapes at 1000 classes.
type torchvisionKeys map[string]struct {
	Params int                  `json:"params"`
	Keys   [][2]json.RawMessage `json:"keys"`
}

type keyShape struct {
	Name  string
	Shape []int
}

func loadTorchvisionKeys(t *testing.T) map[string]struct {
	params int
	keys   []keyShape
} {
	t.Helper()
	raw, err := os.ReadFile("testdata/torchvision_keys.json")
	if err != nil {
		t.Fatal(err)
	}
	var tk torchvisionKeys
	if err := json.Unmarshal(raw, &tk); err != nil {
		t.Fatalf("torchvision_keys.json: %v", err)
	}
	out := map[string]struct {
		params int
		keys   []keyShape
	}{}
	for name, e := range tk {
		var ks []keyShape
		for _, k := range e.Keys {
			var s keyShape
			if err := json.Unmarshal(k[0], &s.Name); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(k[1], &s.Shape); err != nil {
				t.Fatal(err)
			}
			ks = append(ks, s)
		}
		out[name] = struct {
			params int
			keys   []keyShape
		}{e.Params, ks}
	}
	return out
}

func shapeString(s []int) string { return fmt.Sprint(s) }

// compareState checks m's state_dict names, shapes and order against want.
func compareState(t *testing.T, net string, got []*nn.Param, want []keyShape) {
	t.Helper()
	n := min(len(got), len(want))
	bad := 0
	for i := 0; i < n && bad < 5; i++ {
		gs := got[i].Shape
		if len(gs) == 0 && got[i].Kind == nn.Counter {
			gs = []int{}
		}
		if got[i].Name != want[i].Name || shapeString(gs) != shapeString(want[i].Shape) {
			t.Errorf("%s: key %d: got %s %v, torchvision has %s %v", net, i, got[i].Name, gs, want[i].Name, want[i].Shape)
			bad++
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d state_dict entries, torchvision has %d", net, len(got), len(want))
		for i := n; i < len(got) && i < n+3; i++ {
			t.Errorf("  extra: %s", got[i].Name)
		}
		for i := n; i < len(want) && i < n+3; i++ {
			t.Errorf("  missing: %s", want[i].Name)
		}
	}
}

// fullBuildLimit: nets with more parameters than this are only assembled
// (module tree, names, shapes) in the default test run; a full Build
// (shape check, arenas, initialisation) of VGG's 140M parameters takes tens
// of seconds on a shared machine. RINGTRAIN_SLOW=1 builds every net fully.
const fullBuildLimit = 12_000_000

func slow() bool { return os.Getenv("RINGTRAIN_SLOW") == "1" }

// assembled returns the state_dict of name's module tree without running
// nn.NewModel (no arena is touched), named by the same rule NewModel uses.
func assembled(t *testing.T, name string, cfg Config) (state []*nn.Param, params int) {
	t.Helper()
	spec, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Classes == 0 {
		cfg.Classes = 1000
	}
	if cfg.InChannels == 0 {
		cfg.InChannels = spec.DefaultChannels
	}
	if cfg.InputSize == 0 {
		cfg.InputSize = spec.DefaultInput
	}
	root, err := spec.build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, m nn.Module)
	walk = func(prefix string, m nn.Module) {
		for _, p := range m.Params() {
			q := *p
			q.Name = prefix + p.Local
			state = append(state, &q)
			if p.Kind == nn.Weight {
				params += len(p.Data)
			}
		}
		for _, c := range m.Children() {
			walk(prefix+c.Name+".", c.Module)
		}
	}
	walk("", root)
	return state, params
}

// TestTorchvisionKeys compares every registered net's state_dict keys,
// shapes and order and its parameter count (1000 classes, default input)
// with torchvision's. Nets up to fullBuildLimit parameters go through the
// full Build, which also checks every layer's shapes.
func TestTorchvisionKeys(t *testing.T) {
	ref := loadTorchvisionKeys(t)
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			want, ok := ref[name]
			if !ok {
				t.Fatalf("%s missing from testdata/torchvision_keys.json (rerun scripts/gen_nets.py keys)", name)
			}
			state, total := assembled(t, name, Config{})
			if total <= fullBuildLimit || slow() {
				m, err := Build(name, Config{})
				if err != nil {
					t.Fatal(err)
				}
				state = m.State
				total, _ = m.NumParams()
			}
			compareState(t, name, state, want.keys)
			if total != want.params {
				t.Errorf("%s: %d parameters, torchvision has %d", name, total, want.params)
			}
			// Hand the freed arenas back to the OS: the next net's huge
			// make()s then get fresh zero pages instead of cleared reused ones.
			state = nil
			debug.FreeOSMemory()
		})
	}
}

// TestKnownParamCounts pins the counts quoted in the literature/Keras docs,
// independently of the generated file.
func TestKnownParamCounts(t *testing.T) {
	for _, tc := range []struct {
		net    string
		cfg    Config
		params int
	}{
		{"alexnet", Config{}, 61_100_840},
		{"vgg11", Config{}, 132_863_336},
		{"vgg16", Config{}, 138_357_544},
		{"vgg19", Config{}, 143_667_240},
		{"vgg16", Config{NoTop: true}, 14_714_688}, // Keras VGG16(include_top=False)
		{"googlenet", Config{}, 6_624_904},
		{"resnet18", Config{}, 11_689_512},
		{"resnet34", Config{}, 21_797_672},
		{"resnet50", Config{}, 25_557_032},
		{"densenet121", Config{}, 7_978_856},
	} {
		if _, err := Lookup(tc.net); err != nil {
			t.Errorf("%s: not registered", tc.net)
			continue
		}
		if _, total := assembled(t, tc.net, tc.cfg); total != tc.params {
			t.Errorf("%s %+v: %d parameters, want %d", tc.net, tc.cfg, total, tc.params)
		}
	}
}

func TestGoogLeNetAuxKeys(t *testing.T) {
	ref := loadTorchvisionKeys(t)["googlenet+aux"]
	m, err := Build("googlenet", Config{AuxLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	compareState(t, "googlenet+aux", m.State, ref.keys)
	if total, _ := m.NumParams(); total != ref.params {
		t.Errorf("googlenet+aux: %d parameters, torchvision has %d", total, ref.params)
	}
	if n := len(AuxHeads(m)); n != 2 {
		t.Errorf("googlenet+aux: %d aux heads, want 2", n)
	}
}

func TestVGG16NoTopKeys(t *testing.T) {
	ref := loadTorchvisionKeys(t)["vgg16_notop"]
	m, err := Build("vgg16", Config{NoTop: true})
	if err != nil {
		t.Fatal(err)
	}
	compareState(t, "vgg16 notop", m.State, ref.keys)
	if !m.Out.Equal(nn.Shape{512, 7, 7}) {
		t.Errorf("vgg16 notop output %v, want [512 7 7]", m.Out)
	}
}
