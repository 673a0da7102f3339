"""Two builds of the engine against each other: `mobileformer bench` of build
A and build B in turn, ROUNDS times (A, B, A, B, ...), so the machine's drift
hits both alike; prints each round's ratio B / A of the time (wall `median`
and this thread's `cpu median`) and the median of those ratios.  For a change
to the engine: build the commit before it in a worktree, then

    python3 bench/ab.py OLD/build/mobileformer build/mobileformer \\
        [--rounds 10] [--iters 40] [--arch 508m] [--precision fp32] [--batch 1] [--threads 1]

Below 1.0 means B is faster.  The CPU model comes first.
"""
import argparse
import re
import statistics
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import cpu_model  # noqa: E402


def run(binary, a):
    cmd = [binary, "bench", "--arch", a.arch, "--precision", a.precision, "--batch", str(a.batch),
           "--threads", str(a.threads), "--iters", str(a.iters)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit("%s failed (%d):\n%s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    wall = re.search(r"^median ([0-9.]+) ms", p.stdout, re.M)
    cpu = re.search(r"^cpu median ([0-9.]+) ms", p.stdout, re.M)
    kern = re.search(r"kernels (\S+)", p.stdout)
    if not wall or (a.threads == 1 and not cpu):
        sys.exit("no median in the output of %s:\n%s" % (" ".join(cmd), p.stdout[-2000:]))
    # the CLI prints its CPU time only at 1 thread (helpers spin): wall alone then
    return float(wall.group(1)), float(cpu.group(1)) if cpu else float("nan"), kern.group(1) if kern else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="build A's mobileformer (the baseline)")
    ap.add_argument("b", help="build B's mobileformer")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--arch", default="508m")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.rounds < 1 or a.iters < 1 or a.batch < 1 or a.threads < 1:
        sys.exit("--rounds, --iters, --batch and --threads must be >= 1")
    print("cpu: %s" % cpu_model())
    print("%s %s, batch %d, %d thread(s), %d iterations per run, %d rounds; A = %s, B = %s"
          % (a.arch, a.precision, a.batch, a.threads, a.iters, a.rounds, a.a, a.b))
    rows = []
    for r in range(a.rounds):
        wa, ca, ka = run(a.a, a)
        wb, cb, kb = run(a.b, a)
        rows.append((wa, wb, ca, cb))
        print("round %2d: A %.3f ms (cpu %.3f), B %.3f ms (cpu %.3f): B/A %.3f (cpu %.3f)  [kernels A %s, B %s]"
              % (r + 1, wa, ca, wb, cb, wb / wa, cb / ca, ka, kb), flush=True)
    med = statistics.median
    print("median over rounds: A %.3f ms, B %.3f ms; B/A wall %.3f, cpu %s"
          % (med(x[0] for x in rows), med(x[1] for x in rows), med(x[1] / x[0] for x in rows),
             "%.3f" % med(x[3] / x[2] for x in rows) if a.threads == 1 else "n/a (threads > 1)"))


if __name__ == "__main__":
    main()
