package kernels

import "math"

// Elementwise and reduction loops that the layers run on every activation.
// The ReLU loops are branch-free because the obvious ones mispredict on
// half of all elements (random signs): ReLUBackward is 3.9× faster than
// `if y > 0` (BenchmarkReLUBackward). Callers split large slices over a
// pool with (*Pool).ForElems.

// elemGrain is the smallest slice ForElems hands to one thread: below it,
// waking a second thread costs more than it saves.
const elemGrain = 1 << 14

// ForElems runs f over [0, n) split into contiguous ranges, one per pool
// thread, when n is large enough to be worth it. Like ParallelFor it
// allocates nothing itself; a caller that wants no allocation at all binds
// f once (a closure over fields) instead of per call.
func (p *Pool) ForElems(n int, f func(lo, hi int)) {
	p.parallel(n, max(1, min(p.Threads(), n/elemGrain)), f)
}

// ReLU writes max(x, 0) to y; y may alias x. NaN stays NaN (as PyTorch).
func ReLU(y, x []float32) {
	y = y[:len(x)]
	i := 0
	if n := len(x) &^ 7; vecOK && n > 0 {
		reluVec(&y[0], &x[0], n)
		i = n
	}
	for ; i < len(x); i++ {
		y[i] = math.Float32frombits(reluBits(math.Float32bits(x[i])))
	}
}

// reluBits clears a float's bits when it is negative (−0 included) but not
// NaN, without a branch: the sign bit smeared over the word selects the
// negatives, and 0x7f800000 − |b| is negative exactly for NaNs.
func reluBits(b uint32) uint32 {
	neg := uint32(int32(b) >> 31)
	nan := uint32(int32(0x7f800000-b&0x7fffffff) >> 31)
	return b &^ (neg &^ nan)
}

// ReLUBackward writes dy where y > 0 and 0 elsewhere, y being ReLU's output
// (never negative); dx may alias dy.
func ReLUBackward(dx, dy, y []float32) {
	dx, y = dx[:len(dy)], y[:len(dy)]
	i := 0
	if n := len(dy) &^ 7; vecOK && n > 0 {
		reluBackwardVec(&dx[0], &dy[0], &y[0], n)
		i = n
	}
	for ; i < len(dy); i++ {
		g, b := dy[i], math.Float32bits(y[i])
		// y > 0 ⇔ 0 < b ≤ +Inf's bits, as unsigned numbers (NaN and the
		// negatives lie above; NaN passes no gradient, as in PyTorch). In
		// 64 bits, 0 − b and +Inf − b wrap to a set top bit exactly when
		// b > 0 and b > +Inf.
		keep := (-uint64(b) &^ (0x7f800000 - uint64(b))) >> 63
		mask := uint32(-keep)
		dx[i] = math.Float32frombits(math.Float32bits(g) & mask)
	}
}

// Add writes a + b to dst; dst may alias a or b.
func Add(dst, a, b []float32) {
	dst, b = dst[:len(a)], b[:len(a)]
	i := 0
	if n := len(a) &^ 7; vecOK && n > 0 {
		addVec(&dst[0], &a[0], &b[0], n)
		i = n
	}
	for ; i < len(a); i++ {
		dst[i] = a[i] + b[i]
	}
}

// AddReLU writes max(a + b, 0) to dst (a residual join followed by its
// ReLU, in one pass); dst may alias a or b.
func AddReLU(dst, a, b []float32) {
	dst, b = dst[:len(a)], b[:len(a)]
	for i, v := range a {
		dst[i] = math.Float32frombits(reluBits(math.Float32bits(v + b[i])))
	}
}

// Sum returns Σx accumulated in float64, as PyTorch's CPU batch norm does
// for float32 data.
func Sum(x []float32) float64 {
	var s float64
	i := 0
	if n := len(x) &^ 7; vecOK && n > 0 {
		s, i = sumVec(&x[0], n), n
	}
	for ; i < len(x); i++ {
		s += float64(x[i])
	}
	return s
}

// SumSqDev returns Σ(x − mean)² in float64.
func SumSqDev(x []float32, mean float64) float64 {
	var s float64
	i := 0
	if n := len(x) &^ 7; vecOK && n > 0 {
		s, i = sumSqDevVec(&x[0], n, mean), n
	}
	for ; i < len(x); i++ {
		d := float64(x[i]) - mean
		s += d * d
	}
	return s
}

// The batch-norm loops over one channel's plane of one sample. x̂ is
// always (x − mean)·invstd rounded to float32, the same expression in
// every pass, so forward and backward agree on it. Explicit float32
// conversions keep the compiler from fusing a multiply and an add (as it
// may with GOAMD64=v3), so the AVX2 loops, which round after each
// operation, give bitwise the same results.

// Normalize writes y = x̂·gamma + beta; y may alias x.
func Normalize(y, x []float32, mean, invstd, gamma, beta float32) {
	y = y[:len(x)]
	i := 0
	if n := len(x) &^ 7; vecOK && n > 0 {
		normalizeVec(&y[0], &x[0], n, mean, invstd, gamma, beta)
		i = n
	}
	for ; i < len(x); i++ {
		h := (x[i] - mean) * invstd
		y[i] = float32(h*gamma) + beta
	}
}

// BNGradSums returns Σdy and Σdy·x̂, accumulated in float64.
func BNGradSums(dy, x []float32, mean, invstd float32) (sdy, sdyx float64) {
	x = x[:len(dy)]
	i := 0
	if n := len(dy) &^ 7; vecOK && n > 0 {
		sdy, sdyx = bnGradSumsVec(&dy[0], &x[0], n, mean, invstd)
		i = n
	}
	for ; i < len(dy); i++ {
		h := (x[i] - mean) * invstd
		sdy += float64(dy[i])
		sdyx += float64(dy[i]) * float64(h)
	}
	return sdy, sdyx
}

// BNInputGrad writes dx = k·(dy − mdy − x̂·mdyx), batch norm's input
// gradient with batch statistics (k = γ·invstd, mdy = Σdy/M,
// mdyx = Σdy·x̂/M); dx may alias dy.
func BNInputGrad(dx, dy, x []float32, mean, invstd, k, mdy, mdyx float32) {
	dx, x = dx[:len(dy)], x[:len(dy)]
	i := 0
	if n := len(dy) &^ 7; vecOK && n > 0 {
		bnInputGradVec(&dx[0], &dy[0], &x[0], n, mean, invstd, k, mdy, mdyx)
		i = n
	}
	for ; i < len(dy); i++ {
		h := (x[i] - mean) * invstd
		dx[i] = k * (dy[i] - mdy - float32(h*mdyx))
	}
}

// SGDMomentum is torch.optim.SGD's update with a momentum buffer b that
// already holds a step (not the first, not Nesterov):
// d = g (+ wd·w when decay); b = mu·b + damp·d; w −= lr·b.
func SGDMomentum(w, g, b []float32, wd, mu, damp, lr float32, decay bool) {
	g, b = g[:len(w)], b[:len(w)]
	i := 0
	if n := len(w) &^ 7; vecOK && n > 0 {
		sgdMomentumVec(&w[0], &g[0], &b[0], n, wd, mu, damp, lr, decay)
		i = n
	}
	for ; i < len(w); i++ {
		d := g[i]
		if decay {
			d += float32(wd * w[i])
		}
		b[i] = float32(mu*b[i]) + float32(damp*d)
		w[i] -= float32(lr * b[i])
	}
}

// MaxTap is one tap of a max pooling swept over a row of outputs, src
// holding each output's input for this tap (contiguous: a stride-1 row, or
// one phase of a stride-2 row deinterleaved): for each i, where
// src[i] > best[i] it sets arg[i] = idx0 + i·step; best[i] becomes the
// larger of the two. It reports whether src held a NaN, whose windows the
// caller must then redo by PyTorch's rule (the last NaN wins): best is not
// meaningful for them.
func MaxTap(best []float32, arg []int32, src []float32, idx0, step int32) (nan bool) {
	best, arg = best[:len(src)], arg[:len(src)]
	i := 0
	if n := len(src) &^ 7; vecOK && n > 0 {
		nan, i = maxTapVec(&best[0], &arg[0], &src[0], n, idx0, step), n
	}
	for ; i < len(src); i++ {
		v := src[i]
		if v > best[i] {
			arg[i] = idx0 + int32(i)*step
		}
		if v != v {
			nan = true
		}
		best[i] = max(best[i], v)
	}
	return nan
}
