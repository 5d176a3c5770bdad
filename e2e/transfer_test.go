package e2e

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/transfer"
)

// The transfer workflow through the real binary: train, export, fine-tune
// with frozen layers on a local cluster; predict on real photos.

// xferRun runs the binary and returns its stdout; stderr goes to the log on
// failure.
func xferRun(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("ringtrain %s: %v\nstdout:\n%s\nstderr (tail):\n%s", strings.Join(args, " "), err, stdout.String(), tail(stderr.String(), 3000))
	}
	t.Logf("ringtrain %s (%.1fs)", strings.Join(args, " "), time.Since(start).Seconds())
	return stdout.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var resultAccuracy = regexp.MustCompile(`(?m)^result net=(\S+) dataset=(\S+) .*test_accuracy=([0-9.]+)`)

// xferResult parses the "result ... test_accuracy=X" line of local/finetune.
func xferResult(t *testing.T, out, wantNet, wantData string) float64 {
	t.Helper()
	m := resultAccuracy.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no result line with test_accuracy in:\n%s", out)
	}
	if m[1] != wantNet || m[2] != wantData {
		t.Fatalf("result for net=%s dataset=%s, want %s on %s", m[1], m[2], wantNet, wantData)
	}
	acc, err := strconv.ParseFloat(m[3], 64)
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

func readFileTensors(t *testing.T, path string) map[string]checkpoint.Tensor {
	t.Helper()
	ts, _, err := checkpoint.ReadTensorFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]checkpoint.Tensor{}
	for _, x := range ts {
		out[x.Name] = x
	}
	return out
}

func TestFinetuneThroughBinary(t *testing.T) {
	slow(t)
	for _, name := range []string{"mnist", "fashion-mnist"} {
		if _, _, err := dataset.LoadMNIST(name); err != nil {
			t.Skipf("%s not installed: %v", name, err)
		}
	}
	dir := t.TempDir()
	pre, ft := filepath.Join(dir, "pretrain"), filepath.Join(dir, "finetune")

	out := xferRun(t, 8*time.Minute, "local", "--dir", pre, "--net", "lenet", "--dataset", "mnist", "--workers", "2", "--epochs", "1")
	preAcc := xferResult(t, out, "lenet", "mnist")
	t.Logf("pretrained LeNet on MNIST: %.2f%%", 100*preAcc)
	if preAcc < 0.95 {
		t.Fatalf("pretraining reached %.2f%%, want ≥ 95%%", 100*preAcc)
	}

	// The embedded S3 keeps objects as files under buckets/<bucket>/<key>.
	weights := filepath.Join(dir, "lenet-mnist.safetensors")
	xferRun(t, time.Minute, "ckpt", "export", "--store", filepath.Join(pre, "s3", "buckets", "ringtrain", "checkpoints"), "--run", "local", "--out", weights)
	exported := readFileTensors(t, weights)
	if _, ok := exported["features.0.weight"]; !ok || len(exported) != 10 {
		t.Fatalf("export holds %d tensors, want LeNet's 10 with features.0.weight", len(exported))
	}

	const head = "flatten,dense:120:relu,dense:84:relu,dense:10"
	out = xferRun(t, 8*time.Minute, "finetune", "--from", weights, "--net", "lenet", "--head", head, "--freeze-until", "features.5",
		"--data", "builtin:fashion-mnist", "--workers", "2", "--epochs", "1", "--dir", ft)
	ftAcc := xferResult(t, out, "lenet", "fashion-mnist")
	t.Logf("fine-tuned head (convs frozen) on Fashion-MNIST: %.2f%%", 100*ftAcc)
	if ftAcc < 0.70 {
		t.Errorf("fine-tuning reached %.2f%% on Fashion-MNIST, want ≥ 70%% (chance 10%%)", 100*ftAcc)
	}

	// The fine-tuned checkpoint: convolutions bitwise the pretrained ones
	// (frozen across both workers), the new head present and trained.
	objs, err := objstore.NewLocal(filepath.Join(ft, "s3", "buckets", "ringtrain", "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Run: "finetune"})
	if err != nil {
		t.Fatal(err)
	}
	ck, _, err := st.Latest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]checkpoint.Tensor{}
	for _, x := range ck.Weights {
		got[x.Name] = x
	}
	for _, name := range []string{"features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"} {
		a, b := exported[name].Data, got[name].Data
		if len(a) == 0 || len(a) != len(b) {
			t.Fatalf("%s: %d pretrained values, %d fine-tuned", name, len(a), len(b))
		}
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("frozen %s[%d] changed: %v -> %v", name, i, a[i], b[i])
			}
		}
	}
	for _, name := range []string{"head.1.weight", "head.3.weight", "head.5.weight", "head.5.bias"} {
		if _, ok := got[name]; !ok {
			t.Fatalf("fine-tuned checkpoint has no %s (has %d tensors)", name, len(got))
		}
	}
	if _, ok := got["classifier.0.weight"]; ok {
		t.Fatal("fine-tuned checkpoint still has the old classifier")
	}
}

var photoPaths = []string{
	"/usr/lib/python3/dist-packages/skimage/data/chelsea.png",
	"/usr/share/darknet/data/dog.jpg",
}

func TestPredictIsDeterministic(t *testing.T) {
	slow(t)
	for _, p := range photoPaths {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("photo %s not installed: %v", p, err)
		}
	}
	// Seeded random ResNet-18 weights, written as an exported file.
	m, err := nets.Build("resnet18", nets.Config{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	weights := filepath.Join(t.TempDir(), "resnet18.safetensors")
	if err := checkpoint.WriteSafetensorsFile(weights, checkpoint.TorchCompat(modelio.Tensors(m)), nil); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"predict", "--net", "resnet18", "--weights", weights, "--top", "3", "--threads", "2"}, photoPaths...)
	first := xferRun(t, 3*time.Minute, args...)
	second := xferRun(t, 3*time.Minute, args...)
	if first != second {
		t.Fatalf("predict printed different results on two runs:\n%s\n---\n%s", first, second)
	}
	t.Logf("predict output:\n%s", first)

	// The printed classes are the in-process top-3 of the same transform.
	lines := strings.Split(strings.TrimRight(first, "\n"), "\n")
	if len(lines) != 4*len(photoPaths) {
		t.Fatalf("predict printed %d lines, want a path and 3 classes per photo:\n%s", len(lines), first)
	}
	p, err := dataset.ParsePreprocess("torch")
	if err != nil {
		t.Fatal(err)
	}
	x, err := transfer.LoadImages(photoPaths, dataset.TransformConfig{Size: 224, Channels: 3, ResizeShorter: 224, Preprocess: p})
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	probs, err := transfer.Run(m, pool, x, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	transfer.Softmax(probs, 1000)
	names := transfer.ImageNetClasses()
	for i, path := range photoPaths {
		if lines[4*i] != path {
			t.Fatalf("line %d is %q, want the path %s", 4*i, lines[4*i], path)
		}
		for j, want := range transfer.TopK(probs[i*1000:(i+1)*1000], 3, names) {
			f := strings.Fields(lines[4*i+1+j])
			idx := strconv.Itoa(want.Index)
			if len(f) < 3 || f[0] != strconv.Itoa(j+1)+"." || !contains(f, idx) || !strings.Contains(lines[4*i+1+j], want.Name) {
				t.Errorf("%s rank %d: printed %q, in-process top-3 has %s (%d)", path, j+1, lines[4*i+1+j], want.Name, want.Index)
			}
		}
	}
}
