/* model.c -- builds an mf_model from checkpoint tensors: checks every tensor
 * against the architecture, folds each BatchNorm into the layer before it,
 * folds channel multipliers and shuffles into index maps / output strides,
 * transposes token-side linears and packs 1x1 weights for the kernel set in
 * use.  In a bf16 model the 1x1 convolutions' and linears' folded weights are
 * rounded to bfloat16 here, once, before their set packs them.  The model
 * is read-only afterwards. */
#include "internal.h"
#include "recipe.h"

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
} build_ctx;

static void *walloc_bytes(build_ctx *c, size_t bytes)
{
    if (c->failed) return NULL;
    void *p = mf_arena_alloc(c->m->arena, bytes);
    if (!p) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); return NULL; }
    c->m->bytes += bytes;
    return p;
}

static float *walloc(build_ctx *c, size_t n) { return walloc_bytes(c, n * sizeof(float)); }

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

/* Round a bf16 set's weights to bf16 values before its pack (or plain copy). */
static void round_for(const mf_kernels *k, float *w, size_t n)
{
    if (k->precision != MF_PRECISION_BF16) return;
    for (size_t i = 0; i < n; i++) w[i] = mf_bf16_round(w[i]);
}

/* The set of a 1x1 conv: the model's GEMM set, except that a bf16 model
 * runs the 1x1s with fewer than 16 input channels per group (26m's grouped
 * ones: 3 to 12) on its fp32 set, where bf16 tiles and pairs would be
 * mostly padding (26m's blocks ran 2x slower in bf16 than in fp32). */
static const mf_kernels *pw_set(const mf_model *m, int cin, int groups)
{
    return m->k != m->k32 && cin / groups < 16 ? m->k32 : m->k;
}

static void set_pw(build_ctx *c, const mf_kernels *k, mf_pw *p, const char *conv, const char *bn, int cout, int cin,
                   int groups, int shuffle_out)
{
    float *w, *b;
    p->k = k;
    p->cout = cout;
    p->cin = cin;
    p->groups = groups;
    p->shuffle_out = shuffle_out && groups > 1;
    if (fold_conv(c, conv, bn, cout, (size_t)(cin / groups), &w, &b)) return;
    p->bias = walloc(c, (size_t)cout);
    if (p->bias) memcpy(p->bias, b, (size_t)cout * sizeof(float));
    int M = cout / groups, K = cin / groups;
    round_for(k, w, (size_t)cout * K);
    if (k->pw_pack) {
        p->wp_group = (k->pw_packed_bytes(M, K) + 63) & ~(size_t)63;
        p->wp = walloc_bytes(c, p->wp_group * (size_t)groups);
        for (int g = 0; p->wp && g < groups; g++)
            k->pw_pack(w + (size_t)g * M * K, M, K, (char *)p->wp + p->wp_group * (size_t)g);
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
    const mf_kernels *k = l->k;
    round_for(k, wt, (size_t)l->out * l->in);
    if (k->lin_pack) {
        l->wp = walloc_bytes(c, k->lin_packed_bytes(l->in, l->out));
        if (l->wp) k->lin_pack(wt, l->in, l->out, l->wp);
    } else {
        l->wt = walloc(c, (size_t)l->out * l->in);
        if (l->wt) memcpy(l->wt, wt, (size_t)l->out * l->in * sizeof(float));
    }
}

/* Linear prefix.{weight,bias}; scale/shift (may be NULL) fold a following
 * BatchNorm1d: y = (W x + b) * scale + shift. */
static void set_lin_bn(build_ctx *c, const mf_kernels *k, mf_lin *l, const char *prefix, int out, int in,
                       const double *scale, const double *shift)
{
    const float *w = get(c, "%s.weight", prefix), *b = get(c, "%s.bias", prefix);
    l->k = k;
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

static void set_lin(build_ctx *c, const mf_kernels *k, mf_lin *l, const char *prefix, int out, int in)
{
    set_lin_bn(c, k, l, prefix, out, in, NULL, NULL);
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

static void set_hyper(build_ctx *c, const mf_kernels *k, mf_hyper *h, const char *p, int D, int C)
{
    char s[192];
    snprintf(s, sizeof s, "%s.hyper.0", p); set_lin(c, k, &h->l1, s, D / 4, D);
    snprintf(s, sizeof s, "%s.hyper.2", p); set_lin(c, k, &h->l2, s, 2 * C, D / 4);
}

static void set_tokens(build_ctx *c, const char *name)
{
    mf_model *m = c->m;
    const float *tok = get(c, "%s", name);
    size_t n = (size_t)m->arch.tokens * m->arch.token_dim;
    m->tokens = walloc(c, n);
    if (!c->failed) memcpy(m->tokens, tok, n * sizeof(float));
}

/* The stem conv [stem][3][3][3], BN folded, plain: read by the direct stem
 * kernel, or as a 1x1 conv over a 27-row im2col by the portable ones. */
static void set_stem(build_ctx *c, const char *conv, const char *bn)
{
    mf_model *m = c->m;
    float *w, *b;
    if (c->failed || fold_conv(c, conv, bn, m->arch.stem, 27, &w, &b)) return;
    m->stem_w = walloc(c, (size_t)m->arch.stem * 27);
    m->stem_b = walloc(c, (size_t)m->arch.stem);
    if (!c->failed) {
        memcpy(m->stem_w, w, (size_t)m->arch.stem * 27 * sizeof(float));
        memcpy(m->stem_b, b, (size_t)m->arch.stem * sizeof(float));
    }
    free(w);
    free(b);
}

/* A linear followed by a BatchNorm1d, folded: y = (W x + b) * scale + shift. */
static void set_lin_then_bn(build_ctx *c, const mf_kernels *k, mf_lin *l, const char *lin, const char *bn, int out,
                            int in)
{
    double *s = malloc((size_t)out * 2 * sizeof(double));
    if (!s) { c->failed = 1; mf_set_err(c->err, c->errlen, "out of memory"); return; }
    if (!c->failed && bn_scale_shift(c, bn, out, s, s + out) == 0) set_lin_bn(c, k, l, lin, out, in, s, s + out);
    free(s);
}

/* Fold and pack the layers of recipe rows under prefix p into block b (or
 * into the model when b is NULL: stem, head, last bridge). */
static void build_rows(build_ctx *c, const mf_layer_recipe *rows, int n, const char *p, const mf_widths *w,
                       mf_block *b, int stride)
{
    const int G = c->m->arch.groups, D = c->m->arch.token_dim;
    char s1[160], s2[160];
    for (int i = 0; i < n && !c->failed; i++) {
        const mf_layer_recipe *r = &rows[i];
        void *dst = mf_recipe_target(c->m, b, r);
        const int in = mf_dim_eval(r->in, w), out = mf_dim_eval(r->out, w);
        snprintf(s1, sizeof s1, "%s%s", p, r->name ? r->name : "");
        snprintf(s2, sizeof s2, "%s%s", p, r->bn ? r->bn : "");
        /* the GEMM layers (PW, HYPER, LINEAR*) on the model's set, in its precision */
        const mf_kernels *k = c->m->k;
        switch (r->kind) {
        case MF_LAYER_DW: set_dw(c, dst, s1, s2, in, out / in, r->strided ? stride : 1, r->shuffled && G > 1); break;
        case MF_LAYER_PW: set_pw(c, pw_set(c->m, in, G), dst, s1, s2, out, in, G, r->shuffled); break;
        case MF_LAYER_HYPER: set_hyper(c, k, dst, s1, D, out); break;
        case MF_LAYER_LINEAR:
            set_lin(c, k, dst, s1, out, in);
            /* read once per run: streamed past the caches where that pays */
            if (r->per_image) ((mf_lin *)dst)->stream = mf_cpu_stream_nt();
            break;
        case MF_LAYER_LINEAR_BN:
            set_lin_then_bn(c, k, dst, s1, s2, out, in);
            if (r->per_image) ((mf_lin *)dst)->stream = mf_cpu_stream_nt();
            break;
        case MF_LAYER_NORM: set_norm(c, dst, s1, out); break;
        case MF_LAYER_TOKENS: set_tokens(c, s1); break;
        case MF_LAYER_STEM: set_stem(c, s1, s2); break;
        case MF_LAYER_ATTN: break;
        }
    }
}

static void build_all(build_ctx *c, int num_classes)
{
    mf_model *m = c->m;
    const mf_arch *a = &m->arch;
    const mf_widths top = mf_recipe_top_widths(a, num_classes);
    build_rows(c, mf_stem_recipe.rows, mf_stem_recipe.n, "", &top, NULL, 1);
    int in = a->stem;
    for (int i = 0; i < a->n_blocks && !c->failed; i++) {
        const mf_block_desc *d = &a->blocks[i];
        const mf_block_recipe *br = &mf_block_recipes[d->type];
        const mf_widths w = mf_recipe_block_widths(a, i, in);
        mf_block *b = &m->blocks[i];
        b->type = d->type;
        b->cin = in;
        b->cout = d->c;
        b->stride = d->s;
        b->identity = d->s == 1 && in == d->c;
        b->hid1 = w.v[MF_DIM_H1];
        b->hid2 = w.v[MF_DIM_H2];
        char p[32];
        snprintf(p, sizeof p, "features.%d.", i);
        build_rows(c, br->layers, br->n_layers, p, &w, b, d->s);
        if (br->bridges) build_rows(c, mf_bridge_recipe.rows, mf_bridge_recipe.n, p, &w, b, d->s);
        in = d->c;
    }
    build_rows(c, mf_final_m2f_recipe.rows, mf_final_m2f_recipe.n, "", &top, NULL, 1);
    build_rows(c, mf_head_recipe.rows, mf_head_recipe.n, "", &top, NULL, 1);
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
    mf_arena_free(m->arena);
    if (m->labels) {
        for (int i = 0; i < m->num_classes; i++) free(m->labels[i]);
        free(m->labels);
    }
    free(m);
}

const char *mf_precision_name(mf_precision p)
{
    switch (p) {
    case MF_PRECISION_FP32: return "fp32";
    case MF_PRECISION_BF16: return "bf16";
    }
    return "?";
}

int mf_precision_parse(const char *s, mf_precision *out)
{
    if (!s) return -1;
    if (strcmp(s, "fp32") == 0) *out = MF_PRECISION_FP32;
    else if (strcmp(s, "bf16") == 0) *out = MF_PRECISION_BF16;
    else return -1;
    return 0;
}

mf_status mf_model_build(const mf_arch *a, int num_classes, mf_tensor_lookup lookup, void *ctx,
                         const mf_preprocess *pre, const char *const *labels, mf_model **out, char *err,
                         size_t errlen)
{
    return mf_model_build_opts(a, num_classes, lookup, ctx, pre, labels, NULL, out, err, errlen);
}

mf_status mf_model_build_opts(const mf_arch *a, int num_classes, mf_tensor_lookup lookup, void *ctx,
                              const mf_preprocess *pre, const char *const *labels, const mf_model_options *o,
                              mf_model **out, char *err, size_t errlen)
{
    *out = NULL;
    const mf_model_options defaults = {0};
    if (!o) o = &defaults;
    if (o->precision != MF_PRECISION_FP32 && o->precision != MF_PRECISION_BF16) {
        mf_set_err(err, errlen, "unknown precision %d", (int)o->precision);
        return MF_ERR_ARG;
    }
    const mf_kernels *gemm, *k32;
    mf_status st = mf_kernels_choose(o->precision, o->kernels, &gemm, &k32, err, errlen);
    if (st != MF_OK) return st;
    st = mf_arch_validate(a, err, errlen);
    if (st != MF_OK) return st;
    if (num_classes < 1 || num_classes > 100000) {
        mf_set_err(err, errlen, "num_classes must be in 1..100000, got %d", num_classes);
        return MF_ERR_ARG;
    }
    mf_model *m = calloc(1, sizeof *m);
    if (!m || !(m->arena = mf_arena_new(1))) {
        free(m);
        return MF_ERR_NOMEM;
    }
    m->arch = *a;
    m->num_classes = num_classes;
    m->precision = o->precision;
    m->k = gemm;
    m->k32 = k32;
    if (pre) m->pre = *pre;
    else mf_preprocess_default(&m->pre);

    build_ctx c = {.m = m, .lookup = lookup, .lctx = ctx, .err = err, .errlen = errlen};
    c.nspecs = mf_arch_tensor_specs(a, num_classes, &c.specs);
    if (c.nspecs < 0) {
        mf_arena_free(m->arena);
        free(m);
        return MF_ERR_NOMEM;
    }
    build_all(&c, num_classes);
    free(c.specs);

    mf_arena_seal(m->arena); /* the weights are written; read-only from here */

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
mf_precision mf_model_precision(const mf_model *m) { return m->precision; }
const char *mf_model_kernels(const mf_model *m) { return m->k->name; }
const char *mf_model_kernels_fp32(const mf_model *m) { return m->k32->name; }

const char *mf_model_label(const mf_model *m, int i)
{
    if (i < 0 || i >= m->num_classes) return "";
    return m->labels[i];
}
