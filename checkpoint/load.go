package checkpoint

import (
	"fmt"
	"slices"
	"strings"
)

// NamedSlot is one tensor of the model side: the engine owns Data and Load
// fills it in place. Shape is the shape the engine expects.
type NamedSlot struct {
	Name  string
	Shape []int
	Data  []float32
}

// LoadOptions tune Load.
type LoadOptions struct {
	// Strict fails (and writes nothing) on any missing, unexpected or
	// mismatched tensor; otherwise what matches is loaded.
	Strict bool
	// StripPrefix is removed from source names that carry it
	// ("module." from DataParallel checkpoints).
	StripPrefix string
	// Ignore drops source tensors the model is not expected to have
	// (see IgnoreNumBatchesTracked); they count neither as loaded nor as
	// unexpected.
	Ignore func(name string) bool
}

// IgnoreNumBatchesTracked ignores BatchNorm's step counters, which PyTorch
// saves but an engine without them does not need.
func IgnoreNumBatchesTracked(name string) bool {
	return strings.HasSuffix(name, ".num_batches_tracked") || name == "num_batches_tracked"
}

// ShapeMismatch is a tensor present on both sides with different shapes.
type ShapeMismatch struct {
	Name      string
	Want, Got []int // model's, file's
}

// Report says what Load did, by name.
type Report struct {
	Loaded     []string
	Missing    []string // in the model, not in the source
	Unexpected []string // in the source, not in the model
	Mismatched []ShapeMismatch
	Ignored    []string
}

// OK reports whether every slot was loaded and nothing was left over.
func (r Report) OK() bool {
	return len(r.Missing) == 0 && len(r.Unexpected) == 0 && len(r.Mismatched) == 0
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "loaded %d", len(r.Loaded))
	if len(r.Missing) > 0 {
		fmt.Fprintf(&b, "; missing %d: %s", len(r.Missing), strings.Join(r.Missing, ", "))
	}
	if len(r.Unexpected) > 0 {
		fmt.Fprintf(&b, "; unexpected %d: %s", len(r.Unexpected), strings.Join(r.Unexpected, ", "))
	}
	for _, m := range r.Mismatched {
		fmt.Fprintf(&b, "; %s: model %v, file %v", m.Name, m.Want, m.Got)
	}
	if len(r.Ignored) > 0 {
		fmt.Fprintf(&b, "; ignored %d", len(r.Ignored))
	}
	return b.String()
}

// Load copies the source tensors into the slots with the same names. In
// strict mode any difference is an error and no slot is written.
func Load(into []NamedSlot, from []Tensor, opts LoadOptions) (Report, error) {
	var rep Report
	src := make(map[string]*Tensor, len(from))
	var order []string
	for i := range from {
		name := strings.TrimPrefix(from[i].Name, opts.StripPrefix)
		if opts.Ignore != nil && opts.Ignore(name) {
			rep.Ignored = append(rep.Ignored, name)
			continue
		}
		if _, dup := src[name]; dup {
			return rep, fmt.Errorf("load: source has %q twice", name)
		}
		src[name] = &from[i]
		order = append(order, name)
	}
	used := make(map[string]bool, len(into))
	type pair struct {
		dst []float32
		src []float32
	}
	var copies []pair
	for _, s := range into {
		if used[s.Name] {
			return rep, fmt.Errorf("load: model has slot %q twice", s.Name)
		}
		used[s.Name] = true
		if len(s.Data) != numel(s.Shape) {
			return rep, fmt.Errorf("load: slot %q: shape %v but %d values (engine bug)", s.Name, s.Shape, len(s.Data))
		}
		t, ok := src[s.Name]
		if !ok {
			rep.Missing = append(rep.Missing, s.Name)
			continue
		}
		if !slices.Equal(s.Shape, t.Shape) {
			rep.Mismatched = append(rep.Mismatched, ShapeMismatch{Name: s.Name, Want: s.Shape, Got: t.Shape})
			continue
		}
		if len(t.Data) != len(s.Data) {
			return rep, fmt.Errorf("load: source tensor %q: shape %v but %d values", t.Name, t.Shape, len(t.Data))
		}
		copies = append(copies, pair{s.Data, t.Data})
		rep.Loaded = append(rep.Loaded, s.Name)
	}
	for _, name := range order {
		if !used[name] {
			rep.Unexpected = append(rep.Unexpected, name)
		}
	}
	if opts.Strict && !rep.OK() {
		loaded := rep.Loaded
		rep.Loaded = nil
		return rep, fmt.Errorf("load (strict): %s", Report{Loaded: loaded, Missing: rep.Missing, Unexpected: rep.Unexpected, Mismatched: rep.Mismatched})
	}
	for _, c := range copies {
		copy(c.dst, c.src)
	}
	return rep, nil
}

// TorchCompat prepares engine tensors for PyTorch's load_state_dict: step
// counters are stored as int64, and every BatchNorm (a "X.running_var")
// without "X.num_batches_tracked" gets one set to 0, because strict loading
// in PyTorch requires it. The input is not modified.
func TorchCompat(ts []Tensor) []Tensor {
	have := make(map[string]bool, len(ts))
	for _, t := range ts {
		have[t.Name] = true
	}
	out := make([]Tensor, 0, len(ts))
	for _, t := range ts {
		if IgnoreNumBatchesTracked(t.Name) {
			t.DType = I64
		}
		out = append(out, t)
		if base, ok := strings.CutSuffix(t.Name, ".running_var"); ok && !have[base+".num_batches_tracked"] {
			out = append(out, Tensor{Name: base + ".num_batches_tracked", Shape: []int{}, DType: I64, Data: []float32{0}})
		}
	}
	return out
}

// ImportFile loads pretrained weights from a torchvision .pth or a
// safetensors file into the slots (see Load).
func ImportFile(path string, into []NamedSlot, opts LoadOptions) (Report, error) {
	ts, _, err := ReadTensorFile(path)
	if err != nil {
		return Report{}, fmt.Errorf("import: %w", err)
	}
	rep, err := Load(into, ts, opts)
	if err != nil {
		return rep, fmt.Errorf("import %s: %w", path, err)
	}
	return rep, nil
}
