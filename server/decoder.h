/* decoder.h -- the decode pool: uploads are decoded and preprocessed on
 * decode_threads threads of their own, so a large photo never holds up the
 * HTTP thread that received it (and every other connection that thread
 * serves).
 *
 * A task is one image: its encoded bytes, the decode limits, the model's
 * preprocessing and the tensor to fill.  Its cost is estimated from the
 * image header (pixels to decode, scaled when the decode is).  Tasks wait in
 * two lanes, small and large (4 ms expected and more), each served by its
 * own threads (the large lane's at a lower CPU priority) and ordered by
 * priority, then expected finish (submit time + cost): small uploads never
 * wait for a thread behind a run of 12 MP ones, a high-priority request's
 * images never behind a flood of default ones, and within a lane and a
 * priority an image is passed only by images whose expected finish comes
 * before its own, so it waits at most about its own cost longer than it
 * would first-come-first-served.
 *
 * A task still queued at its start_by_ns (a request's deadline) is not
 * decoded: the pool's reaper thread takes it out then and completes it as
 * expired (done runs on the reaper), so its request is answered at its
 * deadline, not when a thread frees up.
 *
 * Ownership: the submitter owns the task and everything it points to until
 * `done` has run, exactly once, on a pool thread or the reaper (or on the
 * thread calling mf_decoder_cancel / mf_decoder_free), never inside
 * mf_decoder_submit.
 */
#ifndef MF_DECODER_H
#define MF_DECODER_H

#include "image.h"
#include "preprocess.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mf_decoder mf_decoder;
typedef struct mf_decode_task mf_decode_task;
typedef void (*mf_decode_done_fn)(mf_decode_task *t);

struct mf_decode_task {
    /* set by the submitter */
    const uint8_t *data;      /* encoded image */
    size_t len;               /* its bytes */
    mf_image_limits limits;   /* decode limits (limits.cancel: the submitter's flag, may be NULL) */
    uint64_t budget_ns;       /* decode time allowed from the start of the decode, 0 = none */
    const mf_preprocess *pre; /* the model's preprocessing */
    float *out;               /* [3][pre->input_h][pre->input_w], written when status is OK */
    mf_decode_done_fn done;   /* completion */
    void *user;               /* for done */
    int priority;             /* 0 first (as the batcher's); higher ones wait while it has tasks */
    uint64_t cost_ns;         /* mf_decode_cost_ns of it if the submitter has it, else 0 (the pool asks) */
    uint64_t start_by_ns;     /* mf_now_ns() by which a thread must take it, 0 = no limit: taken later,
                                 it is not decoded (expired) */
    /* set before done */
    mf_img_status status;     /* decode status; MF_IMG_CANCELLED if cancelled or expired before it started */
    int expired;              /* it waited past start_by_ns (status MF_IMG_CANCELLED) */
    int preprocess_rc;        /* mf_preprocess_image's result when status is OK */
    char err[256];            /* the decoder's message */
    double wait_s;            /* queued before a thread took it */
    double decode_s;          /* decoding */
    double preprocess_s;      /* resizing, cropping, normalizing */
    /* private */
    uint64_t key;             /* expected finish: enqueue time + estimated cost (ns) */
    uint64_t enq_ns;          /* mf_now_ns() at submit */
    int slot;                 /* index in its lane's heap, -1 when not queued */
    int large;                /* in the large lane */
    mf_decode_task *reap_next;/* in the reaper's list of expired tasks */
};

/* Expected decode + preprocess cost of an image, in ns, from its header
 * (cheap: mf_image_probe), for the given limits (min_side scales JPEG; NULL
 * for none) and preprocessing (NULL: the decode alone). */
uint64_t mf_decode_cost_ns(const uint8_t *data, size_t len, const mf_image_limits *lim, const mf_preprocess *pre);

/* Start `threads` threads for small images and (threads + 1) / 2 for large
 * ones (>= 1).  0, or -1 with the reason. */
int mf_decoder_new(int threads, mf_decoder **out, char *err, size_t errlen);

/* Queue a task (never refuses: the HTTP side bounds what is in flight). */
void mf_decoder_submit(mf_decoder *d, mf_decode_task *t);

/* Take a task back if no thread has started it: its done runs here with
 * MF_IMG_CANCELLED and 1 is returned; 0 if it is running or done. */
int mf_decoder_cancel(mf_decoder *d, mf_decode_task *t);

/* Tasks waiting, and being decoded now. */
int mf_decoder_queued(mf_decoder *d);
int mf_decoder_running(mf_decoder *d);

/* Finish the running tasks, cancel the queued ones (done with
 * MF_IMG_CANCELLED), join the threads, free.  NULL is fine. */
void mf_decoder_free(mf_decoder *d);

#endif
