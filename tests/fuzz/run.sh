#!/bin/sh
# run.sh -- libFuzzer campaigns over the targets in tests/fuzz/ (`make fuzz`; the
# short run of `make test` is tests/sh/test_fuzz_smoke.sh, which calls this).
#
#   sh tests/fuzz/run.sh [TARGET...]     TARGET: image multipart route http httpparse config model oip
#                                        model_config (default: all)
#
# Environment: FUZZ_SECONDS per target (default 600); FUZZ_BUILD, the binaries
# (build/fuzz, `make fuzz-bins`); FUZZ_CORPUS, the working corpora, kept and grown
# from run to run (build/fuzz/corpus); FUZZ_FLAGS, more libFuzzer flags.
#
# Targets run one after the other, each on one core.  For each:
#  1. every input in tests/fuzz/regress/TARGET/ (each once crashed, hung or leaked,
#     and was fixed) is run once;
#  2. libFuzzer runs for FUZZ_SECONDS on FUZZ_CORPUS/TARGET, seeded from
#     tests/fuzz/seeds/TARGET (image: the .jpg/.png of tests/data/images), with the
#     dictionary tests/fuzz/dict/TARGET.dict, 10 s per input at most, 2 GB RSS at most;
#  3. one line: REPORT fuzz_TARGET: seconds, executions, cov (edges), ft (features),
#     corpus size, and ok or the failure.
# A crash, timeout, out-of-memory or leak stops that target; its input is in
# build/fuzz/artifacts/TARGET/ (copy it to tests/fuzz/regress/TARGET/ with the fix).
# Full logs: build/fuzz/logs/TARGET.log.  Exits 1 if any target failed.
set -u
cd "$(dirname "$0")/../.."
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
FUZZ_CORPUS=${FUZZ_CORPUS:-$FUZZ_BUILD/corpus}
SECONDS_EACH=${FUZZ_SECONDS:-600}
TARGETS=${*:-image multipart route http httpparse config model oip model_config}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export OPENBLAS_NUM_THREADS=1
failed=""

max_len() {
  case "$1" in
    image) echo 262144 ;; model) echo 131072 ;; multipart | http | httpparse | oip) echo 65536 ;; *) echo 4096 ;;
  esac
}

for t in $TARGETS; do
  bin=$FUZZ_BUILD/fuzz_$t
  if [ ! -x "$bin" ]; then
    echo "REPORT fuzz_$t: $bin is not built (make fuzz-bins)"
    failed="$failed $t"
    continue
  fi
  corpus=$FUZZ_CORPUS/$t
  seeds=tests/fuzz/seeds/$t
  art=$FUZZ_BUILD/artifacts/$t
  log=$FUZZ_BUILD/logs/$t.log
  mkdir -p "$corpus" "$art" "$FUZZ_BUILD/logs"
  if [ "$t" = image ]; then
    seeds=$FUZZ_CORPUS/image-seeds
    mkdir -p "$seeds"
    cp tests/data/images/*.jpg tests/data/images/*.png tests/data/images/*.webp tests/data/images/*.gif "$seeds"/
  fi
  : > "$log"
  # 1. regressions
  reg=$(ls tests/fuzz/regress/$t/* 2>/dev/null || true)
  if [ -n "$reg" ]; then
    # shellcheck disable=SC2086
    if ! "$bin" -timeout=10 -rss_limit_mb=2048 $reg >> "$log" 2>&1; then
      echo "REPORT fuzz_$t: a regression input fails again -- see $log"
      failed="$failed $t"
      continue
    fi
  fi
  # 2. the campaign
  dict=""
  [ -f tests/fuzz/dict/$t.dict ] && dict="-dict=tests/fuzz/dict/$t.dict"
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$art/" $dict ${FUZZ_FLAGS:-} "$corpus" "$seeds" >> "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  # 3. the figures: libFuzzer's last status line and its final stats
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(echo "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc): $(grep -m1 -E 'ERROR: |==ERROR|runtime error|contract broken|Timeout|out-of-memory' "$log" | cut -c1-160); input in $art/"
    failed="$failed $t"
  fi
  echo "REPORT fuzz_$t: ${secs} s, ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, $result"
done

if [ -n "$failed" ]; then
  echo "fuzz: failed:$failed (logs in $FUZZ_BUILD/logs/)"
  exit 1
fi
exit 0
