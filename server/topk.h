/* topk.h -- class probabilities from logits: softmax and top-k selection.
 *
 * Pure functions over caller-owned arrays; nothing is allocated, so they are
 * safe from any thread.  Used by the HTTP answer and by the CLI, so the two
 * report identical probabilities for the same logits.
 */
#ifndef MF_TOPK_H
#define MF_TOPK_H

/* probs[i] = exp(logits[i] - max) / sum_j exp(logits[j] - max), i < n.
 * Subtracting the max keeps every exp() in [0, 1], so large logits cannot
 * overflow.  probs may alias logits.  n >= 1. */
void mf_softmax(const float *logits, int n, float *probs);

/* Indices of the k largest scores, largest first; ties go to the lower index
 * so the order is deterministic.  k is capped at n (k <= 0 selects nothing).
 * idx must hold min(k, n) ints.  Returns the number written. */
int mf_topk(const float *scores, int n, int k, int *idx);

#endif
