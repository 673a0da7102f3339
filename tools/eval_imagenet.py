"""Top-1 / top-5 accuracy of a model on an ImageNet-style folder, through the C
engine (`build/mobileformer predict`: the service's decoding, preprocessing and
engine), in one or more precisions.

    /usr/bin/python3 tools/eval_imagenet.py DIR --model M [--precision fp32|bf16|fp32,bf16]
        [--limit N] [--json OUT]

DIR holds one subfolder per class (e.g. the ImageNet validation set sorted into
its 1,000 synset folders, n01440764/ ...); the folders in sorted order are
classes 0, 1, ... as torchvision's ImageFolder numbers them, which for the
1,000 synsets is the standard ImageNet-1k order of the published checkpoints.
Every regular file in a class folder is an image; files that cannot be decoded
are counted and listed, not scored.  --limit N takes the first N images of
each class (sorted by name).  With several precisions, also how often they
agree on the top-1 class.  Exits 2 on bad arguments, 1 when the model does not
fit the folder (more class folders than classes) or the engine fails.

Not run on ImageNet here: the validation set and the published checkpoints
cannot be downloaded on these machines (tests/py/test_eval_imagenet.py runs it
on a small folder built from Fashion-MNIST and the bundled model).
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("MF_BUILD", "build")
CLI = os.path.join(ROOT, BUILD, "mobileformer")
CHUNK = 500  # images per predict process


def list_images(root, limit):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    items = []
    for c, name in enumerate(classes):
        d = os.path.join(root, name)
        files = sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))
        if limit:
            files = files[:limit]
        items.extend((os.path.join(d, f), c) for f in files)
    return classes, items


def model_info(model, precision):
    r = subprocess.run([CLI, "info", "--model", model, "--precision", precision], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    classes = int(re.search(r"(?m)^classes: (\d+)", r.stdout).group(1))
    kernels = re.search(r"(?m)^kernels: (.*)$", r.stdout).group(1)
    return classes, kernels


def predict(model, precision, paths):
    """Top-5 class indices per path (None where the image could not be decoded) and the errors."""
    top5, errors = [], []
    for i in range(0, len(paths), CHUNK):
        chunk = paths[i:i + CHUNK]
        r = subprocess.run([CLI, "predict", "--model", model, "--precision", precision, "--top-k", "5", *chunk],
                           capture_output=True, text=True)
        lines = r.stdout.splitlines()
        if len(lines) != len(chunk):
            raise RuntimeError(f"mobileformer predict failed: {r.stderr.strip()[-2000:]}")
        for path, line in zip(chunk, lines):
            o = json.loads(line)
            if "error" in o:
                top5.append(None)
                errors.append((path, o["error"]["code"]))
            else:
                top5.append([p["index"] for p in o["predictions"]])
    return top5, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="folder with one subfolder of images per class")
    ap.add_argument("--model", required=True, help="model file (tools/convert_checkpoint.py output)")
    ap.add_argument("--precision", default="fp32", help="fp32, bf16, or both: fp32,bf16")
    ap.add_argument("--limit", type=int, default=0, help="at most N images per class")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args(argv)
    precisions = args.precision.split(",")
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        ap.error("--precision: fp32, bf16 or fp32,bf16")
    if not os.path.isdir(args.dir):
        ap.error(f"{args.dir} is not a directory")
    if args.limit < 0:
        ap.error("--limit must be >= 0")
    classes, items = list_images(args.dir, args.limit)
    if not items:
        ap.error(f"no images in class subfolders of {args.dir}")
    try:
        n_model, _ = model_info(args.model, precisions[0])
    except RuntimeError as e:
        print(f"eval_imagenet: {e}", file=sys.stderr)
        return 1
    if len(classes) > n_model:
        print(f"eval_imagenet: {len(classes)} class folders but the model has {n_model} classes", file=sys.stderr)
        return 1
    paths = [p for p, _ in items]
    labels = [c for _, c in items]
    summary = {"dir": args.dir, "model": args.model, "classes": len(classes), "images": len(items), "results": {}}
    top1s = {}
    for prec in precisions:
        try:
            _, kernels = model_info(args.model, prec)
            top5, errors = predict(args.model, prec, paths)
        except RuntimeError as e:
            print(f"eval_imagenet: {e}", file=sys.stderr)
            return 1
        scored = [(t, c) for t, c in zip(top5, labels) if t is not None]
        n = len(scored)
        t1 = sum(t[0] == c for t, c in scored)
        t5 = sum(c in t for t, c in scored)
        top1s[prec] = [t[0] if t is not None else None for t in top5]
        res = {"kernels": kernels, "scored": n, "undecodable": len(errors), "top1": t1 / n if n else 0.0,
               "top5": t5 / n if n else 0.0}
        summary["results"][prec] = res
        print(f"{prec}: top-1 {100 * res['top1']:.2f}% ({t1}/{n}), top-5 {100 * res['top5']:.2f}% ({t5}/{n}); "
              f"{len(errors)} undecodable; kernels {kernels}")
        for path, code in errors[:10]:
            print(f"  {path}: {code}")
    if len(precisions) > 1:
        a, b = precisions[0], precisions[1]
        pairs = [(x, y) for x, y in zip(top1s[a], top1s[b]) if x is not None and y is not None]
        same = sum(x == y for x, y in pairs)
        summary["same_top1"] = same / len(pairs) if pairs else 0.0
        print(f"{a} vs {b}: same top-1 on {100 * summary['same_top1']:.2f}% ({same}/{len(pairs)}), top-1 "
              f"{100 * (summary['results'][b]['top1'] - summary['results'][a]['top1']):+.2f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
