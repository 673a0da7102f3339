"""The bundled model (models/fashion_mnist_mobileformer.safetensors): it loads,
its metadata is complete (architecture, 10 Fashion-MNIST labels, the
preprocessing it was trained with), and through the C engine -- the CLI's
`predict`, i.e. the same decoding and preprocessing as the service -- it
classifies at least 88% of the first 500 Fashion-MNIST test images, sent as
PNG files, in both precisions, bf16 giving fp32's top-1 on at least 99% of
them.  The full evaluation (10,000 images, PyTorch vs engine vs service, both
precisions) is `make eval-default`.
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MF_BUILD", "build")
CLI = os.path.join(ROOT, BUILD, "mobileformer")
MODEL = os.path.join(ROOT, "models", "fashion_mnist_mobileformer.safetensors")
DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N = 500

sys.path.insert(0, os.path.join(ROOT, "tools"))


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    count = 1
    for d in dims:
        count *= d
    return data[4 + 4 * nd:4 + 4 * nd + count], dims


class DefaultModel(unittest.TestCase):
    def test_metadata(self):
        self.assertTrue(os.path.exists(MODEL), "the bundled model is missing")
        from mfformat import read_model
        tensors, meta = read_model(MODEL)
        self.assertEqual(meta["num_classes"], 10)
        self.assertEqual(meta["labels"], LABELS)
        p = meta["preprocess"]
        self.assertEqual(p["channels"], 1)
        self.assertEqual(list(p["input_size"]), [32, 32])
        self.assertEqual(p["resize"], 32)
        self.assertEqual(p["interpolation"], "bilinear")
        self.assertEqual(len(p["mean"]), 3)
        self.assertEqual(len(p["std"]), 3)
        self.assertIn("blocks", meta["arch"] if isinstance(meta["arch"], dict) else json.loads(meta["arch"]))
        info = subprocess.run([CLI, "info", "--model", MODEL], capture_output=True, text=True)
        self.assertEqual(info.returncode, 0, info.stderr)
        self.assertIn("classes: 10 (T-shirt/top", info.stdout)

    def test_accuracy_through_the_engine(self):
        if not os.path.isdir(DATA):
            self.fail(f"{DATA} missing: scripts/install-deps.sh installs dataset-fashion-mnist")
        from PIL import Image
        pixels, (n, h, w) = read_idx("t10k-images-idx3-ubyte.gz")
        labels, _ = read_idx("t10k-labels-idx1-ubyte.gz")
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i in range(N):
                p = os.path.join(d, f"{i:03d}.png")
                Image.frombytes("L", (w, h), pixels[i * h * w:(i + 1) * h * w]).save(p)
                paths.append(p)
            top1 = {}
            for prec in ("fp32", "bf16"):
                r = subprocess.run([CLI, "predict", "--model", MODEL, "--top-k", "1", "--precision", prec, *paths],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)
                answers = [json.loads(line) for line in r.stdout.splitlines()]
                self.assertEqual(len(answers), N)
                top1[prec] = [a["predictions"][0]["index"] for a in answers]
                correct = sum(t == labels[i] for i, t in enumerate(top1[prec]))
                for a in answers[:3]:
                    self.assertIn(a["predictions"][0]["label"], LABELS)
                print(f"\nREPORT bundled model {prec}: {correct}/{N} = {correct / N:.3f} of the first {N} test images "
                      "through the engine")
                self.assertGreaterEqual(correct / N, 0.88)
        same = sum(a == b for a, b in zip(top1["fp32"], top1["bf16"]))
        print(f"REPORT bundled model: bf16 gives fp32's top-1 on {same}/{N}")
        self.assertGreaterEqual(same / N, 0.99)


if __name__ == "__main__":
    unittest.main(verbosity=2)
