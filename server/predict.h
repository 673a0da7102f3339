/* predict.h -- POST /v1/predict and /v1/models/{name}/predict: the body's
 * images -> decoded, preprocessed jobs on the batcher -> the top-k answer.
 *
 *   begin  (headers)   top_k, Content-Type and Content-Length checked, before
 *                      any body byte is read; the batcher is told an image
 *                      is on its way
 *   body   (complete)  multipart split, decode (max_pixels from the header),
 *                      preprocess to the model's input, submit, suspend
 *   answer (resumed)   softmax, top-k, JSON with per-stage latencies
 *
 * A request's images are its own: each job is embedded in the request's
 * state and points at its own tensors, so a result can only travel back to
 * the request it came from (batcher.c, DESIGN).
 */
#ifndef MF_PREDICT_H
#define MF_PREDICT_H


typedef struct mf_request mf_request;

int mf_predict_begin(mf_request *r);
int mf_predict_body(mf_request *r);

/* Release the request's predict state (NULL state is fine). */
void mf_predict_free(mf_request *r);

#endif
