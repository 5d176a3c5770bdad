// Package modelio moves a model's named tensors in and out of checkpoint
// formats: the one place that knows both the engine (nn) and the
// checkpoint package, so that neither imports the other.
package modelio

import (
	"fmt"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/optim"
)

// Slots lists every parameter and buffer of m in state_dict order as
// checkpoint slots that alias the model's memory (loading fills the model).
func Slots(m *nn.Model) []checkpoint.NamedSlot {
	slots := make([]checkpoint.NamedSlot, len(m.State))
	for i, p := range m.State {
		slots[i] = checkpoint.NamedSlot{Name: p.Name, Shape: p.Shape, Data: p.Data}
	}
	return slots
}

// Tensors is m's state_dict as checkpoint tensors aliasing the model's
// memory; integer buffers (num_batches_tracked) are marked int64, as
// PyTorch stores them.
func Tensors(m *nn.Model) []checkpoint.Tensor {
	ts := make([]checkpoint.Tensor, len(m.State))
	for i, p := range m.State {
		t := checkpoint.Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data}
		if p.Kind == nn.Counter {
			t.DType = checkpoint.I64
		}
		ts[i] = t
	}
	return ts
}

// OptimizerTensors names optimizer state per parameter, as PyTorch's
// optimizer state does ("<param>.momentum_buffer"); the slices alias the
// optimizer's flat buffers, so loading into them restores the state.
func OptimizerTensors(m *nn.Model, o optim.Optimizer) []checkpoint.Tensor {
	var ts []checkpoint.Tensor
	for _, slot := range o.State() {
		off := 0
		for _, p := range m.Weights {
			n := len(p.Data)
			ts = append(ts, checkpoint.Tensor{Name: p.Name + "." + slot.Name, Shape: p.Shape, Data: slot.Data[off : off+n]})
			off += n
		}
	}
	return ts
}

// LoadWeights fills m from tensors; strict requires an exact match of names
// and shapes (BN step counters may be absent on either side).
func LoadWeights(m *nn.Model, from []checkpoint.Tensor, strict bool) (checkpoint.Report, error) {
	return checkpoint.Load(Slots(m), from, checkpoint.LoadOptions{Strict: strict, StripPrefix: "module.", Ignore: ignoreCounterIfAbsent(m)})
}

// ImportFile loads a torchvision .pth or a safetensors file into m.
func ImportFile(m *nn.Model, path string, strict bool) (checkpoint.Report, error) {
	ts, _, err := checkpoint.ReadTensorFile(path)
	if err != nil {
		return checkpoint.Report{}, err
	}
	rep, err := LoadWeights(m, ts, strict)
	if err != nil {
		return rep, fmt.Errorf("load %s: %w", path, err)
	}
	return rep, nil
}

// LoadOptimizer restores optimizer state saved by OptimizerTensors.
func LoadOptimizer(m *nn.Model, o optim.Optimizer, from []checkpoint.Tensor) error {
	slots := OptimizerTensors(m, o)
	into := make([]checkpoint.NamedSlot, len(slots))
	for i, t := range slots {
		into[i] = checkpoint.NamedSlot{Name: t.Name, Shape: t.Shape, Data: t.Data}
	}
	if _, err := checkpoint.Load(into, from, checkpoint.LoadOptions{Strict: true}); err != nil {
		return fmt.Errorf("optimizer state: %w", err)
	}
	return nil
}

// ignoreCounterIfAbsent skips BN step counters of a source when the model
// has none under that name (models without BN, or heads).
func ignoreCounterIfAbsent(m *nn.Model) func(string) bool {
	return func(name string) bool {
		if !checkpoint.IgnoreNumBatchesTracked(name) {
			return false
		}
		_, ok := m.Param(name)
		return !ok
	}
}
