#!/bin/sh
# make bench: the engine against ONNX Runtime and PyTorch on the same weights
# (bench/engine.py), after installing what it needs.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh test
exec /usr/bin/python3 bench/engine.py "$@"
