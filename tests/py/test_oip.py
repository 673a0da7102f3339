"""The Open Inference Protocol (KServe v2 REST, with Triton's binary tensor
data, classification and schedule-policy extensions), black box over real
sockets (issue 13).

Every endpoint: GET /v2, health, model metadata and readiness (with and
without a version), infer.  Infer both ways an input can come -- "input"
(FP32 [N,3,H,W], already normalized; its logits must equal
`build/mobileformer run` on the same tensor, bit for bit) and "image" (BYTES
[N], encoded files; probabilities equal /v1/predict's for the same bytes) --
with JSON data flat and nested, binary data, binary and JSON outputs mixed,
the classification extension, request ids (the OIP "id" and X-Request-ID,
echoed, generated, logged), every malformed request of the issue with the
protocol's error body, priorities (a flood of low priority work does not
delay high priority work by its backlog) and timeouts, and many clients with
distinct tensors each getting their own answer.  The repository's own
conformance client (tools/oip_conformance.py) passes against the server.
"""
import base64
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (the test model, Server, helpers)

NAME = ts.MODEL_NAME
INFER = "/v2/models/%s/infer" % NAME
C = 10


def setUpModule():
    ts.setUpModule()


def tearDownModule():
    ts.tearDownModule()


# ---- the protocol, as a client writes it ---------------------------------------

def tensor(n, h, w, seed):
    """n x 3 x h x w float32 values, distinct per seed, as a flat list."""
    rng = random.Random(seed)
    vals = [rng.uniform(-2.0, 2.0) for _ in range(n * 3 * h * w)]
    return list(struct.unpack("<%df" % len(vals), struct.pack("<%df" % len(vals), *vals)))  # exact f32


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def nest(flat, shape):
    """Row-major nesting of a flat list into `shape`."""
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def binary_body(header, *tensors):
    """The binary tensor extension: the JSON header, then the raw tensors."""
    h = json.dumps(header).encode()
    return h + b"".join(tensors), {"Inference-Header-Content-Length": str(len(h)),
                                   "Content-Type": "application/octet-stream"}


def bytes_elements(items):
    """BYTES tensor data: each element as a 4-byte little-endian length + bytes."""
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def split_answer(r):
    """(JSON header, the binary part) of an infer answer."""
    hl = r.header("Inference-Header-Content-Length")
    if hl is None:
        return json.loads(r.body), b""
    hl = int(hl)
    return json.loads(r.body[:hl]), r.body[hl:]


def outputs_of(r):
    """{name: (shape, datatype, values)}: JSON data or binary data decoded."""
    header, rest = split_answer(r)
    out, pos = {}, 0
    for o in header["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            vals = o["data"]
        else:
            raw = rest[pos:pos + size]
            pos += size
            if o["datatype"] == "FP32":
                vals = list(struct.unpack("<%df" % (size // 4), raw))
            else:
                vals, p = [], 0
                while p < len(raw):
                    (n,) = struct.unpack_from("<I", raw, p)
                    vals.append(raw[p + 4:p + 4 + n].decode())
                    p += 4 + n
        out[o["name"]] = (o["shape"], o["datatype"], vals)
    assert pos == len(rest), "binary part has %d bytes, outputs account for %d" % (len(rest), pos)
    return out


def cli_logits(values, n, h, w, model=None):
    """`mobileformer run` on the same tensor: the reference, as raw float32 bytes."""
    with tempfile.TemporaryDirectory(dir=ts.TMP) as d:
        x, y = os.path.join(d, "x.f32"), os.path.join(d, "y.f32")
        with open(x, "wb") as f:
            f.write(f32(values))
        subprocess.run([ts.CLI, "run", "--model", model or ts.MODEL, "--input", x, "--shape",
                        "%d,3,%d,%d" % (n, h, w), "--output", y], check=True, capture_output=True,
                       timeout=ts.TIMEOUT)
        with open(y, "rb") as f:
            return f.read()


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def fp32_input(n, h, w, data=None, binary=False, **extra):
    inp = {"name": "input", "datatype": "FP32", "shape": [n, 3, h, w]}
    if binary:
        inp["parameters"] = {"binary_data_size": n * 3 * h * w * 4}
    else:
        inp["data"] = data
    inp.update(extra)
    return inp


class OipTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = ts.Server("--cors_origin", "*", "--max_body_bytes", str(64 << 20))

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def infer(self, body, headers=None, path=INFER):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        return self.srv.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})

    def assert_oip_error(self, r, status, code=None, words=()):
        """The protocol's error: {"error": "<message>"} (+ code, request_id)."""
        self.assertEqual(r.status, status, r.body[:400])
        self.assertTrue(r.header("Content-Type").startswith("application/json"))
        o = json.loads(r.body)
        self.assertIsInstance(o["error"], str, o)
        self.assertTrue(o["error"])
        if code:
            self.assertEqual(o["code"], code, o)
        self.assertEqual(o["request_id"], r.header("X-Request-ID"))
        for w in words:
            self.assertIn(w, o["error"])
        return o

    # -- server and model endpoints

    def test_server_metadata(self):
        r = self.srv.request("GET", "/v2")
        self.assertEqual(r.status, 200)
        m = r.json()
        self.assertEqual(m["name"], "mobileformer")
        self.assertRegex(m["version"], r"^\d+\.\d+\.\d+$")
        for ext in ("binary_tensor_data", "classification", "model_repository", "schedule_policy"):
            self.assertIn(ext, m["extensions"])
        for path in ("/v2/health/live", "/v2/health/ready"):
            self.assertEqual(self.srv.request("GET", path).status, 200)

    def test_model_metadata_and_readiness(self):
        for path in ("/v2/models/%s" % NAME, "/v2/models/%s/versions/1" % NAME):
            r = self.srv.request("GET", path)
            self.assertEqual(r.status, 200, path)
            m = r.json()
            self.assertEqual(m["name"], NAME)
            self.assertEqual(m["versions"], ["1"])
            self.assertEqual(m["platform"], "mobileformer_c")
            self.assertEqual(m["inputs"][0], {"name": "input", "datatype": "FP32", "shape": [-1, 3, -1, -1]})
            self.assertEqual(m["inputs"][1]["name"], "image")
            self.assertEqual((m["inputs"][1]["datatype"], m["inputs"][1]["shape"]), ("BYTES", [-1]))
            self.assertEqual(m["outputs"], [{"name": "logits", "datatype": "FP32", "shape": [-1, C]},
                                            {"name": "probabilities", "datatype": "FP32", "shape": [-1, C]}])
        for path in ("/v2/models/%s/ready" % NAME, "/v2/models/%s/versions/1/ready" % NAME):
            r = self.srv.request("GET", path)
            self.assertEqual((r.status, r.json()["ready"]), (200, True), path)
        self.assert_oip_error(self.srv.request("GET", "/v2/models/nope"), 404, "model_not_found", ["nope"])
        self.assert_oip_error(self.srv.request("GET", "/v2/models/nope/ready"), 404, "model_not_found")
        self.assert_oip_error(self.srv.request("GET", "/v2/models/%s/versions/7" % NAME), 404,
                              "version_not_found", ["7"])
        self.assert_oip_error(self.srv.request("GET", "/v2/models/%s/versions/7/ready" % NAME), 404,
                              "version_not_found")
        self.assert_oip_error(self.srv.request("GET", "/v2/models/%s/versions/x1" % NAME), 404)
        self.assert_oip_error(self.srv.request("GET", "/v2/nothing/here"), 404, "not_found")
        self.assert_oip_error(self.srv.request("GET", INFER), 405, "method_not_allowed")

    # -- infer with an FP32 tensor: bit for bit the CLI's logits

    def test_json_flat_and_nested_equal_the_cli(self):
        n, h, w = 3, 64, 64
        x = tensor(n, h, w, 1)
        want = cli_logits(x, n, h, w)
        for data in (x, nest(x, [n, 3, h, w]), nest(x, [n, 3 * h * w])):
            r = self.infer({"id": "req-7", "inputs": [fp32_input(n, h, w, data)]})
            self.assertEqual(r.status, 200, r.body[:300])
            a = r.json()
            self.assertEqual((a["model_name"], a["model_version"], a["id"]), (NAME, "1", "req-7"))
            outs = outputs_of(r)
            self.assertEqual(list(outs), ["logits", "probabilities"])  # all outputs by default
            shape, dt, logits = outs["logits"]
            self.assertEqual((shape, dt), ([n, C], "FP32"))
            self.assertEqual(f32(logits), want, "JSON logits differ from mobileformer run")
            _, _, probs = outs["probabilities"]
            for i in range(n):
                ref = softmax(logits[i * C:(i + 1) * C])
                for p, q in zip(probs[i * C:(i + 1) * C], ref):
                    self.assertAlmostEqual(p, q, delta=1e-6 + 1e-5 * q)

    def test_binary_in_binary_out_equal_the_cli(self):
        n, h, w = 2, 64, 64
        x = tensor(n, h, w, 2)
        want = cli_logits(x, n, h, w)
        body, hdr = binary_body({"inputs": [fp32_input(n, h, w, binary=True)],
                                 "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}, f32(x))
        r = self.infer(body, headers=hdr)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        header, rest = split_answer(r)
        self.assertEqual(header["outputs"][0]["parameters"]["binary_data_size"], n * C * 4)
        self.assertEqual(rest, want, "binary logits differ from mobileformer run")
        # lower-case header names, no Content-Type (tritonclient's way)
        r2 = self.srv.request("POST", INFER, body=body,
                              headers={"inference-header-content-length": hdr["Inference-Header-Content-Length"]})
        self.assertEqual(split_answer(r2)[1], want)

    def test_mixed_outputs_in_the_order_asked(self):
        n, h, w = 2, 64, 64
        x = tensor(n, h, w, 3)
        want = cli_logits(x, n, h, w)
        body, hdr = binary_body({"inputs": [fp32_input(n, h, w, binary=True)],
                                 "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                                             {"name": "logits", "parameters": {"binary_data": False}}]}, f32(x))
        r = self.infer(body, headers=hdr)
        self.assertEqual(r.status, 200, r.body[:300])
        header, _ = split_answer(r)
        self.assertEqual([o["name"] for o in header["outputs"]], ["probabilities", "logits"])
        self.assertIn("data", header["outputs"][1])
        outs = outputs_of(r)
        self.assertEqual(f32(outs["logits"][2]), want)
        # binary_data_output: every output binary unless it says otherwise
        r = self.infer({"parameters": {"binary_data_output": True}, "inputs": [fp32_input(n, h, w, x)]})
        outs = outputs_of(r)
        self.assertEqual(f32(outs["logits"][2]), want)
        header, _ = split_answer(r)
        self.assertTrue(all("binary_data_size" in o["parameters"] for o in header["outputs"]))

    def test_other_input_sizes(self):
        for (n, h, w) in ((1, 32, 32), (2, 48, 80), (1, 96, 40)):
            x = tensor(n, h, w, 4 + h)
            r = self.infer({"inputs": [fp32_input(n, h, w, x)], "outputs": [{"name": "logits"}]})
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(f32(outputs_of(r)["logits"][2]), cli_logits(x, n, h, w), "%dx%d" % (h, w))

    # -- infer with encoded images: /v1/predict's probabilities

    def test_images_equal_v1_predict(self):
        files = [ts.png(5), ts.jpeg(6), ts.png(7)]
        refs = [ts.probabilities(self.srv.predict(d, query="?top_k=10").json()) for d in files]
        body, hdr = binary_body({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
                                             "parameters": {"binary_data_size": len(bytes_elements(files))}}],
                                 "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]},
                                bytes_elements(files))
        r_bin = self.infer(body, headers=hdr)
        r_json = self.infer({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
                                         "data": [base64.b64encode(d).decode() for d in files]}],
                             "outputs": [{"name": "probabilities"}]})
        for r in (r_bin, r_json):
            self.assertEqual(r.status, 200, r.body[:300])
            shape, _, probs = outputs_of(r)["probabilities"]
            self.assertEqual(shape, [3, C])
            for i in range(3):
                got = dict(enumerate(probs[i * C:(i + 1) * C]))
                self.assertTrue(ts.same_probabilities(got, refs[i]), "image %d: %r vs /v1 %r" % (i, got, refs[i]))

    def test_classification(self):
        n, h, w = 2, 64, 64
        x = tensor(n, h, w, 9)
        for binary in (False, True):
            r = self.infer({"inputs": [fp32_input(n, h, w, x)],
                            "outputs": [{"name": "probabilities",
                                         "parameters": {"classification": 3, "binary_data": binary}},
                                        {"name": "logits"}]})
            self.assertEqual(r.status, 200, r.body[:300])
            outs = outputs_of(r)
            shape, dt, strs = outs["probabilities"]
            self.assertEqual((shape, dt), ([n, 3], "BYTES"))
            logits = outs["logits"][2]
            for i in range(n):
                probs = softmax(logits[i * C:(i + 1) * C])
                order = sorted(range(C), key=lambda k: -probs[k])
                got = [s.split(":", 2) for s in strs[i * 3:(i + 1) * 3]]
                self.assertEqual([int(g[1]) for g in got], order[:3])
                self.assertEqual([g[2] for g in got], [ts.LABELS[k] for k in order[:3]])
                scores = [float(g[0]) for g in got]
                self.assertEqual(scores, sorted(scores, reverse=True))
                for s, k in zip(scores, order):
                    self.assertAlmostEqual(s, probs[k], delta=2e-6)
        r = self.infer({"inputs": [fp32_input(1, h, w, x[:3 * h * w])],
                        "outputs": [{"name": "logits", "parameters": {"classification": 50}}]})
        self.assertEqual(outputs_of(r)["logits"][0], [1, C])  # at most the classes

    # -- errors: the right status, the protocol's body, words that name the problem

    def test_malformed_requests(self):
        x1 = tensor(1, 32, 32, 11)
        ok = fp32_input(1, 32, 32, x1)
        bad = [
            ({"inputs": [dict(ok, datatype="FP16")]}, ["FP32"]),
            ({"inputs": [fp32_input(1, 32, 32, x1, shape=[1, 3, 1024])]}, ["dimensions"]),
            ({"inputs": [fp32_input(1, 32, 32, x1, shape=[1, 1, 32, 32])]}, ["3 channels"]),
            ({"inputs": [fp32_input(1, 31, 32, x1[:3 * 31 * 32])]}, ["at least 32"]),
            ({"inputs": [fp32_input(1, 32, 32, x1[:-1])]}, ["elements", "3072"]),
            ({"inputs": [fp32_input(1, 32, 32, x1 + [0.0])]}, ["elements"]),
            ({"inputs": [fp32_input(1, 32, 32, x1[:-1] + ["0.5"])]}, ["numbers"]),
            ({"inputs": []}, ["exactly one input"]),
            ({}, ["'inputs'"]),
            ({"inputs": [ok, ok]}, ["exactly one input"]),
            ({"inputs": [dict(ok, name="pixels")]}, ["unknown input", "pixels"]),
            ({"inputs": [ok], "outputs": [{"name": "embedding"}]}, ["unknown output", "embedding"]),
            ({"inputs": [ok], "outputs": [{"name": "logits"}, {"name": "logits"}]}, ["twice"]),
            ({"inputs": [ok], "outputs": [{"name": "logits", "parameters": {"classification": -1}}]},
             ["classification"]),
            ({"inputs": [ok], "parameters": {"priority": "high"}}, ["priority"]),
            ({"inputs": [ok], "parameters": {"timeout": -5}}, ["timeout"]),
            ({"id": 12, "inputs": [ok]}, ["'id'"]),
            ({"inputs": [dict(ok, shape=[0, 3, 32, 32], data=[])]}, ["N"]),
            ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not*base64!"]}]},
             ["base64"]),
            ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, ["BYTES"]),
            ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["QUJD"]}]}, ["elements"]),
            ([1, 2, 3], ["object"]),
        ]
        for body, words in bad:
            with self.subTest(body=json.dumps(body)[:120]):
                self.assert_oip_error(self.infer(body), 400, "bad_request", words)
        for raw, words in ((b"", ["JSON"]), (b"{\"inputs\": [", ["JSON"]), (b"\xff\xfe", ["JSON"])):
            self.assert_oip_error(self.infer(raw), 400, None, words)
        # the id is echoed in errors too
        o = self.assert_oip_error(self.infer({"id": "mine", "inputs": []}), 400)
        self.assertEqual(o["id"], "mine")

    def test_binary_framing_errors(self):
        x1 = f32(tensor(1, 32, 32, 12))
        inp = fp32_input(1, 32, 32, binary=True)
        header = json.dumps({"inputs": [inp]}).encode()
        hl = str(len(header))
        cases = [
            (header + x1[:-4], hl, ["binary_data_size", "4"]),                      # underrun
            (header + x1 + b"\0\0\0\0", hl, ["binary_data_size"]),                   # overrun
            (header + x1, str(len(header) + len(x1) + 1), ["larger than the body"]),  # header past the body
            (header + x1, "12abc", ["Inference-Header-Content-Length"]),
            (header + x1, "-1", ["Inference-Header-Content-Length"]),
            (header + x1, "99999999999999999999", ["Inference-Header-Content-Length"]),
            (header + x1, "0", ["JSON header"]),
            (header + x1, str(len(header) - 3), ["JSON"]),
            (header + x1, None, ["JSON"]),  # binary bytes without the header length
        ]
        for body, ihcl, words in cases:
            h = {"Inference-Header-Content-Length": ihcl} if ihcl is not None else {}
            with self.subTest(ihcl=ihcl, size=len(body)):
                self.assert_oip_error(self.infer(body, headers=h), 400, None, words)
        # a tensor whose size does not match its shape
        big = dict(inp, parameters={"binary_data_size": len(x1) * 2})
        hb = json.dumps({"inputs": [big]}).encode()
        self.assert_oip_error(self.infer(hb + x1 + x1, headers={"Inference-Header-Content-Length": str(len(hb))}),
                              400, None, ["needs"])
        # a non-finite value
        nan = x1[:-4] + struct.pack("<f", float("inf"))
        self.assert_oip_error(self.infer(header + nan, headers={"Inference-Header-Content-Length": hl}),
                              400, None, ["finite"])
        # BYTES elements whose lengths overrun, underrun, overflow
        img = ts.png(3)
        for data in (struct.pack("<I", len(img) + 1) + img,
                     struct.pack("<I", len(img) - 1) + img,
                     struct.pack("<I", 0xFFFFFFFF) + img,
                     struct.pack("<I", len(img)) + img + b"\x01\x00",
                     b"\x01\x00"):
            hdr = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                          "parameters": {"binary_data_size": len(data)}}]}).encode()
            with self.subTest(data=data[:8]):
                self.assert_oip_error(self.infer(hdr + data, headers={"Inference-Header-Content-Length":
                                                                      str(len(hdr))}), 400, None, ["image"])
        # not an image: the /v1 error, in the protocol's shape
        junk = b"certainly not an image"
        hdr = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                      "parameters": {"binary_data_size": len(junk) + 4}}]}).encode()
        self.assert_oip_error(self.infer(hdr + bytes_elements([junk]),
                                         headers={"Inference-Header-Content-Length": str(len(hdr))}),
                              400, "unsupported_image")

    def test_http_level_errors(self):
        ok = {"inputs": [fp32_input(1, 32, 32, tensor(1, 32, 32, 13))]}
        self.assert_oip_error(self.infer(ok, path="/v2/models/nope/infer"), 404, "model_not_found")
        self.assert_oip_error(self.infer(ok, path="/v2/models/%s/versions/3/infer" % NAME), 404,
                              "version_not_found")
        self.assert_oip_error(self.infer(json.dumps(ok).encode(), headers={"Content-Encoding": "compress"}), 415)
        small = ts.Server("--max_body_bytes", "1000")
        try:
            r = small.request("POST", INFER, body=json.dumps(ok).encode())
            self.assert_oip_error(r, 413, "body_too_large")
        finally:
            self.assertEqual(small.stop(), 0)
        r = self.srv.request("OPTIONS", INFER, headers={"Origin": "https://x.example",
                                                        "Access-Control-Request-Method": "POST"})
        self.assertEqual(r.status, 204)
        self.assertIn("Inference-Header-Content-Length", r.header("Access-Control-Allow-Headers"))

    # -- compressed bodies (tritonclient's request_compression_algorithm)

    def test_gzip_and_deflate_bodies(self):
        import gzip
        import zlib
        n, h, w = 2, 64, 64
        x = tensor(n, h, w, 31)
        want = cli_logits(x, n, h, w)
        body, hdr = binary_body({"inputs": [fp32_input(n, h, w, binary=True)],
                                 "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}, f32(x))
        for enc, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)), ("GZIP", gzip.compress(body))):
            r = self.infer(data, headers=dict(hdr, **{"Content-Encoding": enc}))
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(split_answer(r)[1], want, enc)
        jb = json.dumps({"inputs": [fp32_input(1, 32, 32, tensor(1, 32, 32, 32))]}).encode()
        self.assertEqual(self.infer(gzip.compress(jb), headers={"Content-Encoding": "gzip"}).status, 200)
        # broken, truncated, trailing bytes, raw deflate without the zlib header
        z = gzip.compress(jb)
        for bad in (b"not gzip at all", z[:len(z) // 2], z + b"extra", zlib.compress(jb)[2:-4]):
            self.assert_oip_error(self.infer(bad, headers={"Content-Encoding": "gzip"}), 400, "bad_request",
                                  ["gzip"])
        # a bomb: 64 MB of zeros in 64 KB, past max_body_bytes (64 MiB here is the limit: use more)
        bomb = gzip.compress(b"\0" * (80 << 20), 9)
        self.assert_oip_error(self.infer(bomb, headers={"Content-Encoding": "gzip"}), 413, "body_too_large")
        self.assert_oip_error(self.infer(jb, headers={"Content-Encoding": "br"}), 415, "unsupported_media_type")

    # -- request ids

    def test_request_ids(self):
        ok = {"inputs": [fp32_input(1, 32, 32, tensor(1, 32, 32, 14))]}
        r = self.infer(json.dumps(ok).encode(), headers={"X-Request-ID": "trace-abc-123"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("X-Request-ID"), "trace-abc-123")
        r2 = self.infer(ok)
        gen = r2.header("X-Request-ID")
        self.assertRegex(gen, r"^[0-9a-f]{32}$")
        self.assertNotEqual(gen, self.infer(ok).header("X-Request-ID"))
        e = self.infer(json.dumps({"id": "e1"}).encode(), headers={"X-Request-ID": "trace-err-9"})
        o = self.assert_oip_error(e, 400)
        self.assertEqual((o["request_id"], o["id"]), ("trace-err-9", "e1"))
        v1 = self.srv.predict(b"junk", headers={"X-Request-ID": "trace-v1"})
        self.assertEqual(v1.header("X-Request-ID"), "trace-v1")
        self.assertEqual(v1.json()["error"]["request_id"], "trace-v1")
        # a value that cannot be logged as is is replaced, not echoed
        r3 = self.infer(json.dumps(ok).encode(), headers={"X-Request-ID": "x" * 200})
        self.assertRegex(r3.header("X-Request-ID"), r"^[0-9a-f]{32}$")
        deadline = time.time() + ts.TIMEOUT
        want = {"trace-abc-123", gen, "trace-err-9", "trace-v1"}
        while time.time() < deadline:
            ids = {e.get("request_id") for e in self.srv.log_events()}
            if want <= ids:
                break
            time.sleep(0.05)
        self.assertLessEqual(want, ids, "request ids missing from the access log")
        line = [e for e in self.srv.log_events() if e.get("request_id") == "trace-abc-123"][0]
        self.assertEqual((line["path"], line["status"], line["model"], line["version"]), (INFER, 200, NAME, "1"))

    # -- many clients, distinct tensors, each its own answer

    def test_concurrent_clients_get_their_own_logits(self):
        n_clients, h, w = 24, 64, 64
        xs = [tensor(1, h, w, 100 + i) for i in range(n_clients)]
        want = cli_logits([v for x in xs for v in x], n_clients, h, w)
        per = C * 4

        def client(i):
            if i % 2:
                body, hdr = binary_body({"inputs": [fp32_input(1, h, w, binary=True)],
                                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
                                        f32(xs[i]))
                r = self.infer(body, headers=hdr)
            else:
                r = self.infer({"inputs": [fp32_input(1, h, w, xs[i])], "outputs": [{"name": "logits"}]})
            return r.status, f32(outputs_of(r)["logits"][2]) if r.status == 200 else r.body

        results = ts.run_parallel(client, list(range(n_clients)))
        for i, res in enumerate(results):
            self.assertNotIsInstance(res, Exception, "client %d: %r" % (i, res))
            self.assertEqual(res[0], 200, res[1][:200])
            self.assertEqual(res[1], want[i * per:(i + 1) * per], "client %d got another tensor's logits" % i)
        fams = ts.parse_prometheus(self.srv.metrics())
        self.assertGreaterEqual(ts.sample(fams, "mobileformer_model_requests_total", model=NAME, version="1",
                                          status="200"), n_clients)
        self.assertGreaterEqual(ts.sample(fams, "mobileformer_requests_total", endpoint="infer", status="200"),
                                n_clients)

    # -- the repository's conformance client

    def test_conformance_client(self):
        p = subprocess.run([sys.executable, os.path.join(ts.REPO, "tools", "oip_conformance.py"),
                            "--url", "http://127.0.0.1:%d" % self.srv.port, "--model", NAME],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-2000:])
        self.assertIn("0 failed", p.stdout)
        print("\nREPORT " + p.stdout.strip().splitlines()[-1])


class DocExamplesTest(unittest.TestCase):
    """The curl examples of README.md and docs/protocol.md (between the
    oip-examples markers) run against the bundled model; the README's shown
    answer is the real one."""

    def test_examples_run(self):
        bundled = os.path.join(ts.REPO, "models", "fashion_mnist_mobileformer.safetensors")
        if not os.path.exists(bundled):
            self.fail("the bundled model is missing")
        srv = ts.Server(model=bundled)
        try:
            for doc in ("README.md", os.path.join("docs", "protocol.md")):
                with open(os.path.join(ts.REPO, doc)) as f:
                    text = f.read()
                m = re.search(r"<!-- oip-examples:begin[^>]*-->\n```sh\n(.*?)```\n(.*?)<!-- oip-examples:end -->",
                              text, re.S)
                self.assertIsNotNone(m, doc + " lacks its oip-examples block")
                script = m.group(1).replace("http://localhost:8080", "http://127.0.0.1:%d" % srv.port)
                with tempfile.TemporaryDirectory(dir=ts.TMP) as d:
                    script = script.replace("/tmp/", d + "/")
                    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ts.REPO,
                                       capture_output=True, text=True, timeout=120)
                self.assertEqual(p.returncode, 0, doc + ": " + p.stderr[-2000:])
                answers = [json.loads(x) for x in re.findall(r'\{"model_name".*?\]\}\]\}', p.stdout)]
                self.assertGreaterEqual(len(answers), 2 if doc == "README.md" else 1, p.stdout[-2000:])
                if doc == "README.md":
                    self.assertIn("HTTP/1.1 200 OK", p.stdout)
                    shown = re.search(r"```json\n(.*?)\n```", m.group(2), re.S)
                    self.assertEqual(answers[-1], json.loads(shown.group(1)), "README shows another answer")
        finally:
            self.assertEqual(srv.stop(), 0)


class SchedulePolicyTest(unittest.TestCase):
    """parameters.priority and parameters.timeout, on one worker (max_batch 1)
    that a flood of low-priority requests keeps busy: each flood request is 16
    small images (16 jobs), so the backlog is long and cheap for the clients."""

    def test_priority_beats_a_low_priority_flood_and_timeout_applies(self):
        srv = ts.Server("--workers", "1", "--max_batch", "1", "--max_delay_us", "0", "--max_queue", "1000",
                        "--http_threads", "2", model=ts.SLOW_MODEL, defaults=False)
        path = INFER.replace(NAME, "slow")
        try:
            img = ts.png(31)

            def body(n, priority=None, timeout=None):
                params = {}
                if priority is not None:
                    params["priority"] = priority
                if timeout is not None:
                    params["timeout"] = timeout
                el = bytes_elements([img] * n)
                return binary_body({"parameters": params,
                                    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [n],
                                                "parameters": {"binary_data_size": len(el)}}],
                                    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}, el)

            # how long one image takes here, alone
            b1, h1 = body(1)
            t0 = time.time()
            for _ in range(5):
                self.assertEqual(srv.request("POST", path, body=b1, headers=h1).status, 200)
            one = (time.time() - t0) / 5
            stop = threading.Event()
            low_lat, errors = [], []
            lb, lh = body(16, priority=5)

            def flood():
                conn = srv.connect()
                while not stop.is_set():
                    t = time.time()
                    r = srv.request("POST", path, body=lb, headers=lh, conn=conn)
                    if r.status != 200:
                        errors.append(r.status)
                    low_lat.append(time.time() - t)
                conn.close()

            threads = [threading.Thread(target=flood) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(max(0.5, 100 * one))  # about 96 low-priority jobs queued from now on
            hb, hh = body(1, priority=1)
            high_lat = []
            for _ in range(10):
                t = time.time()
                r = srv.request("POST", path, body=hb, headers=hh)
                self.assertEqual(r.status, 200)
                high_lat.append(time.time() - t)
                time.sleep(one)
            # a deadline shorter than the backlog ahead of it: 504 without running
            tb, th = body(1, priority=5, timeout=1000)  # 1 ms
            r = srv.request("POST", path, body=tb, headers=th)
            self.assertEqual(r.status, 504, r.body[:300])
            self.assertEqual(json.loads(r.body)["code"], "timeout")
            # a generous deadline changes nothing
            tb, th = body(1, priority=1, timeout=60 * 1000000)
            self.assertEqual(srv.request("POST", path, body=tb, headers=th).status, 200)
            stop.set()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            high = sorted(high_lat)[len(high_lat) // 2]
            low = sorted(low_lat)[len(low_lat) // 2]
            print("\nREPORT priority: one image alone %.1f ms; 6 clients flooding one worker with 16-image "
                  "low-priority requests: low p50 %.1f ms, high-priority p50 %.1f ms (%d high requests)"
                  % (one * 1000, low * 1000, high * 1000, len(high_lat)))
            self.assertLess(high, low / 3, "high priority waited like the low-priority backlog")
        finally:
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
