"""tools/convert_checkpoint.py: every timm checkpoint layout converts exactly; bad input fails cleanly.

(a) For the 26m (grouped) and 52m presets with deterministic weights and non-trivial
    BatchNorm statistics, checkpoints saved as a plain state_dict, under state_dict /
    state_dict_ema / model, with a "module." prefix, as float64, as .pth and .pth.tar
    all convert to a model file whose tensors equal the originals, with the expected
    metadata.
(b) The engine CLI ($MF_BUILD/mobileformer run ...) on a converted model matches the
    twin's logits within 2e-4 * max(1, max|ref|) (SKIP when the CLI is not built).
(c) Random bytes, a truncated file, a wrong shape, a missing or extra tensor, the wrong
    --arch, a wrong label count, ... exit non-zero with one line naming the problem and
    leave no output file.
Prints SKIP and passes when /usr/bin/python3 has no torch.
"""
import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(REPO, "tools")
sys.path.insert(0, TOOLS)

try:
    import torch
except ImportError:
    print("SKIP test_converter: this python has no torch")
    sys.exit(0)

import numpy as np  # noqa: E402

import convert_checkpoint  # noqa: E402
import mfformat  # noqa: E402
import mobileformer_torch as mft  # noqa: E402

BUILD = os.environ.get("MF_BUILD", "build")
CLI = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(REPO, BUILD), "mobileformer")
CONVERTER = os.path.join(TOOLS, "convert_checkpoint.py")
INPUT_SHAPE = (2, 3, 67, 93)

torch.set_num_threads(2)


def make_model(arch, seed):
    """Twin with synthetic weights; BN running stats are non-trivial by construction."""
    model = mft.build(arch).eval()
    mft.load_numpy_state_dict(model, mft.synthetic_state_dict(arch, 1000, seed))
    return model


def run_cli(*args):
    return subprocess.run([sys.executable, CONVERTER] + list(args), capture_output=True, text=True,
                          timeout=120)


class ConverterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mf_conv_")
        cls.models, cls.sds, cls.logits = {}, {}, {}
        x = np.random.default_rng(4).standard_normal(INPUT_SHAPE).astype(np.float32)
        cls.input_path = os.path.join(cls.tmp, "input.f32")
        x.astype("<f4").tofile(cls.input_path)
        for arch, seed in (("26m", 1000), ("52m", 2000)):
            m = make_model(arch, seed)
            cls.models[arch] = m
            cls.sds[arch] = m.state_dict()  # includes num_batches_tracked, as real checkpoints do
            with torch.no_grad():
                cls.logits[arch] = m(torch.from_numpy(x)).numpy()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def convert(self, *argv):
        """Run the converter in-process (fast); returns (status, stderr text)."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = convert_checkpoint.main(list(argv))
        return rc, err.getvalue()

    def assert_same_tensors(self, model_path, sd):
        tensors, meta = mfformat.read_model(model_path)
        want = [k for k in sd if not k.endswith("num_batches_tracked")]
        self.assertEqual(list(tensors), want)  # same names, same (reference) order
        for k in want:
            self.assertEqual(tensors[k].dtype, np.float32)
            self.assertTrue(np.array_equal(tensors[k], sd[k].float().numpy()), k)
        return meta

    # ---- (a) layouts ------------------------------------------------------------

    def layouts(self, sd):
        prefixed = {"module." + k: v for k, v in sd.items()}
        ns = argparse.Namespace(model="mobile_former_26m", lr=0.1)
        return {
            "plain.pth": sd,
            "state_dict.pth.tar": {"epoch": 3, "arch": "mobile_former", "state_dict": sd, "args": ns,
                                   "optimizer": {"state": {}, "param_groups": []}},
            "ema.pth": {"epoch": 3, "state_dict_ema": sd},
            "model.pth.tar": {"model": sd, "epoch": 1},
            "module.pth.tar": prefixed,
            "module_sd_f64.pth": {"state_dict": {k: (v.double() if v.is_floating_point() else v)
                                                 for k, v in prefixed.items()}},
        }

    def test_layouts(self):
        labels = mfformat.default_preprocess()
        self.assertEqual(labels["resize"], 256)
        with open(os.path.join(REPO, "models", "imagenet_labels.txt")) as f:
            imagenet = f.read().splitlines()
        self.assertEqual(len(imagenet), 1000)
        for arch in ("26m", "52m"):
            sd = self.sds[arch]
            for fname, obj in self.layouts(sd).items():
                if arch == "52m" and fname not in ("plain.pth", "module_sd_f64.pth"):
                    continue
                with self.subTest(arch=arch, layout=fname):
                    ckpt, out = self.path(arch + "_" + fname), self.path(arch + "_" + fname + ".safetensors")
                    torch.save(obj, ckpt)
                    rc, err = self.convert("--arch", arch, ckpt, out)
                    self.assertEqual(rc, 0, err)
                    meta = self.assert_same_tensors(out, sd)
                    self.assertEqual(meta["arch"], "mobile_former_" + arch)
                    self.assertEqual(meta["num_classes"], 1000)
                    self.assertEqual(meta["labels"], imagenet)
                    self.assertEqual(meta["preprocess"], mfformat.default_preprocess())
                    self.assertEqual(meta["format"], "mobileformer/1")

    def test_ema_preference(self):
        sd = self.sds["26m"]
        other = {k: (v + 1 if v.is_floating_point() else v) for k, v in sd.items()}
        ckpt = self.path("both.pth.tar")
        torch.save({"state_dict": sd, "state_dict_ema": other}, ckpt)
        rc, err = self.convert("--arch", "26m", ckpt, self.path("both.safetensors"))
        self.assertEqual(rc, 0, err)
        self.assert_same_tensors(self.path("both.safetensors"), sd)
        rc, err = self.convert("--arch", "26m", "--ema", ckpt, self.path("both_ema.safetensors"))
        self.assertEqual(rc, 0, err)
        self.assert_same_tensors(self.path("both_ema.safetensors"), other)

    def test_custom_arch_labels_and_preprocess(self):
        arch = ('{"name": "gray10", "stem": 16, "tokens": 4, "token_dim": 64, "classifier_width": 128, '
                '"blocks": [["A", 2, 16, 1, 0], ["B3", 6, 24, 2, 4], ["B", 3, 24, 1, 3]]}')
        model = mft.build(arch, 10)
        ckpt, out = self.path("gray10.pth"), self.path("gray10.safetensors")
        torch.save({"state_dict": model.state_dict()}, ckpt)
        label_file = self.path("labels10.txt")
        names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"]
        with open(label_file, "w") as f:
            f.write("\n".join(names) + "\n")
        rc, err = self.convert("--arch", arch, ckpt, out, "--labels", label_file, "--input-size", "28", "28",
                               "--resize", "28", "--interpolation", "nearest", "--mean", "0.286", "0.286",
                               "0.286", "--std", "0.353", "0.353", "0.353", "--channels", "1")
        self.assertEqual(rc, 0, err)
        meta = self.assert_same_tensors(out, model.state_dict())
        self.assertEqual(mft.parse_arch(meta["arch"]), mft.parse_arch(arch))
        self.assertEqual(meta["num_classes"], 10)
        self.assertEqual(meta["labels"], names)
        self.assertEqual(meta["preprocess"], {"input_size": [28, 28], "resize": 28, "interpolation": "nearest",
                                              "mean": [0.286] * 3, "std": [0.353] * 3, "channels": 1})
        # Without --labels a non-ImageNet class count gets class_<i>.
        rc, err = self.convert("--arch", arch, ckpt, self.path("gray10b.safetensors"))
        self.assertEqual(rc, 0, err)
        self.assertEqual(mfformat.read_model(self.path("gray10b.safetensors"))[1]["labels"][9], "class_9")

    # ---- (b) engine ---------------------------------------------------------------

    def test_engine_matches_twin(self):
        if not os.path.exists(CLI):
            msg = "engine comparison: %s is not built" % CLI
            print("\nSKIP " + msg, flush=True)
            self.skipTest(msg)
        for arch in ("26m", "52m"):
            with self.subTest(arch=arch):
                ckpt, model = self.path("eng_%s.pth" % arch), self.path("eng_%s.safetensors" % arch)
                torch.save({"state_dict": self.sds[arch]}, ckpt)
                rc, err = self.convert("--arch", arch, ckpt, model)
                self.assertEqual(rc, 0, err)
                out = self.path("eng_%s_logits.f32" % arch)
                r = subprocess.run([CLI, "run", "--model", model, "--input", self.input_path,
                                    "--shape", ",".join(map(str, INPUT_SHAPE)), "--output", out],
                                   capture_output=True, text=True, timeout=300)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                ref = self.logits[arch]
                got = np.fromfile(out, dtype="<f4")
                self.assertEqual(got.size, ref.size)
                got = got.reshape(ref.shape)
                tol = 2e-4 * max(1.0, float(np.abs(ref).max()))
                err = float(np.abs(got - ref).max())
                self.assertLessEqual(err, tol, "%s: engine vs twin max error %.3g > %.3g" % (arch, err, tol))
                print("%s: engine vs twin max error %.3g (tolerance %.3g)" % (arch, err, tol))

    # ---- (c) bad input ------------------------------------------------------------------

    def assert_fails(self, args, out, *needles):
        r = run_cli(*args)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        for n in needles:
            self.assertIn(n, lines[0])
        self.assertFalse(os.path.exists(out), "output file left behind")
        if os.path.isdir(os.path.dirname(out)):
            self.assertEqual(os.listdir(os.path.dirname(out)), [], "temporary file left behind")

    def test_bad_input(self):
        sd = self.sds["26m"]
        good = self.path("good26.pth")
        torch.save({"state_dict": sd}, good)
        os.makedirs(os.path.join(self.tmp, "bad_out"), exist_ok=True)
        out = os.path.join(self.tmp, "bad_out", "out.safetensors")

        rnd = self.path("random.pth")
        with open(rnd, "wb") as f:
            f.write(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        trunc = self.path("truncated.pth.tar")
        with open(good, "rb") as f:
            data = f.read()
        with open(trunc, "wb") as f:
            f.write(data[: len(data) // 2])

        def saved(name, obj):
            p = self.path(name)
            torch.save(obj, p)
            return p

        wrong = dict(sd)
        wrong["features.1.conv1.0.weight"] = torch.zeros(36, 4, 1, 1)
        missing = {k: v for k, v in sd.items() if k != "features.3.global_block.q.bias"}
        extra = dict(sd)
        extra["features.3.extra.weight"] = torch.zeros(3)
        labels5 = self.path("labels5.txt")
        with open(labels5, "w") as f:
            f.write("a\nb\nc\nd\ne\n")

        cases = [
            ("random bytes", ["--arch", "26m", rnd, out], ["not a PyTorch checkpoint", rnd]),
            ("truncated", ["--arch", "26m", trunc, out], ["cannot read checkpoint", trunc]),
            ("no such file", ["--arch", "26m", self.path("nope.pth"), out], ["no such file"]),
            ("wrong shape", ["--arch", "26m", saved("wrong.pth", {"state_dict": wrong}), out],
             ["features.1.conv1.0.weight", "[36, 4, 1, 1]", "[36, 3, 1, 1]"]),
            ("missing", ["--arch", "26m", saved("missing.pth", {"model": missing}), out],
             ["missing tensor features.3.global_block.q.bias"]),
            ("extra", ["--arch", "26m", saved("extra.pth", extra), out],
             ["unexpected tensor features.3.extra.weight"]),
            ("wrong arch", ["--arch", "52m", good, out], ["features.0.conv.4.weight", "shape"]),
            ("wrong arch 151m", ["--arch", "151m", good, out], ["tensor", "151m"]),
            ("bad arch", ["--arch", "27m", good, out], ["unknown architecture"]),
            ("label count", ["--arch", "26m", good, out, "--labels", labels5], ["label count", "5", "1000"]),
            ("num classes", ["--arch", "26m", good, out, "--num-classes", "10"],
             ["classifier.classifier.1.weight", "[1000, 1024]", "[10, 1024]"]),
            ("not a dict", ["--arch", "26m", saved("list.pth", [1, 2, 3]), out], ["not a state_dict"]),
            ("no state_dict", ["--arch", "26m", saved("meta.pth", {"epoch": 1, "arch": "x"}), out],
             ["no state_dict"]),
            ("integer tensor", ["--arch", "26m", saved("int.pth", dict(sd, **{
                "stem.1.running_mean": torch.zeros(8, dtype=torch.int64)})), out], ["stem.1.running_mean", "dtype"]),
            ("bad preprocess", ["--arch", "26m", good, out, "--std", "0", "1", "1"], ["std"]),
            ("no output dir", ["--arch", "26m", good, os.path.join(self.tmp, "nodir", "x.safetensors")],
             ["cannot write"]),
        ]
        for what, args, needles in cases:
            with self.subTest(case=what):
                self.assert_fails(args, args[3] if what == "no output dir" else out, *needles)


if __name__ == "__main__":
    unittest.main(verbosity=2)
