/* predict.c -- a request's images as jobs, and /v1 predict; see predict.h. */
#include "predict.h"

#include "decoder.h"
#include "image.h"
#include "mf_util.h"
#include "multipart.h"
#include "preprocess.h"
#include "reply.h"
#include "repository.h"
#include "request.h"
#include "topk.h"
#include "validate.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IMAGES 32 /* parts of one multipart request */

/* A request's images are decoded (and preprocessed) on the HTTP thread that
 * received them while their expected cost together stays under this (a pool
 * hand-off costs more than they do); the rest go to the decode pool
 * (decoder.h).  So one request holds its HTTP thread, and every other
 * connection that thread serves, for about this long at most: 16 thumbnails
 * for a 224x224 model (2-3 ms of preprocessing) had made a high-priority
 * request on the same thread wait for them. */
#define INLINE_DECODE_NS 200000

typedef struct image_slot {
    mf_request *req;     /* owner */
    mf_job job;          /* the image's place in the batcher */
    mf_decode_task task; /* its decode, when it went to the pool */
    int pooled;          /* decoded by the pool (task holds the outcome) */
    int submitted;       /* its job went to the batcher */
    atomic_int dropped;  /* counted in mobileformer_cancelled_total (once) */
    float *input;        /* [3, H, W], preprocessed */
    float *logits;       /* [classes]; probabilities after softmax (v1) */
    double decode_s;     /* decode time */
    double preprocess_s; /* preprocess time */
    double decode_wait_s;/* waiting for a pool thread */
} image_slot;

struct mf_predict {
    int top_k;                 /* predictions per image (v1) */
    char content_type[256];    /* multipart Content-Type (longer ones are refused) */
    int multipart;             /* body is multipart/form-data */
    int n_images;              /* images in this request */
    int h, w;                  /* their input size */
    image_slot *slots;         /* [n_images] */
    float *tensors;            /* inputs and logits of all slots */
    atomic_int cancel;         /* the client went away: decodes stop at their next row */
    uint64_t inline_ns;        /* expected cost of the images decoded on the HTTP thread */
    int (*next)(mf_request *r);/* after the pool's decodes: what comes next */
};

void mf_predict_free(mf_request *r)
{
    mf_predict *p = r->predict;
    if (!p) return;
    free(p->slots);
    free(p->tensors);
    free(p);
    r->predict = NULL;
}

static mf_predict *state(mf_request *r)
{
    if (!r->predict) r->predict = calloc(1, sizeof *r->predict);
    return r->predict;
}

/* ---- the images --------------------------------------------------------- */

static void images_cancel(mf_request *r);

int mf_images_alloc(mf_request *r, int n, int h, int w)
{
    mf_predict *p = state(r);
    if (!p) {
        mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the request");
        return -1;
    }
    const mf_version *v = r->mv;
    p->h = h ? h : v->pre->input_h;
    p->w = w ? w : v->pre->input_w;
    size_t in_floats = (size_t)3 * p->h * p->w, per_image = in_floats + (size_t)v->classes;
    p->n_images = n;
    p->slots = calloc((size_t)n, sizeof *p->slots);
    p->tensors = malloc((size_t)n * per_image * sizeof(float));
    if (!p->slots || !p->tensors) {
        mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the image tensors");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        image_slot *sl = &p->slots[i];
        sl->req = r;
        sl->input = p->tensors + (size_t)i * per_image;
        sl->logits = sl->input + in_floats;
        sl->task.slot = -1;
    }
    r->cancel = images_cancel;
    return 0;
}

float *mf_images_input(mf_request *r, int i) { return r->predict->slots[i].input; }
float *mf_images_logits(mf_request *r, int i) { return r->predict->slots[i].logits; }
int mf_images_count(mf_request *r) { return r->predict ? r->predict->n_images : 0; }

/* The decode limits of the server's settings (no deadline yet: the decode
 * budget starts when the decode does). */
static mf_image_limits image_limits(mf_request *r)
{
    const mf_config *cfg = r->srv->cfg;
    mf_predict *p = r->predict;
    return (mf_image_limits){.max_pixels = (size_t)cfg->max_pixels,
                             .max_side = cfg->max_image_side,
                             .cancel = &p->cancel,
                             .min_side = cfg->jpeg_scaled_decode && r->mv->pre->resize > 0 ? r->mv->pre->resize : 0};
}

/* "image i: " before an error of image i of several, "" for a lone one. */
static const char *image_which(const mf_predict *p, int i, char *buf, size_t n)
{
    buf[0] = '\0';
    if (p->n_images > 1) snprintf(buf, n, "image %d: ", i + 1);
    return buf;
}

/* 504: image i did not start in time (for a decode thread: detail says
 * how long it waited; in the inference queue: detail ""). */
static void reply_not_started(mf_request *r, int i, const char *detail)
{
    char which[32];
    mf_reply_error(r, MF_E_TIMEOUT, "%snot started within its time (request_timeout_ms of '%s', or the request's own "
                                    "timeout)%s%s",
                   image_which(r->predict, i, which, sizeof which), r->mv->name, detail[0] ? ": " : "", detail);
}

/* The outcome of image i's decode and preprocess: 0, or -1 with the error
 * answered. */
static int image_outcome(mf_request *r, int i, mf_img_status st, int prep_rc, const char *err)
{
    mf_predict *p = r->predict;
    image_slot *sl = &p->slots[i];
    char which[32];
    image_which(p, i, which, sizeof which);
    if (st != MF_IMG_OK) {
        mf_reply_error(r, mf_err_of_image(st), "%s%s", which, err[0] ? err : mf_img_status_code(st));
        return -1;
    }
    if (prep_rc == MF_PREPROCESS_NOMEM) {
        mf_reply_error(r, MF_E_OUT_OF_MEMORY, "%scannot allocate memory to preprocess the image", which);
        return -1;
    }
    if (prep_rc != 0) {
        mf_reply_error(r, MF_E_PREPROCESS_FAILED, "%scould not preprocess the image", which);
        return -1;
    }
    mf_series_observe(r->mv->series, MF_HIST_DECODE, sl->decode_s);
    mf_series_observe(r->mv->series, MF_HIST_PREPROCESS, sl->preprocess_s);
    if (sl->pooled) mf_series_observe(r->mv->series, MF_HIST_DECODE_WAIT, sl->decode_wait_s);
    return 0;
}

/* When a pooled decode must have started: its model's request_timeout_ms
 * from now (as the inference queue counts it from the submit), or the
 * request's own deadline if that is earlier (it only shortens, as in the
 * batcher); 0: no limit. */
static uint64_t decode_start_by(mf_request *r, uint64_t deadline_ns)
{
    const uint64_t t = mf_queue_timeout_ns(r->mv->queue);
    const uint64_t own = t ? mf_now_ns() + t : 0;
    return deadline_ns && (!own || deadline_ns < own) ? deadline_ns : own;
}

/* A pool thread or the pool's reaper: image decoded, cancelled or expired.
 * The last one hands the request back to its HTTP thread. */
static void on_decoded(mf_decode_task *t)
{
    image_slot *sl = t->user;
    if (t->expired) atomic_store(&sl->dropped, 1); /* a timeout, not a client cancel: not counted as one */
    else if (t->status == MF_IMG_CANCELLED && !atomic_exchange(&sl->dropped, 1))
        mf_metrics_count(sl->req->srv->metrics, MF_COUNTER_CANCEL_DECODE, 1);
    mf_request_job_done(sl->req);
}

int mf_images_decode(mf_request *r, int i, const uint8_t *data, size_t len, int priority, uint64_t deadline_ns)
{
    struct mf_http *s = r->srv;
    mf_predict *p = r->predict;
    image_slot *sl = &p->slots[i];
    mf_image_limits lim = image_limits(r);
    const uint64_t budget = s->cfg->decode_timeout_ms ? (uint64_t)s->cfg->decode_timeout_ms * 1000000u : 0;
    const uint64_t cost = mf_decode_cost_ns(data, len, &lim, r->mv->pre);
    if (s->decoder && p->inline_ns + cost > INLINE_DECODE_NS) {
        sl->pooled = 1;
        sl->task = (mf_decode_task){.data = data,
                                    .len = len,
                                    .limits = lim,
                                    .budget_ns = budget,
                                    .pre = r->mv->pre,
                                    .out = sl->input,
                                    .done = on_decoded,
                                    .user = sl,
                                    .priority = priority,
                                    .cost_ns = cost,
                                    .start_by_ns = decode_start_by(r, deadline_ns),
                                    .slot = -1};
        mf_request_jobs_add(r, 1);
        mf_decoder_submit(s->decoder, &sl->task);
        return 0;
    }
    p->inline_ns += cost;
    /* small: here and now (the outcome is looked at with the pool's, in
     * order, once every image is done: an error must not end the request
     * while a pool thread still works for it) */
    mf_decode_task *t = &sl->task;
    mf_image img = {0, 0, NULL};
    uint64_t t0 = mf_now_ns();
    if (budget) lim.deadline_ns = t0 + budget;
    t->err[0] = '\0';
    t->status = mf_image_decode_limited(data, len, &lim, &img, t->err, sizeof t->err);
    uint64_t t1 = mf_now_ns();
    t->preprocess_rc = t->status == MF_IMG_OK ? mf_preprocess_image(&img, r->mv->pre, sl->input) : 0;
    mf_image_free(&img);
    t->decode_s = (double)(t1 - t0) * 1e-9;
    t->preprocess_s = (double)(mf_now_ns() - t1) * 1e-9;
    t->wait_s = 0;
    return 0;
}

/* Every decode is done: their outcomes in order (the first failure is the
 * answer), then the next step. */
static int after_decode(mf_request *r)
{
    mf_predict *p = r->predict;
    for (int i = 0; i < p->n_images; i++) {
        image_slot *sl = &p->slots[i];
        sl->decode_s = sl->task.decode_s;
        sl->preprocess_s = sl->task.preprocess_s;
        sl->decode_wait_s = sl->task.wait_s;
        if (sl->pooled && sl->task.expired) {
            reply_not_started(r, i, sl->task.err);
            return 0;
        }
        if (image_outcome(r, i, sl->task.status, sl->task.preprocess_rc, sl->task.err) != 0) return 0;
    }
    return p->next(r);
}

int mf_images_decoded(mf_request *r, int (*next)(mf_request *r))
{
    r->predict->next = next;
    return mf_request_wait(r, after_decode);
}

/* The client went away (conn.c, a closed connection with work pending):
 * decodes not started and jobs still queued are taken back; a decode in
 * progress stops at its next row.  Runs on the request's HTTP thread. */
static void images_cancel(mf_request *r)
{
    mf_predict *p = r->predict;
    if (!p) return;
    atomic_store(&p->cancel, 1);
    for (int i = 0; i < p->n_images; i++) {
        image_slot *sl = &p->slots[i];
        if (sl->submitted) {
            if (mf_batcher_cancel(&sl->job) && !atomic_exchange(&sl->dropped, 1))
                mf_metrics_count(r->srv->metrics, MF_COUNTER_CANCEL_QUEUE, 1);
            continue;
        }
        /* before the batcher: queued for decoding (taken back now), being
         * decoded (stops at its next row) or decoded: it goes no further */
        if (sl->pooled) mf_decoder_cancel(r->srv->decoder, &sl->task);
        if (!atomic_exchange(&sl->dropped, 1)) mf_metrics_count(r->srv->metrics, MF_COUNTER_CANCEL_DECODE, 1);
    }
}

/* Worker thread: one image finished.  The last one hands the request back. */
static void on_job_done(mf_job *job, void *user)
{
    (void)job;
    image_slot *slot = user;
    mf_request_job_done(slot->req);
}

int mf_images_submit(mf_request *r, int priority, uint64_t deadline_ns, int (*answer)(mf_request *r))
{
    mf_predict *p = r->predict;
    const int n = p->n_images;
    mf_job *jobs[MAX_IMAGES], **list = n <= MAX_IMAGES ? jobs : malloc((size_t)n * sizeof *list);
    if (!list) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the jobs");
    for (int i = 0; i < n; i++) {
        image_slot *sl = &p->slots[i];
        sl->job = (mf_job){.input = sl->input,
                           .logits = sl->logits,
                           .done = on_job_done,
                           .user = sl,
                           .priority = priority,
                           .deadline_ns = deadline_ns,
                           .h = p->h == r->mv->pre->input_h ? 0 : p->h,
                           .w = p->w == r->mv->pre->input_w ? 0 : p->w};
        sl->submitted = 1;
        list[i] = &sl->job;
    }
    /* the pixels are in the tensors now; the upload can go */
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    mf_request_jobs_begin(r, n);
    mf_batcher_status bs = mf_batcher_submit(r->mv->queue, list, n);
    if (list != jobs) free(list);
    mf_request_unexpect(r);
    if (bs != MF_BATCHER_OK) {
        mf_request_jobs_cancel(r);
        if (bs == MF_BATCHER_QUEUE_FULL)
            return mf_reply_error(r, MF_E_QUEUE_FULL, "the inference queue of '%s' is full; retry later", r->mv->name);
        if (bs == MF_BATCHER_DRAINING) return mf_reply_error(r, MF_E_SHUTTING_DOWN, "the server is shutting down");
        return mf_reply_error(r, MF_E_INTERNAL, "could not queue the image: %s", mf_batcher_status_str(bs));
    }
    return mf_request_wait(r, answer);
}

int mf_images_check(mf_request *r)
{
    mf_predict *p = r->predict;
    for (int i = 0; i < p->n_images; i++) {
        mf_job *j = &p->slots[i].job;
        if (j->batch_size > r->batch_size) r->batch_size = j->batch_size;
        switch (j->status) {
        case MF_BATCHER_OK: break;
        case MF_BATCHER_TIMEOUT:
            reply_not_started(r, i, "");
            return -1;
        case MF_BATCHER_DRAINING:
        case MF_BATCHER_CANCELLED:
            mf_reply_error(r, MF_E_SHUTTING_DOWN, "the server shut down before the image was processed");
            return -1;
        default:
            mf_reply_error(r, mf_err_of_batcher(j->status), "the inference engine failed: %s",
                           mf_batcher_status_str(j->status));
            return -1;
        }
    }
    return 0;
}

/* ---- /v1/predict ---------------------------------------------------------- */

/* top_k of the query string (percent-decoded by mf_request_query);
 * "?top_k" without a value counts as empty. */
static int query_top_k(mf_request *r)
{
    size_t len = 0;
    const char *v = mf_request_query(r, "top_k", &len);
    return mf_parse_top_k(v, len, r->mv->classes);
}

int mf_predict_begin(mf_request *r)
{
    /* While draining, a request that arrives on a connection opened before
     * the signal (keep-alive) is still served, with "Connection: close": rolling
     * restarts then lose nothing.  Once the batcher has stopped accepting,
     * submit answers 503 shutting_down. */
    mf_predict *p = state(r);
    if (!p) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the request");
    p->top_k = query_top_k(r);
    if (p->top_k < 0)
        return mf_reply_error(r, MF_E_BAD_TOP_K, "top_k must be an integer from 1 to %d", r->mv->classes);
    const char *ct = mf_request_header(r, "Content-Type");
    char mt[128];
    mf_media_type(ct ? ct : "", mt, sizeof mt);
    if (strcmp(mt, "multipart/form-data") == 0) {
        char boundary[MF_MULTIPART_MAX_BOUNDARY + 1];
        if (mf_multipart_boundary(ct, boundary, sizeof boundary) != MF_MULTIPART_OK)
            return mf_reply_error(r, MF_E_MULTIPART_NO_BOUNDARY,
                                  "multipart/form-data needs a boundary parameter of 1 to 70 characters");
        if (strlen(ct) >= sizeof p->content_type)
            return mf_reply_error(r, MF_E_BAD_CONTENT_TYPE, "Content-Type is too long");
        strcpy(p->content_type, ct);
        p->multipart = 1;
    } else if (mt[0] && strcmp(mt, "image/jpeg") != 0 && strcmp(mt, "image/jpg") != 0 &&
               strcmp(mt, "image/png") != 0 && strcmp(mt, "image/webp") != 0 && strcmp(mt, "image/gif") != 0 &&
               strcmp(mt, "application/octet-stream") != 0) {
        return mf_reply_error(r, MF_E_UNSUPPORTED_MEDIA_TYPE,
                              "Content-Type %s is not supported; send image/jpeg, image/png, image/webp, image/gif, "
                              "application/octet-stream or multipart/form-data",
                              mt);
    }
    /* from here until its submit (or failure) the queue knows an image is on
     * its way, and a batch leader may wait for it */
    mf_request_expect(r);
    return 0;
}

static json_t *latency_json(const image_slot *sl, double total_ms)
{
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "decode_wait", sl->decode_wait_s * 1e3, "decode", sl->decode_s * 1e3,
                     "preprocess", sl->preprocess_s * 1e3, "queue", sl->job.queue_s * 1e3, "inference",
                     sl->job.inference_s * 1e3, "total", total_ms);
}

/* Every job is finished: answer. */
static int predict_answer(mf_request *r)
{
    if (mf_images_check(r) != 0) return 0;
    mf_predict *p = r->predict;
    const mf_version *v = r->mv;
    json_t *o = json_object();
    if (!o) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the answer");
    double total_ms = mf_ms_since(r->start_ns);
    json_object_set_new(o, "model", json_string(v->name));
    json_object_set_new(o, "model_version", json_string(v->version));
    json_t *results = p->n_images > 1 ? json_array() : NULL;
    for (int i = 0; i < p->n_images; i++) {
        image_slot *sl = &p->slots[i];
        mf_softmax(sl->logits, v->classes, sl->logits);
        json_t *preds = mf_predictions_json(sl->logits, v->classes, v->labels, p->top_k);
        if (!preds) {
            json_decref(o);
            json_decref(results);
            return mf_reply_error(r, MF_E_INFERENCE_FAILED, "the model produced non-finite scores");
        }
        json_t *dst = o;
        if (results) {
            dst = json_object();
            json_array_append_new(results, dst);
        }
        json_object_set_new(dst, "predictions", preds);
        json_object_set_new(dst, "latency_ms", latency_json(sl, total_ms));
        json_object_set_new(dst, "batch_size", json_integer(sl->job.batch_size));
    }
    if (results) json_object_set_new(o, "results", results);
    return mf_reply_json(r, 200, o);
}

static int predict_submit(mf_request *r) { return mf_images_submit(r, MF_PRIORITY_DEFAULT, 0, predict_answer); }

/* Body complete: split, decode, preprocess, queue. */
int mf_predict_body(mf_request *r)
{
    mf_predict *p = r->predict;
    mf_multipart_part parts[MAX_IMAGES];
    int n = 1;
    if (p->multipart) {
        mf_multipart_status ms =
            mf_multipart_parse(p->content_type, r->body, r->body_len, "image", parts, MAX_IMAGES, &n);
        if (ms == MF_MULTIPART_TOO_MANY_PARTS)
            return mf_reply_error(r, mf_err_of_multipart(ms), "multipart body has more than %d parts", MAX_IMAGES);
        if (ms != MF_MULTIPART_OK)
            return mf_reply_error(r, mf_err_of_multipart(ms), "malformed multipart/form-data body");
        if (n == 0) return mf_reply_error(r, MF_E_MULTIPART_NO_IMAGE, "multipart body has no part named \"image\"");
    } else {
        parts[0].data = r->body;
        parts[0].len = r->body_len;
    }
    if (mf_images_alloc(r, n, 0, 0) != 0) return 0;
    for (int i = 0; i < n; i++)
        if (mf_images_decode(r, i, parts[i].data, parts[i].len, MF_PRIORITY_DEFAULT, 0) != 0) return 0;
    return mf_images_decoded(r, predict_submit);
}
