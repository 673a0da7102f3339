"""The PyTorch twin reproduces the reference implementation's golden outputs.

Runs tools/golden_check.py's comparison on every case in <repo>/../shared/golden
(or $MF_GOLDEN_DIR): all intermediates and logits within 2e-4 * max(1, max|ref|),
same top-5 order, and the synthetic-weight rule reproduces each manifest.  Also
round-trips tools/make_reference.py through the same checker.  Prints SKIP and
passes when torch or the golden directory is missing.
"""
import os
import shutil
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

try:
    import torch  # noqa: F401
except ImportError:
    print("SKIP test_twin_golden: this python has no torch")
    sys.exit(0)

import golden_check  # noqa: E402
import make_reference  # noqa: E402

GOLDEN = golden_check.golden_dir()


class GoldenTest(unittest.TestCase):
    def test_golden_cases(self):
        if not os.path.isdir(GOLDEN):
            msg = "golden cases: no golden directory at %s" % GOLDEN
            print("\nSKIP " + msg, flush=True)
            self.skipTest(msg)
        cases = golden_check.list_cases(GOLDEN)
        self.assertTrue(cases, "no case folders in %s" % GOLDEN)
        for c in cases:
            with self.subTest(case=c):
                log = []
                ok, errors = golden_check.run_case(os.path.join(GOLDEN, c), log=log.append)
                self.assertTrue(ok, "\n".join(log))
                print("%s: %d outputs, logits max error %.3g" % (c, len(errors), errors["logits"]))

    def test_compare_catches_divergence(self):
        import numpy as np
        ref = np.linspace(-3, 3, 40, dtype=np.float32).reshape(4, 10)
        self.assertIsNone(golden_check.compare("x", ref + 1e-4, ref))
        self.assertIn("x: max error", golden_check.compare("x", ref + 1e-2, ref))
        self.assertIn("shape", golden_check.compare("x", ref[:2], ref))
        swapped = ref.copy()
        swapped[:, [8, 9]] = swapped[:, [9, 8]]
        self.assertIn("top-5", golden_check.check_top5(swapped, ref))

    def test_make_reference_round_trip(self):
        root = tempfile.mkdtemp(prefix="mf_ref_")
        try:
            make_reference.make_reference("26m", os.path.join(root, "r26"), seed=5, batch=2,
                                          size=(45, 61), num_classes=7)
            log = []
            ok, errors = golden_check.run_case(os.path.join(root, "r26"), log=log.append)
            self.assertTrue(ok, "\n".join(log))
            self.assertEqual(len(errors), 2 + 2 * 9 + 1)
        finally:
            shutil.rmtree(root)


if __name__ == "__main__":
    unittest.main(verbosity=2)
