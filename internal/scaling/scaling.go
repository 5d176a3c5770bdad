// Package scaling is a pure model of synchronous data-parallel training
// over a bandwidth-optimal ring all-reduce (Patarasuk & Yuan; Baidu's
// ring; NCCL/Gloo/Horovod). It predicts the step time of n workers and the
// weak-scaling efficiency (per-worker batch fixed):
//
//	ring(b)  = 2(n−1)/n · b / bandwidth + 2(n−1) · latency
//	comm     = ring over the gradients, bucket by bucket
//	exposed  = max(ring(last bucket), comm − overlap · backward)
//	step     = compute + update + exposed
//	eff      = (compute + update) / step
//
// Buckets are reduced in reverse layer order while backward still runs, so
// communication can hide behind the backward pass (DDP, Horovod tensor
// fusion); the bucket holding the first layers is ready only when backward
// ends and can never hide. It has no clock, no I/O: a function of its
// inputs, with table tests.
package scaling

import (
	"errors"
	"fmt"
	"math"
)

// Workload is one worker's share of a training step.
type Workload struct {
	// ComputeSec is one worker's forward+backward time per step (seconds).
	ComputeSec float64
	// BackwardFrac is the part of ComputeSec spent in backward (≈2/3 for
	// CNNs: backward computes two gradients per layer, forward one).
	BackwardFrac float64
	// Overlap is the fraction of backward that can hide communication
	// (0: reduce after backward; 1: every bucket's transfer can run
	// behind the rest of backward).
	Overlap float64
	// GradBytes is the size of the gradients on the wire per step
	// (params × 4 for fp32, × 2 for fp16).
	GradBytes float64
	// Buckets is how many all-reduces the gradients are split into
	// (each pays the ring's latency term); 0 or 1 means one.
	Buckets int
	// UpdateSec is per-step time that nothing overlaps and one worker
	// pays too: the optimizer update, the BN buffer broadcast.
	UpdateSec float64
}

// Link is the network between neighbours of the ring.
type Link struct {
	// BytesPerSec is the bandwidth of one ring hop in one direction.
	BytesPerSec float64
	// LatencySec is the cost of one message (one ring step).
	LatencySec float64
}

// Gbit returns a Link of gbps Gbit/s with the given per-message latency.
func Gbit(gbps, latencySec float64) Link {
	return Link{BytesPerSec: gbps * 1e9 / 8, LatencySec: latencySec}
}

// Prediction is what the model says about one world size.
type Prediction struct {
	World      int
	CommSec    float64 // all-reduce time of every bucket, back to back
	ExposedSec float64 // the part of CommSec not hidden behind backward
	StepSec    float64 // compute + update + exposed communication
	Efficiency float64 // one worker's step / StepSec (weak scaling)
	// Speedup is throughput relative to one worker: World · Efficiency.
	Speedup float64
}

// Validate checks a workload.
func (w Workload) Validate() error {
	switch {
	case !(w.ComputeSec > 0):
		return fmt.Errorf("scaling: compute time %g s, want > 0", w.ComputeSec)
	case w.BackwardFrac < 0 || w.BackwardFrac > 1:
		return fmt.Errorf("scaling: backward fraction %g outside [0,1]", w.BackwardFrac)
	case w.Overlap < 0 || w.Overlap > 1:
		return fmt.Errorf("scaling: overlap %g outside [0,1]", w.Overlap)
	case w.GradBytes < 0:
		return fmt.Errorf("scaling: gradient bytes %g < 0", w.GradBytes)
	case w.UpdateSec < 0:
		return fmt.Errorf("scaling: update time %g s < 0", w.UpdateSec)
	case w.Buckets < 0:
		return fmt.Errorf("scaling: %d buckets", w.Buckets)
	}
	return nil
}

// Validate checks a link.
func (l Link) Validate() error {
	if !(l.BytesPerSec > 0) || l.LatencySec < 0 {
		return fmt.Errorf("scaling: link of %g B/s and %g s latency", l.BytesPerSec, l.LatencySec)
	}
	return nil
}

// RingSec is the time of one ring all-reduce of bytes over n workers:
// reduce-scatter plus all-gather, 2(n−1) steps each moving bytes/n.
func RingSec(n int, bytes float64, l Link) float64 {
	if n <= 1 {
		return 0
	}
	k := float64(n - 1)
	return 2*k/float64(n)*bytes/l.BytesPerSec + 2*k*l.LatencySec
}

// Predict models a step of n workers.
func Predict(w Workload, l Link, n int) (Prediction, error) {
	if err := w.Validate(); err != nil {
		return Prediction{}, err
	}
	if err := l.Validate(); err != nil {
		return Prediction{}, err
	}
	if n < 1 {
		return Prediction{}, errors.New("scaling: world size < 1")
	}
	b := max(w.Buckets, 1)
	per := w.GradBytes / float64(b)
	comm := float64(b) * RingSec(n, per, l)
	hide := w.Overlap * w.BackwardFrac * w.ComputeSec
	exposed := math.Max(0, comm-hide)
	if w.Overlap > 0 && b > 1 {
		// The first layers' bucket is complete only when backward ends.
		exposed = math.Max(exposed, RingSec(n, per, l))
	}
	solo := w.ComputeSec + w.UpdateSec // the step of one worker
	step := solo + exposed
	eff := solo / step
	return Prediction{World: n, CommSec: comm, ExposedSec: exposed, StepSec: step, Efficiency: eff, Speedup: float64(n) * eff}, nil
}

// MaxWorldAt returns the largest world size up to limit whose efficiency
// is at least target (0 if even 2 workers fall short).
func MaxWorldAt(w Workload, l Link, target float64, limit int) (int, error) {
	best := 0
	for n := 2; n <= limit; n++ {
		p, err := Predict(w, l, n)
		if err != nil {
			return 0, err
		}
		if p.Efficiency >= target {
			best = n
		}
	}
	return best, nil
}
