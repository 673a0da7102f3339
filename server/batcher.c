/* batcher.c -- the worker pool and its queues, with dynamic batching.
 *
 * DESIGN
 *
 * Threads and cores.  On a machine with N online cores the defaults are:
 *   - `workers` = N inference threads (this file), shared by every model.
 *     Each runs one batch at a time with the workspace it owns for that
 *     batch's queue (one workspace per worker per model version, created with
 *     `engine_threads` = 1), so a worker is exactly one busy core while it
 *     runs and sleeps on a condition variable otherwise.  The engine calls
 *     BLAS from the worker's own thread; OpenBLAS's private thread pool is
 *     switched off here (openblas_set_num_threads(1); tests/run.sh also
 *     exports OPENBLAS_NUM_THREADS=1) so BLAS never starts a second set of N
 *     threads that would fight the workers for the same cores.  Parallelism
 *     comes from several workers running batches side by side.
 *     engine_threads > 1 trades throughput for latency with fewer workers.
 *   - `http_threads` = N HTTP threads (http.c, predict.c, oip.c), each an
 *     epoll loop.  They own the sockets: reading heads and bodies, parsing,
 *     decoding the small images themselves (those whose header promises
 *     less than 0.2 ms of work: a pool hand-off would cost more), writing
 *     the answers.  They never block on a large image.
 *   - `decode_threads` = N decode threads (decoder.c): every larger upload
 *     is decoded, resized and normalized there, cheapest expected finish
 *     first, while its connection waits without holding an HTTP thread.  A
 *     12 MP photo is 60-120 ms of work; on the decode pool it delays other
 *     uploads queued beside it by at most about its own cost, and other
 *     connections' I/O not at all.
 *   The HTTP and decode threads share the cores with the workers (the
 *   kernel interleaves them): decoding is a share of the forward passes' CPU
 *   for most models, and the inference workers are what the machine is for.
 *   - one timeout reaper (below), asleep until the earliest job deadline; the
 *     repository's loader thread, which loads model files in the background;
 *     the main thread, asleep on the signal self-pipe.  None of them computes
 *     anything while serving.
 *
 * Waiting holds no thread.  A request's HTTP thread queues its jobs and goes
 * back to its other sockets; the worker that ran the batch writes the logits
 * into each job's own buffer and calls the job's `done`, which hands the
 * request back to its HTTP thread (http.c).  Thousands of waiting clients cost
 * memory, never threads.
 *
 * Every response stays with its own request.  A job is embedded in its
 * request and carries it as `user`; workers copy inputs into the batch tensor
 * by position and row i of the logits back into job i's own buffer, so a
 * result can only travel back along the pointer it came with.  `done` runs
 * exactly once per accepted job (result, timeout, cancel or drain).
 *
 * Queues and fairness.  Each model version has its queue (mf_queue) with its
 * own max_batch, max_delay_us, max_queue and timeout; the pool serves them in
 * turn: a worker looking for work takes the next queue after the one served
 * last (round robin over the queues that have jobs and no leader).  So a
 * flood on one model delays a request to another by at most one batch of the
 * flooded model per busy worker, never by its backlog.
 *
 * Priorities.  A queue holds MF_PRIORITIES FIFO lists; a batch is filled from
 * the highest priority first, so a flood of low-priority work never delays
 * high-priority work by more than the batch in progress.  Low priority can
 * wait behind high priority indefinitely; its deadline (request_timeout_ms,
 * or the request's own shorter one) bounds that wait with a 504.
 *
 * Batching policy.  A worker that takes a queue leads it: it waits until
 * max_batch jobs are queued or the oldest has waited max_delay_us, then takes
 * up to max_batch jobs.  It waits only while more images are on their way to
 * that queue (the HTTP side counts requests between their headers and their
 * submit, mf_batcher_expect): a lone request runs at once, and under load,
 * when uploads overlap, batches fill.  A job that waited longer than
 * max_delay_us already goes at once, so queueing delay is never added twice.
 *
 * Overload, deadlines, cancellation.  A queue holds at most max_queue jobs;
 * submit refuses (QUEUE_FULL, 503 upstream) instead of growing.  Each job has
 * a deadline (its own, or enqueue + request_timeout_ms); the reaper scans the
 * queues when the earliest deadline passes and completes expired jobs with
 * TIMEOUT (504) without running them, and workers never start an expired job.
 * mf_batcher_cancel takes a queued job back (its client went away).
 *
 * Drain.  mf_batcher_drain() stops accepting, lets the workers empty the
 * queues for up to its timeout, then completes what is left with DRAINING and
 * joins every thread.  A forward pass in progress is always allowed to
 * finish.  The process shuts down in this order (main.c): HTTP stops
 * accepting, in-flight requests finish, batcher drain, HTTP stop -- so no
 * request still waits for a job when the HTTP threads stop.
 *
 * Invariants (asserted in debug builds): a job is on a queue's list iff its
 * q is set; a queue's depth is the length of its lists; running counts the
 * jobs taken and not yet done.  A queue is freed only when it has no job
 * queued, and after its running batches have finished.
 */
#include "batcher.h"
#include "mf_util.h"

#include <assert.h>
#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define now_ns mf_now_ns

/* What one worker needs to run batches of one queue. */
typedef struct slot {
    mf_workspace *ws;   /* engine scratch */
    mf_workspace *odd;  /* for jobs of another input size, made when the first comes */
    float *input;       /* [max_batch, 3, H, W] batch tensor */
    float *logits;      /* [max_batch, classes] */
} slot;

struct mf_queue {
    mf_batcher *b;            /* owner */
    mf_queue *prev, *next;    /* in b->queues */
    const mf_model *model;    /* shared, read-only */
    mf_queue_config cfg;      /* sizes and delays */
    int in_h, in_w, classes;  /* model input size, logits per image */
    size_t image_floats;      /* 3 * in_h * in_w */
    uint64_t delay_ns;        /* max_delay_us */
    uint64_t timeout_ns;      /* request_timeout_ms, 0 = none */
    mf_job *head[MF_PRIORITIES], *tail[MF_PRIORITIES]; /* FIFO per priority (b->mu) */
    int depth;                /* jobs queued (b->mu) */
    int incoming;             /* requests that will submit soon (b->mu) */
    int running;              /* jobs in forward passes now (b->mu) */
    int leading;              /* a worker leads it now (b->mu) */
    int closing;              /* mf_queue_free has begun (b->mu) */
    pthread_cond_t fill_cv;   /* its leader: batch full, nothing more coming, or draining */
    slot *slots;              /* [workers] */
    size_t bytes;             /* of the slots */
};

typedef struct worker {
    mf_batcher *b;      /* owner */
    int idx;            /* its slot in every queue */
    pthread_t tid;      /* thread */
    mf_job **jobs;      /* [MF_MAX_BATCH_LIMIT] jobs of the current batch: fixed, since the
                           worker uses it outside b->mu while a new queue may be added */
} worker;

struct mf_batcher {
    mf_metrics *metrics;     /* may be NULL */
    mf_batcher_config cfg;   /* the pool */
    pthread_mutex_t mu;      /* guards everything below and every queue's fields marked b->mu */
    pthread_cond_t work_cv;  /* idle workers: a queue has jobs and no leader */
    pthread_cond_t reap_cv;  /* the reaper: an earlier deadline, or stopping */
    pthread_cond_t idle_cv;  /* drain, queue free: jobs ran */
    mf_queue *queues;        /* every queue */
    mf_queue *last;          /* the queue served last (round robin) */
    int depth;               /* jobs queued in all queues */
    int running;             /* jobs in forward passes */
    uint64_t reap_at;        /* when the reaper wakes next, 0 = no deadline */
    int accepting;           /* submit allowed */
    int stopping;            /* threads must exit */
    int drained;             /* mf_batcher_drain has run */
    worker *workers;         /* [cfg.workers] */
    int n_started;           /* worker threads started */
    pthread_t reaper;        /* timeout reaper */
    int reaper_started;      /* reaper thread exists */
};

const char *mf_batcher_status_str(mf_batcher_status s)
{
    switch (s) {
    case MF_BATCHER_OK: return "ok";
    case MF_BATCHER_QUEUE_FULL: return "queue full";
    case MF_BATCHER_DRAINING: return "shutting down";
    case MF_BATCHER_TIMEOUT: return "timed out in queue";
    case MF_BATCHER_ENGINE: return "inference failed";
    case MF_BATCHER_NOMEM: return "out of memory";
    case MF_BATCHER_THREAD: return "cannot start thread";
    case MF_BATCHER_ARG: return "bad argument";
    case MF_BATCHER_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static struct timespec to_timespec(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    return ts;
}

static void set_err(char *err, size_t errlen, const char *msg, const char *detail)
{
    mf_set_err(err, errlen, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
}

/* ---- queue lists (caller holds b->mu) ------------------------------------ */

static void list_push(mf_queue *q, mf_job *j)
{
    const int p = j->priority;
    j->q = q;
    j->next = NULL;
    j->prev = q->tail[p];
    if (q->tail[p]) q->tail[p]->next = j;
    else q->head[p] = j;
    q->tail[p] = j;
    q->depth++;
    q->b->depth++;
}

static void list_unlink(mf_job *j)
{
    mf_queue *q = j->q;
    const int p = j->priority;
    if (j->prev) j->prev->next = j->next;
    else q->head[p] = j->next;
    if (j->next) j->next->prev = j->prev;
    else q->tail[p] = j->prev;
    j->prev = j->next = NULL;
    j->q = NULL;
    q->depth--;
    q->b->depth--;
}

/* The oldest job's enqueue time (any priority). */
static uint64_t oldest(const mf_queue *q)
{
    uint64_t t = 0;
    for (int p = 0; p < MF_PRIORITIES; p++)
        if (q->head[p] && (!t || q->head[p]->enqueued_ns < t)) t = q->head[p]->enqueued_ns;
    return t;
}

/* Up to n jobs, highest priority first, oldest first within one. */
static int pop_jobs(mf_queue *q, mf_job **out, int n)
{
    int k = 0;
    for (int p = 0; p < MF_PRIORITIES && k < n; p++)
        while (k < n && q->head[p]) {
            mf_job *j = q->head[p];
            list_unlink(j);
            out[k++] = j;
        }
    return k;
}

/* The next queue with work and no leader, after the one served last. */
static mf_queue *pick(mf_batcher *b)
{
    if (!b->queues) return NULL;
    mf_queue *start = b->last && b->last->next ? b->last->next : b->queues, *q = start;
    do {
        if (q->depth > 0 && !q->leading) return q;
        q = q->next ? q->next : b->queues;
    } while (q != start);
    return NULL;
}

static void wake_if_idle(mf_batcher *b)
{
    if (b->depth == 0 && b->running == 0) pthread_cond_broadcast(&b->idle_cv);
}

/* Complete a detached list of jobs that will not run. */
static void finish_unrun(mf_job *list, mf_batcher_status st)
{
    uint64_t now = now_ns();
    while (list) {
        mf_job *j = list;
        list = j->next; /* read before done(), which may free the job */
        j->next = j->prev = NULL;
        j->status = st;
        j->batch_size = 0;
        j->queue_s = (double)(now - j->enqueued_ns) * 1e-9;
        j->inference_s = 0;
        j->done(j, j->user);
    }
}

/* A job of its own input size, alone (its tensor as it came). */
static void run_odd(mf_queue *q, worker *w, mf_job *j, uint64_t t0)
{
    slot *sl = &q->slots[w->idx];
    mf_status st = MF_OK;
    if (!sl->odd) st = mf_workspace_new(q->model, q->b->cfg.engine_threads, &sl->odd);
    uint64_t t1 = now_ns();
    j->queue_s = (double)(t1 - j->enqueued_ns) * 1e-9;
    mf_series_observe(q->cfg.series, MF_HIST_QUEUE, j->queue_s);
    if (st == MF_OK) st = mf_forward(q->model, sl->odd, j->input, 1, j->h, j->w, j->logits);
    j->inference_s = (double)(now_ns() - t1) * 1e-9;
    mf_series_observe(q->cfg.series, MF_HIST_INFERENCE, j->inference_s);
    mf_series_observe(q->cfg.series, MF_HIST_BATCH_SIZE, 1);
    j->batch_size = 1;
    j->status = st == MF_OK ? MF_BATCHER_OK : st == MF_ERR_NOMEM ? MF_BATCHER_NOMEM : MF_BATCHER_ENGINE;
    (void)t0;
    j->done(j, j->user);
}

static void run_batch(mf_queue *q, worker *w, mf_job **jobs, int n)
{
    slot *sl = &q->slots[w->idx];
    uint64_t t0 = now_ns();
    /* jobs of another input size go one by one, after the batch */
    int k = 0, odd = 0;
    mf_job *odds[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) {
        if (jobs[i]->h || jobs[i]->w) odds[odd++] = jobs[i];
        else jobs[k++] = jobs[i];
    }
    n = k;
    for (int i = 0; i < n; i++) {
        /* [n, 3, H, W]: image i is the i-th slice */
        memcpy(sl->input + (size_t)i * q->image_floats, jobs[i]->input, q->image_floats * sizeof(float));
        jobs[i]->queue_s = (double)(t0 - jobs[i]->enqueued_ns) * 1e-9;
        mf_series_observe(q->cfg.series, MF_HIST_QUEUE, jobs[i]->queue_s);
    }
    if (n > 0) {
        mf_status st = mf_forward(q->model, sl->ws, sl->input, n, q->in_h, q->in_w, sl->logits);
        double inf_s = (double)(now_ns() - t0) * 1e-9;
        mf_series_observe(q->cfg.series, MF_HIST_INFERENCE, inf_s);
        mf_series_observe(q->cfg.series, MF_HIST_BATCH_SIZE, n);
        for (int i = 0; i < n; i++) {
            mf_job *j = jobs[i];
            jobs[i] = NULL;
            j->batch_size = n;
            j->inference_s = inf_s;
            j->status = st == MF_OK ? MF_BATCHER_OK : MF_BATCHER_ENGINE;
            if (st == MF_OK)
                memcpy(j->logits, sl->logits + (size_t)i * q->classes, (size_t)q->classes * sizeof(float));
            j->done(j, j->user);
        }
    }
    for (int i = 0; i < odd; i++) run_odd(q, w, odds[i], t0);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    mf_batcher *b = w->b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        mf_queue *q = NULL;
        while (!b->stopping && !(q = pick(b))) pthread_cond_wait(&b->work_cv, &b->mu);
        if (b->stopping) break;
        q->leading = 1;
        /* lead: wait for a full batch or for the oldest job's delay to pass,
         * but only while more images are on their way to this queue */
        while (q->depth > 0 && q->depth < q->cfg.max_batch && q->incoming > 0 && b->accepting && !b->stopping &&
               !q->closing) {
            uint64_t deadline = oldest(q) + q->delay_ns;
            if (now_ns() >= deadline) break;
            struct timespec ts = to_timespec(deadline);
            pthread_cond_timedwait(&q->fill_cv, &b->mu, &ts);
        }
        int n = pop_jobs(q, w->jobs, q->cfg.max_batch);
        q->leading = 0;
        b->last = q;
        /* jobs already past their deadline are not started, whether or not
         * the reaper got to them first (it may not have been scheduled) */
        mf_job *expired = NULL, **tail = &expired;
        uint64_t now = now_ns();
        int k = 0;
        for (int i = 0; i < n; i++) {
            mf_job *j = w->jobs[i];
            if (j->due_ns && j->due_ns <= now) {
                *tail = j;
                tail = &j->next;
            } else {
                w->jobs[k++] = j;
            }
        }
        n = k;
        q->running += n;
        b->running += n;
        if (n) mf_series_depth(q->cfg.series, -(long)n);
        for (mf_job *e = expired; e; e = e->next) mf_series_depth(q->cfg.series, -1);
        if (pick(b)) pthread_cond_signal(&b->work_cv); /* the next worker takes the next queue */
        pthread_mutex_unlock(&b->mu);
        if (expired) finish_unrun(expired, MF_BATCHER_TIMEOUT);
        if (n > 0) run_batch(q, w, w->jobs, n);
        pthread_mutex_lock(&b->mu);
        /* with nothing run, q was held by nothing once leading was cleared:
         * mf_queue_free may have freed it meanwhile, so it is not touched */
        if (n > 0) {
            q->running -= n;
            b->running -= n;
        }
        pthread_cond_broadcast(&b->idle_cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Expired jobs of every queue, detached into a list; *next the earliest
 * deadline still ahead (0: none).  Caller holds b->mu. */
static mf_job *take_expired(mf_batcher *b, uint64_t now, uint64_t *next)
{
    mf_job *out = NULL, **tail = &out;
    *next = 0;
    for (mf_queue *q = b->queues; q; q = q->next)
        for (int p = 0; p < MF_PRIORITIES; p++)
            for (mf_job *j = q->head[p], *nx; j; j = nx) {
                nx = j->next;
                if (!j->due_ns) continue;
                if (j->due_ns <= now) {
                    list_unlink(j);
                    mf_series_depth(q->cfg.series, -1);
                    *tail = j;
                    tail = &j->next;
                } else if (!*next || j->due_ns < *next) {
                    *next = j->due_ns;
                }
            }
    return out;
}

static void *reaper_main(void *arg)
{
    mf_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping) {
        if (!b->reap_at) {
            pthread_cond_wait(&b->reap_cv, &b->mu);
            continue;
        }
        uint64_t now = now_ns();
        if (now < b->reap_at) {
            struct timespec ts = to_timespec(b->reap_at);
            pthread_cond_timedwait(&b->reap_cv, &b->mu, &ts);
            continue;
        }
        uint64_t next;
        mf_job *expired = take_expired(b, now, &next);
        b->reap_at = next;
        wake_if_idle(b);
        pthread_mutex_unlock(&b->mu);
        finish_unrun(expired, MF_BATCHER_TIMEOUT);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static int cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0) return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int r = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return r;
}

/* Stop and join started threads, free the queues, workers and sync objects. */
static void destroy(mf_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    b->accepting = 0;
    pthread_cond_broadcast(&b->work_cv);
    for (mf_queue *q = b->queues; q; q = q->next) pthread_cond_broadcast(&q->fill_cv);
    pthread_cond_broadcast(&b->reap_cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->n_started; i++) pthread_join(b->workers[i].tid, NULL);
    b->n_started = 0;
    if (b->reaper_started) pthread_join(b->reaper, NULL);
    b->reaper_started = 0;
    while (b->queues) mf_queue_free(b->queues);
    if (b->workers)
        for (int i = 0; i < b->cfg.workers; i++) free(b->workers[i].jobs);
    free(b->workers);
    pthread_cond_destroy(&b->work_cv);
    pthread_cond_destroy(&b->reap_cv);
    pthread_cond_destroy(&b->idle_cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

mf_batcher_status mf_batcher_new(const mf_batcher_config *cfg, mf_metrics *metrics, mf_batcher **out, char *err,
                                 size_t errlen)
{
    *out = NULL;
    if (!cfg || cfg->workers < 1 || cfg->engine_threads < 1) {
        set_err(err, errlen, "batcher: bad configuration", NULL);
        return MF_BATCHER_ARG;
    }
    /* see DESIGN: one BLAS thread per caller, never a second pool */
    openblas_set_num_threads(1);
    mf_batcher *b = calloc(1, sizeof *b);
    if (!b) {
        set_err(err, errlen, "batcher: out of memory", NULL);
        return MF_BATCHER_NOMEM;
    }
    mf_batcher_status st = MF_BATCHER_NOMEM;
    b->metrics = metrics;
    b->cfg = *cfg;
    b->accepting = 1;
    pthread_mutex_init(&b->mu, NULL);
    if (cond_init_monotonic(&b->work_cv) || cond_init_monotonic(&b->reap_cv) || cond_init_monotonic(&b->idle_cv)) {
        set_err(err, errlen, "batcher: cannot create condition variables", NULL);
        goto err;
    }
    b->workers = calloc((size_t)cfg->workers, sizeof *b->workers);
    if (!b->workers) {
        set_err(err, errlen, "batcher: out of memory", NULL);
        goto err;
    }
    for (int i = 0; i < cfg->workers; i++) {
        b->workers[i].b = b;
        b->workers[i].idx = i;
        b->workers[i].jobs = malloc(MF_MAX_BATCH_LIMIT * sizeof *b->workers[i].jobs); /* 8 KiB */
        if (!b->workers[i].jobs) {
            set_err(err, errlen, "batcher: out of memory", NULL);
            goto err;
        }
    }
    for (int i = 0; i < cfg->workers; i++) {
        if (pthread_create(&b->workers[i].tid, NULL, worker_main, &b->workers[i]) != 0) {
            set_err(err, errlen, "batcher: cannot start worker thread", strerror(errno));
            st = MF_BATCHER_THREAD;
            goto err;
        }
        b->n_started++;
    }
    if (pthread_create(&b->reaper, NULL, reaper_main, b) != 0) {
        set_err(err, errlen, "batcher: cannot start reaper thread", strerror(errno));
        st = MF_BATCHER_THREAD;
        goto err;
    }
    b->reaper_started = 1;
    *out = b;
    return MF_BATCHER_OK;
err:
    destroy(b);
    return st;
}

static void slots_free(mf_queue *q)
{
    if (!q->slots) return;
    for (int i = 0; i < q->b->cfg.workers; i++) {
        mf_workspace_free(q->slots[i].ws);
        mf_workspace_free(q->slots[i].odd);
        free(q->slots[i].input);
        free(q->slots[i].logits);
    }
    free(q->slots);
    q->slots = NULL;
}

mf_batcher_status mf_queue_new(mf_batcher *b, const mf_model *m, const mf_queue_config *cfg, mf_queue **out,
                               char *err, size_t errlen)
{
    *out = NULL;
    if (!b || !m || !cfg || cfg->max_batch < 1 || cfg->max_batch > MF_MAX_BATCH_LIMIT || cfg->max_queue < 1 ||
        cfg->max_delay_us < 0 ||
        cfg->request_timeout_ms < 0) {
        set_err(err, errlen, "queue: bad configuration", NULL);
        return MF_BATCHER_ARG;
    }
    mf_queue *q = calloc(1, sizeof *q);
    if (!q) {
        set_err(err, errlen, "queue: out of memory", NULL);
        return MF_BATCHER_NOMEM;
    }
    q->b = b;
    q->model = m;
    q->cfg = *cfg;
    const mf_preprocess *pre = mf_model_preprocess(m);
    q->in_h = pre->input_h;
    q->in_w = pre->input_w;
    q->classes = mf_model_num_classes(m);
    q->image_floats = (size_t)3 * q->in_h * q->in_w;
    q->delay_ns = (uint64_t)cfg->max_delay_us * 1000u;
    q->timeout_ns = (uint64_t)cfg->request_timeout_ms * 1000000u;
    if (cond_init_monotonic(&q->fill_cv)) {
        free(q);
        set_err(err, errlen, "queue: cannot create a condition variable", NULL);
        return MF_BATCHER_NOMEM;
    }
    mf_batcher_status st = MF_BATCHER_NOMEM;
    q->slots = calloc((size_t)b->cfg.workers, sizeof *q->slots);
    if (!q->slots) goto err;
    size_t batch_floats = (size_t)cfg->max_batch * q->image_floats;
    for (int i = 0; i < b->cfg.workers; i++) {
        slot *sl = &q->slots[i];
        mf_status es = mf_workspace_new(m, b->cfg.engine_threads, &sl->ws);
        if (es == MF_OK) es = mf_workspace_reserve(sl->ws, cfg->max_batch, q->in_h, q->in_w);
        if (es != MF_OK) {
            set_err(err, errlen, "queue: engine workspace", mf_status_str(es));
            st = es == MF_ERR_THREAD ? MF_BATCHER_THREAD : MF_BATCHER_NOMEM;
            goto err;
        }
        sl->input = aligned_alloc(64, (batch_floats * sizeof(float) + 63) & ~(size_t)63);
        sl->logits = malloc((size_t)cfg->max_batch * q->classes * sizeof(float));
        if (!sl->input || !sl->logits) {
            set_err(err, errlen, "queue: out of memory for batch buffers", NULL);
            goto err;
        }
        q->bytes += mf_workspace_bytes(sl->ws) + batch_floats * sizeof(float) +
                    (size_t)cfg->max_batch * q->classes * sizeof(float);
    }
    pthread_mutex_lock(&b->mu);
    q->next = b->queues;
    if (b->queues) b->queues->prev = q;
    b->queues = q;
    pthread_mutex_unlock(&b->mu);
    *out = q;
    return MF_BATCHER_OK;
err:
    slots_free(q);
    pthread_cond_destroy(&q->fill_cv);
    free(q);
    return st;
}

void mf_queue_free(mf_queue *q)
{
    if (!q) return;
    mf_batcher *b = q->b;
    pthread_mutex_lock(&b->mu);
    assert(q->depth == 0);
    /* a leader may still sleep on fill_cv; wake it and wait until no worker
     * holds the queue, as leader or running a batch of it */
    q->closing = 1;
    pthread_cond_broadcast(&q->fill_cv);
    while (q->running > 0 || q->leading) pthread_cond_wait(&b->idle_cv, &b->mu);
    if (q->prev) q->prev->next = q->next;
    else b->queues = q->next;
    if (q->next) q->next->prev = q->prev;
    if (b->last == q) b->last = NULL;
    pthread_mutex_unlock(&b->mu);
    slots_free(q);
    pthread_cond_destroy(&q->fill_cv);
    free(q);
}

size_t mf_queue_bytes(const mf_queue *q) { return q ? q->bytes : 0; }

uint64_t mf_queue_timeout_ns(const mf_queue *q) { return q ? q->timeout_ns : 0; }

void mf_batcher_expect(mf_queue *q, int delta)
{
    if (!q) return;
    mf_batcher *b = q->b;
    pthread_mutex_lock(&b->mu);
    q->incoming += delta;
    if (q->incoming < 0) q->incoming = 0;
    if (delta < 0) pthread_cond_broadcast(&q->fill_cv); /* the leader may stop waiting */
    pthread_mutex_unlock(&b->mu);
}

mf_batcher_status mf_batcher_submit(mf_queue *q, mf_job *const *jobs, int n)
{
    if (!q || n < 0 || (n > 0 && !jobs)) return MF_BATCHER_ARG;
    for (int i = 0; i < n; i++)
        if (!jobs[i] || !jobs[i]->input || !jobs[i]->logits || !jobs[i]->done || jobs[i]->priority < 0 ||
            jobs[i]->priority >= MF_PRIORITIES)
            return MF_BATCHER_ARG;
    mf_batcher *b = q->b;
    pthread_mutex_lock(&b->mu);
    if (!b->accepting) {
        pthread_mutex_unlock(&b->mu);
        return MF_BATCHER_DRAINING;
    }
    if (n > q->cfg.max_queue - q->depth) {
        pthread_mutex_unlock(&b->mu);
        return MF_BATCHER_QUEUE_FULL;
    }
    uint64_t now = now_ns(), earliest = 0;
    for (int i = 0; i < n; i++) {
        mf_job *j = jobs[i];
        j->status = MF_BATCHER_OK;
        j->batch_size = 0;
        j->queue_s = j->inference_s = 0;
        j->enqueued_ns = now;
        j->due_ns = q->timeout_ns ? now + q->timeout_ns : 0;
        if (j->deadline_ns && (!j->due_ns || j->deadline_ns < j->due_ns)) j->due_ns = j->deadline_ns;
        if (j->due_ns && (!earliest || j->due_ns < earliest)) earliest = j->due_ns;
        list_push(q, j);
    }
    mf_series_depth(q->cfg.series, n);
    if (q->leading) {
        if (q->depth >= q->cfg.max_batch) pthread_cond_signal(&q->fill_cv);
    } else {
        pthread_cond_signal(&b->work_cv);
    }
    if (earliest && (!b->reap_at || earliest < b->reap_at)) {
        b->reap_at = earliest;
        pthread_cond_signal(&b->reap_cv);
    }
    pthread_mutex_unlock(&b->mu);
    return MF_BATCHER_OK;
}

int mf_batcher_cancel(mf_job *job)
{
    mf_queue *q;
    if (!job || !(q = job->q)) return 0; /* racy read is fine: re-checked under the lock */
    mf_batcher *b = q->b;
    pthread_mutex_lock(&b->mu);
    if (job->q != q) {
        pthread_mutex_unlock(&b->mu);
        return 0;
    }
    list_unlink(job);
    mf_series_depth(q->cfg.series, -1);
    pthread_cond_broadcast(&q->fill_cv); /* its leader re-counts */
    wake_if_idle(b);
    pthread_mutex_unlock(&b->mu);
    finish_unrun(job, MF_BATCHER_CANCELLED);
    return 1;
}

int mf_batcher_drain(mf_batcher *b, long timeout_ms)
{
    if (!b) return 0;
    pthread_mutex_lock(&b->mu);
    if (b->drained) {
        pthread_mutex_unlock(&b->mu);
        return 0;
    }
    b->accepting = 0;
    for (mf_queue *q = b->queues; q; q = q->next) pthread_cond_broadcast(&q->fill_cv); /* leaders stop waiting */
    uint64_t deadline = now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    while ((b->depth > 0 || b->running > 0) && now_ns() < deadline) {
        struct timespec ts = to_timespec(deadline);
        pthread_cond_timedwait(&b->idle_cv, &b->mu, &ts);
    }
    mf_job *left = NULL, **tail = &left;
    int cancelled = 0;
    for (mf_queue *q = b->queues; q; q = q->next) {
        mf_job *taken[64];
        int k;
        while ((k = pop_jobs(q, taken, 64)) > 0) {
            mf_series_depth(q->cfg.series, -(long)k);
            for (int i = 0; i < k; i++) {
                *tail = taken[i];
                tail = &taken[i]->next;
                cancelled++;
            }
        }
    }
    *tail = NULL;
    b->stopping = 1;
    b->drained = 1;
    pthread_cond_broadcast(&b->work_cv);
    pthread_cond_broadcast(&b->reap_cv);
    pthread_mutex_unlock(&b->mu);
    finish_unrun(left, MF_BATCHER_DRAINING);
    for (int i = 0; i < b->n_started; i++) pthread_join(b->workers[i].tid, NULL);
    b->n_started = 0;
    if (b->reaper_started) pthread_join(b->reaper, NULL);
    b->reaper_started = 0;
    return cancelled;
}

void mf_batcher_free(mf_batcher *b)
{
    if (!b) return;
    mf_batcher_drain(b, 0);
    destroy(b);
}

int mf_batcher_queue_depth(mf_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}

int mf_queue_depth(mf_queue *q)
{
    pthread_mutex_lock(&q->b->mu);
    int d = q->depth;
    pthread_mutex_unlock(&q->b->mu);
    return d;
}

int mf_batcher_running(mf_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int r = b->running;
    pthread_mutex_unlock(&b->mu);
    return r;
}
