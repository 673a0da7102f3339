"""Deterministic synthetic weights shared by the C engine and the Python tools.

Two pieces, both numpy-only so that tools without torch can use them:

* ``fill_uniform(seed, shape, offset, scale)``: the splitmix64 rule of
  ``../shared/golden/README.md`` (the C engine's ``mf_fill_uniform``).
* ``synthetic_manifest(entries, base_seed)``: which seed, offset and scale each
  checkpoint tensor gets, given the reference state_dict order.  The golden
  ``manifest.json`` files were made with exactly this rule.

The rule (implement it identically in C):

    Walk the reference state_dict in order, *including* the BatchNorm
    ``num_batches_tracked`` buffers: every BatchNorm contributes five
    consecutive entries (weight, bias, running_mean, running_var,
    num_batches_tracked).  Entry number i (counting from 0) gets
    seed = base_seed + i.  ``num_batches_tracked`` entries are skipped (not
    stored, no values), but they still use up their index.  Offset and scale:

      name == "tokens.weight"            offset 0, scale 1
      name ends with ".running_mean"     offset 0, scale 0.05
      name ends with ".running_var"      offset 1, scale 0.4
      name ends with ".bias"             offset 0, scale 0.02   (BN, LayerNorm, Linear)
      ".weight" of rank 1                offset 1, scale 0.25   (BN, LayerNorm)
      ".weight" of rank >= 2             offset 0, scale sqrt(3.0 / fan_in)
                                         with fan_in = product of shape[1:] (in double)

    i.e. conv/linear weights are uniform with variance 1/fan_in.  Each tensor
    is then ``fill_uniform(seed, shape, offset, scale)``.
"""
import math

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(seed, n):
    """The first n outputs of splitmix64 started at `seed`, as uint64."""
    # The state after k calls is seed + k * GAMMA (mod 2^64), so the stream
    # vectorises: element i uses state seed + (i + 1) * GAMMA.
    k = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + k * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return z


def fill_uniform(seed, shape, offset, scale):
    """float32 array of `shape`: offset + scale * (2u - 1), u = (next() >> 40) / 2^24.

    Computed in float64 and rounded once to float32, filled in row-major order.
    """
    shape = tuple(int(d) for d in shape)
    n = 1
    for d in shape:
        n *= d
    u = (_splitmix64(int(seed), n) >> np.uint64(40)).astype(np.float64) * (2.0 ** -24)
    v = float(offset) + float(scale) * (2.0 * u - 1.0)
    return v.astype(np.float32).reshape(shape)


def tensor_rule(name, shape):
    """(offset, scale) of a checkpoint tensor; None for num_batches_tracked."""
    if name.endswith("num_batches_tracked"):
        return None
    if name == "tokens.weight":
        return 0.0, 1.0
    if name.endswith(".running_mean"):
        return 0.0, 0.05
    if name.endswith(".running_var"):
        return 1.0, 0.4
    if name.endswith(".bias"):
        return 0.0, 0.02
    if name.endswith(".weight"):
        if len(shape) == 1:
            return 1.0, 0.25
        fan_in = 1
        for d in shape[1:]:
            fan_in *= int(d)
        return 0.0, math.sqrt(3.0 / fan_in)
    raise ValueError("no synthetic-weight rule for tensor %r" % name)


def synthetic_manifest(entries, base_seed):
    """Manifest rows (dicts name/shape/seed/offset/scale) for `entries`.

    `entries` is the full reference state_dict order as (name, shape) pairs,
    num_batches_tracked buffers included (they consume a seed index).
    """
    rows = []
    for i, (name, shape) in enumerate(entries):
        rule = tensor_rule(name, shape)
        if rule is None:
            continue
        rows.append({"name": name, "shape": [int(d) for d in shape], "seed": int(base_seed) + i,
                     "offset": rule[0], "scale": rule[1]})
    return rows


def tensors_from_manifest(rows):
    """name -> float32 array, in manifest order (dicts keep insertion order)."""
    return {r["name"]: fill_uniform(r["seed"], r["shape"], r["offset"], r["scale"]) for r in rows}
