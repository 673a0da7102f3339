/* http.h -- the HTTP/1.1 front end: http_threads epoll loops serving the
 * routes of route.c (DESIGN in http.c; conn.c, intake.c, request.c, conn.h).
 * Requests that carry images are read whole, decoded and preprocessed (small
 * images on the HTTP thread that received them, large ones on the decode
 * pool, decoder.h), queued on the batcher, and their connection waits until
 * the batch has run (see batcher.c, DESIGN).  Every answer goes through
 * reply.h.
 *
 *   POST /v1/predict, POST /v1/models/{name}/predict   top-k of one or more images
 *   GET  /v2/health/live, /v2/health/ready             liveness, readiness
 *   GET  /v2/models/{name}, /v2/models/{name}/ready    model metadata, readiness
 *   GET  /metrics                                      Prometheus text
 *   GET  /, /index.html, /app.css, /app.js             the page for people (web.h)
 *   OPTIONS any path                                   CORS preflight
 *
 * Ownership: the server borrows the config, repository, batcher and metrics; they
 * must outlive it.  mf_http_stop() must come after mf_batcher_drain() so no
 * request still waits for a job when the HTTP threads stop.
 */
#ifndef MF_HTTP_H
#define MF_HTTP_H

#include "batcher.h"
#include "decoder.h"
#include "config.h"
#include "metrics.h"
#include "mf.h"
#include "repository.h"

#include <stddef.h>

typedef enum mf_http_status {
    MF_HTTP_OK = 0,
    MF_HTTP_ARG,    /* bad argument (address, thread counts) */
    MF_HTTP_LISTEN, /* the daemon could not start (port in use, no permission, ...) */
    MF_HTTP_NOMEM,  /* allocation failed */
} mf_http_status;

const char *mf_http_status_str(mf_http_status s);

typedef struct mf_http mf_http; /* opaque (request.h) */

/* Start serving the repository's models.  The listening port (useful with
 * port 0) is mf_http_port(). */
mf_http_status mf_http_start(const mf_config *cfg, mf_repo *repo, mf_batcher *batcher, mf_decoder *decoder,
                             mf_metrics *metrics,
                             mf_http **out, char *err, size_t errlen);

int mf_http_port(const mf_http *h);

/* Start draining: readiness turns 503, answers carry "Connection: close",
 * and the listening socket is closed so new connections are refused.
 * Requests already received carry on, and a request arriving on a
 * connection opened before (keep-alive) is still served, until the batcher
 * stops accepting (mf_batcher_drain; then 503 shutting_down).  Connections
 * the kernel has queued are taken first, so they are served, not reset:
 * returns once every HTTP thread has taken its share, or after wait_ms
 * (at least 500 ms) if one is still busy in a handler. */
void mf_http_begin_drain(mf_http *h, int wait_ms);

/* Requests received and not yet completed (answer sent or connection gone),
 * and, once a drain has begun, connections taken from the backlog whose
 * request has not arrived yet. */
long mf_http_inflight(const mf_http *h);

/* Stop the daemon (closes every connection) and free. NULL is fine. */
void mf_http_stop(mf_http *h);

#endif
