/* request.h -- the server's state and one request's context (server-private).
 *
 * Shared by the modules a request passes through:
 *   http.c      the listening socket, the event loops, deadline sweep, drain
 *   conn.c      a connection's states: reading, heads, writing answers
 *   intake.c    head -> request -> route and checks -> body, its limits
 *   request.c   this object's life and the calls below (conn.h: internals)
 *   httpparse.c the strict parser of heads and chunked bodies
 *   route.c     which handler serves a method and path
 *   validate.c  API key, top_k, media type
 *   reply.c     every answer and error (the error table)
 *   predict.c   /v1 predict: body -> images -> jobs -> answer
 *   endpoints.c health, metadata, metrics, the page
 *
 * Ownership and threads: a request is created when its head has been read
 * and freed when its answer has been written (or its connection has gone and
 * none of its jobs is still queued or running).  Everything in it is touched
 * only by the I/O thread of its connection, except the job count, which
 * workers decrement under `mu` (mf_request_job_done); the thread that brings
 * the count to zero hands the request back to its I/O thread, which then
 * runs r->answer.
 */
#ifndef MF_REQUEST_H
#define MF_REQUEST_H

#include "batcher.h"
#include "config.h"
#include "decoder.h"
#include "metrics.h"
#include "mf.h"
#include "route.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MF_JSON_TYPE "application/json"
#define MF_MAX_HEAD (32 * 1024)  /* request line + headers of one request; larger gets 431 */

typedef struct mf_loop mf_loop; /* one I/O thread (conn.h) */
typedef struct mf_conn mf_conn; /* one client connection (conn.h) */

typedef struct mf_repo mf_repo;       /* repository.h */
typedef struct mf_version mf_version; /* repository.h */

struct mf_http {
    const mf_config *cfg;        /* borrowed settings */
    mf_repo *repo;               /* borrowed: the models */
    mf_batcher *batcher;         /* borrowed */
    mf_decoder *decoder;         /* borrowed: the decode pool */
    mf_metrics *metrics;         /* borrowed */
    int port;                    /* bound port */
    int listen_fd;               /* the listening socket (-1 once closed) */
    atomic_int draining;         /* set once by mf_http_begin_drain */
    atomic_int stopping;         /* the loops must exit */
    atomic_long inflight;        /* requests between their head and their end */
    atomic_long drain_pending;   /* connections taken from the backlog at drain, no request read yet */
    atomic_int conns;            /* open connections, reserve ones included */
    atomic_llong body_bytes;     /* bytes reserved by request bodies being read (max_inflight_body_bytes) */
    int reserve;                 /* connections beyond max_connections kept for health and metrics */
    pthread_mutex_t ip_mu;       /* guards ip_table */
    struct mf_ip_count *ip_table;/* open connections per client address (max_connections_per_client) */
    size_t ip_cap;               /* slots in ip_table (power of two) */
    mf_loop *loops;              /* [n_loops] */
    int n_loops;                 /* http_threads */
};

typedef struct mf_predict mf_predict; /* predict.c's part of a request */

/* The answer being built (reply.c) and written (conn.c). */
typedef struct mf_response {
    unsigned status;         /* HTTP status */
    const char *ctype;       /* Content-Type, or NULL */
    char *body;              /* the body bytes */
    size_t len;              /* their number */
    int owned;               /* free(body) once written */
    char extra[1536];        /* more header lines, "Name: value\r\n" each */
    size_t extra_len;        /* bytes used in extra */
    int close;               /* Connection: close after this answer */
} mf_response;

struct mf_request {
    struct mf_http *srv;          /* server */
    mf_conn *conn;                /* its connection; NULL once the client has gone */
    const mf_route *route;        /* matched route, NULL if none */
    const mf_version *mv;         /* the model version it is for (held; released at its end), or NULL */
    mf_route_match match;         /* the path's model and version segments */
    mf_endpoint endpoint;         /* metrics label */
    mf_dialect dialect;           /* the error body's shape (route's API) */
    uint64_t start_ns;            /* head received (mf_now_ns) */
    int minor;                    /* HTTP/1.<minor> */
    int head_only;                /* HEAD: the answer's body is not sent */
    char method[16];              /* HTTP method (truncated) */
    char *path;                   /* URL path, percent-decoded (owned) */
    char *query;                  /* raw query string, "" if none (owned, with path) */
    char remote[INET6_ADDRSTRLEN];/* client address */
    char *head;                   /* a copy of the head, fields NUL-terminated (owned) */
    const char *hname[64];        /* field names, into head */
    const char *hvalue[64];       /* field values, into head */
    int n_headers;                /* fields */
    const char *allow;            /* Allow header of a 405 */
    const char *const *headers;   /* more headers for the answer: name, value, ..., NULL */
    /* body (routes with MF_ROUTE_BODY) */
    uint8_t *body;                /* received body (owned) */
    size_t body_len, body_cap;    /* bytes in body, capacity */
    size_t bytes_in;              /* body bytes received */
    size_t budget;                /* bytes of max_inflight_body_bytes reserved for the body */
    int expected;                 /* counted in the batcher's images on their way */
    /* jobs */
    pthread_mutex_t mu;           /* guards pending and waiting */
    int pending;                  /* jobs not finished */
    int waiting;                  /* the I/O thread waits for them (mf_request_wait) */
    mf_handler answer;            /* runs when the last job is done */
    void (*cancel)(mf_request *r);/* the client went away while jobs are pending: take back what has not started */
    mf_predict *predict;          /* predict.c's state (owned; freed by mf_predict_free) */
    void *control;                /* the repository API's state (owned, free()) */
    void *oip;                    /* oip.c's state (owned; mf_oip_free) */
    const char *oip_id;           /* the infer request's "id" (oip.c's), echoed in its answer and errors */
    char request_id[72];          /* X-Request-ID: the client's, or one made up; on every answer and log line */
    /* the answer */
    mf_response resp;             /* being built / written */
    int answered;                 /* mf_reply has run */
    int status;                   /* answer status, 0 before */
    size_t bytes_out;             /* answer body bytes */
    const char *error_code;       /* answer's error code, NULL if none */
    int batch_size;               /* largest batch of its images */
    double latency_ms;            /* head to answer */
};

/* A request header's value (the first one; names compare case-insensitively),
 * or NULL. */
const char *mf_request_header(mf_request *r, const char *name);

/* A query parameter's raw value (not NUL-terminated: *len bytes, percent
 * escapes decoded into a per-request copy) or NULL if absent.  "?k" without
 * '=' gives an empty value. */
const char *mf_request_query(mf_request *r, const char *key, size_t *len);

/* Grow the request's share of max_inflight_body_bytes to `want` bytes (an
 * inflated body, say): 0, or -1 when the budget has no room (nothing is
 * taken then).  Released when the request ends. */
int mf_request_budget(mf_request *r, size_t want);

/* The request will submit images: the batcher counts it among the images
 * on their way until it submits or fails (mf_request_unexpect, idempotent). */
void mf_request_expect(mf_request *r);
void mf_request_unexpect(mf_request *r);

/* Jobs: n are about to be submitted (before mf_batcher_submit); one
 * finished (any thread, once per job); the submit failed (undo n). */
void mf_request_jobs_begin(mf_request *r, int n);
void mf_request_jobs_add(mf_request *r, int n); /* n more (decode tasks, one at a time) */
void mf_request_job_done(mf_request *r);
void mf_request_jobs_cancel(mf_request *r);

/* After a successful submit: wait for the last job (the connection is left
 * alone meanwhile), then run answer(r) on this I/O thread; when every job is
 * done already, run it now.  Returns what answer returns, or 0. */
int mf_request_wait(mf_request *r, mf_handler answer);

/* Write r->resp (reply.c has filled it) on the request's connection. */
void mf_http_send(mf_request *r);

#endif
