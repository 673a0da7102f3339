/* decoder.c -- the decode pool; see decoder.h.
 *
 * Two lanes, each a binary min-heap of queued tasks (key: expected finish)
 * under one mutex, and two sets of threads: `threads` threads decode the
 * small images (expected cost under LARGE_NS) and (threads + 1) / 2 more the
 * large ones, at nice +10 (Linux nice values are per thread; raising one
 * needs no privilege, so it works in a container without capabilities).  A
 * run of 12 MP photos therefore never holds a thread a small upload needs,
 * and when both compete for the CPU the kernel gives the small uploads, the
 * HTTP threads and the inference workers the larger share (weight 1024
 * against 110); with CPU to spare the large decodes run at full speed.
 * Threads sleep on their lane's condition variable, decode and preprocess
 * with the mutex released, and call the task's done.  The budget clock
 * starts when a thread takes the task, so time spent queued does not count
 * against decode_timeout_ms.
 */
#include "decoder.h"

#include "mf_util.h"

#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LARGE_NS 4000000ull /* 4 ms expected: a 0.8 MP JPEG, a 1 MP PNG */

typedef struct lane {
    mf_decode_task **heap;  /* [cap] queued tasks, heap[0] the smallest key */
    int n, cap;             /* queued, capacity */
} lane;

#define LARGE_NICE 10

typedef struct pool_thread {
    struct mf_decoder *d;
    int lane;               /* the lane it serves */
    pthread_t tid;
} pool_thread;

struct mf_decoder {
    pthread_mutex_t mu;     /* guards everything below */
    pthread_cond_t cv[2];   /* per lane: a task, or stopping */
    lane lanes[2];          /* 0 small, 1 large */
    int running;            /* being decoded */
    int stopping;           /* threads must exit */
    pool_thread *threads;   /* [n_threads] */
    int n_threads;          /* started */
    pthread_cond_t reap_cv; /* (monotonic) an earlier start-by time than reap_at, or stopping */
    uint64_t reap_at;       /* when the reaper wakes next (0: only when signalled) */
    pthread_t reaper;       /* completes queued tasks past their start_by_ns */
    int reaper_started;
};

/* ---- the heaps (caller holds mu) ----------------------------------------- */

static void heap_set(lane *l, int i, mf_decode_task *t)
{
    l->heap[i] = t;
    t->slot = i;
}

/* a is taken before b: its priority, then its expected finish */
static int before(const mf_decode_task *a, const mf_decode_task *b)
{
    return a->priority != b->priority ? a->priority < b->priority : a->key < b->key;
}

static void sift_up(lane *l, int i)
{
    mf_decode_task *t = l->heap[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!before(t, l->heap[p])) break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void sift_down(lane *l, int i)
{
    mf_decode_task *t = l->heap[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= l->n) break;
        if (c + 1 < l->n && before(l->heap[c + 1], l->heap[c])) c++;
        if (!before(l->heap[c], t)) break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

static void heap_remove(lane *l, int i)
{
    mf_decode_task *t = l->heap[i];
    t->slot = -1;
    if (--l->n == i) return;
    mf_decode_task *m = l->heap[l->n]; /* the last one fills the hole */
    heap_set(l, i, m);
    sift_down(l, i);
    if (l->heap[i] == m) sift_up(l, i);
}

/* ---- costs --------------------------------------------------------------- */

/* Measured on this project's machines (docs/performance.md): about 5 ns per
 * pixel to decode a JPEG at full size (less when scaled: the entropy
 * decoding stays, the IDCT and colour conversion shrink), about 4 for PNG
 * and WebP, 2 for GIF.  The preprocess (pre given) adds about 1 ns per
 * decoded pixel (the resize) and 3 per pixel of the network input (the
 * resize's output rows, crop, normalization): 140 us for 224x224 from a
 * thumbnail, 1.2 ms from a 1024x1024 image (AMD EPYC Zen 4). */
uint64_t mf_decode_cost_ns(const uint8_t *data, size_t len, const mf_image_limits *lim, const mf_preprocess *pre)
{
    mf_image_info info;
    mf_image_probe(data, len, &info);
    const uint64_t px = (uint64_t)(info.w > 0 ? info.w : 0) * (uint64_t)(info.h > 0 ? info.h : 0);
    uint64_t cost = 20000; /* fixed: headers, buffers */
    uint64_t decoded = px; /* pixels the preprocess reads */
    switch (info.format) {
    case MF_IMG_FMT_JPEG:
        if (lim && lim->min_side > 0 && info.w > 0 && info.h > 0) {
            const int shorter = info.w < info.h ? info.w : info.h;
            int m = 8;
            while (m > 1 && (uint64_t)shorter * (uint64_t)(m - 1) >= (uint64_t)lim->min_side * 8) m--;
            decoded = px * (uint64_t)(m * m) / 64;
            cost += px * 2 + decoded * 3;
        } else {
            cost += px * 5;
        }
        break;
    case MF_IMG_FMT_PNG:
    case MF_IMG_FMT_WEBP: cost += px * 4; break;
    case MF_IMG_FMT_GIF: cost += px * 2; break;
    default: return cost + (uint64_t)len; /* refused at once: no preprocess */
    }
    if (pre && pre->input_h > 0 && pre->input_w > 0)
        cost += decoded + (uint64_t)pre->input_h * (uint64_t)pre->input_w * 3;
    return cost;
}

/* ---- the threads ----------------------------------------------------------- */

static void run_task(mf_decode_task *t)
{
    const uint64_t t0 = mf_now_ns();
    t->wait_s = (double)(t0 - t->enq_ns) * 1e-9;
    mf_image_limits lim = t->limits;
    if (t->budget_ns) lim.deadline_ns = t0 + t->budget_ns;
    mf_image img = {0, 0, NULL};
    t->err[0] = '\0';
    t->status = mf_image_decode_limited(t->data, t->len, &lim, &img, t->err, sizeof t->err);
    const uint64_t t1 = mf_now_ns();
    t->decode_s = (double)(t1 - t0) * 1e-9;
    t->preprocess_rc = 0;
    if (t->status == MF_IMG_OK) {
        t->preprocess_rc = mf_preprocess_image(&img, t->pre, t->out);
        mf_image_free(&img);
    }
    t->preprocess_s = (double)(mf_now_ns() - t1) * 1e-9;
}

/* Complete-to-be t as expired (not decoded): it waited past start_by_ns. */
static void expire(mf_decode_task *t, uint64_t now)
{
    t->expired = 1;
    t->status = MF_IMG_CANCELLED;
    snprintf(t->err, sizeof t->err, "waited %.0f ms for a decode thread",
             (double)(now - t->enq_ns) * 1e-6);
    t->wait_s = (double)(now - t->enq_ns) * 1e-9;
    t->decode_s = t->preprocess_s = 0;
}

/* Queued tasks past their start-by time, out of the heaps into a list (via
 * reap_next); *next the earliest start-by time still ahead (0: none).
 * Caller holds mu. */
static mf_decode_task *take_expired(mf_decoder *d, uint64_t now, uint64_t *next)
{
    mf_decode_task *out = NULL;
    *next = 0;
    for (int k = 0; k < 2; k++) {
        lane *l = &d->lanes[k];
        for (int i = 0; i < l->n;) {
            mf_decode_task *t = l->heap[i];
            if (t->start_by_ns && t->start_by_ns <= now) {
                heap_remove(l, i); /* moves another task to i (or above): scan again from 0 */
                t->reap_next = out;
                out = t;
                i = 0;
                continue;
            }
            if (t->start_by_ns && (!*next || t->start_by_ns < *next)) *next = t->start_by_ns;
            i++;
        }
    }
    return out;
}

/* The reaper: a task past its start-by time gets its answer then, not when
 * a thread frees up (a lane can be busy for seconds with large images). */
static void *reaper_main(void *arg)
{
    mf_decoder *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        uint64_t now = mf_now_ns(), next;
        mf_decode_task *gone = take_expired(d, now, &next);
        if (gone) {
            pthread_mutex_unlock(&d->mu);
            while (gone) {
                mf_decode_task *t = gone;
                gone = t->reap_next;
                expire(t, now);
                t->done(t); /* may free the task */
            }
            pthread_mutex_lock(&d->mu);
            continue;
        }
        d->reap_at = next; /* submit signals only for an earlier one */
        if (!next) {
            pthread_cond_wait(&d->reap_cv, &d->mu);
        } else {
            struct timespec ts = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
            pthread_cond_timedwait(&d->reap_cv, &d->mu, &ts);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void *thread_main(void *arg)
{
    pool_thread *pt = arg;
    mf_decoder *d = pt->d;
    lane *l = &d->lanes[pt->lane];
    if (pt->lane == 1) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LARGE_NICE); /* best effort */
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->stopping && l->n == 0) pthread_cond_wait(&d->cv[pt->lane], &d->mu);
        if (d->stopping) break;
        mf_decode_task *t = l->heap[0];
        heap_remove(l, 0);
        d->running++;
        pthread_mutex_unlock(&d->mu);
        const uint64_t now = mf_now_ns();
        if (t->start_by_ns && now > t->start_by_ns) expire(t, now); /* before the reaper saw it */
        else run_task(t);
        t->done(t); /* may free the task */
        pthread_mutex_lock(&d->mu);
        d->running--;
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

int mf_decoder_new(int threads, mf_decoder **out, char *err, size_t errlen)
{
    *out = NULL;
    if (threads < 1) {
        mf_set_err(err, errlen, "decode pool: threads must be >= 1");
        return -1;
    }
    const int n_large = (threads + 1) / 2, total = threads + n_large;
    mf_decoder *d = calloc(1, sizeof *d);
    if (!d || !(d->threads = calloc((size_t)total, sizeof *d->threads))) {
        free(d);
        mf_set_err(err, errlen, "decode pool: out of memory");
        return -1;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv[0], NULL);
    pthread_cond_init(&d->cv[1], NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* start_by_ns is mf_now_ns() */
    pthread_cond_init(&d->reap_cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&d->reaper, NULL, reaper_main, d);
    if (rc != 0) {
        mf_set_err(err, errlen, "decode pool: cannot start its reaper: %s", strerror(rc));
        mf_decoder_free(d);
        return -1;
    }
    d->reaper_started = 1;
    for (int i = 0; i < total; i++) {
        pool_thread *pt = &d->threads[i];
        pt->d = d;
        pt->lane = i >= threads;
        rc = pthread_create(&pt->tid, NULL, thread_main, pt);
        if (rc != 0) {
            mf_set_err(err, errlen, "decode pool: cannot start a thread: %s", strerror(rc));
            mf_decoder_free(d);
            return -1;
        }
        d->n_threads++;
    }
    *out = d;
    return 0;
}

void mf_decoder_submit(mf_decoder *d, mf_decode_task *t)
{
    t->enq_ns = mf_now_ns();
    const uint64_t cost = t->cost_ns ? t->cost_ns : mf_decode_cost_ns(t->data, t->len, &t->limits, t->pre);
    t->key = t->enq_ns + cost;
    t->large = cost >= LARGE_NS;
    t->status = MF_IMG_OK;
    t->expired = 0;
    pthread_mutex_lock(&d->mu);
    lane *l = &d->lanes[t->large];
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        mf_decode_task **h = realloc(l->heap, (size_t)cap * sizeof *h);
        if (!h) {
            /* no room to queue it: decode it here rather than lose it */
            pthread_mutex_unlock(&d->mu);
            run_task(t);
            t->done(t);
            return;
        }
        l->heap = h;
        l->cap = cap;
    }
    heap_set(l, l->n++, t);
    sift_up(l, l->n - 1);
    pthread_cond_signal(&d->cv[t->large]);
    if (t->start_by_ns && (!d->reap_at || t->start_by_ns < d->reap_at)) {
        d->reap_at = t->start_by_ns; /* one signal for a run of submits with later deadlines */
        pthread_cond_signal(&d->reap_cv);
    }
    pthread_mutex_unlock(&d->mu);
}

int mf_decoder_cancel(mf_decoder *d, mf_decode_task *t)
{
    pthread_mutex_lock(&d->mu);
    lane *l = &d->lanes[t->large ? 1 : 0];
    if (t->slot < 0 || t->slot >= l->n || l->heap[t->slot] != t) {
        pthread_mutex_unlock(&d->mu);
        return 0;
    }
    heap_remove(l, t->slot);
    pthread_mutex_unlock(&d->mu);
    t->status = MF_IMG_CANCELLED;
    snprintf(t->err, sizeof t->err, "cancelled before decoding");
    t->wait_s = (double)(mf_now_ns() - t->enq_ns) * 1e-9;
    t->decode_s = t->preprocess_s = 0;
    t->done(t);
    return 1;
}

int mf_decoder_queued(mf_decoder *d)
{
    pthread_mutex_lock(&d->mu);
    int n = d->lanes[0].n + d->lanes[1].n;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int mf_decoder_running(mf_decoder *d)
{
    pthread_mutex_lock(&d->mu);
    int n = d->running;
    pthread_mutex_unlock(&d->mu);
    return n;
}

void mf_decoder_free(mf_decoder *d)
{
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    d->stopping = 1;
    pthread_cond_broadcast(&d->cv[0]);
    pthread_cond_broadcast(&d->cv[1]);
    pthread_cond_broadcast(&d->reap_cv);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < d->n_threads; i++) pthread_join(d->threads[i].tid, NULL);
    if (d->reaper_started) pthread_join(d->reaper, NULL);
    /* what no thread took: cancelled */
    for (int k = 0; k < 2; k++) {
        lane *l = &d->lanes[k];
        while (l->n > 0) {
            mf_decode_task *t = l->heap[0];
            heap_remove(l, 0);
            t->status = MF_IMG_CANCELLED;
            snprintf(t->err, sizeof t->err, "the server is shutting down");
            t->done(t);
        }
        free(l->heap);
    }
    free(d->threads);
    pthread_cond_destroy(&d->cv[0]);
    pthread_cond_destroy(&d->cv[1]);
    pthread_cond_destroy(&d->reap_cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
