#!/usr/bin/python3
"""Golden values for nn/ and optim/ from PyTorch (issue 2, "Prove it").

Run from the repository root with the Debian python3-torch (1.13):

    /usr/bin/python3 scripts/gen_golden.py

It writes one JSON file per group under nn/testdata/golden/ and
optim/testdata/golden/. Tensors are {"shape": [...], "data": base64 of
little-endian float32}. Inputs and weights are drawn as float32; PyTorch then
computes in float64, so the golden outputs are the exact float32 rounding of
the true result and the Go engine's error is all float32 error of its own.

Parameter names are those the Go engine gives (nn.Model state_dict names),
so the Go tests load and compare by name. Every layer case stores x, a fixed
random upstream gradient dy, y = f(x), dx = dL/dx for L = sum(y * dy), and
for each learnable parameter its value and gradient; buffers (BN running
stats) are stored before ("params") and after ("after") the forward.
"""

import base64
import json
import math
import os
import struct

import torch
import torch.nn as tnn
import torch.nn.functional as F

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tens(t):
    shape = list(t.shape)
    flat = t.detach().to(torch.float32).contiguous().reshape(-1)
    raw = struct.pack("<%df" % flat.numel(), *flat.tolist())
    return {"shape": shape, "data": base64.b64encode(raw).decode()}


def randn(gen, *shape, away=0.0):
    """float32 normal values; with away > 0, |v| >= away (kinks of ReLU)."""
    t = torch.randn(*shape, generator=gen, dtype=torch.float32)
    if away > 0:
        t = torch.where(t.abs() < away, torch.sign(t + 1e-9) * (t.abs() + away), t)
    return t


def distinct(gen, *shape):
    """float32 values with no ties (max pooling is ambiguous on ties)."""
    n = 1
    for d in shape:
        n *= d
    perm = torch.randperm(n, generator=gen).to(torch.float32)
    return ((perm - n / 2) / (n / 4)).reshape(*shape)


def run_case(name, layer, cfg, module, names, x, gen, train):
    """module: a float32 torch module; names: Go name -> torch tensor
    (parameter or buffer) of module. Computes in float64."""
    params = {k: tens(v) for k, v in names.items()}
    m = module.double()
    m.train(train)
    xd = x.double().requires_grad_(True)
    y = m(xd)
    dy = randn(gen, *y.shape)
    (y * dy.double()).sum().backward()
    # names map to tensors of the float32 module; .double() converts in
    # place for nn.Module, so look them up again through the module.
    lookup = dict(m.named_parameters())
    lookup.update(dict(m.named_buffers()))
    case = {
        "name": name, "layer": layer, "cfg": cfg, "train": train,
        "x": tens(x), "dy": tens(dy), "y": tens(y), "dx": tens(xd.grad),
        "params": params, "grads": {}, "after": {},
    }
    for go, tn in _torch_names[id(module)].items():
        t = lookup[tn]
        if isinstance(t, tnn.Parameter):
            case["grads"][go] = tens(t.grad)
        else:
            case["after"][go] = tens(t)
    return case


_torch_names = {}  # id(module) -> {Go name: torch name}, filled by bind


def bind(module, mapping):
    """mapping: Go name -> torch state_dict name. Returns Go name -> tensor."""
    sd = dict(module.named_parameters())
    sd.update(dict(module.named_buffers()))
    _torch_names[id(module)] = mapping
    return {go: sd[tn].detach().clone() for go, tn in mapping.items()}


def randomize(module, gen):
    """Random weights and BN stats (BN gamma near 1, var positive)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(randn(gen, *p.shape) * 0.5)
        for mod in module.modules():
            if isinstance(mod, tnn.BatchNorm2d):
                mod.weight.copy_(1 + 0.3 * randn(gen, mod.num_features))
                mod.running_mean.copy_(0.5 * randn(gen, mod.num_features))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=gen))


def sd_map(module, prefix_go="", prefix_t=""):
    out = {}
    for n, _ in module.named_parameters():
        out[prefix_go + n] = prefix_t + n
    for n, _ in module.named_buffers():
        out[prefix_go + n] = prefix_t + n
    return out


# ---------------------------------------------------------------- layers

def conv_cases(gen):
    cfgs = [
        # name, in, out, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, x shape
        ("k3s1p1", 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, True, (2, 3, 7, 7)),
        ("k3x2_s2x1_p1x0_nobias", 4, 6, 3, 2, 2, 1, 1, 0, 1, 1, 1, False, (2, 4, 9, 6)),
        ("dil2_p2", 3, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1, True, (1, 3, 8, 7)),
        ("dil2x1_s2_p1", 2, 3, 3, 3, 2, 2, 1, 1, 2, 1, 1, True, (3, 2, 9, 8)),
        ("groups2_s2_p1", 4, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2, True, (2, 4, 7, 8)),
        ("depthwise", 4, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4, False, (3, 4, 6, 5)),
        ("1x1_direct", 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, True, (3, 5, 4, 5)),
        ("1x1_direct_groups", 6, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, True, (2, 6, 3, 3)),
        ("1x1_stride2", 4, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1, True, (2, 4, 5, 5)),
        ("k5s3p2_batch5", 2, 3, 5, 5, 3, 3, 2, 2, 1, 1, 1, True, (5, 2, 11, 10)),
    ]
    out = []
    for (name, ci, co, kh, kw, sh, sw, ph, pw, dh, dw, g, bias, xs) in cfgs:
        m = tnn.Conv2d(ci, co, (kh, kw), (sh, sw), (ph, pw), (dh, dw), g, bias)
        randomize(m, gen)
        names = bind(m, sd_map(m))
        cfg = dict(In=ci, Out=co, KH=kh, KW=kw, StrideH=sh, StrideW=sw, PadH=ph, PadW=pw,
                   DilH=dh, DilW=dw, Groups=g, Bias=bias)
        out.append(run_case("conv/" + name, "conv", cfg, m, names, randn(gen, *xs), gen, True))
    return out


def bn_cases(gen):
    out = []
    for train in (True, False):
        for (name, xs) in (("c3", (4, 3, 5, 4)), ("c2_1x1", (6, 2, 1, 1))):
            m = tnn.BatchNorm2d(xs[1])
            randomize(m, gen)
            names = bind(m, sd_map(m))
            x = randn(gen, *xs) * 2 + 0.5
            out.append(run_case("bn/%s/%s" % (name, "train" if train else "eval"), "bn",
                                dict(C=xs[1]), m, names, x, gen, train))
    # running statistics after two training forwards (no backward needed,
    # but run_case's backward is harmless): second batch differs.
    m = tnn.BatchNorm2d(3)
    randomize(m, gen)
    names = bind(m, sd_map(m))
    m = m.double().train()
    x1, x2 = randn(gen, 2, 3, 4, 3) * 3 - 1, randn(gen, 5, 3, 2, 2) + 2
    with torch.no_grad():
        m(x1.double())
        y2 = m(x2.double())
    out.append({"name": "bn/running_two_forwards", "layer": "bn", "cfg": dict(C=3), "train": True,
                "x1": tens(x1), "x": tens(x2), "y": tens(y2), "params": {k: tens(v) for k, v in names.items()},
                "after": {go: tens(dict(m.named_buffers())[tn]) for go, tn in _torch_names[id(m)].items()
                          if "running" in tn or "num_batches" in tn}})
    return out


def pool_cases(gen):
    out = []
    cfgs = [
        # name, max?, kh, kw, sh, sw, ph, pw, ceil, include_pad, x
        ("max/k3s2p1", True, 3, 3, 2, 2, 1, 1, False, True, (2, 3, 7, 8)),
        ("max/k2s2_ceil", True, 2, 2, 2, 2, 0, 0, True, True, (2, 2, 7, 5)),
        ("max/k3s2_ceil_p1", True, 3, 3, 2, 2, 1, 1, True, True, (1, 2, 8, 6)),
        ("max/k3x2_s2x1_p1x0", True, 3, 2, 2, 1, 1, 0, False, True, (2, 2, 7, 6)),
        ("max/k3s1p1_overlap", True, 3, 3, 1, 1, 1, 1, False, True, (1, 3, 5, 5)),
        ("avg/k3s2p1_incl", False, 3, 3, 2, 2, 1, 1, False, True, (2, 3, 7, 8)),
        ("avg/k3s2p1_excl", False, 3, 3, 2, 2, 1, 1, False, False, (2, 3, 7, 8)),
        ("avg/k3s2p1_ceil_incl", False, 3, 3, 2, 2, 1, 1, True, True, (2, 2, 8, 6)),
        ("avg/k3s2p1_ceil_excl", False, 3, 3, 2, 2, 1, 1, True, False, (2, 2, 8, 6)),
        ("avg/k2s2_ceil", False, 2, 2, 2, 2, 0, 0, True, True, (2, 2, 7, 7)),
        ("avg/k3x2_s1x2_p1x1", False, 3, 2, 1, 2, 1, 1, False, True, (2, 2, 5, 7)),
    ]
    for (name, mx, kh, kw, sh, sw, ph, pw, ceil, incl, xs) in cfgs:
        if mx:
            m = tnn.MaxPool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil)
        else:
            m = tnn.AvgPool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil, count_include_pad=incl)
        bind(m, {})
        cfg = dict(Max=mx, KH=kh, KW=kw, StrideH=sh, StrideW=sw, PadH=ph, PadW=pw, CeilMode=ceil,
                   CountIncludePad=incl)
        out.append(run_case("pool/" + name, "pool", cfg, m, {}, distinct(gen, *xs), gen, True))
    for (name, mx, oh, ow, xs) in (
        ("avg/7x5_to_3x2", False, 3, 2, (2, 3, 7, 5)),
        ("avg/6x7_to_4x3", False, 4, 3, (1, 2, 6, 7)),
        ("avg/global", False, 1, 1, (2, 3, 5, 5)),
        ("avg/upsample_3x2_to_5x4", False, 5, 4, (1, 2, 3, 2)),
        ("max/7x5_to_3x2", True, 3, 2, (2, 3, 7, 5)),
        ("max/6x7_to_4x3", True, 4, 3, (1, 2, 6, 7)),
        ("max/global", True, 1, 1, (2, 3, 5, 5)),
    ):
        m = tnn.AdaptiveMaxPool2d((oh, ow)) if mx else tnn.AdaptiveAvgPool2d((oh, ow))
        bind(m, {})
        out.append(run_case("adaptive/" + name, "adaptive", dict(OH=oh, OW=ow, Max=mx), m, {},
                            distinct(gen, *xs), gen, True))
    return out


def misc_cases(gen):
    out = []
    for (name, size, alpha, beta, k, xs) in (
        ("alexnet", 5, 1e-4, 0.75, 2.0, (2, 7, 3, 3)),
        ("strong_s3", 3, 0.5, 0.75, 1.0, (2, 5, 3, 2)),
        ("even_s4", 4, 0.8, 0.6, 1.5, (1, 6, 2, 3)),
        ("wide_s9", 9, 1.0, 0.9, 1.0, (2, 4, 2, 2)),
    ):
        m = tnn.LocalResponseNorm(size, alpha, beta, k)
        bind(m, {})
        out.append(run_case("lrn/" + name, "lrn", dict(Size=size, Alpha=alpha, Beta=beta, K=k), m, {},
                            randn(gen, *xs), gen, True))
    for (name, fi, fo, bias, n) in (("7to5", 7, 5, True, 3), ("6to3_nobias", 6, 3, False, 4), ("1to1", 1, 1, True, 2)):
        m = tnn.Linear(fi, fo, bias)
        randomize(m, gen)
        names = bind(m, sd_map(m))
        out.append(run_case("linear/" + name, "linear", dict(In=fi, Out=fo, Bias=bias), m, names,
                            randn(gen, n, fi), gen, True))
    m = tnn.ReLU()
    bind(m, {})
    out.append(run_case("relu", "relu", {}, m, {}, randn(gen, 2, 3, 4, 5, away=0.05), gen, True))
    m = tnn.Flatten()
    bind(m, {})
    out.append(run_case("flatten", "flatten", {}, m, {}, randn(gen, 2, 3, 2, 4), gen, True))
    m = tnn.Softmax(dim=1)
    bind(m, {})
    out.append(run_case("softmax", "softmax", {}, m, {}, randn(gen, 3, 7) * 3, gen, True))
    m = tnn.Softmax(dim=1)
    bind(m, {})
    out.append(run_case("softmax_large", "softmax", {}, m, {}, randn(gen, 2, 5) * 3 + 50, gen, True))
    for train in (True, False):
        m = tnn.Dropout(0.3)
        bind(m, {})
        out.append(dropout_case(gen, train))
    return out


def dropout_case(gen, train):
    """Dropout's mask comes from the RNG, which PyTorch and Go do not share:
    the golden stores PyTorch's mask so that Go can check y = x * mask and
    dx = dy * mask with the same mask injected (train), or identity (eval)."""
    p = 0.3
    x = randn(gen, 4, 3, 5, 5)
    keep = (torch.rand(x.shape, generator=gen) >= p).to(torch.float32)
    mask = keep / (1 - p)
    dy = randn(gen, *x.shape)
    if train:
        y, dx = x.double() * mask.double(), dy.double() * mask.double()
    else:
        y, dx = x, dy
    return {"name": "dropout/" + ("train" if train else "eval"), "layer": "dropout", "cfg": dict(P=p),
            "train": train, "x": tens(x), "dy": tens(dy), "y": tens(y), "dx": tens(dx),
            "mask": tens(mask), "params": {}, "grads": {}, "after": {}}


class Inception(tnn.Module):
    """Concat of three branches, as nn.NewConcat(branch1, branch2, branch3)."""

    def __init__(self):
        super().__init__()
        self.branch1 = tnn.Conv2d(4, 3, 1)
        # no bias before BN: its true gradient in training is exactly 0, which
        # a relative comparison cannot check (GoogLeNet has none there either)
        self.branch2 = tnn.Sequential(tnn.Conv2d(4, 2, 3, padding=1, bias=False), tnn.BatchNorm2d(2), tnn.ReLU())
        self.branch3 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1), tnn.Conv2d(4, 2, 1, bias=False))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block(tnn.Module):
    """ResNet BasicBlock as nn.NewResidual(body, "downsample", shortcut, after).
    Go names: body children 0..4 flat under the block, shortcut under
    downsample.0 / downsample.1."""

    def __init__(self, cin, cout, stride, project, after):
        super().__init__()
        self.body = tnn.Sequential(
            tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU(),
            tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout))
        self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                         tnn.BatchNorm2d(cout)) if project else None
        self.after = after

    def forward(self, x):
        sc = x if self.downsample is None else self.downsample(x)
        y = self.body(x) + sc
        return F.relu(y) if self.after else y


def composite_cases(gen):
    out = []
    for train in (True, False):
        m = Inception()
        randomize(m, gen)
        names = bind(m, sd_map(m))
        out.append(run_case("concat/inception/" + ("train" if train else "eval"), "concat", {}, m, names,
                            randn(gen, 2, 4, 5, 6), gen, train))
    for (name, cin, cout, stride, project, after, xs) in (
        ("identity_relu", 3, 3, 1, False, True, (2, 3, 5, 6)),
        ("identity_noafter", 2, 2, 1, False, False, (2, 2, 4, 4)),
        ("projection_s2_relu", 2, 4, 2, True, True, (2, 2, 7, 6)),
    ):
        for train in (True, False):
            m = Block(cin, cout, stride, project, after)
            randomize(m, gen)
            mp = {}
            for go, tn in sd_map(m).items():
                mp[go[len("body."):] if go.startswith("body.") else go] = tn
            names = bind(m, mp)
            cfg = dict(In=cin, Out=cout, Stride=stride, Project=project, After=after)
            out.append(run_case("residual/%s/%s" % (name, "train" if train else "eval"), "residual", cfg, m,
                                names, randn(gen, *xs), gen, train))
    return out


def ce_cases(gen):
    out = []
    for (name, n, k, ls) in (("plain", 4, 6, 0.0), ("smooth0.1", 5, 7, 0.1), ("smooth0.3_k2", 3, 2, 0.3),
                             ("large_logits", 3, 4, 0.0)):
        logits = randn(gen, n, k) * (25 if name == "large_logits" else 2)
        labels = torch.randint(0, k, (n,), generator=gen)
        ld = logits.double().requires_grad_(True)
        loss = F.cross_entropy(ld, labels, label_smoothing=ls)
        loss.backward()
        out.append({"name": "ce/" + name, "layer": "ce", "cfg": dict(LabelSmoothing=ls), "train": True,
                    "x": tens(logits), "labels": labels.tolist(), "loss": loss.item(),
                    "dx": tens(ld.grad)})
    return out


# ---------------------------------------------------------------- optim

def optim_cases(gen):
    """Three steps of each optimizer on a Go model Sequential(Linear(5,3),
    Linear(3,2,no bias)): params 0.weight, 0.bias (NoDecay), 1.weight.
    Gradients are fixed random tensors per step; the learning rate changes
    per step to exercise Adam's step size."""
    shapes = {"0.weight": (3, 5), "0.bias": (3,), "1.weight": (2, 3)}
    init = {k: randn(gen, *s) for k, s in shapes.items()}
    grads = [{k: randn(gen, *s) for k, s in shapes.items()} for _ in range(3)]
    lrs = [0.1, 0.05, 0.02]
    cfgs = [
        ("sgd/plain", "sgd", dict()),
        ("sgd/momentum", "sgd", dict(momentum=0.9)),
        ("sgd/nesterov", "sgd", dict(momentum=0.9, nesterov=True)),
        ("sgd/dampening", "sgd", dict(momentum=0.9, dampening=0.3)),
        ("sgd/wd", "sgd", dict(weight_decay=0.05)),
        ("sgd/momentum_wd", "sgd", dict(momentum=0.9, weight_decay=0.05)),
        ("sgd/nesterov_wd_nodecay_bias", "sgd", dict(momentum=0.8, nesterov=True, weight_decay=0.05, nodecay=True)),
        ("adam/default", "adam", dict()),
        ("adam/wd", "adam", dict(weight_decay=0.05)),
        ("adam/betas_eps", "adam", dict(betas=(0.8, 0.95), eps=1e-3)),
        ("adamw/wd", "adamw", dict(weight_decay=0.05)),
        ("adamw/wd_nodecay_bias", "adamw", dict(weight_decay=0.1, betas=(0.85, 0.99), eps=1e-6, nodecay=True)),
        ("adamw/default", "adamw", dict()),
        # frozen: PyTorch's p.grad is None, Go's Param.Trainable is false
        ("sgd/momentum_frozen", "sgd", dict(momentum=0.9, weight_decay=0.05, frozen=["1.weight"])),
        ("adamw/frozen", "adamw", dict(weight_decay=0.05, frozen=["0.bias"])),
    ]
    out = []
    for (name, kind, kw) in cfgs:
        kw = dict(kw)
        nodecay = kw.pop("nodecay", False)
        frozen = kw.pop("frozen", [])
        ps = {k: v.double().clone().requires_grad_(True) for k, v in init.items()}
        if nodecay:
            wd = kw.pop("weight_decay")
            groups = [{"params": [ps["0.weight"], ps["1.weight"]], "weight_decay": wd},
                      {"params": [ps["0.bias"]], "weight_decay": 0.0}]
        else:
            groups = [{"params": list(ps.values())}]
        if kind == "sgd":
            opt = torch.optim.SGD(groups, lr=lrs[0], **kw)
        elif kind == "adam":
            opt = torch.optim.Adam(groups, lr=lrs[0], **kw)
        else:
            opt = torch.optim.AdamW(groups, lr=lrs[0], **kw)
        for t in range(3):
            for g in opt.param_groups:
                g["lr"] = lrs[t]
            for k, p in ps.items():
                p.grad = None if k in frozen else grads[t][k].double().clone()
            opt.step()
        # the effective hyper-parameters, PyTorch's defaults included
        g0 = opt.param_groups[0]
        cfg = {k: g0[k] for k in ("momentum", "dampening", "nesterov", "weight_decay", "eps") if k in g0}
        if "betas" in g0:
            cfg["beta1"], cfg["beta2"] = g0["betas"]
        cfg["nodecay"] = nodecay
        cfg["frozen"] = frozen
        state = {}
        for k, p in ps.items():
            for sk, sv in opt.state[p].items():
                if torch.is_tensor(sv) and sk in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                    state.setdefault(sk, {})[k] = tens(sv)
        out.append({"name": name, "kind": kind, "cfg": cfg, "lrs": lrs,
                    "init": {k: tens(v) for k, v in init.items()},
                    "grads": [{k: tens(v) for k, v in g.items()} for g in grads],
                    "want": {k: tens(p) for k, p in ps.items()}, "state": state})
    return out


def schedule_cases():
    steps = 20
    base = 0.1

    def lrs(make):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=base)
        sch = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        return out

    S = torch.optim.lr_scheduler
    cases = [
        ("step", dict(kind="step", gamma=0.5, every=5), lambda o: S.StepLR(o, 5, 0.5)),
        ("multistep", dict(kind="multistep", gamma=0.1, milestones=[3, 7, 12]),
         lambda o: S.MultiStepLR(o, [3, 7, 12], 0.1)),
        ("cosine", dict(kind="cosine", min_lr=0.0), lambda o: S.CosineAnnealingLR(o, steps)),
        ("cosine_min", dict(kind="cosine", min_lr=0.005), lambda o: S.CosineAnnealingLR(o, steps, eta_min=0.005)),
        # Go's Warmup multiplies the ramp onto After.LR(step) (both run from
        # step 0): PyTorch's ChainedScheduler of LinearLR and the schedule.
        ("warmup5_cosine", dict(kind="cosine", min_lr=0.0, warmup_steps=5, warmup_start=0.1),
         lambda o: S.ChainedScheduler([S.LinearLR(o, 0.1, 1.0, 5), S.CosineAnnealingLR(o, steps)])),
        ("warmup4_step", dict(kind="step", gamma=0.5, every=6, warmup_steps=4, warmup_start=0.25),
         lambda o: S.ChainedScheduler([S.LinearLR(o, 0.25, 1.0, 4), S.StepLR(o, 6, 0.5)])),
        ("constant", dict(kind="constant"), lambda o: S.ConstantLR(o, 1.0, 0)),
    ]
    out = []
    for (name, cfg, make) in cases:
        out.append({"name": name, "cfg": cfg, "base": base, "total": steps, "lrs": lrs(make)})
    return out


class TinyNet(tnn.Module):
    """Go: NewNamedSequential(features: Sequential(conv, bn, relu, maxpool,
    conv, relu), pool, flatten, fc)."""

    def __init__(self):
        super().__init__()
        self.features = tnn.Sequential(
            # no bias before BN: its true gradient is 0 and Adam would turn
            # float32 noise in it into full-size steps
            tnn.Conv2d(3, 4, 3, padding=1, bias=False), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(4, 6, 3), tnn.ReLU())
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(6, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def train_cases(gen):
    """Three training steps of a tiny net end to end: forward, cross-entropy
    with label smoothing, backward, SGD (Nesterov, weight decay). Records
    the loss of every step and every tensor of the state_dict after."""
    out = []
    for (name, opt_kind) in (("sgd_nesterov_wd", "sgd"), ("adamw", "adamw")):
        m = TinyNet()
        randomize(m, gen)
        init = {k: tens(v) for k, v in m.state_dict().items()}
        m = m.double().train()
        if opt_kind == "sgd":
            opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
        else:
            opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.01)
        batches, losses = [], []
        for step in range(3):
            x = randn(gen, 4, 3, 9, 9)
            labels = torch.randint(0, 5, (4,), generator=gen)
            opt.zero_grad()
            loss = F.cross_entropy(m(x.double()), labels, label_smoothing=0.1)
            loss.backward()
            opt.step()
            batches.append({"x": tens(x), "labels": labels.tolist()})
            losses.append(loss.item())
        out.append({"name": name, "optimizer": opt_kind, "init": init, "batches": batches, "losses": losses,
                    "want": {k: tens(v) for k, v in m.state_dict().items()}})
    return out


def write(path, obj):
    full = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print("%-45s %7d bytes" % (path, os.path.getsize(full)))


def main():
    gen = torch.Generator().manual_seed(20260427)
    torch.manual_seed(0)  # module constructors draw from the global RNG
    meta = {"torch": torch.__version__, "script": "scripts/gen_golden.py"}
    write("nn/testdata/golden/conv.json", dict(meta, cases=conv_cases(gen)))
    write("nn/testdata/golden/batchnorm.json", dict(meta, cases=bn_cases(gen)))
    write("nn/testdata/golden/pool.json", dict(meta, cases=pool_cases(gen)))
    write("nn/testdata/golden/misc.json", dict(meta, cases=misc_cases(gen)))
    write("nn/testdata/golden/composite.json", dict(meta, cases=composite_cases(gen)))
    write("nn/testdata/golden/loss.json", dict(meta, cases=ce_cases(gen)))
    write("optim/testdata/golden/optim.json", dict(meta, cases=optim_cases(gen)))
    write("optim/testdata/golden/schedule.json", dict(meta, cases=schedule_cases()))
    write("nn/testdata/golden/train.json", dict(meta, cases=train_cases(gen)))


if __name__ == "__main__":
    main()
