#!/usr/bin/env python3
"""bench/protocol.py -- what each API costs: /v1/predict against the Open
Inference Protocol in JSON and in binary, for the same image (`make bench-protocol`).

    /usr/bin/python3 bench/protocol.py [--models bundled,151m] [--connections 1,16]
                                       [--seconds 5] [--rounds 3] [--image FILE]

For each model (the bundled Fashion-MNIST one; a synthetic 151m preset at 224 x
224, made with tools/make_reference.py unless --m151 FILE gives one) one server
(build/mobileformer-server, defaults, log_requests off) serves these requests,
each a POST of the same JPEG (tests/data/images/photo.jpg), answered with the
10 or 1000 probabilities or the top 5:
  v1            /v1/models/{m}/predict, the file as the body (top-5 JSON answer)
  oip-binary    /v2/models/{m}/infer, "image" BYTES [1] in the binary tensor
                extension, probabilities answered binary
  oip-json      the same with the image base64 in the JSON body, probabilities in JSON
and two that skip decoding (the client sends the preprocessed tensor):
  tensor-binary "input" FP32 [1,3,H,W] binary, probabilities binary
  tensor-json   the same tensor as JSON numbers, probabilities in JSON
wrk (bench/post_body.lua, 2 threads) runs each for --seconds at each connection
count; the kinds take turns within a round (interleaved) and the figures are
medians over --rounds.  Printed: requests/s, p50 and p99 latency, and requests/s
as a ratio to v1's at the same model and connection count (the baseline,
measured in the same rounds).  wrk shares the machine's cores with the server.
Raw output: bench/out/protocol-YYYYmmdd-HHMMSS/.
"""
import argparse
import base64
import json
import os
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import time

from benchutil import cpu_model  # noqa: E402  (bench/, the script's own folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, os.environ.get("MF_BUILD", "build"))
SERVER = os.path.join(BUILD, "mobileformer-server")
BUNDLED = os.path.join(REPO, "models", "fashion_mnist_mobileformer.safetensors")
KINDS = ["v1", "oip-binary", "oip-json", "tensor-binary", "tensor-json"]


def start_server(model, out, tag):
    log = open(os.path.join(out, "server-%s.log" % tag), "wb")
    p = subprocess.Popen([SERVER, "--bind", "127.0.0.1", "--port", "0", "--model", model, "--model_name", "m",
                          "--log_requests", "false"], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(log.name) as f:
            for line in f:
                if '"listening"' in line:
                    return p, json.loads(line)["port"]
        if p.poll() is not None:
            sys.exit("server exited; see " + log.name)
        time.sleep(0.05)
    p.kill()
    sys.exit("server did not start")


def meta(port):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/v2/models/m")
    return json.loads(c.getresponse().read())


def bodies(out, image, h, w):
    """{kind: (path, body file, [headers])}"""
    with open(image, "rb") as f:
        jpeg = f.read()
    rng = random.Random(1)
    x = [rng.uniform(-2, 2) for _ in range(3 * h * w)]
    x = list(struct.unpack("<%df" % len(x), struct.pack("<%df" % len(x), *x)))
    raw = struct.pack("<%df" % len(x), *x)
    infer = "/v2/models/m/infer"
    kinds = {}

    def put(kind, path, data, headers):
        f = os.path.join(out, "body-%s-%dx%d" % (kind, h, w))
        with open(f, "wb") as fh:
            fh.write(data)
        kinds[kind] = (path, f, headers)

    put("v1", "/v1/models/m/predict", jpeg, ["Content-Type: image/jpeg"])
    el = struct.pack("<I", len(jpeg)) + jpeg
    hdr = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                  "parameters": {"binary_data_size": len(el)}}],
                      "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    put("oip-binary", infer, hdr + el, ["Inference-Header-Content-Length: %d" % len(hdr)])
    put("oip-json", infer, json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                   "data": [base64.b64encode(jpeg).decode()]}],
                                       "outputs": [{"name": "probabilities"}]}).encode(),
        ["Content-Type: application/json"])
    hdr = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, h, w],
                                  "parameters": {"binary_data_size": len(raw)}}],
                      "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    put("tensor-binary", infer, hdr + raw, ["Inference-Header-Content-Length: %d" % len(hdr)])
    put("tensor-json", infer, json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, h, w],
                                                      "data": x}],
                                          "outputs": [{"name": "probabilities"}]}).encode(),
        ["Content-Type: application/json"])
    return kinds


def wrk(port, kind, spec, conns, seconds, out, tag):
    path, body, headers = spec
    cmd = ["wrk", "-t%d" % min(2, conns), "-c%d" % conns, "-d%ds" % seconds, "--timeout", "30s", "--latency",
           "-s", os.path.join(REPO, "bench", "post_body.lua"), "http://127.0.0.1:%d" % port, "--", path, body] + headers
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    with open(os.path.join(out, "wrk-%s.log" % tag), "a") as f:
        f.write("$ %s\n%s%s\n" % (" ".join(cmd), r.stdout, r.stderr))
    m = re.search(r"^wrk-json (\{.*\})$", r.stdout, re.M)
    if not m:
        sys.exit("wrk gave no result for %s:\n%s%s" % (kind, r.stdout, r.stderr))
    return json.loads(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="bundled,151m")
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image", default=os.path.join(REPO, "tests", "data", "images", "photo.jpg"))
    ap.add_argument("--m151", help="a 151m model file (default: made with tools/make_reference.py)")
    a = ap.parse_args()
    out = os.path.join(REPO, "bench", "out", time.strftime("protocol-%Y%m%d-%H%M%S"))
    os.makedirs(out)
    conns = [int(c) for c in a.connections.split(",")]
    print("CPU: %s, %d cores; %s; %d rounds of %d s per figure (medians), kinds interleaved"
          % (cpu_model(), os.cpu_count(), os.path.relpath(a.image, REPO), a.rounds, a.seconds))
    rows = []
    for model in a.models.split(","):
        if model == "bundled":
            path = BUNDLED
        elif model == "151m":
            path = a.m151
            if not path:
                tmp = os.path.join(out, "m151")
                subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_reference.py"), "--arch", "151m",
                                "--seed", "1", "--batch", "1", "--size", "224", "224", "--num-classes", "1000",
                                "--no-intermediates", "--out", tmp], check=True, stdout=subprocess.DEVNULL)
                path = os.path.join(tmp, "model.safetensors")
        else:
            path = model
        p, port = start_server(path, out, os.path.basename(model))
        try:
            md = meta(port)
            h, w = md["input_size"]
            kinds = bodies(out, a.image, h, w)
            res = {(k, c): [] for k in KINDS for c in conns}
            for rnd in range(a.rounds):
                for c in conns:
                    for k in (KINDS if rnd % 2 == 0 else KINDS[::-1]):  # alternate the order
                        res[(k, c)].append(wrk(port, k, kinds[k], c, a.seconds, out, os.path.basename(model)))
            for c in conns:
                base = statistics.median(x["rps"] for x in res[("v1", c)])
                for k in KINDS:
                    rs = res[(k, c)]
                    errors = sum(x["non2xx"] + x["connect"] + x["read"] + x["write"] + x["timeout"] for x in rs)
                    rps = statistics.median(x["rps"] for x in rs)
                    rows.append((md["arch_name"], "%dx%d" % (h, w), c, k, rps,
                                 statistics.median(x["p50_ms"] for x in rs),
                                 statistics.median(x["p99_ms"] for x in rs), rps / base, errors,
                                 os.path.getsize(kinds[k][1])))
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    print()
    print("| model | input | conns | request | body bytes | req/s | p50 ms | p99 ms | req/s vs v1 | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, size, c, k, rps, p50, p99, ratio, errors, nbytes in rows:
        print("| %s | %s | %d | %s | %d | %.0f | %.2f | %.2f | %.2f | %d |"
              % (arch, size, c, k, nbytes, rps, p50, p99, ratio, errors))
    with open(os.path.join(out, "table.md"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print("\nraw output in %s" % os.path.relpath(out, REPO))
    if any(r[8] for r in rows):
        print("ERRORS: some requests failed (see the table)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
