/* http.c -- libmicrohttpd callbacks and the suspend/resume glue; see http.h
 * and the DESIGN note in batcher.c.
 *
 * Life of a request (all on one HTTP thread unless noted):
 *   1. headers arrive: request_new(), then dispatch(): route (route.c), API
 *      key, model name, and the route's begin handler, which answers at once
 *      or (routes with a body) accepts the body; Content-Length is checked
 *      before any body byte is read -- an answer queued now makes
 *      libmicrohttpd close the connection unread;
 *   2. body chunks are appended, up to max_body_bytes;
 *   3. body complete: the route's body handler (predict.c: decode,
 *      preprocess, submit, then mf_request_wait() suspends the connection);
 *   4. (worker thread) each job's completion counts down; the last one
 *      resumes the connection;
 *   5. the handler runs again: r->answer writes the answer;
 *   6. NOTIFY_COMPLETED: log line, in-flight count, free.
 * The request's mutex orders 3 against 4: a job that finishes before the
 * connection is suspended is simply answered without suspending.
 *
 * Slow clients: a connection gets connection_timeout_s to deliver each
 * request's headers, however slowly it sends them (deadline.h), besides
 * libmicrohttpd's idle timeout (the same value) and its per-connection
 * buffer, which bounds the request head (CONNECTION_MEMORY).  Running out of
 * memory for a request's buffers is answered 503 out_of_memory (reply.c);
 * only when the request context itself (a few hundred bytes) cannot be had
 * is the connection closed unanswered.
 */
#include "http.h"

#include "endpoints.h"
#include "log.h"
#include "mf_util.h"
#include "predict.h"
#include "reply.h"
#include "request.h"
#include "route.h"
#include "validate.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNECTION_MEMORY (32 * 1024) /* libmicrohttpd's per-connection buffer: request head */
#define BODY_RESERVE (1u << 20)       /* most body bytes reserved from Content-Length up front */

const char *mf_http_status_str(mf_http_status s)
{
    switch (s) {
    case MF_HTTP_OK: return "ok";
    case MF_HTTP_ARG: return "bad argument";
    case MF_HTTP_LISTEN: return "cannot listen";
    case MF_HTTP_NOMEM: return "out of memory";
    }
    return "unknown";
}

/* ---- what handlers use (request.h) -------------------------------------- */

const char *mf_request_header(mf_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

void mf_request_expect(mf_request *r)
{
    if (r->expected) return;
    r->expected = 1;
    mf_batcher_expect(r->srv->batcher, +1);
}

void mf_request_unexpect(mf_request *r)
{
    if (!r->expected) return;
    r->expected = 0;
    mf_batcher_expect(r->srv->batcher, -1);
}

void mf_request_jobs_begin(mf_request *r, int n)
{
    pthread_mutex_lock(&r->mu);
    r->pending = n;
    pthread_mutex_unlock(&r->mu);
}

void mf_request_jobs_cancel(mf_request *r)
{
    pthread_mutex_lock(&r->mu);
    r->pending = 0;
    pthread_mutex_unlock(&r->mu);
}

/* Worker thread: one job finished.  The last one resumes the connection. */
void mf_request_job_done(mf_request *r)
{
    pthread_mutex_lock(&r->mu);
    if (--r->pending == 0 && r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
}

enum MHD_Result mf_request_wait(mf_request *r, enum MHD_Result (*answer)(mf_request *r))
{
    r->answer = answer;
    pthread_mutex_lock(&r->mu);
    if (r->pending > 0) {
        MHD_suspend_connection(r->conn);
        r->suspended = 1;
        r->state = MF_REQ_WAITING;
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    return answer(r);
}

/* ---- routing and the body ----------------------------------------------- */

/* Percent-decoding of the path and of query keys and values.  A text with
 * an encoded NUL ("%00") is left as sent: decoded, it would end the string
 * early (so "/%00../x" would route as "/"); undecoded it matches no route
 * and no setting, and gets the ordinary 404 or 400. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    for (const char *p = s; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == '0' && p[2] == '0') return strlen(s);
    return MHD_http_unescape(s);
}

/* A body route accepted the headers: check the announced length and reserve
 * the buffer.  At most BODY_RESERVE bytes are reserved up front: a client
 * announcing 16 MiB and sending nothing must not cost 16 MiB. */
static enum MHD_Result body_begin(mf_request *r)
{
    long long limit = r->srv->cfg->max_body_bytes;
    const char *cl = mf_request_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        /* libmicrohttpd has already refused a malformed Content-Length */
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > (unsigned long long)limit)
            return mf_reply_error(r, MF_E_BODY_TOO_LARGE, "request body of %llu bytes is over the limit of %lld bytes",
                                  n, limit);
        if (n > 0) {
            if (n > BODY_RESERVE) n = BODY_RESERVE;
            r->body = malloc(n);
            if (!r->body) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the request body");
            r->body_cap = n;
        }
    }
    r->state = MF_REQ_BODY;
    return MHD_YES;
}

static void body_append(mf_request *r, const char *data, size_t n)
{
    size_t limit = (size_t)r->srv->cfg->max_body_bytes;
    r->bytes_in += n;
    if (r->body_too_large || r->body_nomem) return;
    if (n > limit - r->body_len) {
        /* no answer can be queued mid-body in libmicrohttpd: drop what we
         * hold and discard the rest, then answer 413 (body_end) */
        r->body_too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 65536;
        if (cap < r->body_len + n) cap = r->body_len + n;
        if (cap > limit) cap = limit;
        uint8_t *b = realloc(r->body, cap);
        if (!b) {
            r->body_nomem = 1;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
}

/* The body is complete: its route's handler, unless it was refused. */
static enum MHD_Result body_end(mf_request *r)
{
    if (r->body_too_large)
        return mf_reply_error(r, MF_E_BODY_TOO_LARGE, "request body is over the limit of %lld bytes",
                              r->srv->cfg->max_body_bytes);
    if (r->body_nomem) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the request body");
    return r->route->body(r);
}

static enum MHD_Result dispatch(mf_request *r)
{
    struct mf_http *s = r->srv;
    mf_route_find(r->method, r->path, &r->match);
    const mf_route_match *m = &r->match;
    r->endpoint = m->endpoint;
    r->dialect = m->dialect;
    switch (m->status) {
    case MF_ROUTE_FOUND: break;
    case MF_ROUTE_OPTIONS: return mf_reply_options(r);
    case MF_ROUTE_NOT_FOUND: return mf_reply_error(r, MF_E_NOT_FOUND, "no endpoint at %s", r->path);
    case MF_ROUTE_METHOD_NOT_ALLOWED:
        r->allow = m->allow;
        return mf_reply_error(r, MF_E_METHOD_NOT_ALLOWED, "%s is not allowed on %s (allowed: %s)", r->method,
                              r->path, r->allow);
    }
    r->route = m->route;
    if ((r->route->flags & MF_ROUTE_AUTH) &&
        !mf_bearer_ok(mf_request_header(r, MHD_HTTP_HEADER_AUTHORIZATION), s->cfg->api_key))
        return mf_reply_error(r, MF_E_UNAUTHORIZED, "this endpoint needs the header 'Authorization: Bearer <api key>'");
    if (m->model && (strlen(s->cfg->model_name) != m->model_len ||
                     memcmp(m->model, s->cfg->model_name, m->model_len) != 0))
        return mf_reply_error(r, MF_E_MODEL_NOT_FOUND, "no model named '%.*s' (this server has '%s')",
                              (int)(m->model_len > 128 ? 128 : m->model_len), m->model, s->cfg->model_name);
    enum MHD_Result ret = r->route->begin(r);
    if (ret == MHD_YES && (r->route->flags & MF_ROUTE_BODY) && r->state == MF_REQ_NEW) return body_begin(r);
    return ret;
}

/* ---- libmicrohttpd callbacks -------------------------------------------- */

static mf_request *request_new(struct mf_http *s, struct MHD_Connection *conn, const char *url, const char *method)
{
    mf_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->path = strdup(url ? url : "");
    if (!r->path || pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r->path);
        free(r);
        return NULL;
    }
    r->srv = s;
    r->conn = conn;
    r->start_ns = mf_now_ns();
    r->endpoint = MF_ENDPOINT_OTHER;
    snprintf(r->method, sizeof r->method, "%s", method ? method : "");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->remote, sizeof r->remote);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->remote, sizeof r->remote);
    }
    atomic_fetch_add(&s->inflight, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_INFLIGHT, 1);
    return r;
}

static void request_free(mf_request *r)
{
    mf_request_unexpect(r); /* requests that failed or were cut off before their submit */
    /* a worker may still be inside mf_request_job_done's critical section
     * right after resuming us: wait for it to leave before destroying the lock */
    pthread_mutex_lock(&r->mu);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_destroy(&r->mu);
    mf_predict_free(r);
    free(r->body);
    free(r->path);
    free(r);
}

/* A connection opens or closes: its request-head deadline (deadline.h). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct mf_http *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? mf_deadline_open(s->deadline, ci->connect_fd) : NULL;
    } else {
        mf_deadline_close(s->deadline, *socket_context);
        *socket_context = NULL;
    }
}

static mf_deadline_conn *conn_deadline(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct mf_http *s = cls;
    mf_request *r = *con_cls;
    (void)version;
    if (!r) {
        mf_deadline_disarm(s->deadline, conn_deadline(conn)); /* the headers are in */
        r = request_new(s, conn, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        return dispatch(r);
    }
    switch (r->state) {
    case MF_REQ_BODY:
        if (*upload_data_size) {
            body_append(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            /* an endless body over the limit: stop reading (connection closed) */
            if (r->body_too_large && r->bytes_in > 2 * (size_t)s->cfg->max_body_bytes) return MHD_NO;
            return MHD_YES;
        }
        return body_end(r);
    case MF_REQ_WAITING: return r->answer(r);
    case MF_REQ_NEW:
    case MF_REQ_DONE: break;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    struct mf_http *s = cls;
    mf_request *r = *con_cls;
    mf_deadline_rearm(s->deadline, conn_deadline(conn)); /* keep-alive: the next request's head */
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    int pending = r->pending;
    pthread_mutex_unlock(&r->mu);
    if (pending > 0) {
        /* cannot happen (a suspended connection is only closed after it is
         * resumed); if it did, a worker still holds pointers into r */
        mf_log_event("error", "request completed with images still queued; leaking it", NULL);
        return;
    }
    if (s->cfg->log_requests) {
        mf_log_request_entry e = {
            .method = r->method,
            .path = r->path,
            .status = r->status,
            .bytes_in = r->bytes_in,
            .bytes_out = r->bytes_out,
            .latency_ms = r->status ? r->latency_ms : mf_ms_since(r->start_ns),
            .batch_size = r->batch_size,
            .remote = r->remote,
            .error = r->error_code ? r->error_code
                                   : (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? "connection_closed" : NULL),
        };
        mf_log_request(&e);
    }
    atomic_fetch_sub(&s->inflight, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_INFLIGHT, -1);
    request_free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    mf_log_event("warn", msg, json_pack("{s:s}", "source", "libmicrohttpd"));
}

/* ---- start / stop ------------------------------------------------------- */

mf_http_status mf_http_start(const mf_config *cfg, const mf_model *model, mf_batcher *batcher, mf_metrics *metrics,
                             mf_http **out, char *err, size_t errlen)
{
    *out = NULL;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    memset(&addr, 0, sizeof addr);
    /* poll(), not epoll: libmicrohttpd 0.9.75's MHD_quiesce_daemon() races
     * with its own epoll workers over removing the listening socket from
     * their epoll sets, and the loser aborts the process ("Failed to remove
     * listen FD from epoll set"; seen here about once in 30 SIGTERMs under
     * load).  With poll() the quiesce reaches the workers through their
     * inter-thread channel instead. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                         MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, cfg->bind, &addr.in4.sin_addr) == 1) {
        addr.in4.sin_family = AF_INET;
        addr.in4.sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->bind, &addr.in6.sin6_addr) == 1) {
        addr.in6.sin6_family = AF_INET6;
        addr.in6.sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        mf_set_err(err, errlen, "bind: '%s' is not a numeric IPv4 or IPv6 address", cfg->bind);
        return MF_HTTP_ARG;
    }
    struct mf_http *s = calloc(1, sizeof *s);
    if (!s) {
        mf_set_err(err, errlen, "out of memory");
        return MF_HTTP_NOMEM;
    }
    s->cfg = cfg;
    s->listen_fd = MHD_INVALID_SOCKET;
    s->model = model;
    s->batcher = batcher;
    s->metrics = metrics;
    const mf_preprocess *p = mf_model_preprocess(model);
    s->in_h = p->input_h;
    s->in_w = p->input_w;
    s->classes = mf_model_num_classes(model);
    s->metadata = mf_metadata_build(cfg, model, &s->metadata_len);
    if (!s->metadata) {
        mf_set_err(err, errlen, "cannot build the model metadata (out of memory)");
        free(s);
        return MF_HTTP_NOMEM;
    }
    /* the pool option only when there is a pool: libmicrohttpd warns about 1 */
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)&on_mhd_log, s},
        {MHD_OPTION_SOCK_ADDR, 0, &addr.sa},
        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, cfg->connection_timeout_s, NULL},
        /* request line + headers of one request: larger gets 431 (the default, made explicit) */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONNECTION_MEMORY, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)&on_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)&on_connection, s},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)&unescape, NULL},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {cfg->http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, cfg->http_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->deadline = mf_deadline_new(cfg->connection_timeout_s);
    s->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, &on_request, s, MHD_OPTION_ARRAY, opts,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        mf_deadline_free(s->deadline);
        mf_set_err(err, errlen,
                   "cannot listen on %s port %d (bind, port, http_threads or max_connections; see the "
                   "libmicrohttpd message above)",
                   cfg->bind, cfg->port);
        free(s->metadata);
        free(s);
        return MF_HTTP_LISTEN;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    *out = s;
    return MF_HTTP_OK;
}

int mf_http_port(const mf_http *h) { return h->port; }

void mf_http_begin_drain(mf_http *h)
{
    if (!h || atomic_exchange(&h->draining, 1)) return;
    /* The workers stop polling the socket once they see the quiesce, a
     * little later; it must stay open (its number unreused) until then, so
     * it is only shut down here -- new connections are refused at once --
     * and closed after MHD_stop_daemon. */
    h->listen_fd = MHD_quiesce_daemon(h->daemon);
    if (h->listen_fd != MHD_INVALID_SOCKET) shutdown(h->listen_fd, SHUT_RDWR);
}

long mf_http_inflight(const mf_http *h) { return h ? atomic_load(&h->inflight) : 0; }

void mf_http_stop(mf_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    if (h->listen_fd != MHD_INVALID_SOCKET) close(h->listen_fd); /* quiesced: ours to close */
    mf_deadline_free(h->deadline); /* every connection has closed */
    free(h->metadata);
    free(h);
}
