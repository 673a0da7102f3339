#!/bin/sh
# test_swarm.sh -- deploy/stack.yml on a Docker Swarm, under load (make test-swarm).
#
#   sh tests/docker/test_swarm.sh        (run by `make test-swarm`, by .ci/run after `make test-docker`)
#
# Uses the daemon and images of tests/docker/test_docker.sh (tests/docker/lib.sh:
# the running daemon or one started here; the images are rebuilt from cache).
# Initialises a single-node swarm if this engine is in none (and leaves it at the
# end only then), deploys the stack with nginx on a free port, then, each time
# under wrk through nginx on 127.0.0.1 (8 connections):
#   1. docker service update --force: a rolling update, zero failed requests;
#   2. an image change (a new image on top of mobileformer:latest), posting
#      slow requests (3 connections, 4 PNGs of 36 megapixels in each request:
#      seconds each) so that some are inside the old tasks when they get
#      SIGTERM: zero failed requests, by the drain;
#   3. docker kill of one task's container: Swarm starts a new task; failures
#      only within 1 s of the kill, none later;
#   4. scale 2 -> 4 -> 2: zero failed requests, and all 4 replicas served;
#   5. the drain taken away (MF_DRAIN_TIMEOUT_MS=0), then the slow run of 2
#      again (--force): failures expected -- the test can fail, and the drain is
#      what made 2 clean (retried, up to 4 times, while no request happened to
#      be in flight at SIGTERM).
# With short requests the drain is seldom needed here: Swarm takes a task out
# of its DNS 2 s before SIGTERM and nginx re-resolves every second, so nothing is
# in flight any more (docs/deployment.md).
# The stack, its config and network, the extra image and the swarm (if made
# here) are removed at the end; dockerd too if it was started here.
set -eu
test_name=test-swarm
. "$(dirname "$0")/lib.sh"
CONNS=8
SLOW_CONNS=3
IMG=tests/data/images/photo.jpg
STACK=mftest$$
SVC=${STACK}_mobileformer
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mf_test_swarm.XXXXXX")
made_swarm=""
stack_up=""
image2=mobileformer:swarm-test-$$
wrk_pid=""
t_all=$(now)

cleanup() {
  rc=$?
  trap - EXIT INT TERM HUP
  [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
  if [ -n "$stack_up" ]; then
    if [ $rc -ne 0 ]; then
      echo "---- services and tasks"
      $DOCKER stack services "$STACK" 2>/dev/null || true
      $DOCKER service ps --no-trunc --format '{{.Name}} {{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}' "$SVC" 2>/dev/null | head -n 20 || true
      echo "---- the service's last warnings and errors (request lines left out)"
      timeout 30 $DOCKER service logs --raw --tail 400 "$SVC" 2>&1 | grep -v '"status"' | tail -n 25 || true
    fi
    remove_stack
  fi
  $DOCKER image rm "$image2" > /dev/null 2>&1 || true
  if [ -n "$made_swarm" ]; then
    $DOCKER swarm leave --force > /dev/null 2>&1 && echo "swarm: left the swarm this test made" || echo "swarm: could not leave"
  fi
  docker_down
  rm -rf "$tmp"
  [ $rc -eq 0 ] || [ -n "$said_unavailable" ] || echo "FAIL $test_name (logs: build/docker/logs/, build/docker/dockerd.log)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# the stack's services, config and network, waiting (bounded) until they are gone
remove_stack() {
  $DOCKER stack rm "$STACK" > /dev/null 2>&1 || true
  n=0
  while [ $n -lt 300 ]; do
    left=$( ($DOCKER ps -aq --filter "label=com.docker.stack.namespace=$STACK"; \
             $DOCKER network ls -q --filter "label=com.docker.stack.namespace=$STACK"; \
             $DOCKER config ls -q --filter "label=com.docker.stack.namespace=$STACK") 2>/dev/null | wc -l)
    [ "$left" = 0 ] && break
    sleep 0.2; n=$((n + 1))
  done
  [ "$left" = 0 ] || echo "warning: $left containers/networks/configs of stack $STACK still there after 60 s"
  stack_up=""
}

take_lock
docker_up
ensure_base_image
build_image "$IMAGE" docker/Dockerfile
build_image "$NGINX_IMAGE" deploy/nginx.Dockerfile
printf 'FROM %s\nLABEL org.opencontainers.image.version=swarm-test-%s\n' "$IMAGE" "$$" \
  | $DOCKER build -q -t "$image2" - > /dev/null || fail "building $image2"
echo "built $image2 (the image change of the rolling update: $IMAGE plus a label)"
$PY tests/docker/make_slow_body.py "$tmp/slow.body"
echo "made the slow request: 4 PNGs of 6000 x 6000 in one multipart body ($(wc -c < "$tmp/slow.body") bytes)"

state=$($DOCKER info -f '{{.Swarm.LocalNodeState}}')
if [ "$state" = inactive ]; then
  $DOCKER swarm init --advertise-addr 127.0.0.1 > "$LOGS/swarm-init.log" 2>&1 \
    || { cat "$LOGS/swarm-init.log"; fail "docker swarm init"; }
  made_swarm=1
  echo "swarm: initialised a single-node swarm (advertise address 127.0.0.1); it is left at the end"
else
  [ "$state" = active ] || fail "this engine's swarm state is $state"
  echo "swarm: this engine is already in a swarm; using it and leaving it as it is"
fi

echo "== deploy deploy/stack.yml as stack $STACK"
PUBLISH_PORT=$(free_port)
NGINX_CONF_NAME=${STACK}_nginx_conf
# the tree's models/ at /models: the stack serves its repository/ (read-only)
export PUBLISH_PORT NGINX_CONF_NAME MODEL_DIR="$REPO/models" MOBILEFORMER_IMAGE="$IMAGE" NGINX_IMAGE="$NGINX_IMAGE"
url=http://127.0.0.1:$PUBLISH_PORT
t_dep=$(now)
$DOCKER stack deploy -c deploy/stack.yml "$STACK" > "$LOGS/stack-deploy.log" 2>&1 \
  || { cat "$LOGS/stack-deploy.log"; fail "docker stack deploy"; }
stack_up=1
grep -i "ignoring\|unsupported" "$LOGS/stack-deploy.log" && fail "docker stack deploy ignored parts of deploy/stack.yml"

# running_healthy N: N tasks of the service running, each of them healthy
running_healthy() {
  ids=$($DOCKER ps -q --filter "label=com.docker.swarm.service.name=$SVC" --filter health=healthy)
  [ "$(echo "$ids" | grep -c .)" = "$1" ] && [ "$($DOCKER service ls -q --filter "name=$SVC" | wc -l)" = 1 ] \
    && [ "$($DOCKER service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "$SVC")" = "$1" ]
}
ready_through_nginx() { [ "$(http_status "$url/v2/health/ready")" = 200 ]; }
wait_for "2 healthy replicas" 90 running_healthy 2 || fail "no 2 healthy replicas within 90 s"
wait_for "nginx" 60 ready_through_nginx || fail "nginx on 127.0.0.1:$PUBLISH_PORT does not answer within 60 s"
echo "REPORT swarm: stack deployed, 2 replicas healthy and nginx answering in $(elapsed "$t_dep") s"
spec=$($DOCKER service inspect -f '{{.Spec.EndpointSpec.Mode}} {{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.Parallelism}} {{.Spec.UpdateConfig.FailureAction}} {{.Spec.RollbackConfig.Order}} {{.Spec.TaskTemplate.RestartPolicy.Condition}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.ContainerSpec.ReadOnly}} {{.Spec.TaskTemplate.ContainerSpec.CapabilityDrop}} {{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Target}}:{{.ReadOnly}}{{end}}' "$SVC")
[ "$spec" = "dnsrr start-first 1 rollback start-first any 2000000000 536870912 true [ALL] /models:true" ] \
  || fail "the service's spec: $spec"
echo "service: dnsrr; update start-first, parallelism 1, failure action rollback; rollback start-first; restart on any exit; 2 CPUs / 512 MiB; read-only root, no capabilities; /models read-only"
nginx_conf=$($DOCKER service inspect -f '{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}:{{.File.Name}}{{end}}' "${STACK}_nginx")
[ "$nginx_conf" = "$NGINX_CONF_NAME:/etc/nginx/nginx.conf" ] || fail "nginx's config: $nginx_conf"
ok=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(http_status -H 'Content-Type: image/jpeg' --data-binary "@$IMG" "$url/v1/predict")" = 200 ] && ok=$((ok + 1))
done
[ $ok = 10 ] || fail "only $ok of 10 predictions through nginx answered 200"
v=$(model_versions "$url" fashion_mnist_mobileformer)
[ "$v" = 1 ] || fail "through nginx fashion_mnist_mobileformer lists versions '$v', not 1 (the tree's models/repository)"
echo "10 predictions through nginx (its config a Swarm config): 200; fashion_mnist_mobileformer version 1 from the repository in the mounted models/"

nginx_logs() { timeout 60 $DOCKER service logs --raw "${STACK}_nginx" 2>/dev/null > "$tmp/access.log" || true; }
# run_wrk NAME SECONDS fast|slow: wrk through nginx in the background, posting
# photo.jpg (8 connections) or the slow multipart body (SLOW_CONNS connections);
# sets t0, conns and wrk_pid
run_wrk() {
  t0=$(now)
  if [ "$3" = slow ]; then
    conns=$SLOW_CONNS
    wrk -t2 -c$conns -d"$2"s --timeout 20s -s tests/docker/post_body.lua "$url" -- "$tmp/slow.body" \
      "multipart/form-data; boundary=mfslowbatch" > "$tmp/wrk-$1.log" 2>&1 &
  else
    conns=$CONNS
    wrk -t2 -c$conns -d"$2"s --timeout 20s -s bench/post_image.lua "$url" -- "$IMG" > "$tmp/wrk-$1.log" 2>&1 &
  fi
  wrk_pid=$!
}
# end_wrk NAME: a second more, then wrk is stopped (SIGINT: it prints its summary)
end_wrk() {
  sleep "${2:-2}"
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" || fail "wrk failed: $(cat "$tmp/wrk-$1.log")"
  wrk_pid=""
  t_end=$(now)
  nginx_logs
}
# the "draining" lines of the tasks a rolling update replaced: how many requests each had in flight
inflight_at_sigterm() {
  for c in $old_tasks; do
    $DOCKER logs "$c" 2>&1 | sed -n 's/.*"msg":"draining".*"inflight":\([0-9]*\).*/\1/p'
  done | paste -sd ' ' -
}
plus() { $PY -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]))" "$1" "$2"; }
# roll NAME fast|slow ARGS...: a rolling update (docker service update ARGS) under load, timed
roll() {
  name=$1 body=$2
  shift 2
  old_tasks=$($DOCKER ps -q --filter "label=com.docker.swarm.service.name=$SVC")
  run_wrk "$name" 90 "$body"
  sleep 4
  t_roll=$(now)
  timeout 180 $DOCKER service update --detach=false "$@" "$SVC" > "$LOGS/update-$name.log" 2>&1 \
    || { tail -n 5 "$LOGS/update-$name.log"; fail "docker service update $* did not converge within 180 s"; }
  roll_s=$(elapsed "$t_roll")
  end_wrk "$name" 3
  $DOCKER service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$SVC" > "$tmp/update-state"
  grep -qx completed "$tmp/update-state" || fail "update state $(cat "$tmp/update-state"), not completed"
}

echo "== 1. rolling update (--force) under load"
roll force fast --force
$PY tests/docker/analyze.py nginx --name "swarm roll --force" --wrk "$tmp/wrk-force.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $CONNS --event "update=$t_roll" --expect zero \
  --distinct-after "$(plus "$t_roll" "$roll_s"):2" || fail "rolling update (--force)"
echo "REPORT swarm roll --force: 2 tasks replaced one by one (start-first) in $roll_s s, zero failed requests"

echo "== 2. rolling update to another image, slow requests (4 images of 36 megapixels each) in flight"
roll image slow --image "$image2"
inflight=$(inflight_at_sigterm)
$PY tests/docker/analyze.py nginx --name "swarm roll --image" --wrk "$tmp/wrk-image.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $conns --event "update=$t_roll" --expect zero --min-ok 4 || fail "rolling update (--image)"
running=$($DOCKER service ps -f desired-state=running --format '{{.Image}}' "$SVC" | sort -u | paste -sd ' ' -)
[ "$running" = "$image2" ] || fail "tasks run $running after the update, not $image2"
echo "REPORT swarm roll --image: to $image2 in $roll_s s; requests in flight in each old task at its SIGTERM: $inflight, all answered (the drain); zero failed requests"

echo "== 3. docker kill of one task's container under load"
victim=$($DOCKER ps -q --filter "label=com.docker.swarm.service.name=$SVC" | head -n 1)
victim_task=$($DOCKER inspect -f '{{index .Config.Labels "com.docker.swarm.task.id"}}' "$victim")
run_wrk kill 60 fast
sleep 5
t_kill=$(now)
$DOCKER kill "$victim" > /dev/null
victim_gone() { [ "$($DOCKER inspect -f '{{.State.Running}}' "$victim")" = false ]; }
wait_for "the kill" 10 victim_gone || fail "the killed container still runs"
wait_for "a new task" 60 running_healthy 2 || fail "Swarm did not bring the service back to 2 healthy tasks within 60 s"
restart_s=$(elapsed "$t_kill")
t_back=$(now)
sleep 5
end_wrk kill 0
new_tasks=$($DOCKER service ps -q -f desired-state=running "$SVC" | grep -vx "$victim_task" | wc -l)
[ "$new_tasks" = 2 ] || fail "the killed task is still listed as running"
$PY tests/docker/analyze.py nginx --name "swarm kill" --wrk "$tmp/wrk-kill.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $CONNS --event "docker-kill=$t_kill" --expect bounded --window 1.0 \
  --distinct-after "$t_back:2" || fail "docker kill of a task under load"
echo "REPORT swarm kill: Swarm replaced the killed task; 2 healthy tasks again $restart_s s after the kill"

echo "== 4. scale 2 -> 4 -> 2 under load"
run_wrk scale 120 fast
sleep 4
t_up=$(now)
timeout 120 $DOCKER service scale --detach=false "$SVC=4" > "$LOGS/scale4.log" 2>&1 || { tail -n 5 "$LOGS/scale4.log"; fail "service scale to 4"; }
wait_for "4 healthy replicas" 60 running_healthy 4 || fail "no 4 healthy replicas within 60 s"
up_s=$(elapsed "$t_up")
t_four=$(now)
sleep 6
t_down=$(now)
timeout 120 $DOCKER service scale --detach=false "$SVC=2" > "$LOGS/scale2.log" 2>&1 || { tail -n 5 "$LOGS/scale2.log"; fail "service scale to 2"; }
wait_for "2 replicas" 60 running_healthy 2 || fail "not back to 2 replicas within 60 s"
down_s=$(elapsed "$t_down")
sleep 3
end_wrk scale 0
$PY tests/docker/analyze.py nginx --name "swarm scale" --wrk "$tmp/wrk-scale.log" --access "$tmp/access.log" \
  --t0 "$t0" --t-end "$t_end" --conns $CONNS --event "scale-to-4=$t_up" --event "scale-to-2=$t_down" \
  --expect zero --distinct-after "$t_four:4" || fail "scaling under load"
echo "REPORT swarm scale: to 4 healthy in $up_s s, all 4 served; back to 2 in $down_s s; zero failed requests"

echo "== 5. the same slow-request rolling update without the drain (MF_DRAIN_TIMEOUT_MS=0): failures expected"
timeout 180 $DOCKER service update --detach=false --env-add MF_DRAIN_TIMEOUT_MS=0 "$SVC" > "$LOGS/update-drain0.log" 2>&1 \
  || fail "service update --env-add MF_DRAIN_TIMEOUT_MS=0"
# A control, not a property: requests must be inside an old task at its
# SIGTERM, and not past their forward pass (the answers of those still go out
# in the second the server gives them), for the run to show failures.  Up to
# 4 tries; when none shows any, that is reported, not failed.
try=1
shown=0
while :; do
  roll nodrain slow --force
  inflight=$(inflight_at_sigterm)
  if $PY tests/docker/analyze.py nginx --name "swarm roll, drain 0" --wrk "$tmp/wrk-nodrain.log" \
       --access "$tmp/access.log" --t0 "$t0" --t-end "$t_end" --conns $conns --event "update=$t_roll" \
       --expect failures --min-ok 4 > "$tmp/nodrain.txt"; then
    cat "$tmp/nodrain.txt"
    shown=1
    break
  fi
  cat "$tmp/nodrain.txt"
  [ $try -lt 4 ] || break
  echo "no request failed without the drain (in flight at SIGTERM: $inflight; try $try): again"
  try=$((try + 1))
done
if [ $shown = 1 ]; then
  echo "REPORT swarm roll, drain 0: requests in flight in each old task at its SIGTERM: $inflight; without the drain they failed -- the zero of run 2 is the drain's doing"
else
  echo "REPORT swarm roll, drain 0: in 4 tries no request failed without the drain (in flight at the last SIGTERM: $inflight): the requests in flight were past inference, and their answers went out in the server's last second"
fi

remove_stack
echo "PASS $test_name: rolling updates, kill, scaling, and the control run without the drain ($(elapsed "$t_all") s)"
