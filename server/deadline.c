/* deadline.c -- request-head deadlines and their reaper; see deadline.h.
 *
 * The list is unordered (deadlines move on every re-arm); the reaper scans it
 * four times per timeout period, at most once every 250 ms, which costs a few
 * microseconds per thousand connections and shuts a slow client down within
 * 25% of its deadline. */
#include "deadline.h"
#include "mf_util.h"

#include "log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct mf_deadline_conn {
    int fd;                        /* the connection's socket (libmicrohttpd's) */
    uint64_t due_ns;               /* CLOCK_MONOTONIC deadline while armed */
    int armed;                     /* headers awaited */
    int shut;                      /* already shut down by the reaper */
    mf_deadline_conn *prev, *next; /* list links */
};

struct mf_deadline {
    uint64_t timeout_ns;     /* timeout_s in ns */
    uint64_t period_ns;      /* reaper's scan interval */
    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv;       /* wakes the reaper to stop */
    mf_deadline_conn *head;  /* open connections */
    int stopping;            /* the reaper must exit */
    unsigned long expired;   /* connections shut down so far */
    pthread_t reaper;        /* the reaper thread */
};

#define now_ns mf_now_ns

static void *reaper_main(void *arg)
{
    mf_deadline *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        uint64_t now = now_ns(), wake = now + d->period_ns;
        struct timespec ts = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        if (d->stopping) break;
        now = now_ns();
        int n = 0;
        for (mf_deadline_conn *c = d->head; c; c = c->next) {
            if (!c->armed || c->shut || now < c->due_ns) continue;
            shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees EOF and closes it */
            c->shut = 1;
            n++;
        }
        d->expired += (unsigned long)n;
        if (n) {
            pthread_mutex_unlock(&d->mu);
            mf_log_event("warn", "closed connections that did not send their request headers in time",
                         json_pack("{s:i,s:f}", "connections", n, "timeout_s",
                                   (double)d->timeout_ns * 1e-9));
            pthread_mutex_lock(&d->mu);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

mf_deadline *mf_deadline_new(int timeout_s)
{
    if (timeout_s <= 0) return NULL;
    mf_deadline *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->timeout_ns = (uint64_t)timeout_s * 1000000000u;
    d->period_ns = d->timeout_ns / 4 < 250000000u ? 250000000u : d->timeout_ns / 4;
    if (d->period_ns > 1000000000u) d->period_ns = 1000000000u;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) goto err_free;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int cv_ok = pthread_cond_init(&d->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cv_ok) goto err_free;
    if (pthread_mutex_init(&d->mu, NULL) != 0) goto err_cv;
    if (pthread_create(&d->reaper, NULL, reaper_main, d) != 0) goto err_mu;
    return d;
err_mu:
    pthread_mutex_destroy(&d->mu);
err_cv:
    pthread_cond_destroy(&d->cv);
err_free:
    free(d);
    return NULL;
}

void mf_deadline_free(mf_deadline *d)
{
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    d->stopping = 1;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->reaper, NULL);
    for (mf_deadline_conn *c = d->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

mf_deadline_conn *mf_deadline_open(mf_deadline *d, int fd)
{
    if (!d) return NULL;
    mf_deadline_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    c->armed = 1;
    c->due_ns = now_ns() + d->timeout_ns;
    pthread_mutex_lock(&d->mu);
    c->next = d->head;
    if (d->head) d->head->prev = c;
    d->head = c;
    pthread_mutex_unlock(&d->mu);
    return c;
}

void mf_deadline_disarm(mf_deadline *d, mf_deadline_conn *c)
{
    if (!d || !c) return;
    pthread_mutex_lock(&d->mu);
    c->armed = 0;
    pthread_mutex_unlock(&d->mu);
}

void mf_deadline_rearm(mf_deadline *d, mf_deadline_conn *c)
{
    if (!d || !c) return;
    uint64_t due = now_ns() + d->timeout_ns;
    pthread_mutex_lock(&d->mu);
    c->due_ns = due;
    c->armed = 1;
    pthread_mutex_unlock(&d->mu);
}

void mf_deadline_close(mf_deadline *d, mf_deadline_conn *c)
{
    if (!d || !c) return;
    pthread_mutex_lock(&d->mu);
    if (c->prev) c->prev->next = c->next;
    else d->head = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&d->mu);
    free(c);
}

unsigned long mf_deadline_expired(mf_deadline *d)
{
    if (!d) return 0;
    pthread_mutex_lock(&d->mu);
    unsigned long n = d->expired;
    pthread_mutex_unlock(&d->mu);
    return n;
}
