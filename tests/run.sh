#!/bin/sh
# Runs every test suite: the Check binaries (build/tests/test_*), then the
# Python and black-box suites (tests/py/test_*.py, run by Debian's python3)
# and the shell suites (tests/sh/test_*.sh).
# Prints one line per suite and a summary; exits non-zero if any failed.
#   MF_TEST_ONLY=name   only the suites whose name contains it
#   MF_TEST_KIND=unit   only the Check binaries (`make check`)
set -u
BUILD=${MF_BUILD:-build}
export MF_BUILD="$BUILD"
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
export OPENBLAS_NUM_THREADS=1
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-600}
PY=/usr/bin/python3
failed=""
total=0
only=${MF_TEST_ONLY:-}
kind=${MF_TEST_KIND:-all}

run_one() {
  name=$1; shift
  case "$name" in *"$only"*) ;; *) return ;; esac
  total=$((total + 1))
  start=$(date +%s)
  if "$@" > "$BUILD/tests/$name.log" 2>&1; then
    echo "PASS  $name ($(( $(date +%s) - start ))s)"
    grep -hE "^(SKIP|REPORT)" "$BUILD/tests/$name.log" | sed 's/^/      /'
  else
    echo "FAIL  $name ($(( $(date +%s) - start ))s) -- log: $BUILD/tests/$name.log"
    tail -n 40 "$BUILD/tests/$name.log" | sed 's/^/      /'
    failed="$failed $name"
  fi
}

mkdir -p "$BUILD/tests"
for t in "$BUILD"/tests/test_*; do
  case "$t" in *.log|*.d) continue ;; esac
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
[ "$kind" = unit ] || for t in tests/py/test_*.py; do
  [ -f "$t" ] || continue
  run_one "$(basename "$t" .py)" "$PY" "$t"
done
[ "$kind" = unit ] || for t in tests/sh/test_*.sh; do
  [ -f "$t" ] || continue
  run_one "$(basename "$t" .sh)" sh "$t"
done

if [ -n "$failed" ]; then
  echo "FAILED:$failed (of $total suites)"
  exit 1
fi
echo "all $total suites passed"
