/* conn.h -- the connection and loop structures the HTTP front end's files
 * share (server-private; handlers see only request.h).
 *
 *   http.c     listening socket, loops, accepting, deadline sweep, start/stop
 *   conn.c     one connection's state machine: read, find heads, write, close
 *   intake.c   a request head -> request, route, checks -> its body
 *   request.c  the request object and what handlers call (request.h)
 *
 * Everything here is touched by the connection's own loop thread only,
 * except lp->ready and a connection's in_ready and ready_next (under
 * lp->mu: a worker finishing a request's last job pushes it, holding the
 * request's mu too) and a request's job count (request.h).
 */
#ifndef MF_CONN_H
#define MF_CONN_H

#include "httpparse.h"
#include "reply.h"
#include "request.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

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

static inline uint64_t sec_ns(int s) { return (uint64_t)s * 1000000000ull; }

/* http.c */
void mf_http_ip_remove(struct mf_http *s, const unsigned char *ip); /* one connection less for ip */

/* conn.c */
void mf_conn_events(mf_conn *c, uint32_t ev);           /* the epoll mask, if it changed */
void mf_conn_close_fd(mf_conn *c);                       /* socket closed, its counts released */
void mf_conn_close(mf_conn *c, mf_counter abort_stage);  /* closed now, freed by mf_conn_reap */
void mf_conn_reap(mf_conn *c);                           /* free a closed connection (or orphan its request) */
void mf_conn_free(mf_conn *c);                           /* off its loop's list, freed */
void mf_conn_drain_settle(mf_conn *c);                   /* a connection taken at drain has its request */
void mf_conn_process(mf_conn *c);                        /* on as far as the bytes and the state allow */
void mf_conn_event(mf_conn *c, uint32_t ev);             /* an epoll event */
void mf_conn_send_canned(int fd, unsigned status, const char *code, const char *msg); /* no request exists */

/* intake.c */
void mf_conn_dispatch(mf_conn *c, const mf_hp_request *hp, mf_hp_status st); /* a complete head */
size_t mf_conn_body_feed(mf_conn *c, const char *data, size_t n); /* body bytes; returns those used */
int mf_conn_body_room(mf_request *r, size_t n);         /* -1 max_body_bytes, -2 budget, -3 memory */
void mf_conn_body_deadline(mf_conn *c);                  /* due_ns while a body is read */
void mf_conn_body_refuse(mf_conn *c, mf_err e, const char *fmt, const char *detail); /* answered mid-body */
void mf_conn_body_end(mf_conn *c);                       /* the body is in: the route's body handler */

/* request.c */
mf_request *mf_request_new(mf_conn *c);
int mf_request_take_head(mf_request *r, const char *buf, const mf_hp_request *hp); /* -1 bad path, -2 memory */
void mf_request_set_id(mf_request *r);                   /* X-Request-ID: the client's or a new one */
void mf_request_end(mf_request *r, const char *abort_code); /* its log line, then freed */
void mf_loop_wake(mf_loop *lp);                          /* through the loop's eventfd */

#endif
