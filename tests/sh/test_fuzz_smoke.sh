#!/bin/sh
# test_fuzz_smoke.sh -- every libFuzzer target of tests/fuzz/ for a short while
# (FUZZ_SMOKE_SECONDS, default 20, each), after replaying its regression inputs
# (tests/fuzz/regress/TARGET/): `make test`'s share of `make fuzz`.
#
# The corpus is a fresh copy of the committed seeds (not build/fuzz/corpus), so
# the run does not depend on earlier campaigns.  REPORT lines give executions and
# coverage per target.  The fuzz binaries are always built with ASan + UBSan
# (build/fuzz), so under `make test SANITIZE=...` this suite is skipped: the
# plain `make test` has run exactly the same binaries.
set -eu
cd "$(dirname "$0")/../.."
case "${MF_BUILD:-build}" in
  *san-*) echo "SKIP fuzz smoke under SANITIZE: build/fuzz is sanitized already (plain make test runs it)"
          exit 0 ;;
esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mf_fuzz_smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
FUZZ_SECONDS=${FUZZ_SMOKE_SECONDS:-20} FUZZ_CORPUS=$tmp sh tests/fuzz/run.sh
