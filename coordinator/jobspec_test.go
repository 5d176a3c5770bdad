package coordinator

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

const validYAML = `
name: resnet18-cifar
net: resnet18
classes: 10
input: {channels: 3, height: 32, width: 32}
dataset:
  uri: s3://data/cifar10/train
  layout: class_folders
eval:
  uri: s3://data/cifar10/val
global_batch_size: 512
epochs: 90
optimizer:
  name: sgd
  lr: 0.1
  momentum: 0.9
  weight_decay: 1e-4
schedule:
  name: step
  warmup_epochs: 5
  linear_scaling: true
  base_batch_size: 256
  milestones: [30, 60, 80]
checkpoint:
  uri: s3://ckpt/resnet18
  keep: 3
world: {min: 2, max: 8}
seed: 42
`

const validJSON = `{"name":"lenet","net":"lenet5","classes":10,
 "input":{"channels":1,"height":28,"width":28},
 "dataset":{"uri":"/data/mnist","layout":"idx"},
 "global_batch_size":64,"epochs":2,"optimizer":{"name":"adam","lr":0.001}}`

func TestParseJobSpecValid(t *testing.T) {
	s, err := ParseJobSpec([]byte(validYAML))
	if err != nil {
		t.Fatalf("parse yaml: %v", err)
	}
	if s.Name != "resnet18-cifar" || s.Net != "resnet18" || s.Classes != 10 || s.Input.Height != 32 {
		t.Errorf("yaml fields: %+v", s)
	}
	if s.Optimizer.WeightDecay != 1e-4 || len(s.Schedule.Milestones) != 3 || s.World.Max != 8 || s.Seed != 42 {
		t.Errorf("yaml fields: %+v", s)
	}
	// Defaults filled in.
	if s.Eval.Layout != LayoutClassFolders || s.Eval.EveryEpochs != 1 {
		t.Errorf("eval defaults: %+v", s.Eval)
	}
	if s.Checkpoint.EveryEpochs != 1 || s.Schedule.Gamma != 0.1 {
		t.Errorf("checkpoint/schedule defaults: %+v %+v", s.Checkpoint, s.Schedule)
	}

	j, err := ParseJobSpec([]byte(validJSON))
	if err != nil {
		t.Fatalf("parse json: %v", err)
	}
	if j.Optimizer.Name != "adam" || len(j.Optimizer.Betas) != 2 || j.Optimizer.Eps != 1e-8 {
		t.Errorf("adam defaults: %+v", j.Optimizer)
	}
	if j.World.Min != 1 || j.World.Max != 0 || j.Schedule.Name != "constant" || j.Input.Channels != 1 {
		t.Errorf("json defaults: %+v", j)
	}
}

// mutate returns validYAML parsed without validation, changed by f.
func TestValidateFieldErrors(t *testing.T) {
	base, err := ParseJobSpec([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*JobSpec)
		want   []string // field paths that must be reported
	}{
		{"lr zero", func(s *JobSpec) { s.Optimizer.LR = 0 }, []string{"spec.optimizer.lr: must be > 0"}},
		{"lr NaN", func(s *JobSpec) { s.Optimizer.LR = math.NaN() }, []string{"spec.optimizer.lr"}},
		{"no name", func(s *JobSpec) { s.Name = "" }, []string{"spec.name: required"}},
		{"name with dot", func(s *JobSpec) { s.Name = "a.b" }, []string{"spec.name"}},
		{"name uppercase", func(s *JobSpec) { s.Name = "Job" }, []string{"spec.name"}},
		{"no net", func(s *JobSpec) { s.Net = "" }, []string{"spec.net: required"}},
		{"no dataset", func(s *JobSpec) { s.Dataset.URI = "" }, []string{"spec.dataset.uri: required"}},
		{"bad layout", func(s *JobSpec) { s.Dataset.Layout = "zip" }, []string{"spec.dataset.layout"}},
		{"one class", func(s *JobSpec) { s.Classes = 1 }, []string{"spec.classes"}},
		{"zero height", func(s *JobSpec) { s.Input.Height = 0 }, []string{"spec.input.height"}},
		{"batch below world", func(s *JobSpec) { s.GlobalBatchSize = 4 }, []string{"spec.global_batch_size"}},
		{"negative batch", func(s *JobSpec) { s.GlobalBatchSize = -1 }, []string{"spec.global_batch_size: must be > 0"}},
		{"epochs", func(s *JobSpec) { s.Epochs = 0 }, []string{"spec.epochs"}},
		{"optimizer", func(s *JobSpec) { s.Optimizer.Name = "lamb" }, []string{"spec.optimizer.name"}},
		{"momentum 1", func(s *JobSpec) { s.Optimizer.Momentum = 1 }, []string{"spec.optimizer.momentum"}},
		{"nesterov no momentum", func(s *JobSpec) { s.Optimizer.Nesterov = true; s.Optimizer.Momentum = 0 }, []string{"spec.optimizer.nesterov"}},
		{"betas on sgd", func(s *JobSpec) { s.Optimizer.Betas = []float64{0.9, 0.99} }, []string{"spec.optimizer.betas"}},
		{"adam bad beta", func(s *JobSpec) {
			s.Optimizer.Name = "adamw"
			s.Optimizer.Betas = []float64{0.9, 1.5}
			s.Optimizer.Eps = 1e-8
		}, []string{"spec.optimizer.betas[1]"}},
		{"schedule name", func(s *JobSpec) { s.Schedule.Name = "exp"; s.Schedule.Milestones = nil }, []string{"spec.schedule.name"}},
		{"warmup too long", func(s *JobSpec) { s.Schedule.WarmupEpochs = 90 }, []string{"spec.schedule.warmup_epochs"}},
		{"milestones unordered", func(s *JobSpec) { s.Schedule.Milestones = []int{30, 20} }, []string{"spec.schedule.milestones[1]"}},
		{"gamma", func(s *JobSpec) { s.Schedule.Gamma = 2 }, []string{"spec.schedule.gamma"}},
		{"min lr above peak", func(s *JobSpec) { s.Schedule.Name = "cosine"; s.Schedule.Milestones = nil; s.Schedule.MinLR = 1 }, []string{"spec.schedule.min_lr"}},
		{"world min", func(s *JobSpec) { s.World.Min = 0 }, []string{"spec.world.min"}},
		{"world max below min", func(s *JobSpec) { s.World.Min = 9 }, []string{"spec.world.max"}},
		{"checkpoint keep", func(s *JobSpec) { s.Checkpoint.Keep = -1 }, []string{"spec.checkpoint.keep"}},
		{"eval every", func(s *JobSpec) { s.Eval.EverySteps = -3 }, []string{"spec.eval.every_steps"}},
		{"submission with a slash", func(s *JobSpec) { s.Submission = "a/b" }, []string{"spec.submission"}},
		{"several at once", func(s *JobSpec) { s.Optimizer.LR = -1; s.Classes = 0 },
			[]string{"spec.classes", "spec.optimizer.lr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Schedule.Milestones = append([]int(nil), base.Schedule.Milestones...)
			tt.mutate(&s)
			err := s.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			var verr ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("error %T is not a ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if len(verr) != len(tt.want) {
				t.Errorf("got %d field errors (%v), want %d", len(verr), err, len(tt.want))
			}
		})
	}
}

func TestParseJobSpecRejects(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"empty", "  \n", "empty document"},
		{"unknown yaml field", validYAML + "learning_rate: 3\n", "learning_rate"},
		{"unknown json field", `{"name":"x","lr":1}`, "lr"},
		{"bad yaml", "name: [unclosed", "yaml"},
		{"bad json", `{"name": }`, "json"},
		{"trailing json", validJSON + `{}`, "trailing"},
		{"wrong type", "classes: ten\n", "yaml"},
		{"invalid value", strings.Replace(validYAML, "lr: 0.1", "lr: 0", 1), "spec.optimizer.lr: must be > 0"},
		{"too big", strings.Repeat("#", MaxJobSpecBytes+1), "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseJobSpec([]byte(tt.doc))
			if err == nil {
				t.Fatal("ParseJobSpec succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("error %q does not wrap ErrInvalidSpec", err)
			}
		})
	}
}

func TestLRAt(t *testing.T) {
	s, err := ParseJobSpec([]byte(validYAML)) // lr 0.1, batch 512/256 => peak 0.2, warmup 5, step at 30/60/80
	if err != nil {
		t.Fatal(err)
	}
	cos := s
	cos.Schedule.Name, cos.Schedule.Milestones, cos.Schedule.WarmupEpochs = "cosine", nil, 0
	lin := cos
	lin.Schedule.Name, lin.Schedule.LinearScaling, lin.Schedule.MinLR = "linear", false, 0.01
	tests := []struct {
		name  string
		spec  JobSpec
		epoch float64
		want  float64
	}{
		{"warmup start = unscaled lr", s, 0, 0.1},
		{"warmup middle", s, 2.5, 0.15},
		{"warmup end = peak", s, 5, 0.2},
		{"before first milestone", s, 29.99, 0.2},
		{"after first milestone", s, 30, 0.02},
		{"after last milestone", s, 85, 0.0002},
		{"cosine start", cos, 0, 0.2},
		{"cosine half", cos, 45, 0.1},
		{"cosine end", cos, 90, 0},
		{"linear half, no scaling", lin, 45, 0.055},
		{"linear past end clamps", lin, 200, 0.01},
		{"negative epoch clamps", s, -1, 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.spec.LRAt(tt.epoch)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("LRAt(%g) = %g, want %g", tt.epoch, got, tt.want)
			}
		})
	}
}

func FuzzParseJobSpec(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte(validJSON))
	f.Add([]byte("name: x\nworld: {min: 3, max: 2}\n"))
	f.Add([]byte("a: &a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseJobSpec(data)
		if err != nil {
			return
		}
		// Whatever parses must validate, and survive a JSON round trip.
		if err := s.Validate(); err != nil {
			t.Fatalf("parsed spec fails Validate: %v", err)
		}
		if !ValidJobName(s.Name) {
			t.Fatalf("parsed spec has invalid name %q", s.Name)
		}
		if lr := s.LRAt(0.5); math.IsNaN(lr) || lr < 0 {
			t.Fatalf("LRAt(0.5) = %g", lr)
		}
	})
}

func BenchmarkParseJobSpecYAML(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseJobSpec([]byte(validYAML)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseJobSpecJSON(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseJobSpec([]byte(validJSON)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestExampleJobSpec(t *testing.T) {
	data, err := os.ReadFile("testdata/example-job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseJobSpec(data)
	if err != nil {
		t.Fatalf("example spec: %v", err)
	}
	if s.PeakLR() != 0.2 || s.World.Min != 2 || !s.Optimizer.Nesterov || s.Eval.Layout != LayoutClassFolders {
		t.Fatalf("example spec parsed as %+v", s)
	}
}
