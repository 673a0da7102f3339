/* route.h -- the route table: which handler answers a method and path, with
 * its metrics label, its API (the shape of its errors), whether it needs the
 * API key and whether it reads a body.
 *
 * A route owns its endpoint label: the labels are one list here
 * (MF_ENDPOINTS), the table's rows name them, and metrics.c counts by the
 * same list (mf_endpoint_labels), so the two cannot disagree.  The page's
 * files are reached through one route that asks web.c for the asset.
 *
 * Matching is pure (no allocation, no server state), so it is callable alone
 * (tests/test_http.c, tests/fuzz/fuzz_route.c).  Returned pointers point into
 * the arguments or static storage.
 */
#ifndef MF_ROUTE_H
#define MF_ROUTE_H

#include <stddef.h>

/* label, enum suffix: the endpoint label of mobileformer_requests_total */
#define MF_ENDPOINTS(X)                                 \
    X(PREDICT, "predict")                               \
    X(INFER, "infer")                                   \
    X(HEALTH_LIVE, "health_live")                       \
    X(HEALTH_READY, "health_ready")                     \
    X(SERVER_METADATA, "server_metadata")               \
    X(MODEL_METADATA, "model_metadata")                 \
    X(MODEL_READY, "model_ready")                       \
    X(REPOSITORY, "repository")                         \
    X(METRICS, "metrics")                               \
    X(OPTIONS, "options")                               \
    X(WEB, "web")                                       \
    X(OTHER, "other")

typedef enum mf_endpoint {
#define MF_ENDPOINT_ENUM(name, label) MF_ENDPOINT_##name,
    MF_ENDPOINTS(MF_ENDPOINT_ENUM)
#undef MF_ENDPOINT_ENUM
    MF_ENDPOINT_COUNT
} mf_endpoint;

/* The labels, indexed by mf_endpoint (MF_ENDPOINT_COUNT of them). */
extern const char *const mf_endpoint_labels[MF_ENDPOINT_COUNT];

/* The API a route belongs to: the shape of its error bodies (reply.h). */
typedef enum mf_dialect {
    MF_DIALECT_V1 = 0, /* {"error": {"code": "...", "message": "..."}} */
    MF_DIALECT_OIP,    /* Open Inference Protocol: {"error": "<message>", "code": "..."} */
} mf_dialect;

typedef struct mf_request mf_request;

/* A handler answers through reply.h (now, or later from r->answer) and
 * returns 0; -1 drops the connection unanswered (nothing else can be done,
 * e.g. no memory for the request). */
typedef int (*mf_handler)(mf_request *r);

/* Route flags */
#define MF_ROUTE_AUTH 1u  /* needs the API key when one is set */
#define MF_ROUTE_BODY 2u  /* reads a body: begin() at the headers, body() when it is complete */
#define MF_ROUTE_MODEL 4u /* serves a model: {m} (or the default model) and {v} are looked up and held */

typedef struct mf_route {
    const char *pattern;  /* path; "{m}" one model-name segment, "{v}" one version segment */
    const char *method;   /* "GET" routes also answer HEAD */
    mf_endpoint endpoint; /* metrics label */
    mf_dialect dialect;   /* API */
    unsigned flags;       /* MF_ROUTE_* */
    mf_handler begin;     /* headers complete: answer, or (BODY) accept the body */
    mf_handler body;      /* BODY: the body is complete */
} mf_route;

typedef enum mf_route_status {
    MF_ROUTE_FOUND = 0,          /* a route has this path and method */
    MF_ROUTE_OPTIONS,            /* OPTIONS: CORS preflight, any path */
    MF_ROUTE_NOT_FOUND,          /* no route has this path (404) */
    MF_ROUTE_METHOD_NOT_ALLOWED, /* a route has the path, not the method (405) */
} mf_route_status;

typedef struct mf_route_match {
    mf_route_status status;  /* outcome */
    const mf_route *route;   /* FOUND, METHOD_NOT_ALLOWED: the row; else NULL */
    mf_endpoint endpoint;    /* metrics label (OTHER when not found) */
    mf_dialect dialect;      /* the error shape to answer in (by path prefix when not found) */
    const char *allow;       /* METHOD_NOT_ALLOWED: the Allow header's value */
    const char *model;       /* FOUND: the {m} segment, inside path; NULL if none */
    size_t model_len;        /* its length (>= 1 when model is set) */
    const char *version;     /* FOUND: the {v} segment, inside path; NULL if none */
    size_t version_len;      /* its length */
} mf_route_match;

/* Route a request: method as sent, path is the URL path without the query
 * (percent-decoded, httpparse.h). */
void mf_route_find(const char *method, const char *path, mf_route_match *m);

#endif
