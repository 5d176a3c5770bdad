package optim

import (
	"fmt"
	"math"
	"sort"
)

// Schedule gives the learning rate for an update number (0-based), a pure
// function so that a resumed run recomputes it exactly.
type Schedule interface {
	LR(step int) float64
}

// Constant is a fixed learning rate.
type Constant float64

func (c Constant) LR(int) float64 { return float64(c) }

// StepDecay is StepLR: base·γ^⌊step/every⌋.
type StepDecay struct {
	Base, Gamma float64
	Every       int
}

func (s StepDecay) LR(step int) float64 {
	return s.Base * math.Pow(s.Gamma, float64(step/max(s.Every, 1)))
}

// MultiStep is MultiStepLR: base·γ^(number of milestones ≤ step).
type MultiStep struct {
	Base, Gamma float64
	Milestones  []int // sorted ascending
}

func (m MultiStep) LR(step int) float64 {
	k := sort.SearchInts(m.Milestones, step+1) // milestones ≤ step
	return m.Base * math.Pow(m.Gamma, float64(k))
}

// Cosine is CosineAnnealingLR over Total steps down to Min.
type Cosine struct {
	Base, Min float64
	Total     int
}

func (c Cosine) LR(step int) float64 {
	t := min(step, c.Total)
	return c.Min + (c.Base-c.Min)*(1+math.Cos(math.Pi*float64(t)/float64(max(c.Total, 1))))/2
}

// Warmup ramps linearly from Start·After.LR(0) to After's rate over Steps
// updates (LinearLR with start_factor Start), then follows After shifted
// by nothing: step s ≥ Steps uses After.LR(s).
type Warmup struct {
	Steps int
	Start float64 // start factor, e.g. 0.1 (0 < Start ≤ 1)
	After Schedule
}

func (w Warmup) LR(step int) float64 {
	lr := w.After.LR(step)
	if step >= w.Steps {
		return lr
	}
	f := w.Start + (1-w.Start)*float64(step)/float64(w.Steps)
	return lr * f
}

// LinearScaling is the linear scaling rule of Goyal et al. (2017): a base
// rate tuned for a batch of ref (256 for ImageNet) scales by batch/ref.
func LinearScaling(baseLR float64, globalBatch, ref int) float64 {
	return baseLR * float64(globalBatch) / float64(ref)
}

// ScheduleConfig describes a schedule in job specs and flags.
type ScheduleConfig struct {
	Kind        string  `json:"kind" yaml:"kind"` // constant|step|multistep|cosine
	Gamma       float64 `json:"gamma,omitempty" yaml:"gamma,omitempty"`
	Every       int     `json:"every,omitempty" yaml:"every,omitempty"`
	Milestones  []int   `json:"milestones,omitempty" yaml:"milestones,omitempty"`
	MinLR       float64 `json:"min_lr,omitempty" yaml:"min_lr,omitempty"`
	WarmupSteps int     `json:"warmup_steps,omitempty" yaml:"warmup_steps,omitempty"`
	WarmupStart float64 `json:"warmup_start,omitempty" yaml:"warmup_start,omitempty"`
}

// Build makes the schedule for base rate lr over total steps.
func (c ScheduleConfig) Build(lr float64, total int) (Schedule, error) {
	if lr <= 0 {
		return nil, fmt.Errorf("schedule: learning rate %v must be > 0", lr)
	}
	var s Schedule
	switch c.Kind {
	case "", "constant":
		s = Constant(lr)
	case "step":
		if c.Every <= 0 || c.Gamma <= 0 {
			return nil, fmt.Errorf("schedule step: every (%d) and gamma (%v) must be > 0", c.Every, c.Gamma)
		}
		s = StepDecay{Base: lr, Gamma: c.Gamma, Every: c.Every}
	case "multistep":
		if !sort.IntsAreSorted(c.Milestones) || c.Gamma <= 0 {
			return nil, fmt.Errorf("schedule multistep: milestones %v must be ascending and gamma (%v) > 0", c.Milestones, c.Gamma)
		}
		s = MultiStep{Base: lr, Gamma: c.Gamma, Milestones: c.Milestones}
	case "cosine":
		if total <= 0 {
			return nil, fmt.Errorf("schedule cosine: total steps %d must be > 0", total)
		}
		s = Cosine{Base: lr, Min: c.MinLR, Total: total}
	default:
		return nil, fmt.Errorf("schedule: unknown kind %q (constant, step, multistep, cosine)", c.Kind)
	}
	if c.WarmupSteps > 0 {
		start := c.WarmupStart
		if start <= 0 || start > 1 {
			return nil, fmt.Errorf("schedule: warmup_start %v outside (0, 1]", start)
		}
		s = Warmup{Steps: c.WarmupSteps, Start: start, After: s}
	}
	return s, nil
}
