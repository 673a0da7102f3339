#!/bin/sh
# tsan.sh -- the threaded parts under ThreadSanitizer (`make tsan`, which builds
# build/san-thread/ with SANITIZE=thread first).
#
#  1. the Check suites of the threaded modules: test_batcher (queue, workers,
#     batching, timeouts, drain), test_decoder (the decode pool) and
#     test_httpparse (the parser, as a sanity run);
#  2. the server (http_threads 2, workers 2): wrk at saturation with valid,
#     corrupt and oversized-header uploads (bench/soak.lua) and 40 connections
#     dribbling or stalling their headers (request-head deadline 2 s), then
#     SIGTERM in the middle of the load: HTTP drain, batcher drain, stop.  It
#     must exit 0.
#  3. the model repository (explicit control, two models): 6 clients on model a
#     (OIP binary infer and /v1 predict) and 2 on model b while, for 20 s, a
#     is reloaded and given new versions, b unloaded and loaded, the index
#     read and SIGHUP sent -- the version swap under load -- then SIGTERM; it
#     must exit 0 with every answer 200 or, for b while it is unloaded, 503.
# Any ThreadSanitizer report fails the run (halt_on_error=0, so every report of
# a run is printed).  Prints REPORT lines.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${MF_BUILD:-build/san-thread}
PY=/usr/bin/python3
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1}
export OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mf_tsan.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail=0

for t in test_batcher test_decoder test_httpparse; do
  start=$(date +%s)
  if "$BUILD/tests/$t" > "$tmp/$t.log" 2>&1 && ! grep -q "ThreadSanitizer" "$tmp/$t.log"; then
    echo "REPORT tsan $t: ok ($(( $(date +%s) - start )) s, no report)"
  else
    echo "REPORT tsan $t: FAILED"
    grep -A30 "WARNING: ThreadSanitizer" "$tmp/$t.log" | head -n 60 || tail -n 30 "$tmp/$t.log"
    fail=1
  fi
done

# start_server LOG ARGS...: the server on an ephemeral port; sets pid and port
start_server() {
  log=$1
  shift
  "$BUILD/mobileformer-server" --bind 127.0.0.1 --port 0 --http_threads 2 --workers 2 "$@" 2> "$log" &
  pid=$!
  port=""
  n=0
  while [ -z "$port" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited at start"; cat "$log"; exit 1; }
    [ $n -lt 600 ] || { echo "server did not listen in 60 s"; exit 1; }
    port=$(sed -n 's/.*"msg": *"listening".*"port": *\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] || { sleep 0.1; n=$((n + 1)); }
  done
}

$PY tests/support/make_stand_in_model.py "$tmp/model.safetensors" > /dev/null
start_server "$tmp/server.log" --model "$tmp/model.safetensors" --connection_timeout_s 2 --log_requests false

img=tests/data/images
wrk -t2 -c16 -d30s -s bench/soak.lua "http://127.0.0.1:$port" -- \
  5:valid:image/jpeg:$img/photo.jpg 5:valid:image/png:$img/png_rgb.png \
  2:corrupt:image/jpeg:$img/trunc.jpg 1:huge_header:image/jpeg:$img/huge.jpg > "$tmp/wrk.txt" 2>&1 &
wrk_pid=$!
# 40 slow connections: the even ones stall inside their headers, the odd ones
# send a header line every 0.5 s for 8 s
$PY -c '
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(40)]
for i, s in enumerate(socks):
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\n" if i % 2 else b"GET /metr")
for _ in range(16):
    time.sleep(0.5)
    for s in socks[1::2]:
        try:
            s.send(b"X-Slow: 1\r\n")
        except OSError:
            pass
' "$port" &
slow_pid=$!
sleep 15
kill -TERM "$pid"
n=0
while kill -0 "$pid" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
if kill -0 "$pid" 2>/dev/null; then
  echo "REPORT tsan server: FAILED (no exit within 60 s of SIGTERM)"
  fail=1
else
  wait "$pid" && rc=0 || rc=$?
  pid=""
  wait "$wrk_pid" 2>/dev/null || true
  wait "$slow_pid" 2>/dev/null || true
  reports=$(grep -c "WARNING: ThreadSanitizer" "$tmp/server.log" || true)
  stopped=$(grep '"msg":"stopped"' "$tmp/server.log" | head -n 1 | sed 's/.*"msg":"stopped",//; s/}$//')
  reaped=$(grep -c '"msg":"closed connections that did not send' "$tmp/server.log" || true)
  answers=$(sed -n 's/^soak-json .*"status":\({[^}]*}\).*/\1/p' "$tmp/wrk.txt")
  if [ "$rc" -eq 0 ] && [ "$reports" -eq 0 ]; then
    echo "REPORT tsan server: ok (15 s of load, SIGTERM under load, exit 0, no report; answers $answers; slow-client reaper ran $reaped times; stopped: $stopped)"
  else
    echo "REPORT tsan server: FAILED (exit $rc, $reports ThreadSanitizer reports)"
    grep -A40 "WARNING: ThreadSanitizer" "$tmp/server.log" | head -n 120
    fail=1
  fi
fi
# 3. the repository swap under load
repo=$tmp/repo
mkdir -p "$repo/a/1" "$repo/b/1"
cp "$tmp/model.safetensors" "$repo/a/1/model.safetensors"
cp "$tmp/model.safetensors" "$repo/b/1/model.safetensors"
start_server "$tmp/repo.log" --model_repository "$repo" --model_control explicit --log_requests false
if $PY - "$port" "$pid" "$repo" "$img/photo.jpg" > "$tmp/swap.txt" 2>&1 <<'PYEOF'
import http.client, json, os, shutil, signal, struct, sys, threading, time
port, pid, repo, photo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
jpeg = open(photo, "rb").read()
x = struct.pack("<%df" % (3 * 32 * 32), *([0.25] * (3 * 32 * 32)))
hdr = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                              "parameters": {"binary_data_size": len(x)}}]}).encode()
stop, lock, seen = threading.Event(), threading.Lock(), {}
def client(model, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not stop.is_set():
        if i % 2:
            c.request("POST", "/v2/models/%s/infer" % model, body=hdr + x,
                      headers={"Inference-Header-Content-Length": str(len(hdr))})
        else:
            c.request("POST", "/v1/models/%s/predict" % model, body=jpeg, headers={"Content-Type": "image/jpeg"})
        r = c.getresponse(); r.read()
        with lock:
            seen[(model, r.status)] = seen.get((model, r.status), 0) + 1
def api(path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("POST", path, body=b"")
    r = c.getresponse(); r.read(); c.close()
    return r.status
ts = [threading.Thread(target=client, args=("a", i)) for i in range(6)] + \
     [threading.Thread(target=client, args=("b", i)) for i in range(2)]
for t in ts: t.start()
t0, k, ops = time.time(), 2, 0
while time.time() - t0 < 20:
    os.makedirs("%s/a/%d" % (repo, k), exist_ok=True)
    shutil.copyfile("%s/a/1/model.safetensors" % repo, "%s/a/%d/model.safetensors" % (repo, k))
    k += 1
    assert api("/v2/repository/models/a/load") == 200
    assert api("/v2/repository/models/b/unload") == 200
    assert api("/v2/repository/index") == 200
    assert api("/v2/repository/models/b/load") == 200
    os.kill(pid, signal.SIGHUP)
    ops += 4
stop.set()
for t in ts: t.join()
ok = all(st == 200 or (m == "b" and st == 503) for (m, st) in seen)
print("swaps %d (a up to version %d), answers %s" % (ops, k - 1, json.dumps({"%s %d" % key: v for key, v in seen.items()})))
sys.exit(0 if ok and seen.get(("a", 200)) else 1)
PYEOF
then swap_ok=1; else swap_ok=0; fi
kill -TERM "$pid"
n=0
while kill -0 "$pid" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
if kill -0 "$pid" 2>/dev/null; then
  echo "REPORT tsan repository: FAILED (no exit within 60 s of SIGTERM)"
  fail=1
else
  wait "$pid" && rc=0 || rc=$?
  pid=""
  reports=$(grep -c "WARNING: ThreadSanitizer" "$tmp/repo.log" || true)
  if [ "$rc" -eq 0 ] && [ "$reports" -eq 0 ] && [ "$swap_ok" -eq 1 ]; then
    echo "REPORT tsan repository: ok (20 s of reloads, unloads, new versions and SIGHUP under load, exit 0, no report; $(tail -n 1 "$tmp/swap.txt"))"
  else
    echo "REPORT tsan repository: FAILED (exit $rc, $reports ThreadSanitizer reports, clients ok $swap_ok)"
    tail -n 20 "$tmp/swap.txt"
    grep -A40 "WARNING: ThreadSanitizer" "$tmp/repo.log" | head -n 160
    fail=1
  fi
fi
exit $fail
