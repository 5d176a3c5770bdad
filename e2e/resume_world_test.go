package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/worker"
)

// Kill both workers of a 2-worker run mid-epoch, after a checkpoint, and
// finish the job with 3 fresh workers: the resumed run trains every sample
// of the epoch that the checkpoint had not covered exactly once, and the
// steps the killed run did after its checkpoint are replayed with the same
// global batches.
func TestResumeWithDifferentWorldSize(t *testing.T) {
	slow(t)
	const job = "resume-world"
	c := newCluster(t, job)
	srv, err := s3server.Start(context.Background(), filepath.Join(c.dir, "s3"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.CreateBucket("ckpt"); err != nil {
		t.Fatal(err)
	}
	s3args := []string{"--s3-endpoint", srv.Endpoint, "--s3-access-key", srv.AccessKey, "--s3-secret-key", srv.SecretKey, "--s3-unsigned-payload"}
	startWorker := func(id string) {
		c.start(id, append([]string{"worker", "--job", job, "--id", id, "--etcd", c.etcd.ClientURL(), "--nats", c.nats.ClientURL(),
			"--threads", "1", "--lease-ttl", "2s", "--collective-timeout", "4s", "--check-every", "25",
			"--sample-log", filepath.Join(c.dir, id+".samples"), "--log-level", "info"}, s3args...)...)
	}
	grpc := freeAddr(t)
	c.startCoordinator("coord", grpc)
	cl, err := coordinator.Dial(grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n, batch = 60000, 128
	spec, _ := json.Marshal(coordinator.JobSpec{
		Name: job, Net: "lenet", Dataset: coordinator.DatasetSpec{URI: "builtin:mnist", Layout: "idx"},
		Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28}, GlobalBatchSize: batch, Epochs: 1, Seed: 11,
		Optimizer:  coordinator.OptimizerSpec{Name: "sgd", LR: 0.05, Momentum: 0.9},
		Schedule:   coordinator.ScheduleSpec{Name: "cosine"},
		Eval:       coordinator.EvalSpec{URI: "builtin:mnist/test", Layout: "idx", EveryEpochs: 1},
		Checkpoint: coordinator.CheckpointSpec{URI: "s3://ckpt/runs", EverySteps: 100},
		World:      coordinator.WorldSpec{Min: 1},
	})
	start := time.Now()
	startWorker("a-0")
	startWorker("a-1")
	c.submit(cl, spec)
	c.waitFor("2 registered workers", time.Minute, func() bool { return c.members(job) == 2 })

	// SIGKILL both workers mid-epoch, some steps after the checkpoint at 200.
	c.waitFor("step 230", 5*time.Minute, func() bool { return c.state(job).Step >= 230 })
	c.kill("a-0")
	c.kill("a-1")
	killedAt := c.state(job).Step
	objs, err := objstore.NewS3(context.Background(), objstore.S3Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		PathStyle: true, DisableContentSHA256: true}, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: "runs", Run: job})
	if err != nil {
		t.Fatal(err)
	}
	ck, _, err := store.Latest(context.Background())
	if err != nil {
		t.Fatalf("no good checkpoint after the kill at step %d: %v", killedAt, err)
	}
	ckStep := int(ck.Manifest.Step)
	if ckStep < 200 || int64(ckStep) > killedAt {
		t.Fatalf("newest checkpoint at step %d, workers killed at step %d", ckStep, killedAt)
	}
	firstRun := time.Since(start)

	// Three fresh workers finish the job from the checkpoint.
	resumeStart := time.Now()
	fresh := []string{"b-0", "b-1", "b-2"}
	for _, id := range fresh {
		startWorker(id)
	}
	c.waitFor("the resumed run", 6*time.Minute, func() bool { return c.state(job).Done })
	resumed := time.Since(resumeStart)
	for _, id := range fresh {
		if !strings.Contains(c.fullLog(id), "resumed from checkpoint") {
			t.Errorf("%s did not report resuming from the checkpoint:\n%s", id, c.log(id))
		}
	}

	// Records of the killed run after its checkpoint are steps the resumed
	// run replays: they must match the replay batch for batch, and are left
	// out of the accounting (the weights they produced were lost).
	recs := readSamples(t, c.dir)
	var kept []worker.SampleRecord
	killedRun := map[int]worker.SampleRecord{}
	resumedBatch := map[int]string{}
	world := map[int]map[string]bool{} // resumed step -> workers that trained it
	lastKilled := -1
	before := map[string]bool{} // workers that trained the step just before the checkpoint
	for _, r := range recs {
		if strings.HasPrefix(r.Worker, "a-") {
			lastKilled = max(lastKilled, r.Step)
			if r.Step == ckStep-1 {
				before[r.Worker] = true
			}
			if r.Step >= ckStep {
				killedRun[r.Step] = r
				continue
			}
		} else {
			if r.Step < ckStep {
				t.Fatalf("%s logged step %d, before the checkpoint it resumed from (step %d)", r.Worker, r.Step, ckStep)
			}
			resumedBatch[r.Step] = fmt.Sprint(r.Epoch, r.Idx)
			if world[r.Step] == nil {
				world[r.Step] = map[string]bool{}
			}
			world[r.Step][r.Worker] = true
		}
		kept = append(kept, r)
	}
	for s, r := range killedRun {
		if got, ok := resumedBatch[s]; !ok || got != fmt.Sprint(r.Epoch, r.Idx) {
			t.Errorf("step %d: the killed run's global batch differs from the resumed run's replay", s)
		}
	}
	if len(before) != 2 {
		t.Fatalf("step %d (before the checkpoint) was trained by %v, want both first-run workers", ckStep-1, before)
	}
	checkAccounting(t, kept, n, 1)

	// World size of every resumed step: how many fresh workers logged it.
	sizes := map[int]int{}
	steps := make([]int, 0, len(world))
	for s, ws := range world {
		sizes[len(ws)]++
		steps = append(steps, s)
	}
	sort.Ints(steps)
	if len(steps) == 0 || steps[0] != ckStep {
		t.Fatalf("the resumed run's first step is %v, want %d (the checkpoint)", steps[:min(len(steps), 1)], ckStep)
	}
	if sizes[3] == 0 {
		t.Errorf("no resumed step was trained by all 3 fresh workers (steps by world size: %v)", sizes)
	}
	firstWorld := len(world[ckStep])

	acc := -1.0
	for _, ev := range c.events() {
		if ev.Type == coordinator.EventEvaluation && ev.Epoch == 1 {
			acc = ev.Metrics["accuracy"]
		}
	}
	if acc <= 0.9 {
		t.Errorf("final test accuracy %.4f, want > 0.9", acc)
	}
	final, _, err := store.Latest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Both runs are one submission, and the manifests say what regenerates
	// the random streams: scheme, seed, step.
	if sub := ck.Manifest.Submission; sub == "" || final.Manifest.Submission != sub {
		t.Errorf("checkpoint submissions: step %d %q, final %q; want one non-empty id", ckStep, sub, final.Manifest.Submission)
	}
	if want := fmt.Sprint([]uint64{worker.RNGScheme, 11, uint64(final.Manifest.Step)}); fmt.Sprint(final.Manifest.RNG) != want {
		t.Errorf("final rng_state %v, want %s", final.Manifest.RNG, want)
	}
	t.Logf("2 workers killed at step %d (last logged step %d), newest checkpoint step %d; %d steps replayed by 3 fresh workers; "+
		"resumed run trained steps %d..%d, first at world %d, steps by world size %v; final checkpoint step %d epoch %d; "+
		"test accuracy %.4f; first run %v, resumed run %v",
		killedAt, lastKilled, ckStep, len(killedRun), steps[0], steps[len(steps)-1], firstWorld, sizes,
		final.Manifest.Step, final.Manifest.Epoch, acc, firstRun.Round(time.Second), resumed.Round(time.Second))
}
