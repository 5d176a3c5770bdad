// Package coordinator runs ringtrain jobs: it keeps job state in etcd, elects
// one leading coordinator per job, forms ring generations from the workers
// registered under leases, publishes events on NATS and serves a gRPC API and
// Prometheus metrics.
//
// The decisions are pure (NextRing in membership.go, ParseJobSpec in
// jobspec.go); this file is the etcd shell around them.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Config configures a Coordinator. Client is required; the rest have defaults.
type Config struct {
	ID         string           // name in elections and status; default host-pid
	Client     *clientv3.Client // owned by the caller
	Publisher  Publisher        // default NopPublisher
	SessionTTL time.Duration    // election lease TTL: how fast a dead leader is replaced; default 5s
	Settle     time.Duration    // wait after a change so that bursts form one generation; default 200ms
	Resync     time.Duration    // reconcile at least this often while leading; default 2s
	Logger     *slog.Logger     // default slog.Default()
	Now        func() time.Time // default time.Now
}

// Validate checks the config after defaults are applied.
func (c *Config) Validate() error {
	if c.Client == nil {
		return errors.New("coordinator config: Client is required")
	}
	if !ValidMemberID(c.ID) {
		return fmt.Errorf("coordinator config: ID %q must match %s", c.ID, memberIDRE)
	}
	if c.SessionTTL < time.Second {
		return fmt.Errorf("coordinator config: SessionTTL %v must be >= 1s", c.SessionTTL)
	}
	if c.Settle < 0 || c.Resync <= 0 {
		return fmt.Errorf("coordinator config: Settle %v must be >= 0 and Resync %v > 0", c.Settle, c.Resync)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", strings.Split(host, ".")[0], os.Getpid())
	}
	if c.Publisher == nil {
		c.Publisher = NopPublisher{}
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 5 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 200 * time.Millisecond
	}
	if c.Resync == 0 {
		c.Resync = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Coordinator leads the jobs it wins elections for. Run drives it; the API
// (api.go) and HTTP handlers (http.go) can serve from any coordinator, leader
// or not, because all job state lives in etcd.
type Coordinator struct {
	cfg Config
	cli *clientv3.Client
	log *slog.Logger
	reg *prometheus.Registry
	m   metrics

	mu        sync.Mutex
	leading   map[string]bool
	sessionUp bool
}

type metrics struct {
	leader       *prometheus.GaugeVec
	generation   *prometheus.GaugeVec
	world        *prometheus.GaugeVec
	live         *prometheus.GaugeVec
	step         *prometheus.GaugeVec
	ringChanges  *prometheus.CounterVec
	reconcileErr *prometheus.CounterVec
	apiRequests  *prometheus.CounterVec
}

// New builds a Coordinator with its own Prometheus registry.
func New(cfg Config) (*Coordinator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	job := []string{"job"}
	m := metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringtrain_coordinator_leader", Help: "1 while this coordinator leads the job."}, job),
		generation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringtrain_ring_generation", Help: "Ring generation in force."}, job),
		world: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringtrain_ring_world_size", Help: "Members of the ring in force."}, job),
		live: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringtrain_live_members", Help: "Workers registered with a live lease."}, job),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringtrain_job_step", Help: "Last completed step reported by rank 0."}, job),
		ringChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringtrain_ring_changes_total", Help: "Ring generations published by this coordinator."}, job),
		reconcileErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringtrain_reconcile_errors_total", Help: "Failed reconcile passes."}, job),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringtrain_api_requests_total", Help: "gRPC API calls by method and result."}, []string{"method", "code"}),
	}
	reg.MustRegister(m.leader, m.generation, m.world, m.live, m.step, m.ringChanges, m.reconcileErr, m.apiRequests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Coordinator{
		cfg:     cfg,
		cli:     cfg.Client,
		log:     cfg.Logger.With("coordinator", cfg.ID),
		reg:     reg,
		m:       m,
		leading: map[string]bool{},
	}, nil
}

// ID is this coordinator's name.
func (c *Coordinator) ID() string { return c.cfg.ID }

// Registry is the Prometheus registry holding this coordinator's metrics.
func (c *Coordinator) Registry() *prometheus.Registry { return c.reg }

// Leading lists the jobs this coordinator leads now, sorted.
func (c *Coordinator) Leading() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var jobs []string
	for j, ok := range c.leading {
		if ok {
			jobs = append(jobs, j)
		}
	}
	slices.Sort(jobs)
	return jobs
}

// IsLeader reports whether this coordinator leads job now.
func (c *Coordinator) IsLeader(job string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading[job]
}

// Healthy reports whether the coordinator holds a live etcd session.
func (c *Coordinator) Healthy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionUp
}

func (c *Coordinator) setLeading(job string, on bool) {
	c.mu.Lock()
	c.leading[job] = on
	c.mu.Unlock()
	c.m.leader.WithLabelValues(job).Set(b2f(on))
}

// Run campaigns for every submitted job and leads the ones it wins, until
// ctx ends (it then resigns, so another coordinator takes over at once). A
// lost etcd session (partition, etcd restart) is re-created with backoff.
// Run fails only if the etcd client is closed under it.
func (c *Coordinator) Run(ctx context.Context) error {
	bo := newBackoff(200*time.Millisecond, 5*time.Second)
	ttl := int(math.Ceil(c.cfg.SessionTTL.Seconds()))
	for {
		if c.cli.Ctx().Err() != nil {
			return fmt.Errorf("coordinator %s: etcd client for %v closed", c.cfg.ID, c.cli.Endpoints())
		}
		// The session must outlive ctx long enough for Close to revoke its
		// lease; a revoked lease hands leadership over without waiting a TTL.
		sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
		sess, err := concurrency.NewSession(c.cli, concurrency.WithTTL(ttl), concurrency.WithContext(sctx))
		if err != nil {
			scancel()
			c.log.Warn("etcd session failed", "etcd", c.cli.Endpoints(), "err", err)
			if !bo.wait(ctx) {
				return nil
			}
			continue
		}
		bo.reset()
		c.mu.Lock()
		c.sessionUp = true
		c.mu.Unlock()
		err = c.runSession(ctx, sess)
		c.mu.Lock()
		c.sessionUp = false
		c.mu.Unlock()
		_ = sess.Close()
		scancel()
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("etcd session ended, starting a new one", "err", err)
		if !bo.wait(ctx) {
			return nil
		}
	}
}

var errSessionLost = errors.New("etcd session lease lost")

// runSession discovers jobs (spec keys) and runs one election loop per job
// until ctx ends or the session's lease is lost.
func (c *Coordinator) runSession(ctx context.Context, sess *concurrency.Session) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-sess.Done():
			cancel(errSessionLost)
		case <-ctx.Done():
		}
	}()

	var wg sync.WaitGroup
	jobs := map[string]context.CancelFunc{}
	defer func() {
		for _, stop := range jobs {
			stop()
		}
		wg.Wait()
	}()
	start := func(job string) {
		if _, ok := jobs[job]; ok {
			return
		}
		jctx, stop := context.WithCancel(ctx)
		jobs[job] = stop
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.jobLoop(jctx, sess, job)
		}()
	}

	bo := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		resp, err := c.cli.Get(ctx, KeyRoot, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			c.log.Warn("list jobs failed", "etcd", c.cli.Endpoints(), "err", err)
			bo.wait(ctx)
			continue
		}
		for _, kv := range resp.Kvs {
			if job, ok := jobFromSpecKey(string(kv.Key)); ok {
				start(job)
			}
		}
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.cli.Watch(wctx, KeyRoot, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				job, ok := jobFromSpecKey(string(ev.Kv.Key))
				if !ok {
					continue
				}
				if ev.Type == clientv3.EventTypePut {
					start(job)
				} else if stop, ok := jobs[job]; ok {
					stop()
					delete(jobs, job)
				}
			}
		}
		wcancel()
		bo.wait(ctx)
	}
	return context.Cause(ctx)
}

var (
	errNotLeader = errors.New("no longer the leader")
	errJobGone   = errors.New("job spec deleted")
	errConflict  = errors.New("job changed between read and write")
)

// jobLoop campaigns for the job's leadership and leads while elected.
func (c *Coordinator) jobLoop(ctx context.Context, sess *concurrency.Session, job string) {
	log := c.log.With("job", job)
	bo := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		e := concurrency.NewElection(sess, LeaderPrefix(job))
		if err := e.Campaign(ctx, c.cfg.ID); err != nil {
			if ctx.Err() == nil {
				log.Warn("campaign failed", "err", err)
				bo.wait(ctx)
			}
			continue
		}
		bo.reset()
		c.setLeading(job, true)
		log.Info("leading job")
		c.publish(ctx, Event{Job: job, Type: EventLeaderElected, Message: c.cfg.ID})
		err := c.lead(ctx, job, e)
		c.setLeading(job, false)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = e.Resign(rctx)
		cancel()
		if errors.Is(err, errJobGone) {
			log.Info("job spec gone, leaving the election")
			return
		}
		if ctx.Err() == nil {
			log.Warn("stopped leading", "err", err)
			bo.wait(ctx)
		}
	}
}

// lead reconciles the job on every change under its prefix (after Settle)
// and every Resync, until ctx ends or leadership is lost.
func (c *Coordinator) lead(ctx context.Context, job string, e *concurrency.Election) error {
	log := c.log.With("job", job)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wch clientv3.WatchChan
	watch := func() {
		wch = c.cli.Watch(clientv3.WithRequireLeader(ctx), jobPrefix(job), clientv3.WithPrefix())
	}
	watch()
	tick := time.NewTicker(c.cfg.Resync)
	defer tick.Stop()
	settle := time.NewTimer(0) // reconcile at once on election
	defer settle.Stop()
	armed := true
	var last reconcileOutcome

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(100 * time.Millisecond)
				watch()
				continue
			}
			relevant := false
			for _, ev := range wr.Events {
				if c.triggers(job, string(ev.Kv.Key), ev.Kv.ModRevision, last) {
					relevant = true
				}
			}
			if relevant && !armed {
				settle.Reset(c.cfg.Settle)
				armed = true
			}
			continue
		case <-settle.C:
			armed = false
		case <-tick.C:
		}
		out, err := c.reconcile(ctx, job, e)
		switch {
		case err == nil:
			if out.wroteRev == 0 {
				out.wroteRev = last.wroteRev
			}
			last = out
		case errors.Is(err, errConflict):
			// Stop or another writer changed the job between our read and
			// write: read again soon, nothing is wrong.
			if !armed {
				settle.Reset(c.cfg.Settle)
				armed = true
			}
		default:
			if errors.Is(err, errNotLeader) || errors.Is(err, errJobGone) {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.m.reconcileErr.WithLabelValues(job).Inc()
			log.Warn("reconcile failed", "err", err)
		}
	}
}

// reconcileOutcome is what the watch filter needs from the last pass.
type reconcileOutcome struct {
	wroteRev int64 // revision of our own last write, 0 if none
	pending  bool  // joiners wait for a step boundary: state changes matter
}

// triggers says whether a change to key warrants a reconcile. Our own
// election keys and status writes do not; progress (state) writes come every
// step, so they count only while joiners wait for a step boundary (or the
// Resync tick picks them up).
func (c *Coordinator) triggers(job, key string, modRev int64, last reconcileOutcome) bool {
	switch {
	case strings.HasPrefix(key, LeaderPrefix(job)):
		return false
	case key == StatusKey(job) && modRev == last.wroteRev:
		return false
	case key == StateKey(job):
		return last.pending
	}
	return true
}

// jobView is one consistent read of a job's keys.
type jobView struct {
	spec      *JobSpec
	status    JobStatus
	ring      Ring
	ringRev   int64 // mod revision of the ring key, 0 if absent
	statusRev int64 // mod revision of the status key, 0 if absent
	state     *JobState
	failure   *JobFailure
	members   []Member
}

func (c *Coordinator) readJob(ctx context.Context, job string) (jobView, error) {
	var v jobView
	resp, err := c.cli.Get(ctx, jobPrefix(job), clientv3.WithPrefix())
	if err != nil {
		return v, fmt.Errorf("read job %s from etcd %v: %w", job, c.cli.Endpoints(), err)
	}
	mp := MembersPrefix(job)
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		switch {
		case key == SpecKey(job):
			s, err := decodeJSON[JobSpec]("job spec", key, kv.Value)
			if err != nil {
				return v, err
			}
			v.spec = &s
		case key == StatusKey(job):
			if v.status, err = decodeJSON[JobStatus]("job status", key, kv.Value); err != nil {
				return v, err
			}
			v.statusRev = kv.ModRevision
		case key == RingKey(job):
			if v.ring, err = decodeJSON[Ring]("ring", key, kv.Value); err != nil {
				return v, err
			}
			v.ringRev = kv.ModRevision
		case key == StateKey(job):
			s, err := decodeJSON[JobState]("job state", key, kv.Value)
			if err != nil {
				return v, err
			}
			v.state = &s
		case key == FailureKey(job):
			f, err := decodeJSON[JobFailure]("job failure", key, kv.Value)
			if err != nil {
				f = JobFailure{Message: fmt.Sprintf("undecodable failure report: %v", err)}
			}
			v.failure = &f
		case strings.HasPrefix(key, mp):
			m, err := decodeJSON[Member]("member", key, kv.Value)
			if err != nil {
				c.log.Warn("skipping undecodable member", "key", key, "err", err)
				continue
			}
			m.ID = strings.TrimPrefix(key, mp) // the key, not the value, is authoritative
			m.Incarnation = kv.CreateRevision
			v.members = append(v.members, m)
		}
	}
	return v, nil
}

// reconcile makes etcd's ring and status agree with the live members, as
// NextRing decides. The write is fenced by this coordinator's leadership and
// by the ring and status revisions it read, so a concurrent Stop is never
// overwritten (errConflict: read again).
func (c *Coordinator) reconcile(ctx context.Context, job string, e *concurrency.Election) (reconcileOutcome, error) {
	var out reconcileOutcome
	v, err := c.readJob(ctx, job)
	if err != nil {
		return out, err
	}
	if v.spec == nil {
		return out, errJobGone
	}
	c.m.live.WithLabelValues(job).Set(float64(len(v.members)))
	c.m.generation.WithLabelValues(job).Set(float64(v.ring.Generation))
	c.m.world.WithLabelValues(job).Set(float64(len(v.ring.Members)))
	var step int64
	epoch := 0
	if v.state != nil {
		step, epoch = v.state.Step, v.state.Epoch
		c.m.step.WithLabelValues(job).Set(float64(step))
	}
	if v.status.Phase.Terminal() {
		return out, nil
	}

	next := v.status
	next.Job, next.Leader, next.Step, next.Epoch = job, c.cfg.ID, step, epoch
	var d RingDecision
	var events []Event
	switch {
	case v.failure != nil && (v.failure.Submission == "" || v.failure.Submission == v.spec.Submission):
		f := v.failure
		next.Phase, next.Message = PhaseFailed, fmt.Sprintf("failed: worker %s: %s", f.Member, f.Message)
		events = append(events, Event{Type: EventFailed, Message: next.Message, Source: f.Member})
	case v.status.Phase == PhaseStopping:
		if len(v.members) == 0 || v.ring.Generation == 0 {
			next.Phase, next.Message = PhaseStopped, "stopped: "+v.status.Message
			events = append(events, Event{Type: EventStopped, Message: next.Message})
		}
	case v.state != nil && v.state.Done:
		next.Phase, next.Message = PhaseFinished, fmt.Sprintf("finished %d epochs at step %d", v.spec.Epochs, step)
		events = append(events, Event{Type: EventFinished, Message: next.Message})
	default:
		d = NextRing(RingInput{
			Job:            job,
			Current:        v.ring,
			Live:           v.members,
			MinWorld:       v.spec.World.Min,
			MaxWorld:       v.spec.World.Max,
			AtStepBoundary: v.ring.Generation == 0 || v.state == nil || v.state.Step > v.ring.StartStep,
			Step:           step,
			Now:            c.cfg.Now(),
		})
		next.Message = d.Reason
		out.pending = len(d.Pending) > 0
		switch {
		case d.Waiting && d.Ring.Generation == 0:
			next.Phase = PhasePending
		case d.Waiting:
			next.Phase = PhaseWaiting
		default:
			next.Phase = PhaseRunning
		}
		next.Generation, next.World = d.Ring.Generation, len(d.Ring.Members)
		if d.Waiting {
			next.World = 0
		}
		if d.Changed {
			events = append(events, Event{Type: EventMembershipChanged, Generation: d.Ring.Generation, Step: step,
				Members: d.Ring.IDs(), Joined: d.Joined, Left: d.Left, Message: d.Reason})
			if v.ring.Generation == 0 {
				events = append(events, Event{Type: EventJobStarted, Generation: d.Ring.Generation, Members: d.Ring.IDs()})
			}
		}
		if d.Waiting && v.status.Phase != PhaseWaiting && next.Phase == PhaseWaiting {
			events = append(events, Event{Type: EventWaiting, Generation: d.Ring.Generation, Left: d.Left, Message: d.Reason})
		}
	}

	var ops []clientv3.Op
	if d.Changed {
		ops = append(ops, clientv3.OpPut(RingKey(job), string(mustJSON(d.Ring))))
	}
	statusChanged := next.Phase != v.status.Phase || next.Message != v.status.Message ||
		next.Generation != v.status.Generation || next.World != v.status.World ||
		next.Step != v.status.Step || next.Epoch != v.status.Epoch || next.Leader != v.status.Leader
	if statusChanged {
		next.Updated = c.cfg.Now()
		ops = append(ops, clientv3.OpPut(StatusKey(job), string(mustJSON(next))))
	}
	if len(ops) == 0 {
		return out, nil
	}
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev()),
		clientv3.Compare(clientv3.ModRevision(RingKey(job)), "=", v.ringRev),
		clientv3.Compare(clientv3.ModRevision(StatusKey(job)), "=", v.statusRev),
	).Then(ops...).Commit()
	if err != nil {
		return out, fmt.Errorf("write ring/status of job %s to etcd %v: %w", job, c.cli.Endpoints(), err)
	}
	if !resp.Succeeded {
		lr, err := c.cli.Get(ctx, e.Key())
		if err != nil {
			return out, fmt.Errorf("check leadership of job %s: %w", job, err)
		}
		if len(lr.Kvs) == 0 || lr.Kvs[0].CreateRevision != e.Rev() {
			return out, errNotLeader
		}
		return out, fmt.Errorf("reconcile job %s: %w", job, errConflict)
	}
	if d.Changed {
		c.m.ringChanges.WithLabelValues(job).Inc()
		c.m.generation.WithLabelValues(job).Set(float64(d.Ring.Generation))
		c.m.world.WithLabelValues(job).Set(float64(len(d.Ring.Members)))
		c.log.Info("ring generation published", "job", job, "gen", d.Ring.Generation,
			"members", d.Ring.IDs(), "joined", d.Joined, "left", d.Left, "step", step)
	}
	for _, ev := range events {
		ev.Job, ev.Epoch = job, epoch
		if ev.Step == 0 {
			ev.Step = step
		}
		c.publish(ctx, ev)
	}
	out.wroteRev = resp.Header.Revision
	return out, nil
}

// publish stamps and sends an event; failures are logged, never returned:
// nothing depends on NATS for correctness.
func (c *Coordinator) publish(ctx context.Context, ev Event) {
	ev.Time = c.cfg.Now()
	ev.Source = c.cfg.ID
	if err := c.cfg.Publisher.Publish(ctx, ev); err != nil {
		c.log.Warn("publish event failed", "job", ev.Job, "type", ev.Type, "err", err)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
