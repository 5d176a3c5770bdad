package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// Batching samples into one GEMM must not change results: every chunk size
// (1 sample, a partial chunk, the whole batch) gives the same outputs and
// gradients, for im2col and direct 1×1 convolutions, with groups.
func TestConvChunkingInvariant(t *testing.T) {
	cases := []struct {
		cfg  ConvConfig
		h, w int
	}{
		{ConvConfig{In: 4, Out: 6, KH: 3, KW: 3, PadH: 1, PadW: 1, StrideH: 2, StrideW: 2, Groups: 2, Bias: true}, 9, 7},
		{ConvConfig{In: 6, Out: 4, KH: 1, KW: 1, Bias: false}, 9, 7},
		// 32×32: one GEMM per sample by default (≥ perSampleOHW), and
		// batched ones whose 1024·n columns get a padded row stride (matLd).
		{ConvConfig{In: 3, Out: 4, KH: 1, KW: 1}, 32, 32},
		{ConvConfig{In: 3, Out: 4, KH: 3, KW: 3, PadH: 1, PadW: 1}, 32, 32},
	}
	pool := kernels.NewPool(2)
	defer pool.Close()
	for _, tc := range cases {
		cfg, h, w := tc.cfg, tc.h, tc.w
		rng := rand.New(rand.NewPCG(1, 2))
		const n = 5
		x := randDense(rng, n, cfg.In, h, w)
		var ref [3][]float32 // y, dx, dW
		for _, limit := range []int{0, 1, 2 * h * w * 9 * cfg.In, n * h * w * 9 * cfg.In} {
			c := NewConv2D(cfg)
			c.chunkLimit = limit
			if _, err := c.Build(&Builder{}, Shape{cfg.In, h, w}); err != nil {
				t.Fatal(err)
			}
			c.ResetParameters(rand.New(rand.NewPCG(3, 4)))
			s := &State{Train: true, Pool: pool}
			y := c.Forward(s, x)
			dy := randDense(rand.New(rand.NewPCG(5, 6)), y.Shape()...)
			dx := c.Backward(s, dy, true)
			got := [3][]float32{clone(f32(y)), clone(f32(dx)), clone(c.Weight.Grad)}
			if ref[0] == nil {
				ref = got
				continue
			}
			for k, name := range []string{"y", "dx", "dW"} {
				if d := maxRelDiff(got[k], ref[k]); d > 1e-5 {
					t.Errorf("%+v chunk limit %d: %s differs from the unchunked result by %g", cfg, limit, name, d)
				}
			}
		}
	}
}

func randDense(rng *rand.Rand, shape ...int) *tensor.Dense {
	n := 1
	for _, d := range shape {
		n *= d
	}
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(rng.NormFloat64())
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(d))
}

func clone(a []float32) []float32 { return append([]float32(nil), a...) }

func maxRelDiff(a, b []float32) float64 {
	var m, s float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	return m / math.Max(s, 1e-6)
}
