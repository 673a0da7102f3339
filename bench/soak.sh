#!/bin/sh
# soak.sh -- the service at saturation for a long time, with hostile input mixed in
# (`make soak`; tests/sh/test_soak.sh runs one minute of it in `make test`).
#
#   sh bench/soak.sh [--duration S] [--warmup S] [--connections C] [--model M]
#
# Starts $MF_BUILD/mobileformer-server on a free loopback port (max_body_bytes
# 1 MiB, request log on, to a file) and runs wrk for S seconds (default 600) over C
# connections (default 32, two wrk threads).  Each request picks, at random
# (bench/soak.lua): 70% a valid image (JPEG and PNG fixtures of tests/data/images),
# 20% a corrupt one (truncated, bad CRC, random bytes, a zero-size header), 5% an
# image whose header claims 60000x60000 pixels (413 image_too_large), 5% a 2 MiB
# body, over max_body_bytes (413 body_too_large), and decode bombs: a 65-scan
# progressive JPEG (422 image_too_complex), a 5000x5000 64-scan one past the
# decode budget (decode_timeout_ms 100: 422 decode_timeout; it takes about 255 ms
# whole on a quiet Intel Xeon core, so it must be over budget even when the
# machine is idle) and a 1 x 40,000,000
# PNG (413 from its header).  Beside wrk, 40 slow clients (from 127.0.0.2-5) each
# announce a 1 MB body and send a byte a second; each must get its 408 and is
# replaced by a new one.  The server's VmRSS is sampled every second.  Checks,
# one REPORT line each; exits 1 if any fails:
#   - statuses: only 200, 400, 413, 422, and 503 if the queue overflows, counted;
#     every 200/400/422 matches the share of valid/corrupt/bomb requests sent;
#   - slow bodies: every slow client that finished got a 408;
#   - socket errors: at most one per 2 MiB body (the server answers 413 before
#     reading such a body and closes the connection; the client may see the reset
#     before the answer), none otherwise;
#   - resident memory: the resting VmRSS (the lowest sample in 10 s; a decode
#     bomb holds ~50 MB for a moment and gives it back) in the last 10 s exceeds
#     the one in the first 10 s after the warm-up (W seconds, default S/5) by
#     less than 5% (SOAK_RSS_LIMIT_PCT; reported only, for a server built with a sanitizer: its
#     allocator quarantines memory; LeakSanitizer judges that build at exit);
#   - descriptors: /proc/PID/fd counted before wrk and after it has closed its
#     connections are equal;
#   - the server is alive at the end and exits 0 on SIGTERM.
# Raw outputs (wrk, RSS samples, the end of the server log) go to
# bench/out/soak-YYYYmmdd-HHMMSS/.  M defaults to the bundled model, or a stand-in
# with its architecture while it is absent (tests/support/make_stand_in_model.py).
set -eu
cd "$(dirname "$0")/.."
BUILD=${MF_BUILD:-build}
SERVER=$BUILD/mobileformer-server
PY=/usr/bin/python3
MODEL=models/fashion_mnist_mobileformer.safetensors
DURATION=600
WARMUP=""
CONNECTIONS=32
MAX_BODY=1048576
export OPENBLAS_NUM_THREADS=1

usage() {
  sed -n '5p' "$0" | sed 's/^# *//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --duration) DURATION=$2 ;;
    --warmup) WARMUP=$2 ;;
    --connections) CONNECTIONS=$2 ;;
    --model) MODEL=$2 ;;
    *) usage ;;
  esac
  shift 2
done
[ -n "$WARMUP" ] || WARMUP=$((DURATION / 5))

out=bench/out/soak-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mf_soak.XXXXXX")
pid=""
sampler=""
cleanup() {
  rc=$?
  trap - EXIT INT TERM HUP
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
  fi
  [ -f "$tmp/server.log" ] && tail -n 200 "$tmp/server.log" > "$out/server-log-tail.txt"
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail=0
check() { # check OK|FAIL message
  echo "REPORT soak $1: $2"
  [ "$1" = ok ] || fail=1
}
die() {
  echo "soak.sh: $*" >&2
  exit 1
}

command -v wrk >/dev/null 2>&1 || die "wrk is missing (sh scripts/install-deps.sh test)"
[ -x "$SERVER" ] || die "$SERVER is not built (make)"
if [ ! -f "$MODEL" ]; then
  [ "$MODEL" = models/fashion_mnist_mobileformer.safetensors ] || die "no model $MODEL"
  echo "note: $MODEL is not there yet; using a stand-in (same architecture, synthetic weights)"
  $PY tests/support/make_stand_in_model.py "$tmp/stand_in.safetensors" >/dev/null
  MODEL=$tmp/stand_in.safetensors
fi

# payloads
img=tests/data/images
head -c $((2 * MAX_BODY)) /dev/zero > "$tmp/big.bin"
[ -x "$BUILD/tests/make_bombs" ] || die "$BUILD/tests/make_bombs is not built (make $BUILD/tests/make_bombs)"
"$BUILD/tests/make_bombs" scans 512 512 65 "$tmp/scans65.jpg"
"$BUILD/tests/make_bombs" scans 5000 5000 64 "$tmp/slow64.jpg"
$PY - "$tmp/thin.png" <<'EOF'
import struct, sys, zlib
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
c = zlib.compressobj(9)
idat = b"".join(c.compress(b"\0\0" * 100000) for _ in range(400)) + c.flush()
ihdr = struct.pack(">IIBBBBB", 1, 40000000, 8, 0, 0, 0, 0)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
EOF
# weights out of 2005: the bombs are rare (one in 400) because each costs up to
# decode_timeout_ms of an HTTP thread's time
set -- \
  280:valid:image/jpeg:$img/photo.jpg 240:valid:image/jpeg:$img/base.jpg \
  200:valid:image/jpeg:$img/exif_6.jpg 200:valid:image/jpeg:$img/base_progressive.jpg \
  240:valid:image/png:$img/png_rgb.png 240:valid:image/png:$img/png_palette.png \
  \
  80:corrupt:image/jpeg:$img/trunc.jpg 80:corrupt:image/png:$img/trunc.png \
  80:corrupt:image/png:$img/badcrc.png 80:corrupt:application/octet-stream:$img/random.bin \
  80:corrupt:image/jpeg:$img/zero.jpg \
  \
  60:huge_header:image/jpeg:$img/huge.jpg 40:huge_header:image/png:$img/huge.png \
  100:big_body:application/octet-stream:$tmp/big.bin \
  \
  2:bomb:image/jpeg:$tmp/scans65.jpg 1:bomb:image/jpeg:$tmp/slow64.jpg 2:thin_png:image/png:$tmp/thin.png

"$SERVER" --bind 127.0.0.1 --port 0 --model "$MODEL" --max_body_bytes $MAX_BODY --decode_timeout_ms 100 \
  2> "$tmp/server.log" &
pid=$!
port=""
n=0
while [ -z "$port" ]; do
  kill -0 "$pid" 2>/dev/null || die "the server exited at start: $(tail -n 5 "$tmp/server.log")"
  [ $n -lt 300 ] || die "the server did not start listening in 30 s"
  port=$(sed -n 's/.*"msg": *"listening".*"port": *\([0-9][0-9]*\).*/\1/p' "$tmp/server.log" | head -n 1)
  [ -n "$port" ] || { sleep 0.1; n=$((n + 1)); }
done
echo "soak: server pid $pid on 127.0.0.1:$port, model $MODEL; wrk ${DURATION}s x $CONNECTIONS connections, warm-up ${WARMUP}s; outputs in $out/"

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }
fd_before=$(fds)
(
  t=0
  while kill -0 "$pid" 2>/dev/null; do
    echo "$t $(rss)"
    sleep 1
    t=$((t + 1))
  done
) > "$out/rss.txt" 2>/dev/null &
sampler=$!

# the slow clients, for as long as wrk runs
$PY - "$port" "$DURATION" > "$out/slow.json" <<'EOF' &
import json, select, socket, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
head = b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
n_opened = [0]
def open_one():
    # four source addresses: a whole batch is replaced at once while the old
    # ones still close, which one address's max_connections_per_client would refuse
    s = socket.socket()
    n_opened[0] += 1
    s.bind(("127.0.0.%d" % (2 + n_opened[0] % 4), 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(head)
    s.setblocking(False)
    return [s, b""]
live, done, got408, t0, last, other = [open_one() for _ in range(40)], 0, 0, time.time(), 0, {}
while time.time() - t0 < duration - 2:
    now = time.time()
    if now - last >= 1:
        last = now
        for c in live:
            try:
                c[0].send(b"\0")
            except OSError:
                pass
    r, _, _ = select.select([c[0] for c in live], [], [], 0.2)
    for c in [c for c in live if c[0] in r]:
        try:
            d = c[0].recv(65536)
        except OSError:
            d = b""
        c[1] += d
        if not d:
            done += 1
            got408 += c[1].startswith(b"HTTP/1.1 408 ")
            if not c[1].startswith(b"HTTP/1.1 408 "):
                k = repr(c[1][:60])
                other[k] = other.get(k, 0) + 1
            c[0].close()
            live.remove(c)
            live.append(open_one())
for c in live:
    c[0].close()
print(json.dumps({"finished": done, "got_408": got408, "other": other}))
EOF
slow=$!
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s bench/soak.lua \
  "http://127.0.0.1:$port" -- "$@" > "$out/wrk.txt" 2>&1 || true
wait "$slow" || true
sleep 2 # wrk's connections are closed; let the server see it
fd_after=$(fds)
kill "$sampler" 2>/dev/null || true
sampler=""
line=$(sed -n 's/^soak-json //p' "$out/wrk.txt")
[ -n "$line" ] || die "wrk printed no summary: $(tail -n 5 "$out/wrk.txt")"
echo "$line" > "$out/summary.json"

# every figure from wrk's summary and the RSS samples, checked in one place
# (a sanitizer's allocator keeps freed memory in quarantine: RSS is reported, not judged)
san=$(ldd "$SERVER" | grep -o 'lib[at]san' | head -n 1 || true)
if $PY - "$out/summary.json" "$out/rss.txt" "$WARMUP" "$fd_before" "$fd_after" "$san" "$out/slow.json" > "$out/checks.txt" <<'EOF'
import json, os, sys
s = json.load(open(sys.argv[1]))
try:
    slow = json.load(open(sys.argv[7]))
except ValueError:
    slow = {"finished": 0, "got_408": 0}
warmup, fd_before, fd_after = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sanitizer = sys.argv[6]
rss = [tuple(map(int, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 2]
out, ok = [], True

def check(good, msg):
    global ok
    out.append("%s %s" % ("ok" if good else "FAIL", msg))
    ok = ok and good

st = {int(k): v for k, v in s["status"].items()}
sent = s["sent"]
answered = sum(st.values())
errors = s["errors"]
sock_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
check(set(st) <= {200, 400, 413, 422, 503},
      "statuses over %d answers in %.0f s (%.0f req/s, p50 %.1f ms, p99 %.1f ms): %s"
      % (answered, s["seconds"], s["rps"], s["p50_ms"], s["p99_ms"],
         ", ".join("%d: %d" % kv for kv in sorted(st.items()))))
check(st.get(200, 0) + st.get(503, 0) >= 0.98 * sent.get("valid", 0) - 64 and
      st.get(400, 0) >= 0.98 * sent.get("corrupt", 0) - 64 and
      st.get(422, 0) >= 0.98 * sent.get("bomb", 0) - 64,
      "sent %s; 200 answers match the valid images, 400 the corrupt ones, 422 the decode bombs"
      % ", ".join("%s %d" % kv for kv in sorted(sent.items())))
check(sock_errors <= sent.get("big_body", 0),
      "socket errors %d (connect %d, read %d, write %d, timeout %d) <= %d oversized bodies sent"
      % (sock_errors, errors["connect"], errors["read"], errors["write"], errors["timeout"],
         sent.get("big_body", 0)))
# Each bomb decode holds ~50 MB for a fraction of a second and gives it back (a
# spike in one sample, not a trend), so the resting level is compared: the lowest
# sample of the first 10 s after the warm-up against the lowest of the last 10 s.
after = [r for t, r in rss if t > warmup]
if len(after) >= 20:
    first, last10 = min(after[:10]), min(after[-10:])
    growth = (last10 - first) / first * 100
    limit = float(os.environ.get("SOAK_RSS_LIMIT_PCT", "5"))
    check(growth < limit or sanitizer != "",
          "VmRSS resting level (lowest sample in 10 s) %d kB after the warm-up (%d s), %d kB at the end: "
          "growth %.2f%% (limit %g%%%s); peak %d kB (a decode bomb's transient); %d samples"
          % (first, warmup, last10, growth, limit, ", not applied under " + sanitizer if sanitizer else "",
             max(after), len(rss)))
else:
    check(False, "too few RSS samples after the warm-up (%d, need 20)" % len(after))
check(fd_before == fd_after, "open descriptors before wrk %d, after %d" % (fd_before, fd_after))
check(slow["finished"] > 0 and slow["got_408"] == slow["finished"],
      "slow bodies (1 byte/s, 40 at a time): %d cut, %d of them with a 408" % (slow["finished"], slow["got_408"]))
print("\n".join(out))
sys.exit(0 if ok else 1)
EOF
then :; else fail=1; fi
while IFS= read -r l; do
  check "${l%% *}" "${l#* }"
done < "$out/checks.txt"

if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  n=0
  while kill -0 "$pid" 2>/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    check FAIL "the server did not exit within 30 s of SIGTERM"
  else
    wait "$pid" && rc=0 || rc=$?
    pid=""
    [ "$rc" -eq 0 ] && check ok "alive after the run, exit status 0 on SIGTERM" ||
      check FAIL "exit status $rc on SIGTERM"
  fi
else
  wait "$pid" && rc=0 || rc=$?
  pid=""
  check FAIL "the server died during the run (status $rc): $(tail -n 3 "$tmp/server.log")"
fi
log_mb=$(du -m "$tmp/server.log" | cut -f1)
echo "soak: server log $log_mb MB (tail in $out/server-log-tail.txt)"
exit $fail
