/* model.c -- builds an mf_model from checkpoint tensors: checks every tensor
 * against the architecture, folds each BatchNorm into the layer before it,
 * folds channel multipliers and shuffles into index maps / output strides,
 * transposes token-side linears and packs 1x1 weights for the kernel set in
 * use.  The model is read-only afterwards. */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5

typedef struct build_ctx {
    mf_model *m;
    mf_tensor_spec *specs;
    int nspecs;
    mf_tensor_lookup lookup;
    void *lctx;
    char *err;
    size_t errlen;
    int failed;      /* set with status on the first error */
    mf_status status;
    void **allocs;  /* every weight allocation, freed with the model */
    int nallocs, capallocs;
} build_ctx;

void *mf_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void mf_free(void *p) { free(p); }

static float *walloc(build_ctx *c, size_t n)
{
    if (c->failed) return NULL;
    if (c->nallocs == c->capallocs) {
        int cap = c->capallocs ? c->capallocs * 2 : 512;
        void **a = realloc(c->allocs, (size_t)cap * sizeof *a);
        if (!a) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); return NULL; }
        c->allocs = a;
        c->capallocs = cap;
    }
    float *p = mf_alloc(n * sizeof(float));
    if (!p) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); return NULL; }
    c->allocs[c->nallocs++] = p;
    c->m->bytes += n * sizeof(float);
    return p;
}

/* The tensor named by fmt, checked for presence and finite values. */
static const float *get(build_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const float *get(build_ctx *c, const char *fmt, ...)
{
    if (c->failed) return NULL;
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    for (int i = 0; i < c->nspecs; i++) {
        if (strcmp(c->specs[i].name, name) != 0) continue;
        const float *d = c->lookup(c->lctx, &c->specs[i]);
        if (!d) {
            mf_set_err(c->err, c->errlen, "missing tensor '%s'", name);
            c->failed = 1;
            c->status = MF_ERR_TENSOR;
            return NULL;
        }
        for (size_t k = 0; k < c->specs[i].numel; k++) {
            if (!isfinite(d[k])) {
                mf_set_err(c->err, c->errlen, "tensor '%s' holds a non-finite value at index %zu", name, k);
                c->failed = 1;
                c->status = MF_ERR_TENSOR;
                return NULL;
            }
        }
        return d;
    }
    mf_set_err(c->err, c->errlen, "internal: no spec for tensor '%s'", name);
    c->failed = 1;
    return NULL;
}

/* BatchNorm (prefix.{weight,bias,running_mean,running_var}) as scale/shift. */
static int bn_scale_shift(build_ctx *c, const char *prefix, int n, double *scale, double *shift)
{
    const float *g = get(c, "%s.weight", prefix), *b = get(c, "%s.bias", prefix);
    const float *mu = get(c, "%s.running_mean", prefix), *var = get(c, "%s.running_var", prefix);
    if (c->failed) return -1;
    for (int i = 0; i < n; i++) {
        if (var[i] < 0) {
            mf_set_err(c->err, c->errlen, "tensor '%s.running_var' has a negative entry", prefix);
            c->failed = 1;
            c->status = MF_ERR_TENSOR;
            return -1;
        }
        scale[i] = (double)g[i] / sqrt((double)var[i] + BN_EPS);
        shift[i] = (double)b[i] - (double)mu[i] * scale[i];
    }
    return 0;
}

/* Conv weight [n][per] times BN -> folded weight and bias (malloc'd temps). */
static int fold_conv(build_ctx *c, const char *conv, const char *bn, int n, size_t per, float **w_out,
                     float **b_out)
{
    double *s = malloc((size_t)n * 2 * sizeof(double));
    float *w = malloc((size_t)n * per * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    const float *src = get(c, "%s.weight", conv);
    if (!s || !w || !b || bn_scale_shift(c, bn, n, s, s + n) || !src) {
        if (!c->failed) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); }
        free(s); free(w); free(b);
        return -1;
    }
    for (int o = 0; o < n; o++) {
        for (size_t i = 0; i < per; i++) w[o * per + i] = (float)(src[o * per + i] * s[o]);
        b[o] = (float)s[n + o];
    }
    free(s);
    *w_out = w;
    *b_out = b;
    return 0;
}

static void set_pw(build_ctx *c, mf_pw *p, const char *conv, const char *bn, int cout, int cin, int groups,
                   int shuffle_out)
{
    float *w, *b;
    p->cout = cout;
    p->cin = cin;
    p->groups = groups;
    p->shuffle_out = shuffle_out && groups > 1;
    if (fold_conv(c, conv, bn, cout, (size_t)(cin / groups), &w, &b)) return;
    p->bias = walloc(c, (size_t)cout);
    if (p->bias) memcpy(p->bias, b, (size_t)cout * sizeof(float));
    int M = cout / groups, K = cin / groups;
    if (c->m->k->pw_pack) {
        p->wp_group = mf_pw_packed_floats(M, K);
        p->wp = walloc(c, p->wp_group * (size_t)groups);
        for (int g = 0; p->wp && g < groups; g++)
            mf_pw_pack(w + (size_t)g * M * K, M, K, p->wp + p->wp_group * (size_t)g);
    } else {
        p->w = walloc(c, (size_t)cout * K);
        if (p->w) memcpy(p->w, w, (size_t)cout * K * sizeof(float));
    }
    free(w);
    free(b);
}

/* Depthwise conv with multiplier e (out = in*e); shuffled: a following
 * shuffle(in) is folded in (post channel j*in+i is pre channel i*e+j). */
static void set_dw(build_ctx *c, mf_dw *d, const char *conv, const char *bn, int cin, int e, int stride,
                   int shuffled)
{
    float *w, *b;
    int cout = cin * e;
    d->cout = cout;
    d->cin = cin;
    d->stride = stride;
    if (fold_conv(c, conv, bn, cout, 9, &w, &b)) return;
    d->w = walloc(c, (size_t)cout * 9);
    d->bias = walloc(c, (size_t)cout);
    float *srcf = walloc(c, (size_t)cout); /* ints stored in a float-sized slot */
    if (!c->failed) {
        d->src = (int *)srcf;
        for (int q = 0; q < cout; q++) {
            int pre = shuffled ? (q % cin) * e + q / cin : q;
            d->src[q] = pre / e;
            memcpy(d->w + (size_t)q * 9, w + (size_t)pre * 9, 9 * sizeof(float));
            d->bias[q] = b[pre];
        }
    }
    free(w);
    free(b);
}

/* Transposed weight [in][out] -> the layout of the kernel set (plain or packed). */
static void store_lin(build_ctx *c, mf_lin *l, float *wt)
{
    if (c->m->k->lin_pack) {
        l->wp = walloc(c, mf_lin_packed_floats(l->in, l->out));
        if (l->wp) mf_lin_pack(wt, l->in, l->out, l->wp);
    } else {
        l->wt = walloc(c, (size_t)l->out * l->in);
        if (l->wt) memcpy(l->wt, wt, (size_t)l->out * l->in * sizeof(float));
    }
}

/* Linear prefix.{weight,bias}; scale/shift (may be NULL) fold a following
 * BatchNorm1d: y = (W x + b) * scale + shift. */
static void set_lin_bn(build_ctx *c, mf_lin *l, const char *prefix, int out, int in, const double *scale,
                       const double *shift)
{
    const float *w = get(c, "%s.weight", prefix), *b = get(c, "%s.bias", prefix);
    l->out = out;
    l->in = in;
    l->b = walloc(c, (size_t)out);
    float *wt = c->failed ? NULL : malloc((size_t)out * in * sizeof(float));
    if (!wt) {
        if (!c->failed) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); }
        return;
    }
    for (int o = 0; o < out; o++) {
        double s = scale ? scale[o] : 1.0;
        for (int i = 0; i < in; i++) wt[(size_t)i * out + o] = (float)(w[(size_t)o * in + i] * s);
        l->b[o] = scale ? (float)(b[o] * s + shift[o]) : b[o];
    }
    store_lin(c, l, wt);
    free(wt);
}

static void set_lin(build_ctx *c, mf_lin *l, const char *prefix, int out, int in)
{
    set_lin_bn(c, l, prefix, out, in, NULL, NULL);
}

static void set_norm(build_ctx *c, mf_norm *n, const char *prefix, int d)
{
    const float *g = get(c, "%s.weight", prefix), *b = get(c, "%s.bias", prefix);
    n->g = walloc(c, (size_t)d);
    n->b = walloc(c, (size_t)d);
    if (c->failed) return;
    memcpy(n->g, g, (size_t)d * sizeof(float));
    memcpy(n->b, b, (size_t)d * sizeof(float));
}

static void set_m2f(build_ctx *c, mf_m2f *b, const char *p, int C, int D)
{
    char s[128];
    snprintf(s, sizeof s, "%s.q", p); set_lin(c, &b->q, s, C, D);
    snprintf(s, sizeof s, "%s.alpha.0", p); set_lin(c, &b->alpha, s, C, D);
    snprintf(s, sizeof s, "%s.proj", p); set_lin(c, &b->proj, s, D, C);
    snprintf(s, sizeof s, "%s.layer_norm", p); set_norm(c, &b->ln, s, D);
}

static void set_bridges(build_ctx *c, mf_block *bl, int i, int D)
{
    char p[128];
    snprintf(p, sizeof p, "features.%d.local_global", i);
    set_m2f(c, &bl->m2f, p, bl->cin, D);
    snprintf(p, sizeof p, "features.%d.global_block.q", i); set_lin(c, &bl->former.q, p, D, D);
    snprintf(p, sizeof p, "features.%d.global_block.channel_mlp", i); set_lin(c, &bl->former.mlp, p, D, D);
    snprintf(p, sizeof p, "features.%d.global_block.layer_norm", i); set_norm(c, &bl->former.ln, p, D);
    snprintf(p, sizeof p, "features.%d.global_block.ffn.0", i); set_lin(c, &bl->former.ffn1, p, 2 * D, D);
    snprintf(p, sizeof p, "features.%d.global_block.ffn.2", i); set_lin(c, &bl->former.ffn2, p, D, 2 * D);
    snprintf(p, sizeof p, "features.%d.global_block.ffn_norm", i); set_norm(c, &bl->former.ffn_ln, p, D);
    snprintf(p, sizeof p, "features.%d.global_local.k", i); set_lin(c, &bl->f2m.k, p, bl->cout, D);
    snprintf(p, sizeof p, "features.%d.global_local.proj", i); set_lin(c, &bl->f2m.v, p, bl->cout, D);
}

static void set_hyper(build_ctx *c, mf_hyper *h, int i, const char *name, int D, int C)
{
    char p[128];
    snprintf(p, sizeof p, "features.%d.%s.hyper.0", i, name); set_lin(c, &h->l1, p, D / 4, D);
    snprintf(p, sizeof p, "features.%d.%s.hyper.2", i, name); set_lin(c, &h->l2, p, 2 * C, D / 4);
}

static void build_blocks(build_ctx *c)
{
    mf_model *m = c->m;
    const mf_arch *a = &m->arch;
    const int D = a->token_dim, G = a->groups;
    char s1[128], s2[128];
    int in = a->stem;
    for (int i = 0; i < a->n_blocks && !c->failed; i++) {
        const mf_block_desc *d = &a->blocks[i];
        mf_block *b = &m->blocks[i];
        b->type = d->type;
        b->cin = in;
        b->cout = d->c;
        b->stride = d->s;
        b->identity = d->s == 1 && in == d->c;
        if (d->type == MF_BLOCK_A) {
            b->hid1 = in * d->e1;
            snprintf(s1, sizeof s1, "features.%d.conv.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv.1", i);
            set_dw(c, &b->dw1, s1, s2, in, d->e1, d->s, G > 1);
            snprintf(s1, sizeof s1, "features.%d.conv.4", i);
            snprintf(s2, sizeof s2, "features.%d.conv.5", i);
            set_pw(c, &b->pw1, s1, s2, d->c, b->hid1, G, 0);
        } else if (d->type == MF_BLOCK_B3) {
            b->hid1 = in * d->e1;
            b->hid2 = d->c * d->e2;
            snprintf(s1, sizeof s1, "features.%d.conv1.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv1.1", i);
            set_dw(c, &b->dw1, s1, s2, in, d->e1, d->s, G > 1);
            set_hyper(c, &b->hy1, i, "hyper1", D, b->hid1);
            snprintf(s1, sizeof s1, "features.%d.conv2.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv2.1", i);
            set_pw(c, &b->pw1, s1, s2, d->c, b->hid1, G, 0);
            snprintf(s1, sizeof s1, "features.%d.conv3.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv3.1", i);
            set_dw(c, &b->dw2, s1, s2, d->c, d->e2, 1, G > 1);
            set_hyper(c, &b->hy2, i, "hyper3", D, b->hid2);
            snprintf(s1, sizeof s1, "features.%d.conv4.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv4.1", i);
            set_pw(c, &b->pw2, s1, s2, d->c, b->hid2, G, 0);
            set_bridges(c, b, i, D);
        } else {
            b->hid1 = in * d->e1;
            snprintf(s1, sizeof s1, "features.%d.conv1.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv1.1", i);
            set_pw(c, &b->pw1, s1, s2, b->hid1, in, G, 1);
            set_hyper(c, &b->hy1, i, "hyper1", D, b->hid1);
            snprintf(s1, sizeof s1, "features.%d.conv2.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv2.1", i);
            set_dw(c, &b->dw1, s1, s2, b->hid1, 1, d->s, 0);
            set_hyper(c, &b->hy2, i, "hyper2", D, b->hid1);
            snprintf(s1, sizeof s1, "features.%d.conv3.0", i);
            snprintf(s2, sizeof s2, "features.%d.conv3.1", i);
            set_pw(c, &b->pw2, s1, s2, d->c, b->hid1, G, 1);
            set_bridges(c, b, i, D);
        }
        in = d->c;
    }
}

static void build_head(build_ctx *c, int num_classes)
{
    mf_model *m = c->m;
    const mf_arch *a = &m->arch;
    const int D = a->token_dim;
    int C = a->blocks[a->n_blocks - 1].c, hid = C * a->last_exp, W = a->classifier_width;
    set_m2f(c, &m->final_m2f, "local_global", C, D);
    set_pw(c, &m->cls_pw, "classifier.conv.1", "classifier.conv.2", hid, C, a->groups, 0);
    /* fc.0 followed by BatchNorm1d fc.1, folded */
    double *s = malloc((size_t)W * 2 * sizeof(double));
    if (!s) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); return; }
    if (!c->failed && bn_scale_shift(c, "classifier.fc.1", W, s, s + W) == 0)
        set_lin_bn(c, &m->fc, "classifier.fc.0", W, hid + D, s, s + W);
    free(s);
    set_lin(c, &m->head, "classifier.classifier.1", num_classes, W);
    m->fc.stream = m->head.stream = 1; /* read once per run: do not let them evict the rest */
}

static void build_stem(build_ctx *c)
{
    mf_model *m = c->m;
    const float *tok = get(c, "tokens.weight");
    size_t n = (size_t)m->arch.tokens * m->arch.token_dim;
    m->tokens = walloc(c, n);
    if (!c->failed) memcpy(m->tokens, tok, n * sizeof(float));
    /* the stem conv [stem][3][3][3], BN folded, plain: read by the direct
     * stem kernel, or as a 1x1 conv over a 27-row im2col by the portable ones */
    float *w, *b;
    if (c->failed || fold_conv(c, "stem.0", "stem.1", m->arch.stem, 27, &w, &b)) return;
    m->stem_w = walloc(c, (size_t)m->arch.stem * 27);
    m->stem_b = walloc(c, (size_t)m->arch.stem);
    if (!c->failed) {
        memcpy(m->stem_w, w, (size_t)m->arch.stem * 27 * sizeof(float));
        memcpy(m->stem_b, b, (size_t)m->arch.stem * sizeof(float));
    }
    free(w);
    free(b);
}

void mf_preprocess_default(mf_preprocess *p)
{
    memset(p, 0, sizeof *p);
    p->input_h = p->input_w = 224;
    p->resize = 256;
    snprintf(p->interpolation, sizeof p->interpolation, "bilinear");
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
    p->channels = 3;
}

void mf_model_free(mf_model *m)
{
    if (!m) return;
    void **allocs = m->arena;
    if (allocs) {
        for (int i = 0; allocs[i]; i++) mf_free(allocs[i]);
        free(allocs);
    }
    if (m->labels) {
        for (int i = 0; i < m->num_classes; i++) free(m->labels[i]);
        free(m->labels);
    }
    free(m);
}

mf_status mf_model_build(const mf_arch *a, int num_classes, mf_tensor_lookup lookup, void *ctx,
                         const mf_preprocess *pre, const char *const *labels, mf_model **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    mf_status st = mf_arch_validate(a, err, errlen);
    if (st != MF_OK) return st;
    if (num_classes < 1 || num_classes > 100000) {
        mf_set_err(err, errlen, "num_classes must be in 1..100000, got %d", num_classes);
        return MF_ERR_ARG;
    }
    mf_model *m = calloc(1, sizeof *m);
    if (!m) return MF_ERR_NOMEM;
    m->arch = *a;
    m->num_classes = num_classes;
    m->k = mf_kernels_select();
    if (pre) m->pre = *pre;
    else mf_preprocess_default(&m->pre);

    build_ctx c = {.m = m, .lookup = lookup, .lctx = ctx, .err = err, .errlen = errlen};
    c.nspecs = mf_arch_tensor_specs(a, num_classes, &c.specs);
    if (c.nspecs < 0) { free(m); return MF_ERR_NOMEM; }
    build_stem(&c);
    build_blocks(&c);
    build_head(&c, num_classes);
    free(c.specs);

    /* the allocation list, NULL-terminated, is kept to free the weights */
    void **list = realloc(c.allocs, (size_t)(c.nallocs + 1) * sizeof *list);
    if (!list) {
        for (int i = 0; i < c.nallocs; i++) mf_free(c.allocs[i]);
        free(c.allocs);
        c.failed = 1;
    } else {
        list[c.nallocs] = NULL;
    }
    m->arena = list;

    m->labels = calloc((size_t)num_classes, sizeof *m->labels);
    for (int i = 0; m->labels && i < num_classes && !c.failed; i++) {
        char buf[32];
        const char *l = labels && labels[i] ? labels[i] : NULL;
        if (!l) { snprintf(buf, sizeof buf, "class_%d", i); l = buf; }
        m->labels[i] = strdup(l);
        if (!m->labels[i]) c.failed = 1;
    }
    if (!m->labels) c.failed = 1;
    if (c.failed) {
        if (c.status == MF_OK) {
            c.status = MF_ERR_NOMEM;
            mf_set_err(err, errlen, "out of memory");
        }
        mf_model_free(m);
        return c.status;
    }
    *out = m;
    return MF_OK;
}

const mf_arch *mf_model_arch(const mf_model *m) { return &m->arch; }
int mf_model_num_classes(const mf_model *m) { return m->num_classes; }
const mf_preprocess *mf_model_preprocess(const mf_model *m) { return &m->pre; }
size_t mf_model_bytes(const mf_model *m) { return m->bytes; }

const char *mf_model_label(const mf_model *m, int i)
{
    if (i < 0 || i >= m->num_classes) return "";
    return m->labels[i];
}

/* ---- synthetic weights --------------------------------------------------- */

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
    mf_tensor_spec *specs;
    *out = NULL;
    mf_status st = mf_arch_validate(a, err, errlen);
    if (st != MF_OK) return st;
    int n = mf_arch_tensor_specs(a, num_classes, &specs);
    if (n < 0) return MF_ERR_NOMEM;
    synth_ctx c = {.seed = seed, .specs = specs, .n = n, .bufs = calloc((size_t)n, sizeof(float *))};
    if (!c.bufs) { free(specs); return MF_ERR_NOMEM; }
    st = mf_model_build(a, num_classes, synth_lookup, &c, NULL, NULL, out, err, errlen);
    for (int i = 0; i < n; i++) free(c.bufs[i]);
    free(c.bufs);
    free(specs);
    return st;
}
