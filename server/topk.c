/* topk.c -- softmax and top-k; see topk.h. */
#include "topk.h"

#include <math.h>

void mf_softmax(const float *logits, int n, float *probs)
{
    float max = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > max) max = logits[i];
    /* double accumulation: thousands of classes add no visible rounding */
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float e = expf(logits[i] - max);
        probs[i] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) probs[i] *= inv;
}

/* a ranks before b: larger score, then lower index */
static int ranks_before(const float *s, int a, int b)
{
    return s[a] > s[b] || (s[a] == s[b] && a < b);
}

int mf_topk(const float *scores, int n, int k, int *idx)
{
    if (k > n) k = n;
    if (k <= 0) return 0;
    /* Insertion into a sorted prefix: O(n*k), and k is small in practice
     * (5 by default); no scratch memory needed. */
    int len = 0;
    for (int i = 0; i < n; i++) {
        if (len == k && !ranks_before(scores, i, idx[k - 1])) continue;
        int j = len < k ? len++ : k - 1;
        while (j > 0 && ranks_before(scores, i, idx[j - 1])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    return k;
}
