// Package e2e runs ringtrain as users do: the real binary, in separate
// processes, against real etcd and NATS servers on loopback. These suites
// are slow; they run with RINGTRAIN_SLOW=1 (scripts/test.sh sets it).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/internal/embedded"
	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/worker"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var binary string

func TestMain(m *testing.M) {
	if os.Getenv("RINGTRAIN_SLOW") == "" {
		fmt.Println("e2e: skipped (set RINGTRAIN_SLOW=1 to run the multi-process suites)")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ringtrain-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "ringtrain")
	build := exec.Command("go", "build", "-o", binary, "../cmd/ringtrain")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building ringtrain:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func slow(t *testing.T) {
	t.Helper()
	if binary == "" {
		t.Skip("set RINGTRAIN_SLOW=1")
	}
}

// cluster is the servers and processes of one test.
type cluster struct {
	t     *testing.T
	dir   string
	etcd  *embedded.Etcd
	nats  *embedded.NATS
	cli   *clientv3.Client
	nc    *nats.Conn
	mu    sync.Mutex
	procs map[string]*exec.Cmd
	evMu  sync.Mutex
	evs   []coordinator.Event
}

func newCluster(t *testing.T, job string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), procs: map[string]*exec.Cmd{}}
	var err error
	if c.etcd, err = embedded.StartEtcd(context.Background(), filepath.Join(c.dir, "etcd")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.etcd.Close)
	if c.nats, err = embedded.StartNATS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nats.Close)
	if c.cli, err = clientv3.New(clientv3.Config{Endpoints: c.etcd.Endpoints(), DialTimeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cli.Close() })
	if c.nc, err = nats.Connect(c.nats.ClientURL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nc.Close)
	if _, err := c.nc.Subscribe("ringtrain."+job+".events", func(m *nats.Msg) {
		var ev coordinator.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			c.evMu.Lock()
			c.evs = append(c.evs, ev)
			c.evMu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, p := range c.procs {
			if p.ProcessState == nil {
				p.Process.Kill()
				p.Wait()
			}
		}
	})
	return c
}

// start runs the binary as a named process, logging to dir/name.log.
func (c *cluster) start(name string, args ...string) *exec.Cmd {
	c.t.Helper()
	logf, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.procs[name] = cmd
	c.mu.Unlock()
	return cmd
}

func (c *cluster) kill(name string) time.Time {
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	if err := p.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill %s: %v", name, err)
	}
	at := time.Now()
	p.Wait()
	return at
}

// log is the tail of a process's log, for failure messages.
func (c *cluster) log(name string) string {
	s := c.fullLog(name)
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// fullLog is a process's whole log, for checks of what it logged (a line
// can scroll out of log's tail when ring formation retries log a lot).
func (c *cluster) fullLog(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
	return string(b)
}

func (c *cluster) startWorker(job, id string) *exec.Cmd {
	return c.start(id, "worker", "--job", job, "--id", id, "--etcd", c.etcd.ClientURL(), "--nats", c.nats.ClientURL(),
		"--threads", "1", "--lease-ttl", "2s", "--collective-timeout", "4s", "--check-every", "25",
		"--sample-log", filepath.Join(c.dir, id+".samples"), "--log-level", "info")
}

func (c *cluster) startCoordinator(id, grpcAddr string) {
	c.start(id, "coordinator", "--id", id, "--etcd", c.etcd.ClientURL(), "--nats", c.nats.ClientURL(),
		"--grpc-addr", grpcAddr, "--http-addr", "", "--session-ttl", "2s")
}

func (c *cluster) state(job string) coordinator.JobState {
	resp, err := c.cli.Get(context.Background(), coordinator.StateKey(job))
	var st coordinator.JobState
	if err == nil && len(resp.Kvs) > 0 {
		json.Unmarshal(resp.Kvs[0].Value, &st)
	}
	return st
}

func (c *cluster) status(job string) coordinator.JobStatus {
	resp, err := c.cli.Get(context.Background(), coordinator.StatusKey(job))
	var st coordinator.JobStatus
	if err == nil && len(resp.Kvs) > 0 {
		json.Unmarshal(resp.Kvs[0].Value, &st)
	}
	return st
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func (c *cluster) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.mu.Lock()
			names := make([]string, 0, len(c.procs))
			for n := range c.procs {
				names = append(names, n)
			}
			c.mu.Unlock()
			sort.Strings(names)
			for _, n := range names {
				c.t.Logf("--- %s log:\n%s", n, c.log(n))
			}
			c.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) members(job string) int {
	resp, err := c.cli.Get(context.Background(), coordinator.MembersPrefix(job), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0
	}
	return int(resp.Count)
}

func (c *cluster) events() []coordinator.Event {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	return append([]coordinator.Event(nil), c.evs...)
}

// submit sends a spec, retrying while the coordinator is still starting.
func (c *cluster) submit(cl *coordinator.Client, spec []byte) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cl.Submit(ctx, spec)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("submit: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// readSamples loads every worker's sample log.
func readSamples(t *testing.T, dir string) []worker.SampleRecord {
	var recs []worker.SampleRecord
	files, _ := filepath.Glob(filepath.Join(dir, "*.samples"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var r worker.SampleRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			recs = append(recs, r)
		}
		fh.Close()
	}
	return recs
}

// checkAccounting verifies that every distinct completed step was logged
// with one global batch and that, per epoch, every sample was trained
// exactly once.
func checkAccounting(t *testing.T, recs []worker.SampleRecord, n, epochs int) {
	t.Helper()
	steps := map[int]worker.SampleRecord{}
	for _, r := range recs {
		if prev, ok := steps[r.Step]; ok {
			if fmt.Sprint(prev.Idx) != fmt.Sprint(r.Idx) || prev.Epoch != r.Epoch {
				t.Fatalf("step %d logged with different batches by %s and %s", r.Step, prev.Worker, r.Worker)
			}
			continue
		}
		steps[r.Step] = r
	}
	seen := make([]map[int32]int, epochs)
	for i := range seen {
		seen[i] = map[int32]int{}
	}
	for _, r := range steps {
		if r.Epoch >= epochs {
			t.Fatalf("step %d in epoch %d of a %d-epoch job", r.Step, r.Epoch, epochs)
		}
		for _, i := range r.Idx {
			seen[r.Epoch][i]++
		}
	}
	for e := range seen {
		for i := int32(0); i < int32(n); i++ {
			if seen[e][i] != 1 {
				t.Fatalf("epoch %d: sample %d trained %d times", e, i, seen[e][i])
			}
		}
		if len(seen[e]) != n {
			t.Fatalf("epoch %d: %d distinct samples, want %d", e, len(seen[e]), n)
		}
	}
	t.Logf("accounting: %d distinct steps, every one of %d samples exactly once in each of %d epochs", len(steps), n, epochs)
}

// One run, everything a cluster must survive: 3 workers and 2 coordinators
// train LeNet on MNIST; a worker is SIGKILLed mid-epoch, a 4th joins, the
// leading coordinator is SIGKILLed. The run finishes above the accuracy
// bar with exact sample accounting.
func TestClusterSurvivesKillsAndJoins(t *testing.T) {
	slow(t)
	const job = "chaos"
	c := newCluster(t, job)
	grpcA, grpcB := freeAddr(t), freeAddr(t)
	c.startCoordinator("coord-a", grpcA)
	c.startCoordinator("coord-b", grpcB)
	for i := 0; i < 3; i++ {
		c.startWorker(job, fmt.Sprintf("worker-%d", i))
	}
	spec := coordinator.JobSpec{
		Name: job, Net: "lenet", Dataset: coordinator.DatasetSpec{URI: "builtin:mnist", Layout: "idx"},
		Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28}, GlobalBatchSize: 96, Epochs: 2, Seed: 5,
		Optimizer: coordinator.OptimizerSpec{Name: "sgd", LR: 0.05, Momentum: 0.9}, Schedule: coordinator.ScheduleSpec{Name: "cosine"},
		Eval:  coordinator.EvalSpec{URI: "builtin:mnist/test", Layout: "idx", EveryEpochs: 1},
		World: coordinator.WorldSpec{Min: 1},
	}
	b, _ := json.Marshal(spec)
	cl, err := coordinator.Dial(grpcA)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c.submit(cl, b)
	start := time.Now()
	// Workers register once their model and data are loaded.
	c.waitFor("3 registered workers", time.Minute, func() bool { return c.members(job) == 3 })

	// SIGKILL worker-2 mid-epoch.
	c.waitFor("step 150", 3*time.Minute, func() bool { return c.state(job).Step >= 150 })
	killStep := c.state(job).Step
	killedAt := c.kill("worker-2")
	c.waitFor("a step after the kill", time.Minute, func() bool { return c.state(job).Step > killStep+1 })

	// A 4th worker joins.
	c.waitFor("step 350", 3*time.Minute, func() bool { return c.state(job).Step >= 350 })
	c.startWorker(job, "worker-3")

	// SIGKILL the leading coordinator; the standby must take over.
	c.waitFor("step 500", 3*time.Minute, func() bool { return c.state(job).Step >= 500 })
	leader := c.status(job).Leader
	if leader != "coord-a" && leader != "coord-b" {
		t.Fatalf("status leader %q", leader)
	}
	standby := map[string]string{"coord-a": "coord-b", "coord-b": "coord-a"}[leader]
	stepAtCoordKill := c.state(job).Step
	coordKilledAt := c.kill(leader)
	c.waitFor("the standby coordinator to lead", 30*time.Second, func() bool { return c.status(job).Leader == standby })
	takeover := time.Since(coordKilledAt)

	c.waitFor("training to finish", 8*time.Minute, func() bool { return c.state(job).Done })
	elapsed := time.Since(start)
	for _, id := range []string{"worker-0", "worker-1", "worker-3"} {
		c.mu.Lock()
		p := c.procs[id]
		c.mu.Unlock()
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s exited with %v:\n%s", id, err, c.log(id))
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s did not exit after the job finished:\n%s", id, c.log(id))
		}
	}

	recs := readSamples(t, c.dir)
	checkAccounting(t, recs, 60000, 2)
	// Time from the kill to the next completed step.
	var recovery time.Duration = -1
	for _, r := range recs {
		if r.Step > int(killStep) && r.Time.After(killedAt) && (recovery < 0 || r.Time.Sub(killedAt) < recovery) {
			if r.Worker != "worker-2" {
				recovery = r.Time.Sub(killedAt)
			}
		}
	}
	// The joiner trains within 2 steps of entering the ring.
	joinStep := int64(-1)
	for _, ev := range c.events() {
		if ev.Type == coordinator.EventMembershipChanged && contains(ev.Joined, "worker-3") {
			joinStep = ev.Step
		}
	}
	first := -1
	for _, r := range recs {
		if r.Worker == "worker-3" && (first < 0 || r.Step < first) {
			first = r.Step
		}
	}
	if joinStep < 0 || first < 0 {
		t.Fatalf("worker-3 never joined (join event step %d, first logged step %d):\n%s", joinStep, first, c.log("worker-3"))
	}
	// Logged step numbers are 0-based; joinStep counts completed steps as
	// the coordinator saw them, which lags the ring by up to one state write
	// (50 ms, plus the watch): allow the steps that fit in 100 ms on top of
	// the 2-step bound, so a fast machine is not held to a tighter bound.
	times := map[int]time.Time{}
	for _, r := range recs {
		times[r.Step] = r.Time
	}
	stepDur := time.Duration(0)
	if a, ok := times[int(joinStep)-20]; ok {
		if b, ok := times[int(joinStep)]; ok {
			stepDur = b.Sub(a) / 20
		}
	}
	slack := int64(0)
	if stepDur > 0 {
		slack = int64((100*time.Millisecond + stepDur - 1) / stepDur)
	}
	if int64(first) > joinStep+2+slack {
		t.Errorf("worker-3 entered the ring at step %d but first trained step %d (steps take %v; bound %d)", joinStep, first, stepDur, joinStep+2+slack)
	}
	t.Logf("join: ring published at step %d (coordinator's view), worker-3's first step %d, %v per step", joinStep, first, stepDur)
	acc := -1.0
	for _, ev := range c.events() {
		if ev.Type == coordinator.EventEvaluation && ev.Epoch == 2 {
			acc = ev.Metrics["accuracy"]
		}
	}
	if acc < 0.98 {
		t.Errorf("final test accuracy %.4f, want ≥ 0.98", acc)
	}
	t.Logf("finished in %v: test accuracy %.4f; worker-2 killed at step %d, next completed step %v later; "+
		"worker-3 joined the ring at step %d, first trained step %d; coordinator %s killed at step %d, %s led after %v",
		elapsed.Round(time.Second), acc, killStep, recovery.Round(time.Millisecond), joinStep, first, leader, stepAtCoordKill,
		standby, takeover.Round(time.Millisecond))
	if strings.Contains(c.fullLog("worker-0"), "replicas diverged") {
		t.Fatal("worker-0 reported diverged replicas")
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// Kill every worker mid-run, corrupt the newest checkpoint, start fresh
// workers: they skip the corrupt checkpoint, resume from the one before,
// and end with weights bitwise equal to an uninterrupted run.
func TestResumeAfterAllWorkersDieIsBitwiseExact(t *testing.T) {
	slow(t)
	c := newCluster(t, "resume-ref")
	srv, err := s3server.Start(context.Background(), filepath.Join(c.dir, "s3"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.CreateBucket("ckpt"); err != nil {
		t.Fatal(err)
	}
	s3args := []string{"--s3-endpoint", srv.Endpoint, "--s3-access-key", srv.AccessKey, "--s3-secret-key", srv.SecretKey, "--s3-unsigned-payload"}
	grpc := freeAddr(t)
	c.startCoordinator("coord", grpc)
	cl, err := coordinator.Dial(grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	spec := func(name string) []byte {
		b, _ := json.Marshal(coordinator.JobSpec{
			Name: name, Net: "lenet", Dataset: coordinator.DatasetSpec{URI: "builtin:mnist", Layout: "idx"},
			Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28}, GlobalBatchSize: 128, Epochs: 1, Seed: 9,
			Optimizer:  coordinator.OptimizerSpec{Name: "sgd", LR: 0.05, Momentum: 0.9},
			Schedule:   coordinator.ScheduleSpec{Name: "cosine"},
			Checkpoint: coordinator.CheckpointSpec{URI: "s3://ckpt/runs", EverySteps: 100},
			World:      coordinator.WorldSpec{Min: 2, Max: 2},
		})
		return b
	}
	worker := func(job, id string) {
		c.start(id, append([]string{"worker", "--job", job, "--id", id, "--etcd", c.etcd.ClientURL(), "--threads", "1",
			"--lease-ttl", "2s", "--collective-timeout", "4s", "--log-level", "info"}, s3args...)...)
	}
	submit := func(name string) { c.submit(cl, spec(name)) }
	// Reference: uninterrupted.
	worker("resume-ref", "ref-0")
	worker("resume-ref", "ref-1")
	submit("resume-ref")
	c.waitFor("the reference run", 5*time.Minute, func() bool { return c.state("resume-ref").Done })

	// Interrupted: both workers SIGKILLed after the checkpoint at step 200.
	worker("resume-kill", "a-0")
	worker("resume-kill", "a-1")
	submit("resume-kill")
	c.waitFor("step 230", 5*time.Minute, func() bool { return c.state("resume-kill").Step >= 230 })
	c.kill("a-0")
	c.kill("a-1")
	killedAt := c.state("resume-kill").Step
	// Flip a byte in the newest checkpoint's weights: it must be skipped.
	objs, err := objstore.NewS3(context.Background(), objstore.S3Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		PathStyle: true, DisableContentSHA256: true}, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	killStore, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: "runs", Run: "resume-kill"})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := killStore.List(context.Background())
	if err != nil || len(entries) < 2 {
		t.Fatalf("want ≥ 2 checkpoints of the interrupted run by step %d, have %d (%v)", killedAt, len(entries), err)
	}
	victim := entries[len(entries)-1].Dir + "weights.safetensors"
	rc, err := objs.Get(context.Background(), victim)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := objs.Put(context.Background(), victim, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	worker("resume-kill", "b-0")
	worker("resume-kill", "b-1")
	c.waitFor("the resumed run", 5*time.Minute, func() bool { return c.state("resume-kill").Done })
	if log := c.fullLog("b-0") + c.fullLog("b-1"); !strings.Contains(log, "resumed from checkpoint") || !strings.Contains(log, "skipped checkpoint") {
		t.Fatalf("resumed workers did not report the skipped checkpoint and the resume:\n%s\n%s", c.log("b-0"), c.log("b-1"))
	}

	final := func(run string) *checkpoint.Checkpoint {
		st, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: "runs", Run: run})
		if err != nil {
			t.Fatal(err)
		}
		ck, _, err := st.Latest(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	ref, got := final("resume-ref"), final("resume-kill")
	if ref.Manifest.Step != got.Manifest.Step {
		t.Fatalf("final steps differ: %d vs %d", ref.Manifest.Step, got.Manifest.Step)
	}
	for i, w := range ref.Weights {
		g := got.Weights[i]
		for j := range w.Data {
			if math.Float32bits(w.Data[j]) != math.Float32bits(g.Data[j]) {
				t.Fatalf("%s[%d]: uninterrupted %v, resumed %v", w.Name, j, w.Data[j], g.Data[j])
			}
		}
	}
	for i, o := range ref.Optim {
		for j := range o.Data {
			if math.Float32bits(o.Data[j]) != math.Float32bits(got.Optim[i].Data[j]) {
				t.Fatalf("optimizer %s[%d] differs", o.Name, j)
			}
		}
	}
	t.Logf("killed both workers at step %d, corrupted %s, resumed; final step %d weights and momentum bitwise equal to the uninterrupted run",
		killedAt, victim, got.Manifest.Step)
}
