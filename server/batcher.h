/* batcher.h -- the inference queue: dynamic batching of preprocessed images
 * over a pool of worker threads that share one read-only model.
 *
 * A job is one image, already preprocessed to the model's input size
 * (3 x input_h x input_w floats).  Submitters own their jobs: a job and its
 * input and logits buffers must stay valid until its `done` callback has run.
 * `done` runs exactly once per accepted job, on a batcher thread (a worker,
 * the timeout reaper, or the thread calling mf_batcher_drain), never inside
 * mf_batcher_submit and never with a batcher lock held; after it returns the
 * batcher does not touch the job again, so the callback may free it.
 * See batcher.c for the DESIGN notes (threads, cores, batching policy).
 */
#ifndef MF_BATCHER_H
#define MF_BATCHER_H

#include "metrics.h"
#include "mf.h"

#include <stdint.h>

typedef enum mf_batcher_status {
    MF_BATCHER_OK = 0,
    MF_BATCHER_QUEUE_FULL, /* submit: not enough room for all the jobs (-> 503) */
    MF_BATCHER_DRAINING,   /* submit after drain began; job: cancelled by drain (-> 503) */
    MF_BATCHER_TIMEOUT,    /* job: not started within request_timeout_ms (-> 504) */
    MF_BATCHER_ENGINE,     /* job: mf_forward failed (-> 500) */
    MF_BATCHER_NOMEM,      /* new: allocation failed */
    MF_BATCHER_THREAD,     /* new: could not start a thread */
    MF_BATCHER_ARG,        /* bad argument */
} mf_batcher_status;

const char *mf_batcher_status_str(mf_batcher_status s);

typedef struct mf_batcher mf_batcher; /* opaque */
typedef struct mf_job mf_job;

/* Called once when the job is finished (see status). */
typedef void (*mf_job_done_fn)(mf_job *job, void *user);

struct mf_job {
    /* set by the submitter */
    const float *input;        /* [3, input_h, input_w], normalized */
    float *logits;             /* [num_classes], written before done when status is OK */
    mf_job_done_fn done;       /* completion callback */
    void *user;                /* passed to done */
    /* set by the batcher before done */
    mf_batcher_status status;  /* OK, TIMEOUT, DRAINING or ENGINE */
    int batch_size;            /* images in the forward pass that ran it (0 if none) */
    double queue_s;            /* seconds from submit to the start of its batch (or to done) */
    double inference_s;        /* seconds of its batch's forward pass */
    /* private to the batcher */
    uint64_t enqueued_ns;      /* CLOCK_MONOTONIC at submit */
    mf_job *next;              /* queue link */
};

typedef struct mf_batcher_config {
    int workers;            /* inference threads (>= 1) */
    int engine_threads;     /* threads per worker's workspace (>= 1) */
    int max_batch;          /* most jobs per forward pass (>= 1) */
    int max_queue;          /* most jobs waiting (>= 1) */
    long max_delay_us;      /* longest wait for a batch to fill after its first job */
    long request_timeout_ms; /* queued longer -> MF_BATCHER_TIMEOUT; 0 = never */
} mf_batcher_config;

/* Start the workers (each with its workspace reserved for max_batch images)
 * on model m, which must outlive the batcher.  metrics may be NULL. */
mf_batcher_status mf_batcher_new(const mf_model *m, const mf_batcher_config *cfg,
                                 mf_metrics *metrics, mf_batcher **out, char *err, size_t errlen);

/* Queue n jobs, all or none: MF_BATCHER_OK, MF_BATCHER_QUEUE_FULL or
 * MF_BATCHER_DRAINING.  On failure no callback will run for these jobs. */
mf_batcher_status mf_batcher_submit(mf_batcher *b, mf_job *const *jobs, int n);

/* A request that will submit images soon has begun (+1: its body is being
 * received and decoded) or is past that point (-1, after its submit or its
 * failure).  The batch leader waits for a fuller batch only while some are
 * on their way. */
void mf_batcher_expect(mf_batcher *b, int delta);

/* Stop accepting jobs, let workers finish the queued and running ones for
 * up to timeout_ms, then cancel what is still queued (MF_BATCHER_DRAINING)
 * and join every thread.  Returns the number of jobs cancelled.  Idempotent. */
int mf_batcher_drain(mf_batcher *b, long timeout_ms);

/* Drain with no grace time if still running, then free. NULL is fine. */
void mf_batcher_free(mf_batcher *b);

/* Jobs waiting, and jobs in forward passes right now. */
int mf_batcher_queue_depth(mf_batcher *b);
int mf_batcher_running(mf_batcher *b);

#endif
