/* mathfn.c -- scalar math shared by the forward pass, the kernels and the
 * answers: softmax (mf_util.h), LayerNorm and the hard sigmoid (internal.h). */
#include "internal.h"

#include <math.h>

void mf_softmax(const float *x, int n, float *probs)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float e = expf(x[i] - mx);
        probs[i] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) probs[i] *= inv;
}

static inline float relu6f(float x) { return x < 0.f ? 0.f : (x > 6.f ? 6.f : x); }

float mf_hsig(float x) { return relu6f(x + 3.f) / 6.f; }

void mf_layernorm(float *x, int rows, int d, const mf_norm *n)
{
    for (int r = 0; r < rows; r++) {
        float *v = x + (size_t)r * d;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < d; i++) mean += v[i];
        mean /= d;
        for (int i = 0; i < d; i++) var += (v[i] - mean) * (v[i] - mean);
        var /= d;
        float inv = (float)(1.0 / sqrt(var + 1e-5));
        for (int i = 0; i < d; i++) v[i] = (float)(v[i] - mean) * inv * n->g[i] + n->b[i];
    }
}
