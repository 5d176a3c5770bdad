package ddpbench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A child process of TestProcesses runs one rank.
func TestMain(m *testing.M) {
	if os.Getenv("RINGTRAIN_DDPBENCH_CHILD") == "1" {
		if err := RankMain(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func lenetConfig(world int, overlap bool) Config {
	_, c := NewFlagSet("t")
	c.Net, c.Input, c.Channels, c.Batch, c.World, c.Overlap = "lenet", 28, 1, 16, world, overlap
	c.Steps, c.Warmup, c.BucketMB, c.Timeout = 3, 1, 0.01, 30*time.Second
	return *c
}

func checkResult(t *testing.T, r Result, world int) {
	t.Helper()
	if r.StepMS <= 0 || r.ComputeMS <= 0 || r.GradMB <= 0 {
		t.Fatalf("empty measurement: %+v", r)
	}
	if len(r.RankComputeMS) != world || len(r.RankCommMS) != world {
		t.Fatalf("per-rank stats for %d/%d ranks, want %d", len(r.RankComputeMS), len(r.RankCommMS), world)
	}
	if got := float64(r.Batch) / (r.StepMS / 1e3); math.Abs(got-r.ImgPerS) > 1e-6*got {
		t.Fatalf("img/s %g, batch/step gives %g", r.ImgPerS, got)
	}
	// A step contains its compute and its (exposed) communication.
	if r.ComputeMS+r.CommMS > 1.5*r.StepMS+1 {
		t.Fatalf("compute %g + comm %g ms exceed the step %g ms", r.ComputeMS, r.CommMS, r.StepMS)
	}
}

func TestRunMem(t *testing.T) {
	for _, c := range []struct {
		world   int
		overlap bool
	}{{1, false}, {2, false}, {2, true}, {3, true}} {
		t.Run(fmt.Sprintf("world%d/overlap=%t", c.world, c.overlap), func(t *testing.T) {
			r, err := RunMem(context.Background(), lenetConfig(c.world, c.overlap), nil)
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, r, c.world)
			t.Log(r.Line())
		})
	}
}

// Real processes over the gRPC ring: this test binary is re-executed as
// the ranks (TestMain).
func TestProcesses(t *testing.T) {
	t.Setenv("RINGTRAIN_DDPBENCH_CHILD", "1")
	var progress bytes.Buffer
	cfg := lenetConfig(2, true)
	r, err := RunProcesses(context.Background(), cfg, []string{os.Args[0]}, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	checkResult(t, r, 2)
	if !strings.Contains(progress.String(), "ddp step 3/3") {
		t.Fatalf("no progress lines (%d bytes):\n%s\nline %s", progress.Len(), progress.String(), r.Line())
	}
	kv, err := ParseLine(r.Line())
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"net": "lenet", "world": "2", "overlap": "true", "global_batch": "16", "input": "28"} {
		if kv[k] != want {
			t.Errorf("%s=%q, want %q (line %s)", k, kv[k], want, r.Line())
		}
	}
	for _, k := range []string{"step_ms", "compute_ms", "comm_ms", "img_per_s"} {
		if v, err := strconv.ParseFloat(kv[k], 64); err != nil || v < 0 {
			t.Errorf("%s=%q is not a non-negative number", k, kv[k])
		}
	}
}

func TestMainFlags(t *testing.T) {
	t.Setenv("RINGTRAIN_DDPBENCH_CHILD", "1")
	t.Setenv("RINGTRAIN_STEPS", "2")
	var out, errb bytes.Buffer
	// -input 0: the net's default (28), reported as built.
	args := []string{"-net", "lenet", "-input", "0", "-channels", "0", "-batch", "8", "-world", "1", "-warmup", "0"}
	if err := Main(context.Background(), args, []string{os.Args[0]}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	kv, err := ParseLine(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if kv["steps"] != "2" || kv["world"] != "1" || kv["input"] != "28" {
		t.Fatalf("RINGTRAIN_STEPS not applied or wrong world: %s", out.String())
	}
}

func TestValidate(t *testing.T) {
	ok := lenetConfig(2, true)
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"no net":        func(c *Config) { c.Net = "" },
		"world 0":       func(c *Config) { c.World = 0 },
		"batch < world": func(c *Config) { c.Batch = 1 },
		"no steps":      func(c *Config) { c.Steps = 0 },
		"threads 0":     func(c *Config) { c.Threads = 0 },
		"bucket 0":      func(c *Config) { c.BucketMB = 0 },
		"classes 0":     func(c *Config) { c.Classes = 0 },
	}
	for name, f := range cases {
		c := ok
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseLine(t *testing.T) {
	cases := []struct {
		line string
		ok   bool
	}{
		{"ddp net=x step_ms=1.5", true},
		{"train net=x", false},
		{"ddp net", false},
		{"", false},
	}
	for _, c := range cases {
		_, err := ParseLine(c.line)
		if (err == nil) != c.ok {
			t.Errorf("ParseLine(%q): err %v, want ok=%t", c.line, err, c.ok)
		}
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}}
	for _, c := range cases {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %g, want %g", c.in, got, c.want)
		}
	}
}

func TestRandomSourceDeterministic(t *testing.T) {
	a := newRandomSource([]int{1, 4, 4}, 10, 8, 100, 5)
	b := newRandomSource([]int{1, 4, 4}, 10, 8, 100, 5)
	xa, xb := make([]float32, 3*16), make([]float32, 3*16)
	la, lb := make([]int32, 3), make([]int32, 3)
	idx := []int32{0, 9, 42}
	if err := a.Load(context.Background(), idx, xa, la); err != nil {
		t.Fatal(err)
	}
	if err := b.Load(context.Background(), idx, xb, lb); err != nil {
		t.Fatal(err)
	}
	for i := range xa {
		if xa[i] != xb[i] {
			t.Fatalf("same seed, different data at %d", i)
		}
	}
	// Sample 9 is pool entry 1: equal to loading index 1.
	x1, l1 := make([]float32, 16), make([]int32, 1)
	a.Load(context.Background(), []int32{1}, x1, l1)
	for i := range x1 {
		if x1[i] != xa[16+i] || l1[0] != la[1] {
			t.Fatalf("index 9 is not pool entry 1")
		}
	}
	if err := a.Load(context.Background(), idx, xa[:10], la); err == nil {
		t.Fatal("short buffer accepted")
	}
}
