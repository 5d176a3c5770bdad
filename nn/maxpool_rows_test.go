package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMaxPoolRowsMatchWindows: the row-sweeping forward against the
// per-window loop (PyTorch's rule as written), bit for bit, on data full of
// ties, signed zeros, infinities and NaNs, over kernels, strides, padding
// and ceil mode.
func TestMaxPoolRowsMatchWindows(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	pick := []float32{0, float32(math.Copysign(0, -1)), 1, 1, -1, 2, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}
	for it := 0; it < 300; it++ {
		k := 1 + rng.IntN(4)
		cfg := PoolConfig{KH: k, KW: 1 + rng.IntN(4), StrideH: 1 + rng.IntN(3), StrideW: 1 + rng.IntN(3), CeilMode: rng.IntN(2) == 0}
		cfg.PadH, cfg.PadW = rng.IntN(cfg.KH/2+1), rng.IntN(cfg.KW/2+1)
		in := Shape{2, 1 + rng.IntN(9), 1 + rng.IntN(40)} // rows past 8: the vector loop
		m := NewMaxPool(cfg)
		if _, err := m.Build(nil, in); err != nil {
			continue
		}
		x := make([]float32, in[0]*in[1]*in[2])
		for i := range x {
			switch rng.IntN(4) {
			case 0:
				x[i] = pick[rng.IntN(len(pick))]
			case 1:
				x[i] = float32(rng.IntN(3)) // ties
			default:
				x[i] = float32(rng.NormFloat64())
			}
		}
		if it%3 == 0 { // most windows without NaN
			for i, v := range x {
				if v != v {
					x[i] = 5
				}
			}
		}
		n := in[0] * m.os[1] * m.os[2]
		run := func(f func(lo, hi int)) ([]float32, []int32) {
			m.io.in, m.io.out = x, make([]float32, n)
			m.argmax = make([]int32, n)
			f(0, in[0])
			return m.io.out, m.argmax
		}
		gy, ga := run(m.forwardPlanes)
		wy, wa := run(m.forwardWindows)
		for i := range wy {
			if math.Float32bits(gy[i]) != math.Float32bits(wy[i]) || ga[i] != wa[i] {
				t.Fatalf("%+v in %v: output %d = %v at %d, per-window loop %v at %d", cfg, in, i, gy[i], ga[i], wy[i], wa[i])
			}
		}
	}
}
