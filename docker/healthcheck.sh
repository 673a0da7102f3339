#!/bin/bash
# Container health check (docker/Dockerfile HEALTHCHECK, deploy/docker-compose.yml,
# deploy/stack.yml): healthy only when GET /v2/health/ready on this container's
# port answers 200 (HEALTHCHECK_PATH asks another path: the Swarm stack's nginx
# asks its own /nginx-health).
# The runtime image has no curl; bash's /dev/tcp is enough for one GET, which is
# why this one script is bash and not POSIX sh.  It probes 127.0.0.1, so it
# assumes MF_BIND is 0.0.0.0 (the image's default) or 127.0.0.1.
# tests/sh/test_deploy.sh runs this script against a real server.
port=${MF_PORT:-8080}
path=${HEALTHCHECK_PATH:-/v2/health/ready}
{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || { echo "no connection to 127.0.0.1:$port"; exit 1; }
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 2 status <&3 || { echo "no answer from 127.0.0.1:$port"; exit 1; }
case "$status" in
  "HTTP/1."[01]" 200 "*) exit 0 ;;
esac
echo "not ready: $status"
exit 1
