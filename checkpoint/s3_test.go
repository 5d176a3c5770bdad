package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
)

// TestStoreS3 runs save, retention, corruption and Latest against a real
// S3 server (embedded gofakes3) through objstore's minio-go Store.
func TestStoreS3(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := s3server.Start(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	objs, err := objstore.CreateBucket(ctx, srv.Config(), "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(objs, StoreConfig{Prefix: "jobs/a", Run: "r", KeepLast: 2, BestMetric: "val_acc",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	accs := []float64{0.9, 0.1, 0.2, 0.3}
	for i, acc := range accs {
		opt := []Tensor{{Name: "m", Shape: []int{3}, Data: []float32{1, 2, float32(i)}}}
		if _, err := s.Save(ctx, testManifest(int64(i+1), acc), testWeights(int64(i+1)), opt); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, e := range entries {
		steps = append(steps, e.Step)
	}
	if want := []int64{1, 3, 4}; !reflect.DeepEqual(steps, want) {
		t.Fatalf("steps %v, want %v (best + last 2)", steps, want)
	}
	// Flip a byte of the newest weights in the bucket.
	key := s.StepDir(4) + "weights.safetensors"
	rc, err := objs.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	b[len(b)-1] ^= 1
	if err := objs.Put(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify = %v", err)
	}
	ck, skipped, err := s.Latest(ctx)
	if err != nil || ck.Manifest.Step != 3 || len(skipped) != 1 {
		t.Fatalf("Latest = %v, %+v, %v", ck, skipped, err)
	}
	if !reflect.DeepEqual(ck.Weights, withF32(testWeights(3))) || ck.Optim[0].Data[2] != 2 {
		t.Fatal("step 3 tensors differ")
	}
	runs, err := ListRuns(ctx, objs, "jobs/a")
	if err != nil || !reflect.DeepEqual(runs, []string{"r"}) {
		t.Fatalf("ListRuns = %v, %v", runs, err)
	}
}
