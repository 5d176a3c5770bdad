package dataset

import (
	"fmt"
	"math/bits"
)

// LastBatch says what happens when the dataset size is not a multiple of
// the global batch.
type LastBatch int

const (
	// Pad fills the last global batch by wrapping around to the start of the
	// epoch's permutation (as PyTorch's DistributedSampler pads): every
	// sample at least once, the first few twice.
	Pad LastBatch = iota
	// Drop leaves out the tail (drop_last=True): every sample at most once.
	Drop
	// Partial keeps a short last batch: every sample exactly once (for
	// evaluation); some ranks may get fewer or no samples in that step.
	Partial
)

func (l LastBatch) String() string {
	switch l {
	case Pad:
		return "pad"
	case Drop:
		return "drop"
	case Partial:
		return "partial"
	}
	return fmt.Sprintf("LastBatch(%d)", int(l))
}

// SamplerState is the whole resume state of a sampler: the position in the
// global sample order. It is independent of the world size.
type SamplerState struct {
	Seed  uint64 `json:"seed"`
	Epoch int    `json:"epoch"`
	// Done counts positions of this epoch's order already handed out.
	Done int `json:"done"`
}

// Sampler is a pure description of how N samples are split into global
// batches: per (seed, epoch) one global order (Order), walked GlobalBatch
// positions per step; at each step the current world splits the global
// batch into contiguous parts (Part). Because the state only counts global
// positions, the world size may change between any two steps and every
// position of the epoch is still handed out exactly once.
type Sampler struct {
	N           int
	GlobalBatch int
	Last        LastBatch
	// Shuffle permutes the order per (seed, epoch); otherwise 0..N-1.
	Shuffle bool
}

// Validate checks the sampler's sizes.
func (s Sampler) Validate() error {
	switch {
	case s.N <= 0:
		return fmt.Errorf("sampler: dataset size %d, want > 0", s.N)
	case s.GlobalBatch <= 0:
		return fmt.Errorf("sampler: global batch %d, want > 0", s.GlobalBatch)
	case s.Last < Pad || s.Last > Partial:
		return fmt.Errorf("sampler: unknown last-batch mode %d", s.Last)
	case s.Last == Drop && s.N < s.GlobalBatch:
		return fmt.Errorf("sampler: drop-last with %d samples < global batch %d leaves nothing", s.N, s.GlobalBatch)
	}
	return nil
}

// EpochLen is the number of positions handed out per epoch.
func (s Sampler) EpochLen() int {
	switch s.Last {
	case Drop:
		return s.N / s.GlobalBatch * s.GlobalBatch
	case Pad:
		return (s.N + s.GlobalBatch - 1) / s.GlobalBatch * s.GlobalBatch
	}
	return s.N
}

// StepsPerEpoch is the number of global batches per epoch.
func (s Sampler) StepsPerEpoch() int {
	return (s.EpochLen() + s.GlobalBatch - 1) / s.GlobalBatch
}

// Order returns the epoch's global order of sample indices, EpochLen long
// (padded by wrap-around in Pad mode). dst is reused when large enough.
func (s Sampler) Order(seed uint64, epoch int, dst []int32) []int32 {
	n := s.EpochLen()
	if cap(dst) < max(n, s.N) {
		dst = make([]int32, max(n, s.N))
	}
	dst = dst[:max(n, s.N)]
	if s.Shuffle {
		Permutation(seed, epoch, dst[:s.N])
	} else {
		for i := range s.N {
			dst[i] = int32(i)
		}
	}
	for i := s.N; i < n; i++ {
		dst[i] = dst[(i-s.N)%s.N]
	}
	return dst[:n]
}

// Part is rank's contiguous range [lo, hi) of global positions for the step
// that starts at st.Done, with world ranks sharing the global batch as
// evenly as possible (the first GlobalBatch%world ranks get one more).
// In the short last step of Partial mode the parts shrink accordingly.
func (s Sampler) Part(st SamplerState, world, rank int) (lo, hi int) {
	size := min(s.GlobalBatch, s.EpochLen()-st.Done)
	q, r := size/world, size%world
	lo = st.Done + rank*q + min(rank, r)
	hi = lo + q
	if rank < r {
		hi++
	}
	return lo, hi
}

// Next is the state after the step that starts at st (the same on every
// rank); it moves to the next epoch after the last step.
func (s Sampler) Next(st SamplerState) SamplerState {
	st.Done += min(s.GlobalBatch, s.EpochLen()-st.Done)
	if st.Done >= s.EpochLen() {
		st.Epoch++
		st.Done = 0
	}
	return st
}

// CheckState reports whether st can be resumed by this sampler.
func (s Sampler) CheckState(st SamplerState) error {
	if st.Epoch < 0 || st.Done < 0 || st.Done >= s.EpochLen() {
		return fmt.Errorf("sampler state %+v: done must be in [0,%d) for %d samples, global batch %d, %s",
			st, s.EpochLen(), s.N, s.GlobalBatch, s.Last)
	}
	return nil
}

// CheckWorld reports whether rank/world is a valid member.
func CheckWorld(world, rank int) error {
	if world <= 0 || rank < 0 || rank >= world {
		return fmt.Errorf("sampler: rank %d of world %d is not a member", rank, world)
	}
	return nil
}

// Permutation fills dst with a permutation of 0..len(dst)-1 that depends
// only on (seed, epoch). The PRNG, for reimplementation elsewhere:
//
//	state = SplitMix64 mix of seed, then of (state ^ epoch)
//	next() = SplitMix64 step: state += 0x9E3779B97F4A7C15; z = state;
//	         z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB;
//	         return z ^ z>>31
//	bounded(n): Lemire's multiply-shift with rejection on the 64-bit product
//	Fisher–Yates: dst[i] = i; for i = n-1 down to 1: j = bounded(i+1); swap(dst[i], dst[j])
func Permutation(seed uint64, epoch int, dst []int32) {
	for i := range dst {
		dst[i] = int32(i)
	}
	r := splitmix{s: mix64(mix64(seed) ^ uint64(epoch))}
	for i := len(dst) - 1; i > 0; i-- {
		j := r.bounded(uint64(i + 1))
		dst[i], dst[j] = dst[j], dst[i]
	}
}

func mix64(z uint64) uint64 {
	z += 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

type splitmix struct{ s uint64 }

func (r *splitmix) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

// bounded returns a uniform value in [0, n) (Lemire 2019).
func (r *splitmix) bounded(n uint64) uint64 {
	hi, lo := bits.Mul64(r.next(), n)
	if lo < n {
		t := -n % n
		for lo < t {
			hi, lo = bits.Mul64(r.next(), n)
		}
	}
	return hi
}

// float64 returns a uniform value in [0, 1).
func (r *splitmix) float64() float64 { return float64(r.next()>>11) / (1 << 53) }
