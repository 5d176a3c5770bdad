package nn

import (
	"fmt"
	"math"

	"gorgonia.org/tensor"
)

// CrossEntropy is softmax cross-entropy with mean reduction over the batch,
// as F.cross_entropy(logits, labels, label_smoothing=LabelSmoothing).
type CrossEntropy struct {
	LabelSmoothing float32
	prob           []float32
	labels         []int32
	n, k           int
	grad           buf
}

// Forward returns the mean loss of logits [N, K] against labels (N class
// indices in [0, K)) and remembers what Backward needs.
func (l *CrossEntropy) Forward(logits *tensor.Dense, labels []int32) (float32, error) {
	sh := logits.Shape()
	if len(sh) != 2 {
		return 0, fmt.Errorf("cross-entropy: logits shape %v, want [N, K]", sh)
	}
	n, k := sh[0], sh[1]
	if len(labels) != n {
		return 0, fmt.Errorf("cross-entropy: %d labels for a batch of %d", len(labels), n)
	}
	if cap(l.prob) < n*k {
		l.prob = make([]float32, n*k)
	}
	l.prob = l.prob[:n*k]
	softmaxRows(f32(logits), l.prob, n, k)
	eps := float64(l.LabelSmoothing)
	var total float64
	for i, y := range labels {
		if y < 0 || int(y) >= k {
			return 0, fmt.Errorf("cross-entropy: label %d of sample %d outside [0, %d)", y, i, k)
		}
		row := l.prob[i*k : (i+1)*k]
		// −Σ_j q_j log p_j with q = (1−ε)·onehot + ε/K.
		nll := -math.Log(math.Max(float64(row[y]), 1e-45))
		if eps > 0 {
			var sumLog float64
			for _, p := range row {
				sumLog += math.Log(math.Max(float64(p), 1e-45))
			}
			total += (1-eps)*nll - eps/float64(k)*sumLog
		} else {
			total += nll
		}
	}
	l.labels, l.n, l.k = labels, n, k
	return float32(total / float64(n)), nil
}

// Backward returns dL/dlogits = (p − q)/N, owned by the loss.
func (l *CrossEntropy) Backward() *tensor.Dense {
	g := l.grad.get(l.n, Shape{l.k})
	gd := f32(g)
	inv := 1 / float32(l.n)
	off := l.LabelSmoothing / float32(l.k)
	for i, y := range l.labels {
		row, grow := l.prob[i*l.k:(i+1)*l.k], gd[i*l.k:(i+1)*l.k]
		for j, p := range row {
			grow[j] = (p - off) * inv
		}
		grow[y] -= (1 - l.LabelSmoothing) * inv
	}
	return g
}

// Probabilities returns the softmax of the last Forward's logits, [N·K].
func (l *CrossEntropy) Probabilities() []float32 { return l.prob }

// Correct counts rows whose arg-max equals the label.
func Correct(logits *tensor.Dense, labels []int32) int {
	sh := logits.Shape()
	k := sh[1]
	d := f32(logits)
	c := 0
	for i, y := range labels {
		row := d[i*k : (i+1)*k]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		if int32(best) == y {
			c++
		}
	}
	return c
}
