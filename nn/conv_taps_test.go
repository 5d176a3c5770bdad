package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// TestConvDeadTapsMatchFullKernel: a convolution whose border taps only see
// padding (3×3 on 1×1 maps, 5×5 on 2×2, strided and dilated ones) runs with
// the live taps only; its output, input gradient and weight gradient must
// equal the full kernel's (computed with the reduction switched off).
func TestConvDeadTapsMatchFullKernel(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 4))
	cases := []struct {
		cfg  ConvConfig
		h, w int
	}{
		{ConvConfig{In: 8, Out: 6, KH: 3, KW: 3, PadH: 1, PadW: 1, Bias: true}, 1, 1},
		{ConvConfig{In: 4, Out: 5, KH: 5, KW: 5, PadH: 2, PadW: 2}, 2, 2},
		{ConvConfig{In: 4, Out: 4, KH: 3, KW: 3, PadH: 1, PadW: 1, StrideH: 2, StrideW: 2}, 2, 2},
		{ConvConfig{In: 3, Out: 4, KH: 3, KW: 5, PadH: 1, PadW: 2}, 1, 3},
		{ConvConfig{In: 4, Out: 6, KH: 3, KW: 3, PadH: 2, PadW: 2, DilH: 2, DilW: 2, Groups: 2}, 2, 1},
		{ConvConfig{In: 6, Out: 6, KH: 3, KW: 3, PadH: 1, PadW: 1, Groups: 3}, 1, 1},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%dx%d_k%dx%d_in%dx%d", tc.cfg.KH, tc.cfg.KW, tc.cfg.PadH, tc.cfg.PadW, tc.h, tc.w), func(t *testing.T) {
			const n = 3
			live, full := NewConv2D(tc.cfg), NewConv2D(tc.cfg)
			in := Shape{tc.cfg.In, tc.h, tc.w}
			if _, err := live.Build(nil, in); err != nil {
				t.Fatal(err)
			}
			if _, err := full.Build(nil, in); err != nil {
				t.Fatal(err)
			}
			if live.taps.w == nil {
				t.Fatalf("geometry %+v: expected dead taps", live.geom)
			}
			// Switch the reduction off in full: the whole kernel, im2col over padding.
			cfg := full.cfg
			full.geom = kernelGeom(cfg, tc.h, tc.w)
			full.taps, full.direct = taps{}, false
			full.unf.tab, _ = kernels.NewUnfoldTable(full.geom)
			live.ResetParameters(rng)
			copy(full.Weight.Data, live.Weight.Data)
			if live.Bias != nil {
				copy(full.Bias.Data, live.Bias.Data)
			}
			x := tensor.New(tensor.WithShape(n, tc.cfg.In, tc.h, tc.w), tensor.WithBacking(randFloats(rng, n*in.Size())))
			s := &State{Train: true}
			yl := live.Forward(s, x)
			yf := full.Forward(s, x)
			closeSlices(t, "y", f32(yl), f32(yf))
			dy := tensor.New(tensor.WithShape(yl.Shape()...), tensor.WithBacking(randFloats(rng, yl.Shape().TotalSize())))
			dxl := live.Backward(s, dy, true)
			dxf := full.Backward(s, dy, true)
			closeSlices(t, "dx", f32(dxl), f32(dxf))
			closeSlices(t, "dW", live.Weight.Grad, full.Weight.Grad)
		})
	}
}

func kernelGeom(cfg ConvConfig, h, w int) kernels.ConvGeom {
	return kernels.NewConvGeom(cfg.In/cfg.Groups, h, w, cfg.KH, cfg.KW, cfg.StrideH, cfg.StrideW, cfg.PadH, cfg.PadW, cfg.DilH, cfg.DilW)
}

func randFloats(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

func closeSlices(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %v, full kernel %v", what, i, got[i], want[i])
		}
	}
}
