#!/bin/sh
# Installs the Debian packages the project needs, only those missing.
# Used by `make run`, `make test`, .ci/run and docker/Dockerfile so they cannot drift.
#   scripts/install-deps.sh [build|runtime|test|docker|all]   (default: test)
# build:   compiler and -dev libraries to build the engine and server
# runtime: shared libraries only (the Docker runtime stage)
# test:    build + tools the tests use (torch for the twin/converter, nginx, wrk,
#          valgrind, the Fashion-MNIST data set, chromium for the page test,
#          clang and its libFuzzer/sanitizer runtimes for the fuzz targets)
# docker:  Debian's Docker engine and docker-compose 1.29, debootstrap (to make
#          the debian:bookworm-slim base image when no registry is reachable),
#          and what tests/docker/ drives them with (wrk, curl, python3); not
#          part of `all` (make test-docker, make test-swarm)
set -eu
profile=${1:-test}

runtime_pkgs="libjansson4 libjpeg62-turbo libpng16-16 libwebp7 libwebpdemux2 libgif7 libopenblas0-pthread ca-certificates"
build_pkgs="build-essential pkg-config libjansson-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev libopenblas-dev check"
docker_pkgs="docker.io docker-compose debootstrap wrk curl python3"
test_pkgs="python3 python3-numpy python3-torch python3-yaml python3-pil nginx-light wrk valgrind curl dataset-fashion-mnist chromium chromium-driver clang libclang-rt-14-dev"

case "$profile" in
  runtime) pkgs="$runtime_pkgs" ;;
  build)   pkgs="$runtime_pkgs $build_pkgs" ;;
  test|all) pkgs="$runtime_pkgs $build_pkgs $test_pkgs" ;;
  docker)  pkgs="$docker_pkgs" ;;
  *) echo "install-deps.sh: unknown profile '$profile' (build|runtime|test|docker|all)" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

echo "install-deps.sh: installing:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "install-deps.sh: need root or sudo to install:$missing" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >&2
