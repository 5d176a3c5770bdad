package transfer

import (
	"fmt"
	"math"
	"os"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"gorgonia.org/tensor"
)

// LoadImages decodes image files and applies the evaluation transform of
// tc (resize, center crop, preprocessing mode) into an NCHW batch.
func LoadImages(paths []string, tc dataset.TransformConfig) ([]float32, error) {
	tc.Train = false
	tr, err := dataset.NewTransformer(tc)
	if err != nil {
		return nil, err
	}
	tc = tr.Config()
	x := make([]float32, len(paths)*tc.SampleLen())
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read image: %w", err)
		}
		img, err := dataset.DecodeImage(b, p)
		if err != nil {
			return nil, err
		}
		tr.Apply(img, 0, x[i*tc.SampleLen():(i+1)*tc.SampleLen()])
	}
	return x, nil
}

// Run evaluates m (inference mode) on an NCHW batch in slices of at most
// batch samples and returns the outputs, one row of m.Out.Size() per sample.
// each, when set, sees progress after every slice.
func Run(m *nn.Model, pool *kernels.Pool, x []float32, batch int, each func(done int)) ([]float32, error) {
	sz := m.In.Size()
	if len(x)%sz != 0 {
		return nil, fmt.Errorf("run: %d input floats is not a whole number of %v samples", len(x), m.In)
	}
	n := len(x) / sz
	out := make([]float32, 0, n*m.Out.Size())
	st := &nn.State{Inference: true, Pool: pool}
	for lo := 0; lo < n; lo += batch {
		k := min(batch, n-lo)
		xt := tensor.New(tensor.WithShape(append([]int{k}, m.In...)...), tensor.WithBacking(x[lo*sz:(lo+k)*sz]))
		y, err := m.Forward(st, xt)
		if err != nil {
			return nil, err
		}
		out = append(out, y.Float32s()...)
		if each != nil {
			each(lo + k)
		}
	}
	return out, nil
}

// Softmax turns logits rows [n, k] into probabilities in place.
func Softmax(logits []float32, k int) {
	for i := 0; i+k <= len(logits); i += k {
		row := logits[i : i+k]
		mx := row[0]
		for _, v := range row {
			mx = max(mx, v)
		}
		var sum float64
		for j, v := range row {
			e := float32(math.Exp(float64(v - mx)))
			row[j] = e
			sum += float64(e)
		}
		for j := range row {
			row[j] = float32(float64(row[j]) / sum)
		}
	}
}
