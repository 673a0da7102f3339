/* reply.c -- the reply function, the error table and its renderings; see reply.h. */
#include "reply.h"

#include "mf_util.h"

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
    case MF_BATCHER_OK:
    case MF_BATCHER_THREAD:
    case MF_BATCHER_ARG: break;
    }
    return MF_E_INTERNAL;
}

char *mf_err_render(mf_err e, mf_dialect d, const char *msg)
{
    json_t *o = d == MF_DIALECT_OIP
                    ? json_pack("{s:s,s:s}", "error", msg, "code", mf_err_code(e))
                    : json_pack("{s:{s:s,s:s}}", "error", "code", mf_err_code(e), "message", msg);
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    return text;
}

static void add_cors(mf_request *r, struct MHD_Response *resp)
{
    const char *origin = r->srv->cfg->cors_origin;
    if (!origin[0]) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
    if (strcmp(origin, "*") != 0) MHD_add_response_header(resp, "Vary", "Origin");
}

/* Finish the request's bookkeeping and count the answer. */
static void settle(mf_request *r, unsigned status, size_t len, const char *error_code)
{
    r->state = MF_REQ_DONE;
    r->status = (int)status;
    r->bytes_out = len;
    r->error_code = error_code;
    r->latency_ms = mf_ms_since(r->start_ns);
    mf_metrics_request(r->srv->metrics, r->endpoint, (int)status, r->latency_ms * 1e-3);
}

enum MHD_Result mf_reply(mf_request *r, unsigned status, const char *ctype, char *body, size_t len,
                         enum MHD_ResponseMemoryMode mode, const char *error_code)
{
    struct mf_http *s = r->srv;
    settle(r, status, len, error_code);
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
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && r->allow) MHD_add_response_header(resp, "Allow", r->allow);
    for (const char *const *h = r->headers; h && h[0]; h += 2) MHD_add_response_header(resp, h[0], h[1]);
    if (atomic_load(&s->draining)) MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The answer when even the JSON of an answer cannot be built: a fixed body,
 * so running out of memory is still a counted 503, not a dropped connection. */
static enum MHD_Result reply_oom(mf_request *r)
{
    static const char v1[] =
        "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server is out of memory\"}}";
    static const char oip[] = "{\"error\":\"the server is out of memory\",\"code\":\"out_of_memory\"}";
    const char *body = r->dialect == MF_DIALECT_OIP ? oip : v1;
    size_t len = r->dialect == MF_DIALECT_OIP ? sizeof oip - 1 : sizeof v1 - 1;
    return mf_reply(r, MHD_HTTP_SERVICE_UNAVAILABLE, MF_JSON_TYPE, (char *)body, len, MHD_RESPMEM_PERSISTENT,
                    "out_of_memory");
}

enum MHD_Result mf_reply_json(mf_request *r, unsigned status, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (!text) return reply_oom(r);
    return mf_reply(r, status, MF_JSON_TYPE, text, strlen(text), MHD_RESPMEM_MUST_FREE, NULL);
}

enum MHD_Result mf_reply_error(mf_request *r, mf_err e, const char *fmt, ...)
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
    char *text = mf_err_render(e, r->dialect, msg);
    if (!text) return reply_oom(r);
    return mf_reply(r, mf_err_status(e), MF_JSON_TYPE, text, strlen(text), MHD_RESPMEM_MUST_FREE, mf_err_code(e));
}

enum MHD_Result mf_reply_options(mf_request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    settle(r, MHD_HTTP_NO_CONTENT, 0, NULL);
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
