package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReducerBuckets(t *testing.T) {
	segs := []Segment{
		{"conv1.weight", 0, 100}, {"conv1.bias", 100, 10},
		{"fc.weight", 112, 300}, // gap of 2 (padding)
		{"fc.bias", 412, 4},
	}
	tests := []struct {
		name        string
		bucketBytes int
		want        []Bucket
	}{
		{"one bucket", 1 << 20, []Bucket{{Span{0, 416}, []int{3, 2, 1, 0}}}},
		{"one per parameter", 1, []Bucket{
			{Span{412, 4}, []int{3}}, {Span{112, 300}, []int{2}}, {Span{100, 10}, []int{1}}, {Span{0, 100}, []int{0}},
		}},
		{"reverse order, ~1200 bytes", 1200, []Bucket{
			{Span{112, 304}, []int{3, 2}}, {Span{0, 110}, []int{1, 0}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comms := NewMemGroup(1, Options{})
			r, err := NewReducer(comms[0], make([]float32, 420), segs, tt.bucketBytes, nil, Sum)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Buckets(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("buckets = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewReducerErrors(t *testing.T) {
	comms := NewMemGroup(1, Options{})
	arena := make([]float32, 10)
	tests := []struct {
		name string
		segs []Segment
		bb   int
	}{
		{"no segments", nil, 100},
		{"zero bucket", []Segment{{"a", 0, 4}}, 0},
		{"overlap", []Segment{{"a", 0, 4}, {"b", 3, 4}}, 100},
		{"outside arena", []Segment{{"a", 8, 4}}, 100},
		{"unsorted", []Segment{{"a", 5, 2}, {"b", 0, 2}}, 100},
	}
	for _, tt := range tests {
		if _, err := NewReducer(comms[0], arena, tt.segs, tt.bb, nil, Sum); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

// randSegments lays out random parameters with occasional padding gaps.
func randSegments(rng *rand.Rand) ([]Segment, int) {
	var segs []Segment
	off := 0
	for i := 0; i < 1+rng.IntN(30); i++ {
		off += rng.IntN(2) * rng.IntN(4)
		l := rng.IntN(3000)
		segs = append(segs, Segment{Name: fmt.Sprintf("layer%d.weight", i), Offset: off, Len: l})
		off += l
	}
	return segs, off
}

// Property: bucketed reduction with gradients marked ready in a per-rank
// random order equals one all-reduce of the arena after backward, bitwise.
func TestReducerEqualsReduceAfterBackward(t *testing.T) {
	checkNoLeak(t)
	rng := rand.New(rand.NewPCG(13, 14))
	ctx := context.Background()
	for iter := 0; iter < 30; iter++ {
		n := 1 + rng.IntN(5)
		segs, size := randSegments(rng)
		bucketBytes := 4 * (1 + rng.IntN(8000))
		op := []Op{Sum, Avg}[rng.IntN(2)]
		comms := NewMemGroup(n, Options{SubChunkBytes: 512})
		ref := NewMemGroup(n, Options{})
		reducers := make([]*Reducer, n)
		arenas := make([][]float32, n)
		for r := range comms {
			arenas[r] = make([]float32, size)
			var err error
			if reducers[r], err = NewReducer(comms[r], arenas[r], segs, bucketBytes, nil, op); err != nil {
				t.Fatal(err)
			}
		}
		for step := 0; step < 3; step++ {
			in, _ := randInputs(rng, n, size)
			want := make([][]float32, n)
			for r := range want {
				want[r] = append([]float32(nil), in[r]...)
			}
			for r, err := range runAll(ref, func(c Communicator) error { return c.AllReduce(ctx, want[c.Rank()], op) }) {
				if err != nil {
					t.Fatalf("reference rank %d: %v", r, err)
				}
			}
			orders := make([][]int, n)
			for r := range orders {
				// Roughly reverse order, shuffled locally: backward as it happens.
				o := make([]int, len(segs))
				for i := range o {
					o[i] = len(segs) - 1 - i
				}
				for i := range o {
					if j := i + rng.IntN(3); j < len(o) {
						o[i], o[j] = o[j], o[i]
					}
				}
				orders[r] = o
			}
			errs := runAll(comms, func(c Communicator) error {
				r := c.Rank()
				copy(arenas[r], in[r])
				for _, i := range orders[r] {
					reducers[r].GradReady(i)
				}
				return reducers[r].Wait(ctx)
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("n=%d rank %d: %v", n, r, err)
				}
				// Padding between buckets belongs to no parameter: compare segments.
				same := true
				for _, sg := range segs {
					same = same && sameBits(arenas[r][sg.Offset:sg.Offset+sg.Len], want[r][sg.Offset:sg.Offset+sg.Len])
				}
				if !same {
					t.Fatalf("n=%d %v step %d rank %d: bucketed result differs from reducing after backward", n, op, step, r)
				}
			}
		}
		for r := range comms {
			reducers[r].Close()
		}
		closeAll(comms)
		closeAll(ref)
	}
}

// recordingHook lets the test see when a bucket's all-reduce starts.
type recordingHook struct {
	started chan int
	inner   CompressionHook
}

func (h recordingHook) AllReduce(ctx context.Context, c Communicator, b []float32, op Op) error {
	if c.Rank() == 0 {
		h.started <- len(b)
	}
	return h.inner.AllReduce(ctx, c, b, op)
}

// The first bucket's all-reduce starts while "backward" has not yet produced
// the other gradients: communication overlaps computation. With the fp16
// hook, ranks agree bitwise and results are within fp16 tolerance.
func TestReducerOverlapAndFP16Hook(t *testing.T) {
	checkNoLeak(t)
	const n = 3
	segs := []Segment{{"a", 0, 1000}, {"b", 1000, 1000}, {"c", 2000, 1000}}
	comms := NewMemGroup(n, Options{})
	defer closeAll(comms)
	hook := recordingHook{started: make(chan int, 8), inner: FP16Hook{}}
	arenas := make([][]float32, n)
	reducers := make([]*Reducer, n)
	for r := range comms {
		arenas[r] = make([]float32, 3000)
		for i := range arenas[r] {
			arenas[r][i] = float32(r+1) * 0.1 * float32(i%7)
		}
		var err error
		if reducers[r], err = NewReducer(comms[r], arenas[r], segs, 4000, hook, Avg); err != nil {
			t.Fatal(err)
		}
		defer reducers[r].Close()
	}
	var wg sync.WaitGroup
	overlap := make(chan error, 1)
	for r := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reducers[r].GradReady(2) // last layer first: bucket 0 = {c}
			if r == 0 {
				select {
				case l := <-hook.started:
					if l != 1000 {
						overlap <- fmt.Errorf("first bucket has %d floats, want 1000", l)
					}
				case <-time.After(5 * time.Second):
					overlap <- errors.New("bucket 0 did not start before the rest of backward")
				}
				close(overlap)
			}
			reducers[r].GradReady(1)
			reducers[r].GradReady(0)
			if err := reducers[r].Wait(context.Background()); err != nil {
				t.Errorf("rank %d: %v", r, err)
			}
		}()
	}
	wg.Wait()
	if err := <-overlap; err != nil {
		t.Fatal(err)
	}
	for i := range arenas[0] {
		want := float32(0.2) * float32(i%7) // mean of 0.1, 0.2, 0.3 times i%7
		if d := arenas[0][i] - want; d > 2e-3 || d < -2e-3 {
			t.Fatalf("elem %d: %g, want %g", i, arenas[0][i], want)
		}
	}
	for r := 1; r < n; r++ {
		if !sameBits(arenas[r], arenas[0]) {
			t.Fatalf("rank %d differs from rank 0", r)
		}
	}
}

func TestReducerMisuseAndFailure(t *testing.T) {
	checkNoLeak(t)
	segs := []Segment{{"a", 0, 10}, {"b", 10, 10}}
	comms := NewMemGroup(2, Options{Timeout: time.Second})
	r0, _ := NewReducer(comms[0], make([]float32, 20), segs, 1, nil, Sum)
	defer r0.Close()
	r1, _ := NewReducer(comms[1], make([]float32, 20), segs, 1, nil, Sum)
	defer r1.Close()
	errs := runAll(comms, func(c Communicator) error {
		r := []*Reducer{r0, r1}[c.Rank()]
		r.GradReady(1)
		r.GradReady(1)
		return r.Wait(context.Background())
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), `"b" marked ready twice`) {
			t.Fatalf("rank %d: err = %v, want double-ready error", r, err)
		}
	}
	// A dead peer: Wait fails (does not hang) and names the bucket.
	comms[1].Close()
	r0.GradReady(0)
	r0.GradReady(1)
	err := r0.Wait(context.Background())
	if !errors.Is(err, ErrPeerDown) || !strings.Contains(err.Error(), "bucket 0") {
		t.Fatalf("err = %v, want ErrPeerDown naming bucket 0", err)
	}
	closeAll(comms)
}
