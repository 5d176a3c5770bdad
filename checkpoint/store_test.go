package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint/internal/memstore"
	"github.com/ringtrain/ringtrain/objstore"
)

func testManifest(step int64, acc float64) Manifest {
	return Manifest{
		Net: "tiny", NetConfig: map[string]any{"width": 8},
		Classes: 2, ClassNames: []string{"cat", "dog"},
		Step: step, Epoch: int(step / 10),
		Sampler: SamplerState{Seed: 1<<63 + 5, Epoch: int(step / 10), Done: step * 32},
		RNG:     []uint64{1, 1<<64 - 1},
		Metrics: map[string]float64{"val_acc": acc, "loss": 1 - acc},
	}
}

func testWeights(step int64) []Tensor {
	return []Tensor{
		{Name: "conv.weight", Shape: []int{4, 1, 3, 3}, Data: seq(36, float32(step))},
		{Name: "conv.bias", Shape: []int{4}, Data: seq(4, 1)},
		{Name: "fc.weight", Shape: []int{2, 4}, Data: seq(8, 0.5)},
		{Name: "bn.num_batches_tracked", Shape: []int{}, DType: I64, Data: []float32{float32(step)}},
	}
}

func newTestStore(t *testing.T, mem *memstore.Store, cfg StoreConfig) *Store {
	t.Helper()
	if cfg.Run == "" {
		cfg.Run = "run1"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := NewStore(mem, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreSaveLoad(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{Prefix: "ckpts"})
	w := testWeights(5)
	opt := []Tensor{{Name: "conv.weight.momentum", Shape: []int{4, 1, 3, 3}, Data: seq(36, 2)}}
	m, err := s.Save(ctx, testManifest(5, 0.5), w, opt)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{
		"ckpts/run1/step-000000005/manifest.json",
		"ckpts/run1/step-000000005/optim.safetensors",
		"ckpts/run1/step-000000005/weights.safetensors",
	}
	if got := mem.Keys(); !reflect.DeepEqual(got, wantKeys) {
		t.Fatalf("keys = %v, want %v", got, wantKeys)
	}
	ck, err := s.Load(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ck.Weights, withF32(w)) || !reflect.DeepEqual(ck.Optim, withF32(opt)) {
		t.Fatalf("loaded tensors differ")
	}
	if ck.Manifest.Sampler != m.Sampler || !reflect.DeepEqual(ck.Manifest.RNG, m.RNG) || ck.Manifest.Run != "run1" {
		t.Fatalf("manifest = %+v, want %+v", ck.Manifest, m)
	}
	if len(m.Blobs) != 2 || m.Blobs[0].Kind != KindWeights || m.Blobs[0].Tensors != 4 {
		t.Fatalf("blobs = %+v", m.Blobs)
	}
	if err := s.Verify(ctx, 5); err != nil {
		t.Fatal(err)
	}
	runs, err := ListRuns(ctx, mem, "ckpts")
	if err != nil || !reflect.DeepEqual(runs, []string{"run1"}) {
		t.Fatalf("ListRuns = %v, %v", runs, err)
	}
}

func withF32(ts []Tensor) []Tensor {
	out := make([]Tensor, len(ts))
	for i, t := range ts {
		if t.DType == "" {
			t.DType = F32
		}
		out[i] = t
	}
	return out
}

func TestStoreShards(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{MaxShardBytes: 100})
	w := testWeights(1) // 144 + 16 + 32 + 8 bytes: shards {conv.weight}, {conv.bias, fc.weight, nbt}
	m, err := s.Save(ctx, testManifest(1, 0.1), w, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range m.Blobs {
		names = append(names, b.Name)
	}
	want := []string{"weights-00001-of-00002.safetensors", "weights-00002-of-00002.safetensors"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("blobs %v, want %v", names, want)
	}
	ck, err := s.Load(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ck.Weights, withF32(w)) {
		t.Fatal("sharded weights differ")
	}
}

func TestStoreCorruption(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		damage func(mem *memstore.Store, key string)
		want   string
	}{
		{"flip a byte", func(mem *memstore.Store, key string) {
			b, _ := mem.Bytes(key)
			b[len(b)-3] ^= 0x10
			mem.Put(ctx, key, bytes.NewReader(b), int64(len(b)))
		}, "sha256"},
		{"truncate", func(mem *memstore.Store, key string) {
			b, _ := mem.Bytes(key)
			mem.Put(ctx, key, bytes.NewReader(b[:len(b)/2]), int64(len(b)/2))
		}, "size"},
		{"delete", func(mem *memstore.Store, key string) { mem.Delete(ctx, key) }, "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := memstore.New()
			s := newTestStore(t, mem, StoreConfig{})
			for _, step := range []int64{10, 20} {
				if _, err := s.Save(ctx, testManifest(step, 0.5), testWeights(step), nil); err != nil {
					t.Fatal(err)
				}
			}
			tc.damage(mem, s.StepDir(20)+"weights.safetensors")
			err := s.Verify(ctx, 20)
			var verr *VerifyError
			if !errors.As(err, &verr) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify = %v, want a VerifyError", err)
			}
			if len(verr.Problems) != 1 || verr.Problems[0].Blob != "weights.safetensors" || !strings.Contains(verr.Problems[0].Problem, tc.want) {
				t.Fatalf("problems = %+v, want weights.safetensors: %s", verr.Problems, tc.want)
			}
			ck, skipped, err := s.Latest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ck.Manifest.Step != 10 || len(skipped) != 1 || skipped[0].Step != 20 {
				t.Fatalf("Latest = step %d, skipped %+v; want 10 after skipping 20", ck.Manifest.Step, skipped)
			}
			if !reflect.DeepEqual(ck.Weights, withF32(testWeights(10))) {
				t.Fatal("step 10 weights differ")
			}
		})
	}
}

func TestStorePartialAndBadManifest(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{})
	if _, err := s.Save(ctx, testManifest(1, 0.5), testWeights(1), nil); err != nil {
		t.Fatal(err)
	}
	// A save that dies before its manifest: blobs only.
	mem.PutHook = func(key string) error {
		if strings.HasSuffix(key, ManifestName) {
			return errors.New("crash")
		}
		return nil
	}
	if _, err := s.Save(ctx, testManifest(2, 0.5), testWeights(2), nil); err == nil {
		t.Fatal("save with failing manifest put succeeded")
	}
	mem.PutHook = nil
	// A manifest that is not JSON.
	junk := []byte("{not json")
	mem.Put(ctx, s.StepDir(3)+ManifestName, bytes.NewReader(junk), int64(len(junk)))

	entries, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || !entries[0].Complete() || entries[1].Complete() || entries[2].Err == nil {
		t.Fatalf("entries = %+v", entries)
	}
	ck, skipped, err := s.Latest(ctx)
	if err != nil || ck.Manifest.Step != 1 || len(skipped) != 2 {
		t.Fatalf("Latest = %v, %+v, %v", ck, skipped, err)
	}
	// Nothing good at all.
	mem2 := memstore.New()
	s2 := newTestStore(t, mem2, StoreConfig{})
	if _, _, err := s2.Latest(ctx); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty store: %v", err)
	}
}

// LatestWhere passes over checkpoints its filter rejects, however new,
// and still reports partial folders it cannot attribute.
func TestStoreLatestWhere(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{})
	for _, c := range []struct {
		step int64
		sub  string
	}{{1, "a"}, {2, "b"}, {3, "a"}, {4, "b"}} {
		m := testManifest(c.step, 0.5)
		m.Submission = c.sub
		if _, err := s.Save(ctx, m, testWeights(c.step), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := mem.Delete(ctx, s.StepDir(4)+ManifestName); err != nil { // b's newest becomes partial
		t.Fatal(err)
	}
	of := func(sub string) func(*Manifest) bool { return func(m *Manifest) bool { return m.Submission == sub } }
	ck, skipped, err := s.LatestWhere(ctx, of("a"))
	if err != nil || ck.Manifest.Step != 3 || ck.Manifest.Submission != "a" || len(skipped) != 1 || skipped[0].Step != 4 {
		t.Fatalf("LatestWhere(a) = %v, %+v, %v; want step 3, step 4 skipped", ck, skipped, err)
	}
	if ck, _, err := s.LatestWhere(ctx, of("b")); err != nil || ck.Manifest.Step != 2 {
		t.Fatalf("LatestWhere(b) = %v, %v; want step 2", ck, err)
	}
	if _, _, err := s.LatestWhere(ctx, of("c")); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("LatestWhere(c) = %v, want ErrNoCheckpoint", err)
	}
}

func TestStoreRetention(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{KeepLast: 2, BestMetric: "val_acc"})
	accs := map[int64]float64{1: 0.2, 2: 0.9, 3: 0.5, 4: 0.4, 5: 0.6}
	// An orphan folder from a crashed save, older than what is kept.
	mem.Put(ctx, s.StepDir(0)+"weights.safetensors", strings.NewReader("x"), 1)
	for step := int64(1); step <= 5; step++ {
		if _, err := s.Save(ctx, testManifest(step, accs[step]), testWeights(step), nil); err != nil {
			t.Fatal(err)
		}
	}
	// An in-progress save newer than everything must survive pruning.
	mem.Put(ctx, s.StepDir(6)+"weights.safetensors", strings.NewReader("x"), 1)
	if _, err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	entries, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, e := range entries {
		steps = append(steps, e.Step)
	}
	if want := []int64{2, 4, 5, 6}; !reflect.DeepEqual(steps, want) {
		t.Fatalf("steps after retention = %v, want %v (last 2, best 0.9 at step 2, in-progress 6)", steps, want)
	}

	// Lower-is-better metric.
	mem2 := memstore.New()
	s2 := newTestStore(t, mem2, StoreConfig{KeepLast: 1, BestMetric: "loss", LowerIsBetter: true})
	for step := int64(1); step <= 3; step++ {
		if _, err := s2.Save(ctx, testManifest(step, accs[step]), testWeights(step), nil); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ = s2.List(ctx)
	if len(entries) != 2 || entries[0].Step != 2 || entries[1].Step != 3 {
		t.Fatalf("lower-is-better retention kept %+v", entries)
	}
}

func TestStoreResaveSameStep(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{})
	for i := 0; i < 2; i++ {
		w := testWeights(int64(7 + i))
		if _, err := s.Save(ctx, testManifest(7, 0.1), w, nil); err != nil {
			t.Fatal(err)
		}
		ck, err := s.Load(ctx, 7)
		if err != nil || !reflect.DeepEqual(ck.Weights, withF32(w)) {
			t.Fatalf("save %d: %v", i, err)
		}
	}
}

func TestStoreContextCancel(t *testing.T) {
	mem := memstore.New()
	s := newTestStore(t, mem, StoreConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Save(ctx, testManifest(1, 0.1), testWeights(1), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save with canceled ctx = %v", err)
	}
	if len(mem.Keys()) != 0 {
		t.Fatalf("keys left: %v", mem.Keys())
	}
}

func TestStoreConfigValidate(t *testing.T) {
	for _, cfg := range []StoreConfig{{Run: ""}, {Run: "a/b"}, {Run: ".."}, {Run: "r", KeepLast: -1}, {Run: "r", MaxShardBytes: -1}} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

func TestManifestValidate(t *testing.T) {
	good := testManifest(3, 0.5)
	good.Version = FormatVersion
	good.Blobs = []Blob{{Name: "weights.safetensors", Kind: KindWeights, Size: 100, SHA256: strings.Repeat("ab", 32), Tensors: 2}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		field  string
		mutate func(m *Manifest)
	}{
		{"format_version", func(m *Manifest) { m.Version = 99 }},
		{"net", func(m *Manifest) { m.Net = "" }},
		{"classes", func(m *Manifest) { m.Classes = -1 }},
		{"class_names", func(m *Manifest) { m.ClassNames = []string{"a"} }},
		{"step", func(m *Manifest) { m.Step = -1 }},
		{"epoch", func(m *Manifest) { m.Epoch = -1 }},
		{"sampler", func(m *Manifest) { m.Sampler.Done = -1 }},
		{"run", func(m *Manifest) { m.Run = "../x" }},
		{"metrics", func(m *Manifest) { m.Metrics["nan"] = nanValue() }},
		{"blobs", func(m *Manifest) { m.Blobs = nil }},
		{"blobs[0].name", func(m *Manifest) { m.Blobs[0].Name = "../etc/passwd" }},
		{"blobs[0].name", func(m *Manifest) { m.Blobs[0].Name = ManifestName }},
		{"blobs[0].kind", func(m *Manifest) { m.Blobs[0].Kind = "other" }},
		{"blobs[0].size", func(m *Manifest) { m.Blobs[0].Size = 3 }},
		{"blobs[0].sha256", func(m *Manifest) { m.Blobs[0].SHA256 = "abc" }},
		{"blobs[0].sha256", func(m *Manifest) { m.Blobs[0].SHA256 = strings.Repeat("AB", 32) }},
		{"blobs[1].name", func(m *Manifest) { m.Blobs = append(m.Blobs, m.Blobs[0]) }},
		{"blobs", func(m *Manifest) { m.Blobs[0].Kind = KindOptim }},
	}
	for _, tc := range tests {
		m := good
		m.Metrics = map[string]float64{"val_acc": 0.5}
		m.Blobs = append([]Blob(nil), good.Blobs...)
		tc.mutate(&m)
		err := m.Validate()
		if err == nil || !strings.Contains(err.Error(), "field "+tc.field+":") {
			t.Errorf("%s: err = %v", tc.field, err)
		}
	}
}

func nanValue() float64 { var z float64; return z / z }

func TestManifestRoundTrip(t *testing.T) {
	m := testManifest(42, 0.75)
	m.Version = FormatVersion
	m.Run = "r"
	m.Submission = "20261127T080000Z-0123456789ab"
	m.CreatedAt = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	m.Blobs = []Blob{{Name: "weights.safetensors", Kind: KindWeights, Size: 100, SHA256: strings.Repeat("0f", 32), Tensors: 2}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Sampler.Seed != 1<<63+5 || got.RNG[1] != 1<<64-1 || fmt.Sprint(got.NetConfig["width"]) != "8" || got.Submission != m.Submission {
		t.Fatalf("round trip lost precision: %+v", got)
	}
	if _, err := ParseManifest(append(b, "{}"...)); err == nil {
		t.Fatal("trailing object accepted")
	}
}

func FuzzManifest(f *testing.F) {
	m := testManifest(42, 0.75)
	m.Version = FormatVersion
	m.Blobs = []Blob{{Name: "weights.safetensors", Kind: KindWeights, Size: 100, SHA256: strings.Repeat("0f", 32), Tensors: 2}}
	b, _ := m.Marshal()
	f.Add(b)
	f.Add([]byte(`{"format_version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("valid manifest does not marshal: %v", err)
		}
		m2, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		out2, _ := m2.Marshal()
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
	})
}

// TestStoreLocalDir runs the store over objstore's local-folder Store and
// damages a blob on disk.
func TestStoreLocalDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	objs, err := objstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(objs, StoreConfig{Prefix: "ck", Run: "r", KeepLast: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 3; step++ {
		if _, err := s.Save(ctx, testManifest(step, 0.1), testWeights(step), nil); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := s.List(ctx)
	if err != nil || len(entries) != 2 || entries[0].Step != 2 {
		t.Fatalf("entries %+v, %v", entries, err)
	}
	blob := filepath.Join(dir, "ck", "r", "step-000000003", "weights.safetensors")
	if err := os.Truncate(blob, 100); err != nil {
		t.Fatal(err)
	}
	ck, skipped, err := s.Latest(ctx)
	if err != nil || ck.Manifest.Step != 2 || len(skipped) != 1 {
		t.Fatalf("Latest: %v %+v %v", ck, skipped, err)
	}
	if !reflect.DeepEqual(ck.Weights, withF32(testWeights(2))) {
		t.Fatal("weights differ")
	}
}

func benchWeights() []Tensor {
	var ws []Tensor
	for i := 0; i < 62; i++ {
		ws = append(ws, Tensor{Name: fmt.Sprintf("layer%d.weight", i), Shape: []int{188_700}, Data: make([]float32, 188_700)})
	}
	return ws
}

// BenchmarkStoreSave saves a ResNet-18-sized weight set (11.7M floats in 62
// tensors, 46.8 MB) to the in-memory store: encode + sha256 + copy.
func BenchmarkStoreSave(b *testing.B) {
	ctx := context.Background()
	ws := benchWeights()
	s, _ := NewStore(memstore.New(), StoreConfig{Run: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b.SetBytes(62 * 188_700 * 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Save(ctx, testManifest(1, 0.5), ws, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreLoad reads it back: sha256 verify + decode.
func BenchmarkStoreLoad(b *testing.B) {
	ctx := context.Background()
	s, _ := NewStore(memstore.New(), StoreConfig{Run: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := s.Save(ctx, testManifest(1, 0.5), benchWeights(), nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(62 * 188_700 * 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
}
