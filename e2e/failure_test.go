package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/coordinator"
)

// A job whose dataset is not there fails: the worker exits with an error
// naming the dataset, and the job's status turns failed with that cause
// instead of staying pending forever.
func TestJobWithMissingDatasetFails(t *testing.T) {
	slow(t)
	const job = "no-data"
	c := newCluster(t, job)
	grpc := freeAddr(t)
	c.startCoordinator("coord", grpc)
	cl, err := coordinator.Dial(grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	missing := filepath.Join(c.dir, "no-such-dataset")
	spec, _ := json.Marshal(coordinator.JobSpec{
		Name: job, Net: "lenet", Dataset: coordinator.DatasetSpec{URI: missing, Layout: "class_folders"},
		Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28}, GlobalBatchSize: 32, Epochs: 1,
		Optimizer: coordinator.OptimizerSpec{Name: "sgd", LR: 0.05}, World: coordinator.WorldSpec{Min: 1},
	})
	c.submit(cl, spec)
	w := c.startWorker(job, "w-0")
	start := time.Now()
	c.waitFor("phase failed", 60*time.Second, func() bool { return c.status(job).Phase == coordinator.PhaseFailed })
	st := c.status(job)
	if !strings.Contains(st.Message, "w-0") || !strings.Contains(st.Message, missing) {
		t.Fatalf("failed status %q does not name the worker and the missing dataset %s", st.Message, missing)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("worker exited 0 on a missing dataset; log:\n%s", c.log("w-0"))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("worker still running 30 s after the job failed; log:\n%s", c.log("w-0"))
	}
	t.Logf("job failed %.1fs after the worker started: %s", time.Since(start).Seconds(), st.Message)
}
