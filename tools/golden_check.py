"""Check the PyTorch twin against the reference implementation's golden outputs.

For every case folder in the golden directory (default <repo>/../shared/golden,
or $MF_GOLDEN_DIR, or --golden DIR): regenerate the weights from manifest.json,
run the twin (float32, eval mode) on input.f32 and compare every recorded
intermediate and the logits within 2e-4 * max(1, max|ref|) per element, plus the
top-5 order wherever the reference's top-5 logits are further apart than that.
Also checks that the synthetic-weight rule (tools/mfweights.py) reproduces the
manifest.  Reports the first diverging tensor by name.

    /usr/bin/python3 tools/golden_check.py [--golden DIR] [CASE ...]

Exit status 0 when every case matches (or, printing a line starting with SKIP,
when there is no golden directory), 1 otherwise.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mobileformer_torch as mft  # noqa: E402
from mfweights import tensors_from_manifest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL_TOL = 2e-4


def golden_dir(explicit=None):
    return explicit or os.environ.get("MF_GOLDEN_DIR") or os.path.join(REPO, "..", "shared", "golden")


def list_cases(root):
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "case.json")))


def read_f32(path, shape):
    a = np.fromfile(path, dtype="<f4")
    n = int(np.prod(shape))
    if a.size != n:
        raise ValueError("%s: %d floats, case.json says %s" % (path, a.size, shape))
    return a.reshape(shape)


def compare(name, got, ref):
    """None if `got` matches `ref` within tolerance, else a one-line description."""
    if tuple(got.shape) != tuple(ref.shape):
        return "%s: shape %s, reference %s" % (name, list(got.shape), list(ref.shape))
    tol = REL_TOL * max(1.0, float(np.abs(ref).max()))
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    if not np.isfinite(err).all() or err.max() > tol:
        i = np.unravel_index(np.nanargmax(np.where(np.isfinite(err), err, np.inf)), err.shape)
        return "%s: max error %.3g > tolerance %.3g at %s (got %.6g, reference %.6g)" % (
            name, float(err[i]), tol, list(i), float(got[i]), float(ref[i]))
    return None


def check_top5(got, ref):
    """None if every row keeps the reference's top-5 order where it is unambiguous."""
    tol = REL_TOL * max(1.0, float(np.abs(ref).max()))
    for b in range(ref.shape[0]):
        order = np.argsort(-ref[b], kind="stable")[:5]
        for j in range(4):
            lo, hi = order[j], order[j + 1]
            if ref[b, lo] - ref[b, hi] > tol and not got[b, lo] > got[b, hi]:
                return "logits: image %d, top-5 order differs at rank %d (classes %d, %d)" % (
                    b, j, lo, hi)
    return None


def run_case(case_dir, log=print):
    """Compare one case; returns (ok, {output name: max abs error})."""
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    with open(os.path.join(case_dir, "manifest.json")) as f:
        manifest = json.load(f)
    arch = case.get("arch", case["variant"])
    num_classes = int(case.get("num_classes", 1000))
    model = mft.build(arch, num_classes).eval()

    # The rule used to make synthetic weights must give this very manifest.
    rule = mft.synthetic_manifest_for(arch, num_classes, case["weights_base_seed"]) \
        if "weights_base_seed" in case else None
    if rule is not None and rule != manifest:
        diff = next((m["name"] for m, r in zip(manifest, rule) if m != r), "(length)")
        log("FAIL %s: synthetic weight rule differs from manifest at %s" % (case["variant"], diff))
        return False, {}
    mft.load_numpy_state_dict(model, tensors_from_manifest(manifest))

    inp = case["input"]
    x = torch.from_numpy(read_f32(os.path.join(case_dir, inp["file"]), inp["shape"]).copy())
    got = {}
    with torch.no_grad():
        got["logits"] = model(x, trace=lambda n, t: got.__setitem__(n, t.detach().numpy().copy()))
    got["logits"] = got["logits"].numpy()

    errors, ok = {}, True
    for name, out in case["outputs"].items():
        ref = read_f32(os.path.join(case_dir, out["file"]), out["shape"])
        if name not in got:
            log("FAIL %s: the twin does not produce %r" % (case["variant"], name))
            return False, errors
        msg = compare(name, got[name], ref)
        errors[name] = float(np.abs(got[name].astype(np.float64) - ref).max()) \
            if got[name].shape == ref.shape else float("inf")
        if msg is None and name == "logits":
            msg = check_top5(got[name], ref)
        if msg is not None:
            log("FAIL %s: first diverging tensor %s" % (case["variant"], msg))
            ok = False
            break
    return ok, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--golden", help="golden directory (default $MF_GOLDEN_DIR or ../shared/golden)")
    ap.add_argument("cases", nargs="*", help="case folder names (default: all)")
    args = ap.parse_args(argv)
    root = golden_dir(args.golden)
    if not os.path.isdir(root):
        print("SKIP golden check: no golden directory at %s" % root)
        return 0
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cases = args.cases or list_cases(root)
    if not cases:
        print("SKIP golden check: no case folders in %s" % root)
        return 0
    failed = 0
    for c in cases:
        ok, errors = run_case(os.path.join(root, c))
        if ok:
            worst = max(errors, key=errors.get)
            print("ok   %-20s %d outputs, logits max error %.3g, worst %s %.3g" % (
                c, len(errors), errors["logits"], worst, errors[worst]))
        else:
            failed += 1
    print("%d of %d cases match" % (len(cases) - failed, len(cases)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
