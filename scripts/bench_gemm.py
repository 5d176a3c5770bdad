#!/usr/bin/python3
"""Side-by-side SGEMM throughput: ringtrain's nn/kernels vs OpenBLAS (numpy) vs torch.mm.

Run from the repository root with the system python (Debian python3-numpy, python3-torch):

    /usr/bin/python3 scripts/bench_gemm.py [--sizes 512,1024,2048] [--threads 2] [--rounds 5] [--reps 5]

The three libraries are measured in interleaved rounds (ours, OpenBLAS, torch, ours, ...) so
that the noise of a shared machine hits all of them alike. Each measurement is the best wall
time of --reps calls after a warm-up; the table reports, per library, the best and the median
over rounds, and the ratios of ours to the others (best/best and median/median). A second
table divides the FLOPs by process CPU time (× threads), which a loaded machine disturbs less.
OpenBLAS is forced to its SkylakeX kernels (OPENBLAS_CORETYPE=SkylakeX) on AVX-512 hosts: it mis-detects this
CPU otherwise. Ours runs as a subprocess: nn/kernels/internal/gemmbench (built once with
`go build`, or a prebuilt one with --gemmbench BIN), or `--ringtrain BIN` to use
`BIN bench gemm` instead.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchenv import openblas_env  # scripts/ is on sys.path: run as scripts/X.py


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--ringtrain", default="", help="ringtrain binary to run `bench gemm` with (default: build gemmbench)")
    p.add_argument("--gemmbench", default="", help="prebuilt nn/kernels/internal/gemmbench binary (default: go build it)")
    p.add_argument("--kernels", default="", help="our kernel path (generic|avx2|avx512), default best")
    return p.parse_args()


def main():
    args = parse_args()
    # Must be set before numpy/torch load their BLAS.
    os.environ.update(openblas_env())
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)

    sizes = [int(s) for s in args.sizes.split(",")]
    ours_cmd = build_ours(args)

    def bench_ours(n):
        cmd = ours_cmd(n)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        m = re.search(r"gemm n=(\d+) threads=(\d+) path=(\w+) gflops=([\d.]+)", out)
        if not m:
            raise RuntimeError(f"unparseable output of {cmd}: {out!r}")
        bench_ours.path = m.group(3)
        cpu = re.search(r"cpu_gflops=([\d.]+)", out)
        return float(m.group(4)), float(cpu.group(1)) if cpu else float("nan")

    def timed(f, n):
        """(best wall GFLOP/s, GFLOP per CPU-second × threads) over reps calls."""
        f()
        best = float("inf")
        c0 = time.process_time()
        for _ in range(args.reps):
            t = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t)
        cpu = time.process_time() - c0
        flops = 2 * n ** 3
        return flops / best / 1e9, flops * args.reps / cpu / 1e9 * args.threads

    def bench_numpy(n):
        rng = np.random.default_rng(n)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        return timed(lambda: np.matmul(a, b, out=c), n)

    def bench_torch(n):
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        return timed(lambda: torch.mm(a, b, out=c), n)

    libs = [("ours", bench_ours), ("openblas", bench_numpy), ("torch", bench_torch)]
    results = {(lib, n): [] for lib, _ in libs for n in sizes}
    cpu_results = {(lib, n): [] for lib, _ in libs for n in sizes}
    total = len(sizes) * args.rounds * len(libs)
    done, start = 0, time.time()
    for n in sizes:
        for r in range(args.rounds):
            for lib, f in libs:
                # OpenBLAS's and OpenMP's idle threads (of this process) spin
                # for up to ~0.1 s after a call; without a pause they steal a
                # core from whichever library runs next.
                time.sleep(0.5)
                g, c = f(n)
                results[(lib, n)].append(g)
                cpu_results[(lib, n)].append(c)
                done += 1
                el = time.time() - start
                print(f"[{done}/{total}] n={n} round={r + 1} {lib}: {g:.1f} GFLOP/s (cpu {c:.1f})  "
                      f"(eta {el / done * (total - done):.0f}s)", file=sys.stderr, flush=True)

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"threads={args.threads} rounds={args.rounds} reps={args.reps} our_path={getattr(bench_ours, 'path', '?')} "
          f"numpy={np.__version__} torch={torch.__version__} load1={load:.1f}")
    print()
    print("| n | ours best | OpenBLAS best | torch best | ours/OpenBLAS | ours/torch | ours med | OpenBLAS med | torch med | ours/OpenBLAS (med) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        best = {lib: max(results[(lib, n)]) for lib, _ in libs}
        med = {lib: statistics.median(results[(lib, n)]) for lib, _ in libs}
        print(f"| {n} | {best['ours']:.1f} | {best['openblas']:.1f} | {best['torch']:.1f} | "
              f"{best['ours'] / best['openblas']:.2f} | {best['ours'] / best['torch']:.2f} | "
              f"{med['ours']:.1f} | {med['openblas']:.1f} | {med['torch']:.1f} | {med['ours'] / med['openblas']:.2f} |")
    print()
    print("GFLOP per CPU-second × threads (median over rounds; robust to a busy machine, but OpenBLAS")
    print("and OpenMP threads spin while waiting, which this charges them for):")
    print()
    print("| n | ours | OpenBLAS | torch | ours/OpenBLAS | ours/torch |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        cm = {lib: statistics.median(cpu_results[(lib, n)]) for lib, _ in libs}
        print(f"| {n} | {cm['ours']:.1f} | {cm['openblas']:.1f} | {cm['torch']:.1f} | "
              f"{cm['ours'] / cm['openblas']:.2f} | {cm['ours'] / cm['torch']:.2f} |")


def build_ours(args):
    extra = ["--kernels", args.kernels] if args.kernels else []
    if args.ringtrain:
        return lambda n: [args.ringtrain, "bench", "gemm", "--n", str(n), "--threads", str(args.threads),
                          "--reps", str(args.reps)] + extra
    exe = args.gemmbench
    if not exe:
        exe = os.path.join(tempfile.mkdtemp(prefix="gemmbench"), "gemmbench")
        subprocess.run(["go", "build", "-o", exe, "./nn/kernels/internal/gemmbench"], check=True)
    path = ["-path", args.kernels] if args.kernels else []
    return lambda n: [exe, "-n", str(n), "-threads", str(args.threads), "-reps", str(args.reps)] + path


if __name__ == "__main__":
    main()
