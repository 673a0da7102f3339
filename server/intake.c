/* intake.c -- a request head becomes a request: its route, the reserve,
 * API key and model checks, the body's framing and limits (max_body_bytes,
 * max_inflight_body_bytes, the body deadlines), then the body's bytes until
 * the route's body handler runs.  Runs on the connection's loop.
 */
#include "conn.h"

#include "mf_util.h"
#include "repository.h"
#include "validate.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Routes a reserve connection may use. */
static int reserve_ok(const mf_request *r)
{
    return r->route && (r->endpoint == MF_ENDPOINT_HEALTH_LIVE || r->endpoint == MF_ENDPOINT_HEALTH_READY ||
                        r->endpoint == MF_ENDPOINT_METRICS);
}

/* Make room for n more body bytes; -1: max_body_bytes, -2: the budget, -3: memory. */
int mf_conn_body_room(mf_request *r, size_t n)
{
    size_t limit = (size_t)r->srv->cfg->max_body_bytes;
    if (n > limit - r->body_len) return -1;
    if (r->body_len + n <= r->body_cap) return 0;
    size_t cap = r->body_cap ? r->body_cap * 2 : 65536;
    if (cap < r->body_len + n) cap = r->body_len + n;
    if (cap > limit) cap = limit;
    if (mf_request_budget(r, cap) != 0) return -2;
    uint8_t *b = realloc(r->body, cap);
    if (!b) return -3;
    r->body = b;
    r->body_cap = cap;
    return 0;
}

void mf_conn_body_deadline(mf_conn *c)
{
    const mf_config *cfg = c->lp->srv->cfg;
    uint64_t due = 0;
    if (cfg->connection_timeout_s) due = c->last_io_ns + sec_ns(cfg->connection_timeout_s);
    if (cfg->min_body_rate > 0) {
        uint64_t rate = c->phase_ns + BODY_GRACE_NS +
                        (uint64_t)((double)c->req->bytes_in / (double)cfg->min_body_rate * 1e9);
        if (!due || rate < due) due = rate;
    }
    if (cfg->body_timeout_s) {
        uint64_t cap = c->phase_ns + sec_ns(cfg->body_timeout_s);
        if (!due || cap < due) due = cap;
    }
    c->due_ns = due;
}

/* An error answered while the body is still coming: the rest is not read. */
void mf_conn_body_refuse(mf_conn *c, mf_err e, const char *fmt, const char *detail)
{
    c->discard = 1;
    mf_reply_error(c->req, e, fmt, detail);
}

void mf_conn_body_end(mf_conn *c)
{
    mf_request *r = c->req;
    c->st = C_BUSY;
    c->due_ns = 0;
    mf_conn_events(c, EPOLLRDHUP);
    if (r->route->body(r) < 0) mf_conn_close(c, MF_COUNTER_ABORT_BODY);
}

/* Body bytes at data[0..n): into the request (or its chunked decoder).
 * Returns the bytes used; the connection may have moved on. */
size_t mf_conn_body_feed(mf_conn *c, const char *data, size_t n)
{
    mf_request *r = c->req;
    size_t used = 0;
    while (used < n && c->st == C_BODY) {
        const char *span = data + used;
        size_t span_len, took;
        int done = 0;
        if (c->chunked) {
            const char *why = NULL;
            mf_hp_chunk_result cr = mf_hp_chunked_next(&c->ck, data + used, n - used, &took, &span, &span_len, &why);
            used += took;
            if (cr == MF_HPC_ERROR) {
                mf_metrics_count(r->srv->metrics, MF_COUNTER_MALFORMED, 1);
                mf_conn_body_refuse(c, MF_E_BAD_REQUEST, "malformed chunked body: %s", why);
                return used;
            }
            done = cr == MF_HPC_DONE;
            if (cr != MF_HPC_DATA) span_len = 0;
        } else {
            span_len = n - used;
            if ((uint64_t)span_len > c->left) span_len = (size_t)c->left;
            c->left -= span_len;
            used += span_len;
            done = c->left == 0;
        }
        if (span_len) {
            r->bytes_in += span_len;
            int rc = mf_conn_body_room(r, span_len);
            if (rc == -1) {
                mf_conn_body_refuse(c, MF_E_BODY_TOO_LARGE, "request body is over the limit of %s bytes", "max_body_bytes");
                return used;
            }
            if (rc == -2) {
                mf_metrics_count(r->srv->metrics, MF_COUNTER_BODY_BUDGET, 1);
                mf_conn_body_refuse(c, MF_E_BODY_BUDGET, "%s", "the server holds too many uploads at once "
                                                      "(max_inflight_body_bytes); retry later");
                return used;
            }
            if (rc == -3) {
                mf_conn_body_refuse(c, MF_E_OUT_OF_MEMORY, "%s", "cannot allocate the request body");
                return used;
            }
            memcpy(r->body + r->body_len, span, span_len);
            r->body_len += span_len;
        }
        if (done) {
            mf_conn_body_end(c);
            return used;
        }
    }
    return used;
}

/* A complete head in c->in: the request, its route, its handler. */
void mf_conn_dispatch(mf_conn *c, const mf_hp_request *hp, mf_hp_status st)
{
    struct mf_http *s = c->lp->srv;
    mf_request *r = mf_request_new(c);
    if (!r) {
        mf_conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    c->req = r;
    c->keep_alive = st == MF_HP_OK ? hp->keep_alive : 0;
    if (st != MF_HP_OK) {
        /* what could be parsed, for the log line */
        snprintf(r->method, sizeof r->method, "%.*s", (int)(hp->method.n < 15 ? hp->method.n : 15),
                 hp->method.p ? hp->method.p : "");
        r->path = strdup("-");
        mf_request_set_id(r);
        mf_metrics_count(s->metrics, MF_COUNTER_MALFORMED, 1);
        mf_err e = st == MF_HP_TOO_LARGE || st == MF_HP_TOO_MANY_HEADERS ? MF_E_HEAD_TOO_LARGE
                   : st == MF_HP_BAD_VERSION                            ? MF_E_BAD_VERSION
                                                                        : MF_E_BAD_REQUEST;
        r->resp.close = 1;
        c->in_len = 0; /* nothing after a malformed head can be trusted */
        mf_reply_error(r, e, "%s", hp->why ? hp->why : "malformed request");
        return;
    }
    int took = mf_request_take_head(r, c->in, hp);
    /* the head is consumed: what follows is body or the next request */
    memmove(c->in, c->in + hp->head_len, c->in_len - hp->head_len);
    c->in_len -= hp->head_len;
    c->scanned = 0;
    if (took == -2) {
        mf_conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    mf_request_set_id(r);
    const int has_body = hp->chunked || (hp->has_length && hp->content_length > 0);
    if (took == -1) {
        r->resp.close = 1;
        mf_reply_error(r, MF_E_BAD_REQUEST, "%s", "malformed percent-encoding in the path");
        return;
    }
    mf_route_find(r->method, r->path, &r->match);
    const mf_route_match *m = &r->match;
    r->endpoint = m->endpoint;
    r->dialect = m->dialect;
    r->route = m->status == MF_ROUTE_FOUND ? m->route : NULL;
    /* until the body is being read, an answer means it never will be: the
     * connection then closes after the answer (its bytes are not parsed) */
    r->resp.close = has_body;
    if (c->reserve && !reserve_ok(r)) {
        mf_metrics_count(s->metrics, MF_COUNTER_REJECT_RESERVE, 1);
        mf_reply_error(r, MF_E_TOO_MANY_CONNECTIONS,
                       "the server is at max_connections (%d); only health and metrics are served now; retry",
                       s->cfg->max_connections);
        return;
    }
    switch (m->status) {
    case MF_ROUTE_FOUND: break;
    case MF_ROUTE_OPTIONS: mf_reply_options(r); return;
    case MF_ROUTE_NOT_FOUND: mf_reply_error(r, MF_E_NOT_FOUND, "no endpoint at %s", r->path); return;
    case MF_ROUTE_METHOD_NOT_ALLOWED:
        r->allow = m->allow;
        mf_reply_error(r, MF_E_METHOD_NOT_ALLOWED, "%s is not allowed on %s (allowed: %s)", r->method, r->path,
                       r->allow);
        return;
    }
    if ((r->route->flags & MF_ROUTE_AUTH) &&
        !mf_bearer_ok(mf_request_header(r, "Authorization"), s->cfg->api_key)) {
        mf_reply_error(r, MF_E_UNAUTHORIZED, "this endpoint needs the header 'Authorization: Bearer <api key>'");
        return;
    }
    if (r->route->flags & MF_ROUTE_MODEL) {
        /* the version this request will use, held until its end: a reload
         * or unload meanwhile does not touch it */
        const char *name = m->model;
        size_t len = m->model_len;
        char msg[600];
        if (!name) {
            name = mf_repo_default_model(s->repo, msg, sizeof msg);
            if (!name) {
                mf_reply_error(r, MF_E_NO_DEFAULT_MODEL, "%s", msg);
                return;
            }
            len = strlen(name);
        }
        mf_err e;
        r->mv = mf_repo_acquire(s->repo, name, len, m->version, m->version_len, &e, msg, sizeof msg);
        if (!r->mv) {
            mf_reply_error(r, e, "%s", msg);
            return;
        }
    }
    if (!(r->route->flags & MF_ROUTE_BODY)) {
        if (r->route->begin(r) < 0) mf_conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    /* a route with a body: its checks of the head first (an answer now means
     * the body is never read, so the connection closes after it), then the
     * framing */
    if (r->route->begin(r) < 0) {
        mf_conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    if (r->answered) return;
    if (!has_body) {
        c->st = C_BODY;
        mf_conn_body_end(c);
        return;
    }
    if (hp->has_length) {
        if (hp->content_length > (uint64_t)s->cfg->max_body_bytes) {
            r->resp.close = 1;
            mf_reply_error(r, MF_E_BODY_TOO_LARGE, "request body of %llu bytes is over the limit of %lld bytes",
                           (unsigned long long)hp->content_length, s->cfg->max_body_bytes);
            return;
        }
        size_t first = hp->content_length > BODY_FIRST ? BODY_FIRST : (size_t)hp->content_length;
        if (mf_request_budget(r, first) != 0) {
            mf_metrics_count(s->metrics, MF_COUNTER_BODY_BUDGET, 1);
            r->resp.close = 1;
            mf_reply_error(r, MF_E_BODY_BUDGET,
                           "the server holds too many uploads at once (max_inflight_body_bytes); retry later");
            return;
        }
        r->body = malloc(first);
        if (!r->body) {
            r->resp.close = 1;
            mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the request body");
            return;
        }
        r->body_cap = first;
        c->left = hp->content_length;
        c->chunked = 0;
    } else {
        c->chunked = 1;
        memset(&c->ck, 0, sizeof c->ck);
    }
    if (hp->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t w = send(c->fd, cont, sizeof cont - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w != (ssize_t)sizeof cont - 1) {
            mf_conn_close(c, MF_COUNTER_ABORT_BODY);
            return;
        }
    }
    r->resp.close = 0;
    c->st = C_BODY;
    c->phase_ns = c->last_io_ns = mf_now_ns();
    mf_conn_body_deadline(c);
}
