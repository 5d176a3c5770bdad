package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/optim"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClusterConfig configures one worker of a cluster job.
type ClusterConfig struct {
	Job string
	ID  string // member id; default host-pid
	// Listen is the all-reduce address (host:port). Port 0 picks a free one.
	Listen string
	// Advertise is the address peers dial; default Listen with the picked port.
	Advertise string
	Etcd      []string
	NATS      string // optional: events and metrics
	S3        objstore.S3Config
	Threads   int
	LeaseTTL  time.Duration // how fast a dead worker is noticed; default 5s
	// CollectiveTimeout bounds every all-reduce: a dead or stalled peer makes
	// the step fail within it; default 10s.
	CollectiveTimeout time.Duration
	CheckEvery        int // replica checksum every K steps; default 50
	// Transport carries the ring: "grpc" (default) or "tcp" (plain TCP
	// frames, less CPU per byte).
	Transport    string
	SampleLog    string // optional JSON-lines file of every completed global batch
	MetricsEvery int    // publish step metrics every N steps; default 10
	Log          *slog.Logger
}

func (c *ClusterConfig) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", strings.Split(host, ".")[0], os.Getpid())
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.CollectiveTimeout == 0 {
		c.CollectiveTimeout = 10 * time.Second
	}
	if c.CheckEvery == 0 {
		c.CheckEvery = 50
	}
	if c.MetricsEvery == 0 {
		c.MetricsEvery = 10
	}
	if c.Threads == 0 {
		c.Threads = runtime.GOMAXPROCS(0)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Validate names the first bad field.
func (c *ClusterConfig) Validate() error {
	switch {
	case !coordinator.ValidJobName(c.Job):
		return fmt.Errorf("job: %q is not a valid job name", c.Job)
	case !coordinator.ValidMemberID(c.ID):
		return fmt.Errorf("id: %q is not a valid member id", c.ID)
	case len(c.Etcd) == 0:
		return errors.New("etcd: at least one endpoint is required")
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("lease-ttl: %v must be ≥ 1s", c.LeaseTTL)
	case c.Threads < 1:
		return fmt.Errorf("threads: %d must be ≥ 1", c.Threads)
	case c.Transport != "" && c.Transport != "grpc" && c.Transport != "tcp":
		return fmt.Errorf("transport: %q is not grpc or tcp", c.Transport)
	}
	return nil
}

// SampleRecord is one line of the sample log: a completed global step and
// every sample index it trained on (all ranks').
type SampleRecord struct {
	Step   int       `json:"step"` // the step's number (0-based)
	Epoch  int       `json:"epoch"`
	Worker string    `json:"worker"`
	Time   time.Time `json:"time"`
	Idx    []int32   `json:"idx"`
}

// errStopped ends a worker whose job was stopped or finished.
var errStopped = errors.New("job no longer running")

// RunCluster joins the job as a worker and trains until the job finishes,
// is stopped, or ctx ends. A broken ring (dead or stalled peer) costs the
// step in flight: the worker waits for the coordinator's next ring
// generation, agrees on state with the survivors and goes on.
func RunCluster(ctx context.Context, cfg ClusterConfig) error {
	return runCluster(ctx, cfg, nil)
}

// dialFunc forms one ring generation (allreduce.DialRing or DialRingTCP).
type dialFunc func(context.Context, allreduce.RingConfig) (allreduce.Communicator, error)

// runCluster is RunCluster whose rings are formed by dial (nil: as
// cfg.Transport says); tests wrap the Communicator to inject faults.
func runCluster(ctx context.Context, cfg ClusterConfig, dial dialFunc) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("worker config: %w", err)
	}
	log := cfg.Log.With("job", cfg.Job, "worker", cfg.ID)
	// Keepalive pings notice a dead connection (a partition) within seconds.
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Etcd, DialTimeout: 5 * time.Second, Logger: quietZap(),
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("connect etcd %v: %w", cfg.Etcd, err)
	}
	defer cli.Close()
	listen, addr, err := pickAddress(cfg.Listen, cfg.Advertise)
	if err != nil {
		return err
	}
	cfg.Listen = listen
	spec, err := waitSpec(ctx, cli, cfg.Job, log)
	if err != nil {
		return err
	}
	pub := coordinator.Publisher(coordinator.NopPublisher{})
	if cfg.NATS != "" {
		nc, err := coordinator.ConnectNATS(ctx, cfg.NATS, "worker-"+cfg.ID)
		if err != nil {
			log.Warn("NATS unavailable: no events from this worker", "nats", cfg.NATS, "err", err)
		} else {
			defer nc.Close()
			pub = coordinator.NewNATSPublisher(nc)
		}
	}
	w, err := newClusterWorker(ctx, cfg, spec, cli, pub, log.With("addr", addr))
	if err != nil {
		return reportFailure(ctx, cli, cfg, spec, log, err)
	}
	w.addr, w.dial = addr, dial
	defer w.close()
	// Register only once the model and data are ready: a member of a ring
	// must be able to dial it at once, or every survivor waits for it.
	reg := &registration{cli: cli, job: cfg.Job, id: cfg.ID, addr: addr, ttl: cfg.LeaseTTL, log: log}
	if err := reg.register(ctx); err != nil {
		return err
	}
	defer reg.close()
	return w.run(ctx, reg)
}

// waitSpec waits for the job spec to be submitted.
func waitSpec(ctx context.Context, cli *clientv3.Client, job string, log *slog.Logger) (coordinator.JobSpec, error) {
	key := coordinator.SpecKey(job)
	logged := false
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.Get(rctx, key)
		cancel()
		switch {
		case err == nil && len(resp.Kvs) > 0:
			spec, err := coordinator.ParseJobSpec(resp.Kvs[0].Value)
			if err != nil {
				return spec, fmt.Errorf("job spec at %s: %w", key, err)
			}
			return spec, nil
		case err != nil && ctx.Err() == nil:
			log.Warn("etcd unreachable, retrying", "etcd", cli.Endpoints(), "err", err)
		case !logged:
			log.Info("waiting for the job to be submitted", "key", key)
			logged = true
		}
		select {
		case <-ctx.Done():
			return coordinator.JobSpec{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

type clusterWorker struct {
	cfg   ClusterConfig
	spec  coordinator.JobSpec
	cli   *clientv3.Client
	pub   coordinator.Publisher
	log   *slog.Logger
	pool  *kernels.Pool
	rep   *Replica
	eval  Source
	addr  string
	dial  dialFunc                  // nil: by cfg.Transport
	state chan coordinator.JobState // latest progress for the etcd writer
	wg    sync.WaitGroup
	stop  context.CancelFunc
	phase chan coordinator.Phase
	slog  *os.File
	ckpt  *checkpointer // nil without a checkpoint policy
	// stopWriter ends the background state writer and waits for it.
	stopWriter func()
	writerDone chan struct{}
	// lastAcc is the newest evaluation accuracy (-1 before any).
	lastAcc float64
}

func newClusterWorker(ctx context.Context, cfg ClusterConfig, spec coordinator.JobSpec, cli *clientv3.Client, pub coordinator.Publisher, log *slog.Logger) (*clusterWorker, error) {
	train, eval, err := OpenSources(ctx, spec, cfg.S3)
	if err != nil {
		return nil, err
	}
	if spec.Input.Height != spec.Input.Width {
		return nil, fmt.Errorf("job spec input: %dx%d: only square inputs are supported", spec.Input.Height, spec.Input.Width)
	}
	model, loaded, err := BuildModel(ctx, spec, cfg.S3)
	if err != nil {
		return nil, err
	}
	if loaded != "" {
		log.Info(loaded)
	}
	opt, err := OptimizerFromSpec(model, spec.Optimizer)
	if err != nil {
		return nil, err
	}
	sampler := dataset.Sampler{N: train.Len(), GlobalBatch: spec.GlobalBatchSize, Shuffle: true, Last: dataset.Partial}
	sched := specSchedule{spec: spec, stepsPerEpoch: sampler.StepsPerEpoch()}
	pool := kernels.NewPool(cfg.Threads)
	rep, err := NewReplica(model, opt, sched, sampler, train, dataset.SamplerState{Seed: spec.Seed}, pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	ckpt, err := newCheckpointer(ctx, spec, cfg.S3, log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	w := &clusterWorker{cfg: cfg, spec: spec, cli: cli, pub: pub, log: log, pool: pool, rep: rep, eval: eval,
		state: make(chan coordinator.JobState, 1), phase: make(chan coordinator.Phase, 1), ckpt: ckpt, lastAcc: -1}
	if cfg.SampleLog != "" {
		f, err := os.OpenFile(cfg.SampleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("sample log: %w", err)
		}
		w.slog = f
		rep.OnGlobalBatch = func(step, epoch int, idx []int32) {
			b, _ := json.Marshal(SampleRecord{Step: step, Epoch: epoch, Worker: cfg.ID, Time: time.Now(), Idx: idx})
			f.Write(append(b, '\n'))
		}
	}
	bg, stop := context.WithCancel(context.Background())
	wctx, stopWriter := context.WithCancel(bg)
	w.stop = stop
	w.writerDone = make(chan struct{})
	w.stopWriter = func() { stopWriter(); <-w.writerDone }
	w.wg.Add(2)
	go func() { defer w.wg.Done(); defer close(w.writerDone); w.writeState(wctx) }()
	go func() { defer w.wg.Done(); w.watchStatus(bg) }()
	total, _ := model.NumParams()
	log.Info("worker ready", "net", spec.Net, "params", total, "train", train.Len(), "global_batch", spec.GlobalBatchSize,
		"epochs", spec.Epochs, "threads", cfg.Threads)
	return w, nil
}

// pickAddress fixes the all-reduce port for the worker's lifetime (every
// ring generation listens on it again) and the address peers dial.
func pickAddress(listen, advertise string) (string, string, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return "", "", fmt.Errorf("all-reduce listen %s: %w", listen, err)
	}
	listen = l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(listen)
	addr := advertise
	if addr == "" {
		addr = listen
	} else if h, p, err := net.SplitHostPort(addr); err == nil && p == "0" {
		addr = net.JoinHostPort(h, port)
	}
	return listen, addr, nil
}

// registration is the worker's membership, renewed as a new incarnation
// when its lease is lost (a partition longer than the TTL).
type registration struct {
	cli    *clientv3.Client
	job    string
	id     string
	addr   string
	ttl    time.Duration
	log    *slog.Logger
	mem    *coordinator.Membership
	rings  <-chan coordinator.Ring
	cancel context.CancelFunc
}

func (r *registration) register(ctx context.Context) error {
	r.close()
	for {
		// Bound each attempt: after a partition the client may still hold a
		// dead connection, and a Grant without a deadline would wait forever.
		actx, cancel := context.WithTimeout(ctx, 2*r.ttl+5*time.Second)
		m, err := coordinator.Register(actx, r.cli, r.job, r.id, r.addr, r.ttl)
		cancel()
		if err == nil {
			var rctx context.Context
			rctx, r.cancel = context.WithCancel(ctx)
			r.mem, r.rings = m, m.WatchRing(rctx)
			r.log.Info("registered", "addr", r.addr, "lease_ttl", r.ttl)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Warn("register failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// registered is false only when etcd answers that the member key is gone
// or no longer this registration's; an unanswered check counts as present.
func (r *registration) registered(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	ok, err := r.mem.Registered(cctx)
	return ok || err != nil
}

func (r *registration) close() {
	if r.mem != nil {
		r.cancel()
		r.mem.Close()
		r.mem = nil
	}
}

func (w *clusterWorker) close() {
	if w.ckpt != nil {
		w.ckpt.wait()
	}
	if w.stop != nil {
		w.stop()
	}
	w.wg.Wait()
	w.pool.Close()
	if w.slog != nil {
		w.slog.Close()
	}
}

// run trains ring generation after ring generation.
func (w *clusterWorker) run(ctx context.Context, reg *registration) error {
	// A job that restarts after every worker died resumes from its newest
	// good checkpoint; when survivors exist, Sync replaces this state with
	// theirs anyway.
	if w.ckpt != nil {
		ok, err := w.ckpt.restore(ctx, w.rep)
		if err != nil {
			err = fmt.Errorf("resume from checkpoint: %w", err)
			w.pub.Publish(ctx, coordinator.Event{Job: w.spec.Name, Type: coordinator.EventFailed, Time: time.Now(), Message: err.Error(), Source: w.cfg.ID})
			return reportFailure(ctx, w.cli, w.cfg, w.spec, w.log, err)
		}
		if ok {
			w.log.Info("resumed from checkpoint", "step", w.rep.Step, "epoch", w.rep.Pos.Epoch, "store", w.ckpt.store)
		}
	}
	var latest coordinator.Ring
	var tried uint64 // newest generation we trained in (or failed to)
	for {
		// Wait for a ring generation newer than the last one tried that
		// includes this worker. If none comes while the one that failed
		// still holds us, try it again: a member that was slow to start (a
		// joiner still loading its data) makes the first dial time out
		// without any membership change that would bring a new generation.
		retry := time.NewTimer(2 * w.cfg.LeaseTTL)
		for latest.Generation <= tried || latest.Rank(w.cfg.ID) < 0 {
			select {
			case <-ctx.Done():
				retry.Stop()
				return ctx.Err()
			case <-retry.C:
				if latest.Generation == tried && latest.Rank(w.cfg.ID) >= 0 {
					w.log.Info("no newer ring generation: retrying the current one", "gen", tried)
					tried--
				} else if latest.Rank(w.cfg.ID) < 0 && !reg.registered(ctx) {
					// Left out of the ring, with a live lease but no member
					// key: nothing else would bring this worker back.
					w.log.Warn("member key gone while the lease lives: registering again as a new incarnation")
					if err := reg.register(ctx); err != nil {
						return err
					}
				}
				retry.Reset(2 * w.cfg.LeaseTTL)
			case p := <-w.phase:
				if p.Terminal() || p == coordinator.PhaseStopping {
					w.log.Info("job ended while waiting for a ring", "phase", p)
					return jobEnded(w.spec.Name, p)
				}
			case <-reg.mem.Lost():
				w.log.Warn("lease lost: registering again as a new incarnation")
				if err := reg.register(ctx); err != nil {
					return err
				}
			case r, ok := <-reg.rings:
				if !ok {
					return ctx.Err()
				}
				latest = r
			}
		}
		retry.Stop()
		tried = latest.Generation
		err := w.trainGeneration(ctx, latest, reg.rings, &latest)
		switch {
		case err == nil, errors.Is(err, errStopped):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrDiverged):
			return err
		}
		w.log.Warn("ring generation ended", "gen", tried, "err", err)
	}
}

// trainGeneration trains in one ring generation until it breaks, a newer
// generation is known to every member, or the job ends (nil).
func (w *clusterWorker) trainGeneration(ctx context.Context, ring coordinator.Ring, rings <-chan coordinator.Ring, latest *coordinator.Ring) error {
	rank := ring.Rank(w.cfg.ID)
	addrs := make([]string, len(ring.Members))
	for i, m := range ring.Members {
		addrs[i] = m.Addr
	}
	log := w.log.With("gen", ring.Generation, "rank", rank, "world", len(addrs))
	dctx, cancel := context.WithTimeout(ctx, w.cfg.CollectiveTimeout+w.cfg.LeaseTTL)
	dial := w.dial
	switch {
	case dial != nil:
	case w.cfg.Transport == "tcp":
		dial = allreduce.DialRingTCP
	default:
		dial = allreduce.DialRing
	}
	comm, err := dial(dctx, allreduce.RingConfig{Rank: rank, Addrs: withListen(addrs, rank, w.cfg.Listen), Generation: ring.Generation,
		Options: allreduce.Options{Timeout: w.cfg.CollectiveTimeout, Logger: log}})
	cancel()
	if err != nil {
		return fmt.Errorf("dial ring generation %d: %w", ring.Generation, err)
	}
	defer comm.Close()
	before := w.rep.Step
	root, err := w.rep.Sync(ctx, comm, false)
	if err != nil {
		return err
	}
	log.Info("ring formed", "step", w.rep.Step, "epoch", w.rep.Pos.Epoch, "state_from_rank", root, "was_at_step", before)
	if err := w.rep.Overlap(comm, 25<<20, nil); err != nil {
		return err
	}
	defer w.rep.CloseOverlap()
	if src, ok := w.rep.Data.(*StreamSource); ok {
		feed, err := src.Open(w.rep.Sampler, w.rep.Pos, len(addrs), rank, true)
		if err != nil {
			return err
		}
		w.rep.Feed = feed
		defer func() { feed.Close(); w.rep.Feed = nil }()
	}

	var imgs int
	var dataWait, compute, commT time.Duration
	window := time.Now()
	for {
		if w.rep.Pos.Epoch >= w.spec.Epochs {
			return w.finish(ctx, comm, log)
		}
		// A newer generation (a joiner, a departure) is adopted by all
		// members at the same step boundary.
		select {
		case r, ok := <-rings:
			if ok {
				*latest = r
			}
		case p := <-w.phase:
			if p == coordinator.PhaseStopping || p.Terminal() {
				log.Info("job stopping", "phase", p, "step", w.rep.Step)
				return errStopped
			}
		default:
		}
		gens, err := comm.AllGatherUint64(ctx, latest.Generation)
		if err != nil {
			return err
		}
		for _, g := range gens {
			if g > ring.Generation {
				return fmt.Errorf("generation %d published: leaving generation %d at step %d", g, ring.Generation, w.rep.Step)
			}
		}
		st, err := w.rep.TrainStep(ctx, comm)
		if err != nil {
			return err
		}
		imgs += st.Local
		dataWait += st.DataWait
		compute += st.Compute
		commT += st.Comm
		w.reportState(ring.Generation, false)
		if w.rep.Step%w.cfg.CheckEvery == 0 {
			// Only different checksums end the worker. An exchange that
			// failed (a peer died during it) broke the ring like any other
			// collective: this worker is a survivor, stays registered and
			// trains on in the next generation. (Leaving as "diverged" here
			// revoked every survivor's lease at once: the coordinator then
			// published a ring of only the dead peer, and the job stalled.)
			if err := w.rep.VerifyReplicas(ctx, comm); err != nil {
				if errors.Is(err, ErrDiverged) {
					w.pub.Publish(ctx, coordinator.Event{Job: w.spec.Name, Type: coordinator.EventFailed, Time: time.Now(), Step: int64(w.rep.Step), Message: err.Error(), Source: w.cfg.ID})
				}
				return err
			}
		}
		if w.rep.Step%w.cfg.MetricsEvery == 0 {
			el := time.Since(window).Seconds()
			w.pub.Publish(ctx, coordinator.Event{Job: w.spec.Name, Type: coordinator.EventStepMetrics, Time: time.Now(),
				Generation: ring.Generation, Step: int64(w.rep.Step), Epoch: w.rep.Pos.Epoch, Source: w.cfg.ID,
				Metrics: map[string]float64{"loss": float64(st.Loss), "lr": st.LR, "img_per_s": float64(imgs) / el,
					"world": float64(len(addrs)), "rank": float64(rank), "data_wait_s": dataWait.Seconds(),
					"compute_s": compute.Seconds(), "comm_s": commT.Seconds(), "local_batch": float64(st.Local)}})
			imgs, dataWait, compute, commT, window = 0, 0, 0, 0, time.Now()
		}
		if st.EpochDone {
			if err := w.endEpoch(ctx, comm, log); err != nil {
				return err
			}
		}
		if w.ckpt != nil && rank == 0 && w.ckpt.due(w.rep, st.EpochDone) {
			metrics := map[string]float64{"loss": float64(st.Loss)}
			if st.EpochDone && w.lastAcc >= 0 {
				metrics["val_acc"] = w.lastAcc
			}
			w.ckpt.save(w.rep, w.rep.Data.Classes(), metrics)
		}
	}
}

// withListen replaces this rank's advertised address by the local listen
// address (they differ behind NAT or in containers).
func withListen(addrs []string, rank int, listen string) []string {
	out := append([]string(nil), addrs...)
	out[rank] = listen
	return out
}

func (w *clusterWorker) endEpoch(ctx context.Context, comm allreduce.Communicator, log *slog.Logger) error {
	epoch := w.rep.Pos.Epoch // the epoch just finished is epoch-1
	ev := coordinator.Event{Job: w.spec.Name, Type: coordinator.EventEpoch, Time: time.Now(), Step: int64(w.rep.Step), Epoch: epoch, Source: w.cfg.ID}
	if w.eval != nil && (w.spec.Eval.EveryEpochs > 0 && epoch%w.spec.Eval.EveryEpochs == 0 || epoch >= w.spec.Epochs) {
		var acc float64
		var err error
		if s, ok := w.eval.(*StreamSource); ok {
			acc, err = w.rep.EvaluateStream(ctx, comm, s, 250)
		} else {
			acc, err = w.rep.Evaluate(ctx, comm, w.eval, 250)
		}
		if err != nil {
			return err
		}
		log.Info("evaluation", "epoch", epoch, "step", w.rep.Step, "accuracy", acc)
		w.lastAcc = acc
		if comm.Rank() == 0 {
			w.pub.Publish(ctx, coordinator.Event{Job: w.spec.Name, Type: coordinator.EventEvaluation, Time: time.Now(), Step: int64(w.rep.Step), Epoch: epoch,
				Source: w.cfg.ID, Metrics: map[string]float64{"accuracy": acc}})
		}
	}
	if comm.Rank() == 0 {
		w.pub.Publish(ctx, ev)
	}
	return nil
}

// finish records the end of training; every member returns nil.
func (w *clusterWorker) finish(ctx context.Context, comm allreduce.Communicator, log *slog.Logger) error {
	if err := w.rep.VerifyReplicas(ctx, comm); err != nil {
		return err // ErrDiverged ends the worker; a failed exchange, the generation
	}
	if comm.Rank() == 0 {
		if w.ckpt != nil {
			if err := w.ckpt.wait(); err != nil {
				return fmt.Errorf("final checkpoint: %w", err)
			}
		}
		// Written here, not by the background writer (stopped first, so no
		// older state can overwrite it), so that "done" is in etcd before
		// any worker exits.
		w.stopWriter()
		sampler, _ := json.Marshal(w.rep.Pos)
		b, _ := json.Marshal(coordinator.JobState{Generation: comm.Generation(), Step: int64(w.rep.Step), Epoch: w.rep.Pos.Epoch,
			Done: true, Sampler: sampler, Updated: time.Now()})
		if _, err := w.cli.Put(ctx, coordinator.StateKey(w.spec.Name), string(b)); err != nil {
			return fmt.Errorf("record the finished job in etcd: %w", err)
		}
	}
	_ = comm.Barrier(ctx)
	log.Info("training finished", "step", w.rep.Step, "epochs", w.spec.Epochs)
	return nil
}

// reportState hands the latest progress to the background etcd writer
// (rank 0 only writes; the channel keeps only the newest value).
func (w *clusterWorker) reportState(gen uint64, done bool) {
	sampler, _ := json.Marshal(w.rep.Pos)
	st := coordinator.JobState{Generation: gen, Step: int64(w.rep.Step), Epoch: w.rep.Pos.Epoch, Done: done, Sampler: sampler, Updated: time.Now()}
	for {
		select {
		case w.state <- st:
			return
		default:
			select {
			case <-w.state:
			default:
			}
		}
	}
}

// writeState writes progress to etcd, at most every 50 ms but always the
// final (done) state; only the ring's rank 0 reports, others' writes are
// equal anyway and would only add load.
func (w *clusterWorker) writeState(ctx context.Context) {
	key := coordinator.StateKey(w.spec.Name)
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-w.state:
			if !st.Done && time.Since(last) < 50*time.Millisecond {
				continue
			}
			b, _ := json.Marshal(st)
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := w.cli.Put(wctx, key, string(b))
			cancel()
			if err != nil && ctx.Err() == nil {
				w.log.Warn("writing job state to etcd failed", "key", key, "err", err)
			}
			last = time.Now()
		}
	}
}

// watchStatus forwards the job's phase (stopping, finished, ...) to the loop.
func (w *clusterWorker) watchStatus(ctx context.Context) {
	key := coordinator.StatusKey(w.spec.Name)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := w.cli.Get(rctx, key)
		cancel()
		if err != nil || len(resp.Kvs) == 0 {
			continue
		}
		var st coordinator.JobStatus
		if json.Unmarshal(resp.Kvs[0].Value, &st) != nil {
			continue
		}
		if st.Phase == coordinator.PhaseStopping || st.Phase.Terminal() {
			select {
			case w.phase <- st.Phase:
			default:
			}
		}
	}
}

// reportFailure records err as the reason the job cannot run (the
// coordinator then marks it failed, so status shows why instead of a job
// pending forever) and returns it. Errors that may pass by themselves — a
// cancelled context, a network error reaching etcd, S3 or a peer — are not
// reported: the worker exits and may be restarted.
func reportFailure(ctx context.Context, cli *clientv3.Client, cfg ClusterConfig, spec coordinator.JobSpec, log *slog.Logger, err error) error {
	var netErr net.Error
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	f := coordinator.JobFailure{Submission: spec.Submission, Member: cfg.ID, Message: err.Error(), Time: time.Now()}
	if rerr := coordinator.ReportFailure(rctx, cli, spec.Name, f); rerr != nil {
		log.Warn("could not report the job's failure", "err", rerr)
	}
	return err
}

// jobEnded is what a worker returns when the job ends under it: nothing
// for a job stopped or finished, an error for one that failed (its cause
// is in the job's status).
func jobEnded(job string, p coordinator.Phase) error {
	if p == coordinator.PhaseFailed {
		return fmt.Errorf("job %s failed: its status (ringtrain status %s) says why", job, job)
	}
	return nil
}

// specSchedule is the job spec's LR schedule as a function of the step.
type specSchedule struct {
	spec          coordinator.JobSpec
	stepsPerEpoch int
}

func (s specSchedule) LR(step int) float64 {
	return s.spec.LRAt(float64(step) / float64(max(s.stepsPerEpoch, 1)))
}

// OptimizerFromSpec builds the spec's optimizer over model m.
func OptimizerFromSpec(m *nn.Model, o coordinator.OptimizerSpec) (optim.Optimizer, error) {
	switch o.Name {
	case "sgd":
		return optim.NewSGD(m, optim.SGDConfig{Momentum: o.Momentum, Nesterov: o.Nesterov, WeightDecay: o.WeightDecay})
	case "adam", "adamw":
		c := optim.DefaultAdam()
		if len(o.Betas) == 2 {
			c.Beta1, c.Beta2 = o.Betas[0], o.Betas[1]
		}
		if o.Eps > 0 {
			c.Eps = o.Eps
		}
		c.WeightDecay, c.Decoupled = o.WeightDecay, o.Name == "adamw"
		return optim.NewAdam(m, c)
	}
	return nil, fmt.Errorf("spec.optimizer.name: unknown optimizer %q", o.Name)
}
