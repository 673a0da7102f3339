#!/usr/bin/env python3
"""Open Inference Protocol conformance client: talks to a server the way the
protocol's client libraries do (Triton's tritonclient.http, the KServe SDK)
and checks what such a client relies on.

    python3 tools/oip_conformance.py --url http://127.0.0.1:8080 --model NAME
        [--image-model NAME] [--load-unload] [--verbose]

Standard library only (no numpy).  One persistent HTTP/1.1 connection, as a
client library keeps, with header names in lower case and no Content-Type
on binary requests (as tritonclient sends them), and a POST with no body and
no Content-Length (tritonclient's repository index).  Checked, each as one
PASS/FAIL line:
  - health (live, ready), server metadata (name, version, extensions)
  - model metadata and readiness, with and without a version; versions listed
  - infer, JSON in and out: shapes, datatypes, the id echoed, probabilities a
    softmax of the logits
  - infer, binary in and out (Inference-Header-Content-Length both ways,
    binary_data_size on each output, outputs in the order asked), equal to
    the JSON answer; binary_data_output; all outputs when none are named
  - the classification extension ("<score>:<index>:<label>", best first), in
    JSON and in binary
  - BYTES images: binary elements (4-byte little-endian length + bytes) and
    base64 in JSON give the same probabilities
  - errors: the protocol's body {"error": "<message>"} with the right status
    for an unknown model, an unknown version, a wrong input name, a binary
    size that does not match
  - the repository index (and with --load-unload: unload, then load again)
Exit status 1 if anything failed.
"""
import argparse
import base64
import http.client
import json
import math
import random
import struct
import sys
import urllib.parse
import zlib


class Client:
    def __init__(self, url, verbose=False):
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        self.host, self.port = u.hostname, u.port or 80
        self.base = u.path.rstrip("/")
        self.verbose = verbose
        self.conn = None

    def request(self, method, path, body=None, headers=None, content_length=True):
        """(status, headers {lower-case name: value}, body bytes) over one kept connection."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.putrequest(method, self.base + path, skip_accept_encoding=True)
                for k, v in (headers or {}).items():
                    self.conn.putheader(k.lower(), v)
                if body is not None or content_length and method == "POST":
                    self.conn.putheader("content-length", str(len(body or b"")))
                self.conn.endheaders(body)
                r = self.conn.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if self.verbose:
                    print("  %s %s -> %d %s" % (method, path, r.status, data[:160]))
                if hdrs.get("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, obj=None):
        body = json.dumps(obj).encode() if obj is not None else None
        st, h, data = self.request(method, path, body, {"Content-Type": "application/json"} if body else None)
        return st, h, json.loads(data) if data else None

    def infer(self, model, header, binary=b"", version=None):
        path = "/v2/models/%s%s/infer" % (model, "/versions/%s" % version if version else "")
        h = json.dumps(header).encode()
        hdrs = {"Inference-Header-Content-Length": str(len(h))} if binary else {"Content-Type": "application/json"}
        st, rh, data = self.request("POST", path, h + binary, hdrs)
        return st, rh, data


def decode_answer(rh, data):
    """The answer's JSON header and {output name: (shape, datatype, values)}."""
    hl = rh.get("inference-header-content-length")
    header = json.loads(data[:int(hl)] if hl is not None else data)
    rest = data[int(hl):] if hl is not None else b""
    out, pos = {}, 0
    for o in header.get("outputs", []):
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            vals = flatten(o["data"])
        else:
            raw = rest[pos:pos + size]
            if len(raw) != size:
                raise AssertionError("output %s: binary_data_size %d, only %d bytes" % (o["name"], size, len(raw)))
            pos += size
            if o["datatype"] == "FP32":
                vals = list(struct.unpack("<%df" % (size // 4), raw))
            elif o["datatype"] == "BYTES":
                vals, p = [], 0
                while p < len(raw):
                    (n,) = struct.unpack_from("<I", raw, p)
                    vals.append(raw[p + 4:p + 4 + n].decode())
                    p += 4 + n
            else:
                raise AssertionError("unexpected datatype " + o["datatype"])
        out[o["name"]] = (o["shape"], o["datatype"], vals)
    if pos != len(rest):
        raise AssertionError("%d binary bytes not accounted for by any output" % (len(rest) - pos))
    return header, out


def flatten(x):
    if isinstance(x, list):
        return [v for e in x for v in flatten(e)]
    return [x]


def png(width, height, seed):
    """A small RGB PNG, written here (zlib + CRCs), distinct per seed."""
    rng = random.Random(seed)
    rows = b"".join(b"\0" + bytes(rng.randrange(256) for _ in range(3 * width)) for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def as_f32(vals):
    """The float32 values (JSON numbers are the nearest decimal, not the float)."""
    return struct.pack("<%df" % len(vals), *vals)


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def run(self, name, fn):
        try:
            detail = fn()
            print("PASS %s%s" % (name, ": " + detail if detail else ""))
            self.passed += 1
        except Exception as e:  # one line per check, whatever broke
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            self.failed += 1


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def protocol_error(st, data, status):
    expect(st == status, "HTTP %d, expected %d: %r" % (st, status, data[:200]))
    o = json.loads(data)
    expect(isinstance(o.get("error"), str) and o["error"], "error body is not {\"error\": \"<message>\"}: %r" % o)
    return o["error"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="http://host:port[/prefix]")
    ap.add_argument("--model", required=True)
    ap.add_argument("--image-model", help="the model to send BYTES images to (default: --model)")
    ap.add_argument("--load-unload", action="store_true", help="also unload and load --model again")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    c = Client(a.url, a.verbose)
    ck = Checks()
    m = a.model
    meta = {}

    def health():
        for p in ("/v2/health/live", "/v2/health/ready"):
            st, _, _ = c.request("GET", p)
            expect(st == 200, "%s -> %d" % (p, st))
    ck.run("health", health)

    def server_metadata():
        st, _, o = c.json("GET", "/v2")
        expect(st == 200, "GET /v2 -> %d" % st)
        expect(isinstance(o.get("name"), str) and isinstance(o.get("version"), str), "name/version: %r" % o)
        exts = o.get("extensions")
        expect(isinstance(exts, list) and all(isinstance(e, str) for e in exts), "extensions: %r" % exts)
        return "%s %s, extensions %s" % (o["name"], o["version"], ", ".join(exts))
    ck.run("server_metadata", server_metadata)

    def model_metadata():
        st, _, o = c.json("GET", "/v2/models/" + m)
        expect(st == 200, "-> %d" % st)
        meta.update(o)
        expect(o["name"] == m, "name %r" % o["name"])
        expect(isinstance(o.get("versions"), list) and o["versions"], "versions %r" % o.get("versions"))
        for t in o["inputs"] + o["outputs"]:
            expect({"name", "datatype", "shape"} <= set(t), "tensor metadata %r" % t)
        names = [t["name"] for t in o["inputs"]]
        expect("input" in names, "no FP32 'input' among %r" % names)
        st, _, o2 = c.json("GET", "/v2/models/%s/versions/%s" % (m, o["versions"][-1]))
        expect(st == 200 and o2["name"] == m, "versioned metadata -> %d" % st)
        return "versions %s; inputs %s; outputs %s" % (o["versions"], [(t["name"], t["datatype"], t["shape"])
                                                                        for t in o["inputs"]],
                                                      [t["name"] for t in o["outputs"]])
    ck.run("model_metadata", model_metadata)
    if not meta:
        print("SUMMARY: %d passed, %d failed (no metadata: nothing more to check)" % (ck.passed, ck.failed + 1))
        return 1

    def model_ready():
        for p in ("/v2/models/%s/ready" % m, "/v2/models/%s/versions/%s/ready" % (m, meta["versions"][-1])):
            st, _, _ = c.request("GET", p)
            expect(st == 200, "%s -> %d" % (p, st))
        st, _, _ = c.request("GET", "/v2/models/%s/ready" % (m + "_not_a_model"))
        expect(st != 200, "an unknown model is ready")
    ck.run("model_ready", model_ready)

    size = meta.get("input_size") or [64, 64]
    n, h, w = 2, int(size[0]), int(size[1])
    classes = meta["outputs"][0]["shape"][-1]
    rng = random.Random(5)
    x = list(struct.unpack("<%df" % (n * 3 * h * w), struct.pack("<%df" % (n * 3 * h * w),
                                                                    *[rng.uniform(-2, 2) for _ in range(n * 3 * h * w)])))
    raw = struct.pack("<%df" % len(x), *x)
    ref = {}

    def json_infer():
        st, rh, data = c.infer(m, {"id": "conf-1", "inputs": [{"name": "input", "datatype": "FP32",
                                                                 "shape": [n, 3, h, w], "data": x}]})
        expect(st == 200, "-> %d %r" % (st, data[:200]))
        header, out = decode_answer(rh, data)
        expect(header.get("id") == "conf-1", "id not echoed: %r" % header.get("id"))
        expect(header.get("model_name") == m and isinstance(header.get("model_version"), str),
               "model_name/model_version: %r" % {k: header.get(k) for k in ("model_name", "model_version")})
        for name in ("logits", "probabilities"):
            shape, dt, vals = out[name]
            expect(shape == [n, classes] and dt == "FP32" and len(vals) == n * classes, "%s: %r %s" % (name, shape, dt))
        for i in range(n):
            sm = softmax(out["logits"][2][i * classes:(i + 1) * classes])
            got = out["probabilities"][2][i * classes:(i + 1) * classes]
            expect(all(abs(p - q) <= 1e-5 for p, q in zip(got, sm)), "probabilities are not softmax(logits)")
        ref.update(out)
        return "logits %r" % out["logits"][0]
    ck.run("infer_json", json_infer)

    def binary_infer():
        st, rh, data = c.infer(m, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, h, w],
                                               "parameters": {"binary_data_size": len(raw)}}],
                                   "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                                               {"name": "logits", "parameters": {"binary_data": True}}]}, raw)
        expect(st == 200, "-> %d %r" % (st, data[:200]))
        expect("inference-header-content-length" in rh, "no Inference-Header-Content-Length in the answer")
        header, out = decode_answer(rh, data)
        expect([o["name"] for o in header["outputs"]] == ["probabilities", "logits"], "outputs not in the order asked")
        expect(as_f32(out["logits"][2]) == as_f32(ref["logits"][2]), "binary logits differ from the JSON answer's")
        expect(as_f32(out["probabilities"][2]) == as_f32(ref["probabilities"][2]), "binary probabilities differ")
    ck.run("infer_binary", binary_infer)

    def binary_default_outputs():
        st, rh, data = c.infer(m, {"parameters": {"binary_data_output": True},
                                   "inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, h, w],
                                               "parameters": {"binary_data_size": len(raw)}}]}, raw)
        expect(st == 200, "-> %d" % st)
        header, out = decode_answer(rh, data)
        expect(sorted(out) == ["logits", "probabilities"], "not every output: %r" % sorted(out))
        expect(all("binary_data_size" in (o.get("parameters") or {}) for o in header["outputs"]),
               "binary_data_output ignored")
        expect(as_f32(out["logits"][2]) == as_f32(ref["logits"][2]), "logits differ")
    ck.run("infer_binary_data_output", binary_default_outputs)

    def classification():
        for binary in (False, True):
            st, rh, data = c.infer(m, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, h, w],
                                                   "data": x}],
                                       "outputs": [{"name": "probabilities",
                                                    "parameters": {"classification": 3, "binary_data": binary}}]})
            expect(st == 200, "-> %d" % st)
            _, out = decode_answer(rh, data)
            shape, dt, strs = out["probabilities"]
            expect(shape == [n, 3] and dt == "BYTES", "shape %r datatype %s" % (shape, dt))
            for i in range(n):
                probs = ref["probabilities"][2][i * classes:(i + 1) * classes]
                parts = [s.split(":", 2) for s in strs[i * 3:(i + 1) * 3]]
                idx = [int(p[1]) for p in parts]
                expect(idx == sorted(range(classes), key=lambda k: -probs[k])[:3], "not the top 3: %r" % idx)
                expect(all(abs(float(p[0]) - probs[int(p[1])]) < 1e-5 for p in parts), "scores: %r" % parts)
        return "e.g. %r" % strs[0]
    ck.run("classification", classification)

    def images():
        im = a.image_model or m
        files = [png(40, 36, 1), png(50, 30, 2)]
        elems = b"".join(struct.pack("<I", len(f)) + f for f in files)
        st, rh, data = c.infer(im, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                "parameters": {"binary_data_size": len(elems)}}],
                                    "outputs": [{"name": "probabilities"}]}, elems)
        expect(st == 200, "binary BYTES -> %d %r" % (st, data[:200]))
        _, out_b = decode_answer(rh, data)
        st, rh, data = c.infer(im, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                "data": [base64.b64encode(f).decode() for f in files]}],
                                    "outputs": [{"name": "probabilities"}]})
        expect(st == 200, "JSON base64 BYTES -> %d %r" % (st, data[:200]))
        _, out_j = decode_answer(rh, data)
        expect(as_f32(out_b["probabilities"][2]) == as_f32(out_j["probabilities"][2]), "binary and base64 images differ")
        return "2 PNGs, probabilities %r" % out_b["probabilities"][0]
    ck.run("infer_images", images)

    def errors():
        st, _, data = c.infer(m + "_not_a_model", {"inputs": []})
        protocol_error(st, data, 404)
        st, _, data = c.infer(m, {"inputs": []}, version="999999")
        protocol_error(st, data, 404)
        st, _, data = c.infer(m, {"inputs": [{"name": "not_an_input", "datatype": "FP32", "shape": [1, 3, h, w],
                                              "data": x[:3 * h * w]}]})
        msg = protocol_error(st, data, 400)
        st, _, data = c.infer(m, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, h, w],
                                              "parameters": {"binary_data_size": len(raw) // 2}}]}, raw[:len(raw) // 2])
        protocol_error(st, data, 400)
        return "e.g. %r" % msg
    ck.run("errors", errors)

    def repository_index():
        st, _, data = c.request("POST", "/v2/repository/index", None, content_length=False)
        expect(st == 200, "POST without a body -> %d %r" % (st, data[:200]))
        idx = json.loads(data)
        expect(isinstance(idx, list) and all({"name", "state"} <= set(e) for e in idx), "index: %r" % idx[:3])
        mine = [e for e in idx if e["name"] == m]
        expect(mine and any(e["state"] == "READY" for e in mine), "%s not READY in the index" % m)
        return "%d entries" % len(idx)
    ck.run("repository_index", repository_index)

    if a.load_unload:
        def unload_load():
            st, _, data = c.request("POST", "/v2/repository/models/%s/unload" % m, b"{}",
                                    {"Content-Type": "application/json"})
            expect(st == 200, "unload -> %d %r" % (st, data[:200]))
            st, _, _ = c.request("GET", "/v2/models/%s/ready" % m)
            expect(st != 200, "ready after unload")
            st, _, data = c.request("POST", "/v2/repository/models/%s/load" % m, None, content_length=False)
            expect(st == 200, "load -> %d %r" % (st, data[:200]))
            st, _, _ = c.request("GET", "/v2/models/%s/ready" % m)
            expect(st == 200, "not ready after load")
        ck.run("unload_load", unload_load)

    print("SUMMARY: %d passed, %d failed" % (ck.passed, ck.failed))
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
