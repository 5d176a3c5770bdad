package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringtrain/ringtrain/internal/embedded"
)

// The tests below run against one real embedded etcd and NATS server shared
// by the package; each test uses its own job names.
var (
	testEtcd *embedded.Etcd
	testNATS *embedded.NATS
)

const testTTL = 2 * time.Second

// jobSeq makes job names unique across -count=N runs on the shared etcd.
var jobSeq atomic.Int64

func uniqueJob(base string) string { return fmt.Sprintf("%s-%d", base, jobSeq.Add(1)) }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ringtrain-coordinator-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	testEtcd, err = embedded.StartEtcd(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testNATS, err = embedded.StartNATS()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines of package coordinator still running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	testNATS.Close()
	testEtcd.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// leakedGoroutines waits up to timeout for every goroutine running this
// package's code (other than TestMain) to exit, and returns the stacks of
// those that did not.
func leakedGoroutines(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "ringtrain/coordinator.") && !strings.Contains(g, "coordinator.TestMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: testEtcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client for %s: %v", testEtcd.ClientURL(), err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func quietLogger() *slog.Logger {
	if os.Getenv("RINGTRAIN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startCoordinator runs a coordinator until the test ends or stop is called;
// stop returns Run's error (a Run still going 10s after cancel is an error).
func startCoordinator(t *testing.T, id string, cli *clientv3.Client, pub Publisher) (c *Coordinator, stop func() error) {
	t.Helper()
	c, err := New(Config{ID: id, Client: cli, Publisher: pub, SessionTTL: testTTL,
		Settle: 50 * time.Millisecond, Resync: 500 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = fmt.Errorf("coordinator %s: Run did not return 10s after cancel", id)
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("coordinator %s Run: %v", id, err)
		}
	})
	return c, stop
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func testSpec(job string, minWorld int) string {
	return fmt.Sprintf(`{"name":%q,"net":"lenet5","classes":10,"input":{"channels":1,"height":28,"width":28},
"dataset":{"uri":"/data/mnist","layout":"idx"},"global_batch_size":64,"optimizer":{"lr":0.01},
"world":{"min":%d}}`, job, minWorld)
}

func submit(t *testing.T, c *Coordinator, job string, minWorld int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.SubmitJob(ctx, []byte(testSpec(job, minWorld))); err != nil {
		t.Fatalf("submit %s: %v", job, err)
	}
}

func register(t *testing.T, cli *clientv3.Client, job, id string) *Membership {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Register(ctx, cli, job, id, id+".local:7000", testTTL)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// nextRing reads from a ring watch until pred holds.
func nextRing(t *testing.T, ch <-chan Ring, timeout time.Duration, what string, pred func(Ring) bool) Ring {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatalf("ring watch closed waiting for %s", what)
			}
			if pred(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no ring with %s within %v", what, timeout)
		}
	}
}

func idsAre(ids ...string) func(Ring) bool {
	return func(r Ring) bool { return slices.Equal(r.IDs(), ids) }
}

func TestRingFollowsMembership(t *testing.T) {
	job := uniqueJob("ring-follows")
	cli := newClient(t)
	c, _ := startCoordinator(t, "coord-a", cli, nil)
	submit(t, c, job, 1)

	a := register(t, cli, job, "w-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rings := a.WatchRing(ctx)
	r1 := nextRing(t, rings, 10*time.Second, "[w-a]", idsAre("w-a"))

	b := register(t, cli, job, "w-b")
	r2 := nextRing(t, rings, 10*time.Second, "[w-a w-b]", idsAre("w-a", "w-b"))
	if r2.Generation <= r1.Generation {
		t.Fatalf("generation did not increase: %d then %d", r1.Generation, r2.Generation)
	}
	if r2.Members[1].Incarnation != b.Self().Incarnation || r2.Members[1].Addr != "w-b.local:7000" {
		t.Fatalf("ring member = %+v, want %+v", r2.Members[1], b.Self())
	}

	// Revoked lease (clean exit): gone at once.
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r3 := nextRing(t, rings, 10*time.Second, "[w-a] after revoke", idsAre("w-a"))
	t.Logf("revoke -> generation %d in %v", r3.Generation, time.Since(start))
	if r3.Generation != r2.Generation+1 {
		t.Fatalf("generation %d after revoke, want %d", r3.Generation, r2.Generation+1)
	}

	// Expired lease (crashed worker): its client vanishes without revoking.
	crashCli := newClient(t)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, err := Register(ctx2, crashCli, job, "w-c", "w-c.local:7000", testTTL); err != nil {
		t.Fatal(err)
	}
	nextRing(t, rings, 10*time.Second, "[w-a w-c]", idsAre("w-a", "w-c"))
	start = time.Now()
	crashCli.Close()
	r5 := nextRing(t, rings, testTTL+5*time.Second, "[w-a] after lease expiry", idsAre("w-a"))
	took := time.Since(start)
	t.Logf("lease expiry (TTL %v) -> generation %d in %v", testTTL, r5.Generation, took)
	// etcd expires a lease within TTL after the last keepalive (it may keep
	// it up to one extra election timeout); allow TTL plus a margin.
	if took > testTTL+3*time.Second {
		t.Fatalf("expired member left the ring after %v, TTL is %v", took, testTTL)
	}

	st, err := c.JobStatus(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.Phase != PhaseRunning || st.Status.Generation != r5.Generation || st.Ring.Generation != r5.Generation {
		t.Fatalf("status = %+v, ring gen %d; want running at gen %d", st.Status, st.Ring.Generation, r5.Generation)
	}
}

func TestRegisterDuplicateID(t *testing.T) {
	job := uniqueJob("dup-id")
	cli := newClient(t)
	register(t, cli, job, "w-1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Register(ctx, cli, job, "w-1", "elsewhere:1", testTTL)
	if !errors.Is(err, ErrMemberExists) {
		t.Fatalf("second Register = %v, want ErrMemberExists", err)
	}
	if _, err := Register(ctx, cli, job, "bad/id", "x:1", testTTL); err == nil {
		t.Fatal("Register accepted id with '/'")
	}
}

func TestWaitBelowMinWorld(t *testing.T) {
	job := uniqueJob("below-min")
	cli := newClient(t)
	c, _ := startCoordinator(t, "coord-min", cli, nil)
	submit(t, c, job, 2)
	ctx := context.Background()
	phase := func() Phase {
		st, err := c.JobStatus(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		return st.Status.Phase
	}

	a := register(t, cli, job, "w-a")
	time.Sleep(500 * time.Millisecond) // several reconcile passes
	if st, _ := c.JobStatus(ctx, job); st.Ring.Generation != 0 || st.Status.Phase != PhasePending {
		t.Fatalf("one member of min 2: ring %+v status %+v, want no ring, pending", st.Ring, st.Status)
	}
	rings := a.WatchRing(ctx)
	b := register(t, cli, job, "w-b")
	nextRing(t, rings, 10*time.Second, "[w-a w-b]", idsAre("w-a", "w-b"))
	waitFor(t, 5*time.Second, "phase running", func() bool { return phase() == PhaseRunning })

	b.Close()
	waitFor(t, 5*time.Second, "phase waiting", func() bool { return phase() == PhaseWaiting })
	if st, _ := c.JobStatus(ctx, job); st.Ring.Generation != 1 {
		t.Fatalf("below min published generation %d, want to keep 1", st.Ring.Generation)
	}
	register(t, cli, job, "w-c")
	r := nextRing(t, rings, 10*time.Second, "[w-a w-c]", idsAre("w-a", "w-c"))
	if r.Generation != 2 {
		t.Fatalf("generation %d, want 2", r.Generation)
	}
}

func TestLeaderFailover(t *testing.T) {
	job := uniqueJob("failover")
	cli1, cli2 := newClient(t), newClient(t)
	c1, stop1 := startCoordinator(t, "coord-1", cli1, nil)
	c2, stop2 := startCoordinator(t, "coord-2", cli2, nil)
	submit(t, c1, job, 1)

	waitFor(t, 10*time.Second, "a leader", func() bool { return c1.IsLeader(job) || c2.IsLeader(job) })
	time.Sleep(300 * time.Millisecond)
	if c1.IsLeader(job) && c2.IsLeader(job) {
		t.Fatal("both coordinators lead")
	}
	leader, follower, stopLeader, leaderCli := c1, c2, stop1, cli1
	if c2.IsLeader(job) {
		leader, follower, stopLeader, leaderCli = c2, c1, stop2, cli2
	}
	st, err := follower.JobStatus(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != leader.ID() {
		t.Fatalf("status names leader %q, want %q", st.Leader, leader.ID())
	}

	// Crash the leader: its etcd connection disappears without resigning, so
	// the follower takes over only when the session lease expires.
	leaderCli.Close()
	took := waitFor(t, testTTL+8*time.Second, "follower to lead", func() bool { return follower.IsLeader(job) })
	t.Logf("leader %s crashed -> %s leads after %v (session TTL %v)", leader.ID(), follower.ID(), took, testTTL)
	if err := stopLeader(); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Errorf("crashed coordinator's Run: %v", err)
	}
	if leader.IsLeader(job) {
		t.Error("crashed coordinator still believes it leads")
	}

	// The new leader still does the work.
	cli3 := newClient(t)
	m := register(t, cli3, job, "w-x")
	rings := m.WatchRing(context.Background())
	nextRing(t, rings, 10*time.Second, "[w-x] from the new leader", idsAre("w-x"))
}

func TestGracefulHandover(t *testing.T) {
	job := uniqueJob("handover")
	cli1, cli2 := newClient(t), newClient(t)
	c1, stop1 := startCoordinator(t, "coord-g1", cli1, nil)
	submit(t, c1, job, 1)
	waitFor(t, 10*time.Second, "c1 leads", func() bool { return c1.IsLeader(job) })
	c2, _ := startCoordinator(t, "coord-g2", cli2, nil)
	time.Sleep(200 * time.Millisecond)
	if c2.IsLeader(job) {
		t.Fatal("late coordinator took over a led job")
	}
	stop1() // resigns
	took := waitFor(t, 5*time.Second, "c2 leads", func() bool { return c2.IsLeader(job) })
	t.Logf("graceful handover in %v", took)
	if took > time.Second+500*time.Millisecond {
		t.Errorf("graceful handover took %v; resign should be near-instant", took)
	}
}

func TestEventsReachNATS(t *testing.T) {
	job := uniqueJob("events")
	nc, err := nats.Connect(testNATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("ringtrain." + job + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pubConn, err := ConnectNATS(context.Background(), testNATS.ClientURL(), "coord-ev")
	if err != nil {
		t.Fatal(err)
	}
	defer pubConn.Close()
	cli := newClient(t)
	pub := NewNATSPublisher(pubConn)
	c, _ := startCoordinator(t, "coord-ev", cli, pub)
	submit(t, c, job, 1)
	register(t, cli, job, "w-e")
	// A worker-side publisher sends step metrics through the same type.
	if err := pub.Publish(context.Background(), Event{Job: job, Type: EventStepMetrics, Step: 7,
		Metrics: map[string]float64{"loss": 2.3}}); err != nil {
		t.Fatal(err)
	}

	seen := map[EventType]Event{}
	subjects := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	want := []EventType{EventJobSubmitted, EventLeaderElected, EventMembershipChanged, EventJobStarted, EventStepMetrics}
	for time.Now().Before(deadline) {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var ev Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatalf("event on %s: %v", msg.Subject, err)
		}
		seen[ev.Type] = ev
		subjects[msg.Subject] = true
		if len(seen) >= len(want) && !slices.ContainsFunc(want, func(w EventType) bool { _, ok := seen[w]; return !ok }) {
			break
		}
	}
	for _, w := range want {
		if _, ok := seen[w]; !ok {
			t.Errorf("no %s event; saw %v", w, seen)
		}
	}
	if ev := seen[EventMembershipChanged]; ev.Generation != 1 || !slices.Equal(ev.Members, []string{"w-e"}) || ev.Source != "coord-ev" {
		t.Errorf("membership event = %+v", ev)
	}
	if !subjects[EventsSubject(job)] || !subjects[MetricsSubject(job)] {
		t.Errorf("subjects seen %v, want events and metrics", subjects)
	}
}

func TestGRPCAPI(t *testing.T) {
	job := uniqueJob("api-job")
	cli := newClient(t)
	c, _ := startCoordinator(t, "coord-api", cli, nil)
	srv := c.NewGRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	client, err := Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	resp, err := client.Submit(ctx, []byte(testSpec(job, 1)))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if resp.Spec.Name != job || resp.Spec.Schedule.Name != "constant" || resp.Spec.Submission == "" {
		t.Fatalf("Submit returned spec %+v", resp.Spec)
	}
	first := resp.Spec.Submission
	if _, err := client.Submit(ctx, []byte(testSpec(job, 1))); status.Code(errors.Unwrap(err)) != codes.AlreadyExists {
		t.Fatalf("duplicate Submit = %v, want AlreadyExists", err)
	}
	_, err = client.Submit(ctx, []byte(strings.Replace(testSpec(uniqueJob("api-bad"), 1), `"lr":0.01`, `"lr":-1`, 1)))
	if status.Code(errors.Unwrap(err)) != codes.InvalidArgument || !strings.Contains(err.Error(), "spec.optimizer.lr: must be > 0") {
		t.Fatalf("invalid Submit = %v, want InvalidArgument naming spec.optimizer.lr", err)
	}
	if _, err := client.Status(ctx, "no-such-job"); status.Code(errors.Unwrap(err)) != codes.NotFound {
		t.Fatalf("Status of unknown job = %v, want NotFound", err)
	}

	register(t, cli, job, "w-api")
	waitFor(t, 10*time.Second, "job running", func() bool {
		st, err := client.Status(ctx, job)
		return err == nil && st.Status.Phase == PhaseRunning && st.Ring.Generation == 1 && st.Leader == "coord-api"
	})
	list, err := client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list.Jobs, func(s JobStatus) bool { return s.Job == job && s.World == 1 }) {
		t.Fatalf("List = %+v, want api-job with world 1", list.Jobs)
	}

	stop, err := client.Stop(ctx, job, "test over")
	if err != nil {
		t.Fatal(err)
	}
	if stop.Status.Phase != PhaseStopping {
		t.Fatalf("Stop phase = %s, want stopping (a member is alive)", stop.Status.Phase)
	}
	// The worker sees the stop and leaves; then the job is stopped.
	if _, err := cli.Delete(ctx, MemberKey(job, "w-api")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "job stopped", func() bool {
		st, err := client.Status(ctx, job)
		return err == nil && st.Status.Phase == PhaseStopped
	})

	// An ended job may be submitted again; generations keep counting. The
	// new submission gets its own id, whatever the submitted spec says.
	again, err := client.Submit(ctx, []byte(strings.Replace(testSpec(job, 1), "{", `{"submission":"`+first+`",`, 1)))
	if err != nil {
		t.Fatalf("resubmit after stop: %v", err)
	}
	if again.Spec.Submission == first || again.Spec.Submission == "" {
		t.Fatalf("resubmitted job has submission %q, the first one had %q", again.Spec.Submission, first)
	}
	if st, err := client.Status(ctx, job); err != nil || st.Spec.Submission != again.Spec.Submission {
		t.Fatalf("stored spec has submission %q (%v), Submit returned %q", st.Spec.Submission, err, again.Spec.Submission)
	}
	m := register(t, cli, job, "w-api2")
	r := nextRing(t, m.WatchRing(ctx), 10*time.Second, "[w-api2]", idsAre("w-api2"))
	if r.Generation != 2 {
		t.Fatalf("first ring of the resubmitted job has generation %d, want 2", r.Generation)
	}
	if st, _ := client.Status(ctx, job); st.Status.Phase != PhaseRunning || st.State != nil {
		t.Fatalf("resubmitted job status %+v state %+v, want running, no state", st.Status, st.State)
	}
}

func TestUnreachableCoordinatorNamesAddress(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	client, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = client.List(ctx)
	if err == nil || !strings.Contains(err.Error(), addr) || status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Fatalf("List on dead address = %v, want Unavailable naming %s", err, addr)
	}
}

func TestHTTPHealthAndMetrics(t *testing.T) {
	job := uniqueJob("http-job")
	cli := newClient(t)
	c, stop := startCoordinator(t, "coord-http", cli, nil)
	submit(t, c, job, 1)
	register(t, cli, job, "w-h")
	ts := httptest.NewServer(c.HTTPHandler())
	defer ts.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, 10*time.Second, "healthy and leading", func() bool {
		code, body := get("/healthz")
		return code == 200 && strings.Contains(body, job)
	})
	waitFor(t, 10*time.Second, "generation metric", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `ringtrain_ring_generation{job="`+job+`"} 1`) &&
			strings.Contains(body, `ringtrain_coordinator_leader{job="`+job+`"} 1`)
	})
	stop()
	if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz after stop = %d, want 503", code)
	}
}

func TestMembershipLostWhenLeaseRevoked(t *testing.T) {
	job := uniqueJob("lost")
	cli := newClient(t)
	m := register(t, cli, job, "w-lost")
	select {
	case <-m.Lost():
		t.Fatal("Lost closed while the lease is alive")
	case <-time.After(3 * testTTL / 2): // longer than the TTL: keepalive works
	}
	// Someone else (an operator, a partition outlasting the TTL) kills the lease.
	other := newClient(t)
	if _, err := other.Revoke(context.Background(), m.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Lost():
	case <-time.After(testTTL + 3*time.Second):
		t.Fatal("Lost not closed after the lease was revoked")
	}
	resp, err := cli.Get(context.Background(), MemberKey(job, "w-lost"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("member key after revoke: %v %v", resp.Kvs, err)
	}
	// The id is free again: a new incarnation can register.
	m2 := register(t, cli, job, "w-lost")
	if m2.Self().Incarnation <= m.Self().Incarnation {
		t.Fatalf("new incarnation %d not after %d", m2.Self().Incarnation, m.Self().Incarnation)
	}
}

// Registered tells a registration whose key was deleted under its live
// lease (which Lost does not) or taken over by another registration.
func TestMembershipRegistered(t *testing.T) {
	job := uniqueJob("registered")
	cli := newClient(t)
	m := register(t, cli, job, "w-reg")
	ctx := context.Background()
	if ok, err := m.Registered(ctx); !ok || err != nil {
		t.Fatalf("Registered = %v, %v right after Register", ok, err)
	}
	other := newClient(t)
	if _, err := other.Delete(ctx, MemberKey(job, "w-reg")); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Registered(ctx); ok || err != nil {
		t.Fatalf("Registered = %v, %v after its key was deleted", ok, err)
	}
	select {
	case <-m.Lost():
		t.Fatal("Lost closed: the lease is alive")
	default:
	}
	m2 := register(t, other, job, "w-reg")
	if ok, err := m.Registered(ctx); ok || err != nil {
		t.Fatalf("Registered = %v, %v with the key held by another registration", ok, err)
	}
	if ok, err := m2.Registered(ctx); !ok || err != nil {
		t.Fatalf("the other registration: Registered = %v, %v", ok, err)
	}
}

// TestChurn joins and leaves workers at random while the leading coordinator
// is replaced; the ring must settle on exactly the live members, and the
// generations a watcher sees must only increase. RINGTRAIN_SLOW=1 runs longer.
func TestChurn(t *testing.T) {
	job := uniqueJob("churn")
	ops := 24
	if os.Getenv("RINGTRAIN_SLOW") != "" {
		ops = 200
	}
	cli1, cli2, wcli := newClient(t), newClient(t), newClient(t)
	c1, stop1 := startCoordinator(t, "coord-ch1", cli1, nil)
	c2, _ := startCoordinator(t, "coord-ch2", cli2, nil)
	submit(t, c1, job, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rings := WatchRing(ctx, wcli, job)
	var seen []Ring
	var seenMu sync.Mutex
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for r := range rings {
			seenMu.Lock()
			seen = append(seen, r)
			seenMu.Unlock()
		}
	}()

	live := map[string]*Membership{}
	rng := uint64(12345)
	next := func(n int) int { // xorshift: deterministic, no shared rand state
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	for i := range ops {
		id := fmt.Sprintf("w-%d", next(6))
		if m, ok := live[id]; ok {
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			delete(live, id)
		} else {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			m, err := Register(rctx, wcli, job, id, id+":1", testTTL)
			rcancel()
			if err != nil {
				t.Fatalf("op %d: register %s: %v", i, id, err)
			}
			live[id] = m
		}
		if i == ops/2 {
			if err := stop1(); err != nil { // hand leadership over mid-churn
				t.Fatal(err)
			}
		}
		time.Sleep(time.Duration(20+next(80)) * time.Millisecond)
	}
	if len(live) == 0 {
		m := register(t, wcli, job, "w-last")
		live["w-last"] = m
	}
	want := make([]string, 0, len(live))
	for id := range live {
		want = append(want, id)
	}
	slices.Sort(want)
	waitFor(t, 10*time.Second, fmt.Sprintf("ring of %v", want), func() bool {
		seenMu.Lock()
		defer seenMu.Unlock()
		if len(seen) == 0 {
			return false
		}
		got := slices.Clone(seen[len(seen)-1].IDs())
		slices.Sort(got)
		return slices.Equal(got, want)
	})
	if !c2.IsLeader(job) || c1.IsLeader(job) {
		t.Errorf("after handover: c1 leads %v, c2 leads %v", c1.IsLeader(job), c2.IsLeader(job))
	}
	cancel()
	<-watchDone
	for i := 1; i < len(seen); i++ {
		if seen[i].Generation <= seen[i-1].Generation {
			t.Fatalf("generation went %d -> %d", seen[i-1].Generation, seen[i].Generation)
		}
	}
	for _, m := range live {
		m.Close()
	}
	t.Logf("%d ops, %d generations observed, final ring %v", ops, len(seen), seen[len(seen)-1].IDs())
}

// A worker's failure report marks the job failed with its message (once,
// with an event), and resubmitting the job starts it afresh without it.
func TestWorkerFailureFailsJob(t *testing.T) {
	job := uniqueJob("fails")
	cli := newClient(t)
	c, _ := startCoordinator(t, "coord-fail", cli, nil)
	submit(t, c, job, 1)
	ctx := context.Background()
	status := func() JobStatus {
		st, err := c.JobStatus(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		return st.Status
	}
	spec, err := c.JobStatus(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	// A report from an earlier submission is not this run's failure.
	if err := ReportFailure(ctx, cli, job, JobFailure{Submission: "older", Member: "w-old", Message: "stale"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // several reconcile passes
	if st := status(); st.Phase.Terminal() {
		t.Fatalf("a stale failure report ended the job: %+v", st)
	}
	if _, err := cli.Delete(ctx, FailureKey(job)); err != nil {
		t.Fatal(err)
	}
	msg := `spec.dataset.uri "s3://nope/x": bucket nope does not exist`
	if err := ReportFailure(ctx, cli, job, JobFailure{Submission: spec.Spec.Submission, Member: "w-1", Message: msg}); err != nil {
		t.Fatal(err)
	}
	if err := ReportFailure(ctx, cli, job, JobFailure{Submission: spec.Spec.Submission, Member: "w-2", Message: "later"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "phase failed", func() bool { return status().Phase == PhaseFailed })
	if st := status(); !strings.Contains(st.Message, "w-1") || !strings.Contains(st.Message, msg) {
		t.Fatalf("failed status message %q does not name the first reporting worker and its error", st.Message)
	}
	submit(t, c, job, 1) // an ended job may be resubmitted
	time.Sleep(300 * time.Millisecond)
	if st := status(); st.Phase != PhasePending {
		t.Fatalf("resubmitted job: %+v, want pending (the old failure deleted)", st)
	}
}
