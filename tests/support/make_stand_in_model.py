"""Write a stand-in for models/fashion_mnist_mobileformer.safetensors.

Same architecture, input (32x32, one channel) and labels as the bundled model
that tools/train_default.py writes, but synthetic weights (seeded, from the
PyTorch twin via tools/make_reference.py): the answers are meaningless, the
work per image is the real one.  tests/sh/test_deploy.sh uses it while the
bundled model is absent; bench/loadtest.sh --model accepts its output.

    /usr/bin/python3 tests/support/make_stand_in_model.py OUT.safetensors
"""
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

from mfformat import read_model, write_model  # noqa: E402

# tools/train_default.py: ARCH, PREPROCESS (input size, channels), LABELS
ARCH = {"name": "tiny", "stem": 16, "tokens": 4, "token_dim": 64, "classifier_width": 256,
        "blocks": [["A", 2, 16, 1, 0], ["B3", 6, 24, 2, 4], ["B", 3, 24, 1, 3],
                   ["B3", 6, 48, 2, 4], ["B", 4, 48, 1, 4], ["B", 6, 64, 1, 4]]}
PREPROCESS = {"input_size": [32, 32], "resize": 32, "interpolation": "bilinear",
              "mean": [0.2860] * 3, "std": [0.3530] * 3, "channels": 1}
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
          "Bag", "Ankle boot"]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_stand_in_model.py OUT.safetensors")
    out = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="mf_stand_in_") as tmp:
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_reference.py"),
                        "--arch", json.dumps(ARCH), "--seed", "1", "--batch", "1",
                        "--size", "32", "32", "--num-classes", str(len(LABELS)),
                        "--no-intermediates", "--out", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        tensors, meta = read_model(os.path.join(tmp, "model.safetensors"))
    write_model(out, tensors, meta["arch"], len(LABELS), labels=LABELS, preprocess=PREPROCESS)
    print("wrote %s (stand-in: %s architecture, synthetic weights)" % (out, ARCH["name"]))


if __name__ == "__main__":
    main()
