package kernels

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestParallelForCoversRangeOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 5} {
		p := NewPool(threads)
		for _, n := range []int{0, 1, 2, 3, 7, 100} {
			hits := make([]int32, n)
			var calls atomic.Int32
			p.ParallelFor(n, func(lo, hi int) {
				calls.Add(1)
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&hits[i], 1)
				}
			})
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("threads=%d n=%d: index %d covered %d times", threads, n, i, h)
				}
			}
			if c := int(calls.Load()); c > threads || (n > 0 && c == 0) {
				t.Fatalf("threads=%d n=%d: f called %d times", threads, n, c)
			}
		}
		p.Close()
	}
}

func TestParallelForZeroAllocs(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	var sum atomic.Int64
	f := func(lo, hi int) { sum.Add(int64(hi - lo)) }
	p.ParallelFor(64, f)
	if allocs := testing.AllocsPerRun(50, func() { p.ParallelFor(64, f) }); allocs != 0 {
		t.Errorf("ParallelFor: %v allocs per call, want 0", allocs)
	}
}

func TestSpinDuration(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want time.Duration
	}{
		{"", 200 * time.Microsecond},
		{"0", 0},
		{"1ms", time.Millisecond},
		{"50us", 50 * time.Microsecond},
		{"-1ms", 200 * time.Microsecond}, // invalid: the default, with a warning
		{"fast", 200 * time.Microsecond},
	} {
		if got := spinDuration(tt.env); got != tt.want {
			t.Errorf("spinDuration(%q) = %v, want %v", tt.env, got, tt.want)
		}
	}
}

// TestPoolWithoutSpin: with spinning off, parts still all run and join.
func TestPoolWithoutSpin(t *testing.T) {
	old := spinFor
	spinFor = 0
	defer func() { spinFor = old }()
	p := NewPool(3)
	defer p.Close()
	for it := 0; it < 100; it++ {
		var hits [97]int32
		p.ParallelFor(len(hits), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				hits[i]++
			}
		})
		for i, h := range hits {
			if h != 1 {
				t.Fatalf("iteration %d: index %d ran %d times", it, i, h)
			}
		}
	}
}
