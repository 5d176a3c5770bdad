package transfer_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/transfer"
)

// Committed PyTorch fixtures (no torch needed): a LeNet at 12×12 saved by
// torch.save in the zip and the legacy format and as safetensors, with an
// input and PyTorch's eval logits (scripts/gen_transfer.py make --legacy
// lenet:12). Every file imports strictly and reproduces the logits; the
// full per-architecture proof is modelio's TestImportExportMatchesPyTorch.
func TestImportCommittedPyTorchLeNet(t *testing.T) {
	io, _, err := checkpoint.ReadTensorFile(filepath.Join("testdata", "lenet.io.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]checkpoint.Tensor{}
	for _, x := range io {
		byName[x.Name] = x
	}
	x, want := byName["input"], byName["logits"].Data
	if len(x.Shape) != 4 || x.Shape[1] != 1 || x.Shape[2] != 12 || len(want) != x.Shape[0]*10 {
		t.Fatalf("fixture input %v, %d logits", x.Shape, len(want))
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	var first []float32
	for _, file := range []string{"lenet.pth", "lenet.legacy.pth", "lenet.safetensors"} {
		m, err := nets.Build("lenet", nets.Config{Classes: 10, InChannels: 1, InputSize: 12, Seed: 99})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := modelio.ImportFile(m, filepath.Join("testdata", file), true)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Loaded) != 10 {
			t.Fatalf("%s: %s", file, rep)
		}
		got, err := transfer.Run(m, pool, append([]float32(nil), x.Data...), 8, nil)
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(got, want); e > 1e-5 || math.IsNaN(e) {
			t.Errorf("%s: logits relative error %.3g > 1e-5 (got %v, want %v)", file, e, got[:3], want[:3])
		}
		if first == nil {
			first = got
		} else {
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
					t.Fatalf("%s: logits differ from lenet.pth's at %d", file, i)
				}
			}
		}
	}
}
