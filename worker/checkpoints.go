package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/objstore"
)

// checkpointer writes the job's checkpoints from rank 0 in the background
// (one save at a time, from a snapshot, so training goes on) and restores
// the newest good one when a job restarts with no survivor.
type checkpointer struct {
	store *checkpoint.Store
	spec  coordinator.JobSpec
	log   *slog.Logger
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error // of the last background save
}

func newCheckpointer(ctx context.Context, spec coordinator.JobSpec, s3 objstore.S3Config, log *slog.Logger) (*checkpointer, error) {
	if spec.Checkpoint.URI == "" {
		return nil, nil
	}
	objs, prefix, err := objstore.Open(ctx, spec.Checkpoint.URI, s3)
	if err != nil {
		return nil, fmt.Errorf("spec.checkpoint.uri %q: %w", spec.Checkpoint.URI, err)
	}
	st, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: prefix, Run: spec.Name, KeepLast: spec.Checkpoint.Keep,
		BestMetric: "val_acc", Logger: log})
	if err != nil {
		return nil, err
	}
	return &checkpointer{store: st, spec: spec, log: log}, nil
}

// due reports whether the policy asks for a checkpoint after the step that
// just completed.
func (c *checkpointer) due(rep *Replica, epochDone bool) bool {
	p := c.spec.Checkpoint
	return p.EverySteps > 0 && rep.Step%p.EverySteps == 0 ||
		epochDone && p.EveryEpochs > 0 && rep.Pos.Epoch%p.EveryEpochs == 0 ||
		rep.Pos.Epoch >= c.spec.Epochs
}

// save snapshots the replica and writes it in the background; it first
// waits for the previous save so saves never overlap.
func (c *checkpointer) save(rep *Replica, classNames []string, metrics map[string]float64) {
	c.wg.Wait()
	weights := cloneTensors(modelio.Tensors(rep.Model))
	opt := cloneTensors(modelio.OptimizerTensors(rep.Model, rep.Opt))
	m := checkpoint.Manifest{
		Submission: c.spec.Submission, Net: c.spec.Net, Classes: c.spec.Classes, ClassNames: classNames,
		NetConfig: map[string]any{"in_channels": c.spec.Input.Channels, "input_size": c.spec.Input.Height},
		Step:      int64(rep.Step), Epoch: rep.Pos.Epoch, Optimizer: c.spec.Optimizer.Name, Metrics: metrics,
		Sampler: checkpoint.SamplerState{Seed: rep.Pos.Seed, Epoch: rep.Pos.Epoch, Done: int64(rep.Pos.Done)},
		RNG:     rngState(rep),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_, err := c.store.Save(context.Background(), m, weights, opt)
		if err != nil {
			c.log.Error("checkpoint save failed", "step", m.Step, "err", err)
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}()
}

// wait blocks until the save in flight is written and returns its error.
func (c *checkpointer) wait() error {
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// restore loads the checkpoint that a job whose workers start with no
// survivor resumes from into rep; it reports false (and no error) when
// training starts from scratch. First comes this submission's own newest
// good checkpoint: a restart after every worker died goes on where the job
// was, whatever spec.resume says. Otherwise spec.resume decides: latest (or
// empty) the newest good checkpoint of an earlier run under this name, a
// step that one, never none; never and a step refuse to start where the
// run would write among an earlier run's checkpoints (resumeConflict).
// Corrupt or partial checkpoints are reported and skipped.
func (c *checkpointer) restore(ctx context.Context, rep *Replica) (bool, error) {
	if sub := c.spec.Submission; sub != "" {
		ck, skipped, err := c.store.LatestWhere(ctx, func(m *checkpoint.Manifest) bool { return m.Submission == sub })
		switch {
		case err == nil:
			c.logSkipped(skipped)
			return true, c.load(rep, ck, "this submission's own")
		case !errors.Is(err, checkpoint.ErrNoCheckpoint):
			return false, err
		}
	}
	entries, err := c.store.List(ctx)
	if err != nil {
		return false, err
	}
	if err := resumeConflict(c.spec, entries, c.store.String()); err != nil {
		return false, err
	}
	switch c.spec.Resume {
	case "never":
		return false, nil
	case "", "latest":
	default:
		step, err := strconv.ParseInt(c.spec.Resume, 10, 64)
		if err != nil {
			return false, fmt.Errorf("spec.resume %q: %w", c.spec.Resume, err)
		}
		ck, err := c.store.Load(ctx, step)
		if err != nil {
			return false, fmt.Errorf("spec.resume: checkpoint step %d: %w", step, err)
		}
		return true, c.load(rep, ck, "spec.resume "+c.spec.Resume)
	}
	ck, skipped, err := c.store.Latest(ctx)
	c.logSkipped(skipped)
	if errors.Is(err, checkpoint.ErrNoCheckpoint) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, c.load(rep, ck, "spec.resume latest")
}

func (c *checkpointer) load(rep *Replica, ck *checkpoint.Checkpoint, why string) error {
	c.log.Info("loading checkpoint", "step", ck.Manifest.Step, "written_by", ck.Manifest.Submission, "because", why)
	return loadCheckpoint(rep, ck)
}

func (c *checkpointer) logSkipped(skipped []checkpoint.Skipped) {
	for _, s := range skipped {
		c.log.Warn("skipped checkpoint", "step", s.Step, "err", s.Err)
	}
}

// resumeConflict reports why a job may not start under its spec.resume
// with these checkpoint folders (List's, oldest first) in its run, where:
// with never, any checkpoint of an earlier run; with a step, any of an
// earlier run after that step. The new run would write its checkpoints
// among them: a later resume latest would pick whichever is newest, from
// either run, and retention would delete the earlier run's. A folder whose
// manifest cannot be read counts as an earlier run's; one without a
// manifest (a partial save) holds nothing to lose.
func resumeConflict(spec coordinator.JobSpec, entries []checkpoint.Entry, where string) error {
	var after int64 = -1 // conflicts are checkpoints after this step
	switch spec.Resume {
	case "", "latest":
		return nil
	case "never":
	default:
		n, err := strconv.ParseInt(spec.Resume, 10, 64)
		if err != nil {
			return fmt.Errorf("spec.resume %q: %w", spec.Resume, err)
		}
		after = n
	}
	var newest *checkpoint.Entry
	for i := range entries {
		e := &entries[i]
		earlier := e.Manifest == nil && e.Err != nil ||
			e.Manifest != nil && (spec.Submission == "" || e.Manifest.Submission != spec.Submission)
		if earlier && e.Step > after {
			newest = e
		}
	}
	if newest == nil {
		return nil
	}
	var what string
	switch m := newest.Manifest; {
	case m == nil:
		what = fmt.Sprintf("step %d, manifest unreadable: %v", newest.Step, newest.Err)
	case m.Submission == "":
		what = fmt.Sprintf("step %d, written %s", newest.Step, m.CreatedAt.Format(time.RFC3339))
	default:
		what = fmt.Sprintf("step %d, written %s by submission %s", newest.Step, m.CreatedAt.Format(time.RFC3339), m.Submission)
	}
	if after < 0 {
		return fmt.Errorf("spec.resume never: checkpoint prefix %s already holds an earlier run's checkpoints of job %s (newest: %s); "+
			"starting from scratch would write new checkpoints among them, so a later resume could pick up either run and retention "+
			"could delete the earlier one's: choose another checkpoint.uri or job name, or resume: latest to continue that run",
			where, spec.Name, what)
	}
	return fmt.Errorf("spec.resume %d: checkpoint prefix %s holds an earlier run's checkpoints after step %d (newest: %s); "+
		"training on from step %d would write new checkpoints among them: move or delete the checkpoints after step %d to branch "+
		"from it, or use resume: latest", after, where, after, what, after, after)
}

// loadCheckpoint puts a checkpoint's state into rep.
func loadCheckpoint(rep *Replica, ck *checkpoint.Checkpoint) error {
	m := ck.Manifest
	if err := checkRNGState(m); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", m.Step, err)
	}
	if _, err := modelio.LoadWeights(rep.Model, ck.Weights, true); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", m.Step, err)
	}
	if err := modelio.LoadOptimizer(rep.Model, rep.Opt, ck.Optim); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", m.Step, err)
	}
	pos := dataset.SamplerState{Seed: m.Sampler.Seed, Epoch: m.Sampler.Epoch, Done: int(m.Sampler.Done)}
	if err := rep.Sampler.CheckState(pos); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", m.Step, err)
	}
	rep.Step, rep.Pos = int(m.Step), pos
	rep.Opt.SetSteps(int(m.Step))
	return nil
}

// rngState is what regenerates every random stream at rep's position
// (see RNGScheme): the scheme, the sampler seed and the step. Epoch and
// position within it are the manifest's sampler state.
func rngState(rep *Replica) []uint64 {
	return []uint64{RNGScheme, rep.Pos.Seed, uint64(rep.Step)}
}

// checkRNGState refuses a checkpoint whose random streams this build would
// not regenerate. An empty rng_state comes from builds before it was
// filled, which all used scheme 1.
func checkRNGState(m checkpoint.Manifest) error {
	r := m.RNG
	switch {
	case len(r) == 0:
		return nil
	case r[0] != RNGScheme:
		return fmt.Errorf("manifest field rng_state: random-stream scheme %d, this build regenerates scheme %d only "+
			"(resume with the ringtrain version that wrote it, or start from its weights with spec.transfer.from)", r[0], RNGScheme)
	case len(r) != 3:
		return fmt.Errorf("manifest field rng_state: %d values, scheme %d has 3 (scheme, seed, step)", len(r), RNGScheme)
	case r[1] != m.Sampler.Seed || r[2] != uint64(m.Step):
		return fmt.Errorf("manifest field rng_state: seed %d, step %d, but the manifest's sampler seed is %d and its step %d",
			r[1], r[2], m.Sampler.Seed, m.Step)
	}
	return nil
}

func cloneTensors(ts []checkpoint.Tensor) []checkpoint.Tensor {
	out := make([]checkpoint.Tensor, len(ts))
	for i, t := range ts {
		t.Data = append([]float32(nil), t.Data...)
		out[i] = t
	}
	return out
}
