#!/usr/bin/python3
"""Fixtures for ringtrain's checkpoint importers and exporters.

  gen_pth.py gen OUTDIR [tiny|resnet18 ...] [--variants]
      Saves each model's state_dict with torch.save (zip and legacy format)
      and as safetensors (written by hand: 8-byte LE header length, JSON
      header, raw bytes), plus NAME.ref.bin/NAME.ref.json: every tensor as
      raw float32 LE, the values the Go reader must produce. --variants adds
      F16/BF16/F64 safetensors and views.pth (strided and offset tensors).
  gen_pth.py check MODEL EXPORTED.safetensors ORIGINAL.pth
      Builds MODEL fresh, loads EXPORTED into it with
      load_state_dict(strict=True) and checks every tensor equals ORIGINAL.

Run with /usr/bin/python3 (Debian python3-torch, python3-torchvision).
"""
import json
import os
import struct
import sys

import torch
import torch.nn as nn

DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
TORCH_DTYPES = {v: k for k, v in DTYPES.items()}


class Tiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def build(name, seed):
    torch.manual_seed(seed)
    if name == "tiny":
        m = Tiny()
    elif name == "resnet18":
        import torchvision
        m = torchvision.models.resnet18(num_classes=10)
    else:
        raise SystemExit("unknown model " + name)
    # Non-trivial BN buffers, so that a reader mixing them up is caught.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.num_batches_tracked.fill_(seed * 7 + 3)
    return m


def tensor_bytes(t):
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def save_safetensors(path, sd, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in sd.items():
        b = tensor_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    sd = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        dt = TORCH_DTYPES[e["dtype"]]
        if b == a:
            t = torch.empty(e["shape"], dtype=dt)
        elif dt == torch.bfloat16:
            t = torch.frombuffer(bytearray(buf[base + a:base + b]), dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(bytearray(buf[base + a:base + b]), dtype=dt)
        sd[name] = t.reshape(e["shape"])
    return sd


def save_ref(prefix, sd):
    """prefix.ref.bin: float32 values of every tensor; prefix.ref.json: index."""
    index, off = [], 0
    with open(prefix + ".ref.bin", "wb") as f:
        for name, t in sd.items():
            v = t.detach().to(torch.float32).contiguous().reshape(-1)
            f.write(v.numpy().tobytes())
            index.append({"name": name, "shape": list(t.shape), "dtype": DTYPES[t.dtype],
                          "offset": off, "numel": v.numel()})
            off += v.numel()
    with open(prefix + ".ref.json", "w") as f:
        json.dump(index, f, indent=1)


def convert(sd, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}


def gen(outdir, models, variants):
    os.makedirs(outdir, exist_ok=True)
    for name in models:
        sd = build(name, 1).state_dict()
        p = os.path.join(outdir, name)
        torch.save(sd, p + ".pth")
        torch.save(sd, p + "_legacy.pth", _use_new_zipfile_serialization=False)
        save_safetensors(p + ".safetensors", sd, {"format": "pt", "net": name})
        save_ref(p, sd)
        if variants:
            for suffix, dt in (("f16", torch.float16), ("bf16", torch.bfloat16), ("f64", torch.float64)):
                c = convert(sd, dt)
                save_safetensors(p + "_" + suffix + ".safetensors", c)
                save_ref(p + "_" + suffix, c)
        print("wrote", p, len(sd), "tensors")
    if variants:
        base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
        views = {"transposed": base.t(), "rows": base[1:3], "cols": base[:, 2:5],
                 "every_other": base[::2, ::3], "whole": base,
                 "half": base.to(torch.float16)[1:].t(), "ints": torch.arange(5) * -3}
        wrapped = {"model": views, "epoch": 3, "note": "nested"}
        torch.save(wrapped, os.path.join(outdir, "views.pth"))
        save_ref(os.path.join(outdir, "views"), {"model." + k: v for k, v in views.items()})
        print("wrote views.pth")


def check(model, exported, original):
    m = build(model, 2)  # different weights than the ones exported
    sd = load_safetensors(exported)
    m.load_state_dict(sd, strict=True)
    want = torch.load(original)
    got = m.state_dict()
    bad = [k for k in want if not torch.equal(got[k], want[k])]
    if bad or set(got) != set(want):
        raise SystemExit("MISMATCH %s" % bad[:10])
    print("OK", len(got), "tensors equal after load_state_dict(strict=True)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "gen":
        variants = "--variants" in args
        models = [a for a in args[2:] if not a.startswith("--")] or ["tiny"]
        gen(args[1], models, variants)
    elif len(args) == 4 and args[0] == "check":
        check(args[1], args[2], args[3])
    else:
        raise SystemExit(__doc__)
