"""tools/eval_imagenet.py on a tiny ImageNet-style folder built here: ten
class folders of Fashion-MNIST test images (the bundled model's classes), one
undecodable file.  Checks that classes are the sorted folder names (a folder
order that contradicts the labels scores near zero), that top-1 and top-5 are
counted as the engine answers them, the undecodable file is reported and not
scored, --limit, both precisions and their agreement, and the refusals (more
class folders than the model has classes, a missing folder)."""
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
TOOL = os.path.join(ROOT, "tools", "eval_imagenet.py")
DATA = "/usr/share/datasets/fashion-mnist"
PER_CLASS = 4


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return data[4 + 4 * nd:], dims


def tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), timeout=600)


class EvalImagenet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.isdir(DATA):
            raise AssertionError(f"{DATA} missing: scripts/install-deps.sh installs dataset-fashion-mnist")
        from PIL import Image
        pixels, (n, h, w) = read_idx("t10k-images-idx3-ubyte.gz")
        labels, _ = read_idx("t10k-labels-idx1-ubyte.gz")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.images = {c: [] for c in range(10)}
        for i in range(n):
            c = labels[i]
            if len(cls.images[c]) < PER_CLASS:
                cls.images[c].append(Image.frombytes("L", (w, h), pixels[i * h * w:(i + 1) * h * w]))
            if all(len(v) == PER_CLASS for v in cls.images.values()):
                break

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def folder(self, name, folder_of_class, extra_folders=0):
        """DIR/<folder_of_class(c)>/NN.png for every class c; one corrupt file in class 3's folder."""
        root = os.path.join(self.tmp.name, name)
        for c, ims in self.images.items():
            d = os.path.join(root, folder_of_class(c))
            os.makedirs(d)
            for j, im in enumerate(ims):
                im.save(os.path.join(d, f"{j:02d}.png"))
        with open(os.path.join(root, folder_of_class(3), "99_broken.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nnot really")
        for k in range(extra_folders):
            os.makedirs(os.path.join(root, f"zz_extra{k}"))
        return root

    def run_tool(self, root, *args):
        out = os.path.join(root + ".json")
        r = tool(root, "--model", MODEL, "--json", out, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out) as f:
            return json.load(f), r.stdout

    def test_counts_and_precisions(self):
        root = self.folder("right", lambda c: f"class_{c:02d}")
        s, out = self.run_tool(root, "--precision", "fp32,bf16")
        self.assertEqual(s["classes"], 10)
        self.assertEqual(s["images"], 10 * PER_CLASS + 1)
        self.assertIn("99_broken.png: corrupt_image", out)
        # the engine's own answers, image by image
        expect1 = expect5 = 0
        for c in range(10):
            d = os.path.join(root, f"class_{c:02d}")
            files = [os.path.join(d, f) for f in sorted(os.listdir(d)) if not f.startswith("99")]
            r = subprocess.run([CLI, "predict", "--model", MODEL, "--top-k", "5", *files], capture_output=True, text=True)
            for line in r.stdout.splitlines():
                idx = [p["index"] for p in json.loads(line)["predictions"]]
                expect1 += idx[0] == c
                expect5 += c in idx
        fp32 = s["results"]["fp32"]
        self.assertEqual(fp32["scored"], 10 * PER_CLASS)
        self.assertEqual(fp32["undecodable"], 1)
        self.assertAlmostEqual(fp32["top1"], expect1 / (10 * PER_CLASS))
        self.assertAlmostEqual(fp32["top5"], expect5 / (10 * PER_CLASS))
        self.assertGreaterEqual(fp32["top1"], 0.75)
        self.assertGreaterEqual(fp32["top5"], fp32["top1"])
        self.assertIn("bf16", s["results"])
        self.assertRegex(s["results"]["bf16"]["kernels"], r"-bf16 ")
        self.assertGreaterEqual(s["same_top1"], 0.9)
        self.assertIn("fp32 vs bf16: same top-1", out)
        print(f"\nREPORT eval_imagenet on {10 * PER_CLASS} Fashion-MNIST images: fp32 top-1 {fp32['top1']:.3f}, "
              f"bf16 top-1 {s['results']['bf16']['top1']:.3f}, same top-1 {s['same_top1']:.3f}")
        s, _ = self.run_tool(root, "--limit", "2")
        self.assertEqual(s["images"], 20)
        self.assertEqual(list(s["results"]), ["fp32"])

    def test_classes_are_sorted_folders(self):
        # class c in the folder that sorts 9 - c-th: the labels contradict the folders
        root = self.folder("reversed", lambda c: f"class_{9 - c:02d}")
        s, _ = self.run_tool(root, "--precision", "bf16")
        self.assertLessEqual(s["results"]["bf16"]["top1"], 0.3)

    def test_refusals(self):
        root = self.folder("too_many", lambda c: f"class_{c:02d}", extra_folders=1)
        r = tool(root, "--model", MODEL)
        self.assertEqual(r.returncode, 1)
        self.assertIn("11 class folders but the model has 10 classes", r.stderr)
        r = tool(os.path.join(self.tmp.name, "nowhere"), "--model", MODEL)
        self.assertEqual(r.returncode, 2)
        r = tool(root, "--model", MODEL, "--precision", "fp16")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--precision", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
