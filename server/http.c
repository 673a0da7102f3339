/* http.c -- libmicrohttpd front end; see http.h and the DESIGN note in batcher.c.
 *
 * Life of a predict request (all on one HTTP thread unless noted):
 *   1. headers arrive: request_new(), route, auth, top_k, Content-Type and
 *      Content-Length are checked; any error is answered at once, before the
 *      body is read (libmicrohttpd then closes the connection unread);
 *   2. body chunks are appended, up to max_body_bytes;
 *   3. body complete: multipart split, decode (max_pixels checked from the
 *      header), preprocess to the model's input size, submit to the batcher,
 *      MHD_suspend_connection();
 *   4. (worker thread) each job's done callback counts down; the last one
 *      resumes the connection;
 *   5. the handler runs again: softmax, top-k, JSON answer;
 *   6. NOTIFY_COMPLETED: log line, in-flight count, free.
 * The request's mutex orders 3 against 4: a job that finishes before the
 * connection is suspended is simply answered without suspending.
 *
 * Slow clients: a connection gets connection_timeout_s to deliver each
 * request's headers, however slowly it sends them (deadline.h), besides
 * libmicrohttpd's idle timeout (the same value) and its per-connection
 * buffer, which bounds the request head (CONNECTION_MEMORY).  Running out of
 * memory for a request's buffers (body, pixels, tensors, answer) is answered
 * 503 out_of_memory, with a fixed body if even the JSON cannot be built
 * (reply_oom); only when the request context itself (a few hundred bytes)
 * cannot be had is the connection closed unanswered.
 */
#include "http.h"

#include "deadline.h"
#include "image.h"
#include "log.h"
#include "multipart.h"
#include "preprocess.h"
#include "topk.h"
#include "web.h"
#include "mf_util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_IMAGES 32          /* parts of one multipart request */
#define CONNECTION_MEMORY (32 * 1024) /* libmicrohttpd's per-connection buffer: request head */
#define DEFAULT_TOP_K 5
#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
#define JSON_TYPE "application/json"

struct mf_http {
    const mf_config *cfg;        /* borrowed settings */
    const mf_model *model;       /* borrowed, read-only */
    mf_batcher *batcher;         /* borrowed */
    mf_metrics *metrics;         /* borrowed */
    struct MHD_Daemon *daemon;   /* the libmicrohttpd daemon */
    int port;                    /* bound port */
    int in_h, in_w;              /* model input size */
    int classes;                 /* model classes */
    atomic_int draining;         /* set once by mf_http_begin_drain */
    MHD_socket listen_fd;        /* after the drain began: the quiesced listening socket */
    atomic_long inflight;        /* requests between request_new and completion */
    mf_deadline *deadline;       /* request-head deadlines (slow clients); NULL = none */
    char *metadata;              /* GET /v2/models/{name} body, built once */
    size_t metadata_len;         /* its length */
};

typedef enum req_state {
    REQ_NEW = 0, /* headers seen, not routed yet */
    REQ_BODY,    /* predict: receiving the body */
    REQ_WAITING, /* predict: jobs queued, connection suspended */
    REQ_DONE,    /* answer queued */
} req_state;

struct request;

typedef struct image_slot {
    struct request *req;   /* owner */
    mf_job job;            /* the image's place in the batcher */
    float *input;          /* [3, H, W], preprocessed */
    float *logits;         /* [classes]; probabilities after softmax */
    double decode_s;       /* decode time */
    double preprocess_s;   /* preprocess time */
} image_slot;

typedef struct route route;

typedef struct request {
    mf_http *srv;                 /* server */
    struct MHD_Connection *conn;  /* its connection */
    const route *route;           /* matched route, NULL if none */
    mf_endpoint endpoint;         /* metrics label */
    req_state state;              /* where it is in its life */
    uint64_t start_ns;            /* headers received (CLOCK_MONOTONIC) */
    char method[16];              /* HTTP method (truncated) */
    char *path;                   /* URL path (owned) */
    char remote[INET6_ADDRSTRLEN];/* client address */
    const char *allow;            /* Allow header of a 405 */
    const char *const *headers;   /* more headers for reply(): name, value, ..., NULL */
    int top_k;                    /* predictions per image */
    char content_type[256];       /* multipart Content-Type (longer ones are refused) */
    int multipart;                /* body is multipart/form-data */
    uint8_t *body;                /* received body (owned) */
    size_t body_len, body_cap;    /* bytes in body, capacity */
    size_t bytes_in;              /* body bytes received, kept or not */
    int body_too_large;           /* passed max_body_bytes: discarding */
    int body_nomem;               /* could not grow the buffer: discarding */
    int n_images;                 /* images in this request */
    image_slot *slots;            /* [n_images] (owned) */
    float *tensors;               /* inputs and logits of all slots (owned) */
    pthread_mutex_t mu;           /* orders job completion against suspend */
    int pending;                  /* jobs not finished (guarded by mu) */
    int suspended;                /* connection suspended (guarded by mu) */
    int status;                   /* answer status, 0 before */
    size_t bytes_out;             /* answer body bytes */
    const char *error_code;       /* answer's error code, NULL if none */
    int batch_size;               /* largest batch of its images */
    double latency_ms;            /* headers to answer */
    int expected;                 /* counted in the batcher's images on their way */
} request;

struct route {
    const char *pattern;               /* path; "{}" stands for the model name segment */
    const char *method;                /* GET routes also answer HEAD */
    mf_endpoint endpoint;              /* metrics label */
    int auth;                          /* needs the API key when one is set */
    enum MHD_Result (*handle)(request *r); /* answers, or starts the body for predict */
};

#define now_ns mf_now_ns
#define ms_since mf_ms_since

const char *mf_http_status_str(mf_http_status s)
{
    switch (s) {
    case MF_HTTP_OK: return "ok";
    case MF_HTTP_ARG: return "bad argument";
    case MF_HTTP_LISTEN: return "cannot listen";
    case MF_HTTP_NOMEM: return "out of memory";
    }
    return "unknown";
}

/* ---- replies ------------------------------------------------------------ */

static void add_cors(request *r, struct MHD_Response *resp)
{
    const char *origin = r->srv->cfg->cors_origin;
    if (!origin[0]) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
    if (strcmp(origin, "*") != 0) MHD_add_response_header(resp, "Vary", "Origin");
}

/* THE reply function: every answer goes through here and is counted.
 * body (len bytes) is freed by libmicrohttpd when mode is MUST_FREE. */
static enum MHD_Result reply(request *r, unsigned status, const char *ctype, char *body,
                             size_t len, enum MHD_ResponseMemoryMode mode, const char *error_code)
{
    mf_http *s = r->srv;
    r->state = REQ_DONE;
    r->status = (int)status;
    r->bytes_out = len;
    r->error_code = error_code;
    r->latency_ms = ms_since(r->start_ns);
    mf_metrics_request(s->metrics, r->endpoint, (int)status, r->latency_ms * 1e-3);

    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_cors(r, resp);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) MHD_add_response_header(resp, "Retry-After", "1");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"mobileformer\"");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && r->allow)
        MHD_add_response_header(resp, "Allow", r->allow);
    for (const char *const *h = r->headers; h && h[0]; h += 2)
        MHD_add_response_header(resp, h[0], h[1]);
    if (atomic_load(&s->draining)) MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The answer when even the JSON of an answer cannot be built: a fixed body,
 * so running out of memory is still a counted 503, not a dropped connection. */
static enum MHD_Result reply_oom(request *r)
{
    static const char body[] =
        "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server is out of memory\"}}";
    return reply(r, MHD_HTTP_SERVICE_UNAVAILABLE, JSON_TYPE, (char *)body, sizeof body - 1,
                 MHD_RESPMEM_PERSISTENT, "out_of_memory");
}

static enum MHD_Result reply_json(request *r, unsigned status, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (!text) return reply_oom(r);
    return reply(r, status, JSON_TYPE, text, strlen(text), MHD_RESPMEM_MUST_FREE, NULL);
}

/* THE error function: {"error": {"code", "message"}} with its status,
 * counted by reply(). */
static void stop_expecting(request *r);

static enum MHD_Result reply_error(request *r, unsigned status, const char *code,
                                   const char *fmt, ...)
{
    char msg[512];
    stop_expecting(r); /* a failed upload will not submit: no batch waits for it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* messages may quote client bytes: keep the JSON valid UTF-8 */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20) *p = '?';
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (!text) return reply_oom(r);
    return reply(r, status, JSON_TYPE, text, strlen(text), MHD_RESPMEM_MUST_FREE, code);
}

/* ---- small parsers ------------------------------------------------------ */

static const char *header(request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

/* Constant time in the content of `given`: the loop runs over the key. */
static int key_equal(const char *given, const char *key)
{
    size_t gl = strlen(given), kl = strlen(key);
    volatile unsigned char diff = gl != kl;
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)((i < gl ? given[i] : 0) ^ key[i]);
    return diff == 0;
}

int mf_http_bearer_ok(const char *authorization, const char *api_key)
{
    if (!api_key[0]) return 1;
    const char *h = authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_equal(h, api_key);
}

static int authorized(request *r)
{
    return mf_http_bearer_ok(header(r, MHD_HTTP_HEADER_AUTHORIZATION), r->srv->cfg->api_key);
}

int mf_http_parse_top_k(const char *v, size_t len, int classes)
{
    if (!v) return DEFAULT_TOP_K < classes ? DEFAULT_TOP_K : classes;
    if (len == 0) return -1;
    long long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        if (n <= classes) n = n * 10 + (v[i] - '0'); /* stop growing once above the cap */
    }
    if (n < 1) return -1;
    return n > classes ? classes : (int)n;
}

/* Percent-decoding of the path and of query keys and values.  A text with
 * an encoded NUL ("%00") is left as sent: decoded, it would end the string
 * early (so "/%00../x" would route as "/"); undecoded it matches no route
 * and no setting, and gets the ordinary 404 or 400. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    for (const char *p = s; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == '0' && p[2] == '0')
            return strlen(s);
    return MHD_http_unescape(s);
}

/* top_k of the query string (libmicrohttpd has split and unescaped it);
 * "?top_k" without a value counts as empty. */
static int parse_top_k(request *r)
{
    const char *v = NULL;
    size_t len = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "top_k", 5, &v, &len) != MHD_YES)
        return mf_http_parse_top_k(NULL, 0, r->srv->classes);
    return mf_http_parse_top_k(v ? v : "", v ? len : 0, r->srv->classes);
}

void mf_http_media_type(const char *ct, char *out, size_t cap)
{
    size_t n = 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && *ct != '\t' && n + 1 < cap; ct++)
        out[n++] = (char)((*ct >= 'A' && *ct <= 'Z') ? *ct + 32 : *ct);
    out[n] = '\0';
}

/* ---- predict ------------------------------------------------------------ */

static enum MHD_Result predict_begin(request *r)
{
    mf_http *s = r->srv;
    /* While draining, a request that arrives on a connection opened before
     * the signal (keep-alive) is still served, with "Connection: close"
     * (reply()): rolling restarts then lose nothing.  Once the batcher has
     * stopped accepting, submit answers 503 shutting_down. */
    r->top_k = parse_top_k(r);
    if (r->top_k < 0)
        return reply_error(r, MHD_HTTP_BAD_REQUEST, "bad_top_k",
                           "top_k must be an integer from 1 to %d", s->classes);

    const char *ct = header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    char mt[128];
    mf_http_media_type(ct ? ct : "", mt, sizeof mt);
    if (strcmp(mt, "multipart/form-data") == 0) {
        char boundary[MF_MULTIPART_MAX_BOUNDARY + 1];
        if (mf_multipart_boundary(ct, boundary, sizeof boundary) != MF_MULTIPART_OK)
            return reply_error(r, MHD_HTTP_BAD_REQUEST,
                               mf_multipart_status_code(MF_MULTIPART_NO_BOUNDARY),
                               "multipart/form-data needs a boundary parameter of 1 to 70 characters");
        if (strlen(ct) >= sizeof r->content_type)
            return reply_error(r, MHD_HTTP_BAD_REQUEST, "bad_content_type",
                               "Content-Type is too long");
        strcpy(r->content_type, ct);
        r->multipart = 1;
    } else if (mt[0] && strcmp(mt, "image/jpeg") != 0 && strcmp(mt, "image/jpg") != 0 &&
               strcmp(mt, "image/png") != 0 && strcmp(mt, "application/octet-stream") != 0) {
        return reply_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                           "Content-Type %s is not supported; send image/jpeg, image/png, "
                           "application/octet-stream or multipart/form-data",
                           mt);
    }

    long long limit = s->cfg->max_body_bytes;
    const char *cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        /* libmicrohttpd has already refused a malformed Content-Length */
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > (unsigned long long)limit)
            return reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                               "request body of %llu bytes is over the limit of %lld bytes", n,
                               limit);
        if (n > 0) {
            /* reserve at most 1 MiB up front: a client announcing 16 MiB and
             * sending nothing must not cost 16 MiB per connection */
            if (n > (1u << 20)) n = 1u << 20;
            r->body = malloc(n);
            if (!r->body)
                return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
                                   "cannot allocate the request body");
            r->body_cap = n;
        }
    }
    r->state = REQ_BODY;
    /* from here until its submit (or failure) the batcher knows an image is
     * on its way, and a batch leader may wait for it */
    mf_batcher_expect(s->batcher, +1);
    r->expected = 1;
    return MHD_YES;
}

static void stop_expecting(request *r)
{
    if (r->expected) {
        r->expected = 0;
        mf_batcher_expect(r->srv->batcher, -1);
    }
}

static void predict_append(request *r, const char *data, size_t n)
{
    size_t limit = (size_t)r->srv->cfg->max_body_bytes;
    r->bytes_in += n;
    if (r->body_too_large || r->body_nomem) return;
    if (n > limit - r->body_len) {
        /* no answer can be queued mid-body in libmicrohttpd: drop what we
         * hold and discard the rest, then answer 413 (see on_request) */
        r->body_too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 65536;
        if (cap < r->body_len + n) cap = r->body_len + n;
        if (cap > limit) cap = limit;
        uint8_t *b = realloc(r->body, cap);
        if (!b) {
            r->body_nomem = 1;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
}

/* Worker thread: one image finished.  The last one resumes the connection. */
static void on_job_done(mf_job *job, void *user)
{
    image_slot *slot = user;
    request *r = slot->req;
    (void)job;
    pthread_mutex_lock(&r->mu);
    if (--r->pending == 0 && r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
}

static json_t *latency_json(const image_slot *sl, double total_ms)
{
    return json_pack("{s:f,s:f,s:f,s:f,s:f}", "decode", sl->decode_s * 1e3, "preprocess",
                     sl->preprocess_s * 1e3, "queue", sl->job.queue_s * 1e3, "inference",
                     sl->job.inference_s * 1e3, "total", total_ms);
}

static json_t *predictions_json(request *r, image_slot *sl)
{
    mf_softmax(sl->logits, r->srv->classes, sl->logits);
    return mf_predictions_json(r->srv->model, sl->logits, r->top_k);
}

/* Resumed (or never suspended): every job is finished; answer. */
static enum MHD_Result predict_answer(request *r)
{
    mf_http *s = r->srv;
    pthread_mutex_lock(&r->mu); /* pairs with on_job_done: job results are visible */
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_images; i++) {
        mf_job *j = &r->slots[i].job;
        if (j->batch_size > r->batch_size) r->batch_size = j->batch_size;
        char which[32] = "";
        if (r->n_images > 1) snprintf(which, sizeof which, "image %d: ", i + 1);
        switch (j->status) {
        case MF_BATCHER_OK: break;
        case MF_BATCHER_TIMEOUT:
            return reply_error(r, MHD_HTTP_GATEWAY_TIMEOUT, "timeout",
                               "%snot started within request_timeout_ms (%d ms)", which,
                               s->cfg->request_timeout_ms);
        case MF_BATCHER_DRAINING:
            return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                               "the server shut down before the image was processed");
        default:
            return reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "inference_failed",
                               "the inference engine failed: %s", mf_batcher_status_str(j->status));
        }
    }
    json_t *o = json_object();
    if (!o) {
        return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
                           "cannot allocate the answer");
    }
    double total_ms = ms_since(r->start_ns);
    json_object_set_new(o, "model", json_string(s->cfg->model_name));
    json_t *results = r->n_images > 1 ? json_array() : NULL;
    for (int i = 0; i < r->n_images; i++) {
        image_slot *sl = &r->slots[i];
        json_t *preds = predictions_json(r, sl);
        if (!preds) {
            json_decref(o);
            json_decref(results);
            return reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "inference_failed",
                               "the model produced non-finite scores");
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
    return reply_json(r, MHD_HTTP_OK, o);
}

/* Map an image decode failure to its answer. */
static enum MHD_Result image_error(request *r, int image, mf_img_status st, const char *detail)
{
    unsigned status = MHD_HTTP_BAD_REQUEST;
    if (st == MF_IMG_TOO_LARGE) status = MHD_HTTP_CONTENT_TOO_LARGE;
    if (st == MF_IMG_NOMEM) status = MHD_HTTP_SERVICE_UNAVAILABLE;
    if (r->n_images > 1)
        return reply_error(r, status, mf_img_status_code(st), "image %d: %s", image + 1, detail);
    return reply_error(r, status, mf_img_status_code(st), "%s", detail);
}

/* Body complete: split, decode, preprocess, queue, suspend. */
static enum MHD_Result predict_run(request *r)
{
    mf_http *s = r->srv;
    if (r->body_too_large)
        return reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                           "request body is over the limit of %lld bytes", s->cfg->max_body_bytes);
    if (r->body_nomem)
        return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
                           "cannot allocate the request body");

    mf_multipart_part parts[MAX_IMAGES];
    int n = 1;
    if (r->multipart) {
        mf_multipart_status ms = mf_multipart_parse(r->content_type, r->body, r->body_len, "image",
                                                    parts, MAX_IMAGES, &n);
        if (ms == MF_MULTIPART_TOO_MANY_PARTS)
            return reply_error(r, MHD_HTTP_BAD_REQUEST, mf_multipart_status_code(ms),
                               "multipart body has more than %d parts", MAX_IMAGES);
        if (ms != MF_MULTIPART_OK)
            return reply_error(r, MHD_HTTP_BAD_REQUEST, mf_multipart_status_code(ms),
                               "malformed multipart/form-data body");
        if (n == 0)
            return reply_error(r, MHD_HTTP_BAD_REQUEST, "multipart_no_image",
                               "multipart body has no part named \"image\"");
    } else {
        parts[0].data = r->body;
        parts[0].len = r->body_len;
    }
    r->n_images = n;

    size_t in_floats = (size_t)3 * s->in_h * s->in_w;
    size_t per_image = in_floats + (size_t)s->classes;
    r->slots = calloc((size_t)n, sizeof *r->slots);
    r->tensors = malloc((size_t)n * per_image * sizeof(float));
    if (!r->slots || !r->tensors)
        return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
                           "cannot allocate the image tensors");

    const mf_preprocess *pre = mf_model_preprocess(s->model);
    mf_job *jobs[MAX_IMAGES];
    for (int i = 0; i < n; i++) {
        image_slot *sl = &r->slots[i];
        sl->req = r;
        sl->input = r->tensors + (size_t)i * per_image;
        sl->logits = sl->input + in_floats;
        char err[256] = "";
        mf_image img = {0, 0, NULL};
        uint64_t t0 = now_ns();
        mf_img_status st = mf_image_decode(parts[i].data, parts[i].len,
                                           (size_t)s->cfg->max_pixels, &img, err, sizeof err);
        uint64_t t1 = now_ns();
        if (st != MF_IMG_OK) return image_error(r, i, st, err[0] ? err : mf_img_status_code(st));
        int rc = mf_preprocess_image(&img, pre, sl->input);
        uint64_t t2 = now_ns();
        mf_image_free(&img);
        if (rc == MF_PREPROCESS_NOMEM)
            return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
                               "cannot allocate memory to preprocess image %d", i + 1);
        if (rc != 0)
            return reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "preprocess_failed",
                               "could not preprocess image %d", i + 1);
        sl->decode_s = (double)(t1 - t0) * 1e-9;
        sl->preprocess_s = (double)(t2 - t1) * 1e-9;
        mf_metrics_observe(s->metrics, MF_HIST_DECODE, sl->decode_s);
        mf_metrics_observe(s->metrics, MF_HIST_PREPROCESS, sl->preprocess_s);
        sl->job.input = sl->input;
        sl->job.logits = sl->logits;
        sl->job.done = on_job_done;
        sl->job.user = sl;
        jobs[i] = &sl->job;
    }
    /* the pixels are in the tensors now; the upload can go */
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;

    pthread_mutex_lock(&r->mu);
    r->pending = n;
    pthread_mutex_unlock(&r->mu);
    mf_batcher_status bs = mf_batcher_submit(s->batcher, jobs, n);
    stop_expecting(r);
    if (bs != MF_BATCHER_OK) {
        pthread_mutex_lock(&r->mu);
        r->pending = 0;
        pthread_mutex_unlock(&r->mu);
        if (bs == MF_BATCHER_QUEUE_FULL)
            return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "queue_full",
                               "the inference queue is full (max_queue %d); retry later",
                               s->cfg->max_queue);
        if (bs == MF_BATCHER_DRAINING)
            return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                               "the server is shutting down");
        return reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
                           "could not queue the image: %s", mf_batcher_status_str(bs));
    }
    pthread_mutex_lock(&r->mu);
    if (r->pending > 0) {
        MHD_suspend_connection(r->conn);
        r->suspended = 1;
        r->state = REQ_WAITING;
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    return predict_answer(r);
}

/* ---- other endpoints ---------------------------------------------------- */

static enum MHD_Result handle_live(request *r)
{
    return reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "live"));
}

static enum MHD_Result handle_ready(request *r)
{
    if (atomic_load(&r->srv->draining))
        return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready", "the server is shutting down");
    return reply_json(r, MHD_HTTP_OK,
                      json_pack("{s:s,s:s}", "status", "ready", "model", r->srv->cfg->model_name));
}

static enum MHD_Result handle_model_ready(request *r)
{
    if (atomic_load(&r->srv->draining))
        return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready", "the server is shutting down");
    return reply_json(r, MHD_HTTP_OK,
                      json_pack("{s:s,s:b}", "name", r->srv->cfg->model_name, "ready", 1));
}

static enum MHD_Result handle_metadata(request *r)
{
    return reply(r, MHD_HTTP_OK, JSON_TYPE, r->srv->metadata, r->srv->metadata_len,
                 MHD_RESPMEM_PERSISTENT, NULL);
}

static enum MHD_Result handle_metrics(request *r)
{
    size_t len = 0;
    char *text = mf_metrics_render(r->srv->metrics, &len);
    if (!text)
        return reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out_of_memory",
                           "cannot render the metrics");
    return reply(r, MHD_HTTP_OK, MF_METRICS_CONTENT_TYPE, text, len, MHD_RESPMEM_MUST_FREE, NULL);
}

static enum MHD_Result handle_options(request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    r->state = REQ_DONE;
    r->status = MHD_HTTP_NO_CONTENT;
    r->latency_ms = ms_since(r->start_ns);
    mf_metrics_request(r->srv->metrics, r->endpoint, r->status, r->latency_ms * 1e-3);
    MHD_add_response_header(resp, "Allow", "GET, HEAD, POST, OPTIONS");
    add_cors(r, resp);
    if (r->srv->cfg->cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_NO_CONTENT, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The embedded page (web.h), open without the API key: the page asks for
 * the key and sends it with its own requests.  Only the table's exact paths
 * are routed here, so no path can reach the file system. */
static enum MHD_Result handle_web(request *r)
{
    const mf_web_asset *a = r->srv->cfg->web_ui ? mf_web_find(r->path) : NULL;
    if (!a) return reply_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no endpoint at %s", r->path);
    r->headers = a->headers;
    const char *inm = header(r, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && strstr(inm, a->etag))
        return reply(r, MHD_HTTP_NOT_MODIFIED, NULL, NULL, 0, MHD_RESPMEM_PERSISTENT, NULL);
    return reply(r, MHD_HTTP_OK, a->content_type, (char *)a->data, a->len, MHD_RESPMEM_PERSISTENT,
                 NULL);
}

static const route routes[] = {
    {"/v1/predict", "POST", MF_ENDPOINT_PREDICT, 1, predict_begin},
    {"/v1/models/{}/predict", "POST", MF_ENDPOINT_PREDICT, 1, predict_begin},
    {"/v2/health/live", "GET", MF_ENDPOINT_HEALTH_LIVE, 0, handle_live},
    {"/v2/health/ready", "GET", MF_ENDPOINT_HEALTH_READY, 0, handle_ready},
    {"/v2/models/{}", "GET", MF_ENDPOINT_MODEL_METADATA, 1, handle_metadata},
    {"/v2/models/{}/ready", "GET", MF_ENDPOINT_MODEL_READY, 1, handle_model_ready},
    {"/metrics", "GET", MF_ENDPOINT_METRICS, 0, handle_metrics},
    {"/", "GET", MF_ENDPOINT_WEB, 0, handle_web},
    {"/index.html", "GET", MF_ENDPOINT_WEB, 0, handle_web},
    {"/app.css", "GET", MF_ENDPOINT_WEB, 0, handle_web},
    {"/app.js", "GET", MF_ENDPOINT_WEB, 0, handle_web},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

/* Does path match pattern?  "{}" matches one non-empty segment, returned
 * in [*name, *name + *name_len). */
static int path_match(const char *pattern, const char *path, const char **name, size_t *name_len)
{
    *name = NULL;
    *name_len = 0;
    while (*pattern) {
        if (pattern[0] == '{' && pattern[1] == '}') {
            const char *e = path;
            while (*e && *e != '/') e++;
            if (e == path) return 0;
            *name = path;
            *name_len = (size_t)(e - path);
            path = e;
            pattern += 2;
        } else {
            if (*pattern != *path) return 0;
            pattern++;
            path++;
        }
    }
    return *path == '\0';
}

void mf_http_route_find(const char *method, const char *path, mf_http_route_match *m)
{
    memset(m, 0, sizeof *m);
    m->route = -1;
    m->endpoint = MF_ENDPOINT_OTHER;
    if (strcmp(method, "OPTIONS") == 0) {
        m->status = MF_HTTP_ROUTE_OPTIONS;
        m->endpoint = MF_ENDPOINT_OPTIONS;
        return;
    }
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int path_hit = -1;
    for (size_t i = 0; i < N_ROUTES; i++) {
        const char *name;
        size_t name_len;
        if (!path_match(routes[i].pattern, path, &name, &name_len)) continue;
        if (path_hit < 0) path_hit = (int)i;
        if (strcmp(routes[i].method, method) == 0 || (is_get && strcmp(routes[i].method, "GET") == 0)) {
            m->status = MF_HTTP_ROUTE_FOUND;
            m->route = (int)i;
            m->endpoint = routes[i].endpoint;
            m->auth = routes[i].auth;
            m->name = name;
            m->name_len = name_len;
            return;
        }
    }
    if (path_hit < 0) {
        m->status = MF_HTTP_ROUTE_NOT_FOUND;
        return;
    }
    m->status = MF_HTTP_ROUTE_METHOD_NOT_ALLOWED;
    m->route = path_hit;
    m->endpoint = routes[path_hit].endpoint;
    m->allow = strcmp(routes[path_hit].method, "GET") == 0 ? "GET, HEAD, OPTIONS" : "POST, OPTIONS";
}

static enum MHD_Result dispatch(request *r)
{
    mf_http *s = r->srv;
    mf_http_route_match m;
    mf_http_route_find(r->method, r->path, &m);
    r->endpoint = m.endpoint;
    switch (m.status) {
    case MF_HTTP_ROUTE_FOUND: break;
    case MF_HTTP_ROUTE_OPTIONS: return handle_options(r);
    case MF_HTTP_ROUTE_NOT_FOUND:
        return reply_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no endpoint at %s", r->path);
    case MF_HTTP_ROUTE_METHOD_NOT_ALLOWED:
        r->allow = m.allow;
        return reply_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                           "%s is not allowed on %s (allowed: %s)", r->method, r->path, r->allow);
    }
    r->route = &routes[m.route];
    if (m.auth && !authorized(r))
        return reply_error(r, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                           "this endpoint needs the header 'Authorization: Bearer <api key>'");
    if (m.name && (strlen(s->cfg->model_name) != m.name_len ||
                   memcmp(m.name, s->cfg->model_name, m.name_len) != 0))
        return reply_error(r, MHD_HTTP_NOT_FOUND, "model_not_found",
                           "no model named '%.*s' (this server has '%s')",
                           (int)(m.name_len > 128 ? 128 : m.name_len), m.name, s->cfg->model_name);
    return r->route->handle(r);
}

/* ---- libmicrohttpd callbacks -------------------------------------------- */

static request *request_new(mf_http *s, struct MHD_Connection *conn, const char *url,
                            const char *method)
{
    request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->path = strdup(url ? url : "");
    if (!r->path || pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r->path);
        free(r);
        return NULL;
    }
    r->srv = s;
    r->conn = conn;
    r->start_ns = now_ns();
    r->endpoint = MF_ENDPOINT_OTHER;
    snprintf(r->method, sizeof r->method, "%s", method ? method : "");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->remote, sizeof r->remote);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->remote,
                      sizeof r->remote);
    }
    atomic_fetch_add(&s->inflight, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_INFLIGHT, 1);
    return r;
}

static void request_free(request *r)
{
    stop_expecting(r); /* requests that failed or were cut off before their submit */
    /* a worker may still be inside on_job_done's critical section right
     * after resuming us: wait for it to leave before destroying the lock */
    pthread_mutex_lock(&r->mu);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_destroy(&r->mu);
    free(r->body);
    free(r->slots);
    free(r->tensors);
    free(r->path);
    free(r);
}

/* A connection opens or closes: its request-head deadline (deadline.h). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    mf_http *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? mf_deadline_open(s->deadline, ci->connect_fd) : NULL;
    } else {
        mf_deadline_close(s->deadline, *socket_context);
        *socket_context = NULL;
    }
}

static mf_deadline_conn *conn_deadline(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    mf_http *s = cls;
    request *r = *con_cls;
    if (!r) {
        mf_deadline_disarm(s->deadline, conn_deadline(conn)); /* the headers are in */
        r = request_new(s, conn, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        return dispatch(r);
    }
    switch (r->state) {
    case REQ_BODY:
        if (*upload_data_size) {
            predict_append(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            /* an endless body over the limit: stop reading (connection closed) */
            if (r->body_too_large && r->bytes_in > 2 * (size_t)s->cfg->max_body_bytes) return MHD_NO;
            return MHD_YES;
        }
        return predict_run(r);
    case REQ_WAITING: return predict_answer(r);
    case REQ_NEW:
    case REQ_DONE: break;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    mf_http *s = cls;
    request *r = *con_cls;
    mf_deadline_rearm(s->deadline, conn_deadline(conn)); /* keep-alive: the next request's head */
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    int pending = r->pending;
    pthread_mutex_unlock(&r->mu);
    if (pending > 0) {
        /* cannot happen (a suspended connection is only closed after it is
         * resumed); if it did, a worker still holds pointers into r */
        mf_log_event("error", "request completed with images still queued; leaking it", NULL);
        return;
    }
    if (s->cfg->log_requests) {
        mf_log_request_entry e = {
            .method = r->method,
            .path = r->path,
            .status = r->status,
            .bytes_in = r->bytes_in,
            .bytes_out = r->bytes_out,
            .latency_ms = r->status ? r->latency_ms : ms_since(r->start_ns),
            .batch_size = r->batch_size,
            .remote = r->remote,
            .error = r->error_code ? r->error_code
                                   : (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? "connection_closed"
                                                                                 : NULL),
        };
        mf_log_request(&e);
    }
    atomic_fetch_sub(&s->inflight, 1);
    mf_metrics_gauge_add(s->metrics, MF_GAUGE_INFLIGHT, -1);
    request_free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    mf_log_event("warn", msg, json_pack("{s:s}", "source", "libmicrohttpd"));
}

/* ---- start / stop ------------------------------------------------------- */

static char *build_metadata(const mf_config *cfg, const mf_model *m, size_t *len)
{
    const mf_arch *a = mf_model_arch(m);
    const mf_preprocess *p = mf_model_preprocess(m);
    int classes = mf_model_num_classes(m);
    char *arch_text = mf_arch_to_json(a);
    json_t *arch = arch_text ? json_loads(arch_text, 0, NULL) : NULL;
    free(arch_text);
    json_t *labels = json_array();
    for (int i = 0; labels && i < classes; i++)
        json_array_append_new(labels, json_string(mf_model_label(m, i)));
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:o*,s:i,s:[i,i],s:{s:[i,i],s:i,s:s,s:[f,f,f],s:[f,f,f],s:i},s:I,s:i,"
        "s:o*,s:[{s:s,s:s,s:[i],s:[s,s,s,s]}],s:[{s:s,s:s,s:[i,i]}]}",
        "name", cfg->model_name, "platform", "mobileformer_c", "arch_name", a->name,
        "architecture", arch, "num_classes", classes, "input_size", p->input_h, p->input_w,
        "preprocess", "input_size", p->input_h, p->input_w, "resize", p->resize, "interpolation",
        p->interpolation, "mean", (double)p->mean[0], (double)p->mean[1], (double)p->mean[2],
        "std", (double)p->std[0], (double)p->std[1], (double)p->std[2], "channels", p->channels,
        "parameters", (json_int_t)mf_arch_param_count(a, classes), "labels_count", classes,
        "labels", labels, "inputs", "name", "image", "datatype", "BYTES", "shape", -1,
        "content_types", "image/jpeg", "image/png", "application/octet-stream",
        "multipart/form-data", "outputs", "name", "probabilities", "datatype", "FP32", "shape", -1,
        classes);
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (text) *len = strlen(text);
    return text;
}

mf_http_status mf_http_start(const mf_config *cfg, const mf_model *model, mf_batcher *batcher,
                             mf_metrics *metrics, mf_http **out, char *err, size_t errlen)
{
    *out = NULL;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    memset(&addr, 0, sizeof addr);
    /* poll(), not epoll: libmicrohttpd 0.9.75's MHD_quiesce_daemon() races
     * with its own epoll workers over removing the listening socket from
     * their epoll sets, and the loser aborts the process ("Failed to remove
     * listen FD from epoll set"; seen here about once in 30 SIGTERMs under
     * load).  With poll() the quiesce reaches the workers through their
     * inter-thread channel instead. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, cfg->bind, &addr.in4.sin_addr) == 1) {
        addr.in4.sin_family = AF_INET;
        addr.in4.sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->bind, &addr.in6.sin6_addr) == 1) {
        addr.in6.sin6_family = AF_INET6;
        addr.in6.sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "bind: '%s' is not a numeric IPv4 or IPv6 address", cfg->bind);
        return MF_HTTP_ARG;
    }
    mf_http *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return MF_HTTP_NOMEM;
    }
    s->cfg = cfg;
    s->listen_fd = MHD_INVALID_SOCKET;
    s->model = model;
    s->batcher = batcher;
    s->metrics = metrics;
    const mf_preprocess *p = mf_model_preprocess(model);
    s->in_h = p->input_h;
    s->in_w = p->input_w;
    s->classes = mf_model_num_classes(model);
    s->metadata = build_metadata(cfg, model, &s->metadata_len);
    if (!s->metadata) {
        snprintf(err, errlen, "cannot build the model metadata (out of memory)");
        free(s);
        return MF_HTTP_NOMEM;
    }
    /* the pool option only when there is a pool: libmicrohttpd warns about 1 */
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)&on_mhd_log, s},
        {MHD_OPTION_SOCK_ADDR, 0, &addr.sa},
        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, cfg->connection_timeout_s, NULL},
        /* request line + headers of one request: larger gets 431 (the default, made explicit) */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONNECTION_MEMORY, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)&on_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)&on_connection, s},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)&unescape, NULL},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {cfg->http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, cfg->http_threads,
         NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->deadline = mf_deadline_new(cfg->connection_timeout_s);
    s->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, &on_request, s,
                                 MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->daemon) {
        mf_deadline_free(s->deadline);
        snprintf(err, errlen, "cannot listen on %s port %d (bind, port, http_threads or "
                 "max_connections; see the libmicrohttpd message above)", cfg->bind, cfg->port);
        free(s->metadata);
        free(s);
        return MF_HTTP_LISTEN;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    *out = s;
    return MF_HTTP_OK;
}

int mf_http_port(const mf_http *h) { return h->port; }

void mf_http_begin_drain(mf_http *h)
{
    if (!h || atomic_exchange(&h->draining, 1)) return;
    /* The workers stop polling the socket once they see the quiesce, a
     * little later; it must stay open (its number unreused) until then, so
     * it is only shut down here -- new connections are refused at once --
     * and closed after MHD_stop_daemon. */
    h->listen_fd = MHD_quiesce_daemon(h->daemon);
    if (h->listen_fd != MHD_INVALID_SOCKET) shutdown(h->listen_fd, SHUT_RDWR);
}

long mf_http_inflight(const mf_http *h) { return h ? atomic_load(&h->inflight) : 0; }

void mf_http_stop(mf_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    if (h->listen_fd != MHD_INVALID_SOCKET) close(h->listen_fd); /* quiesced: ours to close */
    mf_deadline_free(h->deadline); /* every connection has closed */
    free(h->metadata);
    free(h);
}
