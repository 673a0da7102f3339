/* batcher.c -- bounded queue + inference workers with dynamic batching.
 *
 * DESIGN
 *
 * Threads and cores.  On a machine with N online cores the defaults are:
 *   - `workers` = N inference threads (this file).  Each owns one engine
 *     workspace created with `engine_threads` = 1, so a worker is exactly one
 *     busy core while it runs a batch and sleeps on a condition variable
 *     otherwise.  The engine calls BLAS for its fully connected layers from
 *     the worker's own thread; OpenBLAS's private thread pool is switched off
 *     here (openblas_set_num_threads(1); tests/run.sh also exports
 *     OPENBLAS_NUM_THREADS=1) so BLAS never starts a second set of N threads
 *     that would fight the workers for the same cores.  Parallelism comes from
 *     several workers running batches side by side, not from threads inside
 *     one forward pass.  engine_threads > 1 trades throughput for latency with
 *     fewer workers (e.g. workers = 1, engine_threads = N).
 *   - `http_threads` = N HTTP threads (http.c, predict.c), each an epoll loop.  They own the
 *     sockets and do everything before and after the queue: reading the body,
 *     decoding, resizing and normalizing the image, and writing the JSON
 *     answer.  That work is a few percent of a forward pass, so they share the
 *     cores with the workers rather than getting cores of their own; the
 *     kernel's scheduler interleaves them.
 *   - one timeout reaper (below), asleep until the oldest job's deadline, and
 *     the main thread, asleep on the signal self-pipe until SIGTERM/SIGINT;
 *     neither computes anything.
 *
 * Why suspend/resume.  A request waiting for its batch holds no thread: its
 * HTTP thread queues the job, leaves the connection (watched only for the client going away)
 * and returns to serve other sockets.  The worker that ran the batch writes
 * the logits into the job's own buffer and calls the job's `done` callback,
 * which hands the request back to its HTTP thread; that thread then runs the request's answer
 * again on an HTTP thread, which writes the answer.  Thousands of waiting clients
 * cost memory (their connection and tensors), never threads.
 *
 * Every response stays with its own request.  A job is embedded in its
 * request's context and carries the request as `user`; workers copy inputs
 * into the batch tensor by position and copy row i of the batch's logits back
 * into job i's own buffer, so a result can only travel back along the pointer
 * it came with.  `done` runs exactly once per accepted job (result, timeout,
 * or drain), which is also what guarantees every suspended connection is
 * resumed exactly once.
 *
 * Batching policy.  Idle workers take turns as the leader: the leader waits
 * until max_batch jobs are queued or until the oldest job has waited
 * max_delay_us, then takes up to max_batch jobs and hands the leader role on.
 * It waits only while more images are on their way (the HTTP side counts
 * requests between their headers and their submit, mf_batcher_expect): a
 * lone request is run at once instead of waiting for company that is not
 * coming, and under load, when uploads overlap, batches fill.
 * A job that already waited longer than max_delay_us (all workers were busy)
 * goes at once, so queueing delay is never added twice.  Because inputs are
 * preprocessed to the model's input size before they are queued, any jobs
 * batch together.
 *
 * Overload and timeouts.  The queue holds at most max_queue jobs; submit
 * refuses (QUEUE_FULL, 503 upstream) instead of growing.  Jobs are FIFO with
 * one timeout, so deadlines are ordered: the reaper sleeps until the head's
 * deadline and completes expired jobs with TIMEOUT (504) without running them.
 *
 * Drain.  mf_batcher_drain() stops accepting, lets the workers empty the queue
 * for up to its timeout (the leader stops waiting for fuller batches), then
 * completes what is left with DRAINING and joins every thread.  A forward pass
 * in progress is always allowed to finish.  The process shuts down in this
 * order (main.c): HTTP stops accepting, in-flight requests finish, batcher
 * drain, HTTP stop -- so no request still waits for a job when the HTTP threads
 * stops, and no callback can touch a freed connection.
 */
#include "batcher.h"
#include "mf_util.h"

#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct worker {
    mf_batcher *b;      /* owner */
    pthread_t tid;      /* thread */
    mf_workspace *ws;   /* engine scratch, this worker's only */
    float *input;       /* [max_batch, 3, H, W] batch tensor */
    float *logits;      /* [max_batch, classes] */
    mf_job **jobs;      /* [max_batch] jobs of the current batch */
} worker;

struct mf_batcher {
    const mf_model *model;   /* shared, read-only */
    mf_metrics *metrics;     /* may be NULL */
    mf_batcher_config cfg;   /* sizes and delays */
    int in_h, in_w;          /* model input size */
    int classes;             /* logits per image */
    size_t image_floats;     /* 3 * in_h * in_w */
    uint64_t delay_ns;       /* max_delay_us in ns */
    uint64_t timeout_ns;     /* request_timeout_ms in ns, 0 = none */

    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t work_cv;  /* idle workers: jobs queued and leader role free */
    pthread_cond_t fill_cv;  /* the leader: batch full or draining */
    pthread_cond_t reap_cv;  /* the reaper: new head job or stopping */
    pthread_cond_t idle_cv;  /* drain: queue empty and nothing running */
    mf_job *head, *tail;     /* FIFO of waiting jobs */
    int depth;               /* jobs in the FIFO */
    int incoming;            /* requests being uploaded/decoded that will submit soon */
    int running;             /* jobs in forward passes */
    int leading;             /* a worker holds the leader role */
    int accepting;           /* submit allowed */
    int stopping;            /* threads must exit */
    int drained;             /* mf_batcher_drain has run */

    worker *workers;         /* [cfg.workers] */
    int n_started;           /* worker threads started */
    pthread_t reaper;        /* timeout reaper */
    int reaper_started;      /* reaper thread exists */
};

void mf_batcher_expect(mf_batcher *b, int delta)
{
    pthread_mutex_lock(&b->mu);
    b->incoming += delta;
    if (b->incoming < 0) b->incoming = 0;
    if (delta < 0) pthread_cond_broadcast(&b->fill_cv); /* the leader may stop waiting */
    pthread_mutex_unlock(&b->mu);
}

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
    }
    return "unknown";
}

#define now_ns mf_now_ns

static struct timespec to_timespec(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    return ts;
}

static void set_depth_gauge(mf_batcher *b)
{
    mf_metrics_gauge_set(b->metrics, MF_GAUGE_QUEUE_DEPTH, b->depth);
}

/* Pop up to n jobs from the head into out.  Caller holds mu. */
static int pop_jobs(mf_batcher *b, mf_job **out, int n)
{
    int k = 0;
    while (k < n && b->head) {
        mf_job *j = b->head;
        b->head = j->next;
        j->next = NULL;
        out[k++] = j;
    }
    if (!b->head) b->tail = NULL;
    b->depth -= k;
    set_depth_gauge(b);
    return k;
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
        j->next = NULL;
        j->status = st;
        j->batch_size = 0;
        j->queue_s = (double)(now - j->enqueued_ns) * 1e-9;
        j->inference_s = 0;
        j->done(j, j->user);
    }
}

static void run_batch(worker *w, int n)
{
    mf_batcher *b = w->b;
    uint64_t t0 = now_ns();
    for (int i = 0; i < n; i++) {
        /* [n, 3, H, W]: image i is the i-th slice */
        memcpy(w->input + (size_t)i * b->image_floats, w->jobs[i]->input,
               b->image_floats * sizeof(float));
        w->jobs[i]->queue_s = (double)(t0 - w->jobs[i]->enqueued_ns) * 1e-9;
        mf_metrics_observe(b->metrics, MF_HIST_QUEUE, w->jobs[i]->queue_s);
    }
    mf_status st = mf_forward(b->model, w->ws, w->input, n, b->in_h, b->in_w, w->logits);
    double inf_s = (double)(now_ns() - t0) * 1e-9;
    mf_metrics_observe(b->metrics, MF_HIST_INFERENCE, inf_s);
    mf_metrics_observe(b->metrics, MF_HIST_BATCH_SIZE, n);
    for (int i = 0; i < n; i++) {
        mf_job *j = w->jobs[i];
        w->jobs[i] = NULL;
        j->batch_size = n;
        j->inference_s = inf_s;
        j->status = st == MF_OK ? MF_BATCHER_OK : MF_BATCHER_ENGINE;
        if (st == MF_OK)
            memcpy(j->logits, w->logits + (size_t)i * b->classes, (size_t)b->classes * sizeof(float));
        j->done(j, j->user);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    mf_batcher *b = w->b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stopping && (b->depth == 0 || b->leading))
            pthread_cond_wait(&b->work_cv, &b->mu);
        if (b->stopping) break;
        b->leading = 1;
        /* lead: wait for a full batch or for the oldest job's delay to pass,
         * but only while more images are on their way: with nothing being
         * uploaded or decoded, waiting would only add latency */
        while (b->depth > 0 && b->depth < b->cfg.max_batch && b->incoming > 0 && b->accepting && !b->stopping) {
            uint64_t deadline = b->head->enqueued_ns + b->delay_ns;
            if (now_ns() >= deadline) break;
            struct timespec ts = to_timespec(deadline);
            pthread_cond_timedwait(&b->fill_cv, &b->mu, &ts);
        }
        int n = pop_jobs(b, w->jobs, b->cfg.max_batch);
        b->leading = 0;
        /* jobs already past their deadline are not started, whether or not
         * the reaper got to them first (it may not have been scheduled) */
        mf_job *expired = NULL, **tail = &expired;
        if (b->timeout_ns) {
            uint64_t now = now_ns();
            int k = 0;
            for (int i = 0; i < n; i++) {
                mf_job *j = w->jobs[i];
                if (j->enqueued_ns + b->timeout_ns <= now) {
                    *tail = j;
                    tail = &j->next;
                } else {
                    w->jobs[k++] = j;
                }
            }
            n = k;
        }
        b->running += n;
        if (b->depth > 0) pthread_cond_signal(&b->work_cv); /* next leader */
        pthread_mutex_unlock(&b->mu);
        if (expired) finish_unrun(expired, MF_BATCHER_TIMEOUT);
        if (n > 0) run_batch(w, n);
        pthread_mutex_lock(&b->mu);
        b->running -= n;
        wake_if_idle(b);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void *reaper_main(void *arg)
{
    mf_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping) {
        if (!b->head) {
            pthread_cond_wait(&b->reap_cv, &b->mu);
            continue;
        }
        uint64_t now = now_ns();
        uint64_t deadline = b->head->enqueued_ns + b->timeout_ns;
        if (now < deadline) {
            struct timespec ts = to_timespec(deadline);
            pthread_cond_timedwait(&b->reap_cv, &b->mu, &ts);
            continue;
        }
        /* FIFO with one timeout: the expired jobs are a prefix of the queue,
         * starting with the head (just checked) */
        mf_job *expired = b->head, *last = b->head;
        int k = 1;
        while (last->next && last->next->enqueued_ns + b->timeout_ns <= now) {
            last = last->next;
            k++;
        }
        b->head = last->next;
        if (!b->head) b->tail = NULL;
        last->next = NULL;
        b->depth -= k;
        set_depth_gauge(b);
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

static void set_err(char *err, size_t errlen, const char *msg, const char *detail)
{
    mf_set_err(err, errlen, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
}

/* Stop and join started threads, free workers and sync objects. */
static void destroy(mf_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    b->accepting = 0;
    pthread_cond_broadcast(&b->work_cv);
    pthread_cond_broadcast(&b->fill_cv);
    pthread_cond_broadcast(&b->reap_cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->n_started; i++) pthread_join(b->workers[i].tid, NULL);
    b->n_started = 0;
    if (b->reaper_started) pthread_join(b->reaper, NULL);
    b->reaper_started = 0;
    if (b->workers) {
        for (int i = 0; i < b->cfg.workers; i++) {
            mf_workspace_free(b->workers[i].ws);
            free(b->workers[i].input);
            free(b->workers[i].logits);
            free(b->workers[i].jobs);
        }
    }
    free(b->workers);
    pthread_cond_destroy(&b->work_cv);
    pthread_cond_destroy(&b->fill_cv);
    pthread_cond_destroy(&b->reap_cv);
    pthread_cond_destroy(&b->idle_cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

mf_batcher_status mf_batcher_new(const mf_model *m, const mf_batcher_config *cfg,
                                 mf_metrics *metrics, mf_batcher **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!m || !cfg || cfg->workers < 1 || cfg->engine_threads < 1 || cfg->max_batch < 1 ||
        cfg->max_queue < 1 || cfg->max_delay_us < 0 || cfg->request_timeout_ms < 0) {
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
    b->model = m;
    b->metrics = metrics;
    b->cfg = *cfg;
    const mf_preprocess *pre = mf_model_preprocess(m);
    b->in_h = pre->input_h;
    b->in_w = pre->input_w;
    b->classes = mf_model_num_classes(m);
    b->image_floats = (size_t)3 * b->in_h * b->in_w;
    b->delay_ns = (uint64_t)cfg->max_delay_us * 1000u;
    b->timeout_ns = (uint64_t)cfg->request_timeout_ms * 1000000u;
    b->accepting = 1;
    pthread_mutex_init(&b->mu, NULL);
    if (cond_init_monotonic(&b->work_cv) || cond_init_monotonic(&b->fill_cv) ||
        cond_init_monotonic(&b->reap_cv) || cond_init_monotonic(&b->idle_cv)) {
        set_err(err, errlen, "batcher: cannot create condition variables", NULL);
        goto err;
    }
    b->workers = calloc((size_t)cfg->workers, sizeof *b->workers);
    if (!b->workers) {
        set_err(err, errlen, "batcher: out of memory", NULL);
        goto err;
    }
    size_t batch_floats = (size_t)cfg->max_batch * b->image_floats;
    for (int i = 0; i < cfg->workers; i++) {
        worker *w = &b->workers[i];
        w->b = b;
        mf_status es = mf_workspace_new(m, cfg->engine_threads, &w->ws);
        if (es == MF_OK) es = mf_workspace_reserve(w->ws, cfg->max_batch, b->in_h, b->in_w);
        if (es != MF_OK) {
            set_err(err, errlen, "batcher: engine workspace", mf_status_str(es));
            st = es == MF_ERR_THREAD ? MF_BATCHER_THREAD : MF_BATCHER_NOMEM;
            goto err;
        }
        w->input = aligned_alloc(64, (batch_floats * sizeof(float) + 63) & ~(size_t)63);
        w->logits = malloc((size_t)cfg->max_batch * b->classes * sizeof(float));
        w->jobs = calloc((size_t)cfg->max_batch, sizeof *w->jobs);
        if (!w->input || !w->logits || !w->jobs) {
            set_err(err, errlen, "batcher: out of memory for batch buffers", NULL);
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
    if (b->timeout_ns) {
        if (pthread_create(&b->reaper, NULL, reaper_main, b) != 0) {
            set_err(err, errlen, "batcher: cannot start reaper thread", strerror(errno));
            st = MF_BATCHER_THREAD;
            goto err;
        }
        b->reaper_started = 1;
    }
    *out = b;
    return MF_BATCHER_OK;
err:
    destroy(b);
    return st;
}

mf_batcher_status mf_batcher_submit(mf_batcher *b, mf_job *const *jobs, int n)
{
    if (!b || n < 0 || (n > 0 && !jobs)) return MF_BATCHER_ARG;
    for (int i = 0; i < n; i++)
        if (!jobs[i] || !jobs[i]->input || !jobs[i]->logits || !jobs[i]->done) return MF_BATCHER_ARG;
    pthread_mutex_lock(&b->mu);
    if (!b->accepting) {
        pthread_mutex_unlock(&b->mu);
        return MF_BATCHER_DRAINING;
    }
    if (n > b->cfg.max_queue - b->depth) {
        pthread_mutex_unlock(&b->mu);
        return MF_BATCHER_QUEUE_FULL;
    }
    uint64_t now = now_ns();
    int was_empty = b->head == NULL;
    for (int i = 0; i < n; i++) {
        mf_job *j = jobs[i];
        j->status = MF_BATCHER_OK;
        j->batch_size = 0;
        j->queue_s = j->inference_s = 0;
        j->enqueued_ns = now;
        j->next = NULL;
        if (b->tail)
            b->tail->next = j;
        else
            b->head = j;
        b->tail = j;
    }
    b->depth += n;
    set_depth_gauge(b);
    if (b->leading) {
        if (b->depth >= b->cfg.max_batch) pthread_cond_signal(&b->fill_cv);
    } else {
        pthread_cond_signal(&b->work_cv);
    }
    if (was_empty && n > 0) pthread_cond_signal(&b->reap_cv);
    pthread_mutex_unlock(&b->mu);
    return MF_BATCHER_OK;
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
    pthread_cond_broadcast(&b->fill_cv); /* the leader stops waiting for a fuller batch */
    uint64_t deadline = now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    while ((b->depth > 0 || b->running > 0) && now_ns() < deadline) {
        struct timespec ts = to_timespec(deadline);
        pthread_cond_timedwait(&b->idle_cv, &b->mu, &ts);
    }
    mf_job *left = b->head;
    int cancelled = b->depth;
    b->head = b->tail = NULL;
    b->depth = 0;
    set_depth_gauge(b);
    b->stopping = 1;
    b->drained = 1;
    pthread_cond_broadcast(&b->work_cv);
    pthread_cond_broadcast(&b->fill_cv);
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

int mf_batcher_running(mf_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int r = b->running;
    pthread_mutex_unlock(&b->mu);
    return r;
}
