/* batcher.h -- the inference scheduler: one pool of worker threads serving
 * any number of queues (one per model version), each with its own dynamic
 * batching settings.
 *
 * A job is one image, already preprocessed to its model's input size
 * (3 x input_h x input_w floats).  Submitters own their jobs: a job and its
 * input and logits buffers must stay valid until its `done` callback has run.
 * `done` runs exactly once per accepted job, on a batcher thread (a worker,
 * the timeout reaper, the thread calling mf_batcher_drain) or on the thread
 * calling mf_batcher_cancel, never inside mf_batcher_submit and never with a
 * batcher lock held; after it returns the batcher does not touch the job
 * again, so the callback may free it.  See batcher.c for the DESIGN notes
 * (threads, cores, batching, fairness between queues, priorities).
 */
#ifndef MF_BATCHER_H
#define MF_BATCHER_H

#include "metrics.h"
#include "mf.h"

#include <stdint.h>

/* Priority levels within a queue: 0 is served first.  The Open Inference
 * Protocol's parameters.priority 1 maps to 0, its default (0 or 2) to 1 and
 * anything larger to 2. */
#define MF_PRIORITIES 3
#define MF_PRIORITY_DEFAULT 1

typedef enum mf_batcher_status {
    MF_BATCHER_OK = 0,
    MF_BATCHER_QUEUE_FULL, /* submit: not enough room for all the jobs (-> 503) */
    MF_BATCHER_DRAINING,   /* submit after drain began; job: cancelled by drain (-> 503) */
    MF_BATCHER_TIMEOUT,    /* job: not started before its deadline (-> 504) */
    MF_BATCHER_ENGINE,     /* job: mf_forward failed (-> 500) */
    MF_BATCHER_NOMEM,      /* new: allocation failed */
    MF_BATCHER_THREAD,     /* new: could not start a thread */
    MF_BATCHER_ARG,        /* bad argument */
    MF_BATCHER_CANCELLED,  /* job: taken back by mf_batcher_cancel before it ran */
} mf_batcher_status;

const char *mf_batcher_status_str(mf_batcher_status s);

typedef struct mf_batcher mf_batcher; /* opaque: the worker pool */
typedef struct mf_queue mf_queue;     /* opaque: one model version's queue */
typedef struct mf_job mf_job;

/* Called once when the job is finished (see status). */
typedef void (*mf_job_done_fn)(mf_job *job, void *user);

struct mf_job {
    /* set by the submitter */
    const float *input;        /* [3, input_h, input_w], normalized */
    float *logits;             /* [num_classes], written before done when status is OK */
    mf_job_done_fn done;       /* completion callback */
    void *user;                /* passed to done */
    int priority;              /* 0 .. MF_PRIORITIES-1, 0 first (0 if never set: set it) */
    uint64_t deadline_ns;      /* mf_now_ns() by which it must start, or 0: the queue's timeout */
    int h, w;                  /* input size if not the model's (0, 0: the model's); such a job
                                  runs in a forward pass of its own */
    /* set by the batcher before done */
    mf_batcher_status status;  /* OK, TIMEOUT, DRAINING, ENGINE or CANCELLED */
    int batch_size;            /* images in the forward pass that ran it (0 if none) */
    double queue_s;            /* seconds from submit to the start of its batch (or to done) */
    double inference_s;        /* seconds of its batch's forward pass */
    /* private to the batcher */
    mf_queue *q;               /* its queue while it is queued, else NULL */
    uint64_t enqueued_ns;      /* mf_now_ns() at submit */
    uint64_t due_ns;           /* when it expires, 0 = never */
    mf_job *prev, *next;       /* queue links */
};

typedef struct mf_batcher_config {
    int workers;        /* inference threads (>= 1) */
    int engine_threads; /* threads per worker's workspace (>= 1) */
} mf_batcher_config;

/* The largest max_batch a queue may have (the config's bound). */
#define MF_MAX_BATCH_LIMIT 1024

typedef struct mf_queue_config {
    int max_batch;           /* most jobs per forward pass (1 .. MF_MAX_BATCH_LIMIT) */
    int max_queue;           /* most jobs waiting (>= 1) */
    long max_delay_us;       /* longest wait for a batch to fill after its first job */
    long request_timeout_ms; /* queued longer -> MF_BATCHER_TIMEOUT; 0 = never */
    mf_series *series;       /* where its metrics go (may be NULL) */
} mf_queue_config;

/* Start the workers and the timeout reaper. metrics may be NULL. */
mf_batcher_status mf_batcher_new(const mf_batcher_config *cfg, mf_metrics *metrics, mf_batcher **out, char *err,
                                 size_t errlen);

/* A queue for model m (which must outlive the queue): one engine workspace
 * per worker, reserved for max_batch images now, so a model that cannot be
 * run fails here, at load, not at its first request. */
mf_batcher_status mf_queue_new(mf_batcher *b, const mf_model *m, const mf_queue_config *cfg, mf_queue **out,
                               char *err, size_t errlen);

/* Remove and free a queue that has no job queued: waits for a batch of it
 * still running, then frees its workspaces.  NULL is fine. */
void mf_queue_free(mf_queue *q);

/* Bytes of the queue's workspaces and batch buffers. */
size_t mf_queue_bytes(const mf_queue *q);

/* The queue's request_timeout_ms in ns (0: none; NULL: 0). */
uint64_t mf_queue_timeout_ns(const mf_queue *q);

/* Queue n jobs on q, all or none: MF_BATCHER_OK, MF_BATCHER_QUEUE_FULL or
 * MF_BATCHER_DRAINING.  On failure no callback will run for these jobs. */
mf_batcher_status mf_batcher_submit(mf_queue *q, mf_job *const *jobs, int n);

/* Take a job back before it runs: returns 1 if it was still queued (its done
 * has then run, here, with MF_BATCHER_CANCELLED), 0 if it is running or done. */
int mf_batcher_cancel(mf_job *job);

/* A request that will submit images to q soon has begun (+1: its body is
 * being received and decoded) or is past that point (-1, after its submit or
 * its failure).  A batch leader waits for a fuller batch only while some are
 * on their way. */
void mf_batcher_expect(mf_queue *q, int delta);

/* Stop accepting jobs, let workers finish the queued and running ones for
 * up to timeout_ms, then cancel what is still queued (MF_BATCHER_DRAINING)
 * and join every thread.  Returns the number of jobs cancelled.  Idempotent. */
int mf_batcher_drain(mf_batcher *b, long timeout_ms);

/* Drain with no grace time if still running, then free (queues first). */
void mf_batcher_free(mf_batcher *b);

/* Jobs waiting (in all queues, or in q), and jobs in forward passes now. */
int mf_batcher_queue_depth(mf_batcher *b);
int mf_queue_depth(mf_queue *q);
int mf_batcher_running(mf_batcher *b);

#endif
