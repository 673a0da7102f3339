#!/bin/sh
# loadtest.sh -- the HTTP service under wrk, beside the engine alone (`make loadtest`).
#
#   sh bench/loadtest.sh [--model M] [--workers N] [--max-batch B] [--duration S]
#                        [--connections "1 8 64"] [--wrk-threads T] [--image FILE | --mix]
#
# Starts build/mobileformer-server on a free loopback port with the given workers
# and max_batch (other settings: the server's defaults and any MF_* variables in
# the environment, e.g. MF_LOG_REQUESTS=false), then runs wrk for S seconds
# (default 15) at each connection count, POSTing one image (bench/post_image.lua,
# default tests/data/images/photo.jpg) or a mix of the test images
# (bench/post_mix.lua, --mix).  In the same run it measures the engine alone,
# arranged as the server's worker pool (N workers, each one thread running
# whole batches of B side by side; see server/batcher.c):
#   build/mobileformer bench --model M --batch B --threads 1 --workers N
# and, for reference, one worker alone times N (an upper bound: the workers
# then do not share caches and memory bandwidth).  The table gives requests/s,
# p50 and p99 latency (wrk's, in ms), errors (non-2xx answers + socket errors)
# and requests/s as a share of both engine-only figures.  wrk runs on the same
# machine and takes CPU from the service: on a small machine the ratio says as
# much about the client as about the server.
#
# Raw outputs (engine bench, each wrk run, the server log, the table) go to
# bench/out/loadtest-YYYYmmdd-HHMMSS/.  M defaults to the bundled model,
# models/fashion_mnist_mobileformer.safetensors.
set -eu
cd "$(dirname "$0")/.."
BUILD=${MF_BUILD:-build}
SERVER=$BUILD/mobileformer-server
CLI=$BUILD/mobileformer
MODEL=models/fashion_mnist_mobileformer.safetensors
WORKERS=$(nproc)
MAX_BATCH=8
DURATION=15
CONNECTIONS="1 8 64"
WRK_THREADS=2
IMAGE=tests/data/images/photo.jpg
MIX=""
MIX_IMAGES="tests/data/images/photo.jpg tests/data/images/base.jpg tests/data/images/base_progressive.jpg
  tests/data/images/png_rgb.png tests/data/images/png_palette.png tests/data/images/tall.png"

usage() {
  sed -n '4,5p' "$0" | sed 's/^# *//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in --mix) ;; --*) [ $# -ge 2 ] || usage ;; esac
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --max-batch) MAX_BATCH=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --mix) MIX=1; shift ;;
    *) usage ;;
  esac
done

die() {
  echo "loadtest.sh: $*" >&2
  exit 1
}
for f in "$SERVER" "$CLI"; do [ -x "$f" ] || die "$f is not built (make)"; done
command -v wrk >/dev/null 2>&1 || die "wrk is missing (sh scripts/install-deps.sh test)"
command -v curl >/dev/null 2>&1 || die "curl is missing (sh scripts/install-deps.sh test)"
[ -f "$MODEL" ] || die "no model $MODEL (give one with --model; /usr/bin/python3 tests/support/make_stand_in_model.py OUT makes a stand-in)"
export OPENBLAS_NUM_THREADS=1
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

out=bench/out/loadtest-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
server_pid=""
cleanup() {
  rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# engine alone: one worker's images/s at batch MAX_BATCH, about 3 s of iterations
"$CLI" bench --model "$MODEL" --batch "$MAX_BATCH" --threads 1 --iters 5 --warmup 1 > "$out/engine-probe.txt"
ms=$(sed -n 's/^median \([0-9.]*\) ms.*/\1/p' "$out/engine-probe.txt")
iters=$(awk -v ms="$ms" 'BEGIN { n = int(3000 / ms); if (n < 20) n = 20; if (n > 2000) n = 2000; print n }')
"$CLI" bench --model "$MODEL" --batch "$MAX_BATCH" --threads 1 --iters "$iters" > "$out/engine.txt"
engine_ips=$(sed -n 's/^images\/s \([0-9.]*\).*/\1/p' "$out/engine.txt")
engine_times=$(awk -v a="$engine_ips" -v w="$WORKERS" 'BEGIN { printf "%.1f", a * w }')
engine_line=$(head -n 1 "$out/engine.txt")
"$CLI" bench --model "$MODEL" --batch "$MAX_BATCH" --threads 1 --workers "$WORKERS" --iters "$iters" \
  > "$out/engine-workers.txt"
engine_total=$(sed -n 's/^images\/s \([0-9.]*\).*/\1/p' "$out/engine-workers.txt")

: > "$out/server.log"
"$SERVER" --model "$MODEL" --port 0 --bind 127.0.0.1 --workers "$WORKERS" --max_batch "$MAX_BATCH" \
  2> "$out/server.log" &
server_pid=$!
port=""
n=0
while [ -z "$port" ]; do
  kill -0 "$server_pid" 2>/dev/null || die "the server exited at start (see $out/server.log)"
  [ $n -lt 600 ] || die "the server did not start listening in 60 s"
  port=$(sed -n 's/.*"msg": *"listening".*"port": *\([0-9][0-9]*\).*/\1/p' "$out/server.log" | head -n 1)
  [ -n "$port" ] || { sleep 0.1; n=$((n + 1)); }
done
url=http://127.0.0.1:$port
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v2/health/ready")" = 200 ] || die "server not ready"
listening=$(grep -m1 '"listening"' "$out/server.log")

if [ -n "$MIX" ]; then
  script=bench/post_mix.lua
  # shellcheck disable=SC2086
  set -- $MIX_IMAGES
  what="a mix of $# test images"
else
  script=bench/post_image.lua
  set -- "$IMAGE"
  what="$IMAGE ($(wc -c < "$IMAGE") bytes)"
fi

# warm-up, not reported
wrk -t1 -c4 -d2s --timeout 30s -s "$script" "$url" -- "$@" > "$out/wrk-warmup.txt" 2>&1

for c in $CONNECTIONS; do
  t=$WRK_THREADS
  [ "$t" -le "$c" ] || t=$c
  echo "wrk -t$t -c$c -d${DURATION}s ..." >&2
  wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 30s --latency -s "$script" "$url" -- "$@" \
    > "$out/wrk-c$c.txt" 2>&1 || die "wrk failed (see $out/wrk-c$c.txt)"
done

{
  echo "load test $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1))"
  echo "service: $listening"
  echo "requests: POST /v1/predict with $what; wrk $WRK_THREADS threads, ${DURATION} s per row, on the same machine"
  echo "engine only: $engine_line"
  echo "  $WORKERS workers at once: $engine_total images/s; one worker alone: $engine_ips images/s, x $WORKERS = $engine_times"
  echo
  printf '%11s %11s %8s %8s %8s %10s %12s\n' connections requests/s "p50 ms" "p99 ms" errors "vs engine" "vs 1 x $WORKERS"
  for c in $CONNECTIONS; do
    sed -n 's/^wrk-json //p' "$out/wrk-c$c.txt" | /usr/bin/python3 -c '
import json, sys
w = json.load(sys.stdin)
c, engine, times = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
errors = w["non2xx"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
print("%11d %11.1f %8.2f %8.2f %8d %9.1f%% %11.1f%%" % (c, w["rps"], w["p50_ms"], w["p99_ms"], errors,
                                                        100 * w["rps"] / engine if engine else 0,
                                                        100 * w["rps"] / times if times else 0))
' "$c" "$engine_total" "$engine_times"
  done
  echo
  echo "raw outputs: $out/"
} | tee "$out/summary.txt"
