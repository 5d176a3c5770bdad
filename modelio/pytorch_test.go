package modelio_test

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Import/export against PyTorch, for every architecture: PyTorch
// (scripts/gen_transfer.py make) builds the model with a seeded random init,
// saves it as .pth and as safetensors with an input and its eval-mode
// logits; ringtrain imports both strictly and must reproduce the logits.
// Then ringtrain exports its state (Tensors, TorchCompat,
// WriteSafetensorsFile), PyTorch loads it with load_state_dict(strict=True)
// (gen_transfer.py check) and must give ringtrain's logits.

const python = "/usr/bin/python3"

// importExportTol is the relative logit error allowed (max|Δ| / max|want|).
const importExportTol = 1e-3

// roundTripCase is a net with a small input (at least its minimum size).
type roundTripCase struct {
	net  string
	size int
	slow bool // only with RINGTRAIN_SLOW=1
}

func roundTripCases() []roundTripCase {
	fast := map[string]bool{"lenet": true, "nin": true, "googlenet": true, "resnet18": true}
	var cs []roundTripCase
	for _, name := range nets.Names() {
		spec, err := nets.Lookup(name)
		if err != nil {
			panic(err)
		}
		size := max(spec.MinInput, 32)
		if name == "lenet" {
			size = 28
		}
		cs = append(cs, roundTripCase{net: name, size: size, slow: !fast[name]})
	}
	return cs
}

// needTorch skips when PyTorch is not importable (CI installs it).
func needTorch(t *testing.T) {
	t.Helper()
	if err := exec.Command(python, "-c", "import torch, torchvision").Run(); err != nil {
		t.Skipf("%s cannot import torch/torchvision (%v): apt-get install python3-torch python3-torchvision", python, err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func runPython(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(python, append([]string{filepath.Join(repoRoot(t), "scripts", "gen_transfer.py")}, args...)...)
	cmd.Env = append(os.Environ(), "RINGTRAIN_TORCH_THREADS=2")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gen_transfer.py %s: %v\n%s", args[0], err, out)
	}
	t.Logf("gen_transfer.py %s (%.1fs):\n%s", args[0], time.Since(start).Seconds(), strings.TrimSpace(string(out)))
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-float64(want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	if den == 0 {
		return num
	}
	return num / den
}

// readTensors reads a safetensors/.pth file into a map by name.
func readTensors(t *testing.T, path string) map[string]checkpoint.Tensor {
	t.Helper()
	ts, _, err := checkpoint.ReadTensorFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]checkpoint.Tensor, len(ts))
	for _, x := range ts {
		m[x.Name] = x
	}
	return m
}

func channelsOf(net string) int {
	if net == "lenet" {
		return 1
	}
	return 3
}

// buildNet builds net at the case's size with 10 classes, initialised from
// a seed PyTorch never saw (so a load that skips a tensor shows).
func buildNet(t *testing.T, c roundTripCase) *nn.Model {
	t.Helper()
	m, err := nets.Build(c.net, nets.Config{Classes: 10, InChannels: channelsOf(c.net), InputSize: c.size, Seed: 12345})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func forward(t *testing.T, m *nn.Model, pool *kernels.Pool, x checkpoint.Tensor) []float32 {
	t.Helper()
	xt := tensor.New(tensor.WithShape(x.Shape...), tensor.WithBacking(append([]float32(nil), x.Data...)))
	y, err := m.Forward(&nn.State{Pool: pool}, xt) // eval mode
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), y.Float32s()...)
}

func TestImportExportMatchesPyTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PyTorch twice (~30 s CPU)")
	}
	needTorch(t)
	slow := os.Getenv("RINGTRAIN_SLOW") == "1"
	var cases []roundTripCase
	var skipped []string
	only := map[string]bool{} // RINGTRAIN_NETS=vgg11,resnet50 narrows the set
	for _, n := range strings.Split(os.Getenv("RINGTRAIN_NETS"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			only[n] = true
		}
	}
	for _, c := range roundTripCases() {
		if len(only) > 0 && !only[c.net] {
			continue
		}
		if c.slow && !slow {
			skipped = append(skipped, c.net)
			continue
		}
		// VGG's depth variants repeat vgg16/vgg11_bn at minutes each: only
		// RINGTRAIN_EXHAUSTIVE=1 runs them (CI's slow run has a budget).
		if strings.HasPrefix(c.net, "vgg") && c.net != "vgg16" && c.net != "vgg11_bn" && os.Getenv("RINGTRAIN_EXHAUSTIVE") == "" && len(only) == 0 {
			skipped = append(skipped, c.net)
			continue
		}
		cases = append(cases, c)
	}
	if len(skipped) > 0 {
		t.Logf("skipped here (RINGTRAIN_SLOW=1 or RINGTRAIN_EXHAUSTIVE=1 run them): %s", strings.Join(skipped, " "))
	}
	dir := t.TempDir()
	var mk []string
	for _, c := range cases {
		mk = append(mk, fmt.Sprintf("%s:%d", c.net, c.size))
	}
	runPython(t, append([]string{"make", "--out-dir", dir, "--classes", "10"}, mk...)...)

	pool := kernels.NewPool(2)
	defer pool.Close()
	goLogits := map[string][]float32{}
	var check []string
	for _, c := range cases {
		base := filepath.Join(dir, c.net)
		io := readTensors(t, base+".io.safetensors")
		x, want := io["input"], io["logits"].Data
		// A degenerate fixture (dead ReLUs: every sample's logits the same)
		// would prove nothing about the weights in the middle of the net.
		if half := len(want) / 2; relErr(want[:half], want[half:]) < 1e-3 {
			t.Fatalf("%s: PyTorch's logits do not depend on the input (%v vs %v): fixture too degenerate", c.net, want[:3], want[half:half+3])
		}
		var states [][]float32
		var m *nn.Model
		for _, ext := range []string{".pth", ".safetensors"} {
			m = buildNet(t, c)
			rep, err := modelio.ImportFile(m, base+ext, true)
			if err != nil {
				t.Fatalf("%s%s: %v", c.net, ext, err)
			}
			if !rep.OK() || len(rep.Loaded) != len(m.State) {
				t.Fatalf("%s%s: strict import %s, model has %d tensors", c.net, ext, rep, len(m.State))
			}
			got := forward(t, m, pool, x)
			if len(got) != len(want) {
				t.Fatalf("%s%s: %d logits, PyTorch has %d", c.net, ext, len(got), len(want))
			}
			if e := relErr(got, want); e > importExportTol || math.IsNaN(e) {
				t.Errorf("%s imported from %s: logits relative error %.3g > %g (got %v, want %v)", c.net, ext, e, importExportTol, got[:3], want[:3])
			} else {
				t.Logf("%-13s import %-12s logits rel err %.2g", c.net, ext, e)
			}
			var flat []float32
			for _, p := range m.State {
				flat = append(flat, p.Data...)
			}
			states = append(states, flat)
		}
		// Both files hold the same state_dict: the imports must agree bit for bit.
		for i := range states[0] {
			if math.Float32bits(states[0][i]) != math.Float32bits(states[1][i]) {
				t.Fatalf("%s: .pth and .safetensors imports differ at flat index %d: %v vs %v", c.net, i, states[0][i], states[1][i])
			}
		}
		// The counters PyTorch stored (random, non-zero) came through.
		for _, p := range m.State {
			if p.Kind == nn.Counter && p.Data[0] == 0 {
				t.Errorf("%s: %s imported as 0, PyTorch stored a positive count", c.net, p.Name)
			}
		}

		// Export: what PyTorch will load strictly.
		out := base + ".go.safetensors"
		if err := checkpoint.WriteSafetensorsFile(out, checkpoint.TorchCompat(modelio.Tensors(m)), map[string]string{"format": "pt", "net": c.net}); err != nil {
			t.Fatal(err)
		}
		goLogits[c.net] = forward(t, m, pool, x)
		check = append(check, fmt.Sprintf("%s:%d:%s:%s:%s", c.net, c.size, out, base+".io.safetensors", base+".torch-logits.safetensors"))
	}
	runPython(t, append([]string{"check", "--classes", "10"}, check...)...)
	for _, c := range cases {
		got := readTensors(t, filepath.Join(dir, c.net+".torch-logits.safetensors"))["logits"].Data
		want := goLogits[c.net]
		if e := relErr(got, want); e > importExportTol || math.IsNaN(e) {
			t.Errorf("%s exported: PyTorch logits on ringtrain's file differ from ringtrain's by %.3g > %g", c.net, e, importExportTol)
		} else {
			t.Logf("%-13s export -> PyTorch strict load, logits rel err %.2g", c.net, e)
		}
	}
}
