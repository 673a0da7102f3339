"""The PyTorch twin builds every preset with the parameter layout the spec implies.

For all seven presets: state_dict names, order and shapes equal a layout derived
here independently from docs (../shared/docs/mobile-former.md §1-§5); forward runs
at 224x224 and at 97x131 (batch 2) and is per-image (batching does not mix images).
Also: architecture validation, JSON round trips, the synthetic-weight rule, and one
training step.  Prints SKIP and passes when torch is missing.
"""
import json
import math
import os
import sys
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

try:
    import torch
except ImportError:
    print("SKIP test_twin_variants: this python has no torch")
    sys.exit(0)

import numpy as np  # noqa: E402

import mobileformer_torch as mft  # noqa: E402
import mfweights  # noqa: E402

torch.set_num_threads(2)


def expected_layout(a, num_classes):
    """(name, shape) of every stored tensor, in reference order, from the spec."""
    D, G, T = a["token_dim"], a["groups"], a["tokens"]
    out = [("tokens.weight", [T, D]), ("stem.0.weight", [a["stem"], 3, 3, 3])]

    def bn(p, c):
        out.extend((p + s, [c]) for s in (".weight", ".bias", ".running_mean", ".running_var"))

    def lin(p, o, i):
        out.extend([(p + ".weight", [o, i]), (p + ".bias", [o])])

    def m2f(p, c):
        lin(p + ".alpha.0", c, D)
        lin(p + ".q", c, D)
        lin(p + ".proj", D, c)
        out.extend([(p + ".layer_norm.weight", [D]), (p + ".layer_norm.bias", [D])])

    def hyper(p, c):
        lin(p + ".hyper.0", D // 4, D)
        lin(p + ".hyper.2", 2 * c, D // 4)

    bn("stem.1", a["stem"])
    cin = a["stem"]
    for i, (t, e1, c, s, e2) in enumerate(a["blocks"]):
        p = "features.%d." % i
        if t == "A":
            out.append((p + "conv.0.weight", [cin * e1, 1, 3, 3]))
            bn(p + "conv.1", cin * e1)
            out.append((p + "conv.4.weight", [c, cin * e1 // G, 1, 1]))
            bn(p + "conv.5", c)
        else:
            if t == "B3":
                h1, h2 = round(cin * e1), round(c * e2)
                out.append((p + "conv1.0.weight", [h1, 1, 3, 3]))
                bn(p + "conv1.1", h1)
                hyper(p + "hyper1", h1)
                out.append((p + "conv2.0.weight", [c, h1 // G, 1, 1]))
                bn(p + "conv2.1", c)
                out.append((p + "conv3.0.weight", [h2, 1, 3, 3]))
                bn(p + "conv3.1", h2)
                hyper(p + "hyper3", h2)
                out.append((p + "conv4.0.weight", [c, h2 // G, 1, 1]))
                bn(p + "conv4.1", c)
            else:
                h = round(cin * e1)
                out.append((p + "conv1.0.weight", [h, cin // G, 1, 1]))
                bn(p + "conv1.1", h)
                hyper(p + "hyper1", h)
                out.append((p + "conv2.0.weight", [h, 1, 3, 3]))
                bn(p + "conv2.1", h)
                hyper(p + "hyper2", h)
                out.append((p + "conv3.0.weight", [c, h // G, 1, 1]))
                bn(p + "conv3.1", c)
            m2f(p + "local_global", cin)
            lin(p + "global_block.ffn.0", 2 * D, D)
            lin(p + "global_block.ffn.2", D, 2 * D)
            out.extend([(p + "global_block.ffn_norm.weight", [D]), (p + "global_block.ffn_norm.bias", [D])])
            lin(p + "global_block.q", D, D)
            lin(p + "global_block.channel_mlp", D, D)
            out.extend([(p + "global_block.layer_norm.weight", [D]),
                        (p + "global_block.layer_norm.bias", [D])])
            lin(p + "global_local.k", c, D)
            lin(p + "global_local.proj", c, D)
        cin = c
    m2f("local_global", cin)
    hid = cin * a["last_exp"]
    out.append(("classifier.conv.1.weight", [hid, cin // G, 1, 1]))
    bn("classifier.conv.2", hid)
    lin("classifier.fc.0", a["classifier_width"], hid + D)
    bn("classifier.fc.1", a["classifier_width"])
    lin("classifier.classifier.1", num_classes, a["classifier_width"])
    return out


# Parameter counts (no BN running stats) published for the presets, in millions (spec §1).
PARAMS_M = {"508m": 14.0, "294m": 11.4, "214m": 9.4, "151m": 7.6, "96m": 4.6, "52m": 3.5, "26m": 3.2}


class VariantsTest(unittest.TestCase):
    def test_layout_and_forward(self):
        self.assertEqual(len(mft.PRESETS), 7)
        for name, preset in mft.PRESETS.items():
            with self.subTest(preset=name):
                model = mft.build(name).eval()
                sd = model.state_dict()
                got = [(k, list(v.shape)) for k, v in sd.items() if not k.endswith("num_batches_tracked")]
                self.assertEqual(got, expected_layout(preset, 1000))
                nparams = sum(v.numel() for k, v in sd.items()
                              if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
                short = name[len("mobile_former_"):]
                self.assertAlmostEqual(nparams / 1e6, PARAMS_M[short], delta=0.1)

                mft.load_numpy_state_dict(model, mft.synthetic_state_dict(name, 1000, 11))
                g = torch.Generator().manual_seed(3)
                x2 = torch.randn(2, 3, 97, 131, generator=g)
                x1 = torch.randn(1, 3, 224, 224, generator=g)
                seen = []
                with torch.no_grad():
                    y2 = model(x2, trace=lambda n, t: seen.append((n, tuple(t.shape))))
                    y1 = model(x1)
                    y2a = model(x2[1:])
                self.assertEqual(tuple(y2.shape), (2, 1000))
                self.assertEqual(tuple(y1.shape), (1, 1000))
                self.assertTrue(torch.isfinite(y2).all() and torch.isfinite(y1).all())
                tol = 2e-4 * max(1.0, float(y2.abs().max()))
                self.assertLess(float((y2[1:] - y2a).abs().max()), tol)
                nb = len(preset["blocks"])
                self.assertEqual(len(seen), 2 + 2 * nb)
                self.assertEqual(seen[0][0], "stem")
                self.assertEqual(seen[0][1][2:], (49, 66))
                self.assertEqual(seen[-1], ("final_tokens", (2, preset["tokens"], preset["token_dim"])))
                self.assertEqual(seen[2 * nb][1], (2, preset["tokens"], preset["token_dim"]))

    def test_preset_names_and_json(self):
        a = mft.parse_arch("26m")
        self.assertEqual(a, mft.parse_arch("mobile_former_26m"))
        self.assertEqual(mft.parse_arch(mft.arch_to_json("508m")), mft.PRESETS["mobile_former_508m"])
        self.assertEqual(mft.arch_metadata("52m"), "mobile_former_52m")
        doc = ('{"name": "fashion_mnist_mf", "stem": 16, "tokens": 4, "token_dim": 64, "groups": 1, '
               '"classifier_width": 256, "last_exp": 6, "blocks": [["A", 2, 16, 1, 0], '
               '["B3", 6, 24, 2, 4], ["B", 3, 24, 1, 3]]}')
        d = mft.parse_arch(doc)
        self.assertEqual(json.loads(mft.arch_metadata(doc)), json.loads(doc))
        mini = dict(d)
        del mini["groups"], mini["last_exp"]
        self.assertEqual(mft.parse_arch(mini), d)  # defaults: groups 1, last_exp 6
        renamed = dict(mft.PRESETS["mobile_former_26m"], name="mine")
        self.assertTrue(mft.arch_metadata(renamed).startswith("{"))
        model = mft.build(doc, 10).eval()
        with torch.no_grad():
            self.assertEqual(tuple(model(torch.zeros(1, 3, 28, 28)).shape), (1, 10))

    def test_invalid_architectures(self):
        base = mft.parse_arch("26m")

        def variant(**kw):
            a = json.loads(json.dumps(base))
            blocks = kw.pop("blocks", None)
            if blocks:
                for i, row in blocks.items():
                    a["blocks"][i] = row
            a.update(kw)
            return a

        bad = {
            "odd channels": variant(groups=1, blocks={1: ["B", 3, 13, 1, 3]}),
            "A not first": variant(blocks={1: ["A", 3, 12, 1, 0]}),
            "token_dim": variant(token_dim=130),
            "groups divide": variant(blocks={1: ["B", 3, 14, 1, 3]}),
            "stride": variant(blocks={1: ["B", 3, 12, 3, 3]}),
            "e1 of B": variant(blocks={1: ["B", 1, 12, 1, 3]}),
            "e2 of B3": variant(blocks={2: ["B3", 6, 24, 2, 0]}),
            "stem groups": variant(stem=6),
            "type": variant(blocks={1: ["C", 3, 12, 1, 3]}),
            "float": variant(blocks={1: ["B", 2.5, 12, 1, 3]}),
            "no blocks": dict(base, blocks=[]),
        }
        for what, a in bad.items():
            with self.subTest(what=what), self.assertRaises(mft.ArchError):
                mft.parse_arch(a)
        for text in ("999m", "{not json", '{"stem": 8}', "[1, 2]"):
            with self.subTest(text=text), self.assertRaises(mft.ArchError):
                mft.parse_arch(text)

    def test_synthetic_rule(self):
        entries = mft.state_dict_entries(mft.build("26m"))
        rows = mft.synthetic_manifest_for("26m", 1000, 100)
        self.assertEqual(len(entries) - len(rows),
                         sum(1 for n, _ in entries if n.endswith("num_batches_tracked")))
        by = {r["name"]: r for r in rows}
        self.assertEqual(by["tokens.weight"]["seed"], 100)
        self.assertEqual((by["stem.0.weight"]["offset"], by["stem.0.weight"]["scale"]), (0.0, 1 / 3))
        self.assertEqual(by["features.0.conv.0.weight"]["seed"], 107)  # stem BN's 5th slot skipped
        self.assertEqual((by["stem.1.running_var"]["offset"], by["stem.1.running_var"]["scale"]), (1.0, 0.4))
        sd = mft.synthetic_state_dict("26m", 1000, 100)
        self.assertTrue(np.array_equal(sd["classifier.fc.0.bias"],
                                       mfweights.fill_uniform(by["classifier.fc.0.bias"]["seed"], [1024], 0, 0.02)))
        w = sd["classifier.fc.0.weight"]
        self.assertAlmostEqual(float(w.std()), 1 / math.sqrt(704), delta=0.002)
        # splitmix64 first output for seed 0 is 0xE220A8397B1DCDAF (the published test value).
        u = (0xE220A8397B1DCDAF >> 40) * 2.0 ** -24
        self.assertEqual(float(mfweights.fill_uniform(0, [1], 0.0, 1.0)[0]), float(np.float32(2 * u - 1)))

    def test_train_step(self):
        torch.manual_seed(0)
        model = mft.build("26m", 5).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
        before = model.stem[1].running_mean.clone()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        self.assertTrue(all(p.grad is not None for p in model.parameters()))
        opt.step()
        self.assertFalse(torch.equal(before, model.stem[1].running_mean))
        self.assertFalse(any(isinstance(m, torch.nn.Dropout) for m in model.modules()))


if __name__ == "__main__":
    unittest.main(verbosity=2)
