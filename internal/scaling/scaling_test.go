package scaling

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestRingSec(t *testing.T) {
	l := Link{BytesPerSec: 1e9, LatencySec: 1e-4}
	cases := []struct {
		n     int
		bytes float64
		want  float64
	}{
		{1, 1e9, 0},
		{2, 1e9, 1.0 + 2*1e-4},              // 2·1/2 · 1 s + 2 messages
		{4, 1e9, 1.5 + 6*1e-4},              // 2·3/4
		{8, 0, 14 * 1e-4},                   // latency only
		{64, 100e6, 2*63.0/64*0.1 + 126e-4}, // bandwidth term → 2·bytes/bw
	}
	for _, c := range cases {
		if got := RingSec(c.n, c.bytes, l); !near(got, c.want) {
			t.Errorf("RingSec(%d, %g) = %g, want %g", c.n, c.bytes, got, c.want)
		}
	}
}

func TestPredict(t *testing.T) {
	l := Link{BytesPerSec: 1e9, LatencySec: 0}
	base := Workload{ComputeSec: 1, BackwardFrac: 0.5, GradBytes: 1e9}
	cases := []struct {
		name        string
		w           Workload
		n           int
		wantExposed float64
		wantEff     float64
	}{
		{"one worker has no comm", base, 1, 0, 1},
		{"no overlap: all comm exposed", base, 2, 1, 0.5},
		{"full overlap hides backward's 0.5 s", with(base, 1, 1), 2, 0.5, 1 / 1.5},
		{"half overlap hides 0.25 s", with(base, 0.5, 1), 2, 0.75, 1 / 1.75},
		{"comm fully hidden", Workload{ComputeSec: 4, BackwardFrac: 0.5, Overlap: 1, GradBytes: 1e9}, 2, 0, 1},
		// 4 buckets of 0.25 GB: comm 1 s ≤ hide 2 s, but the last bucket
		// (0.25 s at n=2) starts only when backward ends.
		{"last bucket never hides", Workload{ComputeSec: 4, BackwardFrac: 0.5, Overlap: 1, GradBytes: 1e9, Buckets: 4}, 2, 0.25, 4 / 4.25},
		{"n=4 moves 1.5x bytes", base, 4, 1.5, 1 / 2.5},
		// The update is paid by one worker too: 1.5/(1.5+1).
		{"update counts as useful work", Workload{ComputeSec: 1, BackwardFrac: 0.5, GradBytes: 1e9, UpdateSec: 0.5}, 2, 1, 1.5 / 2.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Predict(c.w, l, c.n)
			if err != nil {
				t.Fatal(err)
			}
			if !near(p.ExposedSec, c.wantExposed) || !near(p.Efficiency, c.wantEff) {
				t.Fatalf("exposed %g s, efficiency %g; want %g s, %g", p.ExposedSec, p.Efficiency, c.wantExposed, c.wantEff)
			}
			if !near(p.StepSec, c.w.ComputeSec+c.w.UpdateSec+p.ExposedSec) || !near(p.Speedup, float64(c.n)*p.Efficiency) {
				t.Fatalf("inconsistent prediction %+v", p)
			}
		})
	}
}

func with(w Workload, overlap float64, buckets int) Workload {
	w.Overlap, w.Buckets = overlap, buckets
	return w
}

// Properties that any sane ring model keeps: more bandwidth never hurts,
// more overlap never hurts, more workers never help efficiency, and the
// latency term grows linearly with n while the bandwidth term saturates.
func TestMonotone(t *testing.T) {
	w := Workload{ComputeSec: 0.2, BackwardFrac: 2.0 / 3, Overlap: 0.8, GradBytes: 102e6, Buckets: 4}
	prev := 2.0
	for _, n := range []int{2, 4, 8, 16, 32, 64, 128} {
		p, err := Predict(w, Gbit(25, 20e-6), n)
		if err != nil {
			t.Fatal(err)
		}
		if p.Efficiency > prev+1e-12 {
			t.Fatalf("efficiency rose with n=%d: %g > %g", n, p.Efficiency, prev)
		}
		prev = p.Efficiency
		slow, _ := Predict(w, Gbit(10, 20e-6), n)
		if slow.Efficiency > p.Efficiency {
			t.Fatalf("n=%d: 10 Gbit/s beat 25 Gbit/s", n)
		}
		w0 := w
		w0.Overlap = 0
		none, _ := Predict(w0, Gbit(25, 20e-6), n)
		if none.Efficiency > p.Efficiency {
			t.Fatalf("n=%d: no overlap beat overlap", n)
		}
	}
	// Bandwidth term saturates at 2·bytes/bw: 64 → 1024 workers adds
	// less than 2% with zero latency.
	a, b := RingSec(64, 1e8, Gbit(10, 0)), RingSec(1024, 1e8, Gbit(10, 0))
	if b/a > 1.02 {
		t.Fatalf("bandwidth term grew %gx from 64 to 1024 workers", b/a)
	}
}

func TestValidate(t *testing.T) {
	bad := []Workload{
		{ComputeSec: 0},
		{ComputeSec: 1, BackwardFrac: 1.5},
		{ComputeSec: 1, Overlap: -0.1},
		{ComputeSec: 1, GradBytes: -1},
		{ComputeSec: 1, Buckets: -1},
		{ComputeSec: 1, UpdateSec: -1},
	}
	for _, w := range bad {
		if _, err := Predict(w, Gbit(10, 0), 2); err == nil {
			t.Errorf("Predict accepted %+v", w)
		}
	}
	if _, err := Predict(Workload{ComputeSec: 1}, Link{}, 2); err == nil {
		t.Error("Predict accepted a zero-bandwidth link")
	}
	if _, err := Predict(Workload{ComputeSec: 1}, Gbit(10, 0), 0); err == nil {
		t.Error("Predict accepted world 0")
	}
}

func TestMaxWorldAt(t *testing.T) {
	// Latency only: exposed = 2(n−1)·1 ms against 100 ms compute, no
	// overlap; efficiency ≥ 0.9 needs 2(n−1) ms ≤ 11.1 ms → n ≤ 6.
	w := Workload{ComputeSec: 0.1, BackwardFrac: 0.5}
	n, err := MaxWorldAt(w, Link{BytesPerSec: 1e9, LatencySec: 1e-3}, 0.9, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Fatalf("MaxWorldAt = %d, want 6", n)
	}
}

func TestWriteMarkdown(t *testing.T) {
	var buf bytes.Buffer
	scs := []Scenario{{Name: "x", Source: "test", Workload: Workload{ComputeSec: 1, BackwardFrac: 0.5, GradBytes: 1e9}}}
	if err := WriteMarkdown(&buf, scs, []NamedLink{{"8 Gbit/s", Gbit(8, 0)}}, []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	// 8 Gbit/s = 1 GB/s: n=2 exposes 1 s of a 1 s step.
	if !strings.Contains(buf.String(), "| 8 Gbit/s | 100.0% (0 ms) | 50.0% (1000 ms) |") {
		t.Fatalf("table:\n%s", buf.String())
	}
	rows, err := Table(scs, []NamedLink{{"8", Gbit(8, 0)}}, []int{1, 2, 4})
	if err != nil || len(rows) != 3 || rows[2].World != 4 {
		t.Fatalf("Table: %v %+v", err, rows)
	}
}

// The model against "bench ddp" on the device machine's free cores
// (BENCHMARKS.scaling.md, ResNet-18 32x32, 32 images per rank, 44.8 MB of
// gradients): bandwidth fitted at world 2 without overlap (43.1 ms →
// 1.04 GB/s), update time from world 2 (46 ms), measured mean compute per
// world. The CPU ring hides little behind backward here (its goroutines
// compete with compute), so overlap 0. Predicted steps must land within
// 5% of the measured medians at worlds 4 and 8.
func TestAgainstMeasured(t *testing.T) {
	link := Link{BytesPerSec: 44.8e6 / 0.0431, LatencySec: 25e-6}
	cases := []struct {
		n                 int
		computeMS, stepMS float64
	}{
		{2, 294.0, 382.5},
		{4, 317.2, 418.8},
		{8, 343.9, 480.7},
	}
	for _, c := range cases {
		w := Workload{ComputeSec: c.computeMS / 1e3, BackwardFrac: 2.0 / 3, GradBytes: 44.8e6, UpdateSec: 0.046}
		p, err := Predict(w, link, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if rel := math.Abs(p.StepSec*1e3-c.stepMS) / c.stepMS; rel > 0.05 {
			t.Errorf("world %d: predicted step %.1f ms, measured %.1f ms (%.1f%% off)", c.n, p.StepSec*1e3, c.stepMS, rel*100)
		} else {
			t.Logf("world %d: predicted %.1f ms, measured %.1f ms", c.n, p.StepSec*1e3, c.stepMS)
		}
	}
}
