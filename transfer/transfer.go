// Package transfer is the Keras-applications workflow on ringtrain's nets:
// predictions decoded into top-k class names, feature extraction without
// the classifier (include_top=false), and fine-tuning a new head on top of
// frozen layers.
package transfer

import (
	_ "embed"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/ringtrain/ringtrain/nn"
)

// imageNetClasses is torchvision's models/_meta.py _IMAGENET_CATEGORIES
// (BSD-3-Clause), one name per line in class-index order.
//
//go:embed imagenet_classes.txt
var imageNetClasses string

// ImageNetClasses returns the 1000 ILSVRC-2012 class names by index.
func ImageNetClasses() []string {
	return strings.Split(strings.TrimSuffix(imageNetClasses, "\n"), "\n")
}

// Prediction is one ranked class.
type Prediction struct {
	Index int
	Name  string
	Prob  float32
}

// TopK returns the k most probable classes of one probability row, as
// Keras's decode_predictions. Ties keep the lower index first. names may be
// nil (then names are the indices).
func TopK(probs []float32, k int, names []string) []Prediction {
	idx := make([]int, len(probs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return probs[idx[a]] > probs[idx[b]] })
	k = min(k, len(idx))
	out := make([]Prediction, k)
	for i, j := range idx[:k] {
		name := strconv.Itoa(j)
		if j < len(names) {
			name = names[j]
		}
		out[i] = Prediction{Index: j, Name: name, Prob: probs[j]}
	}
	return out
}

// ParseHead builds a classifier head from a compact spec, layers separated
// by commas:
//
//	gap | gmp            global average / max pooling, then flatten
//	flatten
//	dense:N[:relu]       fully connected to N units, optional ReLU
//	dropout:P
//
// e.g. "gap,dense:1024:relu,dense:2". in is the base model's output shape.
// The head's modules are named head.0, head.1, ... in the state_dict.
func ParseHead(spec string, in nn.Shape) (*nn.Sequential, nn.Shape, error) {
	head := nn.NewSequential()
	cur := append(nn.Shape(nil), in...)
	if strings.TrimSpace(spec) == "" {
		return nil, nil, fmt.Errorf("head: empty spec (e.g. \"gap,dense:1024:relu,dense:2\")")
	}
	for i, part := range strings.Split(spec, ",") {
		f := strings.Split(strings.TrimSpace(part), ":")
		bad := func(format string, a ...any) error {
			return fmt.Errorf("head layer %d %q: %s", i, part, fmt.Sprintf(format, a...))
		}
		switch f[0] {
		case "gap", "gmp":
			if len(cur) != 3 {
				return nil, nil, bad("global pooling needs a [C, H, W] input, have %v", cur)
			}
			if f[0] == "gap" {
				head.Add(nn.NewAdaptiveAvgPool2D(1, 1))
			} else {
				head.Add(nn.NewAdaptiveMaxPool2D(1, 1))
			}
			head.Add(nn.NewFlatten())
			cur = nn.Shape{cur[0]}
		case "flatten":
			head.Add(nn.NewFlatten())
			cur = nn.Shape{cur.Size()}
		case "dense":
			if len(f) < 2 || len(f) > 3 {
				return nil, nil, bad("want dense:UNITS or dense:UNITS:relu")
			}
			units, err := strconv.Atoi(f[1])
			if err != nil || units < 1 {
				return nil, nil, bad("units %q must be a positive integer", f[1])
			}
			if len(cur) != 1 {
				return nil, nil, bad("dense needs a flat input, have %v (add gap or flatten first)", cur)
			}
			head.Add(nn.NewLinear(cur[0], units, true))
			cur = nn.Shape{units}
			if len(f) == 3 {
				if f[2] != "relu" {
					return nil, nil, bad("activation %q: only relu (softmax is part of the loss)", f[2])
				}
				head.Add(nn.NewReLU())
			}
		case "dropout":
			if len(f) != 2 {
				return nil, nil, bad("want dropout:P")
			}
			p, err := strconv.ParseFloat(f[1], 32)
			if err != nil || p < 0 || p >= 1 {
				return nil, nil, bad("probability %q must be in [0, 1)", f[1])
			}
			head.Add(nn.NewDropout(float32(p)))
		default:
			return nil, nil, bad("unknown layer %q (gap, gmp, flatten, dense, dropout)", f[0])
		}
	}
	return head, cur, nil
}

// AttachHead returns a model made of base's modules (names unchanged, so
// pretrained weights still load) followed by head under "head", whose
// layers are initialised from rng. base's parameter values are kept; base
// itself must not be used afterwards.
func AttachHead(base *nn.Model, head *nn.Sequential, rng *rand.Rand) (*nn.Model, error) {
	for _, c := range head.Children() {
		if in, ok := c.Module.(nn.Initializer); ok {
			in.ResetParameters(rng)
		}
	}
	root, ok := base.Root.(*nn.Sequential)
	if !ok {
		return nil, fmt.Errorf("attach head: base model root is %s, want a Sequential", base.Root.Kind())
	}
	children := append(append([]nn.Child(nil), root.Children()...), nn.Child{Name: "head", Module: head})
	return nn.NewModel(nn.NewNamedSequential(children...), base.In)
}
