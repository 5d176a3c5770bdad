package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
)

// MaxJobSpecBytes bounds what ParseJobSpec accepts; a spec is a page of text.
const MaxJobSpecBytes = 1 << 20

// JobSpec is what a user submits: which net to train on which data, how, and
// on how many workers. Field names (json/yaml keys) are the paths that
// validation errors name, rooted at "spec".
type JobSpec struct {
	// Name identifies the job in etcd keys (/ringtrain/<name>/) and NATS
	// subjects (ringtrain.<name>.events), so it is a restricted token.
	Name            string         `json:"name"`
	Net             string         `json:"net"`
	Dataset         DatasetSpec    `json:"dataset"`
	Classes         int            `json:"classes"`
	Input           InputSpec      `json:"input"`
	GlobalBatchSize int            `json:"global_batch_size"`
	Optimizer       OptimizerSpec  `json:"optimizer"`
	Schedule        ScheduleSpec   `json:"schedule"`
	Epochs          int            `json:"epochs"`
	Eval            EvalSpec       `json:"eval"`
	Checkpoint      CheckpointSpec `json:"checkpoint"`
	World           WorldSpec      `json:"world"`
	Seed            uint64         `json:"seed"`
	// Transfer, when set, fine-tunes from pretrained weights.
	Transfer *TransferSpec `json:"transfer,omitempty"`
	// Resume says where a new submission whose workers start from nothing
	// picks up: "latest" (or empty) is the newest good checkpoint if there
	// is one, a number is that checkpoint step, "never" starts from scratch.
	// never and a step refuse to start where the run would write its
	// checkpoints among an earlier run's (never: any, a step: any after it).
	// A restart after every worker died resumes the submission's own newest
	// checkpoint, whatever Resume says.
	Resume string `json:"resume,omitempty"`
	// Submission is set by the coordinator at submit (a value in a
	// submitted spec is replaced) and differs for every submission. Workers
	// record it in checkpoints, so that a job restarted after every worker
	// died resumes its own checkpoints and tells them from an earlier run's
	// under the same name.
	Submission string `json:"submission,omitempty"`
}

// TransferSpec is Keras-style fine-tuning: pretrained weights, a new head,
// frozen bottom layers.
type TransferSpec struct {
	// From is a weights file (.pth, .safetensors) or a checkpoint run
	// (s3://bucket/prefix/run or dir/run, newest good checkpoint; append
	// @STEP for a given one).
	From string `json:"from"`
	// Head replaces the classifier, e.g. "gap,dense:1024:relu,dense:2".
	Head string `json:"head,omitempty"`
	// Freeze freezes the first N layers; FreezeUntil up to a named layer.
	Freeze      int    `json:"freeze,omitempty"`
	FreezeUntil string `json:"freeze_until,omitempty"`
}

// DatasetSpec says where training samples live and how they are laid out.
type DatasetSpec struct {
	// URI is s3://bucket/prefix, file:///dir or a plain local path.
	URI    string `json:"uri"`
	Layout string `json:"layout"`
	// Preprocess is the pixel mode (unit, caffe, torch, tf); default unit.
	Preprocess string `json:"preprocess,omitempty"`
}

// Dataset layouts a spec may name; the dataset package implements them.
const (
	LayoutClassFolders = "class_folders" // <class>/<image>, class names sorted
	LayoutTarShards    = "tar_shards"    // webdataset-style shard-%06d.tar
	LayoutIDX          = "idx"           // MNIST-style IDX files
)

var validLayouts = []string{LayoutClassFolders, LayoutTarShards, LayoutIDX}

// InputSpec is the C×H×W shape a network sees after the pipeline.
type InputSpec struct {
	Channels int `json:"channels"`
	Height   int `json:"height"`
	Width    int `json:"width"`
}

// OptimizerSpec selects the optimizer and its hyper-parameters.
type OptimizerSpec struct {
	Name        string    `json:"name"` // sgd | adam | adamw
	LR          float64   `json:"lr"`   // base LR, before linear scaling
	Momentum    float64   `json:"momentum"`
	Nesterov    bool      `json:"nesterov"`
	WeightDecay float64   `json:"weight_decay"`
	Betas       []float64 `json:"betas,omitempty"` // adam/adamw: [beta1, beta2]
	Eps         float64   `json:"eps,omitempty"`
}

// ScheduleSpec is the LR schedule: an optional linear warmup, then a decay.
// With LinearScaling the peak LR is lr*global_batch_size/base_batch_size
// (Goyal et al., 2017) and warmup starts from the unscaled lr; without it the
// peak is lr and warmup starts from 0.
type ScheduleSpec struct {
	Name          string  `json:"name"` // constant | step | cosine | linear
	WarmupEpochs  float64 `json:"warmup_epochs"`
	LinearScaling bool    `json:"linear_scaling"`
	BaseBatchSize int     `json:"base_batch_size"`
	Milestones    []int   `json:"milestones,omitempty"` // step: epochs where LR *= gamma
	Gamma         float64 `json:"gamma,omitempty"`
	MinLR         float64 `json:"min_lr,omitempty"` // cosine/linear floor
}

// EvalSpec is the held-out set and how often it is evaluated. An empty URI
// disables evaluation.
type EvalSpec struct {
	URI         string `json:"uri"`
	Layout      string `json:"layout"`
	EveryEpochs int    `json:"every_epochs"`
	EverySteps  int    `json:"every_steps"`
}

// CheckpointSpec is where and how often checkpoints are written. An empty
// URI disables checkpoints.
type CheckpointSpec struct {
	URI         string `json:"uri"`
	EveryEpochs int    `json:"every_epochs"`
	EverySteps  int    `json:"every_steps"`
	Keep        int    `json:"keep"` // newest checkpoints kept; 0 keeps all
}

// WorldSpec bounds the number of workers. Training waits while fewer than
// Min are alive; Max 0 means no upper bound.
type WorldSpec struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// FieldError is one invalid field, named by its path in the spec.
type FieldError struct {
	Path string // e.g. "spec.optimizer.lr"
	Msg  string // e.g. "must be > 0"
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// ErrInvalidSpec is wrapped by every error ParseJobSpec returns for bad
// input (syntax, unknown fields, a ValidationError): the caller's fault, not
// worth a retry.
var ErrInvalidSpec = errors.New("invalid job spec")

// ValidationError lists every invalid field of a spec, in field order.
type ValidationError []*FieldError

// Is makes errors.Is(err, ErrInvalidSpec) hold for a ValidationError.
func (v ValidationError) Is(target error) bool { return target == ErrInvalidSpec }

func (v ValidationError) Error() string {
	parts := make([]string, len(v))
	for i, e := range v {
		parts[i] = e.Error()
	}
	return "invalid job spec: " + strings.Join(parts, "; ")
}

// ParseJobSpec decodes a YAML or JSON job spec (JSON if the first non-space
// byte is '{'), rejects unknown fields, fills defaults and validates it.
// Validation failures are a ValidationError (wrapped).
func ParseJobSpec(data []byte) (JobSpec, error) {
	var s JobSpec
	if len(data) > MaxJobSpecBytes {
		return s, fmt.Errorf("parse job spec: %w: %d bytes exceeds the %d byte limit", ErrInvalidSpec, len(data), MaxJobSpecBytes)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return s, fmt.Errorf("parse job spec: %w: empty document", ErrInvalidSpec)
	}
	if trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return JobSpec{}, fmt.Errorf("parse job spec (json): %w: %w", ErrInvalidSpec, err)
		}
		if dec.More() {
			return JobSpec{}, fmt.Errorf("parse job spec (json): %w: trailing data after the object", ErrInvalidSpec)
		}
	} else {
		if err := yaml.UnmarshalWithOptions(trimmed, &s, yaml.DisallowUnknownField()); err != nil {
			return JobSpec{}, fmt.Errorf("parse job spec (yaml): %w: %w", ErrInvalidSpec, err)
		}
	}
	s.SetDefaults()
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// SetDefaults fills fields left at their zero value with the documented
// defaults. It never overrides a set field.
func (s *JobSpec) SetDefaults() {
	if s.Dataset.Layout == "" {
		s.Dataset.Layout = LayoutClassFolders
	}
	if s.Input.Channels == 0 {
		s.Input.Channels = 3
	}
	if s.Epochs == 0 {
		s.Epochs = 1
	}
	o := &s.Optimizer
	if o.Name == "" {
		o.Name = "sgd"
	}
	o.Name = strings.ToLower(o.Name)
	if (o.Name == "adam" || o.Name == "adamw") && len(o.Betas) == 0 {
		o.Betas = []float64{0.9, 0.999}
	}
	if (o.Name == "adam" || o.Name == "adamw") && o.Eps == 0 {
		o.Eps = 1e-8
	}
	sc := &s.Schedule
	if sc.Name == "" {
		sc.Name = "constant"
	}
	sc.Name = strings.ToLower(sc.Name)
	if sc.BaseBatchSize == 0 {
		sc.BaseBatchSize = 256
	}
	if sc.Name == "step" && sc.Gamma == 0 {
		sc.Gamma = 0.1
	}
	if s.Eval.URI != "" {
		if s.Eval.Layout == "" {
			s.Eval.Layout = s.Dataset.Layout
		}
		if s.Eval.EveryEpochs == 0 && s.Eval.EverySteps == 0 {
			s.Eval.EveryEpochs = 1
		}
	}
	if s.Checkpoint.URI != "" && s.Checkpoint.EveryEpochs == 0 && s.Checkpoint.EverySteps == 0 {
		s.Checkpoint.EveryEpochs = 1
	}
	if s.World.Min == 0 {
		s.World.Min = 1
	}
}

// jobNameRE keeps names safe as an etcd path element and a NATS subject
// token (no '.', '*', '>' or spaces).
var jobNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

var submissionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidJobName reports whether name can be used as a job name.
func ValidJobName(name string) bool { return jobNameRE.MatchString(name) }

// Validate checks every field and returns a ValidationError naming each bad
// one, or nil. Call SetDefaults first if the spec did not come from
// ParseJobSpec.
func (s *JobSpec) Validate() error {
	var errs ValidationError
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: "spec." + path, Msg: fmt.Sprintf(format, args...)})
	}
	if s.Name == "" {
		bad("name", "required")
	} else if !ValidJobName(s.Name) {
		bad("name", "%q must match %s", s.Name, jobNameRE)
	}
	if s.Net == "" {
		bad("net", "required")
	}
	if s.Dataset.URI == "" {
		bad("dataset.uri", "required")
	}
	if !slices.Contains(validLayouts, s.Dataset.Layout) {
		bad("dataset.layout", "%q is not one of %s", s.Dataset.Layout, strings.Join(validLayouts, ", "))
	}
	if s.Classes < 2 {
		bad("classes", "must be >= 2, got %d", s.Classes)
	}
	if s.Input.Channels <= 0 {
		bad("input.channels", "must be > 0, got %d", s.Input.Channels)
	}
	if s.Input.Height <= 0 {
		bad("input.height", "must be > 0, got %d", s.Input.Height)
	}
	if s.Input.Width <= 0 {
		bad("input.width", "must be > 0, got %d", s.Input.Width)
	}
	if s.GlobalBatchSize <= 0 {
		bad("global_batch_size", "must be > 0, got %d", s.GlobalBatchSize)
	} else if s.World.Max > 0 && s.GlobalBatchSize < s.World.Max {
		bad("global_batch_size", "%d is smaller than world.max %d: some workers would get no samples", s.GlobalBatchSize, s.World.Max)
	}
	if s.Epochs <= 0 {
		bad("epochs", "must be > 0, got %d", s.Epochs)
	}
	s.validateOptimizer(bad)
	s.validateSchedule(bad)
	if s.Eval.URI != "" {
		if !slices.Contains(validLayouts, s.Eval.Layout) {
			bad("eval.layout", "%q is not one of %s", s.Eval.Layout, strings.Join(validLayouts, ", "))
		}
		if s.Eval.EveryEpochs < 0 {
			bad("eval.every_epochs", "must be >= 0, got %d", s.Eval.EveryEpochs)
		}
		if s.Eval.EverySteps < 0 {
			bad("eval.every_steps", "must be >= 0, got %d", s.Eval.EverySteps)
		}
	}
	if s.Checkpoint.URI != "" {
		if s.Checkpoint.EveryEpochs < 0 {
			bad("checkpoint.every_epochs", "must be >= 0, got %d", s.Checkpoint.EveryEpochs)
		}
		if s.Checkpoint.EverySteps < 0 {
			bad("checkpoint.every_steps", "must be >= 0, got %d", s.Checkpoint.EverySteps)
		}
	}
	if s.Checkpoint.Keep < 0 {
		bad("checkpoint.keep", "must be >= 0, got %d", s.Checkpoint.Keep)
	}
	if r := s.Resume; r != "" && r != "latest" && r != "never" {
		if n, err := strconv.ParseInt(r, 10, 64); err != nil || n < 0 {
			bad("resume", "%q is not latest, never or a checkpoint step", r)
		}
	}
	if s.Submission != "" && !submissionRE.MatchString(s.Submission) {
		bad("submission", "%q must match %s", s.Submission, submissionRE)
	}
	if t := s.Transfer; t != nil {
		if t.From == "" {
			bad("transfer.from", "required")
		}
		if t.Freeze < 0 {
			bad("transfer.freeze", "must be >= 0, got %d", t.Freeze)
		}
		if t.Freeze > 0 && t.FreezeUntil != "" {
			bad("transfer.freeze_until", "give freeze or freeze_until, not both")
		}
	}
	if s.World.Min < 1 {
		bad("world.min", "must be >= 1, got %d", s.World.Min)
	}
	if s.World.Max < 0 {
		bad("world.max", "must be >= 0 (0 = unbounded), got %d", s.World.Max)
	} else if s.World.Max > 0 && s.World.Max < s.World.Min {
		bad("world.max", "%d is below world.min %d", s.World.Max, s.World.Min)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func (s *JobSpec) validateOptimizer(bad func(path, format string, args ...any)) {
	o := s.Optimizer
	switch o.Name {
	case "sgd", "adam", "adamw":
	default:
		bad("optimizer.name", "%q is not one of sgd, adam, adamw", o.Name)
	}
	if !(o.LR > 0) || math.IsInf(o.LR, 0) {
		bad("optimizer.lr", "must be > 0")
	}
	if !(o.Momentum >= 0 && o.Momentum < 1) {
		bad("optimizer.momentum", "must be in [0, 1), got %g", o.Momentum)
	}
	if o.Nesterov && (o.Name != "sgd" || o.Momentum == 0) {
		bad("optimizer.nesterov", "needs optimizer sgd with momentum > 0")
	}
	if !(o.WeightDecay >= 0) || math.IsInf(o.WeightDecay, 0) {
		bad("optimizer.weight_decay", "must be >= 0, got %g", o.WeightDecay)
	}
	if o.Name == "adam" || o.Name == "adamw" {
		if len(o.Betas) != 2 {
			bad("optimizer.betas", "must have 2 values, got %d", len(o.Betas))
		} else {
			for i, b := range o.Betas {
				if !(b >= 0 && b < 1) {
					bad(fmt.Sprintf("optimizer.betas[%d]", i), "must be in [0, 1), got %g", b)
				}
			}
		}
		if !(o.Eps > 0) || math.IsInf(o.Eps, 0) {
			bad("optimizer.eps", "must be > 0")
		}
	} else if len(o.Betas) != 0 {
		bad("optimizer.betas", "only used by adam and adamw")
	}
}

func (s *JobSpec) validateSchedule(bad func(path, format string, args ...any)) {
	sc := s.Schedule
	switch sc.Name {
	case "constant", "step", "cosine", "linear":
	default:
		bad("schedule.name", "%q is not one of constant, step, cosine, linear", sc.Name)
	}
	if !(sc.WarmupEpochs >= 0) || math.IsInf(sc.WarmupEpochs, 0) {
		bad("schedule.warmup_epochs", "must be >= 0, got %g", sc.WarmupEpochs)
	} else if s.Epochs > 0 && sc.WarmupEpochs >= float64(s.Epochs) {
		bad("schedule.warmup_epochs", "%g must be below epochs %d", sc.WarmupEpochs, s.Epochs)
	}
	if sc.BaseBatchSize <= 0 {
		bad("schedule.base_batch_size", "must be > 0, got %d", sc.BaseBatchSize)
	}
	if sc.Name == "step" {
		if len(sc.Milestones) == 0 {
			bad("schedule.milestones", "required for schedule step")
		}
		prev := 0
		for i, m := range sc.Milestones {
			if m <= prev {
				bad(fmt.Sprintf("schedule.milestones[%d]", i), "must be > %d (strictly increasing, > 0), got %d", prev, m)
			}
			prev = m
		}
		if !(sc.Gamma > 0 && sc.Gamma <= 1) {
			bad("schedule.gamma", "must be in (0, 1], got %g", sc.Gamma)
		}
	} else if len(sc.Milestones) != 0 {
		bad("schedule.milestones", "only used by schedule step")
	}
	if !(sc.MinLR >= 0) || math.IsInf(sc.MinLR, 0) {
		bad("schedule.min_lr", "must be >= 0, got %g", sc.MinLR)
	} else if sc.MinLR > 0 && sc.MinLR >= s.PeakLR() {
		bad("schedule.min_lr", "%g must be below the peak lr %g", sc.MinLR, s.PeakLR())
	}
}

// PeakLR is the LR reached after warmup: lr, times global/base batch size
// when linear scaling is on.
func (s *JobSpec) PeakLR() float64 {
	lr := s.Optimizer.LR
	if s.Schedule.LinearScaling && s.Schedule.BaseBatchSize > 0 {
		lr *= float64(s.GlobalBatchSize) / float64(s.Schedule.BaseBatchSize)
	}
	return lr
}

// LRAt is the learning rate at a fractional epoch (epoch + step/stepsPerEpoch)
// for a validated spec. It is a pure function so that every worker, and a
// resumed job, computes the same value.
func (s *JobSpec) LRAt(epoch float64) float64 {
	sc := s.Schedule
	peak := s.PeakLR()
	if epoch < 0 {
		epoch = 0
	}
	if w := sc.WarmupEpochs; w > 0 && epoch < w {
		start := 0.0
		if sc.LinearScaling {
			start = s.Optimizer.LR
		}
		return start + (peak-start)*epoch/w
	}
	total := float64(s.Epochs) - sc.WarmupEpochs
	frac := 1.0
	if total > 0 {
		frac = math.Min(1, (epoch-sc.WarmupEpochs)/total)
	}
	switch sc.Name {
	case "step":
		lr := peak
		for _, m := range sc.Milestones {
			if epoch >= float64(m) {
				lr *= sc.Gamma
			}
		}
		return lr
	case "cosine":
		return sc.MinLR + (peak-sc.MinLR)*0.5*(1+math.Cos(math.Pi*frac))
	case "linear":
		return peak + (sc.MinLR-peak)*frac
	default:
		return peak
	}
}
