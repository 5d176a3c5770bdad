package dataset

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSamplerTable(t *testing.T) {
	for _, tc := range []struct {
		s             Sampler
		epochLen, spe int
	}{
		{Sampler{N: 10, GlobalBatch: 4, Last: Pad}, 12, 3},
		{Sampler{N: 10, GlobalBatch: 4, Last: Drop}, 8, 2},
		{Sampler{N: 10, GlobalBatch: 4, Last: Partial}, 10, 3},
		{Sampler{N: 8, GlobalBatch: 4, Last: Pad}, 8, 2},
		{Sampler{N: 3, GlobalBatch: 8, Last: Pad}, 8, 1},
		{Sampler{N: 3, GlobalBatch: 8, Last: Partial}, 3, 1},
	} {
		if err := tc.s.Validate(); err != nil {
			t.Fatal(err)
		}
		if tc.s.EpochLen() != tc.epochLen || tc.s.StepsPerEpoch() != tc.spe {
			t.Errorf("%+v: EpochLen %d Steps %d, want %d %d", tc.s, tc.s.EpochLen(), tc.s.StepsPerEpoch(), tc.epochLen, tc.spe)
		}
	}
	// Unshuffled, padded like PyTorch: wrap-around to the start.
	s := Sampler{N: 3, GlobalBatch: 8, Last: Pad}
	if got := s.Order(0, 0, nil); !slices.Equal(got, []int32{0, 1, 2, 0, 1, 2, 0, 1}) {
		t.Errorf("pad order = %v", got)
	}
	// Parts of a 10-sample global batch over 4 ranks: 3,3,2,2 contiguous.
	s = Sampler{N: 100, GlobalBatch: 10, Last: Drop}
	st := SamplerState{Done: 20}
	want := [][2]int{{20, 23}, {23, 26}, {26, 28}, {28, 30}}
	for r := range 4 {
		if lo, hi := s.Part(st, 4, r); lo != want[r][0] || hi != want[r][1] {
			t.Errorf("Part rank %d = [%d,%d), want %v", r, lo, hi, want[r])
		}
	}
	// Short last step of Partial: 2 left for 4 ranks -> 1,1,0,0.
	s = Sampler{N: 10, GlobalBatch: 4, Last: Partial}
	st = SamplerState{Done: 8}
	var sizes []int
	for r := range 4 {
		lo, hi := s.Part(st, 4, r)
		sizes = append(sizes, hi-lo)
	}
	if !slices.Equal(sizes, []int{1, 1, 0, 0}) {
		t.Errorf("partial last parts = %v", sizes)
	}
	if nx := s.Next(st); nx != (SamplerState{Epoch: 1}) {
		t.Errorf("Next at end of epoch = %+v", nx)
	}
	for _, bad := range []Sampler{{N: 0, GlobalBatch: 1}, {N: 1, GlobalBatch: 0}, {N: 3, GlobalBatch: 4, Last: Drop}, {N: 3, GlobalBatch: 1, Last: 7}} {
		if bad.Validate() == nil {
			t.Errorf("%+v: Validate accepted", bad)
		}
	}
	if (Sampler{N: 10, GlobalBatch: 4}).CheckState(SamplerState{Done: 12}) == nil {
		t.Error("CheckState accepted done past the epoch")
	}
}

// The documented PRNG is pinned (values from a Python reimplementation): changing it silently would change every
// resumed run's data order.
func TestPermutationPinned(t *testing.T) {
	got := make([]int32, 10)
	Permutation(42, 3, got)
	want := []int32{6, 2, 0, 7, 8, 3, 9, 5, 4, 1} // from an independent Python implementation of the doc comment
	if !slices.Equal(got, want) {
		t.Errorf("Permutation(42,3,10) = %v, want %v", got, want)
	}
}

func TestPermutationIsPermutation(t *testing.T) {
	for n := range 50 {
		p := make([]int32, n)
		Permutation(uint64(n), n, p)
		q := slices.Clone(p)
		slices.Sort(q)
		for i := range q {
			if q[i] != int32(i) {
				t.Fatalf("n=%d: not a permutation: %v", n, p)
			}
		}
	}
	a, b := make([]int32, 100), make([]int32, 100)
	Permutation(1, 0, a)
	Permutation(1, 1, b)
	if slices.Equal(a, b) {
		t.Error("epochs 0 and 1 give the same order")
	}
	Permutation(2, 0, b)
	if slices.Equal(a, b) {
		t.Error("seeds 1 and 2 give the same order")
	}
	Permutation(1, 0, b)
	if !slices.Equal(a, b) {
		t.Error("not deterministic")
	}
}

// Property: whatever the world size at each step (1..8, changing between
// and within epochs) and wherever the run stops and resumes from its tiny
// state, each epoch hands out exactly its order: Partial every sample once,
// Drop distinct samples, Pad every sample with EpochLen-N repeats.
func TestSamplerCoverageProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	trials := 300
	if testing.Short() {
		trials = 60
	}
	for trial := range trials {
		s := Sampler{N: 1 + rng.IntN(120), GlobalBatch: 1 + rng.IntN(40), Last: LastBatch(rng.IntN(3)), Shuffle: rng.IntN(4) != 0}
		if s.Validate() != nil {
			continue
		}
		seed := rng.Uint64()
		st := SamplerState{Seed: seed, Epoch: rng.IntN(3)}
		startEpoch := st.Epoch
		name := fmt.Sprintf("trial %d %+v", trial, s)
		for ep := startEpoch; ep < startEpoch+3; ep++ {
			seen := make([]int, s.N)
			total := 0
			world := 1 + rng.IntN(8)
			for st.Epoch == ep {
				if rng.IntN(3) == 0 { // membership change
					world = 1 + rng.IntN(8)
				}
				if rng.IntN(5) == 0 { // "crash": resume from the serialized state only
					blob, err := json.Marshal(st)
					if err != nil {
						t.Fatal(err)
					}
					st = SamplerState{}
					if err := json.Unmarshal(blob, &st); err != nil {
						t.Fatal(err)
					}
					if err := s.CheckState(st); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
				// Every rank recomputes the order independently.
				covered := st.Done
				for r := range world {
					order := s.Order(st.Seed, st.Epoch, nil)
					lo, hi := s.Part(st, world, r)
					if lo != covered {
						t.Fatalf("%s: rank %d part starts at %d, want %d", name, r, lo, covered)
					}
					covered = hi
					for _, i := range order[lo:hi] {
						seen[i]++
						total++
					}
				}
				if covered != st.Done+min(s.GlobalBatch, s.EpochLen()-st.Done) {
					t.Fatalf("%s: step covered up to %d", name, covered)
				}
				st = s.Next(st)
			}
			if total != s.EpochLen() {
				t.Fatalf("%s epoch %d: %d samples, want %d", name, ep, total, s.EpochLen())
			}
			twice := 0
			for i, c := range seen {
				switch {
				case s.Last == Partial && c != 1,
					s.Last == Drop && c > 1,
					s.Last == Pad && (c < 1 || c > 1+(s.EpochLen()-1)/s.N):
					t.Fatalf("%s epoch %d: sample %d seen %d times", name, ep, i, c)
				}
				twice += max(c-1, 0)
			}
			if s.Last == Pad && twice != s.EpochLen()-s.N {
				t.Fatalf("%s: %d repeats, want %d", name, twice, s.EpochLen()-s.N)
			}
		}
	}
}

// Resuming with another world size gives the same global sequence as an
// uninterrupted run: the samples of a step do not depend on who takes them.
func TestSamplerResumeSameSequence(t *testing.T) {
	s := Sampler{N: 1000, GlobalBatch: 48, Last: Pad, Shuffle: true}
	run := func(worldAt func(step int) int, steps int) []int32 {
		var out []int32
		st := SamplerState{Seed: 9}
		for step := range steps {
			w := worldAt(step)
			order := s.Order(st.Seed, st.Epoch, nil)
			for r := range w {
				lo, hi := s.Part(st, w, r)
				out = append(out, order[lo:hi]...)
			}
			st = s.Next(st)
		}
		return out
	}
	a := run(func(int) int { return 4 }, 50)
	b := run(func(step int) int { return 1 + step%8 }, 50)
	if !slices.Equal(a, b) {
		t.Error("global sequence depends on the world size")
	}
}

func BenchmarkOrder(b *testing.B) {
	b.ReportAllocs()
	s := Sampler{N: 1281167, GlobalBatch: 256, Shuffle: true}
	buf := s.Order(0, 0, nil)
	for i := 0; b.Loop(); i++ {
		buf = s.Order(0, i, buf)
	}
}
