package worker

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/objstore"
)

// testCheckpointer is a checkpointer of job "ck" writing to dir.
func testCheckpointer(t *testing.T, dir, resume string) *checkpointer {
	t.Helper()
	spec := coordinator.JobSpec{Name: "ck", Net: "lenet", Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28},
		Optimizer: coordinator.OptimizerSpec{Name: "sgd"}, Checkpoint: coordinator.CheckpointSpec{URI: dir, EverySteps: 1}, Resume: resume}
	c, err := newCheckpointer(context.Background(), spec, objstore.S3Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The manifest records what regenerates the random streams (scheme,
// seed, step), and a checkpoint of a scheme this build does not know is
// refused by name, not resumed into a silently different run.
func TestCheckpointRNGState(t *testing.T) {
	ctx := context.Background()
	src := mnistSource(t)
	s := dataset.Sampler{N: src.Len(), GlobalBatch: 32, Shuffle: true}
	reps := newReplicas(t, 2, src, s)
	runSteps(t, reps[:1], allreduce.NewMemGroup(1, allreduce.Options{}), 3)
	c := testCheckpointer(t, t.TempDir(), "")
	c.save(reps[0], nil, nil)
	if err := c.wait(); err != nil {
		t.Fatal(err)
	}
	m, err := c.store.Manifest(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{RNGScheme, 3, 3}; !reflect.DeepEqual(m.RNG, want) {
		t.Fatalf("rng_state %v, want %v (scheme, seed, step)", m.RNG, want)
	}
	ok, err := c.restore(ctx, reps[1])
	if err != nil || !ok {
		t.Fatalf("restore: %v, %v", ok, err)
	}
	if reps[1].Step != 3 || reps[1].Checksum() != reps[0].Checksum() {
		t.Fatalf("restored replica at step %d, checksum %x; saved %x", reps[1].Step, reps[1].Checksum(), reps[0].Checksum())
	}

	// A newer checkpoint from a build with another scheme.
	m.Step, m.RNG = 4, []uint64{RNGScheme + 1, 3, 4}
	weights := modelio.Tensors(reps[0].Model)
	if _, err := c.store.Save(ctx, m, weights, modelio.OptimizerTensors(reps[0].Model, reps[0].Opt)); err != nil {
		t.Fatal(err)
	}
	_, err = c.restore(ctx, reps[1])
	if err == nil || !strings.Contains(err.Error(), "rng_state") || !strings.Contains(err.Error(), "scheme 2") {
		t.Fatalf("restore of a scheme-%d checkpoint: %v, want an error naming rng_state and the scheme", RNGScheme+1, err)
	}
}

func TestCheckRNGState(t *testing.T) {
	m := func(rng ...uint64) checkpoint.Manifest {
		return checkpoint.Manifest{Step: 40, Sampler: checkpoint.SamplerState{Seed: 9}, RNG: rng}
	}
	for _, tc := range []struct {
		name string
		m    checkpoint.Manifest
		want string // substring of the error; "" for none
	}{
		{"current", m(RNGScheme, 9, 40), ""},
		{"written before rng_state was filled", m(), ""},
		{"unknown scheme", m(7, 9, 40), "rng_state: random-stream scheme 7"},
		{"short", m(RNGScheme, 9), "rng_state: 2 values"},
		{"other seed", m(RNGScheme, 8, 40), "rng_state: seed 8"},
		{"other step", m(RNGScheme, 9, 41), "step 41"},
	} {
		err := checkRNGState(tc.m)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
