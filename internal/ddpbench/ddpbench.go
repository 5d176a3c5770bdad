// Package ddpbench measures synchronous data-parallel training steps the
// way "ringtrain bench ddp" reports them: every rank is a worker.Replica of
// the same net (same seed, random data), the global batch is split across
// ranks, gradients are all-reduced over a gRPC ring on loopback (one
// process per rank, this binary re-executed as the rank subcommand) or an
// in-memory ring (goroutines, for tests), either overlapped with backward
// in DDP buckets or after backward. Rank 0 gathers every rank's mean
// compute and communication time and the parent prints one line:
//
//	ddp net=resnet18 input=32 global_batch=64 world=2 overlap=true step_ms=… compute_ms=… comm_ms=… img_per_s=…
package ddpbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/optim"
	"github.com/ringtrain/ringtrain/worker"
)

// Config is one benchmark run.
type Config struct {
	Net      string
	Input    int // height = width (0: the net's default)
	Channels int // 0: the net's default
	Classes  int
	Batch    int // global batch, split across ranks
	World    int
	Overlap  bool // DDP buckets overlapping backward; false: reduce after backward
	BucketMB float64
	FP16     bool // fp16 on the wire
	Steps    int  // timed steps
	Warmup   int  // untimed steps first
	Threads  int  // compute threads per rank
	Seed     uint64
	Timeout  time.Duration
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Net == "":
		return fmt.Errorf("bench ddp: --net is required (one of %s)", strings.Join(nets.Names(), ", "))
	case c.World < 1:
		return fmt.Errorf("bench ddp: world %d < 1", c.World)
	case c.Batch < c.World:
		return fmt.Errorf("bench ddp: global batch %d smaller than world %d", c.Batch, c.World)
	case c.Steps < 1 || c.Warmup < 0:
		return fmt.Errorf("bench ddp: steps %d, warmup %d", c.Steps, c.Warmup)
	case c.Threads < 1:
		return fmt.Errorf("bench ddp: threads %d < 1", c.Threads)
	case c.Overlap && c.BucketMB <= 0:
		return fmt.Errorf("bench ddp: bucket size %g MB, want > 0", c.BucketMB)
	case c.Classes < 1:
		return fmt.Errorf("bench ddp: classes %d < 1", c.Classes)
	}
	return nil
}

// Result is what a run measured. Times are milliseconds per step.
type Result struct {
	Config
	StepMS  float64 // wall time per global step (rank 0, timed steps / count)
	ImgPerS float64 // global batch / step time
	// Means over steps, then over ranks.
	ComputeMS, CommMS, DataMS float64
	// Per rank (mean over steps), index = rank.
	RankComputeMS, RankCommMS []float64
	GradMB                    float64 // fp32 gradient arena size
}

// Line is the parseable one-line summary.
func (r Result) Line() string {
	return fmt.Sprintf("ddp net=%s input=%d global_batch=%d world=%d overlap=%t threads=%d bucket_mb=%g fp16=%t steps=%d grad_mb=%.1f step_ms=%.1f compute_ms=%.1f comm_ms=%.1f data_ms=%.2f img_per_s=%.2f rank_compute_ms=%s rank_comm_ms=%s",
		r.Net, r.Input, r.Batch, r.World, r.Overlap, r.Threads, r.BucketMB, r.FP16, r.Steps, r.GradMB,
		r.StepMS, r.ComputeMS, r.CommMS, r.DataMS, r.ImgPerS, joinMS(r.RankComputeMS), joinMS(r.RankCommMS))
}

func joinMS(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strings.Join(s, ",")
}

// ParseLine reads the key=value pairs of a Line (scripts and tests).
func ParseLine(line string) (map[string]string, error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "ddp" {
		return nil, fmt.Errorf("ddp line %q: does not start with \"ddp\"", line)
	}
	kv := map[string]string{}
	for _, p := range f[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("ddp line: field %q is not key=value", p)
		}
		kv[k] = v
	}
	return kv, nil
}

// NewFlagSet returns the flags of "bench ddp" bound to a Config.
func NewFlagSet(name string) (*flag.FlagSet, *Config) {
	cfg := &Config{Net: "resnet18", Input: 32, Classes: 10, Batch: 64, World: 2, Overlap: true, BucketMB: 25,
		Steps: 20, Warmup: 2, Threads: 1, Seed: 1, Timeout: 120 * time.Second}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&cfg.Net, "net", cfg.Net, "architecture (see `ringtrain nets`)")
	fs.IntVar(&cfg.Input, "input", cfg.Input, "input height and width (0 = the net's default)")
	fs.IntVar(&cfg.Channels, "channels", cfg.Channels, "input channels (0 = the net's default)")
	fs.IntVar(&cfg.Classes, "classes", cfg.Classes, "number of classes")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "global batch, split across ranks")
	fs.IntVar(&cfg.World, "world", cfg.World, "number of rank processes")
	fs.BoolVar(&cfg.Overlap, "overlap", cfg.Overlap, "all-reduce DDP buckets while backward runs (false: after backward)")
	fs.Float64Var(&cfg.BucketMB, "bucket-mb", cfg.BucketMB, "bucket size in MB (MiB) with --overlap")
	fs.BoolVar(&cfg.FP16, "fp16", cfg.FP16, "send gradients as fp16")
	fs.IntVar(&cfg.Steps, "steps", cfg.Steps, "timed steps")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "untimed steps first")
	fs.IntVar(&cfg.Threads, "threads", cfg.Threads, "compute threads per rank (1 when world >= 2 on a 2-core machine)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "weights and data seed (same on every rank)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "peer timeout of the ring")
	return fs, cfg
}

// EnvDefaults sets every flag not given on the command line from
// RINGTRAIN_<FLAG_NAME> (upper snake case), e.g. RINGTRAIN_BUCKET_MB=25.
func EnvDefaults(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		key := "RINGTRAIN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok && !set[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
		}
	})
	return err
}

// args renders the config as flags for a rank process.
func (c Config) args() []string {
	return []string{"-net", c.Net, "-input", strconv.Itoa(c.Input), "-channels", strconv.Itoa(c.Channels),
		"-classes", strconv.Itoa(c.Classes), "-batch", strconv.Itoa(c.Batch), "-world", strconv.Itoa(c.World),
		"-overlap=" + strconv.FormatBool(c.Overlap), "-bucket-mb", strconv.FormatFloat(c.BucketMB, 'g', -1, 64),
		"-fp16=" + strconv.FormatBool(c.FP16), "-steps", strconv.Itoa(c.Steps), "-warmup", strconv.Itoa(c.Warmup),
		"-threads", strconv.Itoa(c.Threads), "-seed", strconv.FormatUint(c.Seed, 10), "-timeout", c.Timeout.String()}
}

// randomSource serves a fixed pool of random samples, the same on every
// rank for the same seed; sample i is pool entry i mod len.
type randomSource struct {
	shape   nn.Shape
	classes int
	x       []float32
	labels  []int32
	n       int
}

var _ worker.Source = (*randomSource)(nil)

func newRandomSource(shape nn.Shape, classes, pool, n int, seed uint64) *randomSource {
	rng := rand.New(rand.NewPCG(seed, 0xda7a))
	s := &randomSource{shape: shape, classes: classes, n: n, x: make([]float32, pool*shape.Size()), labels: make([]int32, pool)}
	for i := range s.x {
		s.x[i] = float32(rng.NormFloat64())
	}
	for i := range s.labels {
		s.labels[i] = int32(rng.IntN(classes))
	}
	return s
}

func (s *randomSource) Len() int        { return s.n }
func (s *randomSource) Shape() nn.Shape { return s.shape }
func (s *randomSource) Classes() []string {
	c := make([]string, s.classes)
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return c
}

func (s *randomSource) Load(_ context.Context, idx []int32, x []float32, labels []int32) error {
	sz := s.shape.Size()
	if len(x) < len(idx)*sz || len(labels) < len(idx) {
		return fmt.Errorf("random source: %d samples do not fit %d floats, %d labels", len(idx), len(x), len(labels))
	}
	pool := len(s.labels)
	for b, i := range idx {
		j := int(i) % pool
		copy(x[b*sz:(b+1)*sz], s.x[j*sz:(j+1)*sz])
		labels[b] = s.labels[j]
	}
	return nil
}

// rankStats is one rank's measurement.
type rankStats struct {
	stepSec                 float64
	compute, comm, dataWait time.Duration // means over timed steps
	gradMB                  float64
}

// runRank builds the replica, runs warmup and timed steps over comm, checks
// that every replica holds the same weights, and gathers every rank's
// means. progress (may be nil) gets a line per step.
func runRank(ctx context.Context, cfg Config, comm allreduce.Communicator, progress io.Writer) (Result, error) {
	m, err := nets.Build(cfg.Net, nets.Config{Classes: cfg.Classes, InChannels: cfg.Channels, InputSize: cfg.Input, Seed: cfg.Seed})
	if err != nil {
		return Result{}, fmt.Errorf("bench ddp: building %s: %w", cfg.Net, err)
	}
	if len(m.In) == 3 { // report the sizes the net was built with
		cfg.Channels, cfg.Input = m.In[0], m.In[1]
	}
	opt, err := optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9})
	if err != nil {
		return Result{}, err
	}
	total := cfg.Warmup + cfg.Steps
	s := dataset.Sampler{N: cfg.Batch * (total + 1), GlobalBatch: cfg.Batch, Shuffle: true}
	src := newRandomSource(m.In, cfg.Classes, min(cfg.Batch, 256), s.N, cfg.Seed)
	pool := kernels.NewPool(cfg.Threads)
	defer pool.Close()
	rep, err := worker.NewReplica(m, opt, optim.Constant(0.01), s, src, dataset.SamplerState{Seed: cfg.Seed}, pool)
	if err != nil {
		return Result{}, err
	}
	if cfg.Overlap {
		var hook allreduce.CompressionHook
		if cfg.FP16 {
			hook = allreduce.FP16Hook{}
		}
		if err := rep.Overlap(comm, int(cfg.BucketMB*(1<<20)), hook); err != nil {
			return Result{}, fmt.Errorf("bench ddp: overlap buckets: %w", err)
		}
		defer rep.CloseOverlap()
	} else if cfg.FP16 {
		return Result{}, errors.New("bench ddp: --fp16 needs --overlap (the plain reduce sends fp32)")
	}
	var st rankStats
	st.gradMB = float64(len(m.Grad)) * 4 / (1 << 20)
	for i := 0; i < cfg.Warmup; i++ {
		if _, err := rep.TrainStep(ctx, comm); err != nil {
			return Result{}, fmt.Errorf("bench ddp: warmup step %d: %w", i, err)
		}
	}
	if err := comm.Barrier(ctx); err != nil {
		return Result{}, fmt.Errorf("bench ddp: barrier: %w", err)
	}
	start := time.Now()
	for i := 0; i < cfg.Steps; i++ {
		t := time.Now()
		ss, err := rep.TrainStep(ctx, comm)
		if err != nil {
			return Result{}, fmt.Errorf("bench ddp: step %d: %w", i, err)
		}
		st.compute += ss.Compute
		st.comm += ss.Comm
		st.dataWait += ss.DataWait
		if progress != nil {
			el := time.Since(start)
			eta := el / time.Duration(i+1) * time.Duration(cfg.Steps-i-1)
			fmt.Fprintf(progress, "ddp step %d/%d: %.0f ms (compute %.0f, comm %.0f), %.1f img/s, ETA %v\n", i+1, cfg.Steps,
				time.Since(t).Seconds()*1e3, ss.Compute.Seconds()*1e3, ss.Comm.Seconds()*1e3,
				float64(cfg.Batch)*float64(i+1)/el.Seconds(), eta.Round(100*time.Millisecond))
		}
	}
	if err := comm.Barrier(ctx); err != nil {
		return Result{}, fmt.Errorf("bench ddp: barrier: %w", err)
	}
	st.stepSec = time.Since(start).Seconds() / float64(cfg.Steps)
	n := time.Duration(cfg.Steps)
	st.compute, st.comm, st.dataWait = st.compute/n, st.comm/n, st.dataWait/n
	if err := rep.VerifyReplicas(ctx, comm); err != nil {
		return Result{}, fmt.Errorf("bench ddp: %w", err)
	}
	return gather(ctx, cfg, comm, st)
}

// gather collects every rank's means (as nanoseconds) on every rank.
func gather(ctx context.Context, cfg Config, comm allreduce.Communicator, st rankStats) (Result, error) {
	all := func(d time.Duration) ([]float64, error) {
		v, err := comm.AllGatherUint64(ctx, uint64(d))
		if err != nil {
			return nil, fmt.Errorf("bench ddp: gathering stats: %w", err)
		}
		ms := make([]float64, len(v))
		for i, x := range v {
			ms[i] = float64(x) / 1e6
		}
		return ms, nil
	}
	comp, err := all(st.compute)
	if err != nil {
		return Result{}, err
	}
	cm, err := all(st.comm)
	if err != nil {
		return Result{}, err
	}
	dw, err := all(st.dataWait)
	if err != nil {
		return Result{}, err
	}
	r := Result{Config: cfg, StepMS: st.stepSec * 1e3, ImgPerS: float64(cfg.Batch) / st.stepSec,
		ComputeMS: mean(comp), CommMS: mean(cm), DataMS: mean(dw), RankComputeMS: comp, RankCommMS: cm, GradMB: st.gradMB}
	return r, nil
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// Median returns the median of v (0 for none); v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// RunMem runs the ranks as goroutines over an in-memory ring.
func RunMem(ctx context.Context, cfg Config, progress io.Writer) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	comms := allreduce.NewMemGroup(cfg.World, allreduce.Options{Timeout: cfg.Timeout})
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	res := make([]Result, cfg.World)
	errs := make([]error, cfg.World)
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p io.Writer
			if r == 0 {
				p = progress
			}
			res[r], errs[r] = runRank(ctx, cfg, c, p)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	return res[0], nil
}
