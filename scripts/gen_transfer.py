#!/usr/bin/python3
"""PyTorch side of ringtrain's import/export and transfer proofs (modelio/,
transfer/). Run with Debian's /usr/bin/python3 (python3-torch 1.13,
python3-torchvision 0.14); the Go tests call it on the fly.

  gen_transfer.py make --out-dir D [--classes 10 --seed 0] NET:SIZE ...
      For each net: build the torchvision model (or gen_nets.py's equivalent
      module for lenet, alexnet-2012, nin), random init from the seed
      (convolutions redrawn He-normal so deep logits depend on the input; BN
      running statistics, affine parameters and num_batches_tracked
      randomised too, so buffers are exercised), then write D/NET.pth (torch.save(state_dict)),
      D/NET.safetensors (written here: 8-byte LE header length, JSON header,
      raw little-endian data; num_batches_tracked as I64) and D/NET.io.safetensors
      holding "input" [2, C, SIZE, SIZE] and "logits" (eval mode, float32);
      --legacy adds D/NET.legacy.pth in PyTorch's pre-1.6 (non-zip) format.
      transfer/testdata/lenet.* (LeNet at 12x12, 10 classes, seed 0) came from
      `gen_transfer.py make --out-dir transfer/testdata --legacy lenet:12`.

  gen_transfer.py check --classes 10 NET:SIZE:WEIGHTS:INPUT:OUT ...
      For each entry: build the net, load WEIGHTS (a safetensors file written
      by ringtrain) with load_state_dict(strict=True), run eval mode on the
      tensor "input" of the safetensors file INPUT, and write the logits
      to OUT (safetensors, tensor "logits").

Prints one line per net on stderr and a final JSON summary on stdout.
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_nets  # noqa: E402  (same directory: the architectures)

DTYPES = {"F32": (np.dtype("<f4"), torch.float32), "I64": (np.dtype("<i8"), torch.int64),
          "F64": (np.dtype("<f8"), torch.float64), "I32": (np.dtype("<i4"), torch.int32)}


def build(name, classes, size):
    if name == "lenet":
        return gen_nets.LeNet(classes, 1, size)
    return gen_nets.build(name, classes)


def channels(name):
    return 1 if name == "lenet" else 3


def write_safetensors(path, tensors, meta=None):
    """tensors: name -> torch tensor (float32 or int64)."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.int64:
            dt, b = "I64", t.numpy().astype("<i8").tobytes()
        else:
            dt, b = "F32", t.float().numpy().astype("<f4").tobytes()
        header[k] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for b in blobs:
            fh.write(b)


def read_safetensors(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    out = {}
    for k, e in header.items():
        if k == "__metadata__":
            continue
        npdt, tdt = DTYPES[e["dtype"]]
        lo, hi = e["data_offsets"]
        a = np.frombuffer(data[lo:hi], dtype=npdt).reshape(e["shape"]).copy()
        out[k] = torch.from_numpy(a).to(tdt)
    return out


def randomize(m, gen, he=False):
    """Default init already drew the weights; give BN buffers and affine
    parameters non-trivial values too. he redraws convolutions He-normal
    (fan_in): with PyTorch's default init, NiN's nine ReLU convolutions
    without BN, and GoogLeNet's std-0.01 convolutions before eval-mode BN,
    fade to an input-independent output that would prove nothing."""
    with torch.no_grad():
        if he:
            for mod in m.modules():
                if isinstance(mod, torch.nn.Conv2d):
                    std = (2.0 / mod.weight[0].numel()) ** 0.5
                    mod.weight.copy_(std * torch.randn(mod.weight.shape, generator=gen))
        for k, v in m.state_dict().items():
            if k.endswith("num_batches_tracked"):
                v.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
            elif k.endswith("running_mean"):
                v.copy_(0.1 * torch.randn(v.shape, generator=gen))
            elif k.endswith("running_var"):
                v.copy_(0.5 + torch.rand(v.shape, generator=gen))
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.weight.copy_(1.0 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))


def cmd_make(args):
    summary = {}
    for item in args.nets:
        name, size = item.split(":")
        size = int(size)
        t0 = time.time()
        torch.manual_seed(args.seed)
        gen = torch.Generator().manual_seed(args.seed + 1)
        m = build(name, args.classes, size)
        randomize(m, gen, he=True)
        m.eval()
        x = torch.randn(2, channels(name), size, size, generator=gen)
        with torch.no_grad():
            y = m(x)
        sd = m.state_dict()
        base = os.path.join(args.out_dir, name)
        torch.save(sd, base + ".pth")
        if args.legacy:  # PyTorch's pre-1.6 pickle stream (no zip)
            torch.save(sd, base + ".legacy.pth", _use_new_zipfile_serialization=False)
        write_safetensors(base + ".safetensors", sd, {"format": "pt", "net": name})
        write_safetensors(base + ".io.safetensors", {"input": x, "logits": y},
                          {"net": name, "input": str(size), "classes": str(args.classes)})
        dt = time.time() - t0
        summary[name] = {"keys": len(sd), "seconds": round(dt, 2)}
        print(f"{name:14s} {size:4d}px {len(sd):5d} keys {dt:6.2f}s -> {base}.{{pth,safetensors,io.safetensors}}", file=sys.stderr)
    print(json.dumps(summary))


def cmd_check(args):
    summary = {}
    for item in args.nets:
        name, size, weights, inp, out = item.split(":", 4)
        t0 = time.time()
        m = build(name, args.classes, int(size))
        sd = read_safetensors(weights)
        m.load_state_dict(sd, strict=True)
        m.eval()
        x = read_safetensors(inp)["input"]
        with torch.no_grad():
            y = m(x)
        write_safetensors(out, {"logits": y})
        summary[name] = {"keys": len(sd), "seconds": round(time.time() - t0, 2)}
        print(f"{name:14s} loaded {len(sd)} tensors strictly from {weights} -> {out}", file=sys.stderr)
    print(json.dumps(summary))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("--out-dir", required=True)
    mk.add_argument("--classes", type=int, default=10)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--legacy", action="store_true", help="also write NET.legacy.pth in the pre-1.6 format")
    mk.add_argument("nets", nargs="+", help="NET:SIZE")
    ck = sub.add_parser("check")
    ck.add_argument("--classes", type=int, default=10)
    ck.add_argument("nets", nargs="+", help="NET:SIZE:WEIGHTS:INPUT:OUT")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("RINGTRAIN_TORCH_THREADS", "1")))
    {"make": cmd_make, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    main()
