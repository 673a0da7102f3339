/* http.c -- the HTTP/1.1 server: listening socket, I/O threads, accepting,
 * the deadline sweep, start, drain and stop.  A connection's states are in
 * conn.c, a request's intake (route, checks, body) in intake.c, the request
 * object in request.c; the structures they share in conn.h.
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

#include "conn.h"
#include "log.h"
#include "mf_util.h"

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
#include <sys/eventfd.h>

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

void mf_http_ip_remove(struct mf_http *s, const unsigned char *ip)
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
            mf_conn_send_canned(fd, 503, "too_many_connections", refuse);
            close(fd);
            if (counted) mf_http_ip_remove(s, ip);
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
            mf_conn_close(c, MF_COUNTER_ABORT_HEAD);
            mf_conn_reap(c);
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
            if (r) mf_request_end(r, "connection_closed");
            mf_conn_free(c);
            continue;
        }
        if (!r || c->st != C_BUSY || c->dead) continue;
        r->waiting = 0;
        if (r->answer(r) < 0) mf_conn_close(c, MF_COUNTER_ABORT_WAIT);
        mf_conn_process(c);
        mf_conn_reap(c);
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
            mf_conn_close(c, MF_COUNTER_ABORT_HEAD); /* idle keep-alive: nothing to drain */
            mf_conn_reap(c);
            continue;
        }
        if (!c->due_ns || now < c->due_ns) continue;
        switch (c->st) {
        case C_HEAD:
            if (c->in_len == 0) {
                mf_conn_close(c, MF_COUNTER_ABORT_HEAD); /* idle */
                break;
            }
            mf_metrics_count(s->metrics, MF_COUNTER_TIMEOUT_HEAD, 1);
            lp->slow_head++;
            mf_conn_send_canned(c->fd, 408, "request_timeout", "the request head did not arrive in time (connection_timeout_s)");
            mf_conn_close(c, MF_COUNTER_ABORT_HEAD);
            break;
        case C_BODY:
            mf_metrics_count(s->metrics, MF_COUNTER_TIMEOUT_BODY, 1);
            lp->slow_body++;
            mf_conn_body_refuse(c, MF_E_REQUEST_TIMEOUT, "%s",
                        "the request body did not arrive in time (connection_timeout_s, body_timeout_s, "
                        "min_body_rate)");
            break;
        case C_WRITE:
            mf_metrics_count(s->metrics, MF_COUNTER_TIMEOUT_WRITE, 1);
            mf_conn_close(c, MF_COUNTER_ABORT_ANSWER);
            break;
        case C_LINGER: mf_conn_close(c, MF_COUNTER_ABORT_ANSWER); break;
        case C_BUSY: break;
        }
        mf_conn_process(c);
        mf_conn_reap(c);
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
        /* The ready list last: answering it can free a connection (its
         * client reset it: the send fails, the reap frees) whose own event
         * is further on in evs[].  A connection's event never frees another
         * one, so only this order keeps every entry of evs[] alive while it
         * is handled. */
        int wake = 0;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_marker) {
                if (!atomic_load(&s->draining)) accept_ready(lp);
            } else if (p == lp) {
                wake = 1;
            } else {
                mf_conn_event(p, evs[i].events);
            }
        }
        if (wake) run_ready(lp);
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
        if (s->loops[i].started) mf_loop_wake(&s->loops[i]);
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
                mf_request_end(c->req, "server_stopped");
                c->req = NULL;
            }
            mf_conn_close_fd(c);
            mf_conn_free(c);
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

void mf_http_begin_drain(mf_http *h, int wait_ms)
{
    if (!h || atomic_exchange(&h->draining, 1)) return;
    /* Each loop takes the connections already queued on the listening
     * socket and leaves it (drain_accept); shutting the socket down with
     * connections still queued would reset them, and their clients (a proxy
     * that has sent a request on one) would see an error.  Then new
     * connections are refused; the socket itself is closed only in
     * mf_http_stop, after the loops have stopped polling it.  A loop busy
     * in a long handler (a large JSON body) gets there late: it is waited
     * for, up to wait_ms (at least 500 ms). */
    for (int i = 0; i < h->n_loops; i++) {
        uint64_t one = 1;
        ssize_t w = write(h->loops[i].evfd, &one, sizeof one);
        (void)w;
    }
    const uint64_t until = mf_now_ns() + (uint64_t)(wait_ms > 500 ? wait_ms : 500) * 1000000ull;
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
