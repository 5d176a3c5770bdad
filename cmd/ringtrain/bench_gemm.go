package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/ringtrain/ringtrain/nn/kernels"
)

// benchGemm runs `ringtrain bench gemm --n 2048 [--threads 2] [--reps 5]
// [--kernels avx512]`: square SGEMM on a kernels.Pool, one progress line
// per repetition on stderr and one parseable result line on stdout:
//
//	gemm n=2048 threads=2 path=avx512 gflops=XXX.X ms=YY.Y
//
// gflops and ms come from the fastest repetition. Every flag can also be
// set as RINGTRAIN_<FLAG> (e.g. RINGTRAIN_KERNELS=avx2).
func benchGemm(args []string) error {
	fs := flag.NewFlagSet("bench gemm", flag.ContinueOnError)
	n := fs.Int("n", 2048, "matrix size (C = A·B, all n×n)")
	threads := fs.Int("threads", 2, "compute threads")
	reps := fs.Int("reps", 5, "timed repetitions after one warm-up")
	path := fs.String("kernels", "", "micro-kernel path: generic|avx2|avx512 (default: best for this CPU)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *reps <= 0 || *threads <= 0 {
		return fmt.Errorf("bench gemm: --n, --reps and --threads must be positive (got %d, %d, %d)", *n, *reps, *threads)
	}
	pool, err := kernels.NewPoolWithKernel(*threads, *path)
	if err != nil {
		return fmt.Errorf("bench gemm: %w", err)
	}
	defer pool.Close()

	size := *n
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	a, b, c := benchGemmRand(rng, size*size), benchGemmRand(rng, size*size), make([]float32, size*size)
	gflops := func(d time.Duration) float64 {
		return 2 * float64(size) * float64(size) * float64(size) / d.Seconds() / 1e9
	}
	pool.Sgemm(false, false, size, size, size, 1, a, size, b, size, 0, c, size) // warm-up: packing buffers, caches
	best := time.Duration(1<<63 - 1)
	start := time.Now()
	for i := 1; i <= *reps; i++ {
		t0 := time.Now()
		pool.Sgemm(false, false, size, size, size, 1, a, size, b, size, 0, c, size)
		d := time.Since(t0)
		best = min(best, d)
		eta := time.Since(start) / time.Duration(i) * time.Duration(*reps-i)
		fmt.Fprintf(os.Stderr, "bench gemm: rep %d/%d %.1f ms %.1f GFLOP/s eta %s\n", i, *reps, float64(d.Microseconds())/1e3, gflops(d), eta.Round(time.Millisecond))
	}
	fmt.Printf("gemm n=%d threads=%d path=%s gflops=%.1f ms=%.1f\n", size, pool.Threads(), pool.KernelPath(), gflops(best), float64(best.Microseconds())/1e3)
	return nil
}

func benchGemmRand(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}
