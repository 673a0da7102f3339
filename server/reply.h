/* reply.h -- every answer the service writes, and the one error table.
 *
 * THE reply function (mf_reply) queues every answer, success or error, and
 * counts it in the metrics; nothing else writes an answer.  Errors
 * come from one table of {code, HTTP status} (MF_ERRORS, the role of Redis's
 * shared error objects): a handler names the entry and a message, and the
 * request's API decides the body's shape from that one entry:
 *   /v1 and the service's own endpoints   {"error": {"code": "...", "message": "..."}}
 *   Open Inference Protocol (/v2 ...)     {"error": "<message>", "code": "..."}
 * Statuses of the other modules (image decoding, multipart, the batcher)
 * map to entries here, once (mf_err_of_*).
 *
 * Headers every answer may carry: CORS (cors_origin), Retry-After on 503,
 * WWW-Authenticate on 401, Allow on 405, Connection: close while draining,
 * and the request's own extra headers (r->headers).
 */
#ifndef MF_REPLY_H
#define MF_REPLY_H

#include "batcher.h"
#include "image.h"
#include "multipart.h"
#include "request.h"

#include <jansson.h>

/* name, code, HTTP status (499: the client went away first; logged and
 * counted, never sent) */
#define MF_ERRORS(X)                                                    \
    X(NOT_FOUND, "not_found", 404)                                      \
    X(MODEL_NOT_FOUND, "model_not_found", 404)                          \
    X(VERSION_NOT_FOUND, "version_not_found", 404)                      \
    X(MODEL_NOT_READY, "model_not_ready", 503)                          \
    X(NO_DEFAULT_MODEL, "no_default_model", 400)                        \
    X(LOAD_FAILED, "load_failed", 400)                                  \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405)                    \
    X(UNAUTHORIZED, "unauthorized", 401)                                \
    X(EMPTY_BODY, "empty_body", 400)                                    \
    X(CORRUPT_IMAGE, "corrupt_image", 400)                              \
    X(UNSUPPORTED_IMAGE, "unsupported_image", 400)                      \
    X(IMAGE_TOO_LARGE, "image_too_large", 413)                          \
    X(IMAGE_TOO_COMPLEX, "image_too_complex", 422)                      \
    X(DECODE_TIMEOUT, "decode_timeout", 422)                            \
    X(BAD_TOP_K, "bad_top_k", 400)                                      \
    X(BAD_CONTENT_TYPE, "bad_content_type", 400)                        \
    X(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415)            \
    X(BODY_TOO_LARGE, "body_too_large", 413)                            \
    X(MULTIPART_NO_BOUNDARY, "multipart_no_boundary", 400)              \
    X(MULTIPART_NO_DELIMITER, "multipart_no_delimiter", 400)            \
    X(MULTIPART_TRUNCATED, "multipart_truncated", 400)                  \
    X(MULTIPART_BAD_DELIMITER, "multipart_bad_delimiter", 400)          \
    X(MULTIPART_HEADER_TOO_LONG, "multipart_header_too_long", 400)      \
    X(MULTIPART_BAD_HEADER, "multipart_bad_header", 400)                \
    X(MULTIPART_NO_DISPOSITION, "multipart_no_disposition", 400)        \
    X(MULTIPART_TOO_MANY_PARTS, "multipart_too_many_parts", 400)        \
    X(MULTIPART_NO_IMAGE, "multipart_no_image", 400)                    \
    X(QUEUE_FULL, "queue_full", 503)                                    \
    X(SHUTTING_DOWN, "shutting_down", 503)                              \
    X(NOT_READY, "not_ready", 503)                                      \
    X(OUT_OF_MEMORY, "out_of_memory", 503)                              \
    X(TIMEOUT, "timeout", 504)                                          \
    X(INFERENCE_FAILED, "inference_failed", 500)                        \
    X(PREPROCESS_FAILED, "preprocess_failed", 500)                      \
    X(BAD_REQUEST, "bad_request", 400)                                  \
    X(REQUEST_TIMEOUT, "request_timeout", 408)                          \
    X(HEAD_TOO_LARGE, "request_header_too_large", 431)                  \
    X(BAD_VERSION, "http_version_not_supported", 505)                   \
    X(TOO_MANY_CONNECTIONS, "too_many_connections", 503)                \
    X(BODY_BUDGET, "too_many_uploads", 503)                             \
    X(CLIENT_GONE, "client_closed_request", 499)                        \
    X(INTERNAL, "internal_error", 500)

typedef enum mf_err {
#define MF_ERR_ENUM(name, code, status) MF_E_##name,
    MF_ERRORS(MF_ERR_ENUM)
#undef MF_ERR_ENUM
    MF_E_COUNT
} mf_err;

/* The entry's stable code and HTTP status. */
const char *mf_err_code(mf_err e);
unsigned mf_err_status(mf_err e);

/* The entries other modules' statuses answer with (their OK has none:
 * MF_E_INTERNAL is returned for it). */
mf_err mf_err_of_image(mf_img_status s);
mf_err mf_err_of_multipart(mf_multipart_status s);
mf_err mf_err_of_batcher(mf_batcher_status s);

/* The error body of entry e with message msg in dialect d (malloc'd); the
 * protocol's body also carries the infer request's id when there is one
 * (id, may be NULL), and both carry the X-Request-ID (request_id, may be
 * NULL or ""): {"error": {"code", "message", "request_id"}} and
 * {"error": "<message>", "code", "id", "request_id"}. */
char *mf_err_render(mf_err e, mf_dialect d, const char *msg, const char *id, const char *request_id);

/* Queue an answer and count it: status, Content-Type (may be NULL), body of
 * len bytes; owned: free(body) once written (also on failure).  error_code
 * is the code to log, or NULL.  One answer per request.  Returns 0. */
int mf_reply(mf_request *r, unsigned status, const char *ctype, char *body, size_t len, int owned,
             const char *error_code);

/* One more header line on the answer being built (before mf_reply). */
void mf_reply_header(mf_request *r, const char *name, const char *value);

/* A JSON object (reference stolen) as the answer; out of memory (o NULL)
 * answers out_of_memory. */
int mf_reply_json(mf_request *r, unsigned status, json_t *o);

/* An error from the table, message from fmt (client bytes in it are made
 * safe); also tells the batcher this request will submit no image. */
int mf_reply_error(mf_request *r, mf_err e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* 204 to a CORS preflight. */
int mf_reply_options(mf_request *r);

#endif
