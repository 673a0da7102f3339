"""Accuracy of the bundled model on the Fashion-MNIST test set, three ways, on
the same 10,000 images (`make eval-default`):

  1. pytorch   the PyTorch twin with the model file's weights, preprocessing in
               Python with PIL (resize + center crop + normalize, as declared);
  2. engine    build/mobileformer predict on every test image written as a PNG
               (the C decoder, preprocessing and engine), in fp32 and in bf16
               (--precision bf16, on the kernels the CPU selects);
  3. service   build/mobileformer-server on loopback, every PNG POSTed to
               /v1/predict (8 concurrent clients, so requests are batched).

Then: the fp32 engine must agree with PyTorch's top-1 on all but at most 0.1%
of the images (every disagreement is listed with both logit vectors), the
service must give exactly the engine's answers (top-1 and probabilities), and
bf16 must keep its bar: top-1 accuracy within 0.2 points of fp32's and fp32's
top-1 on at least 99.5% of the images.  Exits 1 if any check fails.

    /usr/bin/python3 tools/eval_default.py [--model M] [--limit N] [--json OUT]
"""
import argparse
import concurrent.futures as cf
import gzip
import http.client
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
BUILD = os.environ.get("MF_BUILD", "build")
DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def pytorch_logits(model_path, images):
    import torch
    from PIL import Image

    import mobileformer_torch as mft
    from mfformat import read_model
    tensors, meta = read_model(model_path)
    net = mft.load_numpy_state_dict(mft.build(meta["arch"], meta["num_classes"]), tensors).eval()
    p = meta["preprocess"]
    h, w = p["input_size"]
    mean = np.array(p["mean"], dtype=np.float32)[:, None, None]
    std = np.array(p["std"], dtype=np.float32)[:, None, None]
    batch = []
    for im in images:
        img = Image.fromarray(im, mode="L")
        s = p["resize"]
        iw, ih = img.size
        nw, nh = (s, int(s * ih / iw)) if iw <= ih else (int(s * iw / ih), s)
        if (nw, nh) != (iw, ih):
            img = img.resize((nw, nh), Image.BILINEAR if p["interpolation"] == "bilinear" else Image.NEAREST)
        left, top = int(round((nw - w) / 2.0)), int(round((nh - h) / 2.0))
        img = img.crop((left, top, left + w, top + h))
        a = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        x = (np.repeat(a[None], 3, axis=0) - mean) / std
        batch.append(x.astype(np.float32))
    out = []
    with torch.no_grad():
        for i in range(0, len(batch), 500):
            out.append(net(torch.from_numpy(np.stack(batch[i:i + 500]))).numpy())
    return np.concatenate(out), meta


def write_pngs(images, d):
    from PIL import Image
    paths = []
    for i, im in enumerate(images):
        p = os.path.join(d, f"{i:05d}.png")
        Image.fromarray(im, mode="L").save(p)
        paths.append(p)
    return paths


def engine_kernels(model_path, precision):
    r = subprocess.run([os.path.join(ROOT, BUILD, "mobileformer"), "info", "--model", model_path, "--precision",
                        precision], capture_output=True, text=True)
    m = re.search(r"(?m)^kernels: (.*)$", r.stdout)
    return m.group(1) if m else "?"


def engine_answers(model_path, paths, precision="fp32"):
    logits, probs = [], []
    cli = os.path.join(ROOT, BUILD, "mobileformer")
    for i in range(0, len(paths), 2000):
        r = subprocess.run([cli, "predict", "--model", model_path, "--precision", precision, "--top-k", "1000",
                            "--logits", *paths[i:i + 2000]], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("mobileformer predict failed: " + r.stderr[-2000:])
        for line in r.stdout.splitlines():
            o = json.loads(line)
            logits.append(o["logits"])
            pr = [0.0] * len(o["logits"])
            for pred in o["predictions"]:
                pr[pred["index"]] = pred["probability"]
            probs.append(pr)
    return np.array(logits, dtype=np.float32), np.array(probs)


def service_answers(model_path, paths, classes):
    srv = os.path.join(ROOT, BUILD, "mobileformer-server")
    proc = subprocess.Popen([srv, "--model", model_path, "--port", "0", "--bind", "127.0.0.1",
                             "--log_requests", "false", "--max_queue", "4096"],
                            stderr=subprocess.PIPE, text=True)
    port = None
    t0 = time.time()
    lines = []
    while time.time() - t0 < 60:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r'"port"\s*:\s*(\d+)', line) or re.search(r"port[ =:]+(\d+)", line)
        if "listening" in line and m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        raise RuntimeError("server did not report its port:\n" + "".join(lines))
    try:
        def one(i):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with open(paths[i], "rb") as f:
                body = f.read()
            c.request("POST", f"/v1/predict?top_k={classes}", body, {"Content-Type": "image/png"})
            r = c.getresponse()
            data = r.read()
            c.close()
            if r.status != 200:
                raise RuntimeError(f"image {i}: HTTP {r.status}: {data[:300]!r}")
            o = json.loads(data)
            pr = [0.0] * classes
            for p in o["predictions"]:
                pr[p["index"]] = p["probability"]
            return i, pr, o.get("batch_size", 1)
        probs = [None] * len(paths)
        batches = []
        with cf.ThreadPoolExecutor(8) as ex:
            for i, pr, bs in ex.map(one, range(len(paths))):
                probs[i] = pr
                batches.append(bs)
        return np.array(probs), batches
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description="Fashion-MNIST test accuracy: PyTorch, engine, service")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "fashion_mnist_mobileformer.safetensors"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N test images")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()

    images = read_idx("t10k-images-idx3-ubyte.gz")
    labels = read_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    n = len(images)
    t = time.time()
    pt_logits, meta = pytorch_logits(args.model, images)
    classes = meta["num_classes"]
    names = meta["labels"]
    pt_top1 = pt_logits.argmax(1)
    print(f"pytorch: accuracy {np.mean(pt_top1 == labels):.4f} ({int(np.sum(pt_top1 == labels))}/{n}) "
          f"[{time.time() - t:.0f}s]", flush=True)

    with tempfile.TemporaryDirectory() as d:
        paths = write_pngs(images, d)
        t = time.time()
        en_logits, en_probs = engine_answers(args.model, paths)
        en_top1 = en_logits.argmax(1)
        print(f"engine:  accuracy {np.mean(en_top1 == labels):.4f} ({int(np.sum(en_top1 == labels))}/{n}) "
              f"[fp32, kernels {engine_kernels(args.model, 'fp32')}, {time.time() - t:.0f}s]", flush=True)
        t = time.time()
        b16_logits, _ = engine_answers(args.model, paths, "bf16")
        b16_top1 = b16_logits.argmax(1)
        print(f"engine:  accuracy {np.mean(b16_top1 == labels):.4f} ({int(np.sum(b16_top1 == labels))}/{n}) "
              f"[bf16, kernels {engine_kernels(args.model, 'bf16')}, {time.time() - t:.0f}s]", flush=True)
        t = time.time()
        sv_probs, batches = service_answers(args.model, paths, classes)
        sv_top1 = sv_probs.argmax(1)
        print(f"service: accuracy {np.mean(sv_top1 == labels):.4f} ({int(np.sum(sv_top1 == labels))}/{n}) "
              f"[{time.time() - t:.0f}s, batch sizes up to {max(batches)}, mean {np.mean(batches):.2f}]", flush=True)

    dis = np.nonzero(en_top1 != pt_top1)[0]
    print(f"engine vs pytorch: {len(dis)} top-1 disagreements ({100.0 * len(dis) / n:.3f}%, allowed 0.1%); "
          f"max |logit difference| {float(np.abs(en_logits - pt_logits).max()):.2e}")
    for i in dis:
        print(f"  image {i} (label {names[labels[i]]}): pytorch {names[pt_top1[i]]} {np.round(pt_logits[i], 5).tolist()}"
              f"  engine {names[en_top1[i]]} {np.round(en_logits[i], 5).tolist()}")
    sv_mis = np.nonzero(sv_top1 != en_top1)[0]
    pdiff = float(np.abs(sv_probs - en_probs).max())
    print(f"service vs engine: {len(sv_mis)} top-1 differences, max |probability difference| {pdiff:.2e}")
    acc32, acc16 = float(np.mean(en_top1 == labels)), float(np.mean(b16_top1 == labels))
    same = float(np.mean(b16_top1 == en_top1))
    scale = float(np.abs(en_logits).max())
    b16_err = float(np.abs(b16_logits - en_logits).max())
    print(f"bf16 vs fp32 engine: accuracy {100 * (acc16 - acc32):+.2f} points (allowed +-0.2), same top-1 on "
          f"{100 * same:.2f}% (at least 99.5%), max |logit difference| {b16_err:.2e} ({b16_err / scale:.4f} of "
          f"max|fp32 logit|)")
    b16_ok = abs(acc16 - acc32) <= 0.002 + 1e-9 and same >= 0.995
    ok = len(dis) <= n * 0.001 and len(sv_mis) == 0 and pdiff <= 1e-6 and b16_ok
    summary = {"images": n, "accuracy": {"pytorch": float(np.mean(pt_top1 == labels)),
                                         "engine": acc32, "engine_bf16": acc16,
                                         "service": float(np.mean(sv_top1 == labels))},
               "bf16_same_top1": same, "bf16_max_logit_difference": b16_err,
               "kernels": {"fp32": engine_kernels(args.model, "fp32"), "bf16": engine_kernels(args.model, "bf16")},
               "engine_pytorch_disagreements": [int(i) for i in dis], "service_engine_differences": len(sv_mis),
               "max_probability_difference_service_engine": pdiff, "ok": bool(ok)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
