"""Train the bundled default model: a small Mobile-Former on Fashion-MNIST.

    /usr/bin/python3 tools/train_default.py [--epochs 30] [--out models/fashion_mnist_mobileformer.safetensors]

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, 60,000
training and 10,000 test images, 28x28 gray, 10 classes).  Every image goes
through exactly the preprocessing the model file declares (and the C service
applies): resize the shorter side to 32 with PIL's bilinear filter, center
crop 32x32, scale to [0, 1], normalize with the data set's mean/std, and the
gray plane repeated on the 3 input channels.

Recipe (fixed seed): AdamW (lr 3e-3, weight decay 0.05, no decay on norms,
biases and tokens), 1 epoch of linear warm-up then cosine decay, batch 128,
label smoothing 0.1, random crop with 3 pixels of padding and horizontal
flips, an exponential moving average of the weights (decay 0.999) that is
what gets saved.  Progress lines give loss, accuracy and the time left.

The architecture is a custom Mobile-Former description (the same engine code
runs it as the ImageNet presets): 32x32 inputs make the presets' five
stride-2 stages end at 1x1, so this one downsamples three times (32 -> 16 ->
8 -> 4) and is narrow enough to train in well under two hours on 2 CPU cores.

Writes the checkpoint in the reference layout (a .pth.tar with the state_dict
under "state_dict_ema", as timm's training script saves), converts it with
tools/convert_checkpoint.py into the model file, and writes a JSON summary
next to it (models/fashion_mnist_mobileformer.json).
"""
import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import mobileformer_torch as mft  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
          "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # of the training images, on [0, 1]
SIZE = 32

ARCH = {
    "name": "fashion_mnist_mf",
    "stem": 16, "tokens": 4, "token_dim": 64, "groups": 1, "classifier_width": 256, "last_exp": 6,
    "blocks": [["A", 2, 16, 1, 0],     # 16x16 after the stride-2 stem
               ["B3", 6, 24, 2, 4],    # 8x8
               ["B", 3, 24, 1, 3],
               ["B3", 6, 48, 2, 4],    # 4x4
               ["B", 4, 48, 1, 4],
               ["B", 6, 64, 1, 4]],
}
PREPROCESS = {"input_size": [SIZE, SIZE], "resize": SIZE, "interpolation": "bilinear",
              "mean": [MEAN] * 3, "std": [STD] * 3, "channels": 1}


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split):
    """uint8 images N x 28 x 28 and int64 labels of 'train' or 't10k'."""
    return read_idx(f"{split}-images-idx3-ubyte.gz"), read_idx(f"{split}-labels-idx1-ubyte.gz").astype(np.int64)


def resize_like_service(images):
    """N x 28 x 28 uint8 -> N x 32 x 32 uint8 with PIL's bilinear resize (what the
    model's preprocessing does to a 28x28 upload: shorter side to 32, crop 32)."""
    from PIL import Image
    out = np.empty((len(images), SIZE, SIZE), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im, mode="L").resize((SIZE, SIZE), Image.BILINEAR))
    return out


def to_input(u8):
    """uint8 N x H x W -> normalized float N x 3 x H x W (gray repeated)."""
    x = torch.from_numpy(u8).float().div_(255.0).sub_(MEAN).div_(STD)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def augment(u8, gen, pad=3):
    """Random crop with zero padding and horizontal flip, on a uint8 batch."""
    n, h, w = u8.shape
    t = torch.from_numpy(u8)
    padded = F.pad(t, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :].expand(n, h, w)
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out.numpy()


def evaluate(model, x_u8, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            logits = model(to_input(x_u8[i:i + batch]))
            correct += int((logits.argmax(1) == torch.from_numpy(y[i:i + batch])).sum())
    return correct / len(x_u8)


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on 2 cores a second one gains little on these small tensors "
                         "and suffers badly from any other load)")
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke tests)")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "fashion_mnist_mobileformer.safetensors"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    xtr, ytr = load_split("train")
    xte, yte = load_split("t10k")
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    t0 = time.time()
    xtr, xte = resize_like_service(xtr), resize_like_service(xte)
    print(f"data: {len(xtr)} train, {len(xte)} test images resized to {SIZE}x{SIZE} in {time.time() - t0:.1f}s",
          flush=True)

    model = mft.build(ARCH, num_classes=10)
    ema = mft.build(ARCH, num_classes=10)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.startswith("tokens") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999))
    steps_per_epoch = len(xtr) // args.batch
    total = steps_per_epoch * args.epochs
    warm = steps_per_epoch
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: {nparams} parameters; {args.epochs} epochs x {steps_per_epoch} steps of {args.batch}", flush=True)

    step, t_start = 0, time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen).numpy()
        run_loss, run_acc, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            x = to_input(augment(xtr[idx], gen))
            y = torch.from_numpy(ytr[idx])
            lr = args.lr * (step + 1) / warm if step < warm else \
                0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = crit(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                d = min(0.999, (1 + step) / (10 + step))
                for pe, pm in zip(ema.state_dict().values(), model.state_dict().values()):
                    if pe.dtype.is_floating_point:
                        pe.mul_(d).add_(pm.detach(), alpha=1 - d)
                    else:
                        pe.copy_(pm)
            step += 1
            run_loss += float(loss) * len(idx)
            run_acc += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            if step % 50 == 0 or i == steps_per_epoch - 1:
                el = time.time() - t_start
                print(f"epoch {epoch + 1}/{args.epochs} step {i + 1}/{steps_per_epoch} loss {run_loss / seen:.4f} "
                      f"train acc {run_acc / seen:.4f} lr {lr:.2e} elapsed {fmt_time(el)} "
                      f"left {fmt_time(el / step * (total - step))}", flush=True)
        acc = evaluate(ema, xte, yte)
        print(f"epoch {epoch + 1}: test accuracy (EMA weights) {acc:.4f}", flush=True)

    acc = evaluate(ema, xte, yte)
    train_time = time.time() - t_start
    print(f"final test accuracy {acc:.4f} after {fmt_time(train_time)}", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    ckpt = os.path.splitext(args.out)[0] + ".pth.tar"
    torch.save({"epoch": args.epochs, "arch": mft.arch_to_json(ARCH),
                "state_dict_ema": {k: v for k, v in ema.state_dict().items()}}, ckpt)
    labels = ckpt + ".labels.txt"
    with open(labels, "w") as f:
        f.write("\n".join(LABELS) + "\n")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), "--arch", mft.arch_to_json(ARCH),
           ckpt, args.out, "--labels", labels, "--input-size", str(SIZE), str(SIZE), "--resize", str(SIZE),
           "--interpolation", "bilinear", "--mean", *[str(MEAN)] * 3, "--std", *[str(STD)] * 3, "--channels", "1"]
    subprocess.run(cmd, check=True)
    os.unlink(labels)
    summary = {"arch": ARCH, "preprocess": PREPROCESS, "labels": LABELS, "epochs": args.epochs,
               "batch": args.batch, "lr": args.lr, "seed": args.seed, "train_images": len(xtr),
               "test_accuracy_pytorch": acc, "train_seconds": round(train_time), "parameters": nparams,
               "torch": torch.__version__, "threads": args.threads}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out} and {ckpt}", flush=True)


if __name__ == "__main__":
    main()
