"""Write a reference case for the C engine, computed by the PyTorch twin.

    /usr/bin/python3 tools/make_reference.py --arch NAME|JSON --out DIR
        [--seed N] [--batch B] [--size H W] [--num-classes K] [--no-intermediates]

DIR receives the layout of ../shared/golden/<case>/ plus the model file:
  model.safetensors     synthetic weights (tools/mfweights.py rule, base seed N), labels
                        class_0.., default ImageNet preprocessing metadata
  manifest.json         name/shape/seed/offset/scale of every tensor (as the golden ones)
  input.f32             B x 3 x H x W, N(0, 1) from numpy's default_rng(N)
  logits.f32            B x K
  stem.f32, blockNN.features.f32, blockNN.tokens.f32, final_tokens.f32
  case.json             variant, arch (description), num_classes, input, weights_base_seed,
                        model, outputs {name: file, shape, max_abs, std}
All .f32 files are little-endian float32, row-major.  Used by the tests so that the
repository stands alone without ../shared.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mobileformer_torch as mft  # noqa: E402
from mfformat import default_preprocess, write_model  # noqa: E402
from mfweights import tensors_from_manifest  # noqa: E402


def _write_f32(path, a):
    np.ascontiguousarray(a, dtype="<f4").tofile(path)


def make_reference(arch, out_dir, seed=1, batch=1, size=(224, 224), num_classes=1000,
                   intermediates=True):
    """Write the case; returns the case.json content."""
    a = mft.parse_arch(arch)
    h, w = int(size[0]), int(size[1])
    if batch < 1 or h < 1 or w < 1:
        raise ValueError("batch and size must be positive")
    os.makedirs(out_dir, exist_ok=True)

    model = mft.build(a, num_classes).eval()
    manifest = mft.synthetic_manifest(mft.state_dict_entries(model), seed)
    tensors = tensors_from_manifest(manifest)
    mft.load_numpy_state_dict(model, tensors)
    write_model(os.path.join(out_dir, "model.safetensors"), tensors, mft.arch_metadata(a),
                num_classes, preprocess=default_preprocess())
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=0)

    x = np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)
    _write_f32(os.path.join(out_dir, "input.f32"), x)
    got = {}

    def trace(name, t):
        if intermediates:
            got[name] = t.detach().numpy().copy()

    with torch.no_grad():
        got["logits"] = model(torch.from_numpy(x), trace=trace).numpy()

    outputs = {}
    for name, v in got.items():
        _write_f32(os.path.join(out_dir, name + ".f32"), v)
        outputs[name] = {"file": name + ".f32", "shape": list(v.shape),
                         "max_abs": float(np.abs(v).max()), "std": float(v.std())}
    # Same order as the golden case.json files: stem, blocks, final_tokens, logits.
    outputs = {k: outputs[k] for k in sorted(outputs, key=lambda k: (k != "stem", k == "logits", k))}
    case = {"variant": a["name"], "arch": json.loads(mft.arch_to_json(a)), "num_classes": num_classes,
            "input": {"file": "input.f32", "shape": [batch, 3, h, w]},
            "weights_base_seed": seed, "model": "model.safetensors", "outputs": outputs}
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    return case


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, help="preset name (26m, mobile_former_508m, ...) or JSON")
    ap.add_argument("--seed", type=int, default=1, help="weights base seed and input seed (default 1)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--no-intermediates", action="store_true", help="write only the logits")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    if args.seed < 0 or args.seed >= 1 << 63:
        ap.error("--seed must be in 0..2^63-1")
    if args.batch < 1 or min(args.size) < 1 or args.num_classes < 1:
        ap.error("--batch, --size and --num-classes must be positive")
    try:
        case = make_reference(args.arch, args.out, args.seed, args.batch, args.size,
                              args.num_classes, not args.no_intermediates)
    except (mft.ArchError, ValueError, OSError) as e:
        print("make_reference: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s: %s, input %s, %d outputs" % (args.out, case["variant"], case["input"]["shape"],
                                                 len(case["outputs"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
