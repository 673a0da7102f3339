"""build/mobileformer as a user meets it: every command's happy path on the
bundled model or synthetic weights, and the errors the engine issue lists
(missing file, bad shape string, wrong input size for the file, bad values)
as one line on stderr and a non-zero exit, never a crash; --precision on every
command (info and bench print the precision and the kernel sets that run),
and MF_KERNELS values it refuses.  Needs no torch."""
import os
import struct
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MF_BUILD", "build")
CLI = os.path.join(ROOT, BUILD, "mobileformer")
MODEL = os.path.join(ROOT, "models", "fashion_mnist_mobileformer.safetensors")
IMAGES = os.path.join(ROOT, "tests", "data", "images")


def cli(*args, env_extra=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300)


class Cli(unittest.TestCase):
    def setUp(self):
        self.assertTrue(os.path.exists(CLI), f"{CLI} not built")

    def fails(self, *args, says=None, env_extra=None):
        r = cli(*args, env_extra=env_extra)
        self.assertNotEqual(r.returncode, 0, f"{args} succeeded: {r.stdout}")
        self.assertGreater(r.returncode, 0, f"{args} died of signal {-r.returncode}")
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, f"{args}: expected one line on stderr, got {r.stderr!r}")
        if says:
            self.assertIn(says, lines[0])
        return lines[0]

    def test_run_errors(self):
        with tempfile.TemporaryDirectory() as d:
            x = os.path.join(d, "x.f32")
            with open(x, "wb") as f:
                f.write(struct.pack("<%df" % (3 * 32 * 32), *([0.5] * (3 * 32 * 32))))
            y = os.path.join(d, "y.f32")
            self.fails("run", "--model", os.path.join(d, "missing.safetensors"), "--input", x,
                       "--shape", "1,3,32,32", "--output", y, says="missing.safetensors")
            for shape in ("1,3,32", "a,3,32,32", "1,3,32,32,1", "0,3,32,32", "1,3,-4,32", ""):
                self.fails("run", "--model", MODEL, "--input", x, "--shape", shape, "--output", y)
            self.fails("run", "--model", MODEL, "--input", x, "--shape", "1,1,32,32", "--output", y,
                       says="3 input channels")
            self.fails("run", "--model", MODEL, "--input", x, "--shape", "1,3,16,16", "--output", y,
                       says="at least 32")
            # the file holds 1x3x32x32 floats: any other size is refused, before reading past it
            self.fails("run", "--model", MODEL, "--input", x, "--shape", "2,3,32,32", "--output", y)
            self.fails("run", "--model", MODEL, "--input", x, "--shape", "1,3,32,33", "--output", y)
            self.fails("run", "--model", MODEL, "--input", os.path.join(d, "nope.f32"),
                       "--shape", "1,3,32,32", "--output", y)
            self.assertFalse(os.path.exists(y))
            r = cli("run", "--model", MODEL, "--input", x, "--shape", "1,3,32,32", "--output", y)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(os.path.getsize(y), 10 * 4)

    def test_predict(self):
        r = cli("predict", "--model", MODEL, "--top-k", "3", os.path.join(IMAGES, "png_rgb.png"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"predictions"', r.stdout)
        # an image that cannot be read or decoded: its JSON line carries the error, the exit is 1,
        # and the other images are still answered
        r = cli("predict", "--model", MODEL, os.path.join(IMAGES, "trunc.png"),
                os.path.join(IMAGES, "no-such-image.png"), os.path.join(IMAGES, "png_rgb.png"))
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 3, r.stdout)
        self.assertIn('"code":"corrupt_image"', lines[0])
        self.assertIn('"code":"unreadable_file"', lines[1])
        self.assertIn('"predictions"', lines[2])
        self.fails("predict", "--model", MODEL, "--top-k", "0", os.path.join(IMAGES, "png_rgb.png"))
        self.fails("predict", "--model", MODEL)
        r = cli("predict", "--model", MODEL, IMAGES)  # a directory
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("not a regular file", r.stdout)

    def test_bench(self):
        r = cli("bench", "--arch", "mobile_former_26m", "--size", "64", "--iters", "3", "--warmup", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^median [0-9.]+ ms")
        self.assertRegex(r.stdout, r"(?m)^images/s [0-9.]+$")
        # --workers: N runners side by side, aggregate images/s
        r = cli("bench", "--arch", "mobile_former_26m", "--size", "64", "--batch", "2", "--iters", "3",
                "--warmup", "0", "--workers", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^median [0-9.]+ ms .*\(6 iters\)")
        self.assertRegex(r.stdout, r"(?m)^images/s [0-9.]+ \(2 workers at once, 6 batches of 2 in [0-9.]+ ms\)")
        for bad in (("--workers", "0"), ("--workers", "x"), ("--batch", "0"), ("--size", "31"),
                    ("--iters", "-1"), ("--arch", "mobile_former_1m")):
            args = ["bench", "--arch", "mobile_former_26m", "--iters", "1"]
            if bad[0] == "--arch":
                args = ["bench", "--iters", "1"]
            self.fails(*args, *bad)
        self.fails("bench", "--model", MODEL, "--arch", "mobile_former_26m")

    def test_info(self):
        r = cli("info", "--model", MODEL)
        self.assertEqual(r.returncode, 0, r.stderr)
        for key in ("architecture:", "classes: 10", "parameters:", "madds:", "preprocess:", "memory:"):
            self.assertIn(key, r.stdout)
        self.fails("info")
        r = cli("frobnicate", "--model", MODEL)  # usage, then the complaint
        self.assertGreater(r.returncode, 0, r.stderr)
        self.assertIn("unknown command 'frobnicate'", r.stderr.splitlines()[-1])

    def test_precision(self):
        r = cli("info", "--arch", "mobile_former_26m", "--precision", "bf16")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("precision: bf16", r.stdout)
        self.assertRegex(r.stdout, r"(?m)^kernels: (amx|avx512|avx2|portable)-bf16 \(fp32 layers: (avx512|avx2|portable)\)$")
        r = cli("info", "--model", MODEL)
        self.assertIn("precision: fp32", r.stdout)
        self.assertRegex(r.stdout, r"(?m)^kernels: (avx512|avx2|portable) \(fp32 layers: (avx512|avx2|portable)\)$")
        r = cli("bench", "--arch", "mobile_former_26m", "--size", "64", "--iters", "2", "--warmup", "0",
                "--precision", "bf16")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"precision bf16 kernels \S+-bf16 \(fp32 layers \S+\)")
        r = cli("bench", "--arch", "mobile_former_26m", "--size", "64", "--iters", "2", "--warmup", "0",
                env_extra={"MF_KERNELS": "reference"})
        self.assertRegex(r.stdout, r"precision fp32 kernels reference \(fp32 layers reference\)")
        for bad in ("fp16", "BF16", ""):
            self.fails("info", "--arch", "mobile_former_26m", "--precision", bad, says="expected fp32 or bf16")
        self.fails("info", "--arch", "mobile_former_26m", env_extra={"MF_KERNELS": "turbo"}, says="MF_KERNELS='turbo'")
        with tempfile.TemporaryDirectory() as d:
            x = os.path.join(d, "x.f32")
            with open(x, "wb") as f:
                f.write(struct.pack("<%df" % (3 * 32 * 32), *[((i * 37) % 101) / 50.0 - 1 for i in range(3 * 32 * 32)]))
            outs = {}
            for p in ("fp32", "bf16"):
                y = os.path.join(d, p + ".f32")
                r = cli("run", "--model", MODEL, "--input", x, "--shape", "1,3,32,32", "--output", y, "--precision", p)
                self.assertEqual(r.returncode, 0, r.stderr)
                with open(y, "rb") as f:
                    outs[p] = struct.unpack("<10f", f.read())
            scale = max(abs(v) for v in outs["fp32"])
            self.assertLessEqual(max(abs(a - b) for a, b in zip(outs["fp32"], outs["bf16"])), 3e-2 * scale)
            self.assertNotEqual(outs["fp32"], outs["bf16"])
        r = cli("predict", "--model", MODEL, "--precision", "bf16", os.path.join(IMAGES, "png_rgb.png"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"predictions"', r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
