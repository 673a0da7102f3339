/* topk.h -- class probabilities to answers: top-k selection and the
 * "predictions" JSON that the service (/v1/predict) and the command line
 * (mobileformer predict) both print, so the two cannot differ.
 *
 * Softmax itself is mf_softmax (engine/mf_util.h), the one the engine uses.
 * mf_topk is a pure function over caller-owned arrays (nothing allocated);
 * mf_predictions_json allocates the JSON it returns.  Both are thread-safe.
 */
#ifndef MF_TOPK_H
#define MF_TOPK_H

#include "mf.h"

#include <jansson.h>

/* Indices of the k largest scores, largest first; ties go to the lower index
 * so the order is deterministic.  k is capped at n (k <= 0 selects nothing).
 * idx must hold min(k, n) ints.  Returns the number written. */
int mf_topk(const float *scores, int n, int k, int *idx);

/* [{"index": i, "label": "...", "probability": p}, ...] for the k most
 * probable of n classes (probs: softmax outputs; labels[i] the name of class
 * i; k capped at n).  NULL when a probability is not finite (a broken model)
 * or memory runs out. */
json_t *mf_predictions_json(const float *probs, int n, const char *const *labels, int k);

#endif
