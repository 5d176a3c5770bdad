//go:build unix

// Command gemmbench times kernels.Sgemm on square matrices and prints one
// parseable line per size:
//
//	gemm n=2048 threads=2 path=avx512 gflops=XXX.X ms=YY.Y cpu_gflops=ZZZ.Z
//
// gflops uses the best wall time of reps calls; cpu_gflops divides the FLOPs
// of all reps by the process CPU time (user+sys) and multiplies by threads,
// which is steadier on a shared machine. scripts/bench_gemm.py runs it (it
// needs no build of the whole ringtrain binary, and reports CPU time, which
// `ringtrain bench gemm` does not).
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ringtrain/ringtrain/nn/kernels"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gemmbench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gemmbench", flag.ContinueOnError)
	sizes := fs.String("n", "512,1024,2048", "comma-separated square sizes")
	threads := fs.Int("threads", 2, "pool threads")
	reps := fs.Int("reps", 5, "timed calls per size (after one warm-up)")
	path := fs.String("path", "", "kernel path: generic|avx2|avx512 (default: best)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool, err := kernels.NewPoolWithKernel(*threads, *path)
	if err != nil {
		return err
	}
	defer pool.Close()
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad size %q in -n", f)
		}
		r := measure(pool, n, *reps)
		fmt.Printf("gemm n=%d threads=%d path=%s gflops=%.1f ms=%.2f cpu_gflops=%.1f\n",
			n, pool.Threads(), pool.KernelPath(), r.gflops, r.bestMS, r.cpuGflops)
	}
	return nil
}

type result struct{ gflops, bestMS, cpuGflops float64 }

func measure(pool *kernels.Pool, n, reps int) result {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	a, b, c := randSlice(rng, n*n), randSlice(rng, n*n), make([]float32, n*n)
	pool.Sgemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n)
	flops := 2 * float64(n) * float64(n) * float64(n)
	best := time.Duration(1 << 62)
	cpu0 := cpuTime()
	for i := 0; i < max(reps, 1); i++ {
		t0 := time.Now()
		pool.Sgemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n)
		best = min(best, time.Since(t0))
	}
	cpu := cpuTime() - cpu0
	r := result{gflops: flops / best.Seconds() / 1e9, bestMS: float64(best.Microseconds()) / 1e3}
	if cpu > 0 {
		r.cpuGflops = flops * float64(max(reps, 1)) / cpu.Seconds() / 1e9 * float64(pool.Threads())
	}
	return r
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
