#!/bin/sh
# test_soak.sh -- one minute of bench/soak.sh (wrk at saturation with valid,
# corrupt and oversized uploads; statuses, resting RSS growth after a 20 s warm-up,
# descriptors, clean exit).  `make soak` runs the ten-minute version.
set -eu
cd "$(dirname "$0")/../.."
exec sh bench/soak.sh --duration "${SOAK_SECONDS:-60}" --warmup "${SOAK_WARMUP:-20}" --connections 16
