"""Black-box tests of $MF_BUILD/mobileformer-server over real sockets on loopback.

Every server is started with --port 0 --bind 127.0.0.1; the bound port is read
from its first JSON log line on stderr:
    {"time": ..., "level": "info", "msg": "listening", "port": N, ...}
(stderr goes to a file, so the request log can never block the server).

The model is made here: tools/make_reference.py writes a tiny Mobile-Former
with synthetic weights, and tools/mfformat.py rewrites it with a 64x64 input,
Fashion-MNIST labels and a steeper classifier (so top-1 margins are clear).
A second copy with a 224x224 input is the "slow" model for overload,
timeout and shutdown tests.

Covered (issue 3): every endpoint; every error with real malformed input
(truncated files, a JPEG header claiming 60000x60000, a 20 MiB body, random
bytes, wrong content types, broken multipart, bad top_k, unknown model);
API key on and off; CORS preflight; JPEG and PNG of one picture agree; the
answer equals `mobileformer predict` (SKIP while the CLI is absent); 64
concurrent clients each get their own image's answer and batches > 1 form;
a tiny max_queue gives 503 + Retry-After and nothing else breaks; queued too
long gives 504; SIGTERM under load lets in-flight requests finish, exit 0;
/metrics parses as Prometheus text; start-up refuses a missing or corrupt
model and bad settings.
"""
import http.client
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from PIL import Image, ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MF_BUILD", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
SERVER = os.path.join(BUILD, "mobileformer-server")
CLI = os.path.join(BUILD, "mobileformer")
IMAGES = os.path.join(REPO, "tests", "data", "images")
sys.path.insert(0, os.path.join(REPO, "tools"))

MODEL_NAME = "tiny_test"
MODEL_KEY = (("model", MODEL_NAME), ("version", "1"))  # a per-model histogram series
LABELS = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
          "bag", "ankle boot"]
TINY_ARCH = {"name": "tiny", "stem": 8, "tokens": 3, "token_dim": 16, "groups": 1,
             "classifier_width": 32, "last_exp": 6,
             "blocks": [["A", 2, 8, 2, 0], ["B3", 3, 16, 2, 2], ["B", 2, 16, 1, 2]]}
TIMEOUT = 60  # seconds for any single client operation; generous for a loaded machine

TMP = None
MODEL = None       # 64x64 input
SLOW_MODEL = None  # 224x224 input, same weights


def setUpModule():
    global TMP, MODEL, SLOW_MODEL
    if not os.access(SERVER, os.X_OK):
        raise RuntimeError("%s is not built (make test-bins)" % SERVER)
    TMP = tempfile.mkdtemp(prefix="mf_test_server_")
    ref = os.path.join(TMP, "ref")
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_reference.py"),
                    "--arch", json.dumps(TINY_ARCH), "--seed", "3", "--batch", "1",
                    "--size", "64", "64", "--num-classes", "10", "--no-intermediates",
                    "--out", ref], check=True, stdout=subprocess.DEVNULL, timeout=300)
    from mfformat import read_model, write_model
    tensors, meta = read_model(os.path.join(ref, "model.safetensors"))
    # steeper logits: clear top-1 margins, answers that differ image to image
    tensors["classifier.classifier.1.weight"] = tensors["classifier.classifier.1.weight"] * 25
    for name, size in ((MODEL_NAME, 64), ("slow", 224)):
        pre = {"input_size": [size, size], "resize": size, "interpolation": "bilinear",
               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channels": 3}
        write_model(os.path.join(TMP, name + ".safetensors"), tensors, meta["arch"], 10,
                    labels=LABELS, preprocess=pre)
    MODEL = os.path.join(TMP, MODEL_NAME + ".safetensors")
    SLOW_MODEL = os.path.join(TMP, "slow.safetensors")


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


# ---- images -----------------------------------------------------------------

def picture(seed, size=(96, 80)):
    """A distinct synthetic picture: background and a few shapes, all from seed."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(10, size[0]), y0 + rng.randrange(10, size[1])
        color = tuple(rng.randrange(256) for _ in range(3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=color)
    return img


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png(seed):
    return encode(picture(seed), "PNG")


def jpeg(seed, quality=95):
    return encode(picture(seed), "JPEG", quality=quality)


def huge_jpeg_header():
    """A valid small JPEG whose frame header claims 60000 x 60000 pixels."""
    data = bytearray(jpeg(1))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0:
            data[i + 5:i + 9] = (60000).to_bytes(2, "big") * 2  # height, width
            return bytes(data)
    raise AssertionError("no SOF marker")


def multipart(parts, boundary="----mfTestBoundary7MA4YWxk"):
    """parts: (field, filename, content_type, data) -> (content_type, body)."""
    out = io.BytesIO()
    for field, filename, ctype, data in parts:
        out.write(b"--" + boundary.encode() + b"\r\n")
        disp = 'form-data; name="%s"' % field
        if filename is not None:
            disp += '; filename="%s"' % filename
        out.write(("Content-Disposition: %s\r\n" % disp).encode())
        if ctype:
            out.write(("Content-Type: %s\r\n" % ctype).encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(b"--" + boundary.encode() + b"--\r\n")
    return "multipart/form-data; boundary=" + boundary, out.getvalue()


# ---- server and client --------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name)


class Server:
    """One mobileformer-server process on an ephemeral loopback port."""

    def __init__(self, *args, model=None, defaults=True, env=None):
        """model: a path, None for the test model, "" for the server's default;
        env: the server's environment (default: this one)."""
        self.log_path = tempfile.mktemp(prefix="server_", suffix=".log", dir=TMP)
        cmd = [SERVER, "--bind", "127.0.0.1", "--port", "0"]
        if model != "":
            cmd += ["--model", model or MODEL]
        if defaults:
            cmd += ["--workers", "2", "--http_threads", "2"]
        cmd += list(args)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO, env=env)
        self.port = None
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            for e in self.log_events():
                if e.get("msg") == "listening":
                    self.port = e["port"]
                    return
            if self.proc.poll() is not None:
                raise AssertionError("server exited with %d:\n%s" % (self.proc.returncode, self.log_text()))
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("server did not report its port:\n" + self.log_text())

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_events(self):
        out = []
        for line in self.log_text().split("\n")[:-1]:  # the last piece may be partial
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            if own:
                conn.close()

    def predict(self, data, ctype="image/png", query="", path="/v1/predict", headers=None, conn=None):
        h = {"Content-Type": ctype} if ctype else {}
        h.update(headers or {})
        return self.request("POST", path + query, body=data, headers=h, conn=conn)

    def metrics(self):
        r = self.request("GET", "/metrics")
        assert r.status == 200, r.status
        return r.body.decode("utf-8")

    def stop(self):
        """SIGTERM, wait, return the exit status (kill after TIMEOUT)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server ignored SIGTERM:\n" + self.log_text())
        return self.proc.returncode


def run_parallel(fn, items, threads=None):
    """fn(item) for every item, each on its own thread, released together."""
    results = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def one(i):
        barrier.wait()
        try:
            results[i] = fn(items[i])
        except Exception as e:  # recorded, asserted on by the caller
            results[i] = e

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(TIMEOUT * 2)
    return results


def probabilities(answer):
    return {p["index"]: p["probability"] for p in answer["predictions"]}


def same_probabilities(a, b, rel=1e-5):
    """Equal up to float32 rounding and JSON printing: compared relatively, so
    the tiny tail probabilities of a confident model still tell images apart."""
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rel * max(a[k], b[k]) + 1e-30 for k in a)


def log_distance(a, b):
    """Largest |log p - log q| over the classes of two full answers."""
    return max(abs(math.log(max(a[k], 1e-38)) - math.log(max(b[k], 1e-38))) for k in a)


# ---- Prometheus text format ---------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)?\})? (\S+)$" % (METRIC_NAME, LABEL, LABEL))
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_prometheus(text):
    """Strictly parse exposition format 0.0.4; returns {family: {type, help, samples}}."""
    families = {}
    assert text.endswith("\n"), "must end with a newline"
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name, rest = line[2:6], line.split(" ")[2], line.split(" ", 3)[3]
            assert re.match("^%s$" % METRIC_NAME, name), line
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert fam["type"] is None and not fam["samples"], "TYPE after samples: " + line
                fam["type"] = rest
            else:
                fam["help"] = rest
            continue
        assert not line.startswith("#") and line.strip() == line and line, "bad line %r" % line
        m = SAMPLE.match(line)
        assert m, "bad sample line %r" % line
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        v = float(value)  # raises on garbage; "+Inf"/"NaN" are valid floats here
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        fam = families.get(name) or families.get(base)
        assert fam is not None and fam["type"], "sample without TYPE: " + line
        fam["samples"].append((name, dict(LABEL_RE.findall(labels)), v))
    for name, fam in families.items():
        if fam["type"] != "histogram":
            continue
        series = {}
        for sname, labels, v in fam["samples"]:
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if sname.endswith("_bucket"):
                series[key]["buckets"].append((float(labels["le"]), v))
            elif sname.endswith("_sum"):
                series[key]["sum"] = v
            elif sname.endswith("_count"):
                series[key]["count"] = v
        for key, s in series.items():
            les = [le for le, _ in s["buckets"]]
            counts = [c for _, c in s["buckets"]]
            assert les == sorted(les) and les[-1] == math.inf, "%s %s: le order" % (name, key)
            assert counts == sorted(counts), "%s %s: buckets not cumulative" % (name, key)
            assert s["count"] == counts[-1] and s["sum"] is not None, "%s %s" % (name, key)
        fam["series"] = series
    return families


def sample(families, name, **labels):
    fam = families.get(re.sub(r"_(bucket|sum|count)$", "", name)) or families[name]
    for sname, l, v in fam["samples"]:
        if sname == name and all(l.get(k) == x for k, x in labels.items()):
            return v
    return None


# ---- the shared server --------------------------------------------------------

class SharedServerTest(unittest.TestCase):
    """Endpoints, validation and errors on one server (CORS on, no API key)."""

    ORIGIN = "https://app.example"

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--cors_origin", cls.ORIGIN, "--max_body_bytes", str(16 << 20))

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        assert rc == 0, "exit status %d" % rc

    def assert_error(self, r, status, code=None, oip=False):
        """The error answer's shape: /v1 {"error": {"code", "message"}}; the Open
        Inference Protocol's (oip) {"error": "<message>", "code"}.  Returns
        {"code", "message"} either way."""
        self.assertEqual(r.status, status, r.body[:300])
        self.assertTrue(r.header("Content-Type").startswith("application/json"))
        self.assertRegex(r.header("X-Request-ID") or "", r"^[0-9a-f]{32}$")
        if oip:
            o = r.json()
            self.assertIsInstance(o["error"], str, o)
            e = {"message": o["error"], "code": o["code"]}
        else:
            e = r.json()["error"]
        self.assertIsInstance(e["message"], str)
        self.assertTrue(e["message"])
        self.assertRegex(e["code"], r"^[a-z][a-z0-9_]*$")
        if code:
            self.assertEqual(e["code"], code, e["message"])
        return e

    def assert_prediction(self, r, top_k=5):
        self.assertEqual(r.status, 200, r.body[:300])
        a = r.json()
        self.assertEqual(a["model"], MODEL_NAME)
        preds = a["predictions"]
        self.assertEqual(len(preds), top_k)
        probs = [p["probability"] for p in preds]
        self.assertEqual(probs, sorted(probs, reverse=True))
        for p in preds:
            self.assertEqual(p["label"], LABELS[p["index"]])
            self.assertTrue(0 <= p["probability"] <= 1)
        for k in ("decode", "preprocess", "queue", "inference", "total"):
            self.assertGreaterEqual(a["latency_ms"][k], 0)
        self.assertGreaterEqual(a["latency_ms"]["total"], a["latency_ms"]["inference"])
        self.assertGreaterEqual(a["batch_size"], 1)
        return a

    # -- health and metadata

    def test_health(self):
        r = self.srv.request("GET", "/v2/health/live")
        self.assertEqual((r.status, r.json()), (200, {"status": "live"}))
        r = self.srv.request("GET", "/v2/health/ready")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["status"], "ready")
        r = self.srv.request("HEAD", "/v2/health/live")
        self.assertEqual((r.status, r.body), (200, b""))

    def test_model_metadata(self):
        r = self.srv.request("GET", "/v2/models/" + MODEL_NAME)
        self.assertEqual(r.status, 200)
        m = r.json()
        self.assertEqual(m["name"], MODEL_NAME)
        self.assertEqual(m["num_classes"], 10)
        self.assertEqual(m["labels_count"], 10)
        self.assertEqual(m["labels"], LABELS)
        self.assertEqual(m["input_size"], [64, 64])
        self.assertEqual(m["preprocess"]["resize"], 64)
        self.assertEqual(m["architecture"]["blocks"], TINY_ARCH["blocks"])
        r = self.srv.request("GET", "/v2/models/%s/ready" % MODEL_NAME)
        self.assertEqual((r.status, r.json()["ready"]), (200, True))
        self.assertEqual(m["versions"], ["1"])
        self.assert_error(self.srv.request("GET", "/v2/models/resnet50"), 404, "model_not_found", oip=True)
        self.assert_error(self.srv.request("GET", "/v2/models/resnet50/ready"), 404, "model_not_found", oip=True)
        self.assert_error(self.srv.request("GET", "/v2/models/%s/versions/2" % MODEL_NAME), 404,
                          "version_not_found", oip=True)

    # -- predict, every way of sending an image

    def test_predict_content_types(self):
        img = picture(11)
        png_bytes, jpg_bytes = encode(img, "PNG"), encode(img, "JPEG", quality=95)
        ref = self.assert_prediction(self.srv.predict(png_bytes))
        for data, ctype in ((png_bytes, "application/octet-stream"), (png_bytes, None),
                            (png_bytes, "image/png; charset=binary"), (png_bytes, "IMAGE/PNG")):
            a = self.assert_prediction(self.srv.predict(data, ctype=ctype))
            self.assertTrue(same_probabilities(probabilities(a), probabilities(ref)))
        for ctype in ("image/jpeg", "application/octet-stream", "image/jpg"):
            self.assert_prediction(self.srv.predict(jpg_bytes, ctype=ctype))
        a = self.assert_prediction(self.srv.predict(png_bytes, path="/v1/models/%s/predict" % MODEL_NAME))
        self.assertTrue(same_probabilities(probabilities(a), probabilities(ref)))

    def test_jpeg_and_png_of_one_picture_agree(self):
        # pick the picture with the clearest top-1 margin, then require agreement
        best = None
        for seed in range(100, 108):
            a = self.srv.predict(png(seed), query="?top_k=2").json()["predictions"]
            margin = a[0]["probability"] - a[1]["probability"]
            if best is None or margin > best[0]:
                best = (margin, seed, a[0]["index"])
        margin, seed, top1 = best
        self.assertGreater(margin, 0.05, "synthetic model gives no clear top-1")
        for q in (95, 90):
            a = self.srv.predict(jpeg(seed, q), ctype="image/jpeg").json()
            self.assertEqual(a["predictions"][0]["index"], top1, "JPEG q=%d vs PNG" % q)

    def test_decoder_variants(self):
        names = ["base.jpg", "base_gray.jpg", "base_cmyk.jpg", "base_progressive.jpg", "exif_6.jpg",
                 "png_gray16.png", "png_palette.png", "png_rgba.png", "png_la16.png"]
        present = [n for n in names if os.path.exists(os.path.join(IMAGES, n))]
        if not present:
            print("SKIP test_decoder_variants: tests/data/images not present")
            self.skipTest("no test images")
        for n in present:
            with open(os.path.join(IMAGES, n), "rb") as f:
                self.assert_prediction(self.srv.predict(f.read(), ctype="application/octet-stream"))

    def test_multipart(self):
        imgs = [png(21), jpeg(22), png(23)]
        singles = [probabilities(self.srv.predict(d, ctype="application/octet-stream",
                                                  query="?top_k=10").json()) for d in imgs]
        ctype, body = multipart([("image", "a.png", "image/png", imgs[0]),
                                 ("comment", None, None, b"not an image"),
                                 ("image", "b.jpg", "image/jpeg", imgs[1]),
                                 ("image", "c.png", None, imgs[2])])
        r = self.srv.predict(body, ctype=ctype, query="?top_k=10")
        self.assertEqual(r.status, 200, r.body)
        a = r.json()
        self.assertEqual(a["model"], MODEL_NAME)
        self.assertEqual(len(a["results"]), 3)
        for res, ref in zip(a["results"], singles):  # answered in order
            self.assertTrue(same_probabilities(probabilities(res), ref))
            self.assertGreaterEqual(res["batch_size"], 1)
            self.assertIn("queue", res["latency_ms"])
        # one image part: the single-image answer shape
        ctype, body = multipart([("image", "a.png", "image/png", imgs[0])],
                                boundary="quoted boundary")
        ctype = 'multipart/form-data; boundary="quoted boundary"'
        a = self.assert_prediction(self.srv.predict(body, ctype=ctype))
        self.assertNotIn("results", a)

    def test_top_k(self):
        data = png(31)
        self.assert_prediction(self.srv.predict(data), top_k=5)
        self.assert_prediction(self.srv.predict(data, query="?top_k=1"), top_k=1)
        self.assert_prediction(self.srv.predict(data, query="?top_k=10"), top_k=10)
        self.assert_prediction(self.srv.predict(data, query="?top_k=1000"), top_k=10)
        self.assert_prediction(self.srv.predict(data, query="?top_k=99999999999999999999999"), top_k=10)
        a = self.srv.predict(data, query="?top_k=10").json()
        self.assertAlmostEqual(sum(p["probability"] for p in a["predictions"]), 1.0, places=5)
        for bad in ("0", "-1", "abc", "", "1.5", "3x", "%203", "+2", "0x5", "%00"):
            self.assert_error(self.srv.predict(data, query="?top_k=" + bad), 400, "bad_top_k")
        self.assert_error(self.srv.predict(data, query="?top_k"), 400, "bad_top_k")

    def test_keep_alive_connection(self):
        conn = self.srv.connect()
        try:
            for seed in (41, 42, 43):
                self.assert_prediction(self.srv.predict(png(seed), conn=conn))
            self.assertEqual(self.srv.request("GET", "/v2/health/live", conn=conn).status, 200)
        finally:
            conn.close()

    # -- bad input: every error, then the server must still be fine

    def tearDown(self):
        self.assertEqual(self.srv.request("GET", "/v2/health/live").status, 200)

    def test_bad_images(self):
        good_png, good_jpg = png(51), jpeg(51)
        self.assert_error(self.srv.predict(b""), 400, "empty_body")
        self.assert_error(self.srv.predict(os.urandom(5000), ctype="application/octet-stream"),
                          400, "unsupported_image")
        self.assert_error(self.srv.predict(b"XYZW" + os.urandom(100), ctype="image/png"), 400, "unsupported_image")
        self.assert_error(self.srv.predict(b"GIF89a\x04\x00\x04\x00" + os.urandom(100), ctype="image/gif"), 400)
        e = self.assert_error(self.srv.predict(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)), 415,
                              "unsupported_media_type")
        self.assertIn("HEIC", e["message"])
        for data, ctype in ((good_png, "image/png"), (good_jpg, "image/jpeg")):
            for frac in (0.05, 0.3, 0.6, 0.9):
                cut = data[:max(2, int(len(data) * frac))]
                self.assert_error(self.srv.predict(cut, ctype=ctype), 400)
        corrupt = bytearray(good_png)
        corrupt[len(corrupt) // 2] ^= 0xFF  # CRC mismatch
        self.assert_error(self.srv.predict(bytes(corrupt)), 400, "corrupt_image")
        for n in ("trunc.jpg", "trunc.png", "zero.jpg", "zero.png", "random_jpeg.jpg", "random_png.png"):
            p = os.path.join(IMAGES, n)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    self.assert_error(self.srv.predict(f.read(), ctype="application/octet-stream"), 400)

    def test_decompression_bomb_header(self):
        e = self.assert_error(self.srv.predict(huge_jpeg_header(), ctype="image/jpeg"), 413,
                              "image_too_large")
        self.assertIn("60000", e["message"])
        p = os.path.join(IMAGES, "huge.png")
        if os.path.exists(p):
            with open(p, "rb") as f:
                self.assert_error(self.srv.predict(f.read()), 413, "image_too_large")

    def test_body_over_limit_refused_before_reading(self):
        # headers only, Expect: 100-continue: the answer must come without the body
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=TIMEOUT)
        try:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                      b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (20 << 20))
            resp = http.client.HTTPResponse(s)
            resp.begin()
            self.assertEqual(resp.status, 413)
            self.assertEqual(json.loads(resp.read())["error"]["code"], "body_too_large")
        finally:
            s.close()
        # a client that just sends 20 MiB: 413 or, if the server closed first, a reset
        try:
            r = self.srv.predict(b"\0" * (20 << 20))
            self.assert_error(r, 413, "body_too_large")
        except (BrokenPipeError, ConnectionResetError):
            pass
        # chunked (no Content-Length): refused once the limit is passed
        conn = self.srv.connect()
        try:
            conn.putrequest("POST", "/v1/predict")
            conn.putheader("Content-Type", "image/png")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            chunk = b"\0" * (1 << 20)
            try:
                for _ in range(20):
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
                r = conn.getresponse()
                self.assertEqual(r.status, 413)
                self.assertEqual(json.loads(r.read())["error"]["code"], "body_too_large")
            except (BrokenPipeError, ConnectionResetError):
                pass
        finally:
            conn.close()

    def test_unsupported_content_types(self):
        for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded",
                      "image/heic", "image/avif", "image/bmp", "multipart/mixed; boundary=x"):
            self.assert_error(self.srv.predict(png(61), ctype=ctype), 415, "unsupported_media_type")

    def test_broken_multipart(self):
        data = png(71)
        ctype, body = multipart([("image", "a.png", "image/png", data)])
        self.assert_error(self.srv.predict(body, ctype="multipart/form-data"), 400,
                          "multipart_no_boundary")
        self.assert_error(self.srv.predict(body, ctype="multipart/form-data; boundary="), 400,
                          "multipart_no_boundary")
        self.assert_error(self.srv.predict(body[:-30], ctype=ctype), 400, "multipart_truncated")
        self.assert_error(self.srv.predict(b"garbage" * 10, ctype=ctype), 400, "multipart_no_delimiter")
        # no body at all (found by tests/fuzz/fuzz_http.c: the parser got NULL + 0)
        self.assert_error(self.srv.predict(b"", ctype=ctype), 400, "multipart_no_delimiter")
        self.assert_error(self.srv.request("POST", "/v1/predict", headers={"Content-Type": ctype}), 400,
                          "multipart_no_delimiter")
        self.assert_error(self.srv.predict(body.replace(b"\r\n", b"\n"), ctype=ctype), 400)
        no_image_ct, no_image = multipart([("file", "a.png", "image/png", data)])
        self.assert_error(self.srv.predict(no_image, ctype=no_image_ct), 400, "multipart_no_image")
        bad_ct, bad = multipart([("image", "a.png", "image/png", b"not an image at all")])
        e = self.assert_error(self.srv.predict(bad, ctype=bad_ct), 400, "unsupported_image")
        many_ct, many = multipart([("image", None, None, data)] * 40)
        self.assert_error(self.srv.predict(many, ctype=many_ct), 400, "multipart_too_many_parts")
        mixed_ct, mixed = multipart([("image", None, None, data), ("image", None, None, b"\xff\xd8\xff")])
        e = self.assert_error(self.srv.predict(mixed, ctype=mixed_ct), 400)
        self.assertIn("image 2", e["message"])

    def test_routing_errors(self):
        self.assert_error(self.srv.request("GET", "/v3"), 404, "not_found")  # "/" is the page
        self.assert_error(self.srv.request("GET", "/v2/health/live/"), 404, "not_found", oip=True)
        self.assert_error(self.srv.request("POST", "/v1/predictions", body=b"x"), 404, "not_found")
        r = self.srv.request("GET", "/v1/predict")
        self.assert_error(r, 405, "method_not_allowed")
        self.assertIn("POST", r.header("Allow"))
        self.assert_error(self.srv.request("POST", "/v2/health/live", body=b""), 405, oip=True)
        self.assert_error(self.srv.request("DELETE", "/metrics"), 405)
        self.assert_error(self.srv.request("PUT", "/v1/predict", body=b"x"), 405)
        self.assert_error(self.srv.predict(png(81), path="/v1/models/other/predict"), 404,
                          "model_not_found")

    def test_cors(self):
        r = self.srv.request("OPTIONS", "/v1/predict", headers={
            "Origin": self.ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
        self.assertEqual(r.status, 204)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), self.ORIGIN)
        self.assertIn("POST", r.header("Access-Control-Allow-Methods"))
        self.assertIn("Authorization", r.header("Access-Control-Allow-Headers"))
        self.assertIn("Content-Type", r.header("Access-Control-Allow-Headers"))
        self.assertEqual(r.body, b"")
        r = self.srv.predict(png(91), headers={"Origin": self.ORIGIN})
        self.assertEqual(r.header("Access-Control-Allow-Origin"), self.ORIGIN)
        r = self.srv.request("GET", "/nope")
        self.assertEqual(r.header("Access-Control-Allow-Origin"), self.ORIGIN)

    def test_metrics(self):
        self.srv.predict(png(101))
        self.srv.request("GET", "/nope")
        r = self.srv.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("Content-Type").startswith("text/plain; version=0.0.4"))
        fams = parse_prometheus(r.body.decode("utf-8"))
        types = {"mobileformer_requests_total": "counter",
                 "mobileformer_request_duration_seconds": "histogram",
                 "mobileformer_decode_seconds": "histogram",
                 "mobileformer_preprocess_seconds": "histogram",
                 "mobileformer_queue_seconds": "histogram",
                 "mobileformer_inference_seconds": "histogram",
                 "mobileformer_batch_size": "histogram",
                 "mobileformer_queue_depth": "gauge",
                 "mobileformer_inflight_requests": "gauge",
                 "mobileformer_model_info": "gauge",
                 "process_start_time_seconds": "gauge"}
        for name, t in types.items():
            self.assertEqual(fams[name]["type"], t, name)
            self.assertTrue(fams[name]["help"], name)
        self.assertGreaterEqual(sample(fams, "mobileformer_requests_total", endpoint="predict",
                                       status="200"), 1)
        self.assertGreaterEqual(sample(fams, "mobileformer_requests_total", endpoint="other",
                                       status="404"), 1)
        info = fams["mobileformer_model_info"]["samples"][0]
        self.assertEqual(info[1], {"model": MODEL_NAME, "version": "1", "arch": "tiny", "num_classes": "10",
                                   "input_size": "64x64"})
        self.assertEqual(info[2], 1)
        self.assertEqual(sample(fams, "mobileformer_model_state", model=MODEL_NAME, version="1", state="READY"), 1)
        les = [le for le, _ in fams["mobileformer_batch_size"]["series"][MODEL_KEY]["buckets"]]
        self.assertEqual(les, [1, 2, 4, 8, 16, 32, 64, math.inf])
        self.assertGreaterEqual(sample(fams, "mobileformer_inflight_requests"), 1)  # this one

    def test_request_log(self):
        self.srv.predict(png(111), query="?top_k=2")
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            lines = [e for e in self.srv.log_events() if e.get("path") == "/v1/predict"]
            if lines:
                break
            time.sleep(0.05)
        e = lines[-1]
        for k in ("time", "method", "path", "status", "bytes_in", "bytes_out", "latency_ms",
                  "batch_size", "remote"):
            self.assertIn(k, e)
        self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(e["remote"], "127.0.0.1")
        self.assertEqual(e["method"], "POST")


class ApiKeyTest(unittest.TestCase):
    def test_api_key(self):
        srv = Server("--api_key", "s3cret-key")
        try:
            data = png(201)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"},
                            {"Authorization": "Bearer s3cret-ke"}, {"Authorization": "Bearer s3cret-key2"},
                            {"Authorization": "Basic czNjcmV0LWtleQ=="}):
                r = srv.predict(data, headers=headers)
                self.assertEqual(r.status, 401, headers)
                self.assertEqual(r.json()["error"]["code"], "unauthorized")
                self.assertIn("Bearer", r.header("WWW-Authenticate"))
            ok = {"Authorization": "Bearer s3cret-key"}
            self.assertEqual(srv.predict(data, headers=ok).status, 200)
            self.assertEqual(srv.predict(data, headers={"Authorization": "bearer s3cret-key"}).status, 200)
            self.assertEqual(srv.request("GET", "/v2/models/" + MODEL_NAME).status, 401)
            self.assertEqual(srv.request("GET", "/v2/models/%s/ready" % MODEL_NAME).status, 401)
            self.assertEqual(srv.request("GET", "/v2/models/" + MODEL_NAME, headers=ok).status, 200)
            # health stays open; unknown model names are not revealed without the key
            self.assertEqual(srv.request("GET", "/v2/health/live").status, 200)
            self.assertEqual(srv.request("GET", "/v2/health/ready").status, 200)
            self.assertEqual(srv.request("GET", "/v2/models/guess").status, 401)
            self.assertEqual(srv.request("OPTIONS", "/v1/predict").status, 204)
            # no CORS configured here: no CORS headers
            self.assertIsNone(srv.request("GET", "/v2/health/live").header("Access-Control-Allow-Origin"))
        finally:
            self.assertEqual(srv.stop(), 0)


class CliAgreementTest(unittest.TestCase):
    def test_answer_equals_cli_predict(self):
        if not os.access(CLI, os.X_OK):
            print("SKIP test_answer_equals_cli_predict: %s not built" % CLI)
            self.skipTest("no CLI")
        files = []
        for i, data in enumerate((png(301), jpeg(302), png(303))):
            p = os.path.join(TMP, "cli_%d.%s" % (i, "jpg" if i == 1 else "png"))
            with open(p, "wb") as f:
                f.write(data)
            files.append(p)
        files += [os.path.join(IMAGES, n) for n in ("photo.jpg", "exif_6.jpg", "png_gray16.png")
                  if os.path.exists(os.path.join(IMAGES, n))]
        out = subprocess.run([CLI, "predict", "--model", MODEL, "--top-k", "10"] + files,
                             capture_output=True, timeout=TIMEOUT, check=True).stdout.decode()
        cli = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.assertEqual(len(cli), len(files))
        srv = Server()
        try:
            for path, c in zip(files, cli):
                with open(path, "rb") as f:
                    a = srv.predict(f.read(), ctype="application/octet-stream", query="?top_k=10").json()
                self.assertEqual([p["index"] for p in a["predictions"]],
                                 [p["index"] for p in c["predictions"]], path)
                self.assertTrue(same_probabilities(probabilities(a), probabilities(c)), path)
                self.assertEqual([p["label"] for p in a["predictions"]],
                                 [p["label"] for p in c["predictions"]])
        finally:
            self.assertEqual(srv.stop(), 0)


class ConcurrencyTest(unittest.TestCase):
    def test_64_clients_each_get_their_own_answer(self):
        # a 10 ms batching window makes batches form even on a loaded machine
        srv = Server("--max_delay_us", "10000", "--log_requests", "false")
        try:
            images = [png(1000 + i) for i in range(64)]
            refs = [probabilities(srv.predict(d, query="?top_k=10").json()) for d in images]
            closest = min(log_distance(refs[i], refs[j]) for i in range(64) for j in range(i))
            self.assertGreater(closest, 0.01, "test images must give distinct answers")

            def client(i):
                r = srv.predict(images[i], query="?top_k=10")
                return r.status, (r.json() if r.status == 200 else r.body)

            results = run_parallel(client, list(range(64)))
            batch_sizes = []
            for i, res in enumerate(results):
                self.assertNotIsInstance(res, Exception, "client %d: %r" % (i, res))
                status, a = res
                self.assertEqual(status, 200, "client %d: %r" % (i, a))
                self.assertTrue(same_probabilities(probabilities(a), refs[i]),
                                "client %d got another image's answer" % i)
                batch_sizes.append(a["batch_size"])
            self.assertGreater(max(batch_sizes), 1)
            fams = parse_prometheus(srv.metrics())
            bs = fams["mobileformer_batch_size"]["series"][MODEL_KEY]
            self.assertLess(bs["buckets"][0][1], bs["count"], "metrics show no batch > 1")
            self.assertEqual(sample(fams, "mobileformer_requests_total", endpoint="predict",
                                    status="200"), 128)
            self.assertEqual(sample(fams, "mobileformer_queue_depth", model=MODEL_NAME, version="1"), 0)
        finally:
            self.assertEqual(srv.stop(), 0)


class OverloadTest(unittest.TestCase):
    def test_tiny_queue_gives_503_and_nothing_else_breaks(self):
        srv = Server("--max_queue", "1", "--workers", "1", "--max_batch", "1", "--max_delay_us", "0",
                     "--log_requests", "false", model=SLOW_MODEL)
        try:
            # all-or-nothing: three images never fit a queue of one
            ctype, body = multipart([("image", None, None, png(1))] * 3)
            r = srv.predict(body, ctype=ctype)
            self.assertEqual(r.status, 503)
            self.assertEqual(r.json()["error"]["code"], "queue_full")
            self.assertIsNotNone(r.header("Retry-After"))

            images = [png(2000 + i) for i in range(48)]

            def client(i):
                r = srv.predict(images[i], query="?top_k=10")
                return r.status, r.header("Retry-After"), r.json()

            # a burst of 48 overflows a queue of one nearly always; when the
            # clients happen to trickle in (1 run in ~20 here), another burst
            statuses = {}
            results = []
            for _ in range(3):
                burst = run_parallel(client, list(range(48)))
                results += burst
                if any(not isinstance(x, Exception) and x[0] == 503 for x in burst):
                    break
            ok = []
            for i, res in enumerate(results):
                i %= 48
                self.assertNotIsInstance(res, Exception, "client %d: %r" % (i, res))
                status, retry, a = res
                statuses[status] = statuses.get(status, 0) + 1
                self.assertIn(status, (200, 503), a)
                if status == 503:
                    self.assertEqual(a["error"]["code"], "queue_full")
                    self.assertIsNotNone(retry)
                else:
                    ok.append((i, a))
            self.assertGreater(statuses.get(503, 0), 0, statuses)
            self.assertGreater(statuses.get(200, 0), 0, statuses)
            for i, a in ok[:5]:  # the ones that got through are still right
                ref = srv.predict(images[i], query="?top_k=10").json()
                self.assertTrue(same_probabilities(probabilities(a), probabilities(ref)))
            self.assertEqual(srv.request("GET", "/v2/health/ready").status, 200)
            self.assertEqual(srv.predict(png(3000)).status, 200)
            fams = parse_prometheus(srv.metrics())
            self.assertEqual(sample(fams, "mobileformer_requests_total", endpoint="predict",
                                    status="503"), statuses[503] + 1)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_queued_too_long_gives_504(self):
        srv = Server("--request_timeout_ms", "1", "--workers", "1", "--max_batch", "1",
                     "--max_delay_us", "0", "--log_requests", "false", model=SLOW_MODEL)
        try:
            images = [png(4000 + i) for i in range(24)]
            # 16 images in one request are queued together: with one worker taking one at a
            # time, the last ones wait far longer than 1 ms, whatever the machine's load
            ctype, body = multipart([("image", "%d.png" % i, "image/png", images[i]) for i in range(16)])
            r = srv.predict(body, ctype=ctype)
            self.assertEqual(r.status, 504, r.body)
            self.assertEqual(r.json()["error"]["code"], "timeout")
            self.assertRegex(r.json()["error"]["message"], r"^image \d+: not started within")
            # separate clients: each gets an answer of its own, 200 or 504 (how many wait
            # too long depends on how their arrivals happen to interleave)
            results = run_parallel(lambda i: srv.predict(images[i]), list(range(24)))
            for r in results:
                self.assertNotIsInstance(r, Exception)
                self.assertIn(r.status, (200, 504), r.body)
                if r.status == 504:
                    self.assertEqual(r.json()["error"]["code"], "timeout")
            fams = parse_prometheus(srv.metrics())
            self.assertGreaterEqual(sample(fams, "mobileformer_requests_total", endpoint="predict",
                                           status="504"), 1)
            self.assertEqual(srv.request("GET", "/v2/health/live").status, 200)
        finally:
            self.assertEqual(srv.stop(), 0)


def read_http_response(sock):
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.getheader("Connection"), resp.read()


class ShutdownTest(unittest.TestCase):
    def test_connections_queued_at_sigterm_are_answered(self):
        """Connections the kernel has accepted but the server has not (its only
        HTTP thread is busy parsing a large JSON body) when SIGTERM comes are
        served, not reset: the listener is closed only after the loops took
        its backlog."""
        srv = Server("--http_threads", "1", "--workers", "1", "--max_body_bytes", str(64 << 20), defaults=False)
        try:
            # an Open Inference Protocol tensor as 786,432 JSON numbers: parsed
            # on the HTTP thread that received it, for a few hundred ms
            vals = ",".join("%.3f" % ((i % 997) / 997.0) for i in range(3 * 512 * 512))
            data = ('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,512,512],"data":[%s]}],'
                    '"outputs":[{"name":"logits"}]}' % vals).encode()
            path = "/v2/models/%s/infer" % MODEL_NAME
            t0 = time.time()
            self.assertEqual(srv.request("POST", path, body=data).status, 200)
            busy = time.time() - t0
            slow = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
            slow.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                         % (path.encode(), len(data)) + data)
            time.sleep(min(0.05, busy / 4))  # the HTTP thread is decoding now
            queued = []
            for i in range(8):
                c = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
                c.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
                queued.append(c)
            srv.proc.send_signal(signal.SIGTERM)
            outcomes = []
            for c in queued + [slow]:
                try:
                    status, conn_hdr, _ = read_http_response(c)
                    outcomes.append((status, conn_hdr))
                except (ConnectionError, OSError, http.client.HTTPException) as e:
                    outcomes.append(repr(e))
                c.close()
            print("\nREPORT drain: one large JSON request keeps the only HTTP thread busy %.0f ms; 8 connections queued "
                  "behind it at SIGTERM: %r" % (busy * 1000, sorted(set(map(str, outcomes)))))
            self.assertEqual(outcomes[:8], [(200, "close")] * 8, "queued connections were reset")
            self.assertEqual(outcomes[8][0], 200)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_sigterm_under_load_finishes_in_flight_requests(self):
        srv = Server("--workers", "1", "--max_batch", "4", model=SLOW_MODEL)
        stop_load = threading.Event()
        load_outcomes = []

        def load():
            # background clients; after SIGTERM they may see 503 or a refused connection
            i = 0
            while not stop_load.is_set():
                i += 1
                try:
                    r = srv.predict(png(5000 + i % 7))
                    load_outcomes.append(r.status)
                    if r.status == 503:
                        self.assertEqual(r.json()["error"]["code"], "shutting_down")
                except (ConnectionError, OSError):
                    load_outcomes.append("conn")
                    time.sleep(0.01)

        loaders = [threading.Thread(target=load) for _ in range(4)]
        socks = []
        try:
            for t in loaders:
                t.start()
            body = png(6000)
            half = len(body) // 2
            for _ in range(8):  # 8 requests in flight: headers and half of the body sent
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
                s.sendall(b"POST /v1/predict?top_k=3 HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body[:half])
                socks.append(s)
            deadline = time.time() + TIMEOUT
            while time.time() < deadline:
                fams = parse_prometheus(srv.metrics())
                if sample(fams, "mobileformer_inflight_requests") >= 9:  # 8 + this scrape
                    break
                time.sleep(0.01)
            else:
                self.fail("the 8 partial requests never showed as in flight")
            srv.proc.send_signal(signal.SIGTERM)
            deadline = time.time() + TIMEOUT
            while time.time() < deadline:  # new connections are refused once draining
                try:
                    socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                    time.sleep(0.01)
                except (ConnectionRefusedError, ConnectionResetError):
                    # refused; or reset: accepted into the backlog just as the listening socket closed
                    break
            else:
                self.fail("still accepting connections after SIGTERM")
            self.assertIsNone(srv.proc.poll(), "exited with requests in flight")
            for s in socks:
                s.sendall(body[half:])
            for s in socks:
                status, connection, raw = read_http_response(s)
                self.assertEqual(status, 200, raw)
                self.assertEqual(len(json.loads(raw)["predictions"]), 3)
                self.assertEqual((connection or "").lower(), "close")
            self.assertEqual(srv.proc.wait(TIMEOUT), 0, srv.log_text()[-2000:])
        finally:
            stop_load.set()
            for t in loaders:
                t.join(TIMEOUT)
            for s in socks:
                s.close()
            if srv.proc.poll() is None:
                srv.proc.kill()
        self.assertIn(200, load_outcomes)
        for o in load_outcomes:
            self.assertIn(o, (200, 503, "conn"))
        events = [e.get("msg") for e in srv.log_events()]
        self.assertIn("draining", events)
        stopped = [e for e in srv.log_events() if e.get("msg") == "stopped"][0]
        self.assertEqual(stopped["unfinished"], 0)


    def test_sigterm_serves_requests_on_open_keep_alive_connections(self):
        # a request on a connection opened before SIGTERM is served (with
        # Connection: close), not refused with 503: rolling restarts lose nothing
        srv = Server("--workers", "1", "--drain_timeout_ms", "30000")
        s = None
        try:
            ka = srv.connect()
            self.assertEqual(srv.predict(png(6100), conn=ka).status, 200)
            # the server counts a request until libmicrohttpd reports it complete, which can be
            # just after the client has read the answer: wait until only the scrape itself counts,
            # so that the 2 awaited below are the scrape and the partial request
            deadline = time.time() + TIMEOUT
            while sample(parse_prometheus(srv.metrics()), "mobileformer_inflight_requests") > 1:
                self.assertLess(time.time(), deadline, "the first request never completed")
                time.sleep(0.01)
            body = png(6101)
            half = len(body) // 2
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:half])
            deadline = time.time() + TIMEOUT
            while sample(parse_prometheus(srv.metrics()), "mobileformer_inflight_requests") < 2:
                self.assertLess(time.time(), deadline, "the partial request never showed")
                time.sleep(0.01)
            srv.proc.send_signal(signal.SIGTERM)
            deadline = time.time() + TIMEOUT
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                    time.sleep(0.01)
                except (ConnectionRefusedError, ConnectionResetError):
                    # refused; or reset: accepted into the backlog just as the listening socket closed
                    break
            r = srv.predict(png(6102), conn=ka)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual((r.header("Connection") or "").lower(), "close")
            self.assertIsNone(srv.proc.poll())
            s.sendall(body[half:])
            status, connection, raw = read_http_response(s)
            self.assertEqual(status, 200, raw)
            self.assertEqual(srv.proc.wait(TIMEOUT), 0, srv.log_text()[-2000:])
        finally:
            if s:
                s.close()
            if srv.proc.poll() is None:
                srv.proc.kill()


    def test_sigterm_with_open_connections_exits_0_every_time(self):
        # libmicrohttpd 0.9.75 with epoll could abort on SIGTERM (its quiesce raced its own
        # workers: "Failed to remove listen FD from epoll set", about one stop in 30 under
        # load). The server uses poll() for that reason; this repeats the stop to keep it so.
        for i in range(25):
            srv = Server("--workers", "1")
            conns = []
            try:
                conns = [socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
                         for _ in range(4)]
                self.assertEqual(srv.predict(png(6200 + i)).status, 200)
                srv.proc.send_signal(signal.SIGTERM)
                deadline = time.time() + TIMEOUT
                while time.time() < deadline:  # connect until the listening socket has gone
                    try:
                        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                    except OSError:
                        break
                for c in conns:
                    c.close()
                self.assertEqual(srv.proc.wait(TIMEOUT), 0, "stop %d:\n%s" % (i, srv.log_text()[-2000:]))
                self.assertNotIn("Fatal error", srv.log_text())
            finally:
                for c in conns:
                    c.close()
                if srv.proc.poll() is None:
                    srv.proc.kill()


class BundledModelTest(unittest.TestCase):
    def test_default_settings_serve_the_bundled_model(self):
        path = os.path.join(REPO, "models", "fashion_mnist_mobileformer.safetensors")
        if not os.path.exists(path):
            print("SKIP test_default_settings_serve_the_bundled_model: %s not present" % path)
            self.skipTest("no bundled model")
        srv = Server(model="")
        try:
            meta = srv.request("GET", "/v2/models/fashion_mnist_mobileformer")
            self.assertEqual(meta.status, 200)
            m = meta.json()
            r = srv.predict(encode(picture(7, (28, 28)).convert("L"), "PNG"), query="?top_k=3")
            self.assertEqual(r.status, 200, r.body)
            a = r.json()
            self.assertEqual(a["model"], "fashion_mnist_mobileformer")
            self.assertEqual(len(a["predictions"]), 3)
            for p in a["predictions"]:
                self.assertEqual(p["label"], m["labels"][p["index"]])
        finally:
            self.assertEqual(srv.stop(), 0)


class StartupTest(unittest.TestCase):
    def run_server(self, *args, env=None):
        r = subprocess.run([SERVER, "--bind", "127.0.0.1", "--port", "0"] + list(args),
                           capture_output=True, timeout=TIMEOUT, env=env)
        self.assertNotIn(b"Sanitizer", r.stderr)  # error exits must not leak either
        return r

    def test_missing_model(self):
        r = self.run_server("--model", "/nonexistent/model.safetensors")
        self.assertEqual(r.returncode, 1)
        err = r.stderr.decode()
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("/nonexistent/model.safetensors", err)
        self.assertIn("cannot load model", err)

    def assert_refused(self, path, *words):
        """Exit 1 with exactly one log line naming the file and the reason."""
        r = self.run_server("--model", path)
        self.assertEqual(r.returncode, 1, r.stderr)
        err = r.stderr.decode()
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        line = json.loads(err)
        self.assertEqual(line["level"], "error")
        self.assertIn("cannot load model", line["msg"])
        self.assertIn(path, line["msg"])
        for w in words:
            self.assertIn(w, line["msg"])

    def test_corrupt_model(self):
        with open(MODEL, "rb") as f:
            data = f.read()
        header_len = int.from_bytes(data[:8], "little")
        cases = {"half": (data[:len(data) // 2], "truncated"),
                 "truncated": (data[:-100], "truncated"),
                 "header_only": (data[:8 + header_len], "truncated"),
                 "empty": (b"", "size"),
                 "zeros": (b"\0" * 64, "header length"),
                 "random": (os.urandom(4096), "")}
        for name, (bad, word) in cases.items():
            p = os.path.join(TMP, "bad_%s.safetensors" % name)
            with open(p, "wb") as f:
                f.write(bad)
            with self.subTest(name):
                self.assert_refused(p, word)

    def test_wrong_architecture(self):
        # the tiny model's tensors under the metadata of the 26m preset, and
        # under a tiny variant with one more stem channel
        from mfformat import read_model, write_model
        tensors, meta = read_model(MODEL)
        p = os.path.join(TMP, "wrong_arch_26m.safetensors")
        write_model(p, tensors, "26m", 10)
        self.assert_refused(p, "mobile_former_26m")
        arch = dict(TINY_ARCH, stem=TINY_ARCH["stem"] + 4)
        p = os.path.join(TMP, "wrong_arch_stem.safetensors")
        write_model(p, tensors, arch, 10)
        self.assert_refused(p, "shape")
        self.assert_refused(TMP, "not a regular file")

    def test_bad_settings_name_the_setting(self):
        cases = [(["--max_batch", "0"], "max_batch"), (["--port", "http"], "port"),
                 (["--bogus", "1"], "bogus"), (["--bind", "localhost"], "bind")]
        for args, word in cases:
            r = self.run_server("--model", MODEL, *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(word, r.stderr.decode())
        env = dict(os.environ, MF_MAX_QUEUE="-3")
        r = self.run_server("--model", MODEL, env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("MF_MAX_QUEUE", r.stderr.decode())
        p = os.path.join(TMP, "bad.json")
        with open(p, "w") as f:
            f.write('{"port": 0, "wokers": 2}')
        r = self.run_server("--model", MODEL, "--config", p)
        self.assertEqual(r.returncode, 2)
        self.assertIn("wokers", r.stderr.decode())

    def test_config_file_env_flag_precedence(self):
        p = os.path.join(TMP, "cfg.json")
        with open(p, "w") as f:
            json.dump({"model": "/nonexistent/from-file", "model_name": "from_file",
                       "bind": "127.0.0.1", "port": 0}, f)
        env = dict(os.environ, MF_MODEL=MODEL, MF_MODEL_NAME="from_env")
        srv_cmd = [SERVER, "--config", p, "--model_name", "from_flag", "--workers", "1"]
        log = os.path.join(TMP, "prec.log")
        with open(log, "wb") as lf:
            proc = subprocess.Popen(srv_cmd, stderr=lf, env=env)
        try:
            deadline = time.time() + TIMEOUT
            port = None
            while time.time() < deadline and port is None and proc.poll() is None:
                with open(log) as lf:
                    for line in lf:
                        if '"listening"' in line:
                            port = json.loads(line)["port"]
                time.sleep(0.02)
            with open(log) as lf:
                self.assertIsNotNone(port, lf.read())
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            c.request("GET", "/v2/models/from_flag")
            self.assertEqual(c.getresponse().status, 200)  # env model, flag name
        finally:
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(TIMEOUT), 0)

    def test_config_table_matches_repository_file(self):
        r = subprocess.run([SERVER, "--print-config-table"], capture_output=True, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0)
        table = r.stdout.decode()
        with open(os.path.join(REPO, "config", "server.json")) as f:
            cfg = json.load(f)
        rows = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
        self.assertEqual(rows, list(cfg))
        r = subprocess.run([SERVER, "--help"], capture_output=True, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0)
        for key in cfg:
            self.assertIn("--" + key, r.stdout.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
