"""Convert a published Mobile-Former checkpoint (.pth / .pth.tar) into a model file.

    /usr/bin/python3 tools/convert_checkpoint.py --arch NAME|JSON CHECKPOINT OUT.safetensors
        [--labels FILE] [--num-classes N] [--input-size H W] [--resize N]
        [--interpolation bilinear|nearest] [--mean R G B] [--std R G B] [--channels 3|1] [--ema]

The checkpoint is what timm's training script saves: the state_dict itself, or a dict
holding it under "state_dict" (preferred), "model" or "state_dict_ema" (--ema prefers the
EMA weights); names may carry a "module." prefix.  num_batches_tracked buffers are
dropped and every floating tensor becomes float32.  The names and shapes must be exactly
those of the PyTorch twin for --arch (num_classes is read from classifier.classifier.1.weight
unless --num-classes is given).  Labels default to models/imagenet_labels.txt (1000 classes)
or class_0.. for other class counts; preprocessing defaults to ImageNet's (224 crop of 256,
bilinear, ImageNet mean/std, RGB).

On any error one line goes to stderr, the exit status is 1, and OUT is not created.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfformat import ModelFormatError, check_preprocess, write_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LABELS = os.path.join(REPO, "models", "imagenet_labels.txt")
CLASS_WEIGHT = "classifier.classifier.1.weight"


class ConvertError(Exception):
    """A problem with the input; the message is printed as is."""


def _shape(s):
    return "[" + ", ".join(str(int(d)) for d in s) + "]"


def load_checkpoint(path, prefer_ema=False):
    """name -> torch tensor from a timm checkpoint file; also returns the key used."""
    import torch

    if not os.path.exists(path):
        raise ConvertError("cannot read checkpoint %s: no such file" % path)
    if not os.path.isfile(path):
        raise ConvertError("cannot read checkpoint %s: not a regular file" % path)
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # torch.load raises many kinds for a bad file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConvertError("cannot read checkpoint %s: not a PyTorch checkpoint (%s)" % (path, msg)) from None
    if not isinstance(obj, dict):
        raise ConvertError("checkpoint %s holds a %s, not a state_dict" % (path, type(obj).__name__))
    order = ("state_dict_ema", "state_dict", "model") if prefer_ema else ("state_dict", "model", "state_dict_ema")
    where = "top level"
    for key in order:
        if isinstance(obj.get(key), dict):
            obj, where = obj[key], key
            break
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            raise ConvertError("checkpoint %s: no state_dict found (entry %r at the %s is not a tensor; "
                               "expected the state_dict at the top level or under state_dict, "
                               "state_dict_ema or model)" % (path, k, where))
        name = k[len("module."):] if k.startswith("module.") else k
        if name in sd:
            raise ConvertError("checkpoint %s: tensor %s appears twice (with and without 'module.')"
                               % (path, name))
        sd[name] = v
    if not sd:
        raise ConvertError("checkpoint %s: the state_dict is empty" % path)
    return sd, where


def check_against_twin(sd, arch, num_classes=None):
    """float32 numpy tensors in the twin's order, after checking names and shapes."""
    import mobileformer_torch as mft

    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if num_classes is None:
        if CLASS_WEIGHT not in sd:
            raise ConvertError("missing tensor %s (needed to infer the number of classes)" % CLASS_WEIGHT)
        if sd[CLASS_WEIGHT].dim() != 2:
            raise ConvertError("tensor %s has shape %s, expected [num_classes, width]"
                               % (CLASS_WEIGHT, _shape(sd[CLASS_WEIGHT].shape)))
        num_classes = int(sd[CLASS_WEIGHT].shape[0])
        if num_classes < 1:
            raise ConvertError("tensor %s has no classes" % CLASS_WEIGHT)
    want = [(k, tuple(v.shape)) for k, v in mft.build(arch, num_classes).state_dict().items()
            if not k.endswith("num_batches_tracked")]
    names = {k for k, _ in want}
    for k, _ in want:
        if k not in sd:
            raise ConvertError("missing tensor %s (expected by --arch %s)" % (k, mft.parse_arch(arch)["name"]))
    for k in sd:
        if k not in names:
            raise ConvertError("unexpected tensor %s (not part of --arch %s)" % (k, mft.parse_arch(arch)["name"]))
    out = {}
    for k, shape in want:
        v = sd[k]
        if tuple(v.shape) != shape:
            raise ConvertError("tensor %s has shape %s, expected %s for --arch %s" % (
                k, _shape(v.shape), _shape(shape), mft.parse_arch(arch)["name"]))
        if not v.is_floating_point():
            raise ConvertError("tensor %s has dtype %s, expected a floating type" % (k, v.dtype))
        a = v.detach().cpu().float().numpy()
        if not np.isfinite(a).all():
            raise ConvertError("tensor %s contains NaN or infinite values" % k)
        out[k] = a
    return out, num_classes


def read_labels(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError("cannot read labels %s: %s" % (path, e)) from None
    labels = text.split("\n")
    if labels and labels[-1] == "":
        labels.pop()
    return [s.rstrip("\r") for s in labels]


def convert(args):
    import mobileformer_torch as mft

    try:
        arch = mft.parse_arch(args.arch)
    except mft.ArchError as e:
        raise ConvertError(str(e)) from None
    h, w = args.input_size
    pre = {"input_size": [h, w], "resize": args.resize if args.resize else int(max(h, w) / 0.875),
           "interpolation": args.interpolation, "mean": args.mean, "std": args.std,
           "channels": args.channels}
    try:
        pre = check_preprocess(pre)
    except ModelFormatError as e:
        raise ConvertError(str(e)) from None
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ConvertError("cannot write %s: directory %s does not exist" % (args.out, out_dir))
    if args.num_classes is not None and args.num_classes < 1:
        raise ConvertError("--num-classes must be positive, got %d" % args.num_classes)

    sd, where = load_checkpoint(args.checkpoint, args.ema)
    tensors, num_classes = check_against_twin(sd, arch, args.num_classes)

    if args.labels:
        labels = read_labels(args.labels)
    elif num_classes == 1000:
        labels = read_labels(DEFAULT_LABELS)
    else:
        labels = ["class_%d" % i for i in range(num_classes)]
        print("note: %d classes and no --labels: using class_0..class_%d" % (num_classes, num_classes - 1),
              file=sys.stderr)
    if len(labels) != num_classes:
        raise ConvertError("label count mismatch: %s has %d labels, the model has %d classes"
                           % (args.labels or DEFAULT_LABELS, len(labels), num_classes))

    try:
        write_model(args.out, tensors, mft.arch_metadata(arch), num_classes, labels, pre)
    except (OSError, ModelFormatError) as e:
        raise ConvertError("cannot write %s: %s" % (args.out, e)) from None
    return arch, num_classes, len(tensors), where


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, help="preset (26m ... 508m, mobile_former_26m ...) or JSON")
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--labels", help="label file, one per line (default models/imagenet_labels.txt)")
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--input-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    ap.add_argument("--resize", type=int, help="shorter side before the crop (default size / 0.875)")
    ap.add_argument("--interpolation", choices=["bilinear", "nearest"], default="bilinear")
    ap.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406], metavar=("R", "G", "B"))
    ap.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225], metavar=("R", "G", "B"))
    ap.add_argument("--channels", type=int, choices=[3, 1], default=3)
    ap.add_argument("--ema", action="store_true", help="prefer state_dict_ema when present")
    args = ap.parse_args(argv)
    try:
        arch, n, count, where = convert(args)
    except ConvertError as e:
        print("convert_checkpoint: error: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s: %s, %d classes, %d tensors (state_dict from %s)" % (
        args.out, arch["name"], n, count, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
