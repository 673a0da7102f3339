/* route.c -- the route table and the matcher; see route.h. */
#include "route.h"

#include "endpoints.h"
#include "oip.h"
#include "predict.h"

#include <string.h>

const char *const mf_endpoint_labels[MF_ENDPOINT_COUNT] = {
#define MF_ENDPOINT_LABEL(name, label) [MF_ENDPOINT_##name] = label,
    MF_ENDPOINTS(MF_ENDPOINT_LABEL)
#undef MF_ENDPOINT_LABEL
};

#define V1 MF_DIALECT_V1
#define OIP MF_DIALECT_OIP
#define AUTH MF_ROUTE_AUTH
#define BODY MF_ROUTE_BODY
#define MODEL MF_ROUTE_MODEL

/* Order matters only where patterns overlap: none do, since "{m}" and "{v}"
 * match exactly one segment. */
static const mf_route routes[] = {
    /* the service's own API */
    {"/v1/predict", "POST", MF_ENDPOINT_PREDICT, V1, AUTH | BODY | MODEL, mf_predict_begin, mf_predict_body},
    {"/v1/models/{m}/predict", "POST", MF_ENDPOINT_PREDICT, V1, AUTH | BODY | MODEL, mf_predict_begin,
     mf_predict_body},
    {"/v1/models/{m}/versions/{v}/predict", "POST", MF_ENDPOINT_PREDICT, V1, AUTH | BODY | MODEL, mf_predict_begin,
     mf_predict_body},
    /* the Open Inference Protocol (KServe v2) and Triton's extensions */
    {"/v2", "GET", MF_ENDPOINT_SERVER_METADATA, OIP, 0, mf_handle_server_metadata, NULL},
    {"/v2/health/live", "GET", MF_ENDPOINT_HEALTH_LIVE, OIP, 0, mf_handle_live, NULL},
    {"/v2/health/ready", "GET", MF_ENDPOINT_HEALTH_READY, OIP, 0, mf_handle_ready, NULL},
    {"/v2/models/{m}", "GET", MF_ENDPOINT_MODEL_METADATA, OIP, AUTH | MODEL, mf_handle_metadata, NULL},
    {"/v2/models/{m}/versions/{v}", "GET", MF_ENDPOINT_MODEL_METADATA, OIP, AUTH | MODEL, mf_handle_metadata, NULL},
    {"/v2/models/{m}/ready", "GET", MF_ENDPOINT_MODEL_READY, OIP, AUTH | MODEL, mf_handle_model_ready, NULL},
    {"/v2/models/{m}/versions/{v}/ready", "GET", MF_ENDPOINT_MODEL_READY, OIP, AUTH | MODEL, mf_handle_model_ready,
     NULL},
    {"/v2/models/{m}/infer", "POST", MF_ENDPOINT_INFER, OIP, AUTH | BODY | MODEL, mf_oip_begin, mf_oip_body},
    {"/v2/models/{m}/versions/{v}/infer", "POST", MF_ENDPOINT_INFER, OIP, AUTH | BODY | MODEL, mf_oip_begin,
     mf_oip_body},
    {"/v2/repository/index", "POST", MF_ENDPOINT_REPOSITORY, OIP, AUTH | BODY, mf_body_begin, mf_handle_repo_index},
    {"/v2/repository/models/{m}/load", "POST", MF_ENDPOINT_REPOSITORY, OIP, AUTH | BODY, mf_body_begin,
     mf_handle_repo_load},
    {"/v2/repository/models/{m}/unload", "POST", MF_ENDPOINT_REPOSITORY, OIP, AUTH | BODY, mf_body_begin,
     mf_handle_repo_unload},
    /* operations and people */
    {"/metrics", "GET", MF_ENDPOINT_METRICS, V1, 0, mf_handle_metrics, NULL},
    /* the page: every path web.c has an asset for (web.h) */
    {"/", "GET", MF_ENDPOINT_WEB, V1, 0, mf_handle_web, NULL},
    {"/index.html", "GET", MF_ENDPOINT_WEB, V1, 0, mf_handle_web, NULL},
    {"/app.css", "GET", MF_ENDPOINT_WEB, V1, 0, mf_handle_web, NULL},
    {"/app.js", "GET", MF_ENDPOINT_WEB, V1, 0, mf_handle_web, NULL},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

/* One segment: at least one byte, up to the next '/'.  A segment may not
 * hold an encoded slash: the path is percent-decoded with "%2F" kept
 * encoded (httpparse.h), so "a%2Fready" is one segment, never two. */
static const char *segment(const char *path, const char **start, size_t *len)
{
    const char *e = path;
    while (*e && *e != '/') e++;
    if (e == path) return NULL;
    *start = path;
    *len = (size_t)(e - path);
    return e;
}

/* Does path match pattern?  "{m}" and "{v}" match one non-empty segment. */
static int path_match(const char *pattern, const char *path, mf_route_match *m)
{
    m->model = m->version = NULL;
    m->model_len = m->version_len = 0;
    while (*pattern) {
        if (pattern[0] == '{' && (pattern[1] == 'm' || pattern[1] == 'v') && pattern[2] == '}') {
            const char **s = pattern[1] == 'm' ? &m->model : &m->version;
            size_t *l = pattern[1] == 'm' ? &m->model_len : &m->version_len;
            path = segment(path, s, l);
            if (!path) return 0;
            pattern += 3;
        } else {
            if (*pattern != *path) return 0;
            pattern++;
            path++;
        }
    }
    return *path == '\0';
}

void mf_route_find(const char *method, const char *path, mf_route_match *m)
{
    memset(m, 0, sizeof *m);
    m->endpoint = MF_ENDPOINT_OTHER;
    m->dialect = MF_DIALECT_V1;
    if (strcmp(method, "OPTIONS") == 0) {
        m->status = MF_ROUTE_OPTIONS;
        m->endpoint = MF_ENDPOINT_OPTIONS;
        return;
    }
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    const mf_route *path_hit = NULL;
    mf_route_match tmp;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!path_match(routes[i].pattern, path, &tmp)) continue;
        if (!path_hit) path_hit = &routes[i];
        if (strcmp(routes[i].method, method) == 0 || (is_get && strcmp(routes[i].method, "GET") == 0)) {
            m->status = MF_ROUTE_FOUND;
            m->route = &routes[i];
            m->endpoint = routes[i].endpoint;
            m->dialect = routes[i].dialect;
            m->model = tmp.model;
            m->model_len = tmp.model_len;
            m->version = tmp.version;
            m->version_len = tmp.version_len;
            return;
        }
    }
    if (!path_hit) {
        m->status = MF_ROUTE_NOT_FOUND;
        /* an unknown path under /v2 still gets the protocol's error body */
        if (strncmp(path, "/v2/", 4) == 0 || strcmp(path, "/v2") == 0) m->dialect = MF_DIALECT_OIP;
        return;
    }
    m->status = MF_ROUTE_METHOD_NOT_ALLOWED;
    m->route = path_hit;
    m->endpoint = path_hit->endpoint;
    m->dialect = path_hit->dialect;
    m->allow = strcmp(path_hit->method, "GET") == 0 ? "GET, HEAD, OPTIONS" : "POST, OPTIONS";
}
