"""Write the seed corpora of the libFuzzer targets into tests/fuzz/seeds/<target>/.

    /usr/bin/python3 tests/fuzz/make_seeds.py        (the result is committed)

image      none here: tests/fuzz/run.sh seeds it with tests/data/images/*.jpg, *.png
multipart  real bodies as browsers and curl send them (one or several images, quoted
           boundaries, preamble and epilogue, other fields), "Content-Type\\nbody"
route      every endpoint with right and wrong methods, top_k values, content types, keys
http       raw requests: GETs, pipelined ones, predict with PNG, JPEG, multipart, chunked
           bodies, Expect: 100-continue, too large, HTTP/1.0, a bad request line
config     config/server.json, a few files, environments and flag lists ("json\\0env\\0args")
oip        infer bodies: JSON flat and nested, binary FP32 and BYTES with the 4-byte length
           prefix (its header length first), base64 images, classification, bad framings,
           gzip and zlib compressed bodies
model_config  config.json files: every setting, the three version policies, labels, bad ones
model      two tiny complete models (tools/make_reference.py: a 1-block and a 3-block
           architecture), one with labels and gray preprocessing, plus corruptions:
           truncated, wrong architecture for its tensors, a tensor missing, bad offsets
Everything is deterministic (fixed seeds), small (about 200 KB in all).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SEEDS = os.path.join(HERE, "seeds")
sys.path.insert(0, os.path.join(REPO, "tools"))

MICRO = {"name": "micro", "stem": 4, "tokens": 2, "token_dim": 8, "groups": 1,
         "classifier_width": 8, "last_exp": 2, "blocks": [["A", 2, 4, 2, 0]]}
TINY = {"name": "tiny", "stem": 8, "tokens": 3, "token_dim": 16, "groups": 1,
        "classifier_width": 32, "last_exp": 6,
        "blocks": [["A", 2, 8, 2, 0], ["B3", 3, 16, 2, 2], ["B", 2, 16, 1, 2]]}


def out_dir(target):
    d = os.path.join(SEEDS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def multipart(parts, boundary, preamble=b"", epilogue=b""):
    out = bytearray(preamble)
    for field, filename, ctype, data in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % field
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += ("Content-Disposition: %s\r\n" % disp).encode()
        if ctype:
            out += ("Content-Type: %s\r\n" % ctype).encode()
        out += b"\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n" + epilogue
    return bytes(out)


def seeds_multipart():
    d = out_dir("multipart")
    img = read(os.path.join(REPO, "tests", "data", "images", "base_gray.jpg"))
    png = read(os.path.join(REPO, "tests", "data", "images", "png_gray1.png"))
    b = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    cases = {
        "browser": ("multipart/form-data; boundary=" + b,
                    multipart([("image", "photo.jpg", "image/jpeg", img)], b)),
        "curl_two": ("multipart/form-data; boundary=------------------------d74496d66958873e",
                     multipart([("image", "a.jpg", "image/jpeg", img), ("image", "b.png", "image/png", png)],
                               "------------------------d74496d66958873e")),
        "quoted": ('multipart/form-data; boundary="quoted boundary"; charset=utf-8',
                   multipart([("image", None, None, b"\xff\xd8\xff\xe0")], "quoted boundary")),
        "mixed_fields": ("multipart/form-data; boundary=XyZ",
                         multipart([("comment", None, "text/plain", b"hello"), ("image", 'x\\"y.png', None, png),
                                    ("top_k", None, None, b"3")], "XyZ")),
        "preamble": ("Multipart/Form-Data; Boundary=abc",
                     multipart([("image", "p.png", "image/png", b"\x89PNG\r\n\x1a\n")], "abc",
                               preamble=b"This is the preamble.\r\n", epilogue=b"epilogue\r\n")),
        "empty_part": ("multipart/form-data; boundary=e", multipart([("image", "", "", b"")], "e")),
        "no_headers": ("multipart/form-data; boundary=n", b"--n\r\n\r\ndata\r\n--n--"),
        "padding": ("multipart/form-data; boundary=pad", b"--pad  \r\nContent-Disposition: form-data; name=image\r\n\r\nX\r\n--pad \t\r\n"
                    b"Content-Disposition: form-data; name=\"image\"; filename=b\r\n\r\nY\r\n--pad--"),
    }
    for name, (ct, body) in cases.items():
        write(d, name, ct.encode() + b"\n" + body)


def seeds_route():
    d = out_dir("route")
    paths = ["/v1/predict", "/v1/models/tiny_test/predict", "/v2/health/live", "/v2/health/ready",
             "/v2/models/tiny_test", "/v2/models/tiny_test/ready", "/metrics", "/", "/index.html",
             "/app.css", "/app.js", "/v1/models//predict", "/v2/models/a/b/ready", "/nope", "/v2",
             "/v2/models/tiny_test/versions/1", "/v2/models/tiny_test/versions/1/infer", "/v2/models/x/infer",
             "/v1/models/a/versions/2/predict", "/v2/repository/index", "/v2/repository/models/a/load",
             "/v2/repository/models/a/unload", "/v2/models/a/versions/01/ready"]
    methods = ["GET", "POST", "HEAD", "OPTIONS", "DELETE"]
    i = 0
    for p in paths:
        for m in methods:
            if (i % 3) == 0 or m in ("GET", "POST"):
                write(d, "r%03d" % i, "%s\n%s" % (m, p))
            i += 1
    extras = [
        "POST\n/v1/predict\n3\nimage/png\nBearer s3cret-key",
        "POST\n/v1/predict\n99999999999999999999999\nmultipart/form-data; boundary=\"a b\"\nbearer   s3cret-key",
        "POST\n/v1/predict\n0\n IMAGE/JPEG ; q=1\nBearer s3cret-kez",
        "POST\n/v1/predict\n\napplication/octet-stream\nBasic dXNlcjpwYXNz",
        "POST\n/v1/models/x/predict\n+2\nmultipart/form-data; boundary=----x; other=1\n",
        "GET\n/v2/models/tiny_test\n1.5\ntext/plain; charset=utf-8\nBearer ",
    ]
    for j, e in enumerate(extras):
        write(d, "x%02d" % j, e)


def seeds_config():
    d = out_dir("config")
    server_json = read(os.path.join(REPO, "config", "server.json"))
    write(d, "server_json", server_json + b"\0\0")
    write(d, "small_file", b'{"port": 0, "bind": "::1", "workers": 2, "log_requests": false, '
          b'"max_body_bytes": 2147483648, "api_key": "k"}\0\0')
    write(d, "env", b"{}\0MF_PORT=9000\nMF_WORKERS=3\nMF_LOG_REQUESTS=off\nMF_MODEL=/m.safetensors\n"
          b"MF_BUILD=build\nPATH=/usr/bin\0")
    write(d, "flags", b"{}\0\0--port\n0\n--max-batch=16\n--model_name\nx\n--cors_origin=*\n--bind=127.0.0.1")
    write(d, "all_three", b'{"max_queue": 10}\0MF_MAX_QUEUE=20\0--max_queue\n30\n--connection-timeout-s=5')
    write(d, "help", b"\0\0--help")
    write(d, "bad", b'{"port": "80", "wokers": 1}\0MF_PORT=http\0--bogus\n1\n--port')


def seeds_model():
    d = out_dir("model")
    from mfformat import read_model, encode_header
    tmp = tempfile.mkdtemp(prefix="mf_fuzz_seeds_")
    try:
        files = {}
        for name, arch in (("micro", MICRO), ("tiny", TINY)):
            subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_reference.py"),
                            "--arch", json.dumps(arch), "--seed", "3", "--size", "32", "32",
                            "--num-classes", "3" if name == "micro" else "10", "--no-intermediates",
                            "--out", os.path.join(tmp, name)], check=True, stdout=subprocess.DEVNULL)
            files[name] = os.path.join(tmp, name, "model.safetensors")
        micro = read(files["micro"])
        write(d, "micro", micro)
        write(d, "tiny", read(files["tiny"]))
        tensors, meta = read_model(files["micro"])

        def model(arch, tensors, num_classes=3, **meta_extra):
            m = {"format": meta["format"], "arch": json.dumps(arch, separators=(",", ":")),
                 "num_classes": str(num_classes),
                 "preprocess": json.dumps({"input_size": [32, 40], "resize": 36, "interpolation": "nearest",
                                           "mean": [0.5], "std": [0.25], "channels": 1}),
                 "labels": json.dumps(["zero", "one", "two"][:num_classes])}
            m.update(meta_extra)
            head, arrays = encode_header(tensors, m)
            return head + b"".join(a.tobytes() for a in arrays)

        write(d, "micro_gray_labels", model(MICRO, tensors))
        write(d, "micro_unaligned", model(dict(MICRO, name="x"), tensors))  # header length shifts
        write(d, "micro_truncated", micro[:len(micro) - 100])
        write(d, "micro_header_only", micro[:8 + struct.unpack("<Q", micro[:8])[0]])
        write(d, "wrong_arch", model(dict(MICRO, stem=8), tensors))
        less = dict(tensors)
        less.pop(sorted(less)[0])
        write(d, "missing_tensor", model(MICRO, less))
        write(d, "bad_classes", model(MICRO, tensors, num_classes=4))
        write(d, "preset_arch", model("26m", tensors))
        bad = bytearray(micro)
        i = bad.find(b'"data_offsets":[0,')
        if i >= 0:
            bad[i + 17:i + 18] = b"4"
        write(d, "bad_offsets", bytes(bad))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seeds_http():
    d = out_dir("http")
    png = read(os.path.join(REPO, "tests", "data", "images", "png_gray1.png"))
    jpg = read(os.path.join(REPO, "tests", "data", "images", "base_gray.jpg"))

    def post(path, ctype, body, extra=b""):
        return (b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                % (path.encode(), ctype.encode(), len(body), extra)) + body

    mp = multipart([("image", "a.png", "image/png", png), ("image", "b.jpg", "image/jpeg", jpg)], "XyZ")
    el = struct.pack("<I", len(png)) + png + struct.pack("<I", len(jpg)) + jpg
    ih = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                 "parameters": {"binary_data_size": len(el)}}],
                     "parameters": {"binary_data_output": True, "priority": 1}}).encode()
    infer_binary = (b"POST /v2/models/micro/infer HTTP/1.1\r\nhost: t\r\ninference-header-content-length: %d\r\n"
                    b"content-length: %d\r\n\r\n" % (len(ih), len(ih) + len(el))) + ih + el
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(png[i:i + 100]), png[i:i + 100]) for i in range(0, len(png), 100))
    cases = {
        "live": b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n",
        "pipelined": b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\nHEAD /v2/models/micro HTTP/1.1\r\n"
                     b"Host: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "options": b"OPTIONS /v1/predict HTTP/1.1\r\nHost: t\r\nOrigin: https://a.example\r\n\r\n",
        "png": post("/v1/predict?top_k=2", "image/png", png),
        "jpeg_model_path": post("/v1/models/micro/predict", "image/jpeg", jpg),
        "multipart": post("/v1/predict?top_k=3&x=%41", "multipart/form-data; boundary=XyZ", mp),
        "chunked": b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
                   + b"0\r\n\r\n",
        "expect": post("/v1/predict", "application/octet-stream", png, b"Expect: 100-continue\r\n"),
        "too_large": b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\nabc",
        "two_predicts": post("/v1/predict", "image/png", png) + post("/v1/predict?top_k=1", "image/png", png),
        "http10": b"GET /v2/models/micro/ready HTTP/1.0\r\n\r\n",
        "bad_line": b"GET  /x HTTP/9.9\r\n\r\n",
        "server_metadata": b"GET /v2 HTTP/1.1\r\nHost: t\r\nX-Request-ID: abc-1\r\n\r\n",
        "index": b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\n\r\n",
        "load": post("/v2/repository/models/micro/load", "application/json", b"{}"),
        "infer_json": post("/v2/models/micro/versions/1/infer", "application/json", json.dumps(
            {"id": "x", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                                    "data": [0.5] * 3072}],
             "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}).encode()),
        "infer_binary": infer_binary,
    }
    for name, data in cases.items():
        write(d, name, data)


def seeds_oip():
    d = out_dir("oip")
    def binary(header, tail):
        h = json.dumps(header).encode()
        return struct.pack("<I", len(h)) + h + tail
    flat = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                                    "data": [0.5] * (3 * 32 * 32)}]}
    write(d, "json_flat", json.dumps(flat))
    nested = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                          "data": [[[[0.25] * 32] * 32] * 3]}],
              "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
              "parameters": {"priority": 1, "timeout": 5000}}
    write(d, "json_nested", json.dumps(nested))
    t = struct.pack("<%df" % (3 * 32 * 32), *([1.0] * (3 * 32 * 32)))
    write(d, "binary_fp32", binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                                                "parameters": {"binary_data_size": len(t)}}],
                                    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}, t))
    pngs = [os.path.join(REPO, "tests", "data", "images", f)
            for f in os.listdir(os.path.join(REPO, "tests", "data", "images")) if f.endswith(".png")]
    png = read(min(sorted(pngs), key=os.path.getsize))  # the smallest real PNG
    el = struct.pack("<I", len(png)) + png + struct.pack("<I", 3) + b"abc"
    write(d, "binary_bytes", binary({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                 "parameters": {"binary_data_size": len(el)}}],
                                     "parameters": {"binary_data_output": True}}, el))
    import base64
    write(d, "json_base64", json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                                    "data": [base64.b64encode(png).decode(), "QUJD"]}]}))
    write(d, "bad_size", binary({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                             "parameters": {"binary_data_size": 8}}]},
                                struct.pack("<I", 0xFFFFFFF0) + b"abcd"))
    write(d, "header_too_long", struct.pack("<I", 1 << 30) + b'{"inputs": []}')
    write(d, "two_inputs", json.dumps({"inputs": [flat["inputs"][0], flat["inputs"][0]]}))
    import gzip
    import zlib
    write(d, "gzip_nested", gzip.compress(json.dumps(nested).encode(), mtime=0))
    write(d, "zlib_flat", zlib.compress(json.dumps(flat).encode()))


def seeds_model_config():
    d = out_dir("model_config")
    write(d, "all", json.dumps({"max_batch": 16, "max_delay_us": 500, "max_queue": 64, "request_timeout_ms": 2000,
                                "version_policy": {"latest": 2}, "precision": "fp32",
                                "labels": ["a", "b", "c"]}))
    write(d, "all_versions", '{"version_policy": {"all": true}}')
    write(d, "specific", '{"version_policy": {"specific": [1, 3, 7]}, "precision": "bf16"}')
    write(d, "empty", "{}")
    write(d, "bad", '{"max_batch": 0, "version_policy": {"latest": 1, "all": true}, "colour": 1}')


if __name__ == "__main__":
    seeds_http()
    seeds_multipart()
    seeds_route()
    seeds_config()
    seeds_model()
    seeds_oip()
    seeds_model_config()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(SEEDS) for f in fs)
    print("seeds written to %s: %d bytes" % (SEEDS, total))
