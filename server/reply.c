/* reply.c -- the reply function, the error table and its renderings; see reply.h. */
#include "reply.h"

#include "mf_util.h"
#include "repository.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))

static const struct {
    const char *code;
    unsigned status;
} errors[MF_E_COUNT] = {
#define MF_ERR_ROW(name, c, s) [MF_E_##name] = {c, s},
    MF_ERRORS(MF_ERR_ROW)
#undef MF_ERR_ROW
};

const char *mf_err_code(mf_err e) { return (unsigned)e < MF_E_COUNT ? errors[e].code : errors[MF_E_INTERNAL].code; }

unsigned mf_err_status(mf_err e) { return (unsigned)e < MF_E_COUNT ? errors[e].status : 500; }

mf_err mf_err_of_image(mf_img_status s)
{
    switch (s) {
    case MF_IMG_EMPTY: return MF_E_EMPTY_BODY;
    case MF_IMG_UNSUPPORTED: return MF_E_UNSUPPORTED_IMAGE;
    case MF_IMG_CORRUPT: return MF_E_CORRUPT_IMAGE;
    case MF_IMG_TOO_LARGE: return MF_E_IMAGE_TOO_LARGE;
    case MF_IMG_NOMEM: return MF_E_OUT_OF_MEMORY;
    case MF_IMG_TOO_COMPLEX: return MF_E_IMAGE_TOO_COMPLEX;
    case MF_IMG_TOO_SLOW: return MF_E_DECODE_TIMEOUT;
    case MF_IMG_OTHER_FORMAT: return MF_E_UNSUPPORTED_MEDIA_TYPE;
    case MF_IMG_CANCELLED: return MF_E_CLIENT_GONE;
    case MF_IMG_OK: break;
    }
    return MF_E_INTERNAL;
}

mf_err mf_err_of_multipart(mf_multipart_status s)
{
    switch (s) {
    case MF_MULTIPART_NO_BOUNDARY: return MF_E_MULTIPART_NO_BOUNDARY;
    case MF_MULTIPART_NO_DELIMITER: return MF_E_MULTIPART_NO_DELIMITER;
    case MF_MULTIPART_NO_CLOSE: return MF_E_MULTIPART_TRUNCATED;
    case MF_MULTIPART_BAD_DELIMITER: return MF_E_MULTIPART_BAD_DELIMITER;
    case MF_MULTIPART_HEADER_TOO_LONG: return MF_E_MULTIPART_HEADER_TOO_LONG;
    case MF_MULTIPART_BAD_HEADER: return MF_E_MULTIPART_BAD_HEADER;
    case MF_MULTIPART_NO_DISPOSITION: return MF_E_MULTIPART_NO_DISPOSITION;
    case MF_MULTIPART_TOO_MANY_PARTS: return MF_E_MULTIPART_TOO_MANY_PARTS;
    case MF_MULTIPART_OK: break;
    }
    return MF_E_INTERNAL;
}

mf_err mf_err_of_batcher(mf_batcher_status s)
{
    switch (s) {
    case MF_BATCHER_QUEUE_FULL: return MF_E_QUEUE_FULL;
    case MF_BATCHER_DRAINING: return MF_E_SHUTTING_DOWN;
    case MF_BATCHER_TIMEOUT: return MF_E_TIMEOUT;
    case MF_BATCHER_ENGINE: return MF_E_INFERENCE_FAILED;
    case MF_BATCHER_NOMEM: return MF_E_OUT_OF_MEMORY;
    case MF_BATCHER_CANCELLED: return MF_E_CLIENT_GONE;
    case MF_BATCHER_OK:
    case MF_BATCHER_THREAD:
    case MF_BATCHER_ARG: break;
    }
    return MF_E_INTERNAL;
}

char *mf_err_render(mf_err e, mf_dialect d, const char *msg, const char *id, const char *request_id)
{
    json_t *o = d == MF_DIALECT_OIP
                    ? json_pack("{s:s,s:s}", "error", msg, "code", mf_err_code(e))
                    : json_pack("{s:{s:s,s:s}}", "error", "code", mf_err_code(e), "message", msg);
    if (o && id && d == MF_DIALECT_OIP) json_object_set_new(o, "id", json_string(id));
    if (o && request_id && request_id[0])
        json_object_set_new(d == MF_DIALECT_OIP ? o : json_object_get(o, "error"), "request_id",
                            json_string(request_id));
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    return text;
}

void mf_reply_header(mf_request *r, const char *name, const char *value)
{
    mf_response *p = &r->resp;
    size_t room = sizeof p->extra - p->extra_len;
    int n = snprintf(p->extra + p->extra_len, room, "%s: %s\r\n", name, value);
    if (n > 0 && (size_t)n < room) p->extra_len += (size_t)n;
}

static void add_cors(mf_request *r)
{
    const char *origin = r->srv->cfg->cors_origin;
    if (!origin[0]) return;
    mf_reply_header(r, "Access-Control-Allow-Origin", origin);
    mf_reply_header(r, "Access-Control-Expose-Headers", "Retry-After, X-Request-ID, Inference-Header-Content-Length");
    if (strcmp(origin, "*") != 0) mf_reply_header(r, "Vary", "Origin");
}

/* Finish the request's bookkeeping and count the answer. */
static void settle(mf_request *r, unsigned status, size_t len, const char *error_code)
{
    r->answered = 1;
    r->status = (int)status;
    r->bytes_out = len;
    r->error_code = error_code;
    r->latency_ms = mf_ms_since(r->start_ns);
    mf_metrics_request(r->srv->metrics, r->endpoint, (int)status, r->latency_ms * 1e-3);
    if (r->mv) mf_series_request(r->mv->series, (int)status, r->latency_ms * 1e-3);
}

int mf_reply(mf_request *r, unsigned status, const char *ctype, char *body, size_t len, int owned,
             const char *error_code)
{
    if (r->answered) { /* one answer per request: a second one is a bug upstream */
        if (owned) free(body);
        return 0;
    }
    settle(r, status, len, error_code);
    mf_response *p = &r->resp;
    p->status = status;
    p->ctype = ctype;
    p->body = body;
    p->len = len;
    p->owned = owned;
    add_cors(r);
    if (r->request_id[0]) mf_reply_header(r, "X-Request-ID", r->request_id);
    if (status == 503) mf_reply_header(r, "Retry-After", "1");
    if (status == 401) mf_reply_header(r, "WWW-Authenticate", "Bearer realm=\"mobileformer\"");
    if (status == 405 && r->allow) mf_reply_header(r, "Allow", r->allow);
    for (const char *const *h = r->headers; h && h[0]; h += 2) mf_reply_header(r, h[0], h[1]);
    mf_http_send(r);
    return 0;
}

/* The answer when even the JSON of an answer cannot be built: a fixed body,
 * so running out of memory is still a counted 503, not a dropped connection. */
static int reply_oom(mf_request *r)
{
    static const char v1[] =
        "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server is out of memory\"}}";
    static const char oip[] = "{\"error\":\"the server is out of memory\",\"code\":\"out_of_memory\"}";
    const char *body = r->dialect == MF_DIALECT_OIP ? oip : v1;
    size_t len = r->dialect == MF_DIALECT_OIP ? sizeof oip - 1 : sizeof v1 - 1;
    return mf_reply(r, 503, MF_JSON_TYPE, (char *)body, len, 0, "out_of_memory");
}

int mf_reply_json(mf_request *r, unsigned status, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (!text) return reply_oom(r);
    return mf_reply(r, status, MF_JSON_TYPE, text, strlen(text), 1, NULL);
}

int mf_reply_error(mf_request *r, mf_err e, const char *fmt, ...)
{
    char msg[512];
    mf_request_unexpect(r); /* a failed upload will not submit: no batch waits for it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* messages may quote client bytes: keep the JSON valid UTF-8 */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20) *p = '?';
    char *text = mf_err_render(e, r->dialect, msg, r->oip_id, r->request_id);
    if (!text) return reply_oom(r);
    return mf_reply(r, mf_err_status(e), MF_JSON_TYPE, text, strlen(text), 1, mf_err_code(e));
}

int mf_reply_options(mf_request *r)
{
    mf_reply_header(r, "Allow", "GET, HEAD, POST, OPTIONS");
    if (r->srv->cfg->cors_origin[0]) {
        mf_reply_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
        mf_reply_header(r, "Access-Control-Allow-Headers",
                        "Authorization, Content-Type, Inference-Header-Content-Length, X-Request-ID");
        mf_reply_header(r, "Access-Control-Max-Age", "600");
    }
    return mf_reply(r, 204, NULL, NULL, 0, 0, NULL);
}
