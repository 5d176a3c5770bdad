#!/usr/bin/python3
"""Training throughput, ringtrain beside PyTorch, in one run on this machine.

Usage: /usr/bin/python3 scripts/bench_train.py [--threads 2] [--seconds 6] [CASE ...]
CASE is net:input:batch (default: the reference set of issue 4). Builds
ringtrain once, then alternates PyTorch and ringtrain per case so that both
see the same machine load; prints a Markdown table with ratios: of
throughput (img/s) and of CPU time per step (PyTorch's / ringtrain's; the
steadier one when the machine is shared, but it hides idle cores, so the
throughput ratio of a quiet run is the one that counts).

--predict times inference instead: evaluation mode, forward only
(PyTorch: net.eval() under torch.no_grad(); ringtrain: bench train --predict).
"""
import argparse, os, re, resource, subprocess, sys, time

from benchenv import openblas_env  # scripts/ is on sys.path: run as scripts/X.py

CASES = ["alexnet:224:16", "vgg11:224:4", "googlenet:224:8", "resnet18:224:8",
         "resnet50:224:4", "densenet121:224:4", "resnet18:32:64"]

def torch_case(name, hw, bs, threads, seconds, predict):
    code = f"""
import time, resource, torch, torchvision.models as m
torch.set_num_threads({threads})
kw = {{"aux_logits": False, "init_weights": False}} if "{name}" == "googlenet" else {{}}
net = getattr(m, "{name}")(num_classes=10, **kw)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn({bs}, 3, {hw}, {hw}), torch.randint(0, 10, ({bs},))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
if {predict}:
    net.eval()
    def step():
        with torch.no_grad():
            net(x)
step()
n, t, c = 0, time.perf_counter(), time.process_time()
while time.perf_counter() - t < {seconds} or n < 2:
    step(); n += 1
dt, cpu = (time.perf_counter() - t) / n, (time.process_time() - c) / n
print(f"img_per_s={{{bs}/dt:.2f}} ms_per_step={{dt*1000:.1f}} cpu_ms_per_step={{cpu*1000:.1f}} peak_rss_mib={{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f}}")
"""
    env = dict(os.environ, **openblas_env(), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(["/usr/bin/python3", "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return parse(out)

def parse(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--predict", action="store_true", help="time inference (eval, forward only) instead of training")
    ap.add_argument("cases", nargs="*", default=CASES)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "bin", "ringtrain")
    subprocess.run(["go", "build", "-o", binary, "./cmd/ringtrain"], cwd=root, check=True)
    print(f"| net | input | batch | ringtrain img/s | PyTorch img/s | ratio | CPU-time ratio | ringtrain peak RSS MiB | PyTorch peak RSS MiB | RSS ratio |")
    print(f"|---|---|---|---|---|---|---|---|---|---|")
    for case in a.cases:
        name, hw, bs = case.split(":")
        hw, bs = int(hw), int(bs)
        t = torch_case(name, hw, bs, a.threads, a.seconds, a.predict)
        r = parse(subprocess.run([binary, "bench", "train", "--net", name, "--input", str(hw), "--batch", str(bs),
                                  "--threads", str(a.threads), "--seconds", str(a.seconds)] + (["--predict"] if a.predict else []),
                                 capture_output=True, text=True, check=True).stdout)
        print(f"| {name} | {hw} | {bs} | {r['img_per_s']:.2f} | {t['img_per_s']:.2f} | {r['img_per_s']/t['img_per_s']:.2f} | "
              f"{t['cpu_ms_per_step']/r['cpu_ms_per_step']:.2f} | "
              f"{r['peak_rss_mib']:.0f} | {t['peak_rss_mib']:.0f} | {r['peak_rss_mib']/t['peak_rss_mib']:.2f} |", flush=True)

if __name__ == "__main__":
    main()
