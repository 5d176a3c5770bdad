package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/internal/embedded"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdProxy forwards a worker's etcd connections until Cut. Cutting it is,
// as far as etcd can tell, the worker dying: its lease is no longer kept
// alive and expires after the TTL, and nothing revokes it.
type etcdProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cut    bool
}

func newEtcdProxy(t *testing.T, target string) *etcdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &etcdProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.Cut)
	return p
}

func (p *etcdProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *etcdProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			d.Close()
			continue
		}
		p.conns = append(p.conns, c, d)
		p.mu.Unlock()
		go func() { io.Copy(d, c); d.Close() }()
		go func() { io.Copy(c, d); c.Close() }()
	}
}

// Cut closes the listener and every forwarded connection; idempotent.
func (p *etcdProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// dyingComm is a rank's Communicator that, once die says so, dies in its
// next replica check: with a check after every step (CheckEvery 1), the
// first AllGatherUint64 after an AllReduce (the step's gradients) is
// VerifyReplicas' checksum exchange. inCheck is set while the rank is in
// one, so that die can wait for the other ranks to be there too (they
// finished the step's all-reduce and wait for this rank's checksum); the
// rank then breaks its links at once, as a killed process's connections
// reset.
type dyingComm struct {
	allreduce.Communicator
	reduced atomic.Bool
	inCheck *atomic.Bool
	die     func() bool
}

func (c *dyingComm) AllReduce(ctx context.Context, buf []float32, op allreduce.Op) error {
	c.reduced.Store(true)
	return c.Communicator.AllReduce(ctx, buf, op)
}

func (c *dyingComm) AllGatherUint64(ctx context.Context, v uint64) ([]uint64, error) {
	if !c.reduced.Swap(false) {
		return c.Communicator.AllGatherUint64(ctx, v)
	}
	c.inCheck.Store(true)
	defer c.inCheck.Store(false)
	if c.die() {
		dead, cancel := context.WithCancel(ctx)
		cancel() // a failed collective cuts the rank's links without a clean close
		_, err := c.Communicator.AllGatherUint64(dead, v)
		return nil, fmt.Errorf("rank killed in the replica check: %w", err)
	}
	return c.Communicator.AllGatherUint64(ctx, v)
}

// syncBuffer is a log sink shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testCluster is an embedded etcd, a coordinator and in-process workers
// training one LeNet/MNIST job, each worker reaching etcd through its own
// etcdProxy and forming its rings through dyingComm.
type testCluster struct {
	t       *testing.T
	ctx     context.Context
	cli     *clientv3.Client
	job     string
	logs    *syncBuffer
	ids     []string
	workers map[string]*testWorker

	ringsMu sync.Mutex
	rings   []coordinator.Ring // every generation published, in order
}

type testWorker struct {
	id                     string
	proxy                  *etcdProxy
	armed, killed, inCheck atomic.Bool
	// othersNotInCheck: armed, it died without every other rank in the check.
	othersNotInCheck atomic.Bool
	done             chan error // what runCluster returned
}

// startTestCluster starts n workers (w-0, w-1, ...) in a job that waits
// for minWorld of them; everything stops when the test ends.
func startTestCluster(t *testing.T, job string, n, minWorld int) *testCluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	etcd, err := embedded.StartEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: quietZap()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	t.Cleanup(bg.Wait) // cleanups run last in, first out: cancel, wait, close
	t.Cleanup(cancel)
	c := &testCluster{t: t, ctx: ctx, cli: cli, job: job, logs: &syncBuffer{}, workers: map[string]*testWorker{}}
	log := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	coord, err := coordinator.New(coordinator.Config{ID: "coord", Client: cli, Logger: log, Settle: 100 * time.Millisecond, Resync: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	bg.Add(1)
	go func() { defer bg.Done(); coord.Run(ctx) }()
	spec, _ := json.Marshal(coordinator.JobSpec{
		Name: job, Net: "lenet", Dataset: coordinator.DatasetSpec{URI: "builtin:mnist", Layout: "idx"},
		Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28}, GlobalBatchSize: 96, Epochs: 5, Seed: 5,
		Optimizer: coordinator.OptimizerSpec{Name: "sgd", LR: 0.05, Momentum: 0.9},
		World:     coordinator.WorldSpec{Min: minWorld},
	})
	if _, err := coord.SubmitJob(ctx, spec); err != nil {
		t.Fatal(err)
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		for r := range coordinator.WatchRing(ctx, cli, job) {
			c.ringsMu.Lock()
			c.rings = append(c.rings, r)
			c.ringsMu.Unlock()
		}
	}()

	for i := range n {
		id := fmt.Sprintf("w-%d", i)
		c.ids = append(c.ids, id)
		c.workers[id] = &testWorker{id: id, proxy: newEtcdProxy(t, strings.TrimPrefix(etcd.ClientURL(), "http://")), done: make(chan error, 1)}
	}
	for _, id := range c.ids {
		tw := c.workers[id]
		die := func() bool {
			if !tw.armed.CompareAndSwap(true, false) {
				return false
			}
			// Die once every other rank waits in the check for this one.
			for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
				all := true
				for _, o := range c.workers {
					all = all && (o == tw || o.killed.Load() || o.inCheck.Load())
				}
				if all {
					break
				}
				if time.Now().After(deadline) {
					tw.othersNotInCheck.Store(true)
					break
				}
			}
			tw.proxy.Cut()
			tw.killed.Store(true)
			return true
		}
		dial := func(ctx context.Context, rc allreduce.RingConfig) (allreduce.Communicator, error) {
			if tw.killed.Load() {
				return nil, errors.New("this worker was killed")
			}
			comm, err := allreduce.DialRing(ctx, rc)
			if err != nil {
				return nil, err
			}
			return &dyingComm{Communicator: comm, inCheck: &tw.inCheck, die: die}, nil
		}
		cfg := ClusterConfig{Job: job, ID: id, Etcd: []string{tw.proxy.URL()}, Threads: 1, LeaseTTL: 2 * time.Second,
			CollectiveTimeout: 4 * time.Second, CheckEvery: 1, Log: log}
		bg.Add(1)
		go func() { defer bg.Done(); tw.done <- runCluster(ctx, cfg, dial) }()
	}
	return c
}

func (c *testCluster) latest() coordinator.Ring {
	c.ringsMu.Lock()
	defer c.ringsMu.Unlock()
	if len(c.rings) == 0 {
		return coordinator.Ring{}
	}
	return c.rings[len(c.rings)-1]
}

func (c *testCluster) state() coordinator.JobState {
	var st coordinator.JobState
	if resp, err := c.cli.Get(c.ctx, coordinator.StateKey(c.job)); err == nil && len(resp.Kvs) > 0 {
		json.Unmarshal(resp.Kvs[0].Value, &st)
	}
	return st
}

// training says the newest generation's members are ids (sorted) and it
// has trained steps steps past its start (or past since, if later).
func (c *testCluster) training(ids []string, steps, since int64) bool {
	r := c.latest()
	st := c.state()
	return slices.Equal(slices.Sorted(slices.Values(r.IDs())), ids) && st.Generation == r.Generation &&
		st.Step >= max(r.StartStep, since)+steps
}

// report is the rings, the registered members and the tail of the logs.
func (c *testCluster) report() string {
	var b strings.Builder
	c.ringsMu.Lock()
	for _, r := range c.rings {
		fmt.Fprintf(&b, "generation %d: %v from step %d\n", r.Generation, r.IDs(), r.StartStep)
	}
	c.ringsMu.Unlock()
	var members []string
	if resp, err := c.cli.Get(c.ctx, coordinator.MembersPrefix(c.job), clientv3.WithPrefix(), clientv3.WithKeysOnly()); err == nil {
		for _, kv := range resp.Kvs {
			members = append(members, strings.TrimPrefix(string(kv.Key), coordinator.MembersPrefix(c.job)))
		}
	}
	fmt.Fprintf(&b, "registered now: %v; job state: step %d\n", members, c.state().Step)
	l := c.logs.String()
	if len(l) > 6000 {
		l = "..." + l[len(l)-6000:]
	}
	return b.String() + l
}

// waitFor polls cond; it fails at the timeout, or at once when a worker
// that was not killed returns.
func (c *testCluster) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, tw := range c.workers {
			select {
			case err := <-tw.done:
				tw.done <- err
				if !tw.killed.Load() {
					c.t.Fatalf("waiting for %s: worker %s returned %v\n%s", what, tw.id, err, c.report())
				}
			default:
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, c.report())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A worker killed while its ring exchanges replica checksums (every
// CheckEvery steps) makes the survivors' checksum exchange fail. That is a
// broken ring like any other, not diverged replicas: the survivors must
// stay registered and form the next ring generation without it. They used
// to exit as "replicas diverged", revoking their leases at once, so the
// coordinator published a ring of only the dead worker (its lease still
// alive), then none at all, and the job stalled (scripts/compose_test.sh,
// worker kill).
func TestSurvivorsOfAKillDuringTheReplicaCheckFormTheNextRing(t *testing.T) {
	if testing.Short() {
		t.Skip("trains LeNet on MNIST in three in-process workers")
	}
	c := startTestCluster(t, "replica-check-kill", 3, 2)
	c.waitFor("a ring of 3 training", 2*time.Minute, func() bool { return c.training(c.ids, 2, 0) })
	victim := c.workers[c.latest().Members[1].ID]
	victim.armed.Store(true)
	c.waitFor("the victim's next replica check", time.Minute, victim.killed.Load)
	killedAt, killStep := time.Now(), c.state().Step
	if victim.othersNotInCheck.Load() {
		t.Fatalf("the other ranks were not all in the replica check when %s died\n%s", victim.id, c.report())
	}
	var survivors []string
	for _, id := range c.ids {
		if id != victim.id {
			survivors = append(survivors, id)
		}
	}
	c.waitFor("the survivors to train in a ring of their own", time.Minute, func() bool { return c.training(survivors, 3, killStep) })
	t.Logf("killed %s in the replica check after step %d; %v trained on in generation %d, %.1fs later at step %d",
		victim.id, killStep, survivors, c.latest().Generation, time.Since(killedAt).Seconds(), c.state().Step)
}

// A member key deleted while the worker holds its lease (by hand, say)
// leaves the worker out of the next ring, and Lost never fires: the worker
// must notice that its key is gone and register again.
func TestWorkerWhoseMemberKeyIsDeletedRegistersAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("trains LeNet on MNIST in two in-process workers")
	}
	c := startTestCluster(t, "member-key-deleted", 2, 1)
	c.waitFor("a ring of 2 training", 2*time.Minute, func() bool { return c.training(c.ids, 2, 0) })
	gone := c.ids[1]
	if _, err := c.cli.Delete(c.ctx, coordinator.MemberKey(c.job, gone)); err != nil {
		t.Fatal(err)
	}
	deletedAt := time.Now()
	c.waitFor("a ring without "+gone, 30*time.Second, func() bool { return c.latest().Rank(gone) < 0 })
	c.waitFor(gone+" back in a training ring", time.Minute, func() bool { return c.training(c.ids, 2, 0) })
	t.Logf("%s was back in generation %d %.1fs after its key was deleted", gone, c.latest().Generation, time.Since(deletedAt).Seconds())
}
