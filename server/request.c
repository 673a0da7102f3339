/* request.c -- one request's object: made from a head, ended with its log
 * line; and what handlers call on it (request.h: headers, query, jobs,
 * waiting, the body budget).  Runs on the request's loop thread, except
 * mf_request_job_done (workers).
 */
#include "conn.h"

#include "log.h"
#include "mf_util.h"
#include "oip.h"
#include "predict.h"
#include "repository.h"

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
#include <sys/random.h>

/* ---- what handlers use (request.h) -------------------------------------- */

const char *mf_request_header(mf_request *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->hname[i], name) == 0) return r->hvalue[i];
    return NULL;
}

const char *mf_request_query(mf_request *r, const char *key, size_t *len)
{
    const size_t klen = strlen(key);
    for (char *p = r->query; *p;) {
        char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        char *eq = memchr(p, '=', (size_t)(end - p));
        char *ke = eq ? eq : end;
        if ((size_t)(ke - p) == klen && memcmp(p, key, klen) == 0) {
            const char *v = eq ? eq + 1 : end;
            size_t vlen = (size_t)(end - v);
            /* decode in place into a scratch copy after the query (allocated with it) */
            char *dst = r->query + strlen(r->query) + 1;
            long n = mf_hp_unescape(v, vlen, dst, vlen + 1);
            if (n < 0) {
                memcpy(dst, v, vlen);
                n = (long)vlen;
            }
            *len = (size_t)n;
            return dst;
        }
        p = amp ? amp + 1 : end;
    }
    return NULL;
}

void mf_request_expect(mf_request *r)
{
    if (r->expected || !r->mv) return;
    r->expected = 1;
    mf_batcher_expect(r->mv->queue, +1);
}

void mf_request_unexpect(mf_request *r)
{
    if (!r->expected) return;
    r->expected = 0;
    mf_batcher_expect(r->mv->queue, -1);
}

void mf_request_jobs_begin(mf_request *r, int n)
{
    pthread_mutex_lock(&r->mu);
    r->pending = n;
    pthread_mutex_unlock(&r->mu);
}

void mf_request_jobs_add(mf_request *r, int n)
{
    pthread_mutex_lock(&r->mu);
    r->pending += n;
    pthread_mutex_unlock(&r->mu);
}

void mf_request_jobs_cancel(mf_request *r)
{
    pthread_mutex_lock(&r->mu);
    r->pending = 0;
    pthread_mutex_unlock(&r->mu);
}

void mf_loop_wake(mf_loop *lp)
{
    uint64_t one = 1;
    ssize_t w = write(lp->evfd, &one, sizeof one); /* a full counter still wakes the loop */
    (void)w;
}

static void push_ready(mf_conn *c)
{
    mf_loop *lp = c->lp;
    pthread_mutex_lock(&lp->mu);
    if (!c->in_ready) {
        c->in_ready = 1;
        c->ready_next = lp->ready;
        lp->ready = c;
    }
    pthread_mutex_unlock(&lp->mu);
    mf_loop_wake(lp);
}

/* Worker thread (or the batcher's reaper or drain): one job finished. */
void mf_request_job_done(mf_request *r)
{
    pthread_mutex_lock(&r->mu);
    int last = --r->pending == 0 && r->waiting;
    /* r->conn is fixed for the request's life (an orphaned connection's
     * struct stays until the ready list frees it).  The push happens under
     * r->mu: once pending is 0 the loop's reap may free
     * the connection unless it is on the ready list, and it reads pending
     * under r->mu, so it sees either a pending job (and orphans it) or the
     * connection on the list (and leaves it to run_ready).  request_free
     * takes r->mu once before freeing r, so the unlock below never touches
     * a freed request. */
    if (last) push_ready(r->conn);
    pthread_mutex_unlock(&r->mu);
}


int mf_request_wait(mf_request *r, mf_handler answer)
{
    r->answer = answer;
    pthread_mutex_lock(&r->mu);
    if (r->pending > 0) {
        r->waiting = 1;
        pthread_mutex_unlock(&r->mu);
        mf_conn *c = r->conn;
        c->st = C_BUSY;
        c->due_ns = 0;
        mf_conn_events(c, EPOLLRDHUP); /* only the client going away */
        return 0;
    }
    pthread_mutex_unlock(&r->mu);
    return answer(r);
}

static void request_free(mf_request *r)
{
    struct mf_http *s = r->srv;
    mf_request_unexpect(r);
    if (r->budget) {
        atomic_fetch_sub(&s->body_bytes, (long long)r->budget);
        mf_metrics_gauge_add(s->metrics, MF_GAUGE_BODY_BYTES, -(long)r->budget);
    }
    /* the last job's mf_request_job_done wakes the loop while it holds
     * r->mu (so the loop cannot free the connection under it); the answer
     * may end the request before that thread has let go: wait for it */
    pthread_mutex_lock(&r->mu);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_destroy(&r->mu);
    mf_predict_free(r);
    mf_oip_free(r);
    free(r->control);
    mf_version_release(s->repo, r->mv); /* after the jobs: none is left in its queue */
    if (r->resp.owned) free(r->resp.body);
    free(r->body);
    free(r->path);
    free(r->head);
    free(r);
    atomic_fetch_sub(&s->inflight, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_INFLIGHT, -1);
}

/* The request is over (answered, or its client gone): its log line, then free. */
void mf_request_end(mf_request *r, const char *abort_code)
{
    struct mf_http *s = r->srv;
    if (!r->answered) {
        /* nobody to answer: counted as nginx counts it, 499 */
        r->status = 499;
        r->latency_ms = mf_ms_since(r->start_ns);
        mf_metrics_request(s->metrics, r->endpoint, 499, r->latency_ms * 1e-3);
    }
    if (s->cfg->log_requests) {
        mf_log_request_entry e = {
            .method = r->method,
            .path = r->path,
            .status = r->status,
            .bytes_in = r->bytes_in,
            .bytes_out = r->bytes_out,
            .latency_ms = r->latency_ms,
            .batch_size = r->batch_size,
            .remote = r->remote,
            .error = r->error_code ? r->error_code : abort_code,
            .request_id = r->request_id,
            .model = r->mv ? r->mv->name : NULL,
            .version = r->mv ? r->mv->version : NULL,
        };
        mf_log_request(&e);
    }
    request_free(r);
}

/* ---- requests ------------------------------------------------------------ */

mf_request *mf_request_new(mf_conn *c)
{
    struct mf_http *s = c->lp->srv;
    mf_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->srv = s;
    r->conn = c;
    mf_conn_drain_settle(c);
    r->start_ns = mf_now_ns();
    r->endpoint = MF_ENDPOINT_OTHER;
    r->dialect = MF_DIALECT_V1;
    snprintf(r->remote, sizeof r->remote, "%s", c->remote);
    atomic_fetch_add(&s->inflight, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_INFLIGHT, 1);
    return r;
}

/* Copy the parsed head into the request (fields NUL-terminated), so the
 * connection's buffer can move; decode the path. */
int mf_request_take_head(mf_request *r, const char *buf, const mf_hp_request *hp)
{
    r->head = malloc(hp->head_len + 1);
    size_t qn = hp->query.n;
    r->path = malloc(hp->path.n + 1 + 2 * (qn + 1));
    if (!r->head || !r->path) return -2;
    memcpy(r->head, buf, hp->head_len);
    r->head[hp->head_len] = '\0';
    r->n_headers = hp->n_headers < 64 ? hp->n_headers : 64;
    for (int i = 0; i < r->n_headers; i++) {
        size_t no = (size_t)(hp->headers[i].name.p - buf), vo = (size_t)(hp->headers[i].value.p - buf);
        r->head[no + hp->headers[i].name.n] = '\0';
        r->head[vo + hp->headers[i].value.n] = '\0';
        r->hname[i] = r->head + no;
        r->hvalue[i] = r->head + vo;
    }
    snprintf(r->method, sizeof r->method, "%.*s", (int)hp->method.n, hp->method.p);
    r->minor = hp->minor;
    r->head_only = hp->method.n == 4 && memcmp(hp->method.p, "HEAD", 4) == 0;
    long n = mf_hp_unescape(hp->path.p, hp->path.n, r->path, hp->path.n + 1);
    r->query = r->path + hp->path.n + 1;
    memcpy(r->query, hp->query.p, qn);
    r->query[qn] = '\0';
    if (n < 0) {
        snprintf(r->path, hp->path.n + 1, "%.*s", (int)hp->path.n, hp->path.p);
        return -1;
    }
    return 0;
}

/* X-Request-ID: the client's if it is 1..64 visible characters, else a new
 * random one (as hex). */
void mf_request_set_id(mf_request *r)
{
    const char *h = mf_request_header(r, "X-Request-ID");
    size_t n = h ? strlen(h) : 0;
    int ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++) ok = (unsigned char)h[i] > 0x20 && (unsigned char)h[i] < 0x7f && h[i] != '"';
    if (ok) {
        memcpy(r->request_id, h, n + 1);
        return;
    }
    unsigned char b[16];
    if (getrandom(b, sizeof b, GRND_NONBLOCK) != (ssize_t)sizeof b) {
        uint64_t t = mf_now_ns() ^ (uint64_t)(uintptr_t)r;
        for (int i = 0; i < 16; i++) b[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        r->request_id[2 * i] = hex[b[i] >> 4];
        r->request_id[2 * i + 1] = hex[b[i] & 15];
    }
    r->request_id[32] = '\0';
}

/* Reserve bytes of max_inflight_body_bytes for r's body, growing to `want`. */
int mf_request_budget(mf_request *r, size_t want)
{
    struct mf_http *s = r->srv;
    if (want <= r->budget) return 0;
    long long more = (long long)(want - r->budget), limit = s->cfg->max_inflight_body_bytes;
    long long now = atomic_fetch_add(&s->body_bytes, more) + more;
    if (now > limit) {
        atomic_fetch_sub(&s->body_bytes, more);
        return -1;
    }
    r->budget = want;
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_BODY_BYTES, (long)more);
    return 0;
}
