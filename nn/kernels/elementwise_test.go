package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The branch-free loops must agree bit for bit with the obvious ones,
// including the special values.
func TestElementwiseMatchesNaive(t *testing.T) {
	special := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 1e-45, -1e-45, float32(math.Inf(1)), float32(math.Inf(-1)),
		float32(math.NaN()), math.Float32frombits(0xffc00000), math.MaxFloat32, -math.MaxFloat32}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 3, 4, 5, 17, 1000, 3*elemGrain + 7} {
		x := make([]float32, n)
		o := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
			o[i] = float32(rng.NormFloat64())
			if rng.IntN(10) == 0 {
				x[i] = special[rng.IntN(len(special))]
			}
		}
		copy(x, special[:min(n, len(special))])
		y := make([]float32, n)
		ReLU(y, x)
		dx := make([]float32, n)
		ReLUBackward(dx, o, y)
		sum := make([]float32, n)
		AddReLU(sum, x, o)
		var ss float64
		for i, v := range x {
			want := v
			if !(v > 0) && !math.IsNaN(float64(v)) {
				want = 0
			}
			if math.Float32bits(y[i]) != math.Float32bits(want) && !(math.IsNaN(float64(y[i])) && math.IsNaN(float64(want))) {
				t.Fatalf("n=%d ReLU(%v) = %v, want %v", n, v, y[i], want)
			}
			wantDx := float32(0)
			if y[i] > 0 {
				wantDx = o[i]
			}
			if math.Float32bits(dx[i]) != math.Float32bits(wantDx) {
				t.Fatalf("n=%d ReLUBackward(dy=%v, y=%v) = %v, want %v", n, o[i], y[i], dx[i], wantDx)
			}
			ws := max(v+o[i], 0)
			if math.Float32bits(sum[i]) != math.Float32bits(ws) && !(math.IsNaN(float64(sum[i])) && math.IsNaN(float64(ws))) {
				t.Fatalf("n=%d AddReLU(%v, %v) = %v, want %v", n, v, o[i], sum[i], ws)
			}
		}
		// Reductions on finite data, against a plain float64 loop.
		fin := make([]float32, 0, n)
		for _, v := range x {
			if !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) && math.Abs(float64(v)) < 1e30 {
				fin = append(fin, v)
			}
		}
		var fs float64
		for _, v := range fin {
			fs += float64(v)
		}
		mean := fs / float64(max(len(fin), 1))
		for _, v := range fin {
			ss += (float64(v) - mean) * (float64(v) - mean)
		}
		close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12*(1+math.Abs(b)) }
		if got := Sum(fin); !close(got, fs) {
			t.Fatalf("n=%d Sum = %v, want %v", n, got, fs)
		}
		if got := SumSqDev(fin, mean); !close(got, ss) {
			t.Fatalf("n=%d SumSqDev = %v, want %v", n, got, ss)
		}
	}
}

func TestForElemsCoversOnce(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	for _, n := range []int{0, 1, elemGrain, 2*elemGrain + 1, 10*elemGrain + 3} {
		hits := make([]int32, n)
		p.ForElems(n, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				hits[i]++
			}
		})
		for i, h := range hits {
			if h != 1 {
				t.Fatalf("n=%d: element %d visited %d times", n, i, h)
			}
		}
	}
}

func benchData(n int) (x, o []float32) {
	rng := rand.New(rand.NewPCG(3, 4))
	x, o = make([]float32, n), make([]float32, n)
	for i := range x {
		x[i], o[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	return x, o
}

// BenchmarkReLUBackward compares the branch-free loop with the branchy one
// it replaced, on random signs (the case that mispredicts).
func BenchmarkReLUBackward(b *testing.B) {
	x, o := benchData(1 << 20)
	y := make([]float32, len(x))
	ReLU(y, x)
	dx := make([]float32, len(x))
	b.Run("branchfree", func(b *testing.B) {
		b.SetBytes(int64(12 * len(x)))
		for range b.N {
			ReLUBackward(dx, o, y)
		}
	})
	b.Run("branchy", func(b *testing.B) {
		b.SetBytes(int64(12 * len(x)))
		for range b.N {
			for i, g := range o {
				if y[i] > 0 {
					dx[i] = g
				} else {
					dx[i] = 0
				}
			}
		}
	})
}
