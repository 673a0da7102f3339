"""Engine benchmark: this engine (fp32 and bf16) vs ONNX Runtime vs PyTorch
eager, same weights, same machine, interleaved.  Run by `make bench`
(bench/engine.sh).

For each variant (default 26m, 151m, 508m at 224x224) and each setting
(batch 1 / 1 thread, batch 1 / 2 threads, batch 16 / 2 threads):
  - mobileformer:  build/mobileformer bench, fp32 (AVX-512 kernels where the
                   CPU has them, OPENBLAS_CORETYPE=Haswell as on these machines)
  - mf-bf16:       the same with --precision bf16 (AMX tiles, vdpbf16ps or the
                   portable path: the kernels line says which)
  - onnxruntime:   the PyTorch twin exported to ONNX, run by onnxruntime-node
                   (bench/ort_bench.js), intra-op threads = the setting's threads
  - pytorch:       the twin in eager mode, torch.set_num_threads(threads)
The contenders run in turn, ROUNDS times, so the machine's drift (30-40% over
minutes here) hits all of them alike; the table gives the median over rounds
of each round's median latency, images/s, and the ratios: fp32 to ONNX Runtime
and to PyTorch, bf16 to fp32 (images/s).  The CPU model and the kernel sets
come first.

    /usr/bin/python3 bench/engine.py [--arch 26m,151m,508m] [--rounds 3] [--iters 30]
        [--size 224] [--settings 1x1,1x2,16x2] [--no-torch] [--no-ort] [--no-bf16] [--json OUT.json]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
BUILD = os.environ.get("MF_BUILD", "build")
CLI = os.path.join(ROOT, BUILD, "mobileformer")
OUT = os.path.join(ROOT, "bench", "out")


def ensure_ort():
    mod = os.path.join(ROOT, "bench", "node_modules", "onnxruntime-node")
    if os.path.isdir(mod):
        return True
    if not shutil.which("npm"):
        print("SKIP onnxruntime: npm not found")
        return False
    # Without ONNXRUNTIME_NODE_INSTALL=skip its install step tries to download GPU files and fails.
    env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip")
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=os.path.join(ROOT, "bench"), env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("SKIP onnxruntime: npm install failed:\n" + r.stderr[-2000:])
        return False
    return True


def prepare(arch, size):
    """Model file, torch weights and ONNX export of one variant (cached in bench/out)."""
    import torch
    import mobileformer_torch as mft
    from mfformat import default_preprocess, write_model

    d = os.path.join(OUT, arch)
    paths = {k: os.path.join(d, f) for k, f in
             (("model", "model.safetensors"), ("torch", "weights.pt"), ("onnx", "model.onnx"))}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(d, exist_ok=True)
    a = mft.parse_arch(arch)
    tensors = mft.synthetic_state_dict(a, 1000, seed=2024)
    write_model(paths["model"], tensors, mft.arch_metadata(a), 1000, preprocess=default_preprocess())
    net = mft.load_numpy_state_dict(mft.build(a, 1000), tensors).eval()
    torch.save({k: torch.as_tensor(v) for k, v in tensors.items()}, paths["torch"])
    x = torch.zeros(1, 3, size, size)
    torch.onnx.export(net, x, paths["onnx"], input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
    return paths


def median_ms(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m = re.search(r"median ([0-9.]+) ms", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="26m,151m,508m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--settings", default="1x1,1x2,16x2", help="batch x threads, comma-separated")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()

    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    have_ort = not args.no_ort and ensure_ort()
    env = dict(os.environ, OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", "Haswell"),
               OPENBLAS_NUM_THREADS="1")
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    kernels = {}
    for prec in ("fp32", "bf16"):
        m = re.search(r"(?m)^kernels: (.*)$", subprocess.run([CLI, "info", "--arch", "26m", "--precision", prec],
                                                            capture_output=True, text=True, env=env).stdout)
        kernels[prec] = m.group(1) if m else "?"
    print(f"cpu: {cpu}; {os.cpu_count()} cpus")
    print(f"engine kernels: fp32 {kernels['fp32']}; bf16 {kernels['bf16']}; "
          f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}; "
          f"{args.rounds} rounds x {args.iters} iterations, medians of round medians (ms)")
    results = []
    for short in args.arch.split(","):
        arch = short if short.startswith("mobile_former_") else "mobile_former_" + short
        p = prepare(arch, args.size)
        for batch, threads in settings:
            iters = max(5, args.iters // batch * 2) if batch > 1 else args.iters
            cmds = {"mobileformer": ([CLI, "bench", "--model", p["model"], "--batch", str(batch), "--threads",
                                      str(threads), "--iters", str(iters), "--size", str(args.size)], env)}
            if not args.no_bf16:
                cmds["mf-bf16"] = (cmds["mobileformer"][0] + ["--precision", "bf16"], env)
            if have_ort:
                cmds["onnxruntime"] = (["node", os.path.join(ROOT, "bench", "ort_bench.js"), p["onnx"], str(batch),
                                        str(threads), str(iters), str(args.size), str(args.size)], None)
            if not args.no_torch:
                cmds["pytorch"] = (["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_bench.py"), arch,
                                    p["torch"], str(batch), str(threads), str(max(5, iters // 3)), str(args.size),
                                    str(args.size)], None)
            samples = {k: [] for k in cmds}
            names = list(cmds)
            for r in range(args.rounds):
                for k in names[r % len(names):] + names[:r % len(names)]:  # rotate the order each round
                    samples[k].append(median_ms(cmds[k][0], cmds[k][1]))
            med = {k: statistics.median(v) for k, v in samples.items()}
            row = {"arch": arch, "batch": batch, "threads": threads, "median_ms": med,
                   "images_per_s": {k: batch * 1000.0 / v for k, v in med.items()}, "rounds": samples}
            results.append(row)
            line = f"{arch:20s} batch {batch:2d} threads {threads}: "
            line += "  ".join(f"{k} {v:8.2f} ms ({batch * 1000.0 / v:7.1f} img/s)" for k, v in med.items())
            if "onnxruntime" in med:
                line += f"  | speed vs onnxruntime {med['onnxruntime'] / med['mobileformer']:.2f}x"
            if "pytorch" in med:
                line += f", vs pytorch {med['pytorch'] / med['mobileformer']:.2f}x"
            if "mf-bf16" in med:
                line += f"  | bf16 vs fp32 {med['mobileformer'] / med['mf-bf16']:.2f}x"
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "kernels": kernels, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
