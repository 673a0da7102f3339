/* request.h -- the server's state and one request's context (server-private).
 *
 * Shared by the modules a request passes through:
 *   http.c      libmicrohttpd callbacks, body reading, suspend/resume glue
 *   route.c     which handler serves a method and path
 *   reply.c     every answer and error (the error table)
 *   predict.c   /v1 predict: body -> images -> jobs -> answer
 *   endpoints.c health, metadata, metrics, CORS preflight, the page
 *
 * Ownership and threads: a request is created when its headers are complete
 * and freed when libmicrohttpd reports it completed; it is touched by the
 * HTTP thread serving its connection, except its jobs, which workers finish
 * (mf_request_job_done).  The mutex orders those completions against the
 * suspend, so a job that finishes before the connection is suspended is
 * simply answered without suspending.
 */
#ifndef MF_REQUEST_H
#define MF_REQUEST_H

#include "batcher.h"
#include "config.h"
#include "deadline.h"
#include "metrics.h"
#include "mf.h"
#include "route.h"

#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MF_JSON_TYPE "application/json"

struct mf_http {
    const mf_config *cfg;        /* borrowed settings */
    const mf_model *model;       /* borrowed, read-only */
    mf_batcher *batcher;         /* borrowed */
    mf_metrics *metrics;         /* borrowed */
    struct MHD_Daemon *daemon;   /* the libmicrohttpd daemon */
    int port;                    /* bound port */
    int in_h, in_w;              /* model input size */
    int classes;                 /* model classes */
    atomic_int draining;         /* set once by mf_http_begin_drain */
    MHD_socket listen_fd;        /* after the drain began: the quiesced listening socket */
    atomic_long inflight;        /* requests between request_new and completion */
    mf_deadline *deadline;       /* request-head deadlines (slow clients); NULL = none */
    char *metadata;              /* GET /v2/models/{name} body, built once */
    size_t metadata_len;         /* its length */
};

typedef enum mf_req_state {
    MF_REQ_NEW = 0, /* headers seen, not routed yet */
    MF_REQ_BODY,    /* receiving the body */
    MF_REQ_WAITING, /* jobs queued, connection suspended */
    MF_REQ_DONE,    /* answer queued */
} mf_req_state;

typedef struct mf_request mf_request;
typedef struct mf_predict mf_predict; /* predict.c's part of a request */

struct mf_request {
    struct mf_http *srv;          /* server */
    struct MHD_Connection *conn;  /* its connection */
    const mf_route *route;        /* matched route, NULL if none */
    mf_route_match match;         /* the path's model and version segments */
    mf_endpoint endpoint;         /* metrics label */
    mf_dialect dialect;           /* the error body's shape (route's API) */
    mf_req_state state;           /* where it is in its life */
    uint64_t start_ns;            /* headers received (mf_now_ns) */
    char method[16];              /* HTTP method (truncated) */
    char *path;                   /* URL path (owned) */
    char remote[INET6_ADDRSTRLEN];/* client address */
    const char *allow;            /* Allow header of a 405 */
    const char *const *headers;   /* more headers for the answer: name, value, ..., NULL */
    /* body (routes with MF_ROUTE_BODY) */
    uint8_t *body;                /* received body (owned) */
    size_t body_len, body_cap;    /* bytes in body, capacity */
    size_t bytes_in;              /* body bytes received, kept or not */
    int body_too_large;           /* passed max_body_bytes: discarding */
    int body_nomem;               /* could not grow the buffer: discarding */
    int expected;                 /* counted in the batcher's images on their way */
    /* jobs (guarded by mu) */
    pthread_mutex_t mu;           /* orders job completion against suspend */
    int pending;                  /* jobs not finished */
    int suspended;                /* connection suspended */
    mf_handler answer;            /* runs when the last job is done (mf_request_wait) */
    mf_predict *predict;          /* predict.c's state (owned; freed by mf_predict_free) */
    /* the answer */
    int status;                   /* answer status, 0 before */
    size_t bytes_out;             /* answer body bytes */
    const char *error_code;       /* answer's error code, NULL if none */
    int batch_size;               /* largest batch of its images */
    double latency_ms;            /* headers to answer */
};

/* A request header's value, or NULL. */
const char *mf_request_header(mf_request *r, const char *name);

/* The request will submit images: the batcher counts it among the images
 * on their way until it submits or fails (mf_request_unexpect, idempotent). */
void mf_request_expect(mf_request *r);
void mf_request_unexpect(mf_request *r);

/* Jobs: n are about to be submitted (before mf_batcher_submit); one
 * finished (any thread, once per job); the submit failed (undo n). */
void mf_request_jobs_begin(mf_request *r, int n);
void mf_request_job_done(mf_request *r);
void mf_request_jobs_cancel(mf_request *r);

/* After a successful submit: suspend the connection until the last job is
 * done (returns MHD_YES), or, when all are done already, run answer(r). */
enum MHD_Result mf_request_wait(mf_request *r, enum MHD_Result (*answer)(mf_request *r));

#endif
