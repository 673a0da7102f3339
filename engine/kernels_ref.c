/* kernels_ref.c -- plain scalar reference kernels (the twins every optimized
 * kernel is tested against) and the portable BLAS kernel set, each in both
 * precisions.  The bf16 twins round every input of a product to bfloat16 as
 * it is read (mf_bf16_round; their weights arrive rounded from model.c) and
 * accumulate in double; the portable bf16 set rounds the inputs into its
 * scratch and runs the fp32 OpenBLAS GEMM on them, so all bf16 paths see the
 * same bf16 operands and differ only in the order of fp32 additions. */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline float relu6f(float x) { return x < 0.f ? 0.f : (x > 6.f ? 6.f : x); }

/* Epilogue of one element of output row o: bias, activation, residual. */
static inline float epilogue1(float acc, int o, const mf_epi *e, const float *res)
{
    float t = acc + (e->bias ? e->bias[o] : 0.f);
    if (e->act == MF_ACT_RELU6) t = relu6f(t);
    else if (e->act == MF_ACT_DYRELU) {
        float ta = t * e->dya[o], tb = t * e->dyb[o];
        t = ta > tb ? ta : tb;
    }
    return res ? t + *res : t;
}

/* The same over a row of n values in place; res may alias y. */
static void epilogue_row(float *y, int n, int o, const mf_epi *e, const float *res)
{
    for (int p = 0; p < n; p++) y[p] = epilogue1(y[p], o, e, res ? res + p : NULL);
}

/* Output row j of group g lands at j*G+g (shuffled) or g*M+j. */
static inline size_t pw_row(const mf_pw *p, int g, int j)
{
    int M = p->cout / p->groups;
    return p->shuffle_out ? (size_t)j * p->groups + g : (size_t)g * M + j;
}

/* The caller passes y and res already offset to this group's first output
 * row; rows then follow with stride ldy (shuffled: G*hw). e->bias and the
 * dyrelu slopes are indexed by the group's local row j. */
static void pw_plain(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                     const mf_epi *e, int bf16)
{
    int M = p->cout / p->groups, K = p->cin / p->groups;
    const float *w = p->w + (size_t)g * M * K;
    (void)pw_row;
    for (int j = 0; j < M; j++) {
        float *yr = y + (size_t)j * ldy;
        const float *rr = e->res ? e->res + (size_t)j * e->ldr : NULL;
        for (int q = 0; q < n; q++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                float xv = x[(size_t)k * ldx + q];
                acc += (double)w[(size_t)j * K + k] * (bf16 ? mf_bf16_round(xv) : xv);
            }
            yr[q] = epilogue1((float)acc, j, e, rr ? rr + q : NULL);
        }
    }
}

static void pw_ref(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                   const mf_epi *e, void *scratch)
{
    pw_plain(p, g, x, ldx, n, y, ldy, e, 0);
}

static void pw_ref_bf16(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                        const mf_epi *e, void *scratch)
{
    pw_plain(p, g, x, ldx, n, y, ldy, e, 1);
}

static void pw_blas(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                    const mf_epi *e, void *scratch)
{
    int M = p->cout / p->groups, K = p->cin / p->groups;
    const float *w = p->w + (size_t)g * M * K;
    /* A residual that is the output itself (y += W x + b) is GEMM's beta = 1. */
    int inplace = e->res == y && e->ldr == ldy && e->act == MF_ACT_NONE;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, n, K, 1.0f, w, K, x, (int)ldx, inplace ? 1.0f : 0.0f,
                y, (int)ldy);
    for (int j = 0; j < M; j++)
        epilogue_row(y + (size_t)j * ldy, n, j, e, e->res && !inplace ? e->res + (size_t)j * e->ldr : NULL);
}

static void dw_ref(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    const int s = d->stride, h = g->h, w = g->w, ow = g->ow, rows = g->oy1 - g->oy0;
    for (int q = c0; q < c1; q++) {
        const float *xi = g->x + (size_t)d->src[q] * g->ldx;
        const float *k = d->w + (size_t)q * 9;
        float *yo = y + (size_t)q * ldy;
        for (int oy = g->oy0; oy < g->oy1; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float acc = 0.f;
                for (int ky = 0; ky < 3; ky++) {
                    int iy = oy * s + ky - 1;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < 3; kx++) {
                        int ix = ox * s + kx - 1;
                        if (ix < 0 || ix >= w) continue;
                        acc += k[ky * 3 + kx] * xi[(ptrdiff_t)(iy - g->xr0) * w + ix];
                    }
                }
                yo[(size_t)(oy - g->oy0) * ow + ox] = acc;
            }
        epilogue_row(yo, rows * ow, q, e, NULL);
    }
}

/* sum_i a[i * sa] * b[i * sb], i < n, accumulated in double */
static double dot(const float *a, size_t sa, const float *b, size_t sb, int n)
{
    double acc = 0.0;
    for (int i = 0; i < n; i++) acc += (double)a[(size_t)i * sa] * b[(size_t)i * sb];
    return acc;
}

static void m2f_attn_ref(const float *x, int ch, int hw, const float *q, int ldq, int t, float scale,
                         float *o, int ldo, float *scratch)
{
    for (int i = 0; i < t; i++) {
        float *s = scratch + (size_t)i * hw;
        for (int p = 0; p < hw; p++) s[p] = (float)dot(q + (size_t)i * ldq, 1, x + p, (size_t)hw, ch) * scale;
        mf_softmax(s, hw, s);
        for (int c = 0; c < ch; c++) o[(size_t)i * ldo + c] = (float)dot(s, 1, x + (size_t)c * hw, 1, hw);
    }
}

static void f2m_attn_ref(float *y, int ch, int hw, const float *k, const float *v, int ldk, int t, float scale)
{
    float a[64];
    for (int p = 0; p < hw; p++) {
        for (int i = 0; i < t; i++) a[i] = (float)dot(y + p, (size_t)hw, k + (size_t)i * ldk, 1, ch) * scale;
        mf_softmax(a, t, a);
        for (int c = 0; c < ch; c++) y[(size_t)c * hw + p] += (float)dot(a, 1, v + c, (size_t)ldk, t);
    }
}

/* ---- token-side helpers ------------------------------------------------- */

static void gelu_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}


static void linear_plain(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, int bf16)
{
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * l->out;
        const float *xr = x + (size_t)r * l->in;
        memcpy(yr + o0, l->b + o0, (size_t)(o1 - o0) * sizeof(float));
        for (int i = 0; i < l->in; i++) {
            const float xv = bf16 ? mf_bf16_round(xr[i]) : xr[i];
            const float *w = l->wt + (size_t)i * l->out;
            for (int o = o0; o < o1; o++) yr[o] += xv * w[o];
        }
    }
}

void mf_linear_ref(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    linear_plain(l, x, rows, y, o0, o1, 0);
}

static void linear_ref_bf16(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    linear_plain(l, x, rows, y, o0, o1, 1);
}

/* Many rows (the classifier head of a large batch): a GEMM. */
static void linear_blas(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    if (rows <= 8) {
        linear_plain(l, x, rows, y, o0, o1, 0);
        return;
    }
    for (int r = 0; r < rows; r++) memcpy(y + (size_t)r * l->out + o0, l->b + o0, (size_t)(o1 - o0) * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, o1 - o0, l->in, 1.0f, x, l->in, l->wt + o0, l->out,
                1.0f, y + o0, l->out);
}

/* Weights stay plain (no pack functions): pw reads mf_pw.w, linear mf_lin.wt.
 * No direct stem: the forward pass uses im2col + pw. */
/* ---- portable bf16: inputs rounded into the scratch, then the fp32 GEMM ---- */

#define ROUNDED_SCRATCH (256u << 10) /* bytes of rounded inputs per pass */
#define LIN_ROWS 16                   /* rows of a linear rounded per pass */

/* Columns of x rounded per pass: a multiple of 16 that fits the budget. */
static int rounded_cols(int k)
{
    int nc = (int)(ROUNDED_SCRATCH / (sizeof(float) * (size_t)k)) / 16 * 16;
    return nc < 16 ? 16 : nc > 1024 ? 1024 : nc;
}

size_t mf_rounded_pw_scratch(int k) { return (size_t)k * (size_t)rounded_cols(k) * sizeof(float); }

void mf_rounded_pw(mf_pw_fn f32, const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                   const mf_epi *e, void *scratch)
{
    const int K = p->cin / p->groups, nc = rounded_cols(K);
    float *xr = scratch; /* [K][cols] */
    for (int n0 = 0; n0 < n; n0 += nc) {
        const int cols = n - n0 < nc ? n - n0 : nc;
        for (int k = 0; k < K; k++)
            for (int q = 0; q < cols; q++) xr[(size_t)k * cols + q] = mf_bf16_round(x[(size_t)k * ldx + n0 + q]);
        mf_epi e2 = *e;
        if (e2.res) e2.res += n0;
        f32(p, g, xr, (size_t)cols, cols, y + n0, ldy, &e2, NULL);
    }
}

size_t mf_rounded_lin_scratch(int rows_per_pass, int in) { return (size_t)rows_per_pass * (size_t)in * sizeof(float); }

void mf_rounded_linear(mf_linear_fn f32, int rows_per_pass, const mf_lin *l, const float *x, int rows, float *y,
                       int o0, int o1, void *scratch)
{
    float *xr = scratch; /* [rows_per_pass][in] */
    for (int r0 = 0; r0 < rows; r0 += rows_per_pass) {
        const int R = rows - r0 < rows_per_pass ? rows - r0 : rows_per_pass;
        for (size_t i = 0; i < (size_t)R * l->in; i++) xr[i] = mf_bf16_round(x[(size_t)r0 * l->in + i]);
        f32(l, xr, R, y + (size_t)r0 * l->out, o0, o1, NULL);
    }
}

static size_t pw_scratch_blas_bf16(int k) { return mf_rounded_pw_scratch(k); }

static void pw_blas_bf16(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                         const mf_epi *e, void *scratch)
{
    mf_rounded_pw(pw_blas, p, g, x, ldx, n, y, ldy, e, scratch);
}

static size_t lin_scratch_blas_bf16(int in) { return mf_rounded_lin_scratch(LIN_ROWS, in); }

static void linear_blas_bf16(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    mf_rounded_linear(linear_blas, LIN_ROWS, l, x, rows, y, o0, o1, scratch);
}

/* Both fp32 sets run the depthwise convolution and the attention bridges
 * with the plain loops. */
#define PLAIN_LOOPS .dw = dw_ref, .m2f_attn = m2f_attn_ref, .f2m_attn = f2m_attn_ref, .gelu = gelu_ref

const mf_kernels mf_kernels_ref = {.name = "reference", .pw = pw_ref, .linear = mf_linear_ref, PLAIN_LOOPS};

const mf_kernels mf_kernels_blas = {.name = "portable", .pw = pw_blas, .linear = linear_blas, PLAIN_LOOPS};

/* bf16 sets hold only the GEMMs (the model's fp32 set runs the other layers) */
const mf_kernels mf_kernels_ref_bf16 = {
    .name = "reference-bf16",
    .precision = MF_PRECISION_BF16,
    .pw = pw_ref_bf16,
    .linear = linear_ref_bf16,
};

const mf_kernels mf_kernels_blas_bf16 = {
    .name = "portable-bf16",
    .precision = MF_PRECISION_BF16,
    .pw = pw_blas_bf16,
    .linear = linear_blas_bf16,
    .pw_scratch_bytes = pw_scratch_blas_bf16,
    .lin_scratch_bytes = lin_scratch_blas_bf16,
};
