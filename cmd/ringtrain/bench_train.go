package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/optim"
	"gorgonia.org/tensor"
)

// benchTrain times full SGD steps (forward, loss, backward, update) on
// random data and prints one parseable line; with --predict it times
// inference instead (evaluation mode, forward only, State.Inference, as
// prediction and feature extraction run).
func benchTrain(args []string) error {
	fs := flag.NewFlagSet("bench train", flag.ContinueOnError)
	name, cfg, _ := netFlags(fs)
	batch := fs.Int("batch", 8, "batch size")
	threads := fs.Int("threads", runtime.GOMAXPROCS(0), "compute threads")
	seconds := fs.Float64("seconds", 6, "minimum measuring time")
	minSteps := fs.Int("min-steps", 2, "minimum measured steps")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured steps to this file")
	predict := fs.Bool("predict", false, "time inference (evaluation mode, forward only) instead of training steps")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cfg.Classes == 0 {
		cfg.Classes = 10
	}
	m, err := buildFromFlags(*name, cfg, true)
	if err != nil {
		return err
	}
	pool := kernels.NewPool(*threads)
	defer pool.Close()
	opt, err := optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9})
	if err != nil {
		return err
	}
	optim.UsePool(opt, pool)
	rng := rand.New(rand.NewPCG(1, 2))
	shape := append([]int{*batch}, m.In...)
	xd := make([]float32, *batch*m.In.Size())
	for i := range xd {
		xd[i] = float32(rng.NormFloat64())
	}
	x := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(xd))
	labels := make([]int32, *batch)
	for i := range labels {
		labels[i] = int32(rng.IntN(m.Out[0]))
	}
	st := &nn.State{Train: true, Pool: pool, RNG: rng}
	evalState := &nn.State{Inference: true, Pool: pool, RNG: rng}
	loss := &nn.CrossEntropy{}
	step := func() error {
		if *predict {
			_, err := m.Forward(evalState, x)
			return err
		}
		m.ZeroGrad()
		y, err := m.Forward(st, x)
		if err != nil {
			return err
		}
		if _, err := loss.Forward(y, labels); err != nil {
			return err
		}
		if err := m.Backward(st, loss.Backward()); err != nil {
			return err
		}
		opt.Step(0.01)
		return nil
	}
	if err := step(); err != nil { // warm-up: buffers allocated here
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuSeconds()
	n, start, shown := 0, time.Now(), time.Now()
	for time.Since(start).Seconds() < *seconds || n < *minSteps {
		if err := step(); err != nil {
			return err
		}
		n++
		if time.Since(shown) >= 2*time.Second { // a progress line on stderr
			shown = time.Now()
			el := time.Since(start)
			left := max(time.Duration(*seconds*float64(time.Second))-el, 0)
			fmt.Fprintf(os.Stderr, "bench train: %d steps %.2f img/s elapsed %s eta %s\n",
				n, float64(n**batch)/el.Seconds(), el.Round(time.Millisecond), left.Round(time.Millisecond))
		}
	}
	dt := time.Since(start).Seconds() / float64(n)
	cpu := (cpuSeconds() - cpu0) / float64(n)
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	mode := "train"
	if *predict {
		mode = "predict"
	}
	fmt.Printf("%s net=%s input=%d batch=%d threads=%d img_per_s=%.2f ms_per_step=%.1f cpu_ms_per_step=%.1f peak_rss_mib=%.0f\n",
		mode, *name, m.In[1], *batch, *threads, float64(*batch)/dt, dt*1000, cpu*1000, float64(ru.Maxrss)/1024)
	return nil
}

// cpuSeconds is the process's user+system CPU time so far. CPU time per
// step moves far less than wall time when other programs load the machine
// (it still grows with cache and memory-bandwidth contention), so it is
// the steadier figure for comparing two builds on a shared host.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
