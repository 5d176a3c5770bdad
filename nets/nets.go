// Package nets builds the reference CNNs on the nn engine with torchvision's
// exact parameter names, and the Keras-applications options (classes,
// input size, include_top=false, global pooling).
//
// Nets: lenet; alexnet (torchvision) and alexnet-2012 (grouped convs, LRN);
// vgg11/13/16/19 and their _bn variants; nin (d2l); googlenet (optional
// aux heads, see AuxHead); resnet18/34/50/101/152; densenet121/169/201.
// State_dict keys, shapes and order equal torchvision's (checked against
// testdata/torchvision_keys.json from scripts/gen_nets.py), so PyTorch
// weights load by name. Smallest inputs (Spec.MinInput): resnet 1,
// lenet 12, googlenet 15, densenet 29, vgg 32, alexnet 63, alexnet-2012 and
// nin 67; VGG/AlexNet reach their classifiers through adaptive average
// pooling as torchvision does, so small inputs keep the parameter count.
package nets

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/ringtrain/ringtrain/nn"
)

// Config selects a variant of an architecture. Zero values take the
// architecture's defaults (Spec.DefaultChannels, Spec.DefaultInput, 1000
// classes).
type Config struct {
	Classes    int
	InChannels int
	InputSize  int // height = width
	// NoTop drops the classifier (Keras include_top=false): the model ends
	// at the last feature map, or a pooled vector when Pooling is set.
	NoTop   bool
	Pooling string // "", "avg" or "max" (NoTop only)
	// AuxLogits adds GoogLeNet's auxiliary classifiers (off by default).
	AuxLogits bool
	// Seed drives the initialisation.
	Seed uint64
}

// Spec describes one architecture.
type Spec struct {
	Name            string
	Description     string
	DefaultInput    int
	DefaultChannels int
	MinInput        int    // smallest input side that builds
	Preprocess      string // caffe, torch or tf (Keras preprocess_input mode)
	build           func(cfg Config) (nn.Module, error)
	init            func(m *nn.Model, rng *rand.Rand)
}

var registry = map[string]Spec{}

func register(s Spec) { registry[s.Name] = s }

// Names lists the architectures, sorted.
func Names() []string {
	var names []string
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the spec for name.
func Lookup(name string) (Spec, error) {
	s, ok := registry[name]
	if !ok {
		return Spec{}, fmt.Errorf("net %q: unknown architecture (known: %v)", name, Names())
	}
	return s, nil
}

// Build assembles and initialises the named network.
func Build(name string, cfg Config) (*nn.Model, error) {
	m, spec, cfg, err := assemble(name, cfg)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x52494e47)) // "RING"
	if spec.init != nil {
		spec.init(m, rng) // covers every layer: no PyTorch default drawn first only to be overwritten
	} else {
		m.Reset(rng)
	}
	return m, nil
}

// assemble validates cfg (filling defaults) and builds the model with its
// parameters zero (not initialised).
func assemble(name string, cfg Config) (*nn.Model, Spec, Config, error) {
	spec, err := Lookup(name)
	if err != nil {
		return nil, spec, cfg, err
	}
	if cfg.Classes == 0 {
		cfg.Classes = 1000
	}
	if cfg.InChannels == 0 {
		cfg.InChannels = spec.DefaultChannels
	}
	if cfg.InputSize == 0 {
		cfg.InputSize = spec.DefaultInput
	}
	switch {
	case cfg.Classes < 1:
		err = fmt.Errorf("net %s: classes %d must be ≥ 1", name, cfg.Classes)
	case cfg.InChannels < 1:
		err = fmt.Errorf("net %s: input channels %d must be ≥ 1", name, cfg.InChannels)
	case cfg.InputSize < spec.MinInput:
		err = fmt.Errorf("net %s: input size %d is below its minimum of %d×%d", name, cfg.InputSize, spec.MinInput, spec.MinInput)
	case cfg.Pooling != "" && cfg.Pooling != "avg" && cfg.Pooling != "max":
		err = fmt.Errorf("net %s: pooling %q must be avg or max", name, cfg.Pooling)
	case cfg.Pooling != "" && !cfg.NoTop:
		err = fmt.Errorf("net %s: pooling %q applies only without the top (include_top=false)", name, cfg.Pooling)
	}
	if err != nil {
		return nil, spec, cfg, err
	}
	root, err := spec.build(cfg)
	if err != nil {
		return nil, spec, cfg, fmt.Errorf("net %s: %w", name, err)
	}
	m, err := nn.NewModel(root, nn.Shape{cfg.InChannels, cfg.InputSize, cfg.InputSize})
	if err != nil {
		return nil, spec, cfg, fmt.Errorf("net %s: %w", name, err)
	}
	return m, spec, cfg, nil
}

// globalPool returns the Keras pooling layer for cfg, or nil.
func globalPool(cfg Config) nn.Module {
	switch cfg.Pooling {
	case "avg":
		return nn.NewSequential(nn.NewAdaptiveAvgPool2D(1, 1), nn.NewFlatten())
	case "max":
		return nn.NewSequential(nn.NewAdaptiveMaxPool2D(1, 1), nn.NewFlatten())
	}
	return nil
}
