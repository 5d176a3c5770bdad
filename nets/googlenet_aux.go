package nets

import (
	"github.com/ringtrain/ringtrain/nn"
	"gorgonia.org/tensor"
)

// GoogLeNet's auxiliary classifiers (torchvision's InceptionAux), built with
// Config.AuxLogits. Each head reads the output of inception4a (aux1) or 4d
// (aux2) in training mode; evaluation ignores them, as torchvision does.
//
// The model's single output stays the main logits. A training loop reads
// every head's logits after Forward, and hands back dL/dlogits (torchvision
// weights each aux loss 0.3) before Backward:
//
//	y, _ := m.Forward(s, x)
//	for _, h := range nets.AuxHeads(m) {
//		l, _ := ce[h.Name].Forward(h.Logits(), labels)
//		h.SetGrad(scaled(ce[h.Name].Backward(), 0.3))
//	}
//	m.Backward(s, dMain)
//
// A head computed but given no gradient contributes nothing. Names and
// state_dict order are torchvision's (aux1.conv.conv.weight, ..., after
// inception5b and before fc): the parameters are registered by a pass-through
// holder at that position, while a tap on the main path runs the head.
type AuxHead struct {
	Name   string // aux1 or aux2
	head   *nn.Sequential
	logits *tensor.Dense // of the last training-mode forward, else nil
	dy     *tensor.Dense // set by SetGrad, consumed by Backward
	dx     denseBuf
}

// Logits returns the head's [N, classes] logits from the last Forward in
// training mode (nil after an evaluation Forward). Owned by the model.
func (a *AuxHead) Logits() *tensor.Dense { return a.logits }

// SetGrad gives dL/dlogits [N, classes] for the next Backward; the head keeps
// the tensor until then.
func (a *AuxHead) SetGrad(dy *tensor.Dense) { a.dy = dy }

// AuxHeads returns the auxiliary heads of a GoogLeNet built with AuxLogits
// (aux1, aux2), or nil.
func AuxHeads(m *nn.Model) []*AuxHead {
	var out []*AuxHead
	for _, c := range m.Root.Children() {
		if h, ok := c.Module.(*auxHolder); ok {
			out = append(out, h.aux)
		}
	}
	return out
}

// newAuxHead is InceptionAux: adaptive avg pool (4,4), conv (BasicConv2d
// 1×1, 128), flatten, fc1 2048→1024, relu, dropout 0.7, fc2.
func newAuxHead(name string, in, classes int) *AuxHead {
	return &AuxHead{Name: name, head: nn.NewNamedSequential(
		nn.Child{Name: "pool", Module: nn.NewAdaptiveAvgPool2D(4, 4)},
		nn.Child{Name: "conv", Module: basicConv2d(in, 128, 1, 1, 0)},
		nn.Child{Name: "flatten", Module: nn.NewFlatten()},
		nn.Child{Name: "fc1", Module: nn.NewLinear(128*4*4, 1024, true)},
		nn.Child{Name: "relu", Module: nn.NewReLU()},
		nn.Child{Name: "dropout", Module: nn.NewDropout(0.7)},
		nn.Child{Name: "fc2", Module: nn.NewLinear(1024, classes, true)},
	)}
}

// auxTap sits on the main path: identity, plus the head in training mode.
type auxTap struct{ aux *AuxHead }

var _ nn.Module = (*auxTap)(nil)

func (t *auxTap) Kind() string         { return "AuxTap" }
func (t *auxTap) Params() []*nn.Param  { return nil }
func (t *auxTap) Children() []nn.Child { return nil }

func (t *auxTap) Build(b *nn.Builder, in nn.Shape) (nn.Shape, error) {
	if _, err := b.Child(t.aux.Name, t.aux.head, in); err != nil {
		return nil, err
	}
	return in, nil
}

func (t *auxTap) Forward(s *nn.State, x *tensor.Dense) *tensor.Dense {
	t.aux.logits, t.aux.dy = nil, nil
	if s.Train {
		t.aux.logits = t.aux.head.Forward(s, x)
	}
	return x
}

// Backward: dx = dy + head's dx when the head ran and was given a gradient.
func (t *auxTap) Backward(s *nn.State, dy *tensor.Dense, needDx bool) *tensor.Dense {
	a := t.aux
	if a.logits == nil || a.dy == nil {
		return dy
	}
	g := a.head.Backward(s, a.dy, needDx)
	a.dy = nil
	if !needDx {
		return nil
	}
	dx := a.dx.get(dy.Shape()[0], nn.Shape(dy.Shape()[1:]))
	dxd, dyd, gd := dx.Float32s(), dy.Float32s(), g.Float32s()
	for i := range dxd {
		dxd[i] = dyd[i] + gd[i]
	}
	return dx
}

// auxHolder registers the head's parameters at torchvision's state_dict
// position; on the main path it is the identity.
type auxHolder struct{ aux *AuxHead }

var _ nn.Module = (*auxHolder)(nil)

func (h *auxHolder) Kind() string                                                 { return "AuxHolder" }
func (h *auxHolder) Params() []*nn.Param                                          { return nil }
func (h *auxHolder) Children() []nn.Child                                         { return h.aux.head.Children() }
func (h *auxHolder) Build(_ *nn.Builder, in nn.Shape) (nn.Shape, error)           { return in, nil }
func (h *auxHolder) Forward(_ *nn.State, x *tensor.Dense) *tensor.Dense           { return x }
func (h *auxHolder) Backward(_ *nn.State, dy *tensor.Dense, _ bool) *tensor.Dense { return dy }
