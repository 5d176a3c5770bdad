#!/usr/bin/python3
"""Reference data for ringtrain's nets/ package, from PyTorch/torchvision.

Run with Debian's /usr/bin/python3 (python3-torch 1.13, python3-torchvision 0.14).

  gen_nets.py keys [--out nets/testdata/torchvision_keys.json]
      For every architecture at 1000 classes: the ordered state_dict keys
      with shapes and the learnable parameter count.

  gen_nets.py numerics --net resnet18 --input 64 [--batch 2 --classes 10] --out F
      Builds the net, fills every parameter and buffer with the deterministic
      pattern of fill() below (the Go test computes the same pattern from the
      same names, so no weights need to be stored), and writes a
      safetensors-format file with: input, labels, logits_eval (eval mode),
      logits_train (train mode, dropout disabled), grad.<name> (gradients of
      the mean cross-entropy for a few named parameters, train mode) and
      after.<bn>.running_mean/var (a BN's running stats after the train step),
      all computed in float64; __metadata__ holds PyTorch's own float32
      relative error per tensor (err32.<key>), the loss and the peak RSS.
      alt<i>.grad.<name>: how the gradients change when one ReLU or max-pool
      decision that float32 rounding can take either way goes the other way
      (see ambiguous below); metadata alts (count) and alt<i> (which one).

  gen_nets.py peakmem --net resnet50 --input 224 --batch 8
      Forward+backward once (train mode) and print the peak RSS in MiB.
"""
import argparse
import copy
import json
import math
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm


# ---- architectures that torchvision does not ship ---------------------------

class LeNet(nn.Module):
    """ringtrain's lenet (nets/lenet.go): features, flatten, classifier."""

    def __init__(self, num_classes=10, in_ch=1, size=28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2))
        s = (size // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Linear(16 * s * s, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class AlexNet2012(nn.Module):
    """Krizhevsky et al. 2012 with its two-GPU grouped convolutions and LRN,
    in Caffe's layer order (conv, relu, norm, pool), torchvision-like names."""

    def __init__(self, num_classes=1000, in_ch=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 96, 11, stride=4), nn.ReLU(),
            nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(),
            nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(),
            nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def nin_block(cin, cout, k, s, p):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.ReLU(),
                         nn.Conv2d(cout, cout, 1), nn.ReLU(),
                         nn.Conv2d(cout, cout, 1), nn.ReLU())


def nin(num_classes=1000, in_ch=3):
    """d2l.ai's NiN (chapter 8.3), same module indices."""
    return nn.Sequential(
        nin_block(in_ch, 96, 11, 4, 0), nn.MaxPool2d(3, 2),
        nin_block(96, 256, 5, 1, 2), nn.MaxPool2d(3, 2),
        nin_block(256, 384, 3, 1, 1), nn.MaxPool2d(3, 2),
        nn.Dropout(0.5),
        nin_block(384, num_classes, 3, 1, 1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())


def build(name, classes=1000):
    if name == "lenet":
        return LeNet(classes)
    if name == "alexnet-2012":
        return AlexNet2012(classes)
    if name == "nin":
        return nin(classes)
    if name == "googlenet":
        return tvm.googlenet(weights=None, num_classes=classes, aux_logits=False, init_weights=True)
    if name == "googlenet+aux":
        return tvm.googlenet(weights=None, num_classes=classes, aux_logits=True, init_weights=True)
    return getattr(tvm, name)(weights=None, num_classes=classes)


NETS = ["lenet", "alexnet", "alexnet-2012", "nin",
        "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
        "googlenet", "googlenet+aux",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "densenet121", "densenet169", "densenet201"]


def describe(model):
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "keys": keys}


def cmd_keys(args):
    out = {}
    for name in NETS:
        m = build(name)
        out[name] = describe(m)
        print(f"{name:14s} {out[name]['params']:>12,d} params {len(out[name]['keys']):5d} keys", file=sys.stderr)
    # Keras VGG16(include_top=False): torchvision's vgg16 features only.
    f = tvm.vgg16(weights=None).features
    d = describe(f)
    d["keys"] = [["features." + k, s] for k, s in d["keys"]]
    out["vgg16_notop"] = d
    print(f"{'vgg16_notop':14s} {d['params']:>12,d} params", file=sys.stderr)
    with open(args.out, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")


# ---- deterministic parameter pattern (mirrored by nets/numerics_test.go) ----

M32 = 0xFFFFFFFF


def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h ^= b
        h = (h * 0x01000193) & M32
    return h


def unit(name, n):
    """n values in [-1, 1): murmur3's fmix32 of (i*0x9E3779B1 + fnv1a32(name))."""
    x = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(fnv1a32(name))) & np.uint64(M32)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(M32)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(M32)
    x ^= x >> np.uint64(16)
    return x.astype(np.float64) / 4294967296.0 * 2.0 - 1.0


def fill(name, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    v = unit(name, n)
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape)
    if name.endswith("running_mean"):
        v = 0.1 * v
    elif name.endswith("running_var"):
        v = 1.0 + 0.25 * (v + 1.0)
    elif len(shape) >= 2:  # conv / linear weight: He-uniform on fan_in
        fan_in = int(np.prod(shape[1:]))
        v = v * np.sqrt(6.0 / fan_in)
    elif name.endswith("weight"):  # BN gamma
        v = 1.0 + 0.1 * v
    else:  # biases, BN beta
        v = 0.1 * v
    return v.reshape(shape)


def save_safetensors(path, tensors, meta):
    header, blobs, off = {"__metadata__": meta}, [], 0
    for k, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for b in blobs:
            fh.write(b)


class Decisions:
    """While recording, every F.relu and F.max_pool2d call (nn.ReLU and
    nn.MaxPool2d go through them) of the forward pass is kept as a site:
    (kind, input, output, pooling arguments). ReLUs run out of place so that
    the inputs stay intact for autograd.grad; the values are the same. keep:
    run_case keeps the graph and the outputs' gradients for ambiguous()."""

    def __init__(self, keep=False):
        self.sites, self.recording, self.keep = [], False, keep
        self._relu, self._max_pool2d = F.relu, F.max_pool2d

    def __enter__(self):
        def relu(x, inplace=False):
            if not self.recording:
                return self._relu(x, inplace=inplace)
            y = self._relu(x)
            self.sites.append(("relu", x, y, None))
            return y

        def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
            y = self._max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=return_indices)
            if self.recording:
                self.sites.append(("maxpool", x, y[0] if return_indices else y, (kernel_size, stride, padding, dilation, ceil_mode)))
            return y

        F.relu, F.max_pool2d = relu, max_pool2d
        return self

    def __exit__(self, *exc):
        F.relu, F.max_pool2d = self._relu, self._max_pool2d


def run_case(m, x, labels, max_grad, rec=None):
    """Eval logits, then train-mode (dropout off) logits, loss, gradients and
    BN running statistics of m on x. With rec (Decisions), the train-mode
    forward is recorded."""
    out = {}
    m.eval()
    with torch.no_grad():
        out["logits_eval"] = m(x).double().numpy()
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    m.train()
    if rec:
        rec.recording = True
    logits = m(x)
    keep = rec is not None and rec.keep
    if rec:
        rec.recording = False
        for _, _, y, _ in rec.sites if keep else ():
            if y.requires_grad:
                y.retain_grad()
    aux = []
    if not torch.is_tensor(logits):
        # GoogLeNet with aux_logits. torchvision 0.14's _forward returns
        # (x, aux2, aux1) but forward unpacks it as (x, aux1, aux2), so the
        # field aux_logits2 holds self.aux1's output: take them by position.
        logits, aux1, aux2 = logits
        aux = [("aux1", aux1), ("aux2", aux2)]
    loss = nn.functional.cross_entropy(logits, labels)
    for name, a in aux:  # torchvision's reference training weights aux losses 0.3
        loss = loss + 0.3 * nn.functional.cross_entropy(a, labels)
        out[name + "_train"] = a.detach().double().numpy()
    loss.backward(retain_graph=keep)
    out["logits_train"] = logits.detach().double().numpy()
    named = [(k, p) for k, p in m.named_parameters()]
    # Gradients of a few weights small enough to commit (not the big FCs).
    weights = [k for k, p in named if p.dim() >= 2 and p.numel() <= max_grad]
    pick = [weights[0], weights[len(weights) // 2], weights[-1]]
    bns = [k for k, p in named if p.dim() == 1 and k.endswith("weight")]
    if bns:
        pick += [bns[0], bns[-1]]
    if aux:
        pick += ["aux1.fc2.weight", "aux2.conv.conv.weight", "aux1.conv.bn.weight"]
    params = dict(named)
    for k in pick:
        out["grad." + k] = params[k].grad.double().numpy()
    bn_mods = [k for k, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    if bn_mods:
        b = bn_mods[len(bn_mods) // 2]
        sd = m.state_dict()
        out[f"after.{b}.running_mean"] = sd[b + ".running_mean"].double().numpy()
        out[f"after.{b}.running_var"] = sd[b + ".running_var"].double().numpy()
    return out, loss.item()


def pool_windows(x, args):
    """Max-pool windows of x [N, C, H, W] as values [N, C, K, L] (padding is
    -inf) and the flat H·W index of each window element [K, L] (-1: padding),
    for windows L in PyTorch's output order (ceil_mode included)."""
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    kernel, stride, padding, dilation, ceil = args
    k, p, d = pair(kernel), pair(padding), pair(dilation)
    s = pair(stride) if stride not in (None, []) else k
    n, c, h, w = x.shape

    def outsize(size, k, s, p, d):
        o = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
        if ceil and (o - 1) * s >= size + p:
            o -= 1
        return o
    oh, ow = outsize(h, k[0], s[0], p[0], d[0]), outsize(w, k[1], s[1], p[1], d[1])
    hp, wp = (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1, (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1
    hh, ww = min(h, hp - p[0]), min(w, wp - p[1])
    padded = torch.full((n * c, 1, hp, wp), float("-inf"), dtype=x.dtype)
    padded[:, 0, p[0]:p[0] + hh, p[1]:p[1] + ww] = x.reshape(n * c, h, w)[:, :hh, :ww]
    index = torch.full((1, 1, hp, wp), -1.0, dtype=torch.float64)
    index[0, 0, p[0]:p[0] + hh, p[1]:p[1] + ww] = torch.arange(h * w, dtype=torch.float64).view(h, w)[:hh, :ww]
    vals = F.unfold(padded, k, dilation=d, stride=s).view(n, c, k[0] * k[1], oh * ow)
    idx = F.unfold(index, k, dilation=d, stride=s).view(k[0] * k[1], oh * ow).long()
    return vals, idx


def ambiguous(sites64, sites32, params, ref, c, floor, limit, probes=8):
    """Decisions of the train-mode forward that float32 rounding can take
    either way, and what each does to the gradients.

    ReLU and max pooling are continuous, but their derivatives jump: a ReLU
    input within rounding of 0, or a pooling window whose two largest values
    are within rounding of each other, is routed one way in float64 and may
    go the other way in any float32 run. With train-mode BN over a small
    batch, the gradients below such a point are so ill-conditioned that one
    element routed the other way moves them by 1e-3 and more (resnet18 at
    224: one ReLU input of layer4.1 at 4.7e-7 moves every gradient below it
    by 1.8e-3). Which way a float32 implementation goes is rounding, not a
    bug, so the Go test may take any of these alternatives.

    Candidates: |ReLU input| < c·σ, or a pooling window's top two values
    closer than c·σ·√2, σ the rms error of PyTorch's float32 run at that
    site (over the nonzero inputs for pooling). A candidate moves gradient
    at the site's input: ReLU ±dy at the element, pooling dy from the
    windows' argmax to their runner-up (one decision per compared pair).
    Its effect on the written gradients is the backward of that, through
    the float32 graph sites32 keeps. Deep nets have thousands of candidates
    and a backward each is too slow, so they are ranked first by their
    expected squared effect: E‖J·inj‖² from random probes of the transposed
    backward (double backward, all sites at once), times the chance of a
    flip, erfc(ρ/2√2) for an input ρσ from its threshold (a float32 error
    twice PyTorch's). The top limit get an exact backward; those with an
    effect above floor relative to some written gradient are returned,
    largest first: [(description, {key: Δ})].
    """
    keys = [k for k in ref if k.startswith("grad.")]
    plist = [params[k[len("grad."):]] for k in keys]
    cands = []  # (site, flat indices, values, ρ, description)
    for i, ((kind, x64, _, args), (_, x32, y32, _)) in enumerate(zip(sites64, sites32)):
        dy = y32.grad
        if dy is None or not x32.requires_grad:
            continue
        v64, v32 = x64.detach(), x32.detach().double()
        if kind == "relu":
            sigma = float((v32 - v64).pow(2).mean().sqrt())
            flat, dflat = v64.reshape(-1), dy.reshape(-1)
            for e in ((flat.abs() < c * sigma) & (dflat != 0)).nonzero().flatten().tolist():
                v = float(flat[e])
                val = dflat[e] if v <= 0 else -dflat[e]
                pos = list(np.unravel_index(e, tuple(v64.shape)))
                cands.append((i, [e], [float(val)], abs(v) / sigma,
                              f"relu {i} at {[int(q) for q in pos]}: input {v:.3g}, float32 rms error {sigma:.2g}"))
            continue
        nz = v64 != 0
        if not nz.any():
            continue
        sigma = float((v32 - v64)[nz].pow(2).mean().sqrt())
        vals, idx = pool_windows(v64, args)
        top = vals.topk(2, dim=2)
        kernel, stride, padding, dilation, ceil = args
        assert torch.equal(top.values[:, :, 0], F.max_pool2d(v64, kernel, stride, padding, dilation, ceil_mode=ceil).flatten(2)), \
            f"pool_windows disagrees with max_pool2d{args} at site {i}"
        gap = top.values[:, :, 0] - top.values[:, :, 1]
        n, ch = v64.shape[:2]
        plane = v64.shape[2] * v64.shape[3]
        dyw = dy.reshape(n, ch, -1)
        # One decision per compared pair: every window whose top two are a
        # and b moves its gradient from a to b together (overlapping windows
        # share pairs, and their gradients may nearly cancel).
        pairs = {}
        for b, cc, w in ((gap > 0) & (gap < c * sigma * 2 ** 0.5) & (dyw != 0)).nonzero().tolist():
            ia, ib = int(idx[top.indices[b, cc, 0, w], w]), int(idx[top.indices[b, cc, 1, w], w])
            if ib >= 0:
                pairs.setdefault((b, cc, ia, ib), []).append(w)
        for (b, cc, ia, ib), ws in pairs.items():
            g = float(sum(dyw[b, cc, w] for w in ws))
            base = (b * ch + cc) * plane
            rho = float(gap[b, cc, ws[0]]) / (sigma * 2 ** 0.5)
            cands.append((i, [base + ia, base + ib], [-g, g], rho,
                          f"maxpool {i} [{b},{cc}] windows {ws}: {ia} over {ib} by {float(gap[b, cc, ws[0]]):.3g}, float32 rms error {sigma:.2g}"))
    if not cands:
        return []
    site_ids = sorted({cd[0] for cd in cands})
    xs = [sites32[i][1] for i in site_ids]
    if len(cands) > limit:
        # Ranking: G = J·u over every site's input-gradient u; then for a
        # probe z (one per written gradient, scaled by 1/‖ref‖), Jᵀz = ∂⟨G, z⟩/∂u.
        us = [torch.zeros_like(x, requires_grad=True) for x in xs]
        G = torch.autograd.grad(xs, plist, grad_outputs=us, create_graph=True, allow_unused=True)
        live = [(g, float(np.linalg.norm(ref[k].ravel()))) for g, k in zip(G, keys) if g is not None and g.requires_grad]
        gen = torch.Generator().manual_seed(1)
        groups = []  # per site: candidate numbers, [m, 2] indices and values
        for sid in site_ids:
            js = [j for j, cd in enumerate(cands) if cd[0] == sid]
            ix = torch.tensor([(cands[j][1] * 2)[:2] for j in js])
            vs = torch.tensor([(cands[j][2] + [0.0])[:2] for j in js], dtype=torch.float64)
            groups.append((torch.tensor(js), ix, vs))
        score = torch.zeros(len(cands), dtype=torch.float64)
        for _ in range(probes):
            zs = [torch.randn(g.shape, generator=gen, dtype=g.dtype) / max(nrm, 1e-300) for g, nrm in live]
            H = torch.autograd.grad([g for g, _ in live], us, grad_outputs=zs, retain_graph=True, allow_unused=True)
            for h, (js, ix, vs) in zip(H, groups):
                if h is not None:
                    score[js] += (h.reshape(-1).double()[ix] * vs).sum(1) ** 2
        del G, us, live
        score = score.numpy()
        prio = [score[j] / probes * math.erfc(cd[3] / (2 * 2 ** 0.5)) for j, cd in enumerate(cands)]
        order = sorted(range(len(cands)), key=lambda j: -prio[j])[:limit]
    else:
        order = list(range(len(cands)))
    out = []
    for j in order:
        sid, ix, vs, _, desc = cands[j]
        x32 = sites32[sid][1]
        inj = torch.zeros(x32.numel(), dtype=x32.dtype)
        for q, v in zip(ix, vs):
            inj[q] += v
        grads = torch.autograd.grad([x32], plist, grad_outputs=[inj.view_as(x32)], retain_graph=True, allow_unused=True)
        delta, worst = {}, 0.0
        for k, g in zip(keys, grads):
            if g is None:
                continue
            g = g.double().numpy()
            e = np.linalg.norm(g.ravel()) / max(np.linalg.norm(ref[k].ravel()), 1e-300)
            worst = max(worst, e)
            if e > floor / 100:
                delta[k] = g.astype(np.float32)
        if worst > floor:
            out.append((worst, desc, delta))
    out.sort(key=lambda t: -t[0])
    print(f"  {len(cands)} float32-ambiguous decisions, {len(order)} evaluated, {len(out)} with an effect above {floor:g}", file=sys.stderr)
    return [(f"{desc}; effect up to {worst:.2g}", delta) for worst, desc, delta in out]


def rel_err(got, want):
    """||got - want||_2 / ||want||_2 (nets/numerics_test.go relErr)."""
    den = np.linalg.norm(want.ravel())
    num = np.linalg.norm((got - want).ravel())
    return num / den if den > 0 else num


def cmd_numerics(args):
    """The reference is computed in float64 (from the float32 weights and
    input); PyTorch's own float32 run is compared with it too, and its
    relative error per tensor goes into the metadata (err32.<key>): in train
    mode, batch norm over tiny batches makes deep gradients ill-conditioned
    (float32 ResNet-50 gradients at conv1 are ~1% off float64), so the Go
    test allows a multiple of PyTorch's own float32 error."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    m = build(args.net, args.classes)
    if args.net == "lenet":
        m = LeNet(args.classes, 1, args.input)
    chans = 1 if args.net == "lenet" else 3
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if v.dtype.is_floating_point:
                v.copy_(torch.from_numpy(fill(k, list(v.shape))).to(v.dtype))
            else:
                v.zero_()
    m64 = copy.deepcopy(m).double()
    x = torch.randn(args.batch, chans, args.input, args.input)
    labels = torch.arange(args.batch) % args.classes
    with Decisions() as rec64:
        ref, loss = run_case(m64, x.double(), labels, args.max_grad, rec64)
    sites64 = [(k, xx.detach(), None, a) for k, xx, _, a in rec64.sites]
    del m64, rec64
    with Decisions(keep=True) as rec32:
        got32, loss32 = run_case(m, x, labels, args.max_grad, rec32)
    alts, t0 = [], time.time()
    if args.ambiguity > 0:
        alts = ambiguous(sites64, rec32.sites, dict(m.named_parameters()), ref, args.ambiguity, args.alt_floor, args.alt_limit)
    del rec32, sites64
    t_alts = time.time() - t0
    out = {"input": x.numpy(), "labels": labels.float().numpy()}
    out.update(ref)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {"net": args.net, "input": str(args.input), "classes": str(args.classes),
            "batch": str(args.batch), "loss": repr(loss), "loss32": repr(loss32), "reference": "float64",
            "torch": torch.__version__, "peak_rss_mib": f"{peak:.0f}"}
    for k, v in ref.items():
        meta["err32." + k] = f"{rel_err(got32[k], v):.3e}"
    meta["alts"] = str(len(alts))
    for i, (desc, delta) in enumerate(alts):
        meta[f"alt{i}"] = desc
        for k, d in delta.items():
            out[f"alt{i}.{k}"] = d
    save_safetensors(args.out, out, meta)
    worst = max(float(meta["err32." + k]) for k in ref)
    print(f"{args.net} input {args.input}: loss {loss:.6f}, {len(out)} tensors, torch float32 worst rel err {worst:.2e}, "
          f"{len(alts)} alternatives ({t_alts:.0f} s) -> {args.out}", file=sys.stderr)


def cmd_peakmem(args):
    torch.set_num_threads(args.threads)
    m = build(args.net, 1000)
    m.train()
    x = torch.randn(args.batch, 3, args.input, args.input)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = m(x)
    if not torch.is_tensor(out):
        out = out[0]
    nn.functional.cross_entropy(out, torch.zeros(args.batch, dtype=torch.long)).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"net": args.net, "input": args.input, "batch": args.batch,
                      "rss_before_mib": round(before), "peak_rss_mib": round(peak)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys")
    k.add_argument("--out", default="nets/testdata/torchvision_keys.json")
    n = sub.add_parser("numerics")
    n.add_argument("--net", required=True)
    n.add_argument("--input", type=int, default=64)
    n.add_argument("--batch", type=int, default=2)
    n.add_argument("--classes", type=int, default=10)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--threads", type=int, default=1)
    n.add_argument("--max-grad", type=int, default=300_000, help="largest weight whose gradient is written")
    n.add_argument("--ambiguity", type=float, default=8,
                   help="ReLU/max-pool decisions within this many float32 rms errors are alternatives (0: none)")
    n.add_argument("--alt-floor", type=float, default=1e-5, help="smallest relative gradient change an alternative must make")
    n.add_argument("--alt-limit", type=int, default=64, help="most alternatives evaluated and written")
    n.add_argument("--out", required=True)
    p = sub.add_parser("peakmem")
    p.add_argument("--net", default="resnet50")
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    {"keys": cmd_keys, "numerics": cmd_numerics, "peakmem": cmd_peakmem}[args.cmd](args)


if __name__ == "__main__":
    main()
