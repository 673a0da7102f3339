/* http.h -- the HTTP front end: routing, uploads, validation, answers.
 *
 * A libmicrohttpd daemon (internal poll() threads, a pool of http_threads)
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
 *   GET  /, /index.html, /app.css, /app.js             the page for people (web.h)
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

/* Start draining: readiness turns 503, answers carry "Connection: close",
 * and the listening socket is closed so new connections are refused.
 * Requests already received carry on, and a request arriving on a
 * connection opened before (keep-alive) is still served, until the batcher
 * stops accepting (mf_batcher_drain; then 503 shutting_down). */
void mf_http_begin_drain(mf_http *h);

/* Requests received and not yet completed (answer sent or connection gone). */
long mf_http_inflight(const mf_http *h);

/* Stop the daemon (closes every connection) and free. NULL is fine. */
void mf_http_stop(mf_http *h);

/* ---- the request head, without a daemon ----------------------------------
 * The pure parts of routing and validation, used by the handlers above and
 * callable alone (tests/test_http.c, tests/fuzz/fuzz_route.c).  Nothing here
 * allocates; returned pointers point into the arguments or static strings. */

typedef enum mf_http_route_status {
    MF_HTTP_ROUTE_FOUND = 0,          /* a route has this path and method */
    MF_HTTP_ROUTE_OPTIONS,            /* OPTIONS: CORS preflight, any path */
    MF_HTTP_ROUTE_NOT_FOUND,          /* no route has this path (404) */
    MF_HTTP_ROUTE_METHOD_NOT_ALLOWED, /* a route has the path, not the method (405) */
} mf_http_route_status;

typedef struct mf_http_route_match {
    mf_http_route_status status; /* outcome */
    int route;                   /* FOUND, METHOD_NOT_ALLOWED: index in http.c's table; else -1 */
    mf_endpoint endpoint;        /* metrics label (OTHER when not found) */
    int auth;                    /* FOUND: the route needs the API key when one is set */
    const char *allow;           /* METHOD_NOT_ALLOWED: the Allow header's value */
    const char *name;            /* FOUND: the {name} segment, inside path; NULL if none */
    size_t name_len;             /* its length (>= 1 when name is set) */
} mf_http_route_match;

/* Route a request: method as sent (GET routes also answer HEAD), path is the
 * URL path without the query, as libmicrohttpd passes it. */
void mf_http_route_find(const char *method, const char *path, mf_http_route_match *m);

/* top_k from its query value (len bytes, not NUL-terminated; NULL = no top_k
 * in the query): absent -> 5 capped at classes; 1.. -> capped at classes;
 * empty, zero, signs, anything but digits -> -1 (400 bad_top_k). */
int mf_http_parse_top_k(const char *value, size_t len, int classes);

/* Media type of a Content-Type value, lower-cased, without parameters, into
 * out (cap bytes, truncated). */
void mf_http_media_type(const char *content_type, char *out, size_t cap);

/* Does an Authorization header value (NULL if absent) carry api_key as
 * "Bearer <key>"?  Always true when api_key is empty.  Constant time in the
 * header's content. */
int mf_http_bearer_ok(const char *authorization, const char *api_key);

#endif
