#!/usr/bin/env python3
"""bench/uploads.py -- what phone-sized photos cost, and what they do to small
uploads beside them (`make bench-uploads`).

    /usr/bin/python3 bench/uploads.py [--photos DIR] [--model M] [--seconds 20]
                                      [--rounds 2] [--baseline-server BIN]

Photos: the JPEGs in --photos (camera photos, e.g. a local clone of
github.com/recurser/exif-orientation-examples; never committed here), else
photo-like pictures made here.  Each is also scaled to 12 MP (4000 x 3000, the
long side as the original's) as a phone sends it, EXIF kept.  Model: --model, else a
synthetic mobile_former_151m (tools/make_reference.py) with ImageNet
preprocessing (resize 256, crop 224).  Servers: build/mobileformer-server
with its defaults (workers, http_threads and decode_threads = cores),
log_requests off, once with jpeg_scaled_decode false (PIL-exact) and once
true; --baseline-server adds another binary (an older build) for comparison.

1. Decode costs: each 12 MP photo and each original posted 5 times to each
   server; the server's own decode and preprocess times (latency_ms of the
   answer), medians; and how far scaling moves the answer: top-1 agreement
   and the largest change of any probability, over every photo at both sizes.
2. Small uploads beside large ones, open loop (each request on a new
   connection at a fixed rate, whatever the answers do, so the figure is the
   waiting, not the client's pace): 640 x 427 photos at 40 per second for
   --seconds, alone and with 12 MP photos arriving beside them at 3 per
   second; p50, p99 and max of the small ones.  The configurations take
   turns within each round (interleaved); --rounds rounds, the table keeps
   every round.
Prints the CPU model, the tables, and writes raw answers to bench/out/uploads-*/.
"""
import argparse
import glob
import http.client
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

from PIL import Image, ImageDraw

from benchutil import cpu_model  # noqa: E402  (bench/, the script's own folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(REPO, os.environ.get("MF_BUILD", "build"), "mobileformer-server")


def made_photo(w, h, seed):
    rng = random.Random(seed)
    im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    d = ImageDraw.Draw(im)
    for _ in range(60):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(w // 40, w // 5)
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return Image.blend(im, Image.effect_noise((w, h), 50).convert("RGB"), 0.2)


def jpeg(im, exif=None, quality=90):
    b = io.BytesIO()
    if exif:
        im.save(b, "JPEG", quality=quality, exif=exif)
    else:
        im.save(b, "JPEG", quality=quality)
    return b.getvalue()


def load_photos(directory, out):
    """[(name, original bytes, 12 MP bytes)]"""
    photos = []
    files = sorted(glob.glob(os.path.join(directory, "*.jpg"))) if directory else []
    if files:
        for f in files:
            data = open(f, "rb").read()
            with Image.open(f) as im:
                exif = im.info.get("exif")
                w, h = im.size
                big = im.convert("RGB").resize((4000, 3000) if w >= h else (3000, 4000), Image.Resampling.LANCZOS)
            photos.append((os.path.basename(f), data, jpeg(big, exif, 92)))
    else:
        for i in range(6):
            im = made_photo(1800, 1200, i)
            photos.append(("made_%d.jpg" % i, jpeg(im), jpeg(im.resize((4000, 3000), Image.Resampling.LANCZOS), None, 92)))
    with open(os.path.join(out, "photos.txt"), "w") as f:
        for name, a, b in photos:
            f.write("%s %d %d\n" % (name, len(a), len(b)))
    return photos


def start(binary, args, out, tag):
    log = os.path.join(out, "server-%s.log" % tag)
    p = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", "0", "--log_requests", "false"] + args,
                         stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline:
        for line in open(log, errors="replace"):
            if '"listening"' in line:
                return p, json.loads(line)["port"]
        if p.poll() is not None:
            sys.exit("%s exited: see %s" % (binary, log))
        time.sleep(0.05)
    p.kill()
    sys.exit("server did not start: " + log)


def post(port, data, path="/v1/predict?top_k=1000", timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=data, headers={"Content-Type": "image/jpeg", "Connection": "close"})
        r = c.getresponse()
        body = r.read()
        return r.status, body
    finally:
        c.close()


def decode_costs(servers, photos):
    """Median decode / preprocess ms per server per size; probability changes scaled vs exact."""
    rows, answers = {}, {}
    for tag, (_, port) in servers.items():
        for size in ("12 MP", "original"):
            dec, pre = [], []
            for name, orig, big in photos:
                data = big if size == "12 MP" else orig
                for k in range(5):
                    st, body = post(port, data)
                    assert st == 200, body[:200]
                    a = json.loads(body)
                    dec.append(a["latency_ms"]["decode"])
                    pre.append(a["latency_ms"]["preprocess"])
                    if k == 0:
                        answers[(tag, size, name)] = {p["index"]: p["probability"] for p in a["predictions"]}
            rows[(tag, size)] = (statistics.median(dec), statistics.median(pre))
    return rows, answers


def open_loop(port, small, big, seconds, big_rate, small_rate=40.0):
    """Latencies (s) of the small uploads, each on a new connection at a fixed rate."""
    lat, errors, lock, threads = [], [], threading.Lock(), []

    def one(data, record):
        t = time.time()
        try:
            st, _ = post(port, data)
        except Exception as e:  # noqa: BLE001 -- a refused or reset connection is an outcome
            st = repr(e)
        d = time.time() - t
        if record:
            with lock:
                lat.append(d)
                if st != 200:
                    errors.append(st)

    t0 = time.time()
    n_small = int(seconds * small_rate)
    events = [(i / small_rate, 0) for i in range(n_small)]
    if big_rate:
        events += [(0.013 + i / big_rate, 1) for i in range(int(seconds * big_rate))]
    events.sort()
    rng = random.Random(1)
    for at, kind in events:
        delay = t0 + at - time.time()
        if delay > 0:
            time.sleep(delay)
        data = rng.choice(big) if kind else rng.choice(small)
        th = threading.Thread(target=one, args=(data, kind == 0))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    lat.sort()
    return lat, errors


def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", help="a folder of camera JPEGs (default: made here)")
    ap.add_argument("--model", help="model file (default: a synthetic mobile_former_151m)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline-server", help="another server binary to compare (e.g. an older build)")
    a = ap.parse_args()
    out = os.path.join(REPO, "bench", "out", time.strftime("uploads-%Y%m%d-%H%M%S"))
    os.makedirs(out)
    model = a.model
    if not model:
        tmp = os.path.join(out, "m151")
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_reference.py"), "--arch", "151m",
                        "--seed", "1", "--batch", "1", "--size", "224", "224", "--no-intermediates", "--out", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        model = os.path.join(tmp, "model.safetensors")
    photos = load_photos(a.photos, out)
    small = []
    for name, orig, _ in photos:
        with Image.open(io.BytesIO(orig)) as im:
            exif = im.info.get("exif")
            w, h = im.size
            small.append(jpeg(im.convert("RGB").resize((640, 427) if w >= h else (427, 640)), exif, 85))
    print("CPU: %s, %d cores; model %s; %d photos (%s)" % (cpu_model(), os.cpu_count(), os.path.basename(model),
                                                          len(photos), a.photos or "made here"))
    # (one address opens every connection here: the per-client limit is off)
    configs = [("exact", SERVER, ["--max_connections_per_client", "0"]),
               ("scaled", SERVER, ["--max_connections_per_client", "0", "--jpeg_scaled_decode", "true"])]
    if a.baseline_server:
        configs.insert(0, ("baseline", a.baseline_server, []))
    servers = {}
    try:
        for tag, binary, args in configs:
            servers[tag] = start(binary, ["--model", model] + args, out, tag)
        # 1. decode costs
        rows, answers = decode_costs({k: v for k, v in servers.items() if k in ("exact", "scaled")}, photos)
        print("\n1. Decode and preprocess, server-side medians (ms), 5 posts of each photo")
        print("| photo size | decode exact | decode scaled | preprocess exact | preprocess scaled | "
              "decode+preprocess exact / scaled |")
        print("|---|---|---|---|---|---|")
        for size in ("12 MP", "original"):
            de, pe = rows[("exact", size)]
            ds, ps = rows[("scaled", size)]
            print("| %s | %.1f | %.1f | %.1f | %.1f | %.1fx |" % (size, de, ds, pe, ps, (de + pe) / (ds + ps)))
        agree, n, worst = 0, 0, 0.0
        for (tag, size, name), pe in answers.items():
            if tag != "exact":
                continue
            ps = answers[("scaled", size, name)]
            n += 1
            agree += max(pe, key=pe.get) == max(ps, key=ps.get)
            worst = max(worst, max(abs(pe[k] - ps.get(k, 0.0)) for k in pe))
        print("\nScaled vs exact answers: the same top-1 on %d of %d (photo, size) pairs; the largest change of "
              "any probability %.4f" % (agree, n, worst))
        # 2. open loop
        print("\n2. 640x427 photos at 40/s, a new connection each, alone and beside 12 MP photos at 3/s "
              "(%d s each, %d rounds, interleaved)" % (a.seconds, a.rounds))
        print("| server | round | small alone p50 / p99 / max ms | beside 12 MP p50 / p99 / max ms | "
              "p99 beside / alone | errors |")
        print("|---|---|---|---|---|---|")
        bigs = [b for _, _, b in photos]
        results = {}
        for rnd in range(a.rounds):
            for tag in (list(servers) if rnd % 2 == 0 else list(servers)[::-1]):
                port = servers[tag][1]
                alone, e1 = open_loop(port, small, bigs, a.seconds, 0)
                beside, e2 = open_loop(port, small, bigs, a.seconds, 3.0)
                results.setdefault(tag, []).append((alone, beside))
                print("| %s | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %.2fx | %d |"
                      % (tag, rnd + 1, pct(alone, 0.5), pct(alone, 0.99), alone[-1] * 1000, pct(beside, 0.5),
                         pct(beside, 0.99), beside[-1] * 1000, pct(beside, 0.99) / pct(alone, 0.99),
                         len(e1) + len(e2)), flush=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump({"decode": {"%s %s" % k: v for k, v in rows.items()},
                       "open_loop": {t: [[al, be] for al, be in v] for t, v in results.items()}}, f)
    finally:
        for p, _ in servers.values():
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    print("\nraw output in %s" % os.path.relpath(out, REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
