package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringtrain/ringtrain/objstore"
)

// Metrics count what loaders fetch and skip.
type Metrics struct {
	Samples      prometheus.Counter
	Skipped      *prometheus.CounterVec // label "reason": decode, fetch
	BytesFetched prometheus.Counter
	CacheHits    prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg if non-nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Samples:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ringtrain_data_samples_total", Help: "Samples decoded into batches."}),
		Skipped:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ringtrain_data_skipped_total", Help: "Bad samples skipped."}, []string{"reason"}),
		BytesFetched: prometheus.NewCounter(prometheus.CounterOpts{Name: "ringtrain_data_fetched_bytes_total", Help: "Bytes read from the object store."}),
		CacheHits:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ringtrain_data_shard_cache_hits_total", Help: "Samples read from the local shard cache."}),
	}
	if reg != nil {
		reg.MustRegister(m.Samples, m.Skipped, m.BytesFetched, m.CacheHits)
	}
	return m
}

// LoaderConfig describes the input pipeline of one rank.
type LoaderConfig struct {
	Store objstore.Store
	Index *Index
	// Sampler.N must be len(Index.Samples).
	Sampler Sampler
	// Start is where to begin (a resume state).
	Start SamplerState
	// World and Rank are fixed for a loader: on a membership change, close
	// it and open a new one from the current state.
	World, Rank int
	Transform   TransformConfig
	// Workers fetch and decode concurrently (default GOMAXPROCS-ish 4).
	Workers int
	// Prefetch is how many batches are prepared ahead (default 2); memory is
	// bounded by Prefetch+1 batch buffers.
	Prefetch int
	// SkipBad skips corrupt or non-image samples (counted in metrics and in
	// Batch.Skipped) instead of failing.
	SkipBad bool
	// CacheDir, if set, keeps whole shards fetched from the store there.
	CacheDir string
	Metrics  *Metrics
	Logger   *slog.Logger
}

// Batch is one step's input for this rank. Its buffers belong to the
// loader: hand it back with Release once the step no longer reads them.
type Batch struct {
	// X is N×C×H×W float32, Y the labels, IDs the sample ids (positions in
	// the Index), all of length N (≤ the rank's share when samples were
	// skipped).
	X   []float32
	Y   []int32
	IDs []int32
	N   int
	// Skipped counts bad samples left out of this batch.
	Skipped int
	// State is where this step started; Next the state after it (save
	// Next in a checkpoint taken after the step).
	State, Next SamplerState

	wg   sync.WaitGroup
	bad  []bool
	errs []error
	cap  int
}

// Loader produces batches in sampler order, prefetching in the background.
type Loader struct {
	cfg     LoaderConfig
	sampLen int
	free    chan *Batch
	ready   chan result
	cancel  context.CancelFunc
	done    chan struct{}
	cache   *shardCache
	closeMu sync.Once
	closed  atomic.Bool
}

type result struct {
	b   *Batch
	err error
}

// NewLoader validates cfg and starts the background workers; Close stops them.
func NewLoader(cfg LoaderConfig) (*Loader, error) {
	if cfg.Store == nil || cfg.Index == nil {
		return nil, errors.New("loader: no store or index")
	}
	if err := cfg.Sampler.Validate(); err != nil {
		return nil, err
	}
	if cfg.Sampler.N != len(cfg.Index.Samples) {
		return nil, fmt.Errorf("loader: sampler has %d samples, index %d", cfg.Sampler.N, len(cfg.Index.Samples))
	}
	if err := CheckWorld(cfg.World, cfg.Rank); err != nil {
		return nil, err
	}
	if err := cfg.Sampler.CheckState(cfg.Start); err != nil {
		return nil, err
	}
	cfg.Transform = cfg.Transform.WithDefaults()
	if err := cfg.Transform.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 2
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Loader{cfg: cfg, sampLen: cfg.Transform.SampleLen(),
		free: make(chan *Batch, cfg.Prefetch+1), ready: make(chan result, cfg.Prefetch), done: make(chan struct{})}
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("loader: shard cache: %w", err)
		}
		l.cache = &shardCache{dir: cfg.CacheDir, st: cfg.Store, m: cfg.Metrics}
	}
	share := (cfg.Sampler.GlobalBatch + cfg.World - 1) / cfg.World
	for range cfg.Prefetch + 1 {
		l.free <- &Batch{X: make([]float32, share*l.sampLen), Y: make([]int32, share), IDs: make([]int32, share),
			bad: make([]bool, share), errs: make([]error, share), cap: share}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(ctx)
	return l, nil
}

// Next returns the next batch, blocking until it is ready or ctx ends. At
// the end of an epoch it continues with the next one.
func (l *Loader) Next(ctx context.Context) (*Batch, error) {
	if l.closed.Load() {
		return nil, errors.New("loader closed")
	}
	select {
	case r, ok := <-l.ready:
		if !ok {
			return nil, errors.New("loader closed")
		}
		return r.b, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Release hands a batch's buffers back for reuse.
func (l *Loader) Release(b *Batch) {
	if b != nil {
		l.free <- b
	}
}

// Close stops the workers and waits for them.
func (l *Loader) Close() error {
	l.closeMu.Do(func() {
		l.closed.Store(true)
		l.cancel()
		<-l.done
	})
	return nil
}

type job struct {
	b    *Batch
	slot int
	id   int32
	seed uint64
}

// run is the producer: it fills batches in order and publishes them.
func (l *Loader) run(ctx context.Context) {
	defer close(l.done)
	jobs := make(chan job, l.cfg.Workers*2)
	var wg sync.WaitGroup
	for range l.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, jobs)
		}()
	}
	defer wg.Wait()
	defer close(jobs)
	// Batches whose jobs are dispatched, in order, waiting to complete.
	pending := make(chan *Batch, l.cfg.Prefetch+1)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for b := range pending {
			b.wg.Wait()
			r := l.finish(b)
			select {
			case l.ready <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { close(pending); <-collected; close(l.ready) }()
	s, st := l.cfg.Sampler, l.cfg.Start
	var order []int32
	orderEpoch := -1
	for {
		var b *Batch
		select {
		case b = <-l.free:
		case <-ctx.Done():
			return
		}
		if orderEpoch != st.Epoch {
			order = s.Order(st.Seed, st.Epoch, order)
			orderEpoch = st.Epoch
		}
		lo, hi := s.Part(st, l.cfg.World, l.cfg.Rank)
		b.N, b.Skipped, b.State, b.Next = hi-lo, 0, st, s.Next(st)
		b.wg.Add(b.N)
		for i := range b.N {
			id := order[lo+i]
			b.IDs[i], b.Y[i], b.bad[i], b.errs[i] = id, l.cfg.Index.Samples[id].Label, false, nil
			seed := AugmentSeed(st.Seed, st.Epoch, lo+i)
			select {
			case jobs <- job{b: b, slot: i, id: id, seed: seed}:
			case <-ctx.Done():
				b.wg.Add(-(b.N - i))
				return
			}
		}
		select {
		case pending <- b:
		case <-ctx.Done():
			return
		}
		st = b.Next
	}
}

// StepError is a batch that could not be built (storage or credentials
// failure, or a bad sample without SkipBad). State is where that step
// starts: close the loader and open a new one there to retry it.
type StepError struct {
	State SamplerState
	Err   error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("batch at epoch %d position %d: %v", e.State.Epoch, e.State.Done, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// AugmentSeed is the seed of the random transform of the sample at
// position pos of epoch's order: it does not depend on who decodes it.
func AugmentSeed(seed uint64, epoch, pos int) uint64 {
	return mix64(mix64(mix64(seed^0x5EED)^uint64(epoch)) ^ uint64(pos))
}

// finish compacts skipped samples out of b or reports the first hard error.
func (l *Loader) finish(b *Batch) result {
	n := 0
	for i := range b.N {
		if b.errs[i] != nil {
			if l.cfg.SkipBad && errors.Is(b.errs[i], ErrBadSample) {
				b.Skipped++
				continue
			}
			err := &StepError{State: b.State, Err: b.errs[i]}
			l.free <- b
			return result{err: err}
		}
		if n != i {
			copy(b.X[n*l.sampLen:(n+1)*l.sampLen], b.X[i*l.sampLen:(i+1)*l.sampLen])
			b.Y[n], b.IDs[n] = b.Y[i], b.IDs[i]
		}
		n++
	}
	b.N = n
	return result{b: b}
}

func (l *Loader) worker(ctx context.Context, jobs <-chan job) {
	t, err := NewTransformer(l.cfg.Transform)
	if err != nil {
		panic(err) // validated in NewLoader
	}
	var buf []byte
	for j := range jobs {
		s := l.cfg.Index.Samples[j.id]
		dst := j.b.X[j.slot*l.sampLen : (j.slot+1)*l.sampLen]
		var err error
		reason := "fetch"
		buf, err = l.fetch(ctx, s, buf)
		if err == nil {
			if l.cache == nil || s.Name == "" {
				l.cfg.Metrics.BytesFetched.Add(float64(len(buf)))
			}
			reason = "decode"
			err = t.DecodeApply(buf, l.cfg.Store.String()+"/"+s.Key+memberSuffix(s), j.seed, dst)
			if err == nil {
				l.cfg.Metrics.Samples.Inc()
			}
		}
		if err != nil && l.cfg.SkipBad && errors.Is(err, ErrBadSample) {
			l.cfg.Metrics.Skipped.WithLabelValues(reason).Inc()
			l.cfg.Logger.Warn("skipping bad sample", "sample", j.id, "err", err)
		}
		j.b.errs[j.slot] = err
		j.b.wg.Done()
	}
}

// fetch reads a sample's bytes. A missing object is a bad sample (the index
// is stale); access and transport errors are not.
func (l *Loader) fetch(ctx context.Context, s Sample, buf []byte) ([]byte, error) {
	var err error
	if l.cache != nil && s.Name != "" {
		buf, err = l.cache.read(ctx, s, buf)
	} else {
		buf, err = fetchAll(ctx, l.cfg.Store, s, buf)
	}
	if errors.Is(err, objstore.ErrNotExist) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: %w", ErrBadSample, err)
	}
	return buf, err
}

// shardCache keeps whole shards in a local folder.
type shardCache struct {
	dir   string
	st    objstore.Store
	m     *Metrics
	mu    sync.Mutex
	fetch map[string]*shardFetch
}

type shardFetch struct {
	once sync.Once
	path string
	err  error
}

func (c *shardCache) read(ctx context.Context, s Sample, buf []byte) ([]byte, error) {
	c.mu.Lock()
	if c.fetch == nil {
		c.fetch = map[string]*shardFetch{}
	}
	f, ok := c.fetch[s.Key]
	if !ok {
		f = &shardFetch{path: filepath.Join(c.dir, strings.NewReplacer("/", "_", "\\", "_").Replace(c.st.String()+"/"+s.Key))}
		c.fetch[s.Key] = f
	}
	c.mu.Unlock()
	f.once.Do(func() { f.err = c.download(ctx, s.Key, f.path) })
	if f.err != nil {
		c.mu.Lock()
		delete(c.fetch, s.Key) // retry on the next read
		c.mu.Unlock()
		return buf, f.err
	}
	fh, err := os.Open(f.path)
	if err != nil {
		return buf, err
	}
	defer fh.Close()
	buf = grow(buf, int(s.Size))
	if _, err := fh.ReadAt(buf, s.Offset); err != nil {
		return buf, fmt.Errorf("cached shard %s#%s: %w", f.path, s.Name, err)
	}
	c.m.CacheHits.Inc()
	return buf, nil
}

func (c *shardCache) download(ctx context.Context, key, path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil // from an earlier run
	}
	rc, err := c.st.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(c.dir, ".dl-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cache shard %s/%s: %w", c.st, key, err)
	}
	c.m.BytesFetched.Add(float64(n))
	return os.Rename(tmp.Name(), path)
}
