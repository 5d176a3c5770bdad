package checkpoint

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"strings"
	"time"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// Blob kinds in a manifest.
const (
	KindWeights = "weights"
	KindOptim   = "optim"
)

// Manifest describes one checkpoint. It is written last, after every blob it
// names, so its presence means the checkpoint is complete.
type Manifest struct {
	Version    int                `json:"format_version"`
	Run        string             `json:"run"`
	Submission string             `json:"submission,omitempty"` // coordinator's id of the job submission that wrote it; empty in older checkpoints
	Net        string             `json:"net"`
	NetConfig  map[string]any     `json:"net_config,omitempty"` // numbers parse as json.Number
	Classes    int                `json:"classes"`
	ClassNames []string           `json:"class_names,omitempty"`
	Step       int64              `json:"step"`
	Epoch      int                `json:"epoch"`
	Sampler    SamplerState       `json:"sampler"`
	RNG        []uint64           `json:"rng_state,omitempty"` // opaque to this package; the worker writes its scheme id first
	Optimizer  string             `json:"optimizer,omitempty"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	CreatedAt  time.Time          `json:"created_at"`
	Blobs      []Blob             `json:"blobs"`
}

// SamplerState is what a resumable sampler needs: its seed, the epoch and
// how many samples of that epoch are done.
type SamplerState struct {
	Seed  uint64 `json:"seed"`
	Epoch int    `json:"epoch"`
	Done  int64  `json:"done"`
}

// Blob is one file of a checkpoint, relative to the checkpoint's folder.
type Blob struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // KindWeights or KindOptim
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"` // lowercase hex
	Tensors int    `json:"tensors"`
}

// Validate reports the first invalid field by its JSON name.
func (m *Manifest) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("manifest field %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case m.Version != FormatVersion:
		return bad("format_version", "%d, this build reads %d", m.Version, FormatVersion)
	case m.Net == "":
		return bad("net", "empty")
	case m.Classes < 0:
		return bad("classes", "negative (%d)", m.Classes)
	case len(m.ClassNames) != 0 && len(m.ClassNames) != m.Classes:
		return bad("class_names", "%d names for %d classes", len(m.ClassNames), m.Classes)
	case m.Step < 0:
		return bad("step", "negative (%d)", m.Step)
	case m.Epoch < 0:
		return bad("epoch", "negative (%d)", m.Epoch)
	case m.Sampler.Epoch < 0 || m.Sampler.Done < 0:
		return bad("sampler", "negative epoch or done (%+v)", m.Sampler)
	case len(m.Blobs) == 0:
		return bad("blobs", "empty")
	}
	if strings.ContainsAny(m.Run, "/\\") || m.Run == "." || m.Run == ".." {
		return bad("run", "%q is not a plain name", m.Run)
	}
	for k, v := range m.Metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return bad("metrics", "%s is %v", k, v)
		}
	}
	seen := map[string]bool{}
	weights := 0
	for i, b := range m.Blobs {
		f := fmt.Sprintf("blobs[%d]", i)
		if b.Name == "" || b.Name != path.Base(b.Name) || b.Name == "manifest.json" || b.Name == "." || b.Name == ".." || strings.Contains(b.Name, "\\") {
			return bad(f+".name", "%q is not a plain file name", b.Name)
		}
		if seen[b.Name] {
			return bad(f+".name", "duplicate %q", b.Name)
		}
		seen[b.Name] = true
		if b.Kind != KindWeights && b.Kind != KindOptim {
			return bad(f+".kind", "%q, want %q or %q", b.Kind, KindWeights, KindOptim)
		}
		if b.Kind == KindWeights {
			weights++
		}
		if b.Size < 8 {
			return bad(f+".size", "%d bytes is too small for a tensor file", b.Size)
		}
		if h, err := hex.DecodeString(b.SHA256); err != nil || len(h) != 32 || strings.ToLower(b.SHA256) != b.SHA256 {
			return bad(f+".sha256", "%q is not 64 lowercase hex digits", b.SHA256)
		}
		if b.Tensors < 0 {
			return bad(f+".tensors", "negative (%d)", b.Tensors)
		}
	}
	if weights == 0 {
		return bad("blobs", "no %s blob", KindWeights)
	}
	return nil
}

// ParseManifest decodes and validates a manifest.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w", err)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("parse manifest: trailing data after the object")
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w", err)
	}
	return m, nil
}

// Marshal validates and encodes m, indented for people who read it.
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest of step %d: %w", m.Step, err)
	}
	return append(b, '\n'), nil
}

// Metric returns a metric and whether it is present.
func (m *Manifest) Metric(name string) (float64, bool) {
	v, ok := m.Metrics[name]
	return v, ok
}
