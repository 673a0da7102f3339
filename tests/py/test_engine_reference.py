"""The C engine against references computed at test time by the PyTorch twin
(itself checked against the authors' golden outputs): all seven presets, a
grouped custom architecture, several input sizes and batch sizes, every kernel
set, every intermediate tensor (via `mobileformer run --trace DIR`).

This keeps the repository standing alone without ../shared/golden, and covers
the variants and sizes the golden cases do not.  Tolerance as in the golden
README: 2e-4 * max(1, max|reference|) per element, and the same top-5 order
wherever the reference's top-5 logits are further apart than that.

In bf16 (--precision bf16, on every bf16 path this CPU has: portable always,
avx2, avx512bf16 and amx where present, a missing one reported as SKIP with the
feature it lacks) the bar is the bf16 one: every logit within
3e-2 * max|reference| (the fp32 reference) and the same top-1 on every image.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MF_BUILD", "build")
CLI = os.path.join(ROOT, BUILD, "mobileformer")
sys.path.insert(0, os.path.join(ROOT, "tools"))

try:
    import torch  # noqa: F401
    from make_reference import make_reference
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIP engine references: /usr/bin/python3 lacks torch ({e})")
    sys.exit(0)

CASES = [
    # arch, batch, (h, w), classes
    ("mobile_former_26m", 2, (97, 131), 1000),
    ("mobile_former_52m", 1, (64, 64), 1000),
    ("mobile_former_96m", 1, (160, 120), 1000),
    ("mobile_former_151m", 2, (224, 224), 1000),
    ("mobile_former_214m", 1, (99, 77), 1000),
    ("mobile_former_294m", 1, (128, 256), 10),
    ("mobile_former_508m", 1, (181, 203), 1000),
    (json.dumps({"name": "custom_g3", "stem": 6, "tokens": 5, "token_dim": 24, "groups": 3,
                 "classifier_width": 40, "last_exp": 4,
                 "blocks": [["A", 2, 6, 2, 0], ["B3", 4, 12, 2, 2], ["B", 3, 12, 1, 3],
                            ["B3", 3, 18, 1, 2], ["B", 2, 24, 2, 2]]}), 3, (33, 47), 7),
]


def kernel_sets():
    """The MF_KERNELS values of the fp32 paths this CPU can run."""
    sets = ["portable"]
    for ks in ("avx2", "avx512"):
        r = subprocess.run([CLI, "info", "--arch", "26m"], capture_output=True, text=True,
                           env=dict(os.environ, MF_KERNELS=ks))
        if r.returncode == 0:
            sets.append(ks)
        else:
            print(f"SKIP {ks} kernels: {r.stderr.strip()}")
    return sets


BF16_TOL = 3e-2


def bf16_kernel_sets():
    """The MF_KERNELS values of the bf16 paths this CPU can run."""
    sets = []
    for ks in ("portable", "avx2", "avx512bf16", "amx"):
        r = subprocess.run([CLI, "info", "--arch", "26m", "--precision", "bf16"], capture_output=True, text=True,
                           env=dict(os.environ, MF_KERNELS=ks))
        if r.returncode == 0:
            sets.append(ks)
        else:
            print(f"SKIP bf16 [{ks}]: {r.stderr.strip()}")
    return sets


def top5(v):
    return list(np.argsort(-v, kind="stable")[:5])


class EngineReference(unittest.TestCase):
    def test_cases(self):
        self.assertTrue(os.path.exists(CLI), f"{CLI} not built")
        sets = kernel_sets()
        bf16_sets = bf16_kernel_sets()
        self.assertIn("portable", bf16_sets, "the portable bf16 path must run everywhere")
        with tempfile.TemporaryDirectory() as tmp:
            for i, (arch, batch, (h, w), classes) in enumerate(CASES):
                d = os.path.join(tmp, f"case{i}")
                case = make_reference(arch, d, seed=100 + i, batch=batch, size=(h, w), num_classes=classes)
                for ks in sets:
                    tr = os.path.join(d, "trace_" + ks)
                    os.makedirs(tr)
                    out = os.path.join(d, f"logits_{ks}.f32")
                    env = dict(os.environ, MF_KERNELS=ks)
                    r = subprocess.run([CLI, "run", "--model", os.path.join(d, "model.safetensors"),
                                        "--input", os.path.join(d, "input.f32"),
                                        "--shape", f"{batch},3,{h},{w}", "--output", out,
                                        "--trace", tr, "--threads", str(1 + i % 2)],
                                       capture_output=True, text=True, env=env)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    name = case["variant"] if "variant" in case else arch[:20]
                    worst = 0.0
                    for key, spec in case["outputs"].items():
                        ref = np.fromfile(os.path.join(d, spec["file"]), dtype="<f4")
                        path = out if key == "logits" else os.path.join(tr, key + ".f32")
                        self.assertTrue(os.path.exists(path), f"{name}/{ks}: engine did not trace {key}")
                        got = np.fromfile(path, dtype="<f4")
                        self.assertEqual(got.size, ref.size, f"{name}/{ks}: {key} size")
                        tol = 2e-4 * max(1.0, float(np.abs(ref).max()))
                        err = float(np.abs(got - ref).max())
                        worst = max(worst, err / tol)
                        self.assertLessEqual(err, tol, f"{name} [{ks}] {h}x{w}: first diverging tensor "
                                                       f"{key}: max err {err:.3g} > tol {tol:.3g}")
                    ref = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(batch, classes)
                    got = np.fromfile(out, dtype="<f4").reshape(batch, classes)
                    tol = 2e-4 * max(1.0, float(np.abs(ref).max()))
                    for b in range(batch):
                        order = top5(ref[b])
                        for r_ in range(min(5, classes)):
                            sep_before = r_ == 0 or ref[b][order[r_ - 1]] - ref[b][order[r_]] > tol
                            sep_after = r_ == min(5, classes) - 1 or ref[b][order[r_]] - ref[b][order[r_ + 1]] > tol
                            if sep_before and sep_after:
                                self.assertEqual(top5(got[b])[r_], order[r_], f"{name} image {b} top-{r_ + 1}")
                    print(f"{name:20s} {batch}x3x{h}x{w} [{ks}]: worst error {worst:.3f} of tolerance")
                ref = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(batch, classes)
                scale = float(np.abs(ref).max())
                for ks in bf16_sets:
                    out = os.path.join(d, f"logits_bf16_{ks}.f32")
                    r = subprocess.run([CLI, "run", "--model", os.path.join(d, "model.safetensors"), "--precision",
                                        "bf16", "--input", os.path.join(d, "input.f32"),
                                        "--shape", f"{batch},3,{h},{w}", "--output", out, "--threads", str(1 + i % 2)],
                                       capture_output=True, text=True, env=dict(os.environ, MF_KERNELS=ks))
                    self.assertEqual(r.returncode, 0, r.stderr)
                    got = np.fromfile(out, dtype="<f4").reshape(batch, classes)
                    err = float(np.abs(got - ref).max())
                    name = case["variant"] if "variant" in case else arch[:20]
                    self.assertLessEqual(err, BF16_TOL * scale, f"{name} [bf16 {ks}] {h}x{w}: max logit error {err:.3g}"
                                                                f" > {BF16_TOL} * max|ref| {scale:.3g}")
                    for b in range(batch):
                        self.assertEqual(int(got[b].argmax()), int(ref[b].argmax()), f"{name} [bf16 {ks}] image {b} top-1")
                    print(f"REPORT {name:20s} {batch}x3x{h}x{w} [bf16 {ks}]: max logit error {err / scale:.4f} of "
                          f"max|ref|, top-1 {batch}/{batch}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
