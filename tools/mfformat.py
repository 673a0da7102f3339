"""Read and write Mobile-Former model files (safetensors + metadata; docs/model-format.md).

numpy only (no safetensors package, no torch):

    write_model(path, tensors, arch, num_classes, labels=None, preprocess=None)
        tensors: name -> array (stored as F32 little-endian, in the given order);
        arch: the metadata string (a preset name or a JSON description; a dict is
        serialized); labels default to class_0..; preprocess defaults to ImageNet's.
        The file appears atomically (temporary file + rename) or not at all.
    read_model(path) -> (tensors, metadata)
        tensors: name -> float32 array (header order); metadata decoded:
        format, arch (string), num_classes (int), preprocess (dict), labels (list).

Errors are ModelFormatError (a ValueError) with a message naming the field or tensor.
"""
import json
import os
import struct
import tempfile

import numpy as np

FORMAT = "mobileformer/1"
MAX_HEADER = 100 << 20


class ModelFormatError(ValueError):
    """A model file or model-file content that does not follow docs/model-format.md."""


def default_preprocess(input_size=(224, 224), resize=None):
    """timm's ImageNet evaluation transform (crop_pct 0.875, bilinear, ImageNet mean/std)."""
    h, w = int(input_size[0]), int(input_size[1])
    return {"input_size": [h, w], "resize": int(resize) if resize else int(max(h, w) / 0.875),
            "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "channels": 3}


def check_preprocess(p):
    """Raise ModelFormatError unless `p` is a valid preprocess object; returns a normalized copy."""
    def bad(msg):
        raise ModelFormatError("preprocess: " + msg)

    if not isinstance(p, dict):
        bad("must be a JSON object")
    for k in ("input_size", "resize", "interpolation", "mean", "std", "channels"):
        if k not in p:
            bad('missing "%s"' % k)
    unknown = sorted(set(p) - {"input_size", "resize", "interpolation", "mean", "std", "channels"})
    if unknown:
        bad('unknown key "%s"' % unknown[0])

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    size = p["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and 1 <= v <= 16384 for v in size)):
        bad("input_size must be [H, W] with 1 <= H, W <= 16384, got %r" % (size,))
    if not (is_int(p["resize"]) and 1 <= p["resize"] <= 16384):
        bad("resize must be an integer in 1..16384, got %r" % (p["resize"],))
    if p["resize"] < max(size):
        bad("resize (%d) must be at least the input size %r, or the center crop does not fit"
            % (p["resize"], size))
    if p["interpolation"] not in ("bilinear", "nearest"):
        bad('interpolation must be "bilinear" or "nearest", got %r' % (p["interpolation"],))
    for k in ("mean", "std"):
        v = p[k]
        if not (isinstance(v, list) and len(v) == 3 and all(is_num(x) for x in v)):
            bad("%s must be 3 numbers, got %r" % (k, v))
    if not all(x > 0 for x in p["std"]):
        bad("std values must be > 0, got %r" % (p["std"],))
    if p["channels"] not in (1, 3) or not is_int(p["channels"]):
        bad("channels must be 3 or 1, got %r" % (p["channels"],))
    return {"input_size": list(size), "resize": p["resize"], "interpolation": p["interpolation"],
            "mean": [float(x) for x in p["mean"]], "std": [float(x) for x in p["std"]],
            "channels": p["channels"]}


def _check_labels(labels, num_classes):
    if not isinstance(labels, (list, tuple)) or not all(isinstance(s, str) for s in labels):
        raise ModelFormatError("labels must be a list of strings")
    if len(labels) != num_classes:
        raise ModelFormatError("labels: %d labels for %d classes" % (len(labels), num_classes))


def encode_header(tensors, metadata):
    """The header bytes (length prefix included) and the tensors as F32 LE arrays."""
    header = {"__metadata__": metadata}
    arrays, offset = [], 0
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ModelFormatError("bad tensor name %r" % (name,))
        a = np.ascontiguousarray(np.asarray(a), dtype="<f4")
        header[name] = {"dtype": "F32", "shape": [int(d) for d in a.shape],
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, arrays


def write_model(path, tensors, arch, num_classes, labels=None, preprocess=None):
    """Write a model file atomically; see the module docstring."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelFormatError("num_classes must be a positive integer, got %r" % (num_classes,))
    if isinstance(arch, dict):
        arch = json.dumps(arch, separators=(",", ":"))
    if not isinstance(arch, str) or not arch:
        raise ModelFormatError("arch must be a preset name or a JSON description")
    if labels is None:
        labels = ["class_%d" % i for i in range(num_classes)]
    labels = list(labels)
    _check_labels(labels, num_classes)
    pre = check_preprocess(default_preprocess() if preprocess is None else preprocess)
    metadata = {"format": FORMAT, "arch": arch, "num_classes": str(num_classes),
                "preprocess": json.dumps(pre, separators=(",", ":")),
                "labels": json.dumps(labels, separators=(",", ":"), ensure_ascii=False)}
    head, arrays = encode_header(tensors, metadata)

    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            for a in arrays:
                f.write(a.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def decode_metadata(meta):
    """Decode the string-valued __metadata__ of a model file."""
    def bad(msg):
        raise ModelFormatError("__metadata__: " + msg)

    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        bad("must be an object of strings")
    for k in ("format", "arch", "num_classes", "preprocess", "labels"):
        if k not in meta:
            bad('missing "%s"' % k)
    if meta["format"] != FORMAT:
        bad("format is %r, expected %r" % (meta["format"], FORMAT))
    try:
        n = int(meta["num_classes"])
    except ValueError:
        n = 0
    if n < 1 or str(n) != meta["num_classes"].strip():
        bad("num_classes must be a positive decimal integer, got %r" % meta["num_classes"])
    out = dict(meta)
    out["num_classes"] = n
    for k in ("preprocess", "labels"):
        try:
            out[k] = json.loads(meta[k])
        except ValueError as e:
            bad("%s is not valid JSON (%s)" % (k, e))
    out["preprocess"] = check_preprocess(out["preprocess"])
    _check_labels(out["labels"], n)
    return out


def read_model(path):
    """(tensors, metadata) of a model file; see the module docstring."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ModelFormatError("%s: file too short for a safetensors header" % path)
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > MAX_HEADER or 8 + n > len(data):
        raise ModelFormatError("%s: header length %d does not fit the file (%d bytes)" % (path, n, len(data)))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFormatError("%s: header is not valid JSON (%s)" % (path, e)) from None
    if not isinstance(header, dict):
        raise ModelFormatError("%s: header is not a JSON object" % path)
    meta = decode_metadata(header.pop("__metadata__", None))
    body = memoryview(data)[8 + n:]
    tensors, spans = {}, []
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") != "F32":
            raise ModelFormatError("tensor %s: dtype must be F32, got %r" % (
                name, info.get("dtype") if isinstance(info, dict) else info))
        shape, offs = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise ModelFormatError("tensor %s: bad shape %r" % (name, shape))
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1] <= len(body)):
            raise ModelFormatError("tensor %s: data_offsets %r outside the data (%d bytes)" % (
                name, offs, len(body)))
        numel = int(np.prod(shape)) if shape else 1
        if offs[1] - offs[0] != 4 * numel:
            raise ModelFormatError("tensor %s: %d bytes for shape %s" % (name, offs[1] - offs[0], shape))
        spans.append((offs[0], offs[1], name))
        tensors[name] = np.frombuffer(body[offs[0]:offs[1]], dtype="<f4").astype(np.float32).reshape(shape)
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ModelFormatError("tensors %s and %s overlap" % (n0, n1))
    return tensors, meta
