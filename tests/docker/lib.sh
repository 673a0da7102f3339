# tests/docker/lib.sh -- what test_docker.sh and test_swarm.sh share (sourced, POSIX sh).
#
#   the Docker daemon   a running one is used as it is; otherwise dockerd is
#                       started here with its own pidfile and data root under
#                       build/docker/ (logs in build/docker/dockerd.log) and
#                       stopped at the end, by its pid.  If dockerd cannot run on
#                       this machine at all, one "SKIP" line says why; under
#                       CI=true that exits 1, elsewhere 0 (nothing is reported
#                       as passed that did not run).
#   the base image      debian:bookworm-slim: used if present, else pulled, else
#                       made with debootstrap --variant=minbase from the Debian
#                       mirror in this machine's apt sources (read now, by
#                       tests/docker/debian_mirror.py), slimmed as the official
#                       image is (no docs, man pages, locales, apt lists), and
#                       `docker import`ed; the tarball is kept in
#                       build/docker/base/ and the image in the daemon.
#   the images          mobileformer:latest (docker/Dockerfile) and
#                       mobileformer-nginx:latest (deploy/nginx.Dockerfile),
#                       built with `docker build` (cached layers: seconds when
#                       nothing changed).
#   a lock              /tmp/mobileformer-docker-tests.lock: one docker test at a
#                       time on this machine (they share the daemon and 2 cores).
#
# Environment: DOCKER (client; default Debian's /usr/bin/docker when installed),
# COMPOSE (default docker-compose; "docker compose" for Compose v2),
# MF_DOCKER_REQUIRED=1 (treat "cannot run" as a failure, as CI=true does).

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=/usr/bin/python3
DROOT=$REPO/build/docker
LOGS=$DROOT/logs
mkdir -p "$LOGS"
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
COMPOSE=${COMPOSE:-docker-compose}
IMAGE=${MF_IMAGE:-mobileformer:latest}
NGINX_IMAGE=${MF_NGINX_IMAGE:-mobileformer-nginx:latest}
BASE_IMAGE=debian:bookworm-slim
export DOCKER COMPOSE
dockerd_pid=""
said_unavailable=""
test_name=${test_name:-docker}

now() { date +%s.%N; }
elapsed() { $PY -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }

fail() {
  echo "FAIL: $*"
  exit 1
}

# one line, and the exit status the situation calls for
unavailable() {
  said_unavailable=1
  if [ "${CI:-}" = true ] || [ "${MF_DOCKER_REQUIRED:-}" = 1 ]; then
    echo "FAIL $test_name: Docker cannot run on this machine: $* (CI=true: Docker is expected to work)"
    exit 1
  fi
  echo "SKIP $test_name: Docker cannot run on this machine: $* (nothing was tested)"
  exit 0
}

take_lock() {
  exec 9> /tmp/mobileformer-docker-tests.lock
  if ! flock -n 9; then
    echo "waiting for another docker test on this machine to finish (up to 25 min)"
    flock -w 1500 9 || fail "another docker test held /tmp/mobileformer-docker-tests.lock for 25 min"
  fi
}

docker_up() {
  for tool in wrk curl flock; do
    command -v "$tool" > /dev/null 2>&1 || fail "$tool is missing (sh scripts/install-deps.sh docker)"
  done
  if ! command -v "$DOCKER" > /dev/null 2>&1; then
    unavailable "no docker client (sh scripts/install-deps.sh docker installs Debian's docker.io)"
  fi
  if $DOCKER info > /dev/null 2>&1; then
    echo "docker: using the running daemon ($($DOCKER version -f '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  PATH=$PATH:/usr/sbin:/sbin
  command -v dockerd > /dev/null 2>&1 || unavailable "no dockerd (sh scripts/install-deps.sh docker)"
  [ "$(id -u)" = 0 ] || unavailable "no daemon running, and starting dockerd needs root"
  grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems 2>/dev/null || unavailable "the kernel has no overlay filesystem"
  [ -n "$(ls /sys/fs/cgroup 2>/dev/null)" ] || unavailable "no cgroup filesystem under /sys/fs/cgroup"
  mkdir -p "$DROOT/root"
  if [ -f "$DROOT/dockerd.pid" ] && kill -0 "$(cat "$DROOT/dockerd.pid")" 2>/dev/null; then
    fail "a dockerd (pid $(cat "$DROOT/dockerd.pid")) runs on $DROOT but does not answer"
  fi
  rm -f "$DROOT/dockerd.pid"
  echo "==== $(date -u +%FT%TZ) dockerd started by tests/docker ($test_name)" >> "$DROOT/dockerd.log"
  dockerd --data-root "$DROOT/root" --pidfile "$DROOT/dockerd.pid" >> "$DROOT/dockerd.log" 2>&1 &
  dockerd_pid=$!
  n=0
  until $DOCKER info > /dev/null 2>&1; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      dockerd_pid=""
      unavailable "dockerd exited at start: $(grep -v '^====' "$DROOT/dockerd.log" | tail -n 1 | cut -c1-300) (build/docker/dockerd.log)"
    fi
    if [ $n -ge 600 ]; then
      docker_down
      unavailable "dockerd did not answer within 60 s (build/docker/dockerd.log)"
    fi
    sleep 0.1; n=$((n + 1))
  done
  echo "docker: started dockerd $($DOCKER version -f '{{.Server.Version}}') (pid $dockerd_pid, data root build/docker/root, log build/docker/dockerd.log)"
  driver=$($DOCKER info -f '{{.Driver}}')
  [ "$driver" = overlay2 ] || echo "note: storage driver $driver"
}

docker_down() {
  [ -n "$dockerd_pid" ] || return 0
  kill -TERM "$dockerd_pid" 2>/dev/null || true
  n=0
  while kill -0 "$dockerd_pid" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
  if kill -0 "$dockerd_pid" 2>/dev/null; then
    echo "dockerd (pid $dockerd_pid) did not stop in 60 s: SIGKILL"
    kill -KILL "$dockerd_pid" 2>/dev/null || true
  fi
  wait "$dockerd_pid" 2>/dev/null || true
  echo "docker: stopped the dockerd it started (pid $dockerd_pid)"
  dockerd_pid=""
}

# debian:bookworm-slim, whichever way this machine allows
ensure_base_image() {
  if $DOCKER image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
    echo "base image: $BASE_IMAGE present ($($DOCKER image inspect -f '{{.Id}}' "$BASE_IMAGE" | cut -c8-19))"
    return 0
  fi
  t0=$(now)
  if timeout 120 $DOCKER pull -q "$BASE_IMAGE" > "$LOGS/pull.log" 2>&1; then
    echo "base image: pulled $BASE_IMAGE ($(elapsed "$t0") s)"
    return 0
  fi
  echo "base image: $BASE_IMAGE cannot be pulled ($(tail -n 1 "$LOGS/pull.log" | cut -c1-120))"
  tarball=$DROOT/base/debian-bookworm-slim.tar.gz
  if [ ! -s "$tarball" ]; then
    command -v debootstrap > /dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v debootstrap > /dev/null 2>&1 || fail "debootstrap is missing (sh scripts/install-deps.sh docker)"
    mirrors=$($PY tests/docker/debian_mirror.py bookworm) || fail "no Debian bookworm mirror in the apt sources, and $BASE_IMAGE cannot be pulled"
    mirror=$(echo "$mirrors" | sed -n 1p)
    security=$(echo "$mirrors" | sed -n 2p)
    rootfs=$DROOT/base/rootfs
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    echo "base image: debootstrap --variant=minbase bookworm from the apt sources' mirror $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$LOGS/debootstrap.log" 2>&1 \
      || { tail -n 20 "$LOGS/debootstrap.log"; fail "debootstrap failed ($LOGS/debootstrap.log)"; }
    slim_rootfs "$rootfs" "$mirror" "$security"
    tar --numeric-owner -C "$rootfs" -czf "$tarball.tmp" . || fail "tar of the base rootfs"
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  else
    echo "base image: from the cached build/docker/base/$(basename "$tarball")"
  fi
  $DOCKER import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --change 'LABEL org.opencontainers.image.description="Debian 12 minbase, debootstrapped and slimmed by tests/docker/lib.sh"' \
    "$tarball" "$BASE_IMAGE" > /dev/null || fail "docker import of the base image"
  echo "base image: $BASE_IMAGE imported, $(image_mb "$BASE_IMAGE") MB ($(elapsed "$t0") s)"
}

# what the official slim image leaves out, and keeps out (dpkg path excludes)
slim_rootfs() {
  r=$1
  mkdir -p "$r/etc/dpkg/dpkg.cfg.d" "$r/etc/apt/apt.conf.d" "$r/etc/apt/sources.list.d"
  cat > "$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# slim: files containers do not need, kept out of every package installed later
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  cat > "$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' > "$r/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' > "$r/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$r/etc/apt/apt.conf.d/docker-autoremove-suggests"
  rm -f "$r/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$2"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$3" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n' "$3"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } > "$r/etc/apt/sources.list.d/debian.sources"
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  rm -rf "$r/usr/share/man/"* "$r/usr/share/info/"* "$r/usr/share/groff/"* "$r/usr/share/lintian/"* \
    "$r/usr/share/linda/"* "$r/var/cache/apt/"* "$r/var/lib/apt/lists/"* "$r/var/cache/debconf/"*-old \
    "$r/var/log/"*.log "$r/var/log/apt/"* "$r/tmp/"* "$r/root/.bash_history"
  : > "$r/etc/machine-id"
  mkdir -p "$r/var/lib/apt/lists/partial"
}

image_mb() { $DOCKER image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f", $1 / 1e6 }'; }

# build_image TAG DOCKERFILE: from the repository root; the time and size printed
build_image() {
  t0=$(now)
  log=$LOGS/build-$(echo "$1" | tr ':/' '__').log
  if ! $DOCKER build -f "$2" -t "$1" . > "$log" 2>&1; then
    tail -n 30 "$log"
    fail "docker build -f $2 ($log)"
  fi
  echo "built $1 from $2 in $(elapsed "$t0") s: $(image_mb "$1") MB"
}

free_port() {
  $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$@"; }

# model_versions URL MODEL: the versions GET URL/v2/models/MODEL lists, space-separated
model_versions() {
  curl -s --max-time 10 "$1/v2/models/$2" \
    | $PY -c 'import json, sys; print(" ".join(json.load(sys.stdin).get("versions", [])))' 2>/dev/null
}

# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS
wait_for() {
  what=$1 limit=$2
  shift 2
  n=0
  until "$@" > /dev/null 2>&1; do
    [ $n -lt $((limit * 5)) ] || return 1
    sleep 0.2; n=$((n + 1))
  done
  return 0
}
