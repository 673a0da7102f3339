"""Real uploads (issue 17), black box over real sockets, on images the test makes.

- WebP (lossy, lossless, alpha) and GIF (palette, transparency, interlaced,
  animated) through /v1 (image/webp, image/gif, octet-stream, multipart) and
  the Open Inference Protocol: the probabilities equal those of the same
  pixels (PIL's decode) sent as a PNG.  HEIC, AVIF, BMP and TIFF: 415 naming
  the format.
- jpeg_scaled_decode: a large JPEG decoded at libjpeg's reduced scale gives
  exactly the probabilities of PIL's draft() decode of it sent as a PNG;
  with the setting off, those of its full decode.
- The decode pool: with one HTTP thread, small images are answered while
  large ones decode (before the pool they waited behind them), and a
  medium image queued behind three large ones finishes first (cheapest
  expected finish first).
- Departed clients: 120 clients each send an image to a one-worker 151m
  server and close at once; at least half of their images are cancelled
  before inference (mobileformer_cancelled_total), nothing is written to
  them, the server's file descriptors go back to where they were, and it
  keeps serving.  A client that only half-closes still gets its answer.
"""
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402
import test_oip as to  # noqa: E402

from PIL import Image, ImageDraw, ImageOps  # noqa: E402

TMP = None
M151 = None


def setUpModule():
    global TMP, M151
    ts.setUpModule()
    TMP = tempfile.mkdtemp(prefix="mf_test_uploads_", dir=ts.TMP)
    out = os.path.join(TMP, "m151")
    subprocess.run([sys.executable, os.path.join(ts.REPO, "tools", "make_reference.py"), "--arch", "151m",
                    "--seed", "5", "--batch", "1", "--size", "224", "224", "--num-classes", "10",
                    "--no-intermediates", "--out", out], check=True, stdout=subprocess.DEVNULL, timeout=600)
    M151 = os.path.join(out, "model.safetensors")


def tearDownModule():
    ts.tearDownModule()


def photo(w, h, seed):
    """A photo-like picture: gradients, shapes and noise (so JPEG has work)."""
    import random
    rng = random.Random(seed)
    im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    d = ImageDraw.Draw(im)
    for _ in range(40):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(max(2, w // 30), max(3, w // 6))
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = Image.effect_noise((w, h), 40).convert("RGB")
    return Image.blend(im, noise, 0.25)


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def pil_png(data):
    """PIL's decode of data (exif_transpose + convert("RGB")), as a PNG."""
    with Image.open(io.BytesIO(data)) as im:
        return encode(ImageOps.exif_transpose(im).convert("RGB"), "PNG")


def probs(r):
    assert r.status == 200, r.body[:300]
    return ts.probabilities(r.json())


class FormatsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = ts.Server()

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def samples(self):
        base = ts.picture(71, (120, 90))
        rgba = base.copy()
        rgba.putalpha(Image.linear_gradient("L").resize(base.size))
        pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=48)
        frames = [pal, base.transpose(Image.Transpose.FLIP_TOP_BOTTOM).convert("P", palette=Image.Palette.ADAPTIVE)]
        return {
            "webp lossy": (encode(base, "WEBP", quality=75), "image/webp"),
            "webp lossless": (encode(base, "WEBP", lossless=True), "image/webp"),
            "webp alpha": (encode(rgba, "WEBP", quality=80), "image/webp"),
            "gif": (encode(pal, "GIF"), "image/gif"),
            "gif transparency": (encode(pal, "GIF", transparency=3), "image/gif"),
            "gif interlaced": (encode(pal, "GIF", interlace=True), "image/gif"),
            "gif animated": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
                             "image/gif"),
        }

    def test_webp_and_gif_equal_their_pixels_as_png(self):
        for name, (data, ctype) in self.samples().items():
            with self.subTest(name):
                want = probs(self.srv.predict(pil_png(data), query="?top_k=10"))
                for ct in (ctype, "application/octet-stream", None):
                    got = probs(self.srv.predict(data, ctype=ct, query="?top_k=10"))
                    self.assertTrue(ts.same_probabilities(got, want), "%s as %s: %r vs %r" % (name, ct, got, want))
                mct, body = ts.multipart([("image", "x", ctype, data)])
                self.assertTrue(ts.same_probabilities(probs(self.srv.predict(body, ctype=mct, query="?top_k=10")),
                                                      want))
                el = to.bytes_elements([data])
                b, h = to.binary_body({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                   "parameters": {"binary_data_size": len(el)}}],
                                       "outputs": [{"name": "probabilities"}]}, el)
                r = self.srv.request("POST", to.INFER, body=b, headers=h)
                self.assertEqual(r.status, 200, r.body[:200])
                got = dict(enumerate(to.outputs_of(r)["probabilities"][2]))
                self.assertTrue(ts.same_probabilities(got, want), name + " through the protocol")

    def test_other_formats_are_named(self):
        base = ts.picture(72)
        cases = {"BMP": encode(base, "BMP"), "TIFF": encode(base, "TIFF"),
                 "HEIC": b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200),
                 "AVIF": b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + bytes(200)}
        for name, data in cases.items():
            r = self.srv.predict(data, ctype="application/octet-stream")
            self.assertEqual(r.status, 415, r.body)
            e = r.json()["error"]
            self.assertEqual(e["code"], "unsupported_media_type")
            self.assertTrue(e["message"].startswith(name), e["message"])
            self.assertIn("WebP", e["message"])
        r = self.srv.predict(cases["HEIC"], ctype="image/heic")
        self.assertEqual((r.status, r.json()["error"]["code"]), (415, "unsupported_media_type"))
        m = self.srv.request("GET", "/v2/models/" + ts.MODEL_NAME).json()
        self.assertEqual(m["inputs"][1]["content_types"], ["image/jpeg", "image/png", "image/webp", "image/gif"])

    def test_broken_webp_and_gif(self):
        for name, (data, ctype) in self.samples().items():
            with self.subTest(name):
                r = self.srv.predict(data[:len(data) // 2], ctype=ctype)
                self.assertEqual(r.status, 400, r.body)
                self.assertEqual(r.json()["error"]["code"], "corrupt_image")
        huge = b"GIF89a" + struct.pack("<HH", 60000, 60000) + encode(ts.picture(1).convert("P"), "GIF")[10:]
        r = self.srv.predict(huge, ctype="image/gif")
        self.assertEqual((r.status, r.json()["error"]["code"]), (413, "image_too_large"))


class ScaledDecodeTest(unittest.TestCase):
    """The tiny test model resizes to 64: a 1600 x 1200 JPEG is decoded at
    1/8 (200 x 150), the smallest scale whose shorter side covers 64."""

    def test_scaled_equals_pil_draft_and_exact_equals_full(self):
        data = encode(photo(1600, 1200, 3), "JPEG", quality=88)
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (200, 150))
            draft = encode(im.convert("RGB"), "PNG")
            self.assertEqual(im.size, (200, 150))
        exact = pil_png(data)
        on = ts.Server("--jpeg_scaled_decode", "true")
        off = ts.Server()
        try:
            p_on = probs(on.predict(data, ctype="image/jpeg", query="?top_k=10"))
            p_off = probs(off.predict(data, ctype="image/jpeg", query="?top_k=10"))
            self.assertTrue(ts.same_probabilities(p_on, probs(on.predict(draft, query="?top_k=10"))),
                            "scaled decode differs from PIL's draft")
            self.assertTrue(ts.same_probabilities(p_off, probs(off.predict(exact, query="?top_k=10"))),
                            "exact decode differs from PIL's full decode")
            self.assertFalse(ts.same_probabilities(p_on, p_off), "the setting changed nothing")
            # PNG is never scaled
            png = encode(photo(400, 300, 4), "PNG")
            self.assertTrue(ts.same_probabilities(probs(on.predict(png, query="?top_k=10")),
                                                  probs(off.predict(png, query="?top_k=10"))))
        finally:
            self.assertEqual(on.stop(), 0)
            self.assertEqual(off.stop(), 0)


class DecodePoolTest(unittest.TestCase):
    def test_small_images_do_not_wait_behind_large_decodes(self):
        srv = ts.Server("--http_threads", "1", "--decode_threads", "1", "--workers", "1",
                        "--max_pixels", str(30 << 20), "--max_body_bytes", str(32 << 20), defaults=False)
        try:
            big = encode(photo(4000, 3000, 5), "JPEG", quality=85)  # 12 MP
            small = ts.png(81)
            medium = encode(photo(320, 240, 6), "JPEG", quality=85)  # goes to the pool
            t0 = time.time()
            r = srv.predict(big, ctype="image/jpeg")
            big_s = time.time() - t0
            self.assertEqual(r.status, 200)
            decode_ms = r.json()["latency_ms"]["decode"]
            # three large uploads decoding one after the other, small ones beside them
            res = {}

            def post(name, data, ctype):
                t = time.time()
                rr = srv.predict(data, ctype=ctype)
                res.setdefault(name, []).append((time.time() - t, t, rr.status))

            bigs = [threading.Thread(target=post, args=("big", big, "image/jpeg")) for _ in range(3)]
            for b in bigs:
                b.start()
            time.sleep(min(0.05, big_s / 4))
            med = threading.Thread(target=post, args=("medium", medium, "image/jpeg"))
            med.start()
            for _ in range(10):
                post("small", small, "image/png")
            for b in bigs + [med]:
                b.join()
            self.assertTrue(all(s == 200 for v in res.values() for _, _, s in v), res)
            small_worst = max(d for d, _, _ in res["small"])
            med_done = res["medium"][0][1] + res["medium"][0][0]
            big_done = sorted(t + d for d, t, _ in res["big"])
            print("\nREPORT decode pool: a 12 MP JPEG decodes in %.0f ms; beside three of them on one HTTP thread and "
                  "one decode thread, 10 small images took at most %.1f ms each; a 320x240 JPEG queued behind them "
                  "finished %.0f ms before the second large one" % (decode_ms, small_worst * 1000,
                                                                    (big_done[1] - med_done) * 1000))
            self.assertLess(small_worst, decode_ms / 1000 / 2, "small images waited behind a large decode")
            self.assertLess(med_done, big_done[1], "the medium image waited behind more than one large decode")
        finally:
            self.assertEqual(srv.stop(), 0)


    def test_deadline_applies_while_waiting_for_a_decode_thread(self):
        """A low-priority upload with parameters.timeout 300 ms waits behind a
        flood of 6 MP PNGs on the one large-image decode thread (priority
        first: it would not be taken while the flood lasts).  It gets 504
        timeout at its deadline, from the pool's reaper, not when the flood
        ends (4 s later: how long it took before the reaper)."""
        srv = ts.Server("--http_threads", "2", "--decode_threads", "1", "--workers", "1",
                        "--max_pixels", str(30 << 20), "--max_body_bytes", str(32 << 20), defaults=False)
        try:
            big = encode(photo(3000, 2000, 7), "PNG")
            stop_at = time.time() + 4.0
            statuses = []

            def flood():
                conn = srv.connect()
                while time.time() < stop_at:
                    statuses.append(srv.predict(big, conn=conn).status)
                conn.close()

            threads = [threading.Thread(target=flood) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            el = to.bytes_elements([big])
            body, hdr = to.binary_body({"parameters": {"priority": 5, "timeout": 300000},
                                        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                    "parameters": {"binary_data_size": len(el)}}]}, el)
            t0 = time.time()
            r = srv.request("POST", to.INFER, body=body, headers=hdr)
            waited = time.time() - t0
            for t in threads:
                t.join()
            self.assertEqual(r.status, 504, r.body[:300])
            self.assertEqual(json.loads(r.body)["code"], "timeout")
            self.assertIn("decode thread", json.loads(r.body)["error"])
            self.assertTrue(statuses and all(s == 200 for s in statuses), statuses)
            print("\nREPORT decode deadline: a low-priority 6 MP PNG with a 300 ms timeout behind %d flooding "
                  "uploads on one decode thread: 504 after %.0f ms" % (len(statuses), waited * 1000))
            self.assertLess(waited, 1.5, "the deadline was not applied while the image waited for a decode thread")
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_a_request_holds_its_http_thread_only_briefly(self):
        """A request's images are decoded on its HTTP thread only while their
        expected cost (decode and preprocess) stays small; the rest go to the
        pool.  Sixteen thumbnails for a 224x224 model are 2-3 ms of resizing:
        at most one of them stays on the HTTP thread.  A lone thumbnail for
        the small default model is decoded in place (no pool hand-off)."""
        def pooled(srv, model):
            m = re.search(r'^mobileformer_decode_wait_seconds_count\{model="%s",version="1"\} (\d+)$' % model,
                          srv.metrics(), re.M)
            return int(m.group(1)) if m else 0

        slow = ts.Server("--http_threads", "1", "--workers", "1", model=ts.SLOW_MODEL, defaults=False)
        small = ts.Server("--http_threads", "1", "--workers", "1", defaults=False)
        try:
            ctype, body = ts.multipart([("image", "%d.png" % i, "image/png", ts.png(40 + i)) for i in range(16)])
            r = slow.predict(body, ctype=ctype)
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertGreaterEqual(pooled(slow, "slow"), 15, "a 16-image request was preprocessed on its HTTP thread")
            r = small.predict(ts.png(7))
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(pooled(small, ts.MODEL_NAME), 0, "a thumbnail went through the pool")
        finally:
            self.assertEqual(slow.stop(), 0)
            self.assertEqual(small.stop(), 0)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class CancelTest(unittest.TestCase):
    def test_departed_clients_are_cancelled(self):
        srv = ts.Server("--workers", "1", "--http_threads", "2", "--max_queue", "1000", "--max_connections_per_client",
                        "0", model=M151, defaults=False)
        try:
            img = encode(photo(320, 280, 7), "JPEG", quality=90)
            self.assertEqual(srv.predict(img, ctype="image/jpeg").status, 200)
            time.sleep(0.2)
            base_fds = open_fds(srv.proc.pid)
            req = (b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                   % len(img)) + img
            socks = []
            for _ in range(120):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=ts.TIMEOUT)
                s.sendall(req)
                socks.append(s)
            for s in socks:
                s.close()
            # until nothing is in flight but this scrape, and the queue is empty
            deadline = time.time() + 120
            while time.time() < deadline:
                fams = ts.parse_prometheus(srv.metrics())
                cq = ts.sample(fams, "mobileformer_cancelled_total", stage="queue") or 0
                cd = ts.sample(fams, "mobileformer_cancelled_total", stage="decode") or 0
                ran = fams["mobileformer_batch_size"]["series"][(("model", "model"), ("version", "1"))]["sum"]
                if ts.sample(fams, "mobileformer_inflight_requests") <= 1 and \
                        ts.sample(fams, "mobileformer_queue_depth", model="model", version="1") == 0:
                    break
                time.sleep(0.1)
            aborts = {lab["stage"]: v for n, lab, v in fams["mobileformer_client_aborts_total"]["samples"]}
            time.sleep(0.3)
            fds = open_fds(srv.proc.pid)
            print("\nREPORT cancel: 120 clients sent a 320x280 JPEG to a one-worker 151m server and closed at once: "
                  "%d cancelled in the queue, %d in decoding, %d images inferred (1 of them the warm-up); client "
                  "aborts by stage %s; file descriptors %d before, %d after" % (cq, cd, ran, aborts, base_fds, fds))
            self.assertGreaterEqual(cq + cd, 60, "fewer than half of the departed clients' images were cancelled")
            self.assertLessEqual(ran, 121 - (cq + cd))
            self.assertLessEqual(fds, base_fds, "file descriptors were not released")
            self.assertEqual(srv.predict(img, ctype="image/jpeg").status, 200)
            # a client that half-closes is still answered (the probe is a 100 Continue it ignores)
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=ts.TIMEOUT)
            s.sendall(req.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"))
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            self.assertIn(b"HTTP/1.1 200 OK", data)
            self.assertIn(b"predictions", data)
        finally:
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
