/* conn.c -- one connection's state machine (DESIGN in http.c): reading,
 * finding heads, handing bodies to intake.c, writing answers, keep-alive,
 * lingering, closing, and watching a waiting client (the 100 Continue probe).
 */
#include "conn.h"

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
#include <sys/uio.h>

void mf_conn_events(mf_conn *c, uint32_t ev)
{
    if (c->fd < 0 || c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->lp->epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}
void mf_conn_free(mf_conn *c)
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
void mf_conn_drain_settle(mf_conn *c)
{
    if (!c->drain_new) return;
    c->drain_new = 0;
    atomic_fetch_sub(&c->lp->srv->drain_pending, 1);
}

/* Close the socket and release what the connection counts against. */
void mf_conn_close_fd(mf_conn *c)
{
    struct mf_http *s = c->lp->srv;
    mf_conn_drain_settle(c);
    if (c->fd < 0) return;
    epoll_ctl(c->lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->ip_counted) mf_http_ip_remove(s, c->ip);
    c->ip_counted = 0;
    atomic_fetch_sub(&s->conns, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_CONNECTIONS, -1);
}

/* Close the connection now; the structure goes in mf_conn_reap, once the
 * handler that may be running on it has returned. */
void mf_conn_close(mf_conn *c, mf_counter abort_stage)
{
    mf_conn_close_fd(c);
    if (!c->dead) c->abort_stage = abort_stage;
    c->dead = 1;
}

/* After an event has been handled: free a closed connection, ending its
 * request as aborted -- unless that request's jobs are still queued or
 * running, in which case it is orphaned and freed when they are done
 * (the ready list). */
void mf_conn_reap(mf_conn *c)
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
        mf_request_end(r, r->answered ? NULL : "connection_closed");
    }
    if (c->in_ready) c->orphan = 1; /* the ready list frees it */
    else mf_conn_free(c);
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
                mf_conn_events(c, EPOLLOUT);
                return;
            }
            if (errno == EINTR) continue;
            mf_conn_close(c, MF_COUNTER_ABORT_ANSWER);
            return;
        }
        c->out_off += (size_t)w;
    }
    c->write_done = 1;
}

void mf_http_send(mf_request *r)
{
    mf_conn *c = r->conn;
    if (!c || c->orphan || c->fd < 0) return; /* nobody to write to; mf_request_end follows */
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
        mf_conn_close(c, MF_COUNTER_ABORT_ANSWER);
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

void mf_conn_process(mf_conn *c);

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
    if (r) mf_request_end(r, NULL);
    if (c->close_after) {
        shutdown(c->fd, SHUT_WR);
        c->st = C_LINGER;
        c->in_len = 0;
        c->due_ns = mf_now_ns() + LINGER_NS;
        mf_conn_events(c, EPOLLIN | EPOLLRDHUP);
        return;
    }
    c->st = C_HEAD;
    c->scanned = 0;
    c->phase_ns = mf_now_ns();
    c->due_ns = s->cfg->connection_timeout_s ? c->phase_ns + sec_ns(s->cfg->connection_timeout_s) : 0;
    mf_conn_events(c, EPOLLIN | EPOLLRDHUP);
}


/* An answer straight on the socket, for connections refused at accept
 * (no request exists): best effort, never blocks. */
void mf_conn_send_canned(int fd, unsigned status, const char *code, const char *msg)
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

/* Move the connection on as far as it goes: an answer written -> the next
 * request; bytes read -> parse and serve them, pipelined ones included, one
 * after the other.  Called after every event, once its handler returned. */
void mf_conn_process(mf_conn *c)
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
            mf_conn_dispatch(c, &hp, st);
            continue;
        }
        if (c->st == C_BODY) {
            if (c->discard) {
                c->in_len = 0;
                return;
            }
            size_t used = mf_conn_body_feed(c, c->in, c->in_len);
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
            mf_conn_close(c, MF_COUNTER_ABORT_ANSWER);
            return;
        }
        char *dst;
        size_t room;
        int direct = c->st == C_BODY && !c->chunked && c->in_len == 0 && c->req && !c->discard;
        if (direct) {
            size_t want = c->left < READ_CHUNK * 4 ? (size_t)c->left : READ_CHUNK * 4;
            int rc = mf_conn_body_room(c->req, want);
            if (rc != 0) direct = 0; /* mf_conn_body_feed answers the error */
            dst = direct ? (char *)c->req->body + c->req->body_len : NULL;
            room = want;
        }
        if (!direct) {
            if (c->in_cap - c->in_len < READ_CHUNK) {
                size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
                if (cap < c->in_len + READ_CHUNK) cap = c->in_len + READ_CHUNK;
                char *b = realloc(c->in, cap);
                if (!b) {
                    mf_conn_close(c, c->st == C_HEAD ? MF_COUNTER_ABORT_HEAD : MF_COUNTER_ABORT_BODY);
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
            mf_conn_close(c, c->st == C_HEAD ? MF_COUNTER_ABORT_HEAD : MF_COUNTER_ABORT_BODY);
            return;
        }
        if (n == 0) {
            /* the client shut its side: between requests that is the end;
             * inside one, the request is incomplete */
            int idle = c->st == C_HEAD && c->in_len == 0;
            mf_conn_close(c, idle ? MF_COUNTER_ABORT_HEAD : c->st == C_HEAD ? MF_COUNTER_ABORT_HEAD : MF_COUNTER_ABORT_BODY);
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
                mf_conn_body_end(c);
                return;
            }
            mf_conn_body_deadline(c);
            continue;
        }
        c->in_len += (size_t)n;
        if (c->st == C_BODY && c->discard) {
            c->in_len = 0;
            continue;
        }
        mf_conn_process(c);
        if (!c->dead && c->st == C_BODY) mf_conn_body_deadline(c);
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
 * (and cancels the request's work, mf_conn_reap); one that still reads ignores
 * it and gets its answer.  HTTP/1.0 clients get no 1xx: a FIN from them is
 * taken as a half-close.  Only a FIN with nothing after it counts: bytes of
 * a next request (pipelining) are left for after the answer. */
static void conn_busy_event(mf_conn *c, uint32_t ev)
{
    if (ev & (EPOLLERR | EPOLLHUP)) {
        mf_conn_close(c, MF_COUNTER_ABORT_WAIT);
        return;
    }
    mf_conn_events(c, 0); /* errors and hang-ups are still reported */
    if (!(ev & EPOLLRDHUP) || c->probed || !c->req || c->req->minor < 1) return;
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n != 0) return; /* data first (or an error): not a bare FIN */
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    c->probed = 1;
    ssize_t w = send(c->fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        mf_conn_close(c, MF_COUNTER_ABORT_WAIT); /* already reset */
        return;
    }
    if (w >= 0 && (size_t)w < sizeof probe - 1) {
        /* a full socket buffer: the rest goes before the answer */
        c->probe_off = (size_t)(w > 0 ? w : 0);
        c->probe_left = 1;
    }
}

void mf_conn_event(mf_conn *c, uint32_t ev)
{
    switch (c->st) {
    case C_HEAD:
    case C_BODY:
    case C_LINGER:
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_read(c);
        break;
    case C_BUSY: conn_busy_event(c, ev); break;
    case C_WRITE:
        if (ev & (EPOLLERR | EPOLLHUP)) mf_conn_close(c, MF_COUNTER_ABORT_ANSWER);
        else if (ev & EPOLLOUT) conn_write(c);
        break;
    }
    mf_conn_process(c);
    mf_conn_reap(c);
}
