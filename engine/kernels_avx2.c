/* kernels_avx2.c -- AVX2 + FMA kernels for CPUs without AVX-512 (AMD Zen 2
 * and 3, Intel Haswell to Comet Lake): 1x1 convolution (GEMM on packed
 * weights, epilogue in registers), 3x3 depthwise (strides 1 and 2), the two
 * attention bridges, token-side linears and GELU.  Compiled with -mavx2
 * -mfma, only this file, and called only after mf_cpu_has_avx2(); and the
 * direct stem (its 1x1 needs packed weights, which the im2col path lacks).  Each kernel has its reference twin
 * in kernels_ref.c; tests/test_kernels.c holds them together.
 *
 * AVX2 has no mask registers: edges use vmaskmovps loads and stores, whose
 * masked-off lanes never fault, so no kernel reads or writes outside its
 * tensors; interior vectors use plain loads. */
#include "internal.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Lanes [0, n) of a vector (n clamped to 0..8), as a vmaskmovps mask. */
static const int32_t mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline __m256i mask_n(int n)
{
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - n));
}

/* Lanes j of an 8-wide load starting at column s that fall inside [0, w). */
static inline __m256i mask_range(int s, int w)
{
    const __m256i j = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(s));
    const __m256i ge0 = _mm256_cmpgt_epi32(j, _mm256_set1_epi32(-1));
    const __m256i ltw = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), j);
    return _mm256_and_si256(ge0, ltw);
}

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 relu6(__m256 t)
{
    return _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(6.f));
}

/* ---- 1x1 convolution ----------------------------------------------------
 * Packed weights: for each block of MR rows, for each k, MR values (rows
 * past M are zero).  y[M][n] = W x[K][n] in tiles of MR rows x 8*NV
 * columns: 12 accumulators, two x vectors and a broadcast weight in the 16
 * registers.  Every output is one FMA chain over k in order, whatever tile
 * computed it, so a map's columns split anywhere give the same bits. */
#define MR 6
#ifndef KC
#define KC 128
#endif /* depth of one pass: an x panel (KC x 16, 8 KiB) stays in L1 across the row blocks */

static size_t pw_packed_bytes(int m, int k) { return (size_t)((m + MR - 1) / MR) * MR * (size_t)k * sizeof(float); }

static void pw_pack(const float *w, int m, int k, void *dst)
{
    float *out = dst;
    for (int mb = 0; mb < (m + MR - 1) / MR; mb++)
        for (int kk = 0; kk < k; kk++)
            for (int r = 0; r < MR; r++) {
                int row = mb * MR + r;
                out[((size_t)mb * k + kk) * MR + r] = row < m ? w[(size_t)row * k + kk] : 0.f;
            }
}

static inline __m256 epi_apply(__m256 t, int row, const mf_epi *e)
{
    t = _mm256_add_ps(t, _mm256_set1_ps(e->bias[row]));
    if (e->act == MF_ACT_RELU6) t = relu6(t);
    else if (e->act == MF_ACT_DYRELU)
        t = _mm256_max_ps(_mm256_mul_ps(t, _mm256_set1_ps(e->dya[row])), _mm256_mul_ps(t, _mm256_set1_ps(e->dyb[row])));
    return t;
}

/* Vector v of a tile row: whole, or (PART, the last one) masked. */
#define LDV(PART, v, NV, p, m) ((PART) && (v) == (NV) - 1 ? _mm256_maskload_ps((p), (m)) : _mm256_loadu_ps(p))
#define STV(PART, v, NV, p, m, t)                                                                                     \
    do {                                                                                                              \
        if ((PART) && (v) == (NV) - 1) _mm256_maskstore_ps((p), (m), (t));                                            \
        else _mm256_storeu_ps((p), (t));                                                                              \
    } while (0)

/* One k step of a tile: two x vectors, R broadcast weights, R*NV FMAs. */
#define PW_STEP(kk)                                                                                                   \
    do {                                                                                                              \
        __m256 xv[2];                                                                                                 \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) xv[v] =                                                  \
            LDV(PART, v, NV, x + (size_t)(kk) * ldx + 8 * v, lm);                                                     \
        const float *wk = wp + (size_t)(kk) * MR;                                                                     \
        _Pragma("GCC unroll 12") for (int r = 0; r < R; r++)                                                          \
        {                                                                                                             \
            const __m256 wv = _mm256_broadcast_ss(wk + (r / MR) * wbs + r % MR);                                      \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(wv, xv[v], acc[r][v]);   \
        }                                                                                                             \
    } while (0)

/* One R x (8*NV) tile over k in [0, kc): acc (+)= W x.  first: start from
 * zero (or from the residual, which is how a residual is added when there is
 * no activation: it may then alias y), else from y; last: apply the epilogue.
 * PART: the last vector holds the columns of lm only; res: the tile's
 * residual (row stride e->ldr) or NULL; pf: the next tile's weights. */
static inline __attribute__((always_inline)) void pw_tile(int R, int NV, int PART, const float *wp, size_t wbs,
                                                          const float *pf, const float *x, size_t ldx, int kc,
                                                          float *y, size_t ldy, __m256i lm, int first, int last,
                                                          int row0, const mf_epi *e, const float *res)
{
    const int res_first = res && e->act == MF_ACT_NONE;
    __m256 acc[2 * MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            if (!first) acc[r][v] = LDV(PART, v, NV, y + (size_t)r * ldy + 8 * v, lm);
            else if (res_first) acc[r][v] = LDV(PART, v, NV, res + (size_t)r * e->ldr + 8 * v, lm);
            else acc[r][v] = _mm256_setzero_ps();
        }
    /* k two at a time (one prefetch per pair, half the loop overhead),
     * then the odd one; the order of each output's FMA chain is unchanged */
    int k = 0;
    for (; k + 1 < kc; k += 2) {
        _mm_prefetch((const char *)(pf + (size_t)k * MR), _MM_HINT_T0);
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++) PW_STEP(k + u);
    }
    if (k < kc) PW_STEP(k);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            __m256 t = acc[r][v];
            if (last) {
                t = epi_apply(t, row0 + r, e);
                if (res && !res_first) t = _mm256_add_ps(t, LDV(PART, v, NV, res + (size_t)r * e->ldr + 8 * v, lm));
            }
            STV(PART, v, NV, y + (size_t)r * ldy + 8 * v, lm, t);
        }
}

#define PW_TILE_ARGS wp, wbs, pf, x, ldx, kc, y, ldy, lm, first, last, row0, e, res
#define PW_TILE_R(R)                                                                                                  \
    do {                                                                                                              \
        if (nv == 2) {                                                                                                \
            if (part) pw_tile(R, 2, 1, PW_TILE_ARGS);                                                                 \
            else pw_tile(R, 2, 0, PW_TILE_ARGS);                                                                      \
        } else {                                                                                                      \
            if (part) pw_tile(R, 1, 1, PW_TILE_ARGS);                                                                 \
            else pw_tile(R, 1, 0, PW_TILE_ARGS);                                                                      \
        }                                                                                                             \
    } while (0)

/* rows: 1..6, or 12 (two row blocks wbs floats apart) for a tile of one
 * vector, whose six accumulators alone would wait on the FMA latency */
static void pw_tile_dispatch(int rows, int nv, int part, const float *wp, size_t wbs, const float *pf, const float *x,
                             size_t ldx, int kc, float *y, size_t ldy, __m256i lm, int first, int last, int row0,
                             const mf_epi *e, const float *res)
{
    if (rows == 2 * MR) {
        if (part) pw_tile(2 * MR, 1, 1, PW_TILE_ARGS);
        else pw_tile(2 * MR, 1, 0, PW_TILE_ARGS);
        return;
    }
    switch (rows) {
    case 1: PW_TILE_R(1); break;
    case 2: PW_TILE_R(2); break;
    case 3: PW_TILE_R(3); break;
    case 4: PW_TILE_R(4); break;
    case 5: PW_TILE_R(5); break;
    default: PW_TILE_R(6); break;
    }
}
#undef PW_TILE_R
#undef PW_TILE_ARGS

static void pw_avx2(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy, const mf_epi *e,
                    void *scratch)
{
    const int M = p->cout / p->groups, K = p->cin / p->groups;
    const float *wp = (const float *)((const char *)p->wp + p->wp_group * (size_t)g);
    const int mblocks = (M + MR - 1) / MR, tiles = (n + 15) / 16;
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC, first = k0 == 0, last = k0 + kc == K;
        /* Weights of this depth block beyond L2 (late stages: many channels,
         * few pixels): sweep the columns inside each row block, so every
         * weight is read from memory once; otherwise the row blocks inside
         * each column tile, keeping its x panel in L1. */
        const int w_outer = (size_t)M * kc * sizeof(float) > (256u << 10);
        const int outer = w_outer ? mblocks : tiles, inner = w_outer ? tiles : mblocks;
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++) {
                const int mb = w_outer ? o : i, n0 = 16 * (w_outer ? i : o);
                const int cols = n - n0 < 16 ? n - n0 : 16, nv = cols > 8 ? 2 : 1, rest = cols - 8 * (nv - 1);
                const int rows = M - mb * MR < MR ? M - mb * MR : MR;
                const float *res = e->res ? e->res + (size_t)mb * MR * e->ldr + n0 : NULL;
                /* a one-vector tile takes row blocks two at a time (mb
                 * even, both whole); the odd one of a pair is skipped */
                const int pair = nv == 1 && (mb % 2 == 0) && (mb + 2) * MR <= M;
                if (nv == 1 && mb % 2 == 1 && (mb + 1) * MR <= M) continue;
                const int pb = w_outer ? (i + 1 < inner || o + 1 == outer ? mb : mb + 1) : (i + 1 < inner ? mb + 1 : 0);
                pw_tile_dispatch(pair ? 2 * MR : rows, nv, rest < 8, wp + ((size_t)mb * K + k0) * MR, (size_t)K * MR,
                                 wp + ((size_t)pb * K + k0) * MR, x + (size_t)k0 * ldx + n0, ldx, kc,
                                 y + (size_t)mb * MR * ldy + n0, ldy, mask_n(rest), first, last, mb * MR, e, res);
            }
    }
}

/* ---- 3x3 depthwise ------------------------------------------------------
 * Every output sums its nine taps as dw_sum9 does ((row 0 + row 1) + row
 * 2, each row left to right), whichever path and band computed it, so
 * banding changes no bits. */
typedef struct dw_ep {
    __m256 bias, a, b;
    mf_act act;
} dw_ep;

static inline dw_ep dw_ep_make(int q, const mf_epi *e)
{
    dw_ep d = {_mm256_set1_ps(e->bias[q]), _mm256_setzero_ps(), _mm256_setzero_ps(), e->act};
    if (e->act == MF_ACT_DYRELU) {
        d.a = _mm256_set1_ps(e->dya[q]);
        d.b = _mm256_set1_ps(e->dyb[q]);
    }
    return d;
}

static inline __m256 dw_ep_apply(__m256 t, const dw_ep *d)
{
    t = _mm256_add_ps(t, d->bias);
    if (d->act == MF_ACT_RELU6) t = relu6(t);
    else if (d->act == MF_ACT_DYRELU) t = _mm256_max_ps(_mm256_mul_ps(t, d->a), _mm256_mul_ps(t, d->b));
    return t;
}

static inline __m256 dw_sum9(const __m256 *t, const __m256 *kv)
{
    __m256 a0 = _mm256_mul_ps(kv[0], t[0]), a1 = _mm256_mul_ps(kv[3], t[3]), a2 = _mm256_mul_ps(kv[6], t[6]);
    a0 = _mm256_fmadd_ps(kv[1], t[1], a0);
    a1 = _mm256_fmadd_ps(kv[4], t[4], a1);
    a2 = _mm256_fmadd_ps(kv[7], t[7], a2);
    a0 = _mm256_fmadd_ps(kv[2], t[2], a0);
    a1 = _mm256_fmadd_ps(kv[5], t[5], a1);
    a2 = _mm256_fmadd_ps(kv[8], t[8], a2);
    return _mm256_add_ps(_mm256_add_ps(a0, a1), a2);
}

/* Stride 1: the left, centre and right taps of input row `row` under the
 * 8 outputs at column ox; EDGE: some of them fall outside [0, w). */
static inline __attribute__((always_inline)) void dws1_row(int EDGE, const float *row, int ox, __m256i ml, __m256i mc,
                                                           __m256i mr, __m256 *t)
{
    if (EDGE) {
        t[0] = _mm256_maskload_ps(row + ox - 1, ml);
        t[1] = _mm256_maskload_ps(row + ox, mc);
        t[2] = _mm256_maskload_ps(row + ox + 1, mr);
    } else {
        t[0] = _mm256_loadu_ps(row + ox - 1);
        t[1] = _mm256_loadu_ps(row + ox);
        t[2] = _mm256_loadu_ps(row + ox + 1);
    }
}

/* The three taps of one kernel row kr: kv[3kr] t0, then + kv[3kr+1] t1,
 * then + kv[3kr+2] t2 (dw_sum9's a0, a1, a2). */
static inline __m256 dw_row3(const __m256 *t, const __m256 *kv, int kr)
{
    __m256 a = _mm256_mul_ps(kv[3 * kr], t[0]);
    a = _mm256_fmadd_ps(kv[3 * kr + 1], t[1], a);
    return _mm256_fmadd_ps(kv[3 * kr + 2], t[2], a);
}

/* One plane, stride 1, the 8 outputs at column ox of rows [oy0, oy1),
 * streaming down the input rows: input row iy is loaded once and gives
 * kernel row 2 of output iy-1 (which it completes), row 1 of output iy and
 * row 0 of output iy+1.  Each output is (a0 + a1) + a2, as dw_sum9 sums it;
 * rows outside the map are zero taps.  xr(iy) is input row iy. */
static inline __attribute__((always_inline)) void dws1_col(int EDGE, const float *xi, int xr0, int h, int w,
                                                           const __m256 *kv, const dw_ep *ep, float *yo, int ow,
                                                           int oy0, int oy1, int ox)
{
#define XR(iy) (xi + (ptrdiff_t)((iy) - xr0) * w)
    const __m256i ml = mask_range(ox - 1, w), mc = mask_range(ox, w), mr = mask_range(ox + 1, w),
                  mo = mask_n(ow - ox);
    const int full = ox + 8 <= ow;
    __m256 t[3], a0 = _mm256_setzero_ps(), s01 = _mm256_setzero_ps(); /* a0 of output iy, a0 + a1 of iy-1 */
    for (int iy = oy0 - 1; iy <= oy1; iy++) {
        if (iy < 0 || iy >= h) t[0] = t[1] = t[2] = _mm256_setzero_ps();
        else dws1_row(EDGE, XR(iy), ox, ml, mc, mr, t);
        if (iy > oy0) { /* output iy-1 is complete */
            const __m256 s = dw_ep_apply(_mm256_add_ps(s01, dw_row3(t, kv, 2)), ep);
            float *yr = yo + (size_t)(iy - 1 - oy0) * ow + ox;
            if (full) _mm256_storeu_ps(yr, s);
            else _mm256_maskstore_ps(yr, mo, s);
        }
        if (iy >= oy0 && iy < oy1) s01 = _mm256_add_ps(a0, dw_row3(t, kv, 1));
        if (iy + 1 < oy1) a0 = dw_row3(t, kv, 0);
    }
#undef XR
}

static void dws1(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    const int w = g->w;
    for (int q = c0; q < c1; q++) {
        const float *xi = g->x + (size_t)d->src[q] * g->ldx, *k = d->w + (size_t)q * 9;
        __m256 kv[9];
        for (int i = 0; i < 9; i++) kv[i] = _mm256_set1_ps(k[i]);
        const dw_ep ep = dw_ep_make(q, e);
        float *yo = y + (size_t)q * ldy;
        for (int ox = 0; ox < w; ox += 8) {
            if (ox >= 1 && ox + 9 <= w) dws1_col(0, xi, g->xr0, g->h, w, kv, &ep, yo, w, g->oy0, g->oy1, ox);
            else dws1_col(1, xi, g->xr0, g->h, w, kv, &ep, yo, w, g->oy0, g->oy1, ox);
        }
    }
}

/* Stride 2: the taps x[2ox + 2j - 1], x[2ox + 2j], x[2ox + 2j + 1] of the 8
 * outputs at column ox, deinterleaved from two loads (and the element
 * before them); EDGE: some of the 17 fall outside [0, w). */
static inline __attribute__((always_inline)) void dws2_row(int EDGE, const float *row, int ox, int w, __m256i ma,
                                                           __m256i mb, __m256 *t)
{
    const int c = 2 * ox;
    __m256 a, b;
    float prev;
    if (EDGE) {
        a = _mm256_maskload_ps(row + c, ma);
        b = _mm256_maskload_ps(row + c + 8, mb);
        prev = c > 0 ? row[c - 1] : 0.f;
    } else {
        a = _mm256_loadu_ps(row + c);
        b = _mm256_loadu_ps(row + c + 8);
        prev = row[c - 1];
    }
    /* within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6]; the 64-bit permute orders them */
    const __m256 ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    const __m256 od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
    const __m256 sh = _mm256_permutevar8x32_ps(od, _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6));
    t[0] = _mm256_blend_ps(sh, _mm256_set1_ps(prev), 0x01);
    t[1] = ev;
    t[2] = od;
}

/* Output channels at a time that dw_order orders by their input channel. */
#define DW_QMAX 1024

/* Output channels [q0, q1) (at most DW_QMAX) into ord, each input
 * channel's readers together (in increasing order), so one deinterleave
 * of its rows serves them all (a shuffle folded into src puts them cin
 * apart). */
static void dw_order(const mf_dw *d, int q0, int q1, int *ord)
{
    int smin = d->src[q0], smax = smin, sorted = 1;
    for (int q = q0 + 1; q < q1; q++) {
        const int v = d->src[q];
        if (v < d->src[q - 1]) sorted = 0;
        if (v < smin) smin = v;
        if (v > smax) smax = v;
    }
    if (sorted || smax - smin >= DW_QMAX) {
        for (int q = q0; q < q1; q++) ord[q - q0] = q;
        return;
    }
    int head[DW_QMAX], next[DW_QMAX];
    for (int v = 0; v <= smax - smin; v++) head[v] = -1;
    for (int q = q1 - 1; q >= q0; q--) {
        next[q - q0] = head[d->src[q] - smin];
        head[d->src[q] - smin] = q;
    }
    int n = 0;
    for (int v = 0; v <= smax - smin; v++)
        for (int q = head[v]; q >= 0; q = next[q - q0]) ord[n++] = q;
}

/* The readers ord[j0 .. j1) of one input, the 8 outputs at column ox down
 * the rows: the top input row's taps kept from the output row above. */
static inline __attribute__((always_inline)) void dws2_col(int EDGE, const mf_dw *d, const int *ord, int j0, int j1,
                                                           const float *xc, const mf_dw_rows *g, float *y,
                                                           size_t ldy, const mf_epi *e, int ox)
{
    const int w = g->w, h = g->h, ow = g->ow;
    const __m256i ma = mask_range(2 * ox, w), mb = mask_range(2 * ox + 8, w), mo = mask_n(ow - ox);
    const int full = ox + 8 <= ow;
#define XR(iy) (xc + (ptrdiff_t)((iy) - g->xr0) * w)
    __m256 t9[9];
    if (2 * g->oy0 - 1 >= 0) dws2_row(EDGE, XR(2 * g->oy0 - 1), ox, w, ma, mb, t9);
    else t9[0] = t9[1] = t9[2] = _mm256_setzero_ps();
    for (int oy = g->oy0; oy < g->oy1; oy++) {
        const int iy = 2 * oy;
        dws2_row(EDGE, XR(iy), ox, w, ma, mb, t9 + 3);
        if (iy + 1 < h) dws2_row(EDGE, XR(iy + 1), ox, w, ma, mb, t9 + 6);
        else t9[6] = t9[7] = t9[8] = _mm256_setzero_ps();
        for (int j = j0; j < j1; j++) {
            const int q = ord[j];
            const float *k = d->w + (size_t)q * 9;
            __m256 kv[9];
#pragma GCC unroll 9
            for (int i = 0; i < 9; i++) kv[i] = _mm256_set1_ps(k[i]);
            const dw_ep ep = dw_ep_make(q, e);
            float *yp = y + (size_t)q * ldy + (size_t)(oy - g->oy0) * ow + ox;
            const __m256 s = dw_ep_apply(dw_sum9(t9, kv), &ep);
            if (full) _mm256_storeu_ps(yp, s);
            else _mm256_maskstore_ps(yp, mo, s);
        }
        t9[0] = t9[6];
        t9[1] = t9[7];
        t9[2] = t9[8];
    }
#undef XR
}

static void dws2(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    int ord[DW_QMAX];
    for (int cq = c0; cq < c1; cq += DW_QMAX) {
        const int nq = c1 - cq < DW_QMAX ? c1 - cq : DW_QMAX;
        dw_order(d, cq, cq + nq, ord);
        for (int i0 = 0; i0 < nq;) {
            const int src = d->src[ord[i0]];
            int i1 = i0 + 1;
            while (i1 < nq && d->src[ord[i1]] == src) i1++;
            const float *xc = g->x + (size_t)src * g->ldx;
            for (int ox = 0; ox < g->ow; ox += 8) {
                if (ox > 0 && 2 * ox + 16 <= g->w) dws2_col(0, d, ord, i0, i1, xc, g, y, ldy, e, ox);
                else dws2_col(1, d, ord, i0, i1, xc, g, y, ldy, e, ox);
            }
            i0 = i1;
        }
    }
}

/* The kernel of a layer depends on its stride, never on its rows. */
static void dw_avx2(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    if (d->stride == 2) dws2(d, c0, c1, g, y, ldy, e);
    else dws1(d, c0, c1, g, y, ldy, e);
}

/* ---- exp ----------------------------------------------------------------
 * exp(x) = 2^n * p(r), x = n ln2 + r, |r| <= ln2/2; the degree-6 polynomial
 * of the AVX-512 set.  x is clamped to [-87, 88], so 2^n stays a normal
 * number built in the exponent bits (below e^-87 a softmax term or GELU's
 * tail is zero to within float's precision anyway). */
static inline __m256 exp256(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
    x = _mm256_min_ps(x, _mm256_set1_ps(88.f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* ---- GELU: the AVX-512 set's formula (Abramowitz and Stegun 7.1.26) ---- */
static void gelu_avx2(float *x, size_t n)
{
    const __m256 half = _mm256_set1_ps(0.5f), two = _mm256_set1_ps(2.f), one = _mm256_set1_ps(1.f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (size_t i = 0; i < n; i += 8) {
        const __m256i mk = mask_n(n - i >= 8 ? 8 : (int)(n - i));
        const __m256 v = _mm256_maskload_ps(x + i, mk);
        const __m256 z = _mm256_mul_ps(_mm256_and_ps(v, absm), _mm256_set1_ps(0.70710678118654752f));
        const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.3275911f), one));
        __m256 p = _mm256_set1_ps(1.061405429f);
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
        /* erfc below 1e-36 (z > 9) is zero here, not a denormal */
        const __m256 small = _mm256_cmp_ps(z, _mm256_set1_ps(9.f), _CMP_LT_OQ);
        const __m256 q = _mm256_and_ps(
            small, _mm256_mul_ps(_mm256_mul_ps(p, t), exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), z))));
        const __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
        const __m256 f = _mm256_blendv_ps(_mm256_sub_ps(two, q), q, neg);
        _mm256_maskstore_ps(x + i, mk, _mm256_mul_ps(_mm256_mul_ps(half, v), f));
    }
}

/* ---- Mobile -> Former --------------------------------------------------- */

#define TB 6 /* tokens per pass (m2f_attn_avx2 switches on 1..TB) */

/* NT (a constant: the accumulators stay in registers) tokens of one head:
 * scores, softmax over pixels, outputs. */
static inline __attribute__((always_inline)) void m2f_tokens(int NT, const float *x, int ch, int hw, const float *q,
                                                             int ldq, float scale, float *o, int ldo, float *scratch)
{
    /* scores S[i][p] = scale * sum_c q[i][c] x[c][p] */
    for (int p0 = 0; p0 < hw; p0 += 8) {
        const __m256i mk = mask_n(hw - p0);
        __m256 acc[TB];
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) acc[i] = _mm256_setzero_ps();
        for (int c = 0; c < ch; c++) {
            const __m256 xv = _mm256_maskload_ps(x + (size_t)c * hw + p0, mk);
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (size_t)i * ldq + c), xv, acc[i]);
        }
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++)
            _mm256_maskstore_ps(scratch + (size_t)i * hw + p0, mk, _mm256_mul_ps(acc[i], _mm256_set1_ps(scale)));
    }
    /* softmax over pixels; 1/sum is applied to the outputs */
    float inv[TB];
    for (int i = 0; i < NT; i++) {
        float *s = scratch + (size_t)i * hw;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        for (int p0 = 0; p0 < hw; p0 += 8) {
            const __m256i mk = mask_n(hw - p0);
            mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(s + p0, mk),
                                                    _mm256_castsi256_ps(mk)));
        }
        const __m256 m = _mm256_set1_ps(hmax(mx));
        __m256 sum = _mm256_setzero_ps();
        for (int p0 = 0; p0 < hw; p0 += 8) {
            const __m256i mk = mask_n(hw - p0);
            const __m256 ev = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(s + p0, mk), m)), _mm256_castsi256_ps(mk));
            sum = _mm256_add_ps(sum, ev);
            _mm256_maskstore_ps(s + p0, mk, ev);
        }
        inv[i] = 1.0f / hsum(sum);
    }
    /* o[i][c] = sum_p S[i][p] x[c][p], two channels at a time */
    int c = 0;
    for (; c + 2 <= ch; c += 2) {
        __m256 acc[2][TB];
#pragma GCC unroll 2
        for (int j = 0; j < 2; j++)
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++) acc[j][i] = _mm256_setzero_ps();
        for (int p0 = 0; p0 < hw; p0 += 8) {
            const __m256i mk = mask_n(hw - p0);
            const __m256 x0 = _mm256_maskload_ps(x + (size_t)c * hw + p0, mk),
                         x1 = _mm256_maskload_ps(x + (size_t)(c + 1) * hw + p0, mk);
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++) {
                const __m256 sv = _mm256_maskload_ps(scratch + (size_t)i * hw + p0, mk);
                acc[0][i] = _mm256_fmadd_ps(sv, x0, acc[0][i]);
                acc[1][i] = _mm256_fmadd_ps(sv, x1, acc[1][i]);
            }
        }
#pragma GCC unroll 2
        for (int j = 0; j < 2; j++)
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++) o[(size_t)i * ldo + c + j] = hsum(acc[j][i]) * inv[i];
    }
    for (; c < ch; c++) {
        __m256 acc[TB];
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) acc[i] = _mm256_setzero_ps();
        for (int p0 = 0; p0 < hw; p0 += 8) {
            const __m256i mk = mask_n(hw - p0);
            const __m256 xv = _mm256_maskload_ps(x + (size_t)c * hw + p0, mk);
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++)
                acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(scratch + (size_t)i * hw + p0, mk), xv, acc[i]);
        }
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) o[(size_t)i * ldo + c] = hsum(acc[i]) * inv[i];
    }
}

static void m2f_attn_avx2(const float *x, int ch, int hw, const float *q, int ldq, int t, float scale, float *o,
                          int ldo, float *scratch)
{
    for (int t0 = 0; t0 < t; t0 += TB) {
        const int tn = t - t0 < TB ? t - t0 : TB;
        const float *qt = q + (size_t)t0 * ldq;
        float *ot = o + (size_t)t0 * ldo;
        switch (tn) {
        case 1: m2f_tokens(1, x, ch, hw, qt, ldq, scale, ot, ldo, scratch); break;
        case 2: m2f_tokens(2, x, ch, hw, qt, ldq, scale, ot, ldo, scratch); break;
        case 3: m2f_tokens(3, x, ch, hw, qt, ldq, scale, ot, ldo, scratch); break;
        case 4: m2f_tokens(4, x, ch, hw, qt, ldq, scale, ot, ldo, scratch); break;
        case 5: m2f_tokens(5, x, ch, hw, qt, ldq, scale, ot, ldo, scratch); break;
        default: m2f_tokens(6, x, ch, hw, qt, ldq, scale, ot, ldo, scratch); break;
        }
    }
}

/* ---- Former -> Mobile --------------------------------------------------- */

#define TMAX 8 /* tokens held in registers; more go to the reference kernel */

/* All t tokens of one head on each 8-pixel strip (t a constant where it is
 * dispatched, so the scores stay in registers). */
static inline __attribute__((always_inline)) void f2m_tokens(int t, float *y, int ch, int hw, const float *k,
                                                             const float *v, int ldk, float scale)
{
    for (int p0 = 0; p0 < hw; p0 += 8) {
        const __m256i mk = mask_n(hw - p0);
        __m256 s[TMAX];
#pragma GCC unroll 8
        for (int i = 0; i < TMAX; i++) s[i] = _mm256_setzero_ps(); /* past t: never read */
        for (int c = 0; c < ch; c++) {
            const __m256 yv = _mm256_maskload_ps(y + (size_t)c * hw + p0, mk);
#pragma GCC unroll 8
            for (int i = 0; i < t; i++) s[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(k + (size_t)i * ldk + c), yv, s[i]);
        }
        __m256 mx = _mm256_set1_ps(-INFINITY);
#pragma GCC unroll 8
        for (int i = 0; i < t; i++) {
            s[i] = _mm256_mul_ps(s[i], _mm256_set1_ps(scale));
            mx = _mm256_max_ps(mx, s[i]);
        }
        __m256 sum = _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int i = 0; i < t; i++) {
            s[i] = exp256(_mm256_sub_ps(s[i], mx));
            sum = _mm256_add_ps(sum, s[i]);
        }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.f), sum);
#pragma GCC unroll 8
        for (int i = 0; i < t; i++) s[i] = _mm256_mul_ps(s[i], inv);
        int c = 0;
        for (; c + 4 <= ch; c += 4) {
            __m256 a[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) a[j] = _mm256_maskload_ps(y + (size_t)(c + j) * hw + p0, mk);
#pragma GCC unroll 8
            for (int i = 0; i < t; i++) {
                const float *vr = v + (size_t)i * ldk + c;
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) a[j] = _mm256_fmadd_ps(s[i], _mm256_broadcast_ss(vr + j), a[j]);
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) _mm256_maskstore_ps(y + (size_t)(c + j) * hw + p0, mk, a[j]);
        }
        for (; c < ch; c++) {
            __m256 a = _mm256_maskload_ps(y + (size_t)c * hw + p0, mk);
#pragma GCC unroll 8
            for (int i = 0; i < t; i++) a = _mm256_fmadd_ps(s[i], _mm256_broadcast_ss(v + (size_t)i * ldk + c), a);
            _mm256_maskstore_ps(y + (size_t)c * hw + p0, mk, a);
        }
    }
}

static void f2m_attn_avx2(float *y, int ch, int hw, const float *k, const float *v, int ldk, int t, float scale)
{
    switch (t) {
    case 1: f2m_tokens(1, y, ch, hw, k, v, ldk, scale); break;
    case 2: f2m_tokens(2, y, ch, hw, k, v, ldk, scale); break;
    case 3: f2m_tokens(3, y, ch, hw, k, v, ldk, scale); break;
    case 4: f2m_tokens(4, y, ch, hw, k, v, ldk, scale); break;
    case 5: f2m_tokens(5, y, ch, hw, k, v, ldk, scale); break;
    case 6: f2m_tokens(6, y, ch, hw, k, v, ldk, scale); break;
    case 7: f2m_tokens(7, y, ch, hw, k, v, ldk, scale); break;
    case 8: f2m_tokens(8, y, ch, hw, k, v, ldk, scale); break;
    default: mf_kernels_ref.f2m_attn(y, ch, hw, k, v, ldk, t, scale);
    }
}

/* ---- token-side linear ---------------------------------------------------
 * y[R][out] = x[R][in] W^T + b for R <= 6 rows at once, so every weight is
 * read once per 6 rows.  Weights packed in panels of 16 columns, each
 * [in][16] contiguous (the last one 8 wide when 8 or fewer remain), so a
 * tile streams its weights sequentially. */
#define LP 16

static inline int lin_panel_width(int out, int o0) { return out - o0 > 8 ? LP : 8; }

static size_t lin_packed_bytes(int in, int out)
{
    return ((size_t)(out / LP) * LP + (size_t)(out % LP ? lin_panel_width(out, out - out % LP) : 0)) * (size_t)in *
           sizeof(float);
}

static void lin_pack(const float *wt, int in, int out, void *dst)
{
    float *packed = dst;
    for (int o0 = 0; o0 < out; o0 += LP) {
        const int pw = lin_panel_width(out, o0);
        float *panel = packed + (size_t)o0 * in;
        for (int i = 0; i < in; i++)
            for (int c = 0; c < pw; c++) {
                int o = o0 + c;
                panel[(size_t)i * pw + c] = o < out ? wt[(size_t)i * out + o] : 0.f;
            }
    }
}

/* R rows x the panel at o0 (NV vectors; PART: the last one masked by lm). */
static inline __attribute__((always_inline)) void lin_tile(int R, int NV, int PART, const mf_lin *l, const float *x,
                                                           int o0, __m256i lm, float *y)
{
    __m256 acc[6][2];
    const int pw = lin_panel_width(l->out, o0);
    const float *panel = (const float *)l->wp + (size_t)o0 * l->in;
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
        const __m256 b = LDV(PART, v, NV, l->b + o0 + 8 * v, lm);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) acc[r][v] = b;
    }
    for (int i = 0; i < l->in; i++) {
        const float *w = panel + (size_t)i * pw;
        if (l->stream) _mm_prefetch((const char *)(w + 32 * pw), _MM_HINT_NTA); /* read once per run */
        else _mm_prefetch((const char *)(w + 32 * pw), _MM_HINT_T0);
        __m256 wv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) wv[v] = _mm256_loadu_ps(w + 8 * v);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            const __m256 xv = _mm256_broadcast_ss(x + (size_t)r * l->in + i);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(xv, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) STV(PART, v, NV, y + (size_t)r * l->out + o0 + 8 * v, lm, acc[r][v]);
}

#define LIN_TILE_R(R)                                                                                                 \
    do {                                                                                                              \
        if (nv == 2) {                                                                                                \
            if (part) lin_tile(R, 2, 1, l, xr, o0, lm, yr);                                                           \
            else lin_tile(R, 2, 0, l, xr, o0, lm, yr);                                                                \
        } else {                                                                                                      \
            if (part) lin_tile(R, 1, 1, l, xr, o0, lm, yr);                                                           \
            else lin_tile(R, 1, 0, l, xr, o0, lm, yr);                                                                \
        }                                                                                                             \
    } while (0)

static void linear_avx2(const mf_lin *l, const float *x, int rows, float *y, int ob, int oe, void *scratch)
{
    for (int r0 = 0; r0 < rows; r0 += 6) {
        const int R = rows - r0 < 6 ? rows - r0 : 6;
        const float *xr = x + (size_t)r0 * l->in;
        float *yr = y + (size_t)r0 * l->out;
        for (int o0 = ob; o0 < oe; o0 += LP) {
            const int cols = oe - o0 < LP ? oe - o0 : LP, nv = cols > 8 ? 2 : 1, rest = cols - 8 * (nv - 1),
                      part = rest < 8;
            const __m256i lm = mask_n(rest);
            switch (R) {
            case 1: LIN_TILE_R(1); break;
            case 2: LIN_TILE_R(2); break;
            case 3: LIN_TILE_R(3); break;
            case 4: LIN_TILE_R(4); break;
            case 5: LIN_TILE_R(5); break;
            default: LIN_TILE_R(6); break;
            }
        }
    }
}
#undef LIN_TILE_R

/* ---- stem -----------------------------------------------------------------
 * 3x3, stride 2, pad 1, from 3 channels, + bias + relu6, direct: for each
 * 8-pixel chunk of an output row, the 27 taps (3 channels x 3x3) are
 * deinterleaved once (dws2_row) into registers spilled to L1, then
 * multiplied into the output channels NO at a time, their accumulators
 * held in registers. */
static inline __attribute__((always_inline)) void stem_out(int NO, const __m256 *v, const float *wt,
                                                            const float *bias, int o0, float *out, size_t plane_o,
                                                            int full, __m256i mo)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int o = 0; o < NO; o++) acc[o] = _mm256_set1_ps(bias[o0 + o]);
#pragma GCC unroll 27
    for (int t = 0; t < 27; t++) {
        const __m256 x = v[t];
#pragma GCC unroll 8
        for (int o = 0; o < NO; o++) acc[o] = _mm256_fmadd_ps(_mm256_broadcast_ss(wt + (size_t)(o0 + o) * 27 + t), x, acc[o]);
    }
#pragma GCC unroll 8
    for (int o = 0; o < NO; o++) {
        float *p = out + (size_t)(o0 + o) * plane_o;
        if (full) _mm256_storeu_ps(p, relu6(acc[o]));
        else _mm256_maskstore_ps(p, mo, relu6(acc[o]));
    }
}

static void stem_avx2(const float *in, int h, int w, const float *wt, const float *bias, int c, float *out, int oh,
                      int ow, int oy0, int oy1)
{
    const size_t plane = (size_t)h * w, plane_o = (size_t)oh * ow;
    __m256 v[27]; /* tap t = ch*9 + ky*3 + kx, as in wt */
    for (int oy = oy0; oy < oy1; oy++) {
        for (int ox = 0; ox < ow; ox += 8) {
            const __m256i ma = mask_range(2 * ox, w), mb = mask_range(2 * ox + 8, w), mo = mask_n(ow - ox);
            const int edge = !(ox > 0 && 2 * ox + 16 <= w), full = ox + 8 <= ow;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < 3; ky++) {
                    __m256 *vt = v + ch * 9 + ky * 3;
                    const int iy = 2 * oy + ky - 1;
                    const float *row = in + ch * plane + (size_t)iy * w;
                    if (iy < 0 || iy >= h) vt[0] = vt[1] = vt[2] = _mm256_setzero_ps();
                    else if (edge) dws2_row(1, row, ox, w, ma, mb, vt);
                    else dws2_row(0, row, ox, w, ma, mb, vt);
                }
            float *o = out + (size_t)oy * ow + ox;
            int o0 = 0;
            for (; o0 + 8 <= c; o0 += 8) stem_out(8, v, wt, bias, o0, o, plane_o, full, mo);
            if (o0 + 4 <= c) {
                stem_out(4, v, wt, bias, o0, o, plane_o, full, mo);
                o0 += 4;
            }
            for (; o0 < c; o0++) stem_out(1, v, wt, bias, o0, o, plane_o, full, mo);
        }
    }
}

const mf_kernels mf_kernels_avx2 = {
    .name = "avx2",
    .precision = MF_PRECISION_FP32,
    .pw = pw_avx2,
    .dw = dw_avx2,
    .m2f_attn = m2f_attn_avx2,
    .f2m_attn = f2m_attn_avx2,
    .linear = linear_avx2,
    .gelu = gelu_avx2,
    .stem = stem_avx2,
    .pw_packed_bytes = pw_packed_bytes,
    .pw_pack = pw_pack,
    .lin_packed_bytes = lin_packed_bytes,
    .lin_pack = lin_pack,
};

/* ---- bf16 on AVX2: the portable fallback's arithmetic on this set's GEMMs.
 * Inputs are rounded to bf16 (mf_bf16_round, as every bf16 path rounds)
 * into the scratch, a panel of columns at a time, then the fp32 kernels
 * above run on them with weights rounded at load (model.c) and packed as
 * fp32: the same products as the other bf16 sets, the sums in this set's
 * order, which no split of the columns or rows changes (OpenBLAS's, in
 * portable-bf16, does: its bf16 outputs then move with the thread count by
 * the rounding of inputs that land near a bf16 boundary). */
#define LIN_ROWS 12 /* rows of a linear rounded per pass (two 6-row tiles) */

static size_t pw_scratch_bf16(int k) { return mf_rounded_pw_scratch(k); }

static void pw_avx2_bf16(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                         const mf_epi *e, void *scratch)
{
    mf_rounded_pw(pw_avx2, p, g, x, ldx, n, y, ldy, e, scratch);
}

static size_t lin_scratch_bf16(int in) { return mf_rounded_lin_scratch(LIN_ROWS, in); }

static void linear_avx2_bf16(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    mf_rounded_linear(linear_avx2, LIN_ROWS, l, x, rows, y, o0, o1, scratch);
}

const mf_kernels mf_kernels_avx2_bf16 = {
    .name = "avx2-bf16",
    .precision = MF_PRECISION_BF16,
    .pw = pw_avx2_bf16,
    .linear = linear_avx2_bf16,
    .pw_packed_bytes = pw_packed_bytes,
    .pw_pack = pw_pack,
    .lin_packed_bytes = lin_packed_bytes,
    .lin_pack = lin_pack,
    .pw_scratch_bytes = pw_scratch_bf16,
    .lin_scratch_bytes = lin_scratch_bf16,
};
