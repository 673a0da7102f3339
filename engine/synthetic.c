/* synthetic.c -- deterministic weights (mf_synthetic.h): the splitmix64
 * uniform stream and the per-tensor offset/scale rule, the same as
 * tools/mfweights.py, so the C engine and the PyTorch twin build identical
 * models from a seed. */
#include "internal.h"
#include "mf_synthetic.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void mf_fill_uniform(float *out, size_t n, uint64_t seed, double offset, double scale)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s += 0x9E3779B97F4A7C15ULL;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        double u = (double)(z >> 40) * (1.0 / 16777216.0);
        out[i] = (float)(offset + scale * (2.0 * u - 1.0));
    }
}

typedef struct synth_ctx {
    uint64_t seed;
    const mf_tensor_spec *specs; /* the architecture's list: index = seed offset */
    int n;
    float **bufs;                /* [n] generated tensors, freed after the build */
} synth_ctx;

/* Offset/scale per tensor kind, the rule the golden manifests follow (and
 * tools/mfweights.py): weights uniform with variance 1/fan_in, i.e.
 * +- sqrt(3/fan_in); tokens +- 1; BN / LayerNorm weight 1 +- .25; biases
 * +- .02; running_mean +- .05; running_var 1 +- .4. */
static void synthetic_rule(const mf_tensor_spec *s, double *offset, double *scale)
{
    size_t len = strlen(s->name);
#define ENDS(x) (len >= sizeof(x) - 1 && strcmp(s->name + len - (sizeof(x) - 1), x) == 0)
    *offset = 0.0;
    if (strcmp(s->name, "tokens.weight") == 0) { *scale = 1.0; return; }
    if (ENDS(".running_mean")) { *scale = 0.05; return; }
    if (ENDS(".running_var")) { *offset = 1.0; *scale = 0.4; return; }
    if (ENDS(".bias")) { *scale = 0.02; return; }
    if (s->ndim == 1) { *offset = 1.0; *scale = 0.25; return; } /* BN / LayerNorm gain */
    size_t fan_in = s->numel / (size_t)s->shape[0];
    *scale = sqrt(3.0 / (double)fan_in);
#undef ENDS
}

static const float *synth_lookup(void *ctx, const mf_tensor_spec *spec)
{
    synth_ctx *c = ctx;
    int idx = -1;
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->specs[i].name, spec->name) == 0) { idx = i; break; }
    if (idx < 0) return NULL;
    /* seeds count the reference's state_dict slots, including each BatchNorm's
     * num_batches_tracked (after its running_var), which the list omits */
    uint64_t slot = (uint64_t)idx;
    for (int i = 0; i < idx; i++) {
        size_t len = strlen(c->specs[i].name);
        if (len > 12 && strcmp(c->specs[i].name + len - 12, ".running_var") == 0) slot++;
    }
    if (!c->bufs[idx]) {
        c->bufs[idx] = malloc(spec->numel * sizeof(float));
        if (!c->bufs[idx]) return NULL;
        double off, sc;
        synthetic_rule(spec, &off, &sc);
        mf_fill_uniform(c->bufs[idx], spec->numel, c->seed + slot, off, sc);
    }
    return c->bufs[idx];
}

mf_status mf_model_synthetic(const mf_arch *a, int num_classes, uint64_t seed, mf_model **out, char *err,
                             size_t errlen)
{
    return mf_model_synthetic_opts(a, num_classes, seed, NULL, out, err, errlen);
}

mf_status mf_model_synthetic_opts(const mf_arch *a, int num_classes, uint64_t seed, const mf_model_options *o,
                                  mf_model **out, char *err, size_t errlen)
{
    mf_tensor_spec *specs;
    *out = NULL;
    mf_status st = mf_arch_validate(a, err, errlen);
    if (st != MF_OK) return st;
    int n = mf_arch_tensor_specs(a, num_classes, &specs);
    if (n < 0) return MF_ERR_NOMEM;
    synth_ctx c = {.seed = seed, .specs = specs, .n = n, .bufs = calloc((size_t)n, sizeof(float *))};
    if (!c.bufs) { free(specs); return MF_ERR_NOMEM; }
    st = mf_model_build_opts(a, num_classes, synth_lookup, &c, NULL, NULL, o, out, err, errlen);
    for (int i = 0; i < n; i++) free(c.bufs[i]);
    free(c.bufs);
    free(specs);
    return st;
}
