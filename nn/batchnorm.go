package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// BatchNorm2D is PyTorch's nn.BatchNorm2d (affine, track_running_stats).
// Training normalises with the batch's biased variance and updates
// running_mean/running_var (unbiased) with Momentum; evaluation uses the
// running statistics. When both affine parameters are frozen the layer uses
// its running statistics in training too, as Keras does for frozen layers.
type BatchNorm2D struct {
	leaf
	C                                   int
	Eps, Momentum                       float32
	Weight, Bias                        *Param
	RunningMean, RunningVar, NumBatches *Param

	out, dx buf
	// Backward recomputes the normalised input x̂ = (x − mean)·invstd from
	// the input itself (which its producer keeps for its own backward) and
	// the statistics forward used, as PyTorch does, instead of keeping x̂:
	// one activation-sized buffer less per layer.
	x            *tensor.Dense
	mean, invstd []float32 // per channel, of the statistics used in forward
	// The current call's slices and sizes, and the per-channel loops over
	// them bound once, so that a step allocates nothing.
	xd, yd, dyd, dxd []float32
	n, hw            int
	fwd, bwd         func(lo, hi int)
	usedBatch        bool     // forward used batch statistics
	params           []*Param // built once: Params is on the backward path
	// reluFwd and reluBwd fuse the in-place ReLU that follows (planned by
	// Sequential.planInPlace): forward rectifies each plane right after
	// normalising it, while it is still in cache, and backward masks each
	// plane of dy by the output before its sums; the ReLU then passes
	// its tensors through. The values are the same as unfused.
	reluFwd, reluBwd bool
	// afterConv: the input is the output of the Conv2D just before it in a
	// Sequential, read by nothing else, so inference (State.Inference: no
	// backward will read it) normalises it in place: a buffer fewer.
	afterConv bool
}

var _ Module = (*BatchNorm2D)(nil)

// NewBatchNorm2D uses PyTorch's defaults: eps 1e-5, momentum 0.1.
func NewBatchNorm2D(c int) *BatchNorm2D {
	b := &BatchNorm2D{C: c, Eps: 1e-5, Momentum: 0.1}
	b.Weight = newParam("weight", Weight, true, c)
	b.Bias = newParam("bias", Weight, true, c)
	b.RunningMean = newParam("running_mean", Buffer, false, c)
	b.RunningVar = newParam("running_var", Buffer, false, c)
	b.NumBatches = newParam("num_batches_tracked", Counter, false)
	b.params = []*Param{b.Weight, b.Bias, b.RunningMean, b.RunningVar, b.NumBatches}
	b.ResetParameters(nil)
	b.mean, b.invstd = make([]float32, c), make([]float32, c)
	return b
}

func (b *BatchNorm2D) Kind() string { return "BatchNorm2D" }

func (b *BatchNorm2D) Params() []*Param { return b.params }

// ResetParameters: weight 1, bias 0, running mean 0, var 1.
func (b *BatchNorm2D) ResetParameters(*rand.Rand) {
	for i := 0; i < b.C; i++ {
		b.Weight.Data[i], b.Bias.Data[i] = 1, 0
		b.RunningMean.Data[i], b.RunningVar.Data[i] = 0, 1
	}
	b.NumBatches.Data[0] = 0
}

func (b *BatchNorm2D) Build(_ *Builder, in Shape) (Shape, error) {
	if len(in) != 3 || in[0] != b.C {
		return nil, fmt.Errorf("BatchNorm2D: input shape %v, layer expects [%d, H, W]", in, b.C)
	}
	return in, nil
}

func (b *BatchNorm2D) frozen() bool { return !b.Weight.Trainable && !b.Bias.Trainable }

// Forward: x [N, C, H, W] -> y [N, C, H, W].
func (b *BatchNorm2D) Forward(s *State, x *tensor.Dense) *tensor.Dense {
	sh := x.Shape()
	n, hw := sh[0], sh[2]*sh[3]
	y := x
	if !s.Inference || !b.afterConv {
		y = b.out.get(n, Shape{b.C, sh[2], sh[3]})
	}
	b.x = x
	b.usedBatch = s.Train && !b.frozen()
	b.xd, b.yd, b.n, b.hw = f32(x), f32(y), n, hw
	if b.fwd == nil {
		b.fwd = b.forwardChannels
	}
	s.Pool.ParallelFor(b.C, b.fwd)
	if b.usedBatch {
		b.NumBatches.Data[0]++
	}
	return y
}

func (b *BatchNorm2D) forwardChannels(lo, hi int) {
	xd, yd, n, hw := b.xd, b.yd, b.n, b.hw
	m := float64(n * hw)
	for c := lo; c < hi; c++ {
		var mean, invstd float64
		if b.usedBatch {
			var sum float64
			for i := 0; i < n; i++ {
				sum += kernels.Sum(xd[(i*b.C+c)*hw : (i*b.C+c+1)*hw])
			}
			mean = sum / m
			var ss float64
			for i := 0; i < n; i++ {
				ss += kernels.SumSqDev(xd[(i*b.C+c)*hw:(i*b.C+c+1)*hw], mean)
			}
			variance := ss / m
			invstd = 1 / math.Sqrt(variance+float64(b.Eps))
			mom := float64(b.Momentum)
			unbiased := variance
			if m > 1 {
				unbiased = ss / (m - 1)
			}
			b.RunningMean.Data[c] = float32((1-mom)*float64(b.RunningMean.Data[c]) + mom*mean)
			b.RunningVar.Data[c] = float32((1-mom)*float64(b.RunningVar.Data[c]) + mom*unbiased)
		} else {
			mean = float64(b.RunningMean.Data[c])
			invstd = 1 / math.Sqrt(float64(b.RunningVar.Data[c])+float64(b.Eps))
		}
		g, be := b.Weight.Data[c], b.Bias.Data[c]
		mf, is := float32(mean), float32(invstd)
		b.mean[c], b.invstd[c] = mf, is
		for i := 0; i < n; i++ {
			off := (i*b.C + c) * hw
			kernels.Normalize(yd[off:off+hw], xd[off:off+hw], mf, is, g, be)
			if b.reluFwd {
				kernels.ReLU(yd[off:off+hw], yd[off:off+hw])
			}
		}
	}
}

// Backward: with batch statistics
// dx = γ·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂)); with running statistics
// dx = γ·invstd·dy. dγ += Σ dy·x̂, dβ += Σ dy.
func (b *BatchNorm2D) Backward(s *State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	sh := dy.Shape()
	n, hw := sh[0], sh[2]*sh[3]
	b.dyd, b.xd, b.dxd, b.n, b.hw = f32(dy), f32(b.x), nil, n, hw
	var dx *tensor.Dense
	if needDx {
		dx = b.dx.get(n, Shape{b.C, sh[2], sh[3]})
		b.dxd = f32(dx)
	}
	if b.bwd == nil {
		b.bwd = b.backwardChannels
	}
	s.Pool.ParallelFor(b.C, b.bwd)
	s.gradDone(b.Weight, b.Bias)
	return dx
}

func (b *BatchNorm2D) backwardChannels(lo, hi int) {
	dyd, xd, dxd, n, hw := b.dyd, b.xd, b.dxd, b.n, b.hw
	needDx := dxd != nil
	m := float32(n * hw)
	for c := lo; c < hi; c++ {
		var sdy, sdyx float64
		mf, is := b.mean[c], b.invstd[c]
		for i := 0; i < n; i++ {
			off := (i*b.C + c) * hw
			if b.reluBwd { // dy is the next conv's input-gradient buffer, passed through the ReLU: mask it in place
				kernels.ReLUBackward(dyd[off:off+hw], dyd[off:off+hw], b.yd[off:off+hw])
			}
			s1, s2 := kernels.BNGradSums(dyd[off:off+hw], xd[off:off+hw], mf, is)
			sdy, sdyx = sdy+s1, sdyx+s2
		}
		if b.Weight.Trainable {
			b.Weight.Grad[c] += float32(sdyx)
		}
		if b.Bias.Trainable {
			b.Bias.Grad[c] += float32(sdy)
		}
		if !needDx {
			continue
		}
		k := b.Weight.Data[c] * is
		if !b.usedBatch {
			for i := 0; i < n; i++ {
				off := (i*b.C + c) * hw
				for j, g := range dyd[off : off+hw] {
					dxd[off+j] = k * g
				}
			}
			continue
		}
		mdy, mdyx := float32(sdy)/m, float32(sdyx)/m
		for i := 0; i < n; i++ {
			off := (i*b.C + c) * hw
			kernels.BNInputGrad(dxd[off:off+hw], dyd[off:off+hw], xd[off:off+hw], mf, is, k, mdy, mdyx)
		}
	}
}
