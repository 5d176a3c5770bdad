package worker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/objstore"
)

// testCheckpointer is a checkpointer of submission sub of job "ck"
// writing to dir, keeping the newest keep checkpoints (0: all).
func testCheckpointer(t *testing.T, dir, resume, sub string, keep int) *checkpointer {
	t.Helper()
	spec := coordinator.JobSpec{Name: "ck", Net: "lenet", Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28},
		Optimizer: coordinator.OptimizerSpec{Name: "sgd"}, Checkpoint: coordinator.CheckpointSpec{URI: dir, EverySteps: 1, Keep: keep},
		Resume: resume, Submission: sub}
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
	c := testCheckpointer(t, t.TempDir(), "", "s1", 0)
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

// saveAt writes rep's state as a checkpoint of step step through c.
func saveAt(t *testing.T, c *checkpointer, rep *Replica, step int) {
	t.Helper()
	keep := rep.Step
	rep.Step = step
	c.save(rep, nil, nil)
	err := c.wait()
	rep.Step = keep
	if err != nil {
		t.Fatal(err)
	}
}

func listSteps(t *testing.T, c *checkpointer) []int64 {
	t.Helper()
	es, err := c.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, e := range es {
		out = append(out, e.Step)
	}
	return out
}

// A new submission with resume never, or a step, refuses to start among an
// earlier run's checkpoints (nothing is overwritten or pruned); a restart
// of a submission resumes its own checkpoints whatever spec.resume says,
// never an earlier run's at a higher step.
func TestResumeKeepsRunsApart(t *testing.T) {
	ctx := context.Background()
	src := mnistSource(t)
	s := dataset.Sampler{N: src.Len(), GlobalBatch: 32, Shuffle: true}
	reps := newReplicas(t, 2, src, s)
	runSteps(t, reps[:1], allreduce.NewMemGroup(1, allreduce.Options{}), 3)
	dir := t.TempDir()
	old := testCheckpointer(t, dir, "", "s0", 2)
	for _, step := range []int{100, 200, 300} {
		saveAt(t, old, reps[0], step)
	}
	if got := listSteps(t, old); !reflect.DeepEqual(got, []int64{200, 300}) {
		t.Fatalf("earlier run's checkpoints %v, want [200 300]", got)
	}

	for _, tc := range []struct{ resume, want string }{
		{"never", "spec.resume never: checkpoint prefix "},
		{"200", "spec.resume 200: checkpoint prefix "},
	} {
		c := testCheckpointer(t, dir, tc.resume, "s1", 2)
		_, err := c.restore(ctx, reps[1])
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) ||
			!strings.Contains(err.Error(), "step 300") || !strings.Contains(err.Error(), "submission s0") {
			t.Fatalf("resume %s among an earlier run's checkpoints: %v, want an error naming the prefix and its newest step", tc.resume, err)
		}
		t.Logf("resume %s: %v", tc.resume, err)
	}
	if got := listSteps(t, old); !reflect.DeepEqual(got, []int64{200, 300}) {
		t.Fatalf("after the refusals the earlier run's checkpoints are %v, want [200 300]", got)
	}
	// Resuming the earlier run's newest step is no conflict.
	c := testCheckpointer(t, dir, "300", "s1", 2)
	if ok, err := c.restore(ctx, reps[1]); !ok || err != nil || reps[1].Step != 300 {
		t.Fatalf("resume 300: %v, %v, step %d", ok, err, reps[1].Step)
	}

	// A run that started from scratch elsewhere and wrote a checkpoint at a
	// lower step; its restart with resume never must resume it, and with
	// latest must not take the earlier run's step 300.
	mine := t.TempDir()
	saveAt(t, testCheckpointer(t, mine, "never", "s1", 0), reps[0], 30)
	if err := copyRun(mine, dir); err != nil {
		t.Fatal(err)
	}
	for _, resume := range []string{"never", "latest", "200"} {
		c := testCheckpointer(t, dir, resume, "s1", 2)
		reps[1].Step = 0
		if ok, err := c.restore(ctx, reps[1]); !ok || err != nil || reps[1].Step != 30 {
			t.Fatalf("restart of submission s1 with resume %s: %v, %v at step %d, want its own step 30", resume, ok, err, reps[1].Step)
		}
	}
	// A spec from before submissions were recorded owns nothing.
	if _, err := testCheckpointer(t, dir, "never", "", 2).restore(ctx, reps[1]); err == nil {
		t.Fatal("resume never without a submission id started among existing checkpoints")
	}
}

// copyRun copies every file of one local store into another.
func copyRun(from, to string) error {
	return os.CopyFS(to, os.DirFS(from))
}

func TestResumeConflict(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	ck := func(step int64, sub string) checkpoint.Entry {
		return checkpoint.Entry{Step: step, Manifest: &checkpoint.Manifest{Step: step, Submission: sub, CreatedAt: at}}
	}
	partial := checkpoint.Entry{Step: 900}
	unreadable := checkpoint.Entry{Step: 800, Err: errors.New("parse manifest: unexpected EOF")}
	for _, tc := range []struct {
		name    string
		resume  string
		sub     string
		entries []checkpoint.Entry
		want    string // substring of the error; "" for none
	}{
		{"latest continues any run", "latest", "s1", []checkpoint.Entry{ck(100, "s0"), ck(200, "s0")}, ""},
		{"default is latest", "", "s1", []checkpoint.Entry{ck(100, "s0")}, ""},
		{"never, empty prefix", "never", "s1", nil, ""},
		{"never, own checkpoints", "never", "s1", []checkpoint.Entry{ck(100, "s1")}, ""},
		{"never, a partial save", "never", "s1", []checkpoint.Entry{partial}, ""},
		{"never, an earlier run", "never", "s1", []checkpoint.Entry{ck(100, "s0"), ck(200, "s0"), ck(50, "s1")},
			"spec.resume never: checkpoint prefix mem://ck/ already holds an earlier run's checkpoints of job ck (newest: step 200, written 2026-11-27T09:00:00Z by submission s0)"},
		{"never, a checkpoint from before submissions", "never", "s1", []checkpoint.Entry{ck(100, "")}, "newest: step 100, written 2026-11-27T09:00:00Z)"},
		{"never, an unreadable manifest", "never", "s1", []checkpoint.Entry{unreadable}, "step 800, manifest unreadable: parse manifest"},
		{"never, spec without a submission", "never", "", []checkpoint.Entry{ck(100, "")}, "newest: step 100"},
		{"step, earlier run up to it", "200", "s1", []checkpoint.Entry{ck(100, "s0"), ck(200, "s0")}, ""},
		{"step, earlier run after it", "200", "s1", []checkpoint.Entry{ck(200, "s0"), ck(300, "s0"), ck(400, "s0")},
			"spec.resume 200: checkpoint prefix mem://ck/ holds an earlier run's checkpoints after step 200 (newest: step 400"},
		{"step, own after it", "200", "s1", []checkpoint.Entry{ck(200, "s0"), ck(300, "s1")}, ""},
	} {
		spec := coordinator.JobSpec{Name: "ck", Resume: tc.resume, Submission: tc.sub}
		err := resumeConflict(spec, tc.entries, "mem://ck/")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
