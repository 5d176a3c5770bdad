package worker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/optim"
	"gorgonia.org/tensor"
)

// Replica is one data-parallel copy of the training state: model,
// optimizer, schedule and the position in the data. Every replica of a
// ring applies the same averaged gradient, so all stay bitwise identical.
//
// A step either completes everywhere it is applied or leaves the replica
// exactly as before (weights change only after a successful all-reduce;
// buffers are restored), so a broken ring costs the step, not the run.
type Replica struct {
	Model   *nn.Model
	Opt     optim.Optimizer
	Sched   optim.Schedule
	Sampler dataset.Sampler
	Data    Source
	// Pos is the position of the next step; Step counts completed steps.
	Pos  dataset.SamplerState
	Step int
	// OnSamples, when set, sees the global sample indices each completed
	// step trained on locally (sample accounting in tests and metrics).
	OnSamples func(epoch int, idx []int32)
	// Feed, when set, streams this rank's batches (a prefetching loader for
	// the current ring); otherwise samples are loaded from Data by index.
	// After a failed step the feed is out of step: replace it.
	Feed Feed
	// OnGlobalBatch, when set, sees every completed step's whole global
	// batch (all ranks' samples): exact-once accounting across failures.
	OnGlobalBatch func(step, epoch int, idx []int32)

	// reducer overlaps the gradient all-reduce with backward (DDP buckets);
	// nil reduces the whole arena after backward.
	reducer  *allreduce.Reducer
	paramIdx map[*nn.Param]int

	st      nn.State
	pcg     *rand.PCG
	loss    nn.CrossEntropy
	order   []int32
	orderOf [2]int // (seed-epoch key) the order buffer holds
	x       []float32
	labels  []int32
	bufSnap []float32
}

// RNGScheme names how every random stream of training derives from
// counters, so that a checkpoint regenerates them from what it records
// (manifest rng_state: RNGScheme, sampler seed, step). Scheme 1:
//   - shuffle: dataset.Sampler.Order(seed, epoch);
//   - augmentation: dataset.AugmentSeed(seed, epoch, position in the order);
//   - dropout: a PCG reseeded before every step with dropoutSeed(seed, step, rank).
//
// No stream carries state from one step to the next. Bump the scheme when
// any of these changes what it draws: a resumed run would silently differ
// from the run that wrote the checkpoint, so restore refuses other schemes.
const RNGScheme = 1

// dropoutSeed is the PCG seed of a step's dropout masks on one rank.
func dropoutSeed(seed uint64, step, rank int) (uint64, uint64) {
	return seed ^ 0x9e3779b97f4a7c15, uint64(step)<<16 | uint64(rank)
}

// StepStats describes one completed step on this replica.
type StepStats struct {
	Loss      float32 // mean loss over the local batch
	Correct   int     // local top-1 hits
	Local     int     // local batch size
	LR        float64
	EpochDone bool // this step finished an epoch
	// Where the step's time went on this rank.
	DataWait, Compute, Comm time.Duration
}

// NewReplica wires a replica; pool runs its kernels.
func NewReplica(m *nn.Model, opt optim.Optimizer, sched optim.Schedule, s dataset.Sampler, data Source, pos dataset.SamplerState, pool *kernels.Pool) (*Replica, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := s.CheckState(pos); err != nil {
		return nil, err
	}
	if !data.Shape().Equal(m.In) {
		return nil, fmt.Errorf("replica: data samples have shape %v, the model expects %v", data.Shape(), m.In)
	}
	optim.UsePool(opt, pool)
	r := &Replica{Model: m, Opt: opt, Sched: sched, Sampler: s, Data: data, Pos: pos, pcg: rand.NewPCG(0, 0)}
	r.st = nn.State{Train: true, Pool: pool, RNG: rand.New(r.pcg)}
	r.orderOf = [2]int{-1, -1}
	return r, nil
}

// localIndices returns this rank's sample indices for the step at r.Pos.
func (r *Replica) localIndices(world, rank int) []int32 {
	if key := [2]int{int(r.Pos.Seed), r.Pos.Epoch}; key != r.orderOf {
		r.order = r.Sampler.Order(r.Pos.Seed, r.Pos.Epoch, r.order)
		r.orderOf = key
	}
	lo, hi := r.Sampler.Part(r.Pos, world, rank)
	return r.order[lo:hi]
}

// TrainStep runs one global step over comm: local forward/backward on this
// rank's part of the global batch, gradient all-reduce, optimizer update.
// On error the replica is unchanged (the step can be retried on a new ring).
func (r *Replica) TrainStep(ctx context.Context, comm allreduce.Communicator) (StepStats, error) {
	world, rank := comm.Size(), comm.Rank()
	idx := r.localIndices(world, rank)
	global := min(r.Sampler.GlobalBatch, r.Sampler.EpochLen()-r.Pos.Done)
	r.snapshotBuffers()
	m := r.Model
	m.ZeroGrad()
	var stats StepStats
	sz := m.In.Size()
	t0 := time.Now()
	var x []float32
	var labels []int32
	if r.Feed != nil {
		b, err := r.Feed.Next(ctx)
		if err != nil {
			return stats, fmt.Errorf("step %d: next batch: %w", r.Step, err)
		}
		defer r.Feed.Release(b)
		if b.State != r.Pos {
			return stats, fmt.Errorf("step %d: data feed at %+v, replica at %+v", r.Step, b.State, r.Pos)
		}
		x, labels, idx = b.X[:b.N*sz], b.Y[:b.N], b.IDs[:b.N]
	} else if len(idx) > 0 {
		if cap(r.x) < len(idx)*sz {
			r.x = make([]float32, len(idx)*sz)
			r.labels = make([]int32, len(idx))
		}
		x, labels = r.x[:len(idx)*sz], r.labels[:len(idx)]
		if err := r.Data.Load(ctx, idx, x, labels); err != nil {
			return stats, fmt.Errorf("step %d: loading samples: %w", r.Step, err)
		}
	}
	n := len(labels)
	t1 := time.Now()
	stats.DataWait = t1.Sub(t0)
	if n > 0 {
		// Dropout randomness is a function of (seed, step, rank) so that a
		// retried or resumed step draws the same masks.
		r.pcg.Seed(dropoutSeed(r.Pos.Seed, r.Step, rank))
		xt := tensor.New(tensor.WithShape(append([]int{n}, m.In...)...), tensor.WithBacking(x))
		logits, err := m.Forward(&r.st, xt)
		if err != nil {
			return stats, err
		}
		l, err := r.loss.Forward(logits, labels)
		if err != nil {
			return stats, err
		}
		stats.Loss, stats.Correct, stats.Local = l, nn.Correct(logits, labels), n
		// Each rank's loss is a mean over its n samples; scaling by n/global
		// and summing over ranks gives the mean over the global batch, also
		// when ranks hold different batch sizes.
		dy := r.loss.Backward()
		scale := float32(n) / float32(global)
		g := dy.Float32s()
		for i, v := range g {
			g[i] = v * scale
		}
		if err := m.Backward(&r.st, dy); err != nil {
			return stats, err
		}
		stats.Compute = time.Since(t1)
	}
	tc := time.Now()
	var err error
	if r.reducer != nil {
		err = r.reducer.Wait(ctx)
	} else {
		err = comm.AllReduce(ctx, m.Grad, allreduce.Sum)
	}
	if err != nil {
		r.restoreBuffers()
		return stats, fmt.Errorf("step %d: gradient all-reduce: %w", r.Step, err)
	}
	if err := r.syncBuffers(ctx, comm); err != nil {
		r.restoreBuffers()
		return stats, fmt.Errorf("step %d: buffer broadcast: %w", r.Step, err)
	}
	stats.Comm = time.Since(tc)
	stats.LR = r.Sched.LR(r.Step)
	r.Opt.Step(stats.LR)
	if r.OnSamples != nil {
		r.OnSamples(r.Pos.Epoch, idx)
	}
	if r.OnGlobalBatch != nil {
		lo, hi := r.Sampler.Part(r.Pos, 1, 0)
		r.OnGlobalBatch(r.Step, r.Pos.Epoch, r.order[lo:hi])
	}
	r.Step++
	prev := r.Pos.Epoch
	r.Pos = r.Sampler.Next(r.Pos)
	stats.EpochDone = r.Pos.Epoch != prev
	return stats, nil
}

// Overlap makes the gradient all-reduce of comm overlap backward: trainable
// parameters' gradients are grouped into buckets of bucketBytes in reverse
// layer order, and each bucket is reduced as soon as backward has produced
// it. Call it for every new ring; Close releases it.
func (r *Replica) Overlap(comm allreduce.Communicator, bucketBytes int, hook allreduce.CompressionHook) error {
	r.CloseOverlap()
	var segs []allreduce.Segment
	r.paramIdx = map[*nn.Param]int{}
	off := 0
	for _, p := range r.Model.Weights {
		if p.Trainable {
			r.paramIdx[p] = len(segs)
			segs = append(segs, allreduce.Segment{Name: p.Name, Offset: off, Len: len(p.Data)})
		}
		off += len(p.Data)
	}
	red, err := allreduce.NewReducer(comm, r.Model.Grad, segs, bucketBytes, hook, allreduce.Sum)
	if err != nil {
		return err
	}
	r.reducer = red
	r.st.GradReady = func(p *nn.Param) {
		if i, ok := r.paramIdx[p]; ok {
			red.GradReady(i)
		}
	}
	return nil
}

// CloseOverlap stops the bucketed reducer; steps reduce after backward.
func (r *Replica) CloseOverlap() {
	if r.reducer != nil {
		r.reducer.Close()
		r.reducer, r.st.GradReady = nil, nil
	}
}

// buffers are BN running statistics: rank 0's are broadcast after every
// step, as DDP's broadcast_buffers does, so replicas stay identical.
func (r *Replica) eachBuffer(f func(p *nn.Param)) {
	for _, p := range r.Model.State {
		if p.Kind != nn.Weight {
			f(p)
		}
	}
}

func (r *Replica) snapshotBuffers() {
	r.bufSnap = r.bufSnap[:0]
	r.eachBuffer(func(p *nn.Param) { r.bufSnap = append(r.bufSnap, p.Data...) })
}

func (r *Replica) restoreBuffers() {
	off := 0
	r.eachBuffer(func(p *nn.Param) { off += copy(p.Data, r.bufSnap[off:]) })
}

func (r *Replica) syncBuffers(ctx context.Context, comm allreduce.Communicator) error {
	if comm.Size() == 1 || len(r.bufSnap) == 0 {
		return nil
	}
	flat := r.bufSnap[:0]
	r.eachBuffer(func(p *nn.Param) { flat = append(flat, p.Data...) })
	if err := comm.Broadcast(ctx, flat, 0); err != nil {
		return err
	}
	off := 0
	r.eachBuffer(func(p *nn.Param) { off += copy(p.Data, flat[off:]) })
	return nil
}

// Checksum hashes weights, buffers and the position: equal on every
// replica of a healthy ring.
func (r *Replica) Checksum() uint64 {
	h := fnv.New64a()
	var b [4]byte
	for _, p := range r.Model.State {
		for _, v := range p.Data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
	}
	fmt.Fprintf(h, "%d/%d/%d/%d", r.Step, r.Pos.Epoch, r.Pos.Done, r.Pos.Seed)
	return h.Sum64()
}

// ErrDiverged: replicas of one ring hold different weights, buffers or data
// positions (VerifyReplicas). Retrying cannot help, unlike a failed exchange.
var ErrDiverged = errors.New("replicas diverged")

// VerifyReplicas compares checksums across the ring and fails naming the
// ranks that differ from rank 0, with an error wrapping ErrDiverged. An
// exchange that fails (a peer died, the ring broke) returns the
// Communicator's error instead: it says nothing about the replicas.
func (r *Replica) VerifyReplicas(ctx context.Context, comm allreduce.Communicator) error {
	sums, err := comm.AllGatherUint64(ctx, r.Checksum())
	if err != nil {
		return fmt.Errorf("replica checksum exchange: %w", err)
	}
	var bad []int
	for i, s := range sums {
		if s != sums[0] {
			bad = append(bad, i)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w at step %d: ranks %v differ from rank 0 (weight checksums %x)", ErrDiverged, r.Step, bad, sums)
	}
	return nil
}

// syncHeader travels with the state broadcast when a ring (re)forms.
type syncHeader struct {
	Step     int                  `json:"step"`
	Pos      dataset.SamplerState `json:"pos"`
	OptSteps int                  `json:"opt_steps"`
}

// Sync makes every replica of a new ring generation equal to the most
// advanced one: survivors may differ by one step when a ring broke in the
// middle of an all-reduce, and a joining worker has nothing yet. The
// lowest rank holding the highest step broadcasts weights, buffers,
// optimizer state and data position. It returns the source rank.
func (r *Replica) Sync(ctx context.Context, comm allreduce.Communicator, fresh bool) (int, error) {
	mine := uint64(r.Step + 1)
	if fresh {
		mine = 0 // a joiner never wins, whatever step it was built at
	}
	steps, err := comm.AllGatherUint64(ctx, mine)
	if err != nil {
		return -1, fmt.Errorf("state sync: %w", err)
	}
	root := 0
	for i, s := range steps {
		if s > steps[root] {
			root = i
		}
	}
	if steps[root] == 0 {
		return -1, fmt.Errorf("state sync: no member of ring generation %d holds training state", comm.Generation())
	}
	hdr, _ := json.Marshal(syncHeader{Step: r.Step, Pos: r.Pos, OptSteps: r.Opt.Steps()})
	got, err := comm.BroadcastBytes(ctx, hdr, root)
	if err != nil {
		return -1, fmt.Errorf("state sync header: %w", err)
	}
	var h syncHeader
	if err := json.Unmarshal(got, &h); err != nil {
		return -1, fmt.Errorf("state sync header from rank %d: %w", root, err)
	}
	if err := comm.Broadcast(ctx, r.Model.Data, root); err != nil {
		return -1, fmt.Errorf("state sync weights: %w", err)
	}
	for _, slot := range r.Opt.State() {
		if err := comm.Broadcast(ctx, slot.Data, root); err != nil {
			return -1, fmt.Errorf("state sync optimizer %s: %w", slot.Name, err)
		}
	}
	r.snapshotBuffers()
	if len(r.bufSnap) > 0 {
		if err := comm.Broadcast(ctx, r.bufSnap, root); err != nil {
			return -1, fmt.Errorf("state sync buffers: %w", err)
		}
		r.restoreBuffers()
	}
	r.Step, r.Pos = h.Step, h.Pos
	r.Opt.SetSteps(h.OptSteps)
	return root, nil
}

// Evaluate computes top-1 accuracy over data, sharded across the ring.
func (r *Replica) Evaluate(ctx context.Context, comm allreduce.Communicator, data Source, batch int) (float64, error) {
	st := nn.State{Inference: true, Pool: r.st.Pool}
	world, rank := comm.Size(), comm.Rank()
	n := data.Len()
	lo, hi := rank*n/world, (rank+1)*n/world
	sz := r.Model.In.Size()
	x := make([]float32, batch*sz)
	labels := make([]int32, batch)
	idx := make([]int32, 0, batch)
	correct := 0
	for i := lo; i < hi; i += batch {
		idx = idx[:0]
		for j := i; j < min(i+batch, hi); j++ {
			idx = append(idx, int32(j))
		}
		k := len(idx)
		if err := data.Load(ctx, idx, x[:k*sz], labels[:k]); err != nil {
			return 0, fmt.Errorf("evaluation: %w", err)
		}
		xt := tensor.New(tensor.WithShape(append([]int{k}, r.Model.In...)...), tensor.WithBacking(x[:k*sz]))
		logits, err := r.Model.Forward(&st, xt)
		if err != nil {
			return 0, err
		}
		correct += nn.Correct(logits, labels[:k])
	}
	counts := []float32{float32(correct)}
	if err := comm.AllReduce(ctx, counts, allreduce.Sum); err != nil {
		return 0, fmt.Errorf("evaluation all-reduce: %w", err)
	}
	return float64(counts[0]) / float64(n), nil
}

// EvaluateStream computes top-1 accuracy over a streamed dataset, each rank
// reading its share of every evaluation batch.
func (r *Replica) EvaluateStream(ctx context.Context, comm allreduce.Communicator, data *StreamSource, batch int) (float64, error) {
	world, rank := comm.Size(), comm.Rank()
	s := dataset.Sampler{N: data.Len(), GlobalBatch: batch * world, Last: dataset.Partial}
	feed, err := data.Open(s, dataset.SamplerState{}, world, rank, false)
	if err != nil {
		return 0, fmt.Errorf("evaluation: %w", err)
	}
	defer feed.Close()
	st := nn.State{Inference: true, Pool: r.st.Pool}
	sz := r.Model.In.Size()
	var correct, seen int
	for step := 0; step < s.StepsPerEpoch(); step++ {
		b, err := feed.Next(ctx)
		if err != nil {
			return 0, fmt.Errorf("evaluation: %w", err)
		}
		if b.N > 0 {
			xt := tensor.New(tensor.WithShape(append([]int{b.N}, r.Model.In...)...), tensor.WithBacking(b.X[:b.N*sz]))
			logits, err := r.Model.Forward(&st, xt)
			if err != nil {
				feed.Release(b)
				return 0, err
			}
			correct += nn.Correct(logits, b.Y[:b.N])
			seen += b.N
		}
		feed.Release(b)
	}
	counts := []float32{float32(correct), float32(seen)}
	if err := comm.AllReduce(ctx, counts, allreduce.Sum); err != nil {
		return 0, fmt.Errorf("evaluation all-reduce: %w", err)
	}
	return float64(counts[0]) / float64(max(counts[1], 1)), nil
}
