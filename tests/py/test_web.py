"""The page for people (issue 7): served right, and working in a real browser.

WebPageHttpTest (no browser): GET / and /index.html serve server/web/index.html
byte for byte, /app.js and /app.css likewise, with their Content-Type, a CSP
without 'unsafe-inline', nosniff, Cache-Control and an ETag that answers 304;
the page needs no API key; no path reaches anything but the embedded files
(traversal attempts, encoded or not, are 404).

BrowserTest drives Debian's /usr/bin/chromium headless through Debian's
/usr/bin/chromedriver (W3C WebDriver, spoken here with http.client: nothing to
install beyond scripts/install-deps.sh test).  On a server without a key it
tabs to the drop zone (visible focus) and chooses tests/data/images/photo.jpg
from the keyboard: the labels shown are the API's own top-5 for the same bytes;
the previews of EXIF-rotated JPEG and PNG files have the upright size the
server decodes; a truncated JPEG dropped on the page shows the service's own
error code and message; the live panel fills from /metrics; at 360 px wide
nothing scrolls sideways; no CSP violation or script error occurs.  On a
server with an API key the page asks for the key, shows the 401 as the service
words it, then classifies once the key is entered, and stores nothing.  On a
server with a repository of two models the page offers both, and the one
picked answers (its labels, equal to /v1/models/{m}/predict's).
Screenshots: $MF_BUILD/tests/web.png, web_phone.png, web_phone_error.png,
web_key.png.

Without chromium or chromedriver the browser test prints SKIP and passes.
Every process started here (servers, chromedriver, chromium) is killed at the
end, chromedriver's whole process group included.
"""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (the test model, Server, helpers)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WEB = os.path.join(ts.REPO, "server", "web")
SHOTS = os.path.join(ts.BUILD, "tests")
API_KEY = "page-test-key"
TIMEOUT = 60  # seconds for any one wait in the browser; generous for a loaded machine
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}


def setUpModule():
    ts.setUpModule()


def tearDownModule():
    ts.tearDownModule()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def image(name):
    return os.path.join(ts.IMAGES, name)


class WebPageHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = ts.Server("--api_key", API_KEY)

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def test_assets_and_headers(self):
        for path, (name, ctype) in ASSETS.items():
            r = self.srv.request("GET", path)  # no Authorization: the page is open
            self.assertEqual(r.status, 200, path)
            self.assertTrue(r.body == read(os.path.join(WEB, name)),
                            "%s: not the bytes of server/web/%s (a stale build? web.o depends on "
                            "server/web/* through the Makefile)" % (path, name))
            self.assertEqual(r.header("Content-Type"), ctype)
            csp = r.header("Content-Security-Policy")
            self.assertIn("default-src 'none'", csp)
            self.assertIn("script-src 'self'", csp)
            self.assertIn("frame-ancestors 'none'", csp)
            self.assertNotIn("unsafe", csp)
            self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
            self.assertEqual(r.header("Cache-Control"), "no-cache")
            etag = r.header("ETag")
            self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
            r = self.srv.request("GET", path, headers={"If-None-Match": etag})
            self.assertEqual((r.status, r.body, r.header("ETag")), (304, b"", etag))
            r = self.srv.request("GET", path, headers={"If-None-Match": '"0000000000000000"'})
            self.assertEqual(r.status, 200)
            r = self.srv.request("HEAD", path)
            self.assertEqual((r.status, r.body, r.header("Content-Type")), (200, b"", ctype))
        page = read(os.path.join(WEB, "index.html")).decode("utf-8")
        for external in ("http:", "https:", "//"):
            self.assertNotIn('src="' + external, page)
            self.assertNotIn('href="' + external, page)
        self.assertNotIn("<style", page)  # the CSP has no 'unsafe-inline'
        self.assertNotIn(" style=", page)
        self.assertNotIn("<script>", page)

    def test_no_path_reaches_the_file_system(self):
        paths = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%2e%2e/", "/..", "/.%2e/",
                 "/..%2f..%2fetc%2fpasswd", "/%2F..%2F..%2Fetc%2Fpasswd", "/app.js/../../etc/passwd",
                 "/index.html/", "/index.html/..", "/./index.html", "//index.html", "/INDEX.HTML",
                 "/web/index.html", "/server/web/index.html", "/server/web/app.js", "/index.htm",
                 "/app.js.map", "/favicon.ico", "/etc/passwd", "/index.html%2f"]
        for path in paths:
            r = self.srv.request("GET", path)
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.json()["error"]["code"], "not_found", path)
            self.assertNotIn(b"root:", r.body)
        # an encoded NUL is not decoded (it would cut the path short): no route matches
        for path in ("/%00../../etc/passwd", "/index.html%00/../../etc/passwd", "/%00", "/app.js%00.png"):
            r = self.srv.request("GET", path)
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.json()["error"]["code"], "not_found", path)
        r = self.srv.request("POST", "/", body=b"x")
        self.assertEqual(r.status, 405)
        self.assertIn("GET", r.header("Allow"))

    def test_web_ui_false_turns_the_page_off(self):
        srv = ts.Server("--web_ui", "false")
        try:
            for path in ASSETS:
                r = srv.request("GET", path)
                self.assertEqual(r.status, 404, path)
                self.assertEqual(r.json()["error"]["code"], "not_found", path)
            self.assertEqual(srv.request("GET", "/v2/health/ready").status, 200)  # the API stays
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_counted_as_web(self):
        self.srv.request("GET", "/")
        fams = ts.parse_prometheus(self.srv.metrics())
        self.assertGreaterEqual(ts.sample(fams, "mobileformer_requests_total", endpoint="web",
                                          status="200"), 1)


# ---- a W3C WebDriver client over http.client --------------------------------

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
KEY_TAB, KEY_ENTER = "\ue004", "\ue007"


class WebDriverError(Exception):
    pass


class Browser:
    """chromedriver (its own process group) driving one headless chromium."""

    def __init__(self, tmp):
        self.log_path = os.path.join(tmp, "chromedriver.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([CHROMEDRIVER, "--port=0"], stdout=log, stderr=log,
                                         start_new_session=True)
        self.port = None
        self.sid = None
        deadline = time.time() + TIMEOUT
        while self.port is None and time.time() < deadline and self.proc.poll() is None:
            for line in read(self.log_path).decode("utf-8", "replace").splitlines():
                if "started successfully on port" in line:
                    self.port = int(line.rstrip(". ").rsplit(" ", 1)[1])
            time.sleep(0.05)
        if self.port is None:
            self.close()
            raise AssertionError("chromedriver did not start:\n" + read(self.log_path).decode())
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-breakpad", "--disable-crash-reporter",
                "--window-size=1280,900",
                "--user-data-dir=" + os.path.join(tmp, "profile")]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        try:
            self.sid = self.call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.close()
            raise

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT * 2)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            answer = json.loads(r.read() or b"{}")
        finally:
            conn.close()
        value = answer.get("value")
        if r.status != 200:
            raise WebDriverError("%s %s: %s" % (method, path, json.dumps(value)[:1000]))
        return value

    def cmd(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.sid, path), body)

    def go(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def cdp(self, command, params=None):
        return self.cmd("POST", "/goog/cdp/execute", {"cmd": command, "params": params or {}})

    def find(self, css):
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def active(self):
        return self.cmd("GET", "/element/active")[ELEMENT]

    def type_into(self, element, text):
        self.cmd("POST", "/element/%s/value" % element, {"text": text})

    def press(self, key):
        self.cmd("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]})

    def wait(self, script, what, *args, timeout=TIMEOUT):
        """Poll `script` (a function body) until it returns a truthy value; return it."""
        deadline = time.time() + timeout
        while True:
            v = self.js(script, *args)
            if v:
                return v
            if time.time() > deadline:
                state = self.js("return document.getElementById('result').dataset.state + ' / ' + "
                                "document.getElementById('status').textContent")
                raise AssertionError("timed out waiting for %s (page: %s)" % (what, state))
            time.sleep(0.1)

    def screenshot(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def group_alive(self):
        """Live processes of chromedriver's group other than chromedriver."""
        n = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == self.proc.pid:
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":  # pgrp, state
                n += 1
        return n

    def close(self):
        if self.sid:
            try:
                self.call("DELETE", "/session/" + self.sid)
            except Exception:
                pass
            self.sid = None
        # let chromium exit while chromedriver, its parent, can still reap it
        deadline = time.time() + 10
        while self.group_alive() and time.time() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # chromium and its helpers, should any outlive chromedriver
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait()


# Installed before the page's own script: CSP violations and script errors.
WATCH = """
window.__problems = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
window.addEventListener('error', (e) => window.__problems.push('error ' + e.message));
window.addEventListener('unhandledrejection', (e) => window.__problems.push('rejection ' + e.reason));
"""

RESULT = """
const r = document.getElementById('result');
const status = document.getElementById('status').textContent;
if (r.dataset.state !== arguments[0] || !status.startsWith(arguments[1])) return null;
const img = document.getElementById('preview-img');
return {
  labels: Array.from(document.querySelectorAll('#predictions li .label')).map((e) => e.textContent),
  code: document.getElementById('error-code').textContent,
  message: document.getElementById('error-message').textContent,
  error_shown: !document.getElementById('error').hidden,
  predictions_shown: !document.getElementById('predictions').hidden,
  timing: Array.from(document.querySelectorAll('#timing-rows th')).map((e) => e.textContent),
  timing_shown: !document.getElementById('timing').hidden,
  preview: [img.naturalWidth, img.naturalHeight],
  frame: [document.getElementById('frame').getBoundingClientRect().width,
          document.getElementById('frame').getBoundingClientRect().height],
};
"""

DROP = """
const [name, type, b64] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const dt = new DataTransfer();
dt.items.add(new File([bytes], name, { type }));
const zone = document.getElementById('drop');
for (const kind of ['dragenter', 'dragover', 'drop'])
  zone.dispatchEvent(new DragEvent(kind, { dataTransfer: dt, bubbles: true, cancelable: true }));
"""

FOCUS = """
const a = document.activeElement;
const shown = a && a.id === 'file' ? document.getElementById('drop') : a;
const cs = shown ? getComputedStyle(shown) : null;
return { id: a ? (a.id || a.tagName.toLowerCase()) : null,
         outline: cs ? cs.outlineStyle + ' ' + cs.outlineWidth : '' };
"""

OVERFLOW = """
const d = document.documentElement;
return { scroll: Math.max(d.scrollWidth, document.body.scrollWidth), width: window.innerWidth };
"""


class BrowserTest(unittest.TestCase):
    def setUp(self):
        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
        if missing:
            print("SKIP BrowserTest: %s not installed (scripts/install-deps.sh test)" % ", ".join(missing))
            self.skipTest("no chromium")
        self.tmp = tempfile.mkdtemp(prefix="mf_test_web_")
        self.servers, self.browser = [], None

    def tearDown(self):
        if self.browser:
            self.browser.close()
        codes = [(s.stop(), s) for s in self.servers]
        shutil.rmtree(self.tmp, ignore_errors=True)
        for rc, s in codes:
            self.assertEqual(rc, 0, "server exit status:\n" + s.log_text()[-3000:])

    def api(self, srv, name, headers=None, path="/v1/predict"):
        """The service's own answer for a file, as the page sends it."""
        ctype = "image/png" if name.endswith(".png") else "image/jpeg"
        return srv.predict(read(image(name)), ctype=ctype, query="?top_k=5", headers=headers, path=path)

    def upload(self, b, name):
        b.type_into(b.find("#file"), image(name))

    def tab_to(self, b, target, limit=8):
        """Tab from the page top until `target` has focus; the stops on the way."""
        # the sequential focus starting point: the header, above every control
        b.js("const h = document.querySelector('header'); h.tabIndex = -1; h.focus(); h.blur();"
             "h.removeAttribute('tabindex'); window.scrollTo(0, 0);")
        stops = []
        for _ in range(limit):
            b.press(KEY_TAB)
            f = b.js(FOCUS)
            stops.append(f["id"])
            if f["id"] not in ("body", None):
                self.assertNotIn(f["outline"].split(" ")[0], ("none", ""), "no visible focus on " + f["id"])
            if f["id"] == target:
                return stops
        self.fail("Tab never reached #%s: %s" % (target, stops))

    def test_page_in_chromium(self):
        open_srv = ts.Server()
        self.servers.append(open_srv)
        key_srv = ts.Server("--api_key", API_KEY)
        self.servers.append(key_srv)
        repo = os.path.join(self.tmp, "repo")
        for name, path in (("tiny_test", ts.MODEL), ("fashion", os.path.join(ts.REPO, "models",
                                                                             "fashion_mnist_mobileformer.safetensors"))):
            os.makedirs(os.path.join(repo, name, "1"))
            os.symlink(path, os.path.join(repo, name, "1", "model.safetensors"))
        repo_srv = ts.Server("--model_repository", repo, model="")
        self.servers.append(repo_srv)
        t0 = time.time()
        b = self.browser = Browser(self.tmp)
        b.cdp("Page.enable")
        b.cdp("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH})
        print("REPORT chromium started in %.1f s" % (time.time() - t0))

        # -- no key: keyboard upload, labels equal the API's
        b.go("http://127.0.0.1:%d/" % open_srv.port)
        self.assertEqual(b.js("return document.title"), "Mobile-Former image classifier")
        b.wait("return document.getElementById('model-info').textContent.includes('10 labels')",
               "the model's metadata")
        self.assertTrue(b.js("return document.getElementById('key-form').hidden"))
        self.assertEqual(self.tab_to(b, "file"), ["file"])
        want = self.api(open_srv, "photo.jpg").json()
        b.type_into(b.active(), image("photo.jpg"))  # the chooser, opened with Enter, picks it
        got = b.wait(RESULT, "photo.jpg's answer", "done", "photo.jpg:")
        self.assertEqual(got["labels"], [p["label"] for p in want["predictions"]])
        self.assertEqual(got["labels"][0], want["predictions"][0]["label"])
        self.assertTrue(got["timing_shown"])
        for stage in ("Decode", "Preprocess", "Queue", "Inference", "Total in the service", "Batch size"):
            self.assertIn(stage, got["timing"])
        self.assertFalse(got["error_shown"])
        with ts.Image.open(image("photo.jpg")) as im:
            self.assertEqual(got["preview"], list(im.size))
        b.wait("return !document.getElementById('crop').hidden", "the crop box")

        # -- EXIF: the preview is the upright image the server decodes
        for name in ("exif_6.jpg", "png_exif6.png", "exif_3.jpg"):
            w, h = (int(x) for x in read(image(name[:-4] + ".txt")).split()[:2])
            want = self.api(open_srv, name).json()
            self.upload(b, name)
            got = b.wait(RESULT, name + "'s answer", "done", name + ":")
            self.assertEqual(got["preview"], [w, h], name)
            fw, fh = got["frame"]
            self.assertAlmostEqual(fw / fh, w / h, delta=0.05 * w / h, msg=name)
            self.assertEqual(got["labels"], [p["label"] for p in want["predictions"]], name)

        # -- live panel: filled from /metrics within two polls
        live = b.wait("""
            const ids = ['m-rate', 'm-p50', 'm-p99', 'm-batch', 'm-queue', 'm-inflight'];
            const v = ids.map((i) => document.getElementById(i).textContent);
            return v.every((x) => x !== '–') && document.querySelectorAll('#batch-hist li').length ? v : null;
            """, "the live panel", timeout=15)
        self.assertRegex(live[1], r"^(> )?\d+(\.\d+)? (ms|s)$")
        self.assertRegex(live[3], r"^\d+\.\d\d$")
        b.screenshot(os.path.join(SHOTS, "web.png"))

        # -- a truncated JPEG, dropped: the service's own words
        want = self.api(open_srv, "trunc.jpg")
        self.assertEqual(want.status, 400)
        want = want.json()["error"]
        b.js(DROP, "trunc.jpg", "image/jpeg", base64.b64encode(read(image("trunc.jpg"))).decode())
        got = b.wait(RESULT, "trunc.jpg's error", "error", "trunc.jpg")
        self.assertTrue(got["error_shown"])
        self.assertEqual((got["code"], got["message"]), (want["code"], want["message"]))
        self.assertFalse(got["predictions_shown"] or got["timing_shown"])

        # -- a phone: nothing scrolls sideways, with an error or a result shown
        b.cdp("Emulation.setDeviceMetricsOverride",
              {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
        ov = b.js(OVERFLOW)
        self.assertEqual(ov["width"], 360)
        self.assertLessEqual(ov["scroll"], ov["width"], "horizontal overflow with an error shown")
        b.screenshot(os.path.join(SHOTS, "web_phone_error.png"))
        self.upload(b, "photo.jpg")
        b.wait(RESULT, "photo.jpg's answer on a phone", "done", "photo.jpg:")
        ov = b.js(OVERFLOW)
        self.assertLessEqual(ov["scroll"], ov["width"], "horizontal overflow with a result shown")
        b.screenshot(os.path.join(SHOTS, "web_phone.png"))
        b.cdp("Emulation.clearDeviceMetricsOverride")
        self.assertEqual(b.js("return window.__problems"), [])

        # -- with an API key: asked for, 401 shown as worded, then it works
        b.go("http://127.0.0.1:%d/index.html" % key_srv.port)
        b.wait("return !document.getElementById('key-form').hidden", "the API key form")
        self.assertEqual(self.tab_to(b, "file"), ["key", "button", "file"])
        want = self.api(key_srv, "photo.jpg").json()["error"]
        self.upload(b, "photo.jpg")
        got = b.wait(RESULT, "the 401", "error", "photo.jpg")
        self.assertEqual((got["code"], got["message"]), ("unauthorized", want["message"]))
        self.assertEqual(b.js("return document.activeElement.id"), "key")  # ready to type
        b.screenshot(os.path.join(SHOTS, "web_key.png"))
        b.type_into(b.find("#key"), API_KEY + KEY_ENTER)
        b.wait("return document.getElementById('model-info').textContent.includes('10 labels')",
               "the metadata with the key")
        want = self.api(key_srv, "photo.jpg", headers={"Authorization": "Bearer " + API_KEY}).json()
        self.upload(b, "photo.jpg")
        got = b.wait(RESULT, "photo.jpg's answer with the key", "done", "photo.jpg:")
        self.assertEqual(got["labels"], [p["label"] for p in want["predictions"]])
        self.assertEqual(b.js("return [localStorage.length, sessionStorage.length, document.cookie]"),
                         [0, 0, ""])
        self.assertEqual(b.js("return window.__problems"), [])

        # -- two models: the page offers both; the one picked answers
        b.go("http://127.0.0.1:%d/" % repo_srv.port)
        names = b.wait("""
            const s = document.getElementById('model-select');
            return !document.getElementById('model-pick').hidden && s.options.length === 2
                ? Array.from(s.options).map((o) => o.value) : null;""", "the model picker")
        self.assertEqual(names, ["fashion", "tiny_test"])
        for name in ("tiny_test", "fashion"):
            b.js("const s = document.getElementById('model-select'); s.value = arguments[0];"
                 "s.dispatchEvent(new Event('change'));", name)
            b.wait("return document.getElementById('model-info').textContent.startsWith('Model: ' + arguments[0])",
                   name + "'s metadata", name)
            want = self.api(repo_srv, "photo.jpg", path="/v1/models/%s/predict" % name).json()
            self.assertEqual(want["model"], name)
            self.upload(b, "photo.jpg")
            got = b.wait(RESULT, "photo.jpg's answer from " + name, "done", "photo.jpg:")
            self.assertEqual(got["labels"], [p["label"] for p in want["predictions"]], name)
            b.wait("return document.getElementById('live-note').textContent.includes(arguments[0])",
                   "the live panel of " + name, name, timeout=15)
        self.assertEqual(b.js("return window.__problems"), [])
        print("REPORT browser test took %.1f s; screenshots in %s" % (time.time() - t0, SHOTS))


if __name__ == "__main__":
    unittest.main(verbosity=2)
