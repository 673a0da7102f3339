/* http.c -- the HTTP/1.1 server: listening socket, I/O threads, connections.
 *
 * DESIGN
 *
 * Threads.  `http_threads` I/O threads, each an epoll loop owning the
 * connections it accepted (the listening socket is in every loop with
 * EPOLLEXCLUSIVE, so one thread wakes per arrival).  A connection never
 * moves: everything about it -- reading, parsing (httpparse.c), routing,
 * handlers, writing -- runs on its loop, so its state needs no lock.  Other
 * threads reach a connection in one way only: a request's last job finishes
 * on a worker (mf_request_job_done), which puts the connection on its loop's
 * ready list and wakes the loop through an eventfd; the loop then runs the
 * request's answer.  Who owns which cores overall: batcher.c, DESIGN.
 *
 * A connection's life: HEAD (reading a request head) -> BODY (routes with a
 * body) -> BUSY (the handler waits for jobs; the socket is watched only for
 * the client going away) -> WRITE -> HEAD again (keep-alive; pipelined
 * bytes already read are parsed at once) or LINGER (after an answer with
 * Connection: close: write side shut, the rest read and dropped for up to 2 s
 * so the client sees the answer, not a reset) -> closed.
 *
 * Limits, each answered where an answer can still be written:
 *   - the head: connection_timeout_s for the whole head, however slowly it
 *     comes, 32 KiB (431), strict syntax (400, httpparse.h);
 *   - the body: max_body_bytes (413 as soon as it is known, from
 *     Content-Length or while chunks arrive), body_timeout_s for the whole
 *     body, and min_body_rate: after a 5 s allowance the body must keep
 *     arriving at that many bytes per second (mod_reqtimeout's MinRate) --
 *     both answered 408;
 *   - max_inflight_body_bytes across all connections (503 + Retry-After):
 *     counted as body buffers grow with the bytes that arrive (64 KiB at
 *     first), not from what Content-Length announces, so a client that
 *     announces much and sends little holds little;
 *   - max_connections_per_client per client address (503, connection closed);
 *   - max_connections, plus a reserve of 16 + max_connections/64 connections
 *     that serve only health and metrics (a short head deadline, one request
 *     each), so probes are answered while the table is full; beyond the
 *     reserve, new connections get 503 and are closed at once.
 * A deadline sweep runs every 100 ms per loop.
 *
 * Invariants (asserted in debug builds): a connection in BUSY has a request
 * with waiting set; a request with jobs pending is never freed -- if its
 * client goes away, its connection is closed (the descriptor released at
 * once) and the request waits, orphaned, for its jobs, then is freed by its
 * loop.
 */
#include "http.h"

#include "endpoints.h"
#include "httpparse.h"
#include "oip.h"
#include "repository.h"
#include "log.h"
#include "mf_util.h"
#include "predict.h"
#include "reply.h"
#include "request.h"
#include "route.h"
#include "validate.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (16 * 1024)     /* bytes read at a time into a connection's buffer */
#define READ_BUDGET (256 * 1024)   /* bytes read per wakeup, so one client cannot hog a loop */
#define BODY_FIRST (64u * 1024)    /* body bytes allocated up front; more as they arrive */
#define BODY_GRACE_NS 5000000000ull /* the allowance before min_body_rate applies */
#define RESERVE_HEAD_NS 2000000000ull /* head deadline of a reserve connection */
#define DRAIN_HEAD_NS 1000000000ull   /* head deadline of a connection taken from the backlog at drain */
#define LINGER_NS 2000000000ull    /* how long a closing connection's input is drained */
#define SWEEP_NS 100000000ull      /* deadline sweep period */
#define REPORT_NS 1000000000ull    /* at most one "closed slow connections" line per second */
#define MAX_EVENTS 256

typedef enum conn_state { C_HEAD = 0, C_BODY, C_BUSY, C_WRITE, C_LINGER } conn_state;

struct mf_conn {
    mf_loop *lp;                  /* its loop */
    int fd;                       /* the socket; -1 once closed (orphan) */
    mf_conn *prev, *next;         /* in lp->conns */
    mf_conn *ready_next;          /* in lp->ready */
    int in_ready;                 /* on lp->ready */
    conn_state st;                /* where it is */
    uint32_t events;              /* the epoll mask registered */
    char remote[INET6_ADDRSTRLEN];/* client address */
    unsigned char ip[16];         /* client address, IPv4 mapped, for the per-client count */
    int ip_counted;               /* counted in srv->ip_table */
    int reserve;                  /* a reserve connection: health and metrics only */
    char *in;                     /* bytes read and not consumed yet, from in[0] */
    size_t in_len, in_cap;        /* used, capacity */
    size_t scanned;               /* in[0..scanned) holds no end of head */
    unsigned requests;            /* requests served so far */
    uint64_t due_ns;              /* the current deadline, 0 = none */
    uint64_t phase_ns;            /* start of the head or body being read */
    uint64_t last_io_ns;          /* last bytes read */
    int keep_alive;               /* the client allows another request after this one */
    int chunked;                  /* the body is chunked */
    uint64_t left;                /* Content-Length bytes still to come */
    mf_hp_chunked ck;             /* chunked decoder */
    int discard;                  /* an error was answered mid-body: the rest is dropped (close after) */
    mf_request *req;              /* the request being served, or NULL */
    char *out;                    /* the answer's head (owned) */
    size_t out_len;               /* its length */
    size_t out_off;               /* bytes of head + body written */
    int close_after;              /* close once the answer is written */
    int write_done;               /* the answer is written; after_answer is due */
    int dead;                     /* closed; freed by conn_reap once nothing refers to it */
    int drain_new;                /* accepted from the backlog at drain; no request yet (drain_pending) */
    int probed;                   /* a 100 Continue went out to see whether the client is still there */
    int probe_left;               /* part of it is still to be written, before the answer */
    size_t probe_off;             /* bytes of it written */
    mf_counter abort_stage;       /* dead with an unanswered request: where it stopped */
    int orphan;                   /* dead while jobs were pending: freed from the ready list */
};

struct mf_loop {
    struct mf_http *srv;          /* server */
    int epfd, evfd;               /* epoll, wakeup */
    pthread_t tid;                /* the thread */
    int started;                  /* the thread runs */
    pthread_mutex_t mu;           /* guards ready */
    mf_conn *ready;               /* connections whose requests' jobs are done */
    mf_conn *conns;               /* every connection of this loop */
    uint64_t last_sweep_ns;       /* last deadline sweep */
    uint64_t last_report_ns;      /* last slow-connection log line */
    unsigned long slow_head, slow_body; /* slow connections closed since that line */
    time_t date_t;                /* second of date */
    char date[40];                /* the Date header value, per second */
    atomic_int drain_acked;       /* drain: took its share of the backlog and left the listener */
};

typedef struct mf_ip_count {
    unsigned char ip[16];         /* client address */
    int n;                        /* its open connections */
    struct mf_ip_count *next;     /* chain */
} mf_ip_count;

static int listen_marker; /* epoll data of the listening socket */

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

static uint64_t sec_ns(int s) { return (uint64_t)s * 1000000000ull; }

/* ---- per-client connection counts ------------------------------------- */

static size_t ip_hash(const unsigned char *ip, size_t cap)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++) h = (h ^ ip[i]) * 1099511628211ull;
    return (size_t)h & (cap - 1);
}

/* +1 for ip; returns the new count, or -1 when out of memory. */
static int ip_add(struct mf_http *s, const unsigned char *ip)
{
    pthread_mutex_lock(&s->ip_mu);
    mf_ip_count **slot = (mf_ip_count **)s->ip_table + ip_hash(ip, s->ip_cap), *e = *slot;
    while (e && memcmp(e->ip, ip, 16) != 0) e = e->next;
    if (!e && (e = calloc(1, sizeof *e)) != NULL) {
        memcpy(e->ip, ip, 16);
        e->next = *slot;
        *slot = e;
    }
    int n = e ? ++e->n : -1;
    pthread_mutex_unlock(&s->ip_mu);
    return n;
}

static void ip_remove(struct mf_http *s, const unsigned char *ip)
{
    pthread_mutex_lock(&s->ip_mu);
    mf_ip_count **p = (mf_ip_count **)s->ip_table + ip_hash(ip, s->ip_cap);
    while (*p && memcmp((*p)->ip, ip, 16) != 0) p = &(*p)->next;
    if (*p && --(*p)->n == 0) {
        mf_ip_count *dead = *p;
        *p = dead->next;
        free(dead);
    }
    pthread_mutex_unlock(&s->ip_mu);
}

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

static void wake(mf_loop *lp)
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
    wake(lp);
}

/* Worker thread (or the batcher's reaper or drain): one job finished. */
void mf_request_job_done(mf_request *r)
{
    pthread_mutex_lock(&r->mu);
    int last = --r->pending == 0 && r->waiting;
    mf_conn *c = r->conn;
    pthread_mutex_unlock(&r->mu);
    /* r->conn is fixed while waiting (the loop only changes it when it
     * orphans the request, and then it keeps the connection struct) */
    if (last) push_ready(c);
}

static void set_events(mf_conn *c, uint32_t ev);

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
        set_events(c, EPOLLRDHUP); /* only the client going away */
        return 0;
    }
    pthread_mutex_unlock(&r->mu);
    return answer(r);
}

/* ---- connections -------------------------------------------------------- */

static void set_events(mf_conn *c, uint32_t ev)
{
    if (c->fd < 0 || c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->lp->epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static void request_free(mf_request *r)
{
    struct mf_http *s = r->srv;
    mf_request_unexpect(r);
    if (r->budget) {
        atomic_fetch_sub(&s->body_bytes, (long long)r->budget);
        mf_metrics_gauge_add(s->metrics, MF_GAUGE_BODY_BYTES, -(long)r->budget);
    }
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
static void request_end(mf_request *r, const char *abort_code)
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

static void conn_free(mf_conn *c)
{
    mf_loop *lp = c->lp;
    struct mf_http *s = lp->srv;
    if (c->prev) c->prev->next = c->next;
    else lp->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->in);
    free(c->out);
    free(c);
    (void)s;
}

/* A connection taken at drain has sent its first request head (or gone). */
static void drain_settle(mf_conn *c)
{
    if (!c->drain_new) return;
    c->drain_new = 0;
    atomic_fetch_sub(&c->lp->srv->drain_pending, 1);
}

/* Close the socket and release what the connection counts against. */
static void close_fd(mf_conn *c)
{
    struct mf_http *s = c->lp->srv;
    drain_settle(c);
    if (c->fd < 0) return;
    epoll_ctl(c->lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->ip_counted) ip_remove(s, c->ip);
    c->ip_counted = 0;
    atomic_fetch_sub(&s->conns, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_CONNECTIONS, -1);
}

/* Close the connection now; the structure goes in conn_reap, once the
 * handler that may be running on it has returned. */
static void conn_close(mf_conn *c, mf_counter abort_stage)
{
    close_fd(c);
    if (!c->dead) c->abort_stage = abort_stage;
    c->dead = 1;
}

/* After an event has been handled: free a closed connection, ending its
 * request as aborted -- unless that request's jobs are still queued or
 * running, in which case it is orphaned and freed when they are done
 * (the ready list). */
static void conn_reap(mf_conn *c)
{
    if (!c->dead || c->orphan) return;
    mf_request *r = c->req;
    if (r) {
        pthread_mutex_lock(&r->mu);
        int pending = r->pending;
        pthread_mutex_unlock(&r->mu);
        if (!r->answered) mf_metrics_count(c->lp->srv->metrics, c->abort_stage, 1);
        if (pending) {
            c->orphan = 1;
            /* nobody waits for the answer: what has not started is taken
             * back (its done callbacks run here or soon; the last one puts
             * the orphan on the ready list, which frees it) */
            if (r->cancel && !r->answered) r->cancel(r);
            return;
        }
        c->req = NULL;
        request_end(r, r->answered ? NULL : "connection_closed");
    }
    if (c->in_ready) c->orphan = 1; /* the ready list frees it */
    else conn_free(c);
}

static void loop_date(mf_loop *lp)
{
    time_t now = time(NULL);
    if (now == lp->date_t) return;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(lp->date, sizeof lp->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    lp->date_t = now;
}

static const char *reason(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return "Unknown";
}

static void after_answer(mf_conn *c);

/* Write what is left of the answer; when it is all out, write_done (the
 * caller runs after_answer once its handler has returned). */
static void conn_write(mf_conn *c)
{
    mf_request *r = c->req;
    const size_t body_len = r->head_only ? 0 : r->resp.len;
    while (c->out_off < c->out_len + body_len) {
        struct iovec iov[2];
        int n = 0;
        if (c->out_off < c->out_len) iov[n++] = (struct iovec){c->out + c->out_off, c->out_len - c->out_off};
        size_t bo = c->out_off > c->out_len ? c->out_off - c->out_len : 0;
        if (bo < body_len) iov[n++] = (struct iovec){r->resp.body + bo, body_len - bo};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, EPOLLOUT);
                return;
            }
            if (errno == EINTR) continue;
            conn_close(c, MF_COUNTER_ABORT_ANSWER);
            return;
        }
        c->out_off += (size_t)w;
    }
    c->write_done = 1;
}

void mf_http_send(mf_request *r)
{
    mf_conn *c = r->conn;
    if (!c || c->orphan || c->fd < 0) return; /* nobody to write to; request_end follows */
    mf_loop *lp = c->lp;
    struct mf_http *s = lp->srv;
    loop_date(lp);
    if (r->resp.close || !c->keep_alive || atomic_load(&s->draining) || c->reserve || c->discard) c->close_after = 1;
    char ctype[300] = "";
    if (r->resp.ctype) snprintf(ctype, sizeof ctype, "Content-Type: %s\r\n", r->resp.ctype);
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n"; /* conn_busy_event's, if cut short */
    const size_t pre = c->probe_left ? sizeof probe - 1 - c->probe_off : 0;
    size_t cap = 256 + pre + strlen(ctype) + r->resp.extra_len;
    free(c->out);
    c->out = malloc(cap);
    if (!c->out) {
        conn_close(c, MF_COUNTER_ABORT_ANSWER);
        return;
    }
    memcpy(c->out, probe + c->probe_off, pre);
    c->probe_left = 0;
    int n = snprintf(c->out + pre, cap - pre, "HTTP/1.1 %u %s\r\nDate: %s\r\n%sContent-Length: %zu\r\n%s%.*s\r\n",
                     r->resp.status, reason(r->resp.status), lp->date,
                     c->close_after ? "Connection: close\r\n" : "", r->resp.len, ctype, (int)r->resp.extra_len,
                     r->resp.extra);
    c->out_len = n > 0 && (size_t)n < cap - pre ? pre + (size_t)n : 0;
    c->out_off = 0;
    c->write_done = 0;
    c->st = C_WRITE;
    c->due_ns = s->cfg->connection_timeout_s ? mf_now_ns() + sec_ns(s->cfg->connection_timeout_s) : 0;
    conn_write(c);
}

static void conn_process(mf_conn *c);

/* The answer is out: keep-alive, or linger and close. */
static void after_answer(mf_conn *c)
{
    struct mf_http *s = c->lp->srv;
    mf_request *r = c->req;
    c->req = NULL;
    c->requests++;
    c->write_done = 0;
    c->probed = 0;
    c->probe_off = 0;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    if (r) request_end(r, NULL);
    if (c->close_after) {
        shutdown(c->fd, SHUT_WR);
        c->st = C_LINGER;
        c->in_len = 0;
        c->due_ns = mf_now_ns() + LINGER_NS;
        set_events(c, EPOLLIN | EPOLLRDHUP);
        return;
    }
    c->st = C_HEAD;
    c->scanned = 0;
    c->phase_ns = mf_now_ns();
    c->due_ns = s->cfg->connection_timeout_s ? c->phase_ns + sec_ns(s->cfg->connection_timeout_s) : 0;
    set_events(c, EPOLLIN | EPOLLRDHUP);
}


/* An answer straight on the socket, for connections refused at accept
 * (no request exists): best effort, never blocks. */
static void send_canned(int fd, unsigned status, const char *code, const char *msg)
{
    char body[256], buf[512];
    int bl = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %d\r\n\r\n%s",
                     status, reason(status), status == 503 ? "Retry-After: 1\r\n" : "", bl, body);
    if (n > 0) {
        ssize_t w = send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
    }
}

/* ---- requests ------------------------------------------------------------ */

static mf_request *request_new(mf_conn *c)
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
    drain_settle(c);
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
static int request_take_head(mf_request *r, const char *buf, const mf_hp_request *hp)
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
static void set_request_id(mf_request *r)
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

/* Routes a reserve connection may use. */
static int reserve_ok(const mf_request *r)
{
    return r->route && (r->endpoint == MF_ENDPOINT_HEALTH_LIVE || r->endpoint == MF_ENDPOINT_HEALTH_READY ||
                        r->endpoint == MF_ENDPOINT_METRICS);
}

/* Reserve bytes of max_inflight_body_bytes for r's body, growing to `want`. */
static int budget_grow(mf_request *r, size_t want);
int mf_request_budget(mf_request *r, size_t want) { return budget_grow(r, want); }

static int budget_grow(mf_request *r, size_t want)
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

/* Make room for n more body bytes; -1: max_body_bytes, -2: the budget, -3: memory. */
static int body_room(mf_request *r, size_t n)
{
    size_t limit = (size_t)r->srv->cfg->max_body_bytes;
    if (n > limit - r->body_len) return -1;
    if (r->body_len + n <= r->body_cap) return 0;
    size_t cap = r->body_cap ? r->body_cap * 2 : 65536;
    if (cap < r->body_len + n) cap = r->body_len + n;
    if (cap > limit) cap = limit;
    if (budget_grow(r, cap) != 0) return -2;
    uint8_t *b = realloc(r->body, cap);
    if (!b) return -3;
    r->body = b;
    r->body_cap = cap;
    return 0;
}

static void body_deadline(mf_conn *c)
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
static void body_refuse(mf_conn *c, mf_err e, const char *fmt, const char *detail)
{
    c->discard = 1;
    mf_reply_error(c->req, e, fmt, detail);
}

static void body_end(mf_conn *c)
{
    mf_request *r = c->req;
    c->st = C_BUSY;
    c->due_ns = 0;
    set_events(c, EPOLLRDHUP);
    if (r->route->body(r) < 0) conn_close(c, MF_COUNTER_ABORT_BODY);
}

/* Body bytes at data[0..n): into the request (or its chunked decoder).
 * Returns the bytes used; the connection may have moved on. */
static size_t body_feed(mf_conn *c, const char *data, size_t n)
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
                body_refuse(c, MF_E_BAD_REQUEST, "malformed chunked body: %s", why);
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
            int rc = body_room(r, span_len);
            if (rc == -1) {
                body_refuse(c, MF_E_BODY_TOO_LARGE, "request body is over the limit of %s bytes", "max_body_bytes");
                return used;
            }
            if (rc == -2) {
                mf_metrics_count(r->srv->metrics, MF_COUNTER_BODY_BUDGET, 1);
                body_refuse(c, MF_E_BODY_BUDGET, "%s", "the server holds too many uploads at once "
                                                      "(max_inflight_body_bytes); retry later");
                return used;
            }
            if (rc == -3) {
                body_refuse(c, MF_E_OUT_OF_MEMORY, "%s", "cannot allocate the request body");
                return used;
            }
            memcpy(r->body + r->body_len, span, span_len);
            r->body_len += span_len;
        }
        if (done) {
            body_end(c);
            return used;
        }
    }
    return used;
}

/* A complete head in c->in: the request, its route, its handler. */
static void dispatch(mf_conn *c, const mf_hp_request *hp, mf_hp_status st)
{
    struct mf_http *s = c->lp->srv;
    mf_request *r = request_new(c);
    if (!r) {
        conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    c->req = r;
    c->keep_alive = st == MF_HP_OK ? hp->keep_alive : 0;
    if (st != MF_HP_OK) {
        /* what could be parsed, for the log line */
        snprintf(r->method, sizeof r->method, "%.*s", (int)(hp->method.n < 15 ? hp->method.n : 15),
                 hp->method.p ? hp->method.p : "");
        r->path = strdup("-");
        set_request_id(r);
        mf_metrics_count(s->metrics, MF_COUNTER_MALFORMED, 1);
        mf_err e = st == MF_HP_TOO_LARGE || st == MF_HP_TOO_MANY_HEADERS ? MF_E_HEAD_TOO_LARGE
                   : st == MF_HP_BAD_VERSION                            ? MF_E_BAD_VERSION
                                                                        : MF_E_BAD_REQUEST;
        r->resp.close = 1;
        c->in_len = 0; /* nothing after a malformed head can be trusted */
        mf_reply_error(r, e, "%s", hp->why ? hp->why : "malformed request");
        return;
    }
    int took = request_take_head(r, c->in, hp);
    /* the head is consumed: what follows is body or the next request */
    memmove(c->in, c->in + hp->head_len, c->in_len - hp->head_len);
    c->in_len -= hp->head_len;
    c->scanned = 0;
    if (took == -2) {
        conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    set_request_id(r);
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
        if (r->route->begin(r) < 0) conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    /* a route with a body: its checks of the head first (an answer now means
     * the body is never read, so the connection closes after it), then the
     * framing */
    if (r->route->begin(r) < 0) {
        conn_close(c, MF_COUNTER_ABORT_HEAD);
        return;
    }
    if (r->answered) return;
    if (!has_body) {
        c->st = C_BODY;
        body_end(c);
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
        if (budget_grow(r, first) != 0) {
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
            conn_close(c, MF_COUNTER_ABORT_BODY);
            return;
        }
    }
    r->resp.close = 0;
    c->st = C_BODY;
    c->phase_ns = c->last_io_ns = mf_now_ns();
    body_deadline(c);
}

/* Move the connection on as far as it goes: an answer written -> the next
 * request; bytes read -> parse and serve them, pipelined ones included, one
 * after the other.  Called after every event, once its handler returned. */
static void conn_process(mf_conn *c)
{
    while (!c->dead) {
        if (c->st == C_WRITE && c->write_done) {
            after_answer(c);
            continue;
        }
        if (!c->in_len) return;
        if (c->st == C_HEAD) {
            /* the head ends with an empty line: look for one in the new bytes only */
            size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
            const char *end = c->in + c->in_len, *found = NULL;
            for (const char *p = c->in + from; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
                const char *q = p + 1;
                if (q < end && (*q == '\n' || (*q == '\r' && q + 1 < end && q[1] == '\n'))) {
                    found = q;
                    break;
                }
            }
            c->scanned = c->in_len;
            if (!found && c->in_len <= MF_MAX_HEAD) return;
            mf_hp_request hp;
            mf_hp_status st = mf_hp_parse_head(c->in, c->in_len, MF_MAX_HEAD, &hp);
            if (st == MF_HP_INCOMPLETE) {
                /* empty lines before the request line, or more of the head to come */
                if (c->in_len <= MF_MAX_HEAD) return;
                st = MF_HP_TOO_LARGE;
            }
            dispatch(c, &hp, st);
            continue;
        }
        if (c->st == C_BODY) {
            if (c->discard) {
                c->in_len = 0;
                return;
            }
            size_t used = body_feed(c, c->in, c->in_len);
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            continue;
        }
        return; /* BUSY, LINGER, or WRITE with the answer still going out: later */
    }
}

/* Readable: read (into the body directly when its length is known). */
static void conn_read(mf_conn *c)
{
    struct mf_http *s = c->lp->srv;
    size_t budget = READ_BUDGET;
    while (!c->dead && (c->st == C_HEAD || c->st == C_BODY || c->st == C_LINGER) && budget) {
        if (c->st == C_LINGER) {
            char sink[4096];
            ssize_t n = recv(c->fd, sink, sizeof sink, 0);
            if (n > 0) continue;
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            conn_close(c, MF_COUNTER_ABORT_ANSWER);
            return;
        }
        char *dst;
        size_t room;
        int direct = c->st == C_BODY && !c->chunked && c->in_len == 0 && c->req && !c->discard;
        if (direct) {
            size_t want = c->left < READ_CHUNK * 4 ? (size_t)c->left : READ_CHUNK * 4;
            int rc = body_room(c->req, want);
            if (rc != 0) direct = 0; /* body_feed answers the error */
            dst = direct ? (char *)c->req->body + c->req->body_len : NULL;
            room = want;
        }
        if (!direct) {
            if (c->in_cap - c->in_len < READ_CHUNK) {
                size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
                if (cap < c->in_len + READ_CHUNK) cap = c->in_len + READ_CHUNK;
                char *b = realloc(c->in, cap);
                if (!b) {
                    conn_close(c, c->st == C_HEAD ? MF_COUNTER_ABORT_HEAD : MF_COUNTER_ABORT_BODY);
                    return;
                }
                c->in = b;
                c->in_cap = cap;
            }
            dst = c->in + c->in_len;
            room = c->in_cap - c->in_len;
            if (c->st == C_HEAD && room > MF_MAX_HEAD + 1 - c->in_len && c->in_len <= MF_MAX_HEAD)
                room = MF_MAX_HEAD + 1 - c->in_len;
        }
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            conn_close(c, c->st == C_HEAD ? MF_COUNTER_ABORT_HEAD : MF_COUNTER_ABORT_BODY);
            return;
        }
        if (n == 0) {
            /* the client shut its side: between requests that is the end;
             * inside one, the request is incomplete */
            int idle = c->st == C_HEAD && c->in_len == 0;
            conn_close(c, idle ? MF_COUNTER_ABORT_HEAD : c->st == C_HEAD ? MF_COUNTER_ABORT_HEAD : MF_COUNTER_ABORT_BODY);
            return;
        }
        budget -= (size_t)n < budget ? (size_t)n : budget;
        c->last_io_ns = mf_now_ns();
        if (direct) {
            mf_request *r = c->req;
            r->body_len += (size_t)n;
            r->bytes_in += (size_t)n;
            c->left -= (uint64_t)n;
            if (c->left == 0) {
                body_end(c);
                return;
            }
            body_deadline(c);
            continue;
        }
        c->in_len += (size_t)n;
        if (c->st == C_BODY && c->discard) {
            c->in_len = 0;
            continue;
        }
        conn_process(c);
        if (!c->dead && c->st == C_BODY) body_deadline(c);
    }
    (void)s;
}

/* While waiting for jobs: the client shut its side or reset.
 *
 * A FIN alone does not say whether the client has gone (close) or only
 * stopped sending (shutdown(SHUT_WR)) and still reads.  An HTTP/1.1 client
 * must accept a 1xx interim answer before the final one, so the server
 * sends "100 Continue": a client that has closed its socket answers it with
 * a reset, which arrives as EPOLLERR/EPOLLHUP and closes the connection
 * (and cancels the request's work, conn_reap); one that still reads ignores
 * it and gets its answer.  HTTP/1.0 clients get no 1xx: a FIN from them is
 * taken as a half-close.  Only a FIN with nothing after it counts: bytes of
 * a next request (pipelining) are left for after the answer. */
static void conn_busy_event(mf_conn *c, uint32_t ev)
{
    if (ev & (EPOLLERR | EPOLLHUP)) {
        conn_close(c, MF_COUNTER_ABORT_WAIT);
        return;
    }
    set_events(c, 0); /* errors and hang-ups are still reported */
    if (!(ev & EPOLLRDHUP) || c->probed || !c->req || c->req->minor < 1) return;
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n != 0) return; /* data first (or an error): not a bare FIN */
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    c->probed = 1;
    ssize_t w = send(c->fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_close(c, MF_COUNTER_ABORT_WAIT); /* already reset */
        return;
    }
    if (w >= 0 && (size_t)w < sizeof probe - 1) {
        /* a full socket buffer: the rest goes before the answer */
        c->probe_off = (size_t)(w > 0 ? w : 0);
        c->probe_left = 1;
    }
}

static void conn_event(mf_conn *c, uint32_t ev)
{
    switch (c->st) {
    case C_HEAD:
    case C_BODY:
    case C_LINGER:
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_read(c);
        break;
    case C_BUSY: conn_busy_event(c, ev); break;
    case C_WRITE:
        if (ev & (EPOLLERR | EPOLLHUP)) conn_close(c, MF_COUNTER_ABORT_ANSWER);
        else if (ev & EPOLLOUT) conn_write(c);
        break;
    }
    conn_process(c);
    conn_reap(c);
}

/* ---- accepting ----------------------------------------------------------- */

/* Accept up to 64 connections; returns 1 if the backlog may hold more. */
static int accept_ready(mf_loop *lp)
{
    struct mf_http *s = lp->srv;
    for (int k = 0; k < 64; k++) {
        union {
            struct sockaddr sa;
            struct sockaddr_in in4;
            struct sockaddr_in6 in6;
        } a;
        socklen_t al = sizeof a;
        int fd = accept4(s->listen_fd, &a.sa, &al, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                mf_log_event("warn", "accept: out of file descriptors", json_pack("{s:i}", "conns", atomic_load(&s->conns)));
            return 0;
        }
        int n = atomic_fetch_add(&s->conns, 1) + 1;
        mf_metrics_gauge_add(s->metrics, MF_GAUGE_CONNECTIONS, 1);
        unsigned char ip[16] = {0};
        char remote[INET6_ADDRSTRLEN] = "";
        if (a.sa.sa_family == AF_INET) {
            ip[10] = ip[11] = 0xff;
            memcpy(ip + 12, &a.in4.sin_addr, 4);
            inet_ntop(AF_INET, &a.in4.sin_addr, remote, sizeof remote);
        } else if (a.sa.sa_family == AF_INET6) {
            memcpy(ip, &a.in6.sin6_addr, 16);
            inet_ntop(AF_INET6, &a.in6.sin6_addr, remote, sizeof remote);
        }
        const char *refuse = NULL;
        mf_counter why = MF_COUNTER_REJECT_MAX_CONN;
        int counted = 0;
        if (n > s->cfg->max_connections + s->reserve) {
            refuse = "the server is at max_connections; retry later";
        } else if (s->cfg->max_connections_per_client > 0) {
            int per = ip_add(s, ip);
            counted = per > 0;
            if (per < 0 || per > s->cfg->max_connections_per_client) {
                refuse = "too many connections from this address (max_connections_per_client)";
                why = MF_COUNTER_REJECT_PER_CLIENT;
            }
        }
        mf_conn *c = refuse ? NULL : calloc(1, sizeof *c);
        if (!c) {
            if (!refuse) refuse = "out of memory";
            mf_metrics_count(s->metrics, why, 1);
            send_canned(fd, 503, "too_many_connections", refuse);
            close(fd);
            if (counted) ip_remove(s, ip);
            atomic_fetch_sub(&s->conns, 1);
            mf_metrics_gauge_add(s->metrics, MF_GAUGE_CONNECTIONS, -1);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->lp = lp;
        c->fd = fd;
        memcpy(c->ip, ip, 16);
        c->ip_counted = counted;
        snprintf(c->remote, sizeof c->remote, "%s", remote);
        c->reserve = n > s->cfg->max_connections;
        c->st = C_HEAD;
        c->phase_ns = mf_now_ns();
        uint64_t head = s->cfg->connection_timeout_s ? sec_ns(s->cfg->connection_timeout_s) : 0;
        if (c->reserve && (!head || head > RESERVE_HEAD_NS)) head = RESERVE_HEAD_NS;
        c->due_ns = head ? c->phase_ns + head : 0;
        if (atomic_load(&s->draining)) {
            /* queued before the drain: its request is awaited (the drain
             * waits for it), for DRAIN_HEAD_NS at most */
            c->drain_new = 1;
            atomic_fetch_add(&s->drain_pending, 1);
            if (!c->due_ns || c->due_ns > c->phase_ns + DRAIN_HEAD_NS) c->due_ns = c->phase_ns + DRAIN_HEAD_NS;
        }
        c->next = lp->conns;
        if (lp->conns) lp->conns->prev = c;
        lp->conns = c;
        c->events = EPOLLIN | EPOLLRDHUP;
        struct epoll_event e = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
            conn_close(c, MF_COUNTER_ABORT_HEAD);
            conn_reap(c);
        }
    }
    return 1;
}

/* Drain has begun: take every connection the kernel has queued (they were
 * accepted by the TCP stack and their clients may have sent requests: they
 * are served, each answer with Connection: close), then leave the listener.
 * mf_http_begin_drain closes it once every loop has done this. */
static void drain_accept(mf_loop *lp)
{
    while (accept_ready(lp)) {}
    epoll_ctl(lp->epfd, EPOLL_CTL_DEL, lp->srv->listen_fd, NULL);
    atomic_store(&lp->drain_acked, 1);
}

/* ---- the loop ----------------------------------------------------------- */

static void run_ready(mf_loop *lp)
{
    uint64_t v;
    ssize_t rd = read(lp->evfd, &v, sizeof v);
    (void)rd;
    pthread_mutex_lock(&lp->mu);
    mf_conn *list = lp->ready;
    lp->ready = NULL;
    for (mf_conn *c = list; c; c = c->ready_next) c->in_ready = 0;
    pthread_mutex_unlock(&lp->mu);
    while (list) {
        mf_conn *c = list;
        list = c->ready_next;
        mf_request *r = c->req;
        if (c->orphan) {
            /* the client went away while its jobs ran: they are done now */
            c->req = NULL;
            if (r) request_end(r, "connection_closed");
            conn_free(c);
            continue;
        }
        if (!r || c->st != C_BUSY || c->dead) continue;
        r->waiting = 0;
        if (r->answer(r) < 0) conn_close(c, MF_COUNTER_ABORT_WAIT);
        conn_process(c);
        conn_reap(c);
    }
}

static void report_slow(mf_loop *lp, uint64_t now)
{
    if (!(lp->slow_head + lp->slow_body) || now - lp->last_report_ns < REPORT_NS) return;
    mf_log_event("info", "closed connections that did not send their request in time",
                 json_pack("{s:I,s:I,s:I}", "connections", (json_int_t)(lp->slow_head + lp->slow_body), "headers",
                           (json_int_t)lp->slow_head, "body", (json_int_t)lp->slow_body));
    lp->slow_head = lp->slow_body = 0;
    lp->last_report_ns = now;
}

static void sweep(mf_loop *lp, uint64_t now)
{
    struct mf_http *s = lp->srv;
    const int draining = atomic_load(&s->draining);
    for (mf_conn *c = lp->conns, *next; c; c = next) {
        next = c->next;
        if (c->fd < 0) continue;
        if (draining && c->st == C_HEAD && c->in_len == 0 && !c->req && !c->drain_new) {
            conn_close(c, MF_COUNTER_ABORT_HEAD); /* idle keep-alive: nothing to drain */
            conn_reap(c);
            continue;
        }
        if (!c->due_ns || now < c->due_ns) continue;
        switch (c->st) {
        case C_HEAD:
            if (c->in_len == 0) {
                conn_close(c, MF_COUNTER_ABORT_HEAD); /* idle */
                break;
            }
            mf_metrics_count(s->metrics, MF_COUNTER_TIMEOUT_HEAD, 1);
            lp->slow_head++;
            send_canned(c->fd, 408, "request_timeout", "the request head did not arrive in time (connection_timeout_s)");
            conn_close(c, MF_COUNTER_ABORT_HEAD);
            break;
        case C_BODY:
            mf_metrics_count(s->metrics, MF_COUNTER_TIMEOUT_BODY, 1);
            lp->slow_body++;
            body_refuse(c, MF_E_REQUEST_TIMEOUT, "%s",
                        "the request body did not arrive in time (connection_timeout_s, body_timeout_s, "
                        "min_body_rate)");
            break;
        case C_WRITE:
            mf_metrics_count(s->metrics, MF_COUNTER_TIMEOUT_WRITE, 1);
            conn_close(c, MF_COUNTER_ABORT_ANSWER);
            break;
        case C_LINGER: conn_close(c, MF_COUNTER_ABORT_ANSWER); break;
        case C_BUSY: break;
        }
        conn_process(c);
        conn_reap(c);
    }
    report_slow(lp, now);
}

static void *loop_main(void *arg)
{
    mf_loop *lp = arg;
    struct mf_http *s = lp->srv;
    struct epoll_event evs[MAX_EVENTS];
    while (!atomic_load(&s->stopping)) {
        int n = epoll_wait(lp->epfd, evs, MAX_EVENTS, (int)(SWEEP_NS / 1000000));
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_marker) {
                if (!atomic_load(&s->draining)) accept_ready(lp);
            } else if (p == lp) {
                run_ready(lp);
            } else {
                conn_event(p, evs[i].events);
            }
        }
        if (atomic_load(&s->draining) && !atomic_load(&lp->drain_acked)) drain_accept(lp);
        uint64_t now = mf_now_ns();
        if (now - lp->last_sweep_ns >= SWEEP_NS) {
            lp->last_sweep_ns = now;
            sweep(lp, now);
        }
    }
    return NULL;
}

/* ---- start / stop ------------------------------------------------------- */

static int open_listener(const mf_config *cfg, char *err, size_t errlen, int *port)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    memset(&addr, 0, sizeof addr);
    socklen_t al;
    int family;
    if (inet_pton(AF_INET, cfg->bind, &addr.in4.sin_addr) == 1) {
        addr.in4.sin_family = family = AF_INET;
        addr.in4.sin_port = htons((uint16_t)cfg->port);
        al = sizeof addr.in4;
    } else if (inet_pton(AF_INET6, cfg->bind, &addr.in6.sin6_addr) == 1) {
        addr.in6.sin6_family = family = AF_INET6;
        addr.in6.sin6_port = htons((uint16_t)cfg->port);
        al = sizeof addr.in6;
    } else {
        mf_set_err(err, errlen, "bind: '%s' is not a numeric IPv4 or IPv6 address", cfg->bind);
        return -2;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mf_set_err(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, &addr.sa, al) != 0 || listen(fd, 1024) != 0) {
        mf_set_err(err, errlen, "cannot listen on %s port %d: %s", cfg->bind, cfg->port, strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t bl = sizeof addr;
    getsockname(fd, &addr.sa, &bl);
    *port = ntohs(family == AF_INET ? addr.in4.sin_port : addr.in6.sin6_port);
    return fd;
}

static void stop_loops(struct mf_http *s)
{
    atomic_store(&s->stopping, 1);
    for (int i = 0; i < s->n_loops; i++)
        if (s->loops[i].started) wake(&s->loops[i]);
    for (int i = 0; i < s->n_loops; i++) {
        mf_loop *lp = &s->loops[i];
        if (lp->started) pthread_join(lp->tid, NULL);
        lp->started = 0;
    }
}

static void free_all(struct mf_http *s)
{
    for (int i = 0; s->loops && i < s->n_loops; i++) {
        mf_loop *lp = &s->loops[i];
        while (lp->conns) {
            mf_conn *c = lp->conns;
            if (c->req) {
                /* nothing can still be pending: the batcher was drained first */
                request_end(c->req, "server_stopped");
                c->req = NULL;
            }
            close_fd(c);
            conn_free(c);
        }
        if (lp->epfd >= 0) close(lp->epfd);
        if (lp->evfd >= 0) close(lp->evfd);
        pthread_mutex_destroy(&lp->mu);
    }
    free(s->loops);
    if (s->ip_table) {
        mf_ip_count **t = (mf_ip_count **)s->ip_table;
        for (size_t i = 0; i < s->ip_cap; i++)
            while (t[i]) {
                mf_ip_count *e = t[i];
                t[i] = e->next;
                free(e);
            }
        free(s->ip_table);
    }
    pthread_mutex_destroy(&s->ip_mu);
    if (s->listen_fd >= 0) close(s->listen_fd);
    free(s);
}

mf_http_status mf_http_start(const mf_config *cfg, mf_repo *repo, mf_batcher *batcher, mf_decoder *decoder,
                             mf_metrics *metrics,
                             mf_http **out, char *err, size_t errlen)
{
    *out = NULL;
    struct mf_http *s = calloc(1, sizeof *s);
    if (!s) {
        mf_set_err(err, errlen, "out of memory");
        return MF_HTTP_NOMEM;
    }
    s->cfg = cfg;
    s->repo = repo;
    s->batcher = batcher;
    s->decoder = decoder;
    s->metrics = metrics;
    s->listen_fd = -1;
    pthread_mutex_init(&s->ip_mu, NULL);
    s->reserve = 16 + cfg->max_connections / 64;
    s->ip_cap = 1024;
    s->ip_table = calloc(s->ip_cap, sizeof(mf_ip_count *));
    s->n_loops = cfg->http_threads > 0 ? cfg->http_threads : 1;
    s->loops = calloc((size_t)s->n_loops, sizeof *s->loops);
    if (!s->ip_table || !s->loops) {
        mf_set_err(err, errlen, "out of memory");
        free_all(s);
        return MF_HTTP_NOMEM;
    }
    for (int i = 0; i < s->n_loops; i++) s->loops[i].epfd = s->loops[i].evfd = -1;
    int rc = open_listener(cfg, err, errlen, &s->port);
    if (rc < 0) {
        free_all(s);
        return rc == -2 ? MF_HTTP_ARG : MF_HTTP_LISTEN;
    }
    s->listen_fd = rc;
    for (int i = 0; i < s->n_loops; i++) {
        mf_loop *lp = &s->loops[i];
        lp->srv = s;
        pthread_mutex_init(&lp->mu, NULL);
        lp->epfd = epoll_create1(EPOLL_CLOEXEC);
        lp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_marker};
        struct epoll_event we = {.events = EPOLLIN, .data.ptr = lp};
        if (lp->epfd < 0 || lp->evfd < 0 || epoll_ctl(lp->epfd, EPOLL_CTL_ADD, s->listen_fd, &le) != 0 ||
            epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->evfd, &we) != 0 ||
            pthread_create(&lp->tid, NULL, loop_main, lp) != 0) {
            mf_set_err(err, errlen, "cannot start HTTP thread %d: %s", i, strerror(errno));
            stop_loops(s);
            free_all(s);
            return MF_HTTP_LISTEN;
        }
        lp->started = 1;
    }
    *out = s;
    return MF_HTTP_OK;
}

int mf_http_port(const mf_http *h) { return h->port; }

void mf_http_begin_drain(mf_http *h)
{
    if (!h || atomic_exchange(&h->draining, 1)) return;
    /* Each loop takes the connections already queued on the listening
     * socket and leaves it (drain_accept); shutting the socket down with
     * connections still queued would reset them, and their clients (a proxy
     * that has sent a request on one) would see an error.  Then new
     * connections are refused; the socket itself is closed only in
     * mf_http_stop, after the loops have stopped polling it. */
    for (int i = 0; i < h->n_loops; i++) {
        uint64_t one = 1;
        ssize_t w = write(h->loops[i].evfd, &one, sizeof one);
        (void)w;
    }
    const uint64_t until = mf_now_ns() + 500 * 1000000ull;
    for (int i = 0; i < h->n_loops; i++)
        while (!atomic_load(&h->loops[i].drain_acked) && h->loops[i].started && mf_now_ns() < until) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    shutdown(h->listen_fd, SHUT_RDWR);
}

long mf_http_inflight(const mf_http *h)
{
    return h ? atomic_load(&h->inflight) + atomic_load(&h->drain_pending) : 0;
}

void mf_http_stop(mf_http *h)
{
    if (!h) return;
    stop_loops(h);
    free_all(h);
}
