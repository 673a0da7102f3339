"""PyTorch eager latency of the twin: torch_bench.py ARCH_OR_JSON WEIGHTS.pt BATCH THREADS ITERS H W.
Prints "median <ms> ms".  Run with Debian's /usr/bin/python3."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import mobileformer_torch as mft  # noqa: E402


def main():
    arch, weights, b, t, n, h, w = sys.argv[1:8]
    b, t, n, h, w = int(b), int(t), int(n), int(h), int(w)
    torch.set_num_threads(t)
    sd = torch.load(weights)
    net = mft.build(arch, sd["classifier.classifier.1.weight"].shape[0]).eval()
    net.load_state_dict(sd, strict=False)
    x = torch.sin(torch.arange(b * 3 * h * w, dtype=torch.float32) * 0.37).reshape(b, 3, h, w)
    times = []
    with torch.no_grad():
        for _ in range(2):
            net(x)
        for _ in range(n):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(f"median {times[len(times) // 2]:.3f} ms  p10 {times[len(times) // 10]:.3f}  p90 {times[(9 * len(times)) // 10]:.3f}  ({n} iters, torch {torch.__version__})")


if __name__ == "__main__":
    main()
