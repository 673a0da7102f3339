# nginx in front of the replicas (deploy/docker-compose.yml, deploy/stack.yml),
# built on the same base as the service image, so no nginx:* image has to be
# pulled: Debian 12's nginx (1.22).  From the repository root:
#
#   docker build -f deploy/nginx.Dockerfile -t mobileformer-nginx:latest .
#
# deploy/nginx.conf is copied in as the default; compose mounts the file itself
# and the Swarm stack gives it as a config, so a changed file needs no rebuild.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && rm -f /etc/nginx/sites-enabled/default
COPY deploy/nginx.conf /etc/nginx/nginx.conf
# the service's health check, here through nginx: healthy while some replica is ready
COPY docker/healthcheck.sh /usr/local/bin/mf-healthcheck
ENV MF_PORT=8080
EXPOSE 8080
# SIGQUIT: nginx's graceful shutdown (requests in progress are finished)
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off; user www-data;"]
