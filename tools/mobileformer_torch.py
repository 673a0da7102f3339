"""PyTorch twin of the Mobile-Former network specification (docs: ../shared/docs/mobile-former.md).

Written from the specification, independently of the authors' code, for three uses:
checking the C engine (reference outputs for any architecture and input size),
converting published checkpoints (the state_dict names and shapes are exactly the
reference implementation's), and training (plain nn.Modules, no dropout, BatchNorm
works in train mode).

    build(arch, num_classes=1000) -> MobileFormer   (arch: preset name, dict or JSON string)
    model(x)                      -> logits          (x: B x 3 x H x W, any H, W)
    model(x, trace=fn)            -> logits, calling fn(name, tensor) for "stem",
                                     "blockNN.features", "blockNN.tokens" (B x T x D), "final_tokens"
    synthetic_state_dict(arch, num_classes, seed) -> deterministic weights (rule in tools/mfweights.py)

Architectures are descriptions as in docs/model-format.md:
    {"name", "stem", "tokens", "token_dim", "groups", "classifier_width", "last_exp",
     "blocks": [[type, e1, c, s, e2], ...]}   type "A" (first only), "B3" or "B".
parse_arch() validates them with the same rules and limits as the engine (engine/arch.c).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfweights import fill_uniform, synthetic_manifest, tensors_from_manifest  # noqa: E402

__all__ = ["PRESETS", "ArchError", "parse_arch", "arch_to_json", "arch_metadata", "build",
           "MobileFormer", "fill_uniform", "synthetic_manifest", "synthetic_state_dict",
           "state_dict_entries", "load_numpy_state_dict"]


# ---- architectures ----------------------------------------------------------

def _preset(name, stem, tokens, dim, groups, cls, blocks):
    return {"name": name, "stem": stem, "tokens": tokens, "token_dim": dim, "groups": groups,
            "classifier_width": cls, "last_exp": 6, "blocks": [list(b) for b in blocks]}


_SMALL = [("A", 3, 12, 2, 0), ("B", 3, 12, 1, 3), ("B3", 6, 24, 2, 4), ("B", 3, 24, 1, 3),
          ("B3", 6, 48, 2, 4), ("B", 4, 48, 1, 4), ("B", 6, 64, 1, 4), ("B3", 6, 96, 2, 4),
          ("B", 6, 96, 1, 4)]

PRESETS = {p["name"]: p for p in [
    _preset("mobile_former_508m", 24, 6, 192, 1, 1920, [
        ("A", 2, 24, 1, 0), ("B3", 6, 40, 2, 4), ("B", 3, 40, 1, 3), ("B3", 6, 72, 2, 4),
        ("B", 3, 72, 1, 3), ("B3", 6, 128, 2, 4), ("B", 4, 128, 1, 4), ("B", 6, 176, 1, 4),
        ("B", 6, 176, 1, 4), ("B3", 6, 240, 2, 4), ("B", 6, 240, 1, 4), ("B", 6, 240, 1, 4)]),
    _preset("mobile_former_294m", 16, 6, 192, 1, 1920, [
        ("A", 2, 16, 1, 0), ("B3", 6, 24, 2, 4), ("B", 4, 24, 1, 4), ("B3", 6, 48, 2, 4),
        ("B", 4, 48, 1, 4), ("B3", 6, 96, 2, 4), ("B", 4, 96, 1, 4), ("B", 6, 128, 1, 4),
        ("B", 6, 128, 1, 4), ("B3", 6, 192, 2, 4), ("B", 6, 192, 1, 4), ("B", 6, 192, 1, 4)]),
    _preset("mobile_former_214m", 12, 6, 192, 1, 1600, [
        ("A", 2, 12, 1, 0), ("B3", 6, 20, 2, 4), ("B", 3, 20, 1, 4), ("B3", 6, 40, 2, 4),
        ("B", 4, 40, 1, 4), ("B3", 6, 80, 2, 4), ("B", 4, 80, 1, 4), ("B", 6, 112, 1, 4),
        ("B", 6, 112, 1, 4), ("B3", 6, 160, 2, 4), ("B", 6, 160, 1, 4), ("B", 6, 160, 1, 4)]),
    _preset("mobile_former_151m", 12, 6, 192, 1, 1280, [
        ("A", 2, 12, 1, 0), ("B3", 6, 16, 2, 4), ("B", 3, 16, 1, 3), ("B3", 6, 32, 2, 4),
        ("B", 3, 32, 1, 3), ("B3", 6, 64, 2, 4), ("B", 4, 64, 1, 4), ("B", 6, 88, 1, 4),
        ("B", 6, 88, 1, 4), ("B3", 6, 128, 2, 4), ("B", 6, 128, 1, 4), ("B", 6, 128, 1, 4)]),
    _preset("mobile_former_96m", 12, 4, 128, 1, 1280, [
        ("A", 2, 12, 1, 0), ("B3", 6, 16, 2, 4), ("B3", 6, 32, 2, 4), ("B", 3, 32, 1, 3),
        ("B3", 6, 64, 2, 4), ("B", 4, 64, 1, 4), ("B", 6, 88, 1, 4), ("B3", 6, 128, 2, 4),
        ("B", 6, 128, 1, 4)]),
    _preset("mobile_former_52m", 8, 3, 128, 1, 1024, _SMALL),
    _preset("mobile_former_26m", 8, 3, 128, 4, 1024, _SMALL),
]}

# Same limits as engine/arch.c: they keep untrusted descriptions from asking for absurd sizes.
_LIM_CH, _LIM_EXP, _LIM_TOKENS, _LIM_DIM, _LIM_CLS, _LIM_GROUPS, _MAX_BLOCKS = \
    4096, 16, 64, 2048, 8192, 64, 32
_KEYS = ("name", "stem", "tokens", "token_dim", "groups", "classifier_width", "last_exp", "blocks")


class ArchError(ValueError):
    """An unknown preset or an invalid architecture description."""


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ArchError("architecture: %s must be an integer, got %r" % (what, v))
    return v


def validate_arch(a):
    """Raise ArchError unless `a` (a normalized description) is buildable."""
    def bad(msg):
        raise ArchError("architecture: " + msg)

    def rng(v, lo, hi, what):
        if not lo <= v <= hi:
            bad("%s must be in %d..%d, got %d" % (what, lo, hi, v))

    rng(a["stem"], 1, _LIM_CH, "stem")
    rng(a["tokens"], 1, _LIM_TOKENS, "tokens")
    if a["token_dim"] % 4 or not 4 <= a["token_dim"] <= _LIM_DIM:
        bad("token_dim must be a multiple of 4 (4 Former heads) in 4..%d, got %d"
            % (_LIM_DIM, a["token_dim"]))
    rng(a["groups"], 1, _LIM_GROUPS, "groups")
    rng(a["classifier_width"], 1, _LIM_CLS, "classifier_width")
    rng(a["last_exp"], 1, _LIM_EXP, "last_exp")
    if not 1 <= len(a["blocks"]) <= _MAX_BLOCKS:
        bad("need 1..%d blocks, got %d" % (_MAX_BLOCKS, len(a["blocks"])))
    G = a["groups"]
    if a["stem"] % G:
        bad("stem (%d) must be divisible by groups (%d)" % (a["stem"], G))
    cin = a["stem"]
    for i, (t, e1, c, s, e2) in enumerate(a["blocks"]):
        where = "block %d: " % i
        if t == "A" and i != 0:
            bad(where + "type A is only allowed as the first block")
        rng(c, 2, _LIM_CH, where + "channels")
        if c % 2:
            bad(where + "channels (%d) must be even (2 attention heads)" % c)
        if s not in (1, 2):
            bad(where + "stride must be 1 or 2, got %d" % s)
        rng(e1, 1, _LIM_EXP, where + "e1")
        if c % G:
            bad(where + "channels (%d) must be divisible by groups (%d)" % (c, G))
        if (cin * e1) % G:
            bad(where + "hidden width %d must be divisible by groups (%d)" % (cin * e1, G))
        if t == "A":
            if e2 != 0:
                bad(where + "type A takes e2 = 0, got %d" % e2)
        else:
            if cin % 2:
                bad(where + "input channels (%d) must be even (2 attention heads)" % cin)
            if e1 < 2:
                bad(where + "types B and B3 need e1 > 1, got %d" % e1)
            if t == "B3":
                rng(e2, 1, _LIM_EXP, where + "e2")
                if (c * e2) % G:
                    bad(where + "hidden width %d must be divisible by groups (%d)" % (c * e2, G))
            elif not 0 <= e2 <= _LIM_EXP:
                bad(where + "e2 must be in 0..%d, got %d" % (_LIM_EXP, e2))
        cin = c


def parse_arch(x):
    """A validated, normalized description (a new dict) from a preset name
    ("mobile_former_26m" or "26m"), a dict, or a JSON string."""
    if isinstance(x, str):
        text = x.strip()
        if not text.startswith("{"):
            name = text if text.startswith("mobile_former_") else "mobile_former_" + text
            if name not in PRESETS:
                raise ArchError("unknown architecture %r (presets: 26m 52m 96m 151m 214m 294m "
                                "508m, or a JSON description)" % text[:64])
            return json.loads(json.dumps(PRESETS[name]))
        try:
            x = json.loads(text)
        except ValueError as e:
            raise ArchError("architecture: invalid JSON (%s)" % e) from None
    if not isinstance(x, dict):
        raise ArchError("architecture: expected a preset name or a JSON object")
    unknown = sorted(set(x) - set(_KEYS))
    if unknown:
        raise ArchError("architecture: unknown key %r" % unknown[0])
    a = {"name": x.get("name", "custom")}
    if not isinstance(a["name"], str) or not a["name"]:
        raise ArchError("architecture: name must be a non-empty string")
    for k in ("stem", "tokens", "token_dim", "classifier_width"):
        if k not in x:
            raise ArchError('architecture: missing "%s"' % k)
        a[k] = _int(x[k], k)
    a["groups"] = _int(x.get("groups", 1), "groups")
    a["last_exp"] = _int(x.get("last_exp", 6), "last_exp")
    rows = x.get("blocks")
    if not isinstance(rows, list):
        raise ArchError('architecture: "blocks" must be a list of [type, e1, c, s, e2] rows')
    a["blocks"] = []
    for i, r in enumerate(rows):
        if not isinstance(r, (list, tuple)) or len(r) != 5 or r[0] not in ("A", "B3", "B"):
            raise ArchError("architecture: block %d must be [type, e1, c, s, e2] with type "
                            "A, B3 or B, got %r" % (i, r))
        vals = [_int(v, "block %d %s" % (i, k)) for v, k in zip(r[1:], ("e1", "c", "s", "e2"))]
        if min(vals) < 0:
            raise ArchError("architecture: block %d: e1, c, s, e2 must be non-negative" % i)
        a["blocks"].append([r[0]] + vals)
    validate_arch(a)
    return a


def arch_to_json(arch):
    """Compact JSON description (key order as in docs/model-format.md)."""
    a = parse_arch(arch)
    return json.dumps({k: a[k] for k in _KEYS}, separators=(",", ":"))


def arch_metadata(arch):
    """The model file's `arch` value: the preset name when `arch` is exactly a
    preset, otherwise the JSON description."""
    a = parse_arch(arch)
    p = PRESETS.get(a["name"])
    if p is not None and all(p[k] == a[k] for k in _KEYS):
        return a["name"]
    return arch_to_json(a)


# ---- building pieces ----------------------------------------------------------

def hsig(x):
    return F.relu6(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    def forward(self, x):
        return hsig(x)


class HSwish(nn.Module):
    def forward(self, x):
        return x * hsig(x)


class ChannelShuffle(nn.Module):
    """Output channel j*g + i takes input channel i*(C/g) + j."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, x):
        b, c, h, w = x.shape
        return x.reshape(b, self.g, c // self.g, h, w).transpose(1, 2).reshape(b, c, h, w)


def _shuffle(g, groups):
    # Shuffles exist only in grouped architectures; keeping a parameter-free
    # placeholder preserves the reference's Sequential indices.
    return ChannelShuffle(g) if groups > 1 else nn.Identity()


def conv_bn(cin, cout, k, stride, groups, *tail):
    """conv (no bias, pad k/2) -> BN [-> tail modules]; indices .0 conv, .1 BN."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), *tail)


class Hyper(nn.Module):
    """h = hsig(W2 relu(W1 t0 + b1) + b2) from token 0: B x 2C."""

    def __init__(self, dim, channels):
        super().__init__()
        self.hyper = nn.Sequential(nn.Linear(dim, dim // 4), nn.ReLU(),
                                   nn.Linear(dim // 4, 2 * channels), HSigmoid())

    def forward(self, z):  # z: B x T x D
        return self.hyper(z[:, 0])


def dyrelu(x, h):
    """max(x*a, x*b) per channel, a = (h[:C]-0.5)*2+1, b = (h[C:]-0.5)*2."""
    c = x.shape[1]
    a = ((h[:, :c] - 0.5) * 2.0 + 1.0)[:, :, None, None]
    b = ((h[:, c:] - 0.5) * 2.0)[:, :, None, None]
    return torch.max(x * a, x * b)


class MobileToFormer(nn.Module):
    """`local_global`: tokens attend to the pixels of a C-channel map (2 heads)."""

    def __init__(self, c, dim):
        super().__init__()
        self.alpha = nn.Sequential(nn.Linear(dim, c), HSigmoid())
        self.q = nn.Linear(dim, c)
        self.proj = nn.Linear(c, dim)
        self.layer_norm = nn.LayerNorm(dim)
        self.scale = (c // 2) ** -0.5

    def forward(self, x, z):  # x: B x C x H x W, z: B x T x D
        b, c, h, w = x.shape
        t = z.shape[1]
        q = self.q(z).reshape(b, t, 2, c // 2).transpose(1, 2)       # B x 2 x T x C/2
        kv = x.reshape(b, 2, c // 2, h * w)                          # B x 2 x C/2 x HW
        attn = torch.softmax((q @ kv) * self.scale, dim=-1)          # B x 2 x T x HW
        o = (attn @ kv.transpose(-1, -2)).transpose(1, 2).reshape(b, t, c)
        o = o * (self.alpha(z) * 2.0)
        return self.layer_norm(z + self.proj(o))


class Former(nn.Module):
    """`global_block`: self-attention over tokens (4 heads, keys = values = tokens) + FFN."""

    def __init__(self, dim):
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ffn_norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.channel_mlp = nn.Linear(dim, dim)
        self.layer_norm = nn.LayerNorm(dim)
        self.scale = (dim // 4) ** -0.5

    def forward(self, z):  # B x T x D
        b, t, d = z.shape
        q = self.q(z).reshape(b, t, 4, d // 4).transpose(1, 2)       # B x 4 x T x D/4
        kv = z.reshape(b, t, 4, d // 4).transpose(1, 2)              # B x 4 x T x D/4
        attn = torch.softmax((q @ kv.transpose(-1, -2)) * self.scale, dim=-1)  # B x 4 x T x T
        o = (attn @ kv).transpose(1, 2).reshape(b, t, d)
        z = self.layer_norm(z + self.channel_mlp(o))
        return self.ffn_norm(z + self.ffn(z))


class FormerToMobile(nn.Module):
    """`global_local`: every pixel attends to the tokens (2 heads); result added to the map."""

    def __init__(self, c, dim):
        super().__init__()
        self.k = nn.Linear(dim, c)
        self.proj = nn.Linear(dim, c)
        self.scale = (c // 2) ** -0.5

    def forward(self, y, z):  # y: B x C x H x W, z: B x T x D
        b, c, h, w = y.shape
        t = z.shape[1]
        v = self.proj(z).reshape(b, t, 2, c // 2).transpose(1, 2)    # B x 2 x T x C/2
        k = self.k(z).reshape(b, t, 2, c // 2).permute(0, 2, 3, 1)   # B x 2 x C/2 x T
        q = y.reshape(b, 2, c // 2, h * w).transpose(-1, -2)         # B x 2 x HW x C/2
        attn = torch.softmax((q @ k) * self.scale, dim=-1)           # B x 2 x HW x T
        g = (attn @ v).transpose(-1, -2).reshape(b, c, h, w)
        return y + g


class Bridges(nn.Module):
    """Mixin holding a block's three bridge modules, registered in reference order."""

    def _add_bridges(self, cin, cout, dim):
        self.local_global = MobileToFormer(cin, dim)
        self.global_block = Former(dim)
        self.global_local = FormerToMobile(cout, dim)


# ---- blocks -------------------------------------------------------------------

class BlockA(nn.Module):
    """Conv-only first block: dw3x3(e1) -> BN -> relu6 -> [shuffle(in)] -> 1x1 (G) -> BN [+ x]."""

    def __init__(self, cin, cout, stride, e1, groups):
        super().__init__()
        hid = cin * e1
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(hid),
            nn.ReLU6(), _shuffle(cin, groups),
            nn.Conv2d(hid, cout, 1, 1, 0, groups=groups, bias=False), nn.BatchNorm2d(cout))
        self.identity = stride == 1 and cin == cout

    def forward(self, x, z):
        u = self.conv(x)
        return (u + x if self.identity else u), z


class BlockB3(Bridges):
    """DnaBlock3: dw3x3(e1) -> 1x1 -> dw3x3(e2) -> 1x1 (+ inner skip), Former -> Mobile, [+ x]."""

    def __init__(self, cin, cout, stride, e1, e2, groups, dim):
        super().__init__()
        h1, h2 = cin * e1, cout * e2
        self.conv1 = conv_bn(cin, h1, 3, stride, cin, _shuffle(cin, groups))
        self.hyper1 = Hyper(dim, h1)
        self.conv2 = conv_bn(h1, cout, 1, 1, groups)
        self.conv3 = conv_bn(cout, h2, 3, 1, cout, _shuffle(cout, groups))
        self.hyper3 = Hyper(dim, h2)
        self.conv4 = conv_bn(h2, cout, 1, 1, groups)
        self._add_bridges(cin, cout, dim)
        self.identity = stride == 1 and cin == cout

    def forward(self, x, z):
        z = self.global_block(self.local_global(x, z))
        u = dyrelu(self.conv1(x), self.hyper1(z))
        r = self.conv2(u)
        u = dyrelu(self.conv3(r), self.hyper3(z))
        u = self.conv4(u) + r
        u = self.global_local(u, z)
        return (u + x if self.identity else u), z


class BlockB(Bridges):
    """DnaBlock: 1x1(e1) [shuffle(G)] -> dw3x3 -> 1x1 [shuffle(G)], [+ x], Former -> Mobile."""

    def __init__(self, cin, cout, stride, e1, groups, dim):
        super().__init__()
        hid = cin * e1
        self.conv1 = conv_bn(cin, hid, 1, 1, groups, _shuffle(groups, groups))
        self.hyper1 = Hyper(dim, hid)
        self.conv2 = conv_bn(hid, hid, 3, stride, hid)
        self.hyper2 = Hyper(dim, hid)
        self.conv3 = conv_bn(hid, cout, 1, 1, groups, _shuffle(groups, groups))
        self._add_bridges(cin, cout, dim)
        self.identity = stride == 1 and cin == cout

    def forward(self, x, z):
        z = self.global_block(self.local_global(x, z))
        u = dyrelu(self.conv1(x), self.hyper1(z))
        u = dyrelu(self.conv2(u), self.hyper2(z))
        u = self.conv3(u)
        if self.identity:
            u = u + x
        return self.global_local(u, z), z


class Classifier(nn.Module):
    """[shuffle(G)] -> 1x1 (G) -> BN -> relu6 -> avg pool -> hswish, ++ token 0,
    Linear -> BN1d -> hswish, Linear."""

    def __init__(self, cin, exp, width, dim, groups, num_classes):
        super().__init__()
        hid = cin * exp
        self.conv = nn.Sequential(_shuffle(groups, groups),
                                  nn.Conv2d(cin, hid, 1, 1, 0, groups=groups, bias=False),
                                  nn.BatchNorm2d(hid))
        self.fc = nn.Sequential(nn.Linear(hid + dim, width), nn.BatchNorm1d(width), HSwish())
        # Index 0 is the reference's dropout slot; the twin trains without dropout.
        self.classifier = nn.Sequential(nn.Identity(), nn.Linear(width, num_classes))

    def forward(self, x, z):
        x = F.relu6(self.conv(x))
        p = x.mean(dim=(2, 3))
        p = p * hsig(p)
        return self.classifier(self.fc(torch.cat([p, z[:, 0]], dim=1)))


class MobileFormer(nn.Module):
    def __init__(self, arch, num_classes=1000):
        super().__init__()
        a = parse_arch(arch)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ArchError("num_classes must be a positive integer, got %r" % (num_classes,))
        self.arch = a
        self.num_classes = num_classes
        D, G = a["token_dim"], a["groups"]
        self.tokens = nn.Embedding(a["tokens"], D)
        self.stem = nn.Sequential(nn.Conv2d(3, a["stem"], 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(a["stem"]), nn.ReLU6())
        blocks, cin = [], a["stem"]
        for t, e1, c, s, e2 in a["blocks"]:
            if t == "A":
                blocks.append(BlockA(cin, c, s, e1, G))
            elif t == "B3":
                blocks.append(BlockB3(cin, c, s, e1, e2, G, D))
            else:
                blocks.append(BlockB(cin, c, s, e1, G, D))
            cin = c
        self.features = nn.Sequential(*blocks)
        self.local_global = MobileToFormer(cin, D)
        self.classifier = Classifier(cin, a["last_exp"], a["classifier_width"], D, G, num_classes)

    def forward(self, x, trace=None):
        """x: B x 3 x H x W -> B x num_classes; trace(name, tensor) sees the intermediates."""
        z = self.tokens.weight.unsqueeze(0).expand(x.shape[0], -1, -1)  # B x T x D
        x = self.stem(x)
        if trace:
            trace("stem", x)
        for i, blk in enumerate(self.features):
            x, z = blk(x, z)
            if trace:
                trace("block%02d.features" % i, x)
                trace("block%02d.tokens" % i, z)
        z = self.local_global(x, z)
        if trace:
            trace("final_tokens", z)
        return self.classifier(x, z)


def build(arch, num_classes=1000):
    """A freshly initialised twin (PyTorch default init) for `arch`."""
    return MobileFormer(arch, num_classes)


# ---- weights ----------------------------------------------------------------

def state_dict_entries(model):
    """(name, shape) of every state_dict entry, num_batches_tracked included, in order."""
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def synthetic_manifest_for(arch, num_classes, seed):
    """Manifest rows (as in ../shared/golden/*/manifest.json) for an architecture."""
    return synthetic_manifest(state_dict_entries(build(arch, num_classes)), seed)


def synthetic_state_dict(arch, num_classes=1000, seed=0):
    """Deterministic weights: name -> float32 numpy array, in state_dict order,
    num_batches_tracked left out.

    Rule (tools/mfweights.py has the full text): entry i of the reference
    state_dict (num_batches_tracked buffers counted, but not filled) gets
    fill_uniform(seed + i, shape, offset, scale) with tokens.weight (0, 1),
    running_mean (0, 0.05), running_var (1, 0.4), every bias (0, 0.02),
    rank-1 weights of BN / LayerNorm (1, 0.25) and conv / linear weights
    (0, sqrt(3 / fan_in)), fan_in = prod(shape[1:]).
    """
    return tensors_from_manifest(synthetic_manifest_for(arch, num_classes, seed))


def load_numpy_state_dict(model, tensors):
    """Copy name -> array into `model` (num_batches_tracked may be absent); strict otherwise."""
    sd = model.state_dict()
    expected = [k for k in sd if not k.endswith("num_batches_tracked")]
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in sd or k.endswith("num_batches_tracked")]
    if missing or extra:
        raise KeyError("state dict mismatch: missing %s, unexpected %s" % (missing[:3], extra[:3]))
    with torch.no_grad():
        for k in expected:
            v = torch.as_tensor(np.ascontiguousarray(tensors[k]))
            if tuple(v.shape) != tuple(sd[k].shape):
                raise ValueError("%s: shape %s, expected %s" % (k, list(v.shape), list(sd[k].shape)))
            sd[k].copy_(v)
    return model
