#!/bin/sh
# tsan.sh -- the threaded parts under ThreadSanitizer (`make tsan`, which builds
# build/san-thread/ with SANITIZE=thread first).
#
#  1. the Check suites of the threaded modules: test_batcher (queue, workers,
#     batching, timeouts, drain) and test_httpparse (the parser, as a sanity run);
#  2. the server (http_threads 2, workers 2): wrk at saturation with valid,
#     corrupt and oversized-header uploads (bench/soak.lua) and 40 connections
#     dribbling or stalling their headers (request-head deadline 2 s), then
#     SIGTERM in the middle of the load: HTTP drain, batcher drain, stop.  It
#     must exit 0.
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

for t in test_batcher test_httpparse; do
  start=$(date +%s)
  if "$BUILD/tests/$t" > "$tmp/$t.log" 2>&1 && ! grep -q "ThreadSanitizer" "$tmp/$t.log"; then
    echo "REPORT tsan $t: ok ($(( $(date +%s) - start )) s, no report)"
  else
    echo "REPORT tsan $t: FAILED"
    grep -A30 "WARNING: ThreadSanitizer" "$tmp/$t.log" | head -n 60 || tail -n 30 "$tmp/$t.log"
    fail=1
  fi
done

$PY tests/support/make_stand_in_model.py "$tmp/model.safetensors" > /dev/null
"$BUILD/mobileformer-server" --bind 127.0.0.1 --port 0 --model "$tmp/model.safetensors" \
  --http_threads 2 --workers 2 --connection_timeout_s 2 --log_requests false 2> "$tmp/server.log" &
pid=$!
port=""
n=0
while [ -z "$port" ]; do
  kill -0 "$pid" 2>/dev/null || { echo "server exited at start"; cat "$tmp/server.log"; exit 1; }
  [ $n -lt 600 ] || { echo "server did not listen in 60 s"; exit 1; }
  port=$(sed -n 's/.*"msg": *"listening".*"port": *\([0-9][0-9]*\).*/\1/p' "$tmp/server.log" | head -n 1)
  [ -n "$port" ] || { sleep 0.1; n=$((n + 1)); }
done

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
exit $fail
