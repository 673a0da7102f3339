/* topk.c -- top-k and the predictions JSON; see topk.h. */
#include "topk.h"

#include <math.h>
#include <stdlib.h>

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

json_t *mf_predictions_json(const float *probs, int n, const char *const *labels, int k)
{
    if (k > n) k = n;
    int *idx = malloc((size_t)(k > 0 ? k : 1) * sizeof *idx);
    json_t *a = idx ? json_array() : NULL;
    int got = a ? mf_topk(probs, n, k, idx) : 0;
    for (int i = 0; a && i < got; i++) {
        float p = probs[idx[i]];
        json_t *o = isfinite(p) ? json_pack("{s:i,s:s,s:f}", "index", idx[i], "label", labels[idx[i]],
                                             "probability", (double)p)
                                : NULL;
        if (!o || json_array_append_new(a, o) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    free(idx);
    return a;
}
