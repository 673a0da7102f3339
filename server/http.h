/* http.h -- the HTTP front end: routing, uploads, validation, answers.
 *
 * A libmicrohttpd daemon (internal epoll threads, a pool of http_threads)
 * serves the endpoints below.  Predict requests are read whole, decoded and
 * preprocessed on the HTTP thread that received them, queued on the batcher,
 * and their connection is suspended until the batch has run (see batcher.c,
 * DESIGN).  Every answer, success or error, goes through one reply function
 * that also counts it in the metrics; every error body is
 * {"error": {"code": "...", "message": "..."}}.
 *
 *   POST /v1/predict, POST /v1/models/{name}/predict   top-k of one or more images
 *   GET  /v2/health/live, /v2/health/ready             liveness, readiness
 *   GET  /v2/models/{name}, /v2/models/{name}/ready    model metadata, readiness
 *   GET  /metrics                                      Prometheus text
 *   OPTIONS any path                                   CORS preflight
 *
 * Ownership: the server borrows the config, model, batcher and metrics; they
 * must outlive it.  mf_http_stop() must come after mf_batcher_drain() so no
 * connection is left suspended (libmicrohttpd refuses to stop with one).
 */
#ifndef MF_HTTP_H
#define MF_HTTP_H

#include "batcher.h"
#include "config.h"
#include "metrics.h"
#include "mf.h"

typedef enum mf_http_status {
    MF_HTTP_OK = 0,
    MF_HTTP_ARG,    /* bad argument (address, thread counts) */
    MF_HTTP_LISTEN, /* the daemon could not start (port in use, no permission, ...) */
    MF_HTTP_NOMEM,  /* allocation failed */
} mf_http_status;

const char *mf_http_status_str(mf_http_status s);

typedef struct mf_http mf_http; /* opaque */

/* Start serving.  The listening port (useful with port 0) is mf_http_port(). */
mf_http_status mf_http_start(const mf_config *cfg, const mf_model *model, mf_batcher *batcher,
                             mf_metrics *metrics, mf_http **out, char *err, size_t errlen);

int mf_http_port(const mf_http *h);

/* Start draining: readiness turns 503, new predict requests get 503, answers
 * carry "Connection: close", and the listening socket is closed so new
 * connections are refused.  Requests already received carry on. */
void mf_http_begin_drain(mf_http *h);

/* Requests received and not yet completed (answer sent or connection gone). */
long mf_http_inflight(const mf_http *h);

/* Stop the daemon (closes every connection) and free. NULL is fine. */
void mf_http_stop(mf_http *h);

#endif
