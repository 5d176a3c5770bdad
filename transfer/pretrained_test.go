package transfer_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/transfer"
	"github.com/ringtrain/ringtrain/worker"
)

// `ringtrain finetune --from` names a checkpoint run as dir/run[@step] (a
// local folder) as well as a weights file: each must reach BuildFinetune
// with the saved values.
func TestReadPretrainedLocalRunAndFile(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	objs, err := objstore.NewLocal(filepath.Join(root, "ckpts"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Run: "pre", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := nets.Config{Classes: 10, InChannels: 1, InputSize: 28}
	saved := map[int64]float32{}
	for _, step := range []int64{10, 20} {
		cfg.Seed = uint64(step)
		m, err := nets.Build("lenet", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Save(ctx, checkpoint.Manifest{Run: "pre", Net: "lenet", Classes: 10, Step: step}, modelio.Tensors(m), nil); err != nil {
			t.Fatal(err)
		}
		p, _ := m.Param("features.0.weight")
		saved[step] = p.Data[0]
	}
	file := filepath.Join(root, "w.safetensors")
	m20, _ := nets.Build("lenet", cfg) // cfg.Seed is 20
	if err := checkpoint.WriteSafetensorsFile(file, checkpoint.TorchCompat(modelio.Tensors(m20)), nil); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(root, "ckpts", "pre")
	for _, tc := range []struct {
		from string
		want float32
	}{
		{run, saved[20]},
		{run + "/", saved[20]},
		{run + "@10", saved[10]},
		{"file://" + run + "@20", saved[20]},
		{file, saved[20]},
	} {
		ts, err := worker.ReadPretrained(ctx, tc.from, objstore.S3Config{})
		if err != nil {
			t.Errorf("ReadPretrained(%s): %v", tc.from, err)
			continue
		}
		ft, rep, err := transfer.BuildFinetune(transfer.FinetuneConfig{Net: "lenet", Base: cfg, From: ts,
			Head: "flatten,dense:10", FreezeUntil: "features.5"})
		if err != nil {
			t.Fatalf("%s: %v", tc.from, err)
		}
		p, _ := ft.Param("features.0.weight")
		if len(rep.Loaded) != 4 || p.Data[0] != tc.want {
			t.Errorf("%s: %s, features.0.weight[0] = %v, want %v", tc.from, rep, p.Data[0], tc.want)
		}
	}
	if _, err := worker.ReadPretrained(ctx, filepath.Join(root, "ckpts", "nothere"), objstore.S3Config{}); err == nil {
		t.Error("a run without checkpoints must be an error")
	}
}
