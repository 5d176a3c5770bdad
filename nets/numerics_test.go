package nets

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Numerics against PyTorch. scripts/gen_nets.py numerics builds the same
// net in PyTorch, fills every parameter and buffer with the deterministic
// pattern fillParam mirrors (so no weights are stored: the fixture holds the
// input, both logits and a few gradients, computed in float64), and the Go
// model filled by the same names must reproduce them within 1e-3 relative
// error, or 3× PyTorch's own float32 error where that is larger.
//
// Gradients are compared up to float32-ambiguous decisions: a ReLU input
// within rounding of 0, or a max-pool window whose top two values are, may
// be routed either way by any float32 implementation, and in train mode one
// such element can move every gradient below it by 1e-3 or more (resnet18
// at 224: a layer4.1 ReLU input of 4.7e-7 moves them by 1.8e-3). The
// fixture lists those decisions with their effect on each gradient (alt<i>);
// the test takes the set of them that explains Go's gradients best, says
// which, and applies the same tolerance to what is left.

// fnv1a32 and unitPattern mirror gen_nets.py's fnv1a32 and unit.
func fnv1a32(s string) uint32 {
	h := uint32(0x811C9DC5)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 0x01000193
	}
	return h
}

func unitPattern(seed uint32, i int) float64 {
	x := uint32(i)*0x9E3779B1 + seed
	x ^= x >> 16
	x *= 0x85EBCA6B
	x ^= x >> 13
	x *= 0xC2B2AE35
	x ^= x >> 16
	return float64(x)/4294967296.0*2.0 - 1.0
}

// fillParam sets p from its state_dict name and shape, as gen_nets.py fill.
func fillParam(p *nn.Param) {
	if strings.HasSuffix(p.Name, "num_batches_tracked") {
		p.Data[0] = 0
		return
	}
	seed := fnv1a32(p.Name)
	fanIn := 1
	for _, d := range p.Shape[min(1, len(p.Shape)):] {
		fanIn *= d
	}
	bound := math.Sqrt(6.0 / float64(fanIn))
	for i := range p.Data {
		u := unitPattern(seed, i)
		switch {
		case strings.HasSuffix(p.Name, "running_mean"):
			u = 0.1 * u
		case strings.HasSuffix(p.Name, "running_var"):
			u = 1.0 + 0.25*(u+1.0)
		case len(p.Shape) >= 2:
			u = u * bound
		case strings.HasSuffix(p.Name, "weight"):
			u = 1.0 + 0.1*u
		default:
			u = 0.1 * u
		}
		p.Data[i] = float32(u)
	}
}

// fixture is a safetensors file of F32 tensors with string metadata.
type fixture struct {
	meta    map[string]string
	tensors map[string][]float32
	shapes  map[string][]int
}

func readFixture(path string) (*fixture, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) < 8 {
		return nil, fmt.Errorf("fixture %s: %d bytes, too short for a safetensors header", path, len(raw))
	}
	hl := binary.LittleEndian.Uint64(raw)
	if hl > uint64(len(raw)-8) {
		return nil, fmt.Errorf("fixture %s: header length %d beyond the file's %d bytes", path, hl, len(raw))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+hl], &header); err != nil {
		return nil, fmt.Errorf("fixture %s: header: %w", path, err)
	}
	data := raw[8+hl:]
	f := &fixture{meta: map[string]string{}, tensors: map[string][]float32{}, shapes: map[string][]int{}}
	for k, v := range header {
		if k == "__metadata__" {
			if err := json.Unmarshal(v, &f.meta); err != nil {
				return nil, fmt.Errorf("fixture %s: metadata: %w", path, err)
			}
			continue
		}
		var e struct {
			Dtype   string `json:"dtype"`
			Shape   []int  `json:"shape"`
			Offsets [2]int `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("fixture %s: tensor %s: %w", path, k, err)
		}
		n := 1
		for _, d := range e.Shape {
			n *= d
		}
		if e.Dtype != "F32" || e.Offsets[0] < 0 || e.Offsets[1] > len(data) || e.Offsets[1]-e.Offsets[0] != 4*n {
			return nil, fmt.Errorf("fixture %s: tensor %s: dtype %s shape %v offsets %v do not fit %d data bytes", path, k, e.Dtype, e.Shape, e.Offsets, len(data))
		}
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[e.Offsets[0]+4*i:]))
		}
		f.tensors[k], f.shapes[k] = vals, e.Shape
	}
	return f, nil
}

// relErr is ‖got−want‖₂ / ‖want‖₂. A norm rather than the largest
// element: in train mode a single BN channel with a near-cancelling
// gradient can carry a large error of its own (DenseNet-201's
// features.norm5.weight: one channel of 1920 is 10% off, the rest 1e-5),
// which measures the conditioning, not the implementation.
func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

const numericsTol = 1e-3

// checkNumerics builds the fixture's net in Go and compares everything.
func checkNumerics(t *testing.T, f *fixture) {
	t.Helper()
	net := f.meta["net"]
	size, _ := strconv.Atoi(f.meta["input"])
	classes, _ := strconv.Atoi(f.meta["classes"])
	x := f.tensors["input"]
	xs := f.shapes["input"]
	base, aux := strings.CutSuffix(net, "+aux") // googlenet+aux: AuxLogits
	m, _, _, err := assemble(base, Config{Classes: classes, InputSize: size, InChannels: xs[1], AuxLogits: aux})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.State {
		fillParam(p)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	in := tensor.New(tensor.WithShape(xs...), tensor.WithBacking(x))
	// The reference is float64; PyTorch's float32 run has its own error
	// (err32), large where train-mode BN over a tiny batch makes deep
	// gradients ill-conditioned: allow 1e-3 or 3× PyTorch's own error.
	tolerance := func(what string) (tol, err32 float64) {
		err32, _ = strconv.ParseFloat(f.meta["err32."+what], 64)
		return math.Max(numericsTol, 3*err32), err32
	}
	wantOf := func(what string) []float32 {
		t.Helper()
		want, ok := f.tensors[what]
		if !ok {
			t.Fatalf("fixture has no %s", what)
		}
		return want
	}
	checkWant := func(what string, got, want []float32, note string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s %s: %d values, PyTorch has %d", net, what, len(got), len(want))
		}
		tol, err32 := tolerance(what)
		if e := relErr(got, want); e > tol || math.IsNaN(e) {
			t.Errorf("%s %s: relative error %.3g > %.3g%s (PyTorch float32: %.3g; got[0:3] %v, want %v)", net, what, e, tol, note, err32, got[:min(3, len(got))], want[:min(3, len(want))])
		} else {
			t.Logf("%s %s: relative error %.2g%s (PyTorch float32: %.2g)", net, what, e, note, err32)
		}
	}
	check := func(what string, got []float32) {
		t.Helper()
		checkWant(what, got, wantOf(what), "")
	}

	y, err := m.Forward(&nn.State{Pool: pool}, in)
	if err != nil {
		t.Fatal(err)
	}
	check("logits_eval", y.Float32s())

	for _, l := range m.Layers { // PyTorch's side ran train mode with p = 0
		if d, ok := l.Module.(*nn.Dropout); ok {
			d.P = 0
		}
	}
	s := &nn.State{Train: true, Pool: pool, RNG: rand.New(rand.NewPCG(1, 2))}
	y, err = m.Forward(s, in)
	if err != nil {
		t.Fatal(err)
	}
	check("logits_train", y.Float32s())
	labels := make([]int32, xs[0])
	for i, v := range f.tensors["labels"] {
		labels[i] = int32(v)
	}
	var ce nn.CrossEntropy
	loss, err := ce.Forward(y, labels)
	if err != nil {
		t.Fatal(err)
	}
	heads := AuxHeads(m)
	if aux != (len(heads) == 2) {
		t.Fatalf("%s: %d aux heads", net, len(heads))
	}
	for _, h := range heads { // loss += 0.3·CE(aux), as torchvision's reference training
		check(h.Name+"_train", h.Logits().Float32s())
		var hce nn.CrossEntropy
		l, err := hce.Forward(h.Logits(), labels)
		if err != nil {
			t.Fatal(err)
		}
		loss += 0.3 * l
		g := hce.Backward()
		for i, v := range g.Float32s() {
			g.Float32s()[i] = 0.3 * v
		}
		h.SetGrad(g)
	}
	if want, _ := strconv.ParseFloat(f.meta["loss"], 64); math.Abs(float64(loss)-want) > numericsTol*math.Max(1, math.Abs(want)) {
		t.Errorf("%s loss %v, PyTorch %v", net, loss, want)
	}
	m.ZeroGrad()
	if err := m.Backward(s, ce.Backward()); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range f.tensors {
		if strings.HasPrefix(k, "grad.") || strings.HasPrefix(k, "after.") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if len(names) < 2 {
		t.Errorf("fixture has only %d gradient/statistics tensors", len(names))
	}
	got := map[string][]float32{}
	for _, k := range names {
		name, isGrad := strings.CutPrefix(k, "grad.")
		if !isGrad {
			name = strings.TrimPrefix(k, "after.")
		}
		p, ok := m.Param(name)
		if !ok {
			t.Errorf("%s: PyTorch's %s has no Go parameter", net, name)
			continue
		}
		if isGrad {
			got[k] = p.Grad
		} else {
			got[k] = p.Data
		}
		if len(got[k]) != len(wantOf(k)) {
			t.Fatalf("%s %s: %d values, PyTorch has %d", net, k, len(got[k]), len(wantOf(k)))
		}
	}
	want, taken := explainAmbiguous(f, got, tolerance)
	note := ""
	if len(taken) > 0 {
		note = fmt.Sprintf(" with %d float32-ambiguous decision(s) taken the other way", len(taken))
		for _, i := range taken {
			t.Logf("%s: taken the other way: %s", net, f.meta["alt"+strconv.Itoa(i)])
		}
	}
	for _, k := range names {
		if g, ok := got[k]; ok {
			if w, ok := want[k]; ok {
				t.Logf("%s %s: relative error %.2g against the float64 reference as written", net, k, relErr(g, wantOf(k)))
				checkWant(k, g, w, note)
			} else {
				check(k, g)
			}
		}
	}
}

// explainAmbiguous picks, from the fixture's alternatives (alt<i>.<key>:
// the change of gradient <key> when float32-ambiguous decision i goes the
// other way), the set that brings got closest to the reference: it
// minimises Σ_key (relErr/tol)² by single toggles, largest gain first,
// until none helps (each alternative moves the gradients by far more than
// float32 noise, so the set is well determined). It returns the reference
// with those changes applied, for the keys they touch, and the set.
func explainAmbiguous(f *fixture, got map[string][]float32, tolerance func(string) (float64, float64)) (map[string][]float32, []int) {
	n, _ := strconv.Atoi(f.meta["alts"])
	if n == 0 {
		return nil, nil
	}
	type term struct {
		w     float64   // 1/(‖want‖·tol)²
		r     []float64 // got − want − Σ taken Δ
		delta [][]float64
	}
	var keys []string // sorted: the sums, and so the choice, do not depend on map order
	for k := range got {
		if strings.HasPrefix(k, "grad.") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	terms := make([]*term, len(keys))
	for ti, k := range keys {
		g := got[k]
		want := f.tensors[k]
		tr := &term{r: make([]float64, len(g)), delta: make([][]float64, n)}
		var ww float64
		for i, v := range want {
			ww += float64(v) * float64(v)
			tr.r[i] = float64(g[i]) - float64(v)
		}
		tol, _ := tolerance(k)
		tr.w = 1 / (max(ww, 1e-300) * tol * tol)
		for i := range n {
			if d, ok := f.tensors["alt"+strconv.Itoa(i)+"."+k]; ok && len(d) == len(g) {
				tr.delta[i] = make([]float64, len(d))
				for j, v := range d {
					tr.delta[i][j] = float64(v)
				}
			}
		}
		terms[ti] = tr
	}
	taken := make([]bool, n)
	for range 4 * n { // each toggle lowers the objective, so this never binds
		best, gain := -1, 0.0
		for i := range n {
			sign := 1.0 // taking i subtracts Δ_i from the residual; dropping it adds it back
			if taken[i] {
				sign = -1
			}
			var g float64 // objective decrease
			for _, tr := range terms {
				d := tr.delta[i]
				if d == nil {
					continue
				}
				var rd, dd float64
				for j, v := range d {
					rd += tr.r[j] * v
					dd += v * v
				}
				g += tr.w * (2*sign*rd - dd)
			}
			if g > gain {
				best, gain = i, g
			}
		}
		if best < 0 {
			break
		}
		sign := 1.0
		if taken[best] {
			sign = -1
		}
		taken[best] = !taken[best]
		for _, tr := range terms {
			for j, v := range tr.delta[best] {
				tr.r[j] -= sign * v
			}
		}
	}
	var set []int
	for i, ok := range taken {
		if ok {
			set = append(set, i)
		}
	}
	if len(set) == 0 {
		return nil, nil
	}
	want := map[string][]float32{}
	for ti, tr := range terms {
		k := keys[ti]
		w := make([]float32, len(tr.r))
		for j, v := range got[k] {
			w[j] = float32(float64(v) - tr.r[j])
		}
		want[k] = w
	}
	return want, set
}

// TestNumericsFixtures checks the committed fixtures (no PyTorch needed).
func TestNumericsFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/numerics_*.safetensors")
	if len(files) == 0 {
		t.Fatal("no testdata/numerics_*.safetensors (scripts/gen_nets.py numerics writes them)")
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".safetensors"), func(t *testing.T) {
			f, err := readFixture(path)
			if err != nil {
				t.Fatal(err)
			}
			checkNumerics(t, f)
		})
	}
}

// numericsCases: net and input side for the on-the-fly comparison. The
// default run covers the two branchy nets (Concat, dense layers) that the
// committed fixtures (lenet, alexnet, resnet18) do not; RINGTRAIN_SLOW=1
// adds every other variant (VGG's 120M-parameter classifier included:
// minutes per net on this machine, mostly PyTorch's float64 reference).
// The deepest nets run at 128×128: at 64×64 their train-mode gradients are
// so ill-conditioned (BN over 2·2×2 values in the last stage) that PyTorch's
// own float32 run is off float64 by up to 30% on some tensors.
//
// exhaustive cases (RINGTRAIN_EXHAUSTIVE=1) repeat what a slow case already
// covers with another depth (the VGG family: minutes each); CI's slow run
// leaves them out to stay inside its budget. resnet18@224 and
// densenet201@128 were kept there as open deviations (1.8e-3 and 1.2–1.4%
// off float64) until the comparison learnt float32-ambiguous decisions
// (top of this file): with the ReLU/max-pool decisions Go routed the other
// way (3 and 15 of them) they are 3e-6 and 0.9–3.2e-3 off, PyTorch's own
// float32 run 1.1e-4 and 3.5–6.1e-3.
var numericsCases = []struct {
	net        string
	input      int
	slow       bool
	exhaustive bool
}{
	{"googlenet+aux", 64, false, false},
	{"densenet121", 64, false, false},
	{"googlenet", 64, true, false},
	{"alexnet-2012", 67, true, false},
	{"nin", 67, true, false},
	{"resnet50", 64, true, false},
	{"vgg11_bn", 32, true, false},
	{"vgg11", 32, true, true},
	{"vgg13", 32, true, true},
	{"vgg16", 32, true, false},
	{"vgg19", 32, true, true},
	{"vgg13_bn", 32, true, true},
	{"vgg16_bn", 32, true, true},
	{"vgg19_bn", 32, true, true},
	{"resnet34", 64, true, false},
	{"resnet101", 128, true, false},
	{"resnet152", 128, true, false},
	{"densenet169", 64, true, false},
	{"densenet201", 128, true, false},
	{"alexnet", 224, true, false},
	{"resnet18", 224, true, false},
}

const python = "/usr/bin/python3"

func torchAvailable() bool {
	return exec.Command(python, "-c", "import torch, torchvision").Run() == nil
}

// TestNumericsTorch generates fixtures with PyTorch on the fly. It skips
// only when torch cannot be imported, and under -short.
func TestNumericsTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: PyTorch comparison skipped")
	}
	if !torchAvailable() {
		t.Skip(python + ": cannot import torch/torchvision")
	}
	dir := t.TempDir()
	for _, tc := range numericsCases {
		t.Run(fmt.Sprintf("%s@%d", tc.net, tc.input), func(t *testing.T) {
			if tc.slow && !slow() {
				t.Skip("RINGTRAIN_SLOW=1 only")
			}
			if tc.exhaustive && os.Getenv("RINGTRAIN_EXHAUSTIVE") == "" {
				t.Skip("RINGTRAIN_EXHAUSTIVE=1 only")
			}
			out := filepath.Join(dir, tc.net+".safetensors")
			cmd := exec.Command(python, "../scripts/gen_nets.py", "numerics", "--net", tc.net, "--input", strconv.Itoa(tc.input), "--out", out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("gen_nets.py: %v\n%s", err, b)
			}
			f, err := readFixture(out)
			if err != nil {
				t.Fatal(err)
			}
			checkNumerics(t, f)
			os.Remove(out)
		})
	}
}

// TestExplainAmbiguous: the alternatives taken are the ones in got, and the
// reference they give is want plus their changes.
func TestExplainAmbiguous(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vec := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(scale * rng.NormFloat64())
		}
		return v
	}
	want := map[string][]float32{"grad.a": vec(50, 1), "grad.b": vec(20, 1)}
	alts := []map[string][]float32{
		{"grad.a": vec(50, 0.01), "grad.b": vec(20, 0.01)},
		{"grad.a": vec(50, 0.003)},
		{"grad.b": vec(20, 0.02)},
	}
	f := &fixture{meta: map[string]string{"alts": strconv.Itoa(len(alts))}, tensors: map[string][]float32{}}
	for k, v := range want {
		f.tensors[k] = v
	}
	for i, a := range alts {
		for k, v := range a {
			f.tensors["alt"+strconv.Itoa(i)+"."+k] = v
		}
	}
	tol := func(string) (float64, float64) { return numericsTol, 0 }
	for _, tc := range []struct {
		name  string
		taken []int
	}{
		{"none", nil},
		{"one", []int{1}},
		{"two", []int{0, 2}},
		{"all", []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string][]float32{}
			for k, w := range want {
				g := vec(len(w), 1e-6) // float32-sized noise
				for i := range g {
					g[i] += w[i]
					for _, a := range tc.taken {
						if d, ok := alts[a][k]; ok {
							g[i] += d[i]
						}
					}
				}
				got[k] = g
			}
			ref, taken := explainAmbiguous(f, got, tol)
			if fmt.Sprint(taken) != fmt.Sprint(tc.taken) {
				t.Fatalf("taken %v, want %v", taken, tc.taken)
			}
			for k, g := range got {
				w := want[k]
				if ref != nil {
					w = ref[k]
				}
				if e := relErr(g, w); e > 1e-5 {
					t.Errorf("%s: %.3g off the explained reference", k, e)
				}
			}
		})
	}
	f.meta["alts"] = "0"
	if ref, taken := explainAmbiguous(f, want, tol); ref != nil || taken != nil {
		t.Errorf("no alternatives: got %v %v", ref, taken)
	}
}
