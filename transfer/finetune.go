package transfer

import (
	"fmt"
	"math/rand/v2"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
)

// FinetuneConfig describes a Keras-style fine-tuning model: a pretrained
// base without its classifier, a new head, and frozen bottom layers.
type FinetuneConfig struct {
	Net string
	// Base configures the architecture (input size, channels); NoTop is
	// implied when Head is set.
	Base nets.Config
	// From holds pretrained weights (.pth, .safetensors, or tensors from a
	// checkpoint); empty keeps the random initialisation.
	From []checkpoint.Tensor
	// Head is a ParseHead spec; empty keeps the net's own classifier.
	Head string
	// FreezeFirst freezes the first K layers (as listed by `ringtrain
	// layers`); FreezeUntil freezes up to and including the named layer.
	FreezeFirst int
	FreezeUntil string
	Seed        uint64
}

// BuildFinetune assembles the model: base, pretrained weights (loaded
// non-strictly: the new head is expected to be missing and the old
// classifier unexpected), new head, frozen layers.
func BuildFinetune(cfg FinetuneConfig) (*nn.Model, checkpoint.Report, error) {
	var rep checkpoint.Report
	base := cfg.Base
	if cfg.Head != "" {
		base.NoTop, base.Pooling = true, ""
	}
	m, err := nets.Build(cfg.Net, base)
	if err != nil {
		return nil, rep, err
	}
	if cfg.Head != "" {
		head, _, err := ParseHead(cfg.Head, m.Out)
		if err != nil {
			return nil, rep, err
		}
		if m, err = AttachHead(m, head, rand.New(rand.NewPCG(cfg.Seed, 0x48454144))); err != nil { // "HEAD"
			return nil, rep, err
		}
	}
	if len(cfg.From) > 0 {
		if rep, err = modelio.LoadWeights(m, cfg.From, false); err != nil {
			return nil, rep, err
		}
		if len(rep.Loaded) == 0 {
			return nil, rep, fmt.Errorf("fine-tune %s: no pretrained tensor matched the model by name (%s)", cfg.Net, rep)
		}
	}
	switch {
	case cfg.FreezeFirst > 0 && cfg.FreezeUntil != "":
		return nil, rep, fmt.Errorf("fine-tune: give either a layer count to freeze or a layer name, not both")
	case cfg.FreezeFirst > 0:
		err = m.FreezeFirst(cfg.FreezeFirst)
	case cfg.FreezeUntil != "":
		err = m.FreezeUntil(cfg.FreezeUntil)
	}
	return m, rep, err
}
