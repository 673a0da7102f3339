#!/bin/sh
# test_docker.sh -- the image and the compose topology, run in Docker (make test-docker).
#
#   sh tests/docker/test_docker.sh          (run by `make test-docker`, by .ci/run after `make test`)
#
# 1. Docker: the running daemon, or dockerd started here (tests/docker/lib.sh);
#    the base image (pulled, or debootstrapped from this machine's apt mirror);
#    docker/Dockerfile and deploy/nginx.Dockerfile built.
# 2. The image: its size (REPORT); no compiler, make, curl, apt lists, docs or
#    man pages in it; it runs as uid 10001, with a read-only root filesystem and
#    every capability dropped (checked from inside); it turns "healthy" by its own
#    HEALTHCHECK; health, metadata and predict answer on 127.0.0.1.  Then wrk
#    (8 connections, 10 s) and `docker stop` after 4 s: the server drains, every
#    prediction it answered reached the client, nothing was cancelled, and the
#    container exits 0.
#    The Kubernetes pod, emulated with docker run: deploy/k8s/deployment.yaml's
#    init container command, run in the image as uid 10001, lays the model out
#    in a folder (the emptyDir); the server, with the ConfigMap's settings and
#    that folder mounted read-only, serves it as version 1 of the repository.
# 3. deploy/docker-compose.yml with $COMPOSE (default Debian's docker-compose
#    1.29; COMPOSE="docker compose" for v2), project name given outside the file
#    (COMPOSE_PROJECT_NAME), nginx on a free 127.0.0.1 port: two replicas, both
#    serving; limits, read-only mounts and security options in force; a 17 MB
#    body gets 413.  MODEL_DIR is a temporary copy of models/ (the tree is not
#    touched): the replicas serve its repository/.  Under wrk: one replica's
#    process is killed (SIGKILL, as a crash): failures only within 1 s of it, the
#    restart policy brings it back and it serves again.  Then under wrk: scale to
#    3 (the new replica serves, no failure) and back to 2 (failures only within
#    1 s of the stop: see docs/deployment.md).  Then under wrk: version 2 (a copy
#    of the bundled file) is copied into the repository; after the poll
#    (MF_REPOSITORY_POLL_S) every answer through nginx lists version 2 and each
#    replica logged loading it; then it is removed again (the roll back) and
#    version 1 comes back the same way -- with zero failed requests.
# Every container, network and process started here is removed at the end, and
# dockerd too if it was started here.  REPORT lines give the figures.
set -eu
test_name=test-docker
. "$(dirname "$0")/lib.sh"
CONNS=8
IMG=tests/data/images/photo.jpg
MODEL_NAME=fashion_mnist_mobileformer
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mf_test_docker.XXXXXX")
single=""
k8s_pod=""
project=""
wrk_pid=""
t_all=$(now)

compose() { $COMPOSE -f deploy/docker-compose.yml "$@"; }

cleanup() {
  rc=$?
  trap - EXIT INT TERM HUP
  [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
  if [ -n "$single" ]; then $DOCKER rm -f "$single" > /dev/null 2>&1 || true; fi
  if [ -n "$k8s_pod" ]; then $DOCKER rm -f "$k8s_pod" > /dev/null 2>&1 || true; fi
  if [ -n "$project" ]; then
    if [ $rc -ne 0 ]; then
      echo "---- compose ps, and the tail of each container's log"
      compose ps 2>/dev/null || true
      for c in $(compose ps -q 2>/dev/null); do
        echo "-- $($DOCKER inspect -f '{{.Name}}' "$c")"; $DOCKER logs --tail 8 "$c" 2>&1 | cut -c1-300
      done
    fi
    compose down --remove-orphans -t 20 > "$LOGS/compose-down.log" 2>&1 || cat "$LOGS/compose-down.log"
  fi
  docker_down
  rm -rf "$tmp"
  [ $rc -eq 0 ] || [ -n "$said_unavailable" ] || echo "FAIL $test_name (logs: build/docker/logs/, build/docker/dockerd.log)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# the containers (uid 10001) read folders under $tmp: the models copy, the k8s volume
chmod 755 "$tmp"

versions_of() { model_versions "$1" "$MODEL_NAME"; }

take_lock
docker_up
ensure_base_image
build_image "$IMAGE" docker/Dockerfile
build_image "$NGINX_IMAGE" deploy/nginx.Dockerfile

echo "== the image"
size=$(image_mb "$IMAGE")
layers=$($DOCKER history --no-trunc --format '{{.Size}}|{{.CreatedBy}}' "$IMAGE" | awk -F'|' '
  $1 != "0B" { what = $2; sub(/^\/bin\/sh -c (#\(nop\) *)?/, "", what)
               if (what ~ /^COPY/) { sub(/^COPY [^ ]* in /, "", what) } else what = substr(what, 1, 40)
               if (what == "") what = "(the base image)"
               printf "%s%s %s", sep, $1, what; sep = ", " }')
echo "REPORT image: $IMAGE $size MB; layers: $layers"
$DOCKER run --rm --entrypoint /bin/sh "$IMAGE" -c '
  for t in cc gcc make curl wget; do command -v $t > /dev/null && echo "found $t"; done
  [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null)" ] || echo "apt lists: $(ls /var/lib/apt/lists | head -3)"
  [ -z "$(ls -A /usr/share/man 2>/dev/null)" ] || echo "man pages: $(ls /usr/share/man | head -3)"
  docs=$(find /usr/share/doc -type f ! -name copyright | head -3)
  [ -z "$docs" ] || echo "docs: $docs"
  locales=$(ls /usr/share/locale 2>/dev/null | grep -v locale.alias | head -3)
  [ -z "$locales" ] || echo "locales: $locales"
  true' > "$tmp/contents" 2>&1
if [ -s "$tmp/contents" ]; then cat "$tmp/contents"; fail "the runtime image holds what it should not"; fi
echo "no compiler, make, curl, apt lists, docs (copyright files only), man pages or locales in the image"

echo "== one container: read-only, no capabilities, health check, API, docker stop under load"
single=$($DOCKER run -d --name "mftest-single-$$" --read-only --cap-drop ALL \
  --security-opt no-new-privileges:true --cpus 2 --memory 512m -p 127.0.0.1::8080 \
  -e MF_WORKERS=2 -e MF_HTTP_THREADS=2 "$IMAGE")
t_started=$(now)
port=$($DOCKER port "$single" 8080/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1)
[ -n "$port" ] || fail "no 127.0.0.1 port published for the container"
url=http://127.0.0.1:$port
facts=$($DOCKER inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "$single")
[ "$facts" = "10001:10001 true [ALL]" ] || fail "container user / read-only / cap-drop: $facts"
inside=$($DOCKER exec "$single" sh -c 'id -u; id -g; grep -E "^Cap(Eff|Prm|Bnd):" /proc/1/status | tr -s "\t" " "; touch /probe 2>&1; touch /app/probe 2>&1; true')
echo "$inside" | sed 's/^/  inside: /'
echo "$inside" | sed -n 1p | grep -qx 10001 || fail "the server does not run as uid 10001"
[ "$(echo "$inside" | grep -c '^Cap[EPB][a-z]*: 0000000000000000$')" = 3 ] || fail "capabilities are not all dropped"
[ "$(echo "$inside" | grep -c 'Read-only file system')" = 2 ] || fail "the root filesystem is writable"
echo "runs as uid/gid 10001, no capabilities (effective, permitted, bounding all 0), root filesystem read-only"
health=""
n=0
while [ $n -lt 300 ]; do
  health=$($DOCKER inspect -f '{{.State.Health.Status}}' "$single")
  [ "$health" = healthy ] && break
  [ "$($DOCKER inspect -f '{{.State.Running}}' "$single")" = true ] || fail "the container exited: $($DOCKER logs --tail 5 "$single" 2>&1)"
  sleep 0.2; n=$((n + 1))
done
[ "$health" = healthy ] || fail "not healthy after 60 s ($health)"
echo "REPORT container: healthy by its HEALTHCHECK $(elapsed "$t_started") s after start (interval 10 s)"
for p in /v2/health/live /v2/health/ready "/v2/models/$MODEL_NAME" "/v2/models/$MODEL_NAME/ready"; do
  [ "$(http_status "$url$p")" = 200 ] || fail "GET $p: $(http_status "$url$p")"
done
curl -s --max-time 30 "$url/v2/models/$MODEL_NAME" > "$tmp/meta.json"
curl -s --max-time 30 -H 'Content-Type: image/jpeg' --data-binary "@$IMG" "$url/v1/predict?top_k=3" > "$tmp/pred.json"
$PY - "$tmp/meta.json" "$tmp/pred.json" "$MODEL_NAME" <<'EOF' || fail "metadata or prediction"
import json, sys
meta, pred = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert meta["name"] == sys.argv[3] and meta["num_classes"] == 10 and meta["input_size"] == [32, 32], meta
assert pred["model"] == sys.argv[3] and len(pred["predictions"]) == 3, pred
p = pred["predictions"][0]
print("metadata: %s, %d classes; predict: %s %.3f (%.2f ms)" % (meta["name"], meta["num_classes"], p["label"],
      p["probability"], pred["latency_ms"]["total"]))
EOF
before=$($DOCKER logs "$single" 2>&1 | grep -c '"path":"/v1/predict"' || true)
t0=$(now)
wrk -t2 -c$CONNS -d10s --timeout 5s -s bench/post_image.lua "$url" -- "$IMG" > "$tmp/wrk-stop.log" 2>&1 &
wrk_pid=$!
sleep 4
t_stop=$(now)
$DOCKER stop -t 20 "$single" > /dev/null
stop_s=$(elapsed "$t_stop")
# the server is gone: stop wrk too (SIGINT: it prints its summary), before it
# spends the rest of its 10 s on refused connections
sleep 0.5
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" || fail "wrk failed: $(cat "$tmp/wrk-stop.log")"
wrk_pid=""
code=$($DOCKER inspect -f '{{.State.ExitCode}}' "$single")
$DOCKER logs "$single" > "$tmp/single.log" 2>&1
$PY tests/docker/analyze.py drain --name "docker stop" --wrk "$tmp/wrk-stop.log" --server-log "$tmp/single.log" \
  --before "$before" --conns $CONNS --stop-after "$($PY -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$t_stop")" \
  || fail "docker stop under load"
[ "$code" = 0 ] || fail "the container exited $code after docker stop, not 0"
echo "REPORT docker stop: took $stop_s s; exit code $code (connections opened after the stop were refused: not requests the server lost)"
$DOCKER rm "$single" > /dev/null
single=""

echo "== deploy/k8s, emulated with docker run: the init container, then the server on the volume it filled"
kvol=$tmp/k8s-model-volume
mkdir "$kvol"
# the pod's fsGroup 10001 makes its emptyDir writable for uid 10001
chown 10001:10001 "$kvol" 2>/dev/null || chmod 777 "$kvol"
# deployment.yaml's init container (command, where it mounts the volume), the
# main container's mount of it, and the ConfigMap as an --env-file
$PY - "$tmp/k8s.sh" "$tmp/k8s.env" <<'PYEOF' || fail "reading deploy/k8s"
import shlex, sys, yaml
docs = [d for f in ("deploy/k8s/deployment.yaml", "deploy/k8s/configmap.yaml") for d in yaml.safe_load_all(open(f)) if d]
dep = [d for d in docs if d["kind"] == "Deployment"][0]
cm = [d for d in docs if d["kind"] == "ConfigMap"][0]
pod = dep["spec"]["template"]["spec"]
main = [c for c in pod["containers"] if c["name"] == "mobileformer"][0]
vol = [v["name"] for v in pod["volumes"] if "emptyDir" in v][0]
init = [c for c in pod["initContainers"] if any(m["name"] == vol for m in c.get("volumeMounts", []))][0]
at = lambda c: [m["mountPath"] for m in c["volumeMounts"] if m["name"] == vol][0]
with open(sys.argv[1], "w") as f:
    f.write("init_mount=%s\nmain_mount=%s\ninit_cmd=%s\n" % (shlex.quote(at(init)), shlex.quote(at(main)),
            shlex.quote(" ".join(shlex.quote(a) for a in init["command"]))))
with open(sys.argv[2], "w") as f:
    for k, v in cm["data"].items():
        f.write("%s=%s\n" % (k, v))
PYEOF
. "$tmp/k8s.sh"
echo "init container: $init_cmd (the volume at $init_mount)"
eval "set -- $init_cmd"
entry=$1
shift
$DOCKER run --rm --read-only --cap-drop ALL --security-opt no-new-privileges:true --user 10001:10001 \
  -v "$kvol:$init_mount" --entrypoint "$entry" "$IMAGE" "$@" > "$tmp/k8s-init.log" 2>&1 \
  || fail "the init container failed: $(cat "$tmp/k8s-init.log")"
laid_out=$(cd "$kvol" && find . -type f -printf '%P (%s bytes, mode %m, uid %U)\n' | paste -sd ' ' -)
[ -n "$laid_out" ] || fail "the init container wrote nothing"
t_started=$(now)
k8s_pod=$($DOCKER run -d --name "mftest-k8s-$$" --read-only --cap-drop ALL --security-opt no-new-privileges:true \
  --cpus 2 --memory 512m -p 127.0.0.1::8080 --env-file "$tmp/k8s.env" -v "$kvol:$main_mount:ro" "$IMAGE")
port=$($DOCKER port "$k8s_pod" 8080/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1)
[ -n "$port" ] || fail "no 127.0.0.1 port published for the k8s-like container"
kurl=http://127.0.0.1:$port
k8s_ready() { [ "$(http_status "$kurl/v2/health/ready")" = 200 ]; }
wait_for "ready" 30 k8s_ready || fail "the k8s-like container is not ready within 30 s: $($DOCKER logs --tail 5 "$k8s_pod" 2>&1)"
ready_s=$(elapsed "$t_started")
kv=$(versions_of "$kurl")
[ "$kv" = 1 ] || fail "the k8s-like container lists versions '$kv' of $MODEL_NAME, not 1"
[ "$(http_status -H 'Content-Type: image/jpeg' --data-binary "@$IMG" "$kurl/v1/predict")" = 200 ] \
  || fail "predict on the k8s-like container"
served_from=$($DOCKER logs "$k8s_pod" 2>&1 | sed -n 's/.*"msg": *"listening".*"model_repository": *"\([^"]*\)".*/\1/p' | head -n 1)
[ -n "$served_from" ] && [ "${served_from#"$main_mount"/}" != "$served_from" ] \
  || fail "the k8s-like container does not serve a repository in $main_mount ('$served_from')"
echo "REPORT k8s emulated: the init container laid out $laid_out; the server with the ConfigMap's settings ready in $ready_s s, serving $MODEL_NAME version $kv from $served_from (read-only)"
$DOCKER rm -f "$k8s_pod" > /dev/null
k8s_pod=""

echo "== docker compose: $(${COMPOSE} version --short 2>/dev/null || ${COMPOSE} version | head -n 1)"
project=mftest$$
export COMPOSE_PROJECT_NAME=$project
PUBLISH_PORT=$(free_port)
# the models folder the replicas mount: a copy of the tree's (the repository's
# symlink is relative: it resolves inside the copy too), so that versions can be added
MODEL_DIR=$tmp/models
cp -a models "$MODEL_DIR"
export PUBLISH_ADDR=127.0.0.1 PUBLISH_PORT MODEL_DIR MOBILEFORMER_IMAGE="$IMAGE" NGINX_IMAGE="$NGINX_IMAGE"
url=http://127.0.0.1:$PUBLISH_PORT
t_up=$(now)
timeout 240 $COMPOSE -f deploy/docker-compose.yml up -d --no-build > "$LOGS/compose-up.log" 2>&1 \
  || { cat "$LOGS/compose-up.log"; fail "compose up"; }
echo "REPORT compose: up (2 replicas healthy, then nginx) in $(elapsed "$t_up") s"
replicas() { compose ps -q mobileformer 2>/dev/null | sort; }
ip_of() { $DOCKER inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" | awk '{ print $1 }'; }
nginx_c=$(compose ps -q nginx)
[ "$(replicas | wc -l)" = 2 ] || fail "compose started $(replicas | wc -l) replicas, not 2 (deploy.replicas)"
for c in $(replicas); do
  f=$($DOCKER inspect -f '{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.RestartPolicy.Name}} {{range .Mounts}}{{.Destination}}:{{.RW}}{{end}}' "$c")
  [ "$f" = "2000000000 536870912 true [ALL] [no-new-privileges:true] unless-stopped /models:false" ] \
    || fail "replica $c: limits / read-only / capabilities / restart / model mount: $f"
done
echo "replicas: 2 CPUs and 512 MiB each, read-only root, no capabilities, no-new-privileges, unless-stopped, /models read-only"
[ "$(http_status "$url/v2/health/ready")" = 200 ] || fail "GET /v2/health/ready through nginx"
ok=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(http_status -H 'Content-Type: image/jpeg' --data-binary "@$IMG" "$url/v1/predict")" = 200 ] && ok=$((ok + 1))
done
[ $ok = 10 ] || fail "only $ok of 10 predictions through nginx answered 200"
$DOCKER logs "$nginx_c" > "$tmp/access.log" 2>/dev/null
for c in $(replicas); do
  ip=$(ip_of "$c")
  grep -q "upstream=$ip:8080 ustatus=200" "$tmp/access.log" || fail "nginx sent no request to replica $ip"
done
head -c 17000000 /dev/zero > "$tmp/big.bin"
s=$(http_status -H 'Content-Type: image/jpeg' --data-binary "@$tmp/big.bin" "$url/v1/predict")
[ "$s" = 413 ] || fail "a 17 MB body through nginx got $s, not 413"
rm -f "$tmp/big.bin"
n=0
until [ "$($DOCKER inspect -f '{{.State.Health.Status}}' "$nginx_c")" = healthy ]; do
  [ $n -lt 150 ] || fail "nginx not healthy after 30 s"
  sleep 0.2; n=$((n + 1))
done
v=$(versions_of "$url")
[ "$v" = 1 ] || fail "through nginx $MODEL_NAME lists versions '$v', not 1"
echo "through nginx on 127.0.0.1:$PUBLISH_PORT: 10 predictions 200 from both replicas, 17 MB body 413, nginx healthy; $MODEL_NAME version 1 from the repository"

# run_wrk NAME SECONDS: wrk through nginx in the background; sets t0 and wrk_pid
run_wrk() {
  t0=$(now)
  wrk -t2 -c$CONNS -d"$2"s --timeout 5s -s bench/post_image.lua "$url" -- "$IMG" > "$tmp/wrk-$1.log" 2>&1 &
  wrk_pid=$!
}
end_wrk() {
  wait "$wrk_pid" || fail "wrk failed: $(cat "$tmp/wrk-$1.log")"
  wrk_pid=""
  t_end=$(now)
  $DOCKER logs "$nginx_c" > "$tmp/access.log" 2>/dev/null
}

echo "== compose: a replica killed under load"
victim=$(replicas | head -n 1)
victim_ip=$(ip_of "$victim")
restarts=$($DOCKER inspect -f '{{.RestartCount}}' "$victim")
run_wrk kill 20
sleep 6
pid=$($DOCKER inspect -f '{{.State.Pid}}' "$victim")
t_kill=$(now)
kill -KILL "$pid"
n=0
until [ "$($DOCKER inspect -f '{{.RestartCount}} {{.State.Running}}' "$victim")" = "$((restarts + 1)) true" ]; do
  [ $n -lt 100 ] || fail "the killed replica was not restarted within 10 s"
  sleep 0.1; n=$((n + 1))
done
restart_s=$(elapsed "$t_kill")
end_wrk kill
$PY tests/docker/analyze.py nginx --name "compose kill" --wrk "$tmp/wrk-kill.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $CONNS --event "SIGKILL=$t_kill" --expect bounded --window 1.0 \
  --require-addr "$victim_ip:8080@$($PY -c "import sys; print(float(sys.argv[1]) + 2)" "$t_kill")" \
  || fail "compose: replica killed under load"
echo "REPORT compose kill: the restart policy restarted the replica ($victim_ip) within $restart_s s; it serves again"

echo "== compose: scale to 3 and back to 2 under load"
before_scale=$(replicas)
run_wrk scale 36
sleep 3
t_up3=$(now)
timeout 120 $COMPOSE -f deploy/docker-compose.yml up -d --no-build --no-recreate --scale mobileformer=3 \
  > "$LOGS/compose-scale3.log" 2>&1 || { cat "$LOGS/compose-scale3.log"; fail "compose up --scale mobileformer=3"; }
up3_s=$(elapsed "$t_up3")
[ "$(replicas | wc -l)" = 3 ] || fail "$(replicas | wc -l) replicas after --scale mobileformer=3"
third=$(replicas | grep -vxF "$before_scale" | head -n 1)
[ -n "$third" ] || fail "no new replica after scaling"
third=$(ip_of "$third")
t_serve=$(now)
sleep 8
t_down2=$(now)
timeout 120 $COMPOSE -f deploy/docker-compose.yml up -d --no-build --no-recreate --scale mobileformer=2 \
  > "$LOGS/compose-scale2.log" 2>&1 || { cat "$LOGS/compose-scale2.log"; fail "compose up --scale mobileformer=2"; }
down2_s=$(elapsed "$t_down2")
[ "$(replicas | wc -l)" = 2 ] || fail "$(replicas | wc -l) replicas after --scale mobileformer=2"
end_wrk scale
$PY tests/docker/analyze.py nginx --name "compose scale" --wrk "$tmp/wrk-scale.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $CONNS --event "scale-to-3=$t_up3" --event "scale-to-2=$t_down2" \
  --expect bounded --window 1.0 --clean-event scale-to-3 --require-addr "$third:8080@$t_serve" \
  || fail "compose: scaling under load"
echo "REPORT compose scale: to 3 in $up3_s s (the new replica $third served within the run, no failure while scaling up), back to 2 in $down2_s s"

echo "== compose: version 2 copied into the repository under load, picked up by the poll, then rolled back"
poll_s=$(sed -n 's/^ *MF_REPOSITORY_POLL_S: *"\{0,1\}\([0-9]*\)"\{0,1\} *$/\1/p' deploy/docker-compose.yml | head -n 1)
[ -n "$poll_s" ] || fail "no MF_REPOSITORY_POLL_S in deploy/docker-compose.yml"
mdir=$MODEL_DIR/repository/$MODEL_NAME
[ -d "$mdir/1" ] || fail "no $mdir/1 in the models copy"
limit=$((3 * poll_s + 10))
# lists V: 10 answers in a row through nginx (each from a random replica) list only version V
lists() {
  i=0
  while [ $i -lt 10 ]; do [ "$(versions_of "$url")" = "$1" ] || return 1; i=$((i + 1)); done
}
# loaded_since V T: every replica logged loading version V after T
loaded_since() {
  for c in $(replicas); do
    $DOCKER logs --since "$2" "$c" 2>&1 | grep -q "\"msg\": *\"model version loaded\".*\"version\": *$1," || return 1
  done
}
run_wrk version 150
sleep 3
# as docs/deployment.md says: written under a name that is not a version number, then renamed
mkdir "$mdir/.incoming-2"
cp models/fashion_mnist_mobileformer.safetensors "$mdir/.incoming-2/model.safetensors"
t_v2=$(now)
mv "$mdir/.incoming-2" "$mdir/2"
wait_for "version 2" $limit lists 2 || fail "version 2 not listed through nginx within $limit s (versions: $(versions_of "$url"))"
v2_s=$(elapsed "$t_v2")
wait_for "the load logs" 10 loaded_since 2 "$t_v2" || fail "not every replica logged loading version 2"
sleep 2
t_rb=$(now)
rm -r "$mdir/2"
wait_for "version 1" $limit lists 1 || fail "version 1 not back through nginx within $limit s (versions: $(versions_of "$url"))"
rb_s=$(elapsed "$t_rb")
wait_for "the load logs" 10 loaded_since 1 "$t_rb" || fail "not every replica logged loading version 1 again"
sleep 2
kill -INT "$wrk_pid" 2>/dev/null || true
end_wrk version
loads=$(for c in $(replicas); do
  $DOCKER logs --since "$t_v2" "$c" 2>&1 \
    | sed -n 's/.*"msg": *"model version loaded".*"version": *\([0-9]*\),.*"load_ms": *\([0-9.]*\).*/\1 \2/p' \
    | awk '{ printf "%sv%s in %.1f ms", sep, $1, $2; sep = ", " }'
  echo
done | paste -sd ';' - | sed 's/;/; /g')
$PY tests/docker/analyze.py nginx --name "compose version" --wrk "$tmp/wrk-version.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $CONNS --event "version-2=$t_v2" --event "roll-back=$t_rb" --expect zero \
  || fail "compose: a new version and its roll back under load"
at_s=$($PY -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t_v2")
echo "REPORT compose version: version 2 copied in $at_s s into the run; every answer through nginx lists version 2 $v2_s s later (MF_REPOSITORY_POLL_S $poll_s); removed: version 1 back $rb_s s later; loads by replica: $loads; zero failed requests"

compose down --remove-orphans -t 20 > "$LOGS/compose-down.log" 2>&1 || { cat "$LOGS/compose-down.log"; fail "compose down"; }
project=""
left=$($DOCKER ps -aq --filter "label=com.docker.compose.project=mftest$$" | wc -l)
[ "$left" = 0 ] || fail "$left containers left after compose down"
echo "PASS $test_name: image, container, the k8s pod emulated, compose with a version swap ($(elapsed "$t_all") s)"
