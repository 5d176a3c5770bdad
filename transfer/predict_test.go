package transfer_test

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/transfer"
)

// Real photos through predict's preprocessing: the tensor ringtrain feeds
// its ResNet-18 is written to a file, PyTorch runs torchvision's resnet18 on
// it with the same (seeded random) weights, and both logits must agree.

const python = "/usr/bin/python3"

// photos are real images shipped by Debian packages.
var photos = []string{
	"/usr/lib/python3/dist-packages/skimage/data/chelsea.png", // python3-skimage
	"/usr/share/darknet/data/dog.jpg",                         // darknet
}

func needPhotos(t *testing.T) {
	t.Helper()
	for _, p := range photos {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("photo %s not installed: %v", p, err)
		}
	}
}

func needTorch(t *testing.T) {
	t.Helper()
	if err := exec.Command(python, "-c", "import torch, torchvision").Run(); err != nil {
		t.Skipf("%s cannot import torch/torchvision (%v): apt-get install python3-torch python3-torchvision", python, err)
	}
}

func genTransfer(t *testing.T, args ...string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(filepath.Dir(file)), "scripts", "gen_transfer.py")
	cmd := exec.Command(python, append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "RINGTRAIN_TORCH_THREADS=2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gen_transfer.py %s: %v\n%s", args[0], err, out)
	}
	t.Logf("gen_transfer.py %s:\n%s", args[0], strings.TrimSpace(string(out)))
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

// predictTransform is what `ringtrain predict --net resnet18` applies by
// default: resize the shorter side to the input size, center crop, torch
// normalisation.
func predictTransform(t *testing.T) dataset.TransformConfig {
	t.Helper()
	spec, err := nets.Lookup("resnet18")
	if err != nil {
		t.Fatal(err)
	}
	p, err := dataset.ParsePreprocess(spec.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	return dataset.TransformConfig{Size: 224, Channels: 3, ResizeShorter: 224, Preprocess: p}
}

func TestPredictPhotosMatchPyTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PyTorch's resnet18 (~10 s CPU)")
	}
	needPhotos(t)
	needTorch(t)
	dir := t.TempDir()
	m, err := nets.Build("resnet18", nets.Config{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	x, err := transfer.LoadImages(photos, predictTransform(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(photos)*3*224*224 {
		t.Fatalf("preprocessed %d floats for %d photos", len(x), len(photos))
	}
	again, err := transfer.LoadImages(photos, predictTransform(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(again[i]) {
			t.Fatalf("preprocessing is not deterministic at %d: %v vs %v", i, x[i], again[i])
		}
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	ours, err := transfer.Run(m, pool, x, 2, nil)
	if err != nil {
		t.Fatal(err)
	}

	weights, input, out := filepath.Join(dir, "resnet18.safetensors"), filepath.Join(dir, "input.safetensors"), filepath.Join(dir, "torch.safetensors")
	if err := checkpoint.WriteSafetensorsFile(weights, checkpoint.TorchCompat(modelio.Tensors(m)), nil); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.WriteSafetensorsFile(input, []checkpoint.Tensor{{Name: "input", Shape: []int{len(photos), 3, 224, 224}, Data: x}}, nil); err != nil {
		t.Fatal(err)
	}
	genTransfer(t, "check", "--classes", "1000", fmt.Sprintf("resnet18:224:%s:%s:%s", weights, input, out))
	ts, _, err := checkpoint.ReadTensorFile(out)
	if err != nil {
		t.Fatal(err)
	}
	theirs := ts[0].Data
	if len(theirs) != len(ours) {
		t.Fatalf("PyTorch gave %d logits, ringtrain %d", len(theirs), len(ours))
	}
	const k = 1000
	for i, p := range photos {
		o, th := ours[i*k:(i+1)*k], theirs[i*k:(i+1)*k]
		e := relErr(o, th)
		if e > 1e-3 || math.IsNaN(e) {
			t.Errorf("%s: logits relative error %.3g > 1e-3", p, e)
		}
		po, pt := append([]float32(nil), o...), append([]float32(nil), th...)
		transfer.Softmax(po, k)
		transfer.Softmax(pt, k)
		names := transfer.ImageNetClasses()
		to, tt := transfer.TopK(po, 3, names), transfer.TopK(pt, 3, names)
		t.Logf("%s: rel err %.2g; ringtrain top-3 %s; PyTorch top-3 %s", filepath.Base(p), e, fmtTop(to), fmtTop(tt))
		// The top-1 must agree unless PyTorch's own top two are within the tolerance.
		if to[0].Index != tt[0].Index && float64(tt[0].Prob-tt[1].Prob) > 1e-3*float64(tt[0].Prob) {
			t.Errorf("%s: top-1 %s (ringtrain) vs %s (PyTorch)", p, to[0].Name, tt[0].Name)
		}
	}
}

func fmtTop(ps []transfer.Prediction) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%s %.4f", p.Name, p.Prob))
	}
	return strings.Join(s, ", ")
}
