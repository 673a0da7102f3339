/* predict.h -- a request's images on their way through the model: decoded and
 * preprocessed uploads, or tensors as sent, become jobs on the model
 * version's queue; the answer runs when the last is done.  /v1/predict is
 * built on it here, the Open Inference Protocol's infer in oip.c.
 *
 *   POST /v1/predict, /v1/models/{m}[/versions/{v}]/predict:
 *   begin  (headers)   top_k and Content-Type checked before any body byte is
 *                      read; the queue is told an image is on its way
 *   body   (complete)  multipart split; decode (limits from the header and a
 *                      time budget) and preprocess to the model's input, on
 *                      the decode pool unless the image is small; submit
 *   answer (jobs done) softmax, top-k, JSON with per-stage latencies
 *
 * A request's images are its own: each job is embedded in the request's
 * state and points at its own tensors, so a result can only travel back to
 * the request it came from (batcher.c, DESIGN).
 */
#ifndef MF_PREDICT_H
#define MF_PREDICT_H

#include "image.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mf_request mf_request;

int mf_predict_begin(mf_request *r);
int mf_predict_body(mf_request *r);

/* ---- the images of a request (used by oip.c too) ------------------------ */

/* Room for n images of h x w (0, 0: the model's input size) and their
 * logits.  0, or -1 with the error answered. */
int mf_images_alloc(mf_request *r, int n, int h, int w);

/* Image i from encoded bytes (which must stay valid until the decodes are
 * done): decoded (the server's limits) and preprocessed -- at once on this
 * thread while the request's images together are expected to be cheap,
 * else on the decode pool, at the batcher priority given (0 first).  A
 * pooled image not taken by a thread by deadline_ns (0: the model's
 * request_timeout_ms from now) is not decoded, and the request gets 504
 * timeout.  Its outcome is looked at by mf_images_decoded.  Returns 0. */
int mf_images_decode(mf_request *r, int i, const uint8_t *data, size_t len, int priority, uint64_t deadline_ns);

/* After the last mf_images_decode (every image of the request must have had
 * one): next(r) runs on this HTTP thread once every image is decoded (at
 * once when none went to the pool); the first image that failed is answered
 * instead ("image %d: " in the message when the request has several).  The connection waits meanwhile,
 * watched only for its client going away (then the decodes are cancelled). */
int mf_images_decoded(mf_request *r, int (*next)(mf_request *r));

/* Image i's input tensor, to fill directly ([3][h][w] floats). */
float *mf_images_input(mf_request *r, int i);

/* Submit every image (priority 0..MF_PRIORITIES-1, deadline 0 = the model's
 * timeout) and wait; answer(r) runs when all are done.  Returns what
 * mf_request_wait returns, or the error answer's. */
int mf_images_submit(mf_request *r, int priority, uint64_t deadline_ns, int (*answer)(mf_request *r));

/* After the jobs are done: 0 if all ran; else the error is answered and -1
 * returned (timeout 504, drained 503, engine 500). */
int mf_images_check(mf_request *r);

/* Image i's logits (after mf_images_check), its batch size and timings. */
float *mf_images_logits(mf_request *r, int i);
int mf_images_count(mf_request *r);

/* Release the request's image state (NULL state is fine). */
void mf_predict_free(mf_request *r);

#endif
