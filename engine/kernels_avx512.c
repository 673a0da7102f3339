/* kernels_avx512.c -- AVX-512 kernels: 1x1 convolution (GEMM on packed
 * weights with the epilogue in registers), 3x3 depthwise (stride 1 and 2),
 * and the two attention bridges.  Compiled with -mavx512f etc. and called
 * only after mf_cpu_has_avx512(); each has a reference twin in kernels_ref.c
 * and tests/test_kernels.c holds them together.
 *
 * Edges are handled with masked loads and stores (masked-off lanes never
 * fault), so no kernel reads or writes outside its tensors. */
#include "internal.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define MR 8   /* rows of W per micro-tile */
#define KC 128 /* depth of one pass: an x panel (KC x 48, 24 KiB) stays in L1 across the row blocks */

static inline __mmask16 mask_n(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* ---- 1x1 convolution ----------------------------------------------------
 * Packed weights: for each block of MR rows, for each k, MR values (rows
 * past M are zero).  y[M][n] = W x[K][n] in tiles of MR rows x 16*NV columns. */

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

static inline __m512 epi_apply(__m512 t, int row, const mf_epi *e)
{
    t = _mm512_add_ps(t, _mm512_set1_ps(e->bias[row]));
    if (e->act == MF_ACT_RELU6) {
        t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(6.f));
    } else if (e->act == MF_ACT_DYRELU) {
        t = _mm512_max_ps(_mm512_mul_ps(t, _mm512_set1_ps(e->dya[row])), _mm512_mul_ps(t, _mm512_set1_ps(e->dyb[row])));
    }
    return t;
}

/* One MR x (16*NV) tile over k in [0, kc): acc (+)= W x.  first: start from
 * zero (or from the residual, which is how a residual is added when there is
 * no activation: it may then alias y), else from y; last: apply the epilogue.
 * rows: valid rows (<= MR); lastmask: columns valid in the last vector;
 * res: the tile's residual (row stride ldr) or NULL; pf: the next tile's
 * weights (kc * MR floats, as wp), prefetched into L1 as these are used. */
static inline __attribute__((always_inline)) void pw_tile(int R, int NV, const float *wp, const float *pf,
                                                          const float *x, size_t ldx, int kc, float *y, size_t ldy,
                                                          int rows, __mmask16 lastmask, int first, int last, int row0,
                                                          const mf_epi *e, const float *res)
{
    const int res_first = res && e->act == MF_ACT_NONE;
    __m512 acc[MR][3];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            __mmask16 mk = v == NV - 1 ? lastmask : (__mmask16)0xFFFF;
            if (r >= rows) acc[r][v] = _mm512_setzero_ps();
            else if (!first) acc[r][v] = _mm512_maskz_loadu_ps(mk, y + (size_t)r * ldy + 16 * v);
            else if (res_first) acc[r][v] = _mm512_maskz_loadu_ps(mk, res + (size_t)r * e->ldr + 16 * v);
            else acc[r][v] = _mm512_setzero_ps();
        }
    for (int k = 0; k < kc; k++) {
        __m512 xv[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            __mmask16 mk = v == NV - 1 ? lastmask : (__mmask16)0xFFFF;
            xv[v] = _mm512_maskz_loadu_ps(mk, x + (size_t)k * ldx + 16 * v);
        }
        const float *wk = wp + (size_t)k * MR;
        _mm_prefetch((const char *)(pf + (size_t)k * MR), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 wv = _mm512_set1_ps(wk[r]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (r >= rows) break;
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            __mmask16 mk = v == NV - 1 ? lastmask : (__mmask16)0xFFFF;
            __m512 t = acc[r][v];
            if (last) {
                t = epi_apply(t, row0 + r, e);
                if (res && !res_first) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, res + (size_t)r * e->ldr + 16 * v));
            }
            _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16 * v, mk, t);
        }
    }
}

#define PW_TILE_NV(R)                                                                                         \
    switch (nv) {                                                                                             \
    case 3: pw_tile(R, 3, wp, pf, x, ldx, kc, y, ldy, rows, lastmask, first, last, row0, e, res); break;     \
    case 2: pw_tile(R, 2, wp, pf, x, ldx, kc, y, ldy, rows, lastmask, first, last, row0, e, res); break;     \
    default: pw_tile(R, 1, wp, pf, x, ldx, kc, y, ldy, rows, lastmask, first, last, row0, e, res); break;    \
    }

/* A block of fewer than MR valid rows (a small group's, or the last one)
 * computes only about as many: 1, 2, 3, 4, 6 or 8. */
static void pw_tile_dispatch(int nv, const float *wp, const float *pf, const float *x, size_t ldx, int kc, float *y,
                             size_t ldy, int rows, __mmask16 lastmask, int first, int last, int row0, const mf_epi *e,
                             const float *res)
{
    switch (rows) {
    case 1: PW_TILE_NV(1) break;
    case 2: PW_TILE_NV(2) break;
    case 3: PW_TILE_NV(3) break;
    case 4: PW_TILE_NV(4) break;
    case 5:
    case 6: PW_TILE_NV(6) break;
    default: PW_TILE_NV(8) break;
    }
}
#undef PW_TILE_NV

/* The last few columns of a 1x1 conv (fewer than 8: a 7x7 map's 49th
 * pixel, a 14x14 map's last 4) as matrix-vector products, eight rows at a
 * time in 256-bit lanes, instead of a 16-wide tile that would be mostly
 * empty.  NB row blocks (their packed weights wstride floats apart) go at
 * once, so that NB * NC independent FMA chains are in flight: one column
 * of one block alone would be a single chain, waiting on the FMA's
 * latency at every k.  Same first/last/residual conventions as pw_tile,
 * and the same sums in the same order (one FMA chain per output, k in
 * order), so an output does not depend on which of the two computed it.
 * rows: the valid rows of the last of the nb blocks (the others have MR). */
static inline __attribute__((always_inline)) void pw_tail_t(int NC, int NB, int nb, const float *wp, size_t wstride,
                                                            const float *x, size_t ldx, int kc, float *y, size_t ldy,
                                                            int rows, int first, int last, int row0, const mf_epi *e,
                                                            const float *res)
{
    const int res_first = res && e->act == MF_ACT_NONE;
    const __m256i ridx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i yoff = _mm256_mullo_epi32(ridx, _mm256_set1_epi32((int)ldy));
    const __m256i roff = _mm256_mullo_epi32(ridx, _mm256_set1_epi32((int)e->ldr));
    __m256 acc[8][7];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        if (b >= nb) break;
        const __mmask8 rm = (__mmask8)(b == nb - 1 ? (1u << rows) - 1u : 0xFFu);
        const float *yb = y + (size_t)b * MR * ldy;
#pragma GCC unroll 7
        for (int c = 0; c < NC; c++) {
            if (!first) acc[b][c] = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), rm, yoff, yb + c, 4);
            else if (res_first)
                acc[b][c] = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), rm, roff, res + (size_t)b * MR * e->ldr + c, 4);
            else acc[b][c] = _mm256_setzero_ps();
        }
    }
    for (int k = 0; k < kc; k++) {
        const float *xk = x + (size_t)k * ldx;
        __m256 xv[7];
#pragma GCC unroll 7
        for (int c = 0; c < NC; c++) xv[c] = _mm256_set1_ps(xk[c]);
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            if (b >= nb) break;
            const __m256 wv = _mm256_loadu_ps(wp + (size_t)b * wstride + (size_t)k * MR);
#pragma GCC unroll 7
            for (int c = 0; c < NC; c++) acc[b][c] = _mm256_fmadd_ps(wv, xv[c], acc[b][c]);
        }
    }
    for (int b = 0; b < nb; b++) {
        const int rb = b == nb - 1 ? rows : MR;
        float *yb = y + (size_t)b * MR * ldy;
        const float *rsb = res ? res + (size_t)b * MR * e->ldr : NULL;
        for (int c = 0; c < NC; c++) {
            float v[8];
            _mm256_storeu_ps(v, acc[b][c]);
            for (int r = 0; r < rb; r++) {
                float o = v[r];
                if (last) {
                    const int m = row0 + b * MR + r;
                    o += e->bias[m];
                    if (e->act == MF_ACT_RELU6) o = o < 0.f ? 0.f : (o > 6.f ? 6.f : o);
                    else if (e->act == MF_ACT_DYRELU) {
                        float ta = o * e->dya[m], tb = o * e->dyb[m];
                        o = ta > tb ? ta : tb;
                    }
                    if (rsb && !res_first) o += rsb[(size_t)r * e->ldr + c];
                }
                yb[(size_t)r * ldy + c] = o;
            }
        }
    }
}

/* Blocks per call for nc columns: about eight chains, as the FMAs' latency
 * times their rate needs. */
static inline int pw_tail_blocks(int nc) { return nc == 1 ? 8 : nc == 2 ? 4 : nc <= 4 ? 2 : 1; }

static void pw_tail_cols(int nc, int nb, const float *wp, size_t wstride, const float *x, size_t ldx, int kc, float *y,
                         size_t ldy, int rows, int first, int last, int row0, const mf_epi *e, const float *res)
{
    switch (nc) {
    case 1: pw_tail_t(1, 8, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    case 2: pw_tail_t(2, 4, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    case 3: pw_tail_t(3, 2, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    case 4: pw_tail_t(4, 2, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    case 5: pw_tail_t(5, 1, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    case 6: pw_tail_t(6, 1, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    default: pw_tail_t(7, 1, nb, wp, wstride, x, ldx, kc, y, ldy, rows, first, last, row0, e, res); break;
    }
}

static void pw_avx512(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                      const mf_epi *e, void *scratch)
{
    const int M = p->cout / p->groups, K = p->cin / p->groups;
    const float *wp = (const float *)((const char *)p->wp + p->wp_group * (size_t)g);
    const int mblocks = (M + MR - 1) / MR;
    /* columns in 48-wide tiles; a tail of fewer than 8 goes to pw_tail_cols */
    const int tail = n > 48 && n % 48 < 8 ? n % 48 : 0, nt = n - tail, tiles = (nt + 47) / 48;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC;
        int first = k0 == 0, last = k0 + kc == K;
        /* Weights of this depth block beyond L2 (late stages: many channels,
         * few pixels): sweep the columns inside each row block, so every
         * weight is read from memory once; otherwise sweep the row blocks
         * inside each column tile, keeping its x panel in L1. */
        const int w_outer = (size_t)M * kc * sizeof(float) > (256u << 10);
        const int outer = w_outer ? mblocks : tiles, inner = w_outer ? tiles : mblocks;
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++) {
                const int mb = w_outer ? o : i, n0 = 48 * (w_outer ? i : o);
                int cols = nt - n0 < 48 ? nt - n0 : 48;
                int nv = (cols + 15) / 16;
                __mmask16 lm = mask_n(cols - 16 * (nv - 1));
                int rows = M - mb * MR < MR ? M - mb * MR : MR;
                const float *res = e->res ? e->res + (size_t)mb * MR * e->ldr + n0 : NULL;
                /* the next call's weights are fetched while this one's are used
                 * (another row block's are a separate run of kc * MR floats,
                 * which the hardware prefetchers would only find after it began) */
                const int pb = w_outer ? (i + 1 < inner || o + 1 == outer ? mb : mb + 1) : (i + 1 < inner ? mb + 1 : 0);
                pw_tile_dispatch(nv, wp + ((size_t)mb * K + k0) * MR, wp + ((size_t)pb * K + k0) * MR,
                                 x + (size_t)k0 * ldx + n0, ldx, kc, y + (size_t)mb * MR * ldy + n0, ldy, rows, lm,
                                 first, last, mb * MR, e, res);
            }
        if (tail)
            for (int mb = 0, step = pw_tail_blocks(tail); mb < mblocks; mb += step) {
                const int nb = mblocks - mb < step ? mblocks - mb : step, lb = mb + nb - 1;
                const int rows = M - lb * MR < MR ? M - lb * MR : MR; /* of the last block */
                const float *res = e->res ? e->res + (size_t)mb * MR * e->ldr + nt : NULL;
                pw_tail_cols(tail, nb, wp + ((size_t)mb * K + k0) * MR, (size_t)K * MR, x + (size_t)k0 * ldx + nt, ldx,
                             kc, y + (size_t)mb * MR * ldy + nt, ldy, rows, first, last, mb * MR, e, res);
            }
    }
}

/* ---- 3x3 depthwise ------------------------------------------------------ */

/* Lanes j of a 16-wide load starting at column s that fall inside [0, w). */
static inline __mmask16 mask_range(int s, int w)
{
    int lo = s < 0 ? -s : 0, hi = w - s;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    return (__mmask16)(mask_n(hi) & ~mask_n(lo));
}


/* Per-plane epilogue constants: bias and dynamic-ReLU slopes broadcast once. */
typedef struct dw_ep {
    __m512 bias, a, b;
    mf_act act;
} dw_ep;

static inline dw_ep dw_ep_make(int q, const mf_epi *e)
{
    dw_ep d = {_mm512_set1_ps(e->bias[q]), _mm512_setzero_ps(), _mm512_setzero_ps(), e->act};
    if (e->act == MF_ACT_DYRELU) {
        d.a = _mm512_set1_ps(e->dya[q]);
        d.b = _mm512_set1_ps(e->dyb[q]);
    }
    return d;
}

static inline __m512 dw_ep_apply(__m512 t, const dw_ep *d)
{
    t = _mm512_add_ps(t, d->bias);
    if (d->act == MF_ACT_RELU6) t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(6.f));
    else if (d->act == MF_ACT_DYRELU) t = _mm512_max_ps(_mm512_mul_ps(t, d->a), _mm512_mul_ps(t, d->b));
    return t;
}

/* Masks of the stride-1 kernel's vector at column ox: the output lanes and
 * the loads at ox - 1, ox, ox + 1; they depend on the width only, so a
 * call computes them once for all its channels and rows. */
typedef struct dw_s1_mask {
    __mmask16 o, l, c, r;
} dw_s1_mask;

#define DW_S1_MAX_VECS ((16384 + 15) / 16) /* mf_workspace_reserve's widest map */

static void dw_s1_masks(int w, dw_s1_mask *m)
{
    for (int v = 0, ox = 0; ox < w; ox += 16, v++)
        m[v] = (dw_s1_mask){mask_n(w - ox), mask_range(ox - 1, w), mask_range(ox, w), mask_range(ox + 1, w)};
}

/* Stride 1, output rows [oy0, oy1): interior rows go four at a time, their
 * six input rows each loaded once (three shifted loads) and feeding every
 * output row they touch; rows at the map's edges (and a band's last one to
 * three) take the general path, two rows at a time.  xr(iy) is input row iy;
 * weights live in registers for the whole plane. */
static void dw_plane_s1(const float *xi, int xr0, int h, int w, const float *k, float *yo, int oy0, int oy1, int q,
                        const mf_epi *e, const dw_s1_mask *mk)
{
#define XR(iy) (xi + (ptrdiff_t)((iy) - xr0) * w)
    __m512 kv[9];
    for (int i = 0; i < 9; i++) kv[i] = _mm512_set1_ps(k[i]);
    const dw_ep ep = dw_ep_make(q, e);
    int oy = oy0;
    while (oy < oy1) {
        float *yr = yo + (size_t)(oy - oy0) * w;
        if (oy >= 1 && oy + 4 < h && oy + 4 <= oy1) { /* rows oy-1 .. oy+4 all exist */
            for (int ox = 0, v = 0; ox < w; ox += 16, v++) {
                const __mmask16 mo = mk[v].o, ml = mk[v].l, mc = mk[v].c, mr = mk[v].r;
                /* two accumulators per output row (side taps, centre taps):
                 * eight FMA chains in flight rather than four, as the
                 * FMAs' latency times their rate needs */
                __m512 acc[4][2];
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
#pragma GCC unroll 6
                for (int r = 0; r < 6; r++) {
                    const float *row = XR(oy - 1 + r) + ox;
                    __m512 l = _mm512_maskz_loadu_ps(ml, row - 1), c = _mm512_maskz_loadu_ps(mc, row),
                           rt = _mm512_maskz_loadu_ps(mr, row + 1);
#pragma GCC unroll 4
                    for (int j = 0; j < 4; j++) {
                        const int ky = r - j; /* this input row is tap row ky of output row oy+j */
                        if (ky < 0 || ky > 2) continue;
                        acc[j][0] = _mm512_fmadd_ps(kv[ky * 3 + 0], l, acc[j][0]);
                        acc[j][1] = _mm512_fmadd_ps(kv[ky * 3 + 1], c, acc[j][1]);
                        acc[j][0] = _mm512_fmadd_ps(kv[ky * 3 + 2], rt, acc[j][0]);
                    }
                }
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++)
                    _mm512_mask_storeu_ps(yr + (size_t)j * w + ox, mo,
                                          dw_ep_apply(_mm512_add_ps(acc[j][0], acc[j][1]), &ep));
            }
            oy += 4;
            continue;
        }
        /* the same sums in the same order as above (side and centre taps
         * apart, rows in order), so a row's outputs do not depend on the
         * path that computed it, hence not on how the rows were banded */
        const int two = oy + 1 < oy1;
        for (int ox = 0, v = 0; ox < w; ox += 16, v++) {
            const __mmask16 mo = mk[v].o, ml = mk[v].l, mc = mk[v].c, mr = mk[v].r;
            __m512 a0 = _mm512_setzero_ps(), a0c = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(),
                   a1c = _mm512_setzero_ps();
            for (int r = -1; r <= 2; r++) { /* input rows oy-1 .. oy+2 */
                int iy = oy + r;
                if (iy < 0 || iy >= h || (r == 2 && !two)) continue;
                const float *row = XR(iy) + ox;
                __m512 l = _mm512_maskz_loadu_ps(ml, row - 1), c = _mm512_maskz_loadu_ps(mc, row),
                       rt = _mm512_maskz_loadu_ps(mr, row + 1);
                if (r <= 1) { /* tap row r+1 of output row oy */
                    const int ky = r + 1;
                    a0 = _mm512_fmadd_ps(kv[ky * 3 + 0], l, a0);
                    a0c = _mm512_fmadd_ps(kv[ky * 3 + 1], c, a0c);
                    a0 = _mm512_fmadd_ps(kv[ky * 3 + 2], rt, a0);
                }
                if (r >= 0 && two) { /* tap row r of output row oy+1 */
                    const int ky = r;
                    a1 = _mm512_fmadd_ps(kv[ky * 3 + 0], l, a1);
                    a1c = _mm512_fmadd_ps(kv[ky * 3 + 1], c, a1c);
                    a1 = _mm512_fmadd_ps(kv[ky * 3 + 2], rt, a1);
                }
            }
            _mm512_mask_storeu_ps(yr + ox, mo, dw_ep_apply(_mm512_add_ps(a0, a0c), &ep));
            if (two) _mm512_mask_storeu_ps(yr + w + ox, mo, dw_ep_apply(_mm512_add_ps(a1, a1c), &ep));
        }
        oy += 2;
    }
#undef XR
}

/* ---- the kernels below: each output sums its nine taps as dw_sum9 does
 * ((row 0 + row 1) + row 2, each row left to right), whichever rows a call
 * computes, so banding changes no bits.  Channel q goes to y + (q - c0) *
 * ldy, row oy at (oy - oy0) * ow. */
static inline __m512 dw_sum9(const __m512 *t, const __m512 *kv)
{
    __m512 a0 = _mm512_mul_ps(kv[0], t[0]), a1 = _mm512_mul_ps(kv[3], t[3]), a2 = _mm512_mul_ps(kv[6], t[6]);
    a0 = _mm512_fmadd_ps(kv[1], t[1], a0);
    a1 = _mm512_fmadd_ps(kv[4], t[4], a1);
    a2 = _mm512_fmadd_ps(kv[7], t[7], a2);
    a0 = _mm512_fmadd_ps(kv[2], t[2], a0);
    a1 = _mm512_fmadd_ps(kv[5], t[5], a1);
    a2 = _mm512_fmadd_ps(kv[8], t[8], a2);
    return _mm512_add_ps(_mm512_add_ps(a0, a1), a2);
}

/* Output channels at a time that dw_order orders by their input channel. */
#define DW_QMAX 1024

/* Output channels [q0, q1) (at most DW_QMAX) into ord, each input
 * channel's readers together (in increasing order), so one deinterleave
 * of its rows serves them all: a shuffle folded into src puts them cin apart
 * (src[q] = q % cin), not next to each other as a plain multiplier does. */
static void dw_order(const mf_dw *d, int q0, int q1, int *ord)
{
    int smin = d->src[q0], smax = smin, sorted = 1;
    for (int q = q0 + 1; q < q1; q++) {
        const int v = d->src[q];
        if (v < d->src[q - 1]) sorted = 0;
        if (v < smin) smin = v;
        if (v > smax) smax = v;
    }
    if (sorted || smax - smin >= DW_QMAX) { /* in order already, or too many inputs to bucket here */
        for (int q = q0; q < q1; q++) ord[q - q0] = q;
        return;
    }
    int head[DW_QMAX], next[DW_QMAX];
    for (int v = 0; v <= smax - smin; v++) head[v] = -1;
    for (int q = q1 - 1; q >= q0; q--) { /* prepended: each list ends up increasing */
        next[q - q0] = head[d->src[q] - smin];
        head[d->src[q] - smin] = q;
    }
    int n = 0;
    for (int v = 0; v <= smax - smin; v++)
        for (int q = head[v]; q >= 0; q = next[q - q0]) ord[n++] = q;
}

/* Stride 1, maps narrower than a vector: channels [c0, c1), rows [oy0,
 * oy1), a row in one vector (two channels' rows in its halves when they
 * fit in 7 lanes: the 7x7 maps), the row's left and right taps the same
 * vector shifted a lane (zeros come in at the edges, and the lanes past
 * the row are zero), the three input rows of an output row held from the
 * row before. */
static inline __m512 dw_lane_left(__m512 v) /* v[j - 1], 0 at lane 0 */
{
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(v), _mm512_setzero_si512(), 15));
}

static inline __m512 dw_lane_right(__m512 v) /* v[j + 1], 0 at lane 15 */
{
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_setzero_si512(), _mm512_castps_si512(v), 1));
}

/* Input row iy of channels a (lanes [0, w)) and, with H, b (lanes [8, 8 + w)). */
static inline __attribute__((always_inline)) __m512 dw_row16(int H, const float *xa, const float *xb, ptrdiff_t o,
                                                             __mmask16 lo, __mmask16 hi)
{
    const __m512 c = _mm512_maskz_loadu_ps(lo, xa + o);
    return H ? _mm512_mask_loadu_ps(c, hi, xb + o) : c;
}

static inline __attribute__((always_inline)) void dw_rows16_t(int H, const mf_dw *d, int c0, int c1,
                                                              const mf_dw_rows *g, float *y, size_t ldy,
                                                              const mf_epi *e)
{
    const int w = g->w, h = g->h;
    const __mmask16 lo = mask_n(w);
    for (int q = c0; q < c1; q += 1 + H) {
        /* channel q in lanes [0, w); with H, channel q + 1 in [8, 8 + w) */
        const int qb = H && q + 1 < c1 ? q + 1 : q;
        const __mmask16 hi = qb != q ? (__mmask16)(lo << 8) : 0;
        const float *xa = g->x + (size_t)d->src[q] * g->ldx, *xb = g->x + (size_t)d->src[qb] * g->ldx - 8;
        const float *ka = d->w + (size_t)q * 9, *kb = d->w + (size_t)qb * 9;
        __m512 kv[9];
        dw_ep ep = dw_ep_make(q, e);
        if (H) {
            const dw_ep eb = dw_ep_make(qb, e);
            for (int t = 0; t < 9; t++) kv[t] = _mm512_mask_blend_ps(hi, _mm512_set1_ps(ka[t]), _mm512_set1_ps(kb[t]));
            ep.bias = _mm512_mask_blend_ps(hi, ep.bias, eb.bias);
            ep.a = _mm512_mask_blend_ps(hi, ep.a, eb.a);
            ep.b = _mm512_mask_blend_ps(hi, ep.b, eb.b);
        } else {
            for (int t = 0; t < 9; t++) kv[t] = _mm512_set1_ps(ka[t]);
        }
        float *ya = y + (size_t)(q - c0) * ldy, *yb = y + (size_t)(qb - c0) * ldy - 8;
        __m512 r[3][3]; /* [input row oy - 1 + i][left, centre, right] */
        for (int i = 0; i < 2; i++) {
            const int iy = g->oy0 - 1 + i;
            const __m512 c = iy >= 0 && iy < h ? dw_row16(H, xa, xb, (ptrdiff_t)(iy - g->xr0) * w, lo, hi)
                                               : _mm512_setzero_ps();
            r[i + 1][0] = dw_lane_left(c);
            r[i + 1][1] = c;
            r[i + 1][2] = dw_lane_right(c);
        }
        for (int oy = g->oy0; oy < g->oy1; oy++) {
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 3; j++) r[i][j] = r[i + 1][j];
            const __m512 c = oy + 1 < h ? dw_row16(H, xa, xb, (ptrdiff_t)(oy + 1 - g->xr0) * w, lo, hi)
                                        : _mm512_setzero_ps();
            r[2][0] = dw_lane_left(c);
            r[2][1] = c;
            r[2][2] = dw_lane_right(c);
            const __m512 t9[9] = {r[0][0], r[0][1], r[0][2], r[1][0], r[1][1], r[1][2], r[2][0], r[2][1], r[2][2]};
            const __m512 t = dw_ep_apply(dw_sum9(t9, kv), &ep);
            const size_t o = (size_t)(oy - g->oy0) * w;
            _mm512_mask_storeu_ps(ya + o, lo, t);
            if (H) _mm512_mask_storeu_ps(yb + o, hi, t);
        }
    }
}

static void dw_rows16(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    if (g->w <= 7) dw_rows16_t(1, d, c0, c1, g, y, ldy, e);
    else dw_rows16_t(0, d, c0, c1, g, y, ldy, e);
}

/* Stride 2, by input channel: channels [c0, c1) grouped by the input they
 * read (dw_order); for each input, 16 output columns at a time down the
 * rows, the three input rows' taps deinterleaved in registers (the even
 * columns, the odd ones, and the odd ones a lane on: x[2ox + 2j], x[2ox +
 * 2j + 1], x[2ox + 2j - 1]), the top row kept from the output row above
 * (it was that row's bottom one), and every output channel reading that
 * input summed from those nine vectors, its weights broadcast from memory.
 * Any width: the row kernels' masks cover every column. */
static inline __attribute__((always_inline)) void dws2_row(const float *row, int ox, __mmask16 ma, __mmask16 mb,
                                                           __mmask16 mp, __m512 *t)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const int c = 2 * ox;
    const __m512 a = _mm512_maskz_loadu_ps(ma, row + c), b = _mm512_maskz_loadu_ps(mb, row + c + 16);
    const __m512 p = _mm512_maskz_loadu_ps(mp, row + c - 16); /* lane 15: x[2ox - 1] */
    const __m512 o = _mm512_permutex2var_ps(a, odd, b);
    t[0] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(p), 15));
    t[1] = _mm512_permutex2var_ps(a, even, b);
    t[2] = o;
}

/* Output channel q's R (1 or 2) rows at yq (ow apart) from the taps t of
 * input rows 2oy - 1 .. 2oy + 2R - 1, its weights broadcast once for both. */
static inline __attribute__((always_inline)) void dws2_out(int R, const mf_dw *d, int q, const mf_epi *e,
                                                           const __m512 *t, float *yq, int ow, __mmask16 mo)
{
    const float *k = d->w + (size_t)q * 9;
    __m512 kv[9];
#pragma GCC unroll 9
    for (int u = 0; u < 9; u++) kv[u] = _mm512_set1_ps(k[u]);
    const dw_ep ep = dw_ep_make(q, e);
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(yq + (size_t)r * ow, mo, dw_ep_apply(dw_sum9(t + 6 * r, kv), &ep));
}

static void dws2(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    const int w = g->w, h = g->h, ow = g->ow;
    int ord[DW_QMAX];
    for (int cq = c0; cq < c1; cq += DW_QMAX) {
        const int nq = c1 - cq < DW_QMAX ? c1 - cq : DW_QMAX;
        dw_order(d, cq, cq + nq, ord);
        for (int i0 = 0; i0 < nq;) {
            const int src = d->src[ord[i0]];
            int i1 = i0 + 1;
            while (i1 < nq && d->src[ord[i1]] == src) i1++;
            const float *xc = g->x + (size_t)src * g->ldx;
            for (int ox = 0; ox < ow; ox += 16) {
                const __mmask16 mo = mask_n(ow - ox), ma = mask_range(2 * ox, w), mb = mask_range(2 * ox + 16, w);
                const __mmask16 mp = ox > 0 ? (__mmask16)0x8000 : 0;
                /* t[3r .. 3r + 2]: input row 2oy - 1 + r; two output rows
                 * (five input rows) per step share each weight broadcast */
                __m512 t[15];
                if (2 * g->oy0 - 1 >= 0) dws2_row(xc + (ptrdiff_t)(2 * g->oy0 - 1 - g->xr0) * w, ox, ma, mb, mp, t);
                else t[0] = t[1] = t[2] = _mm512_setzero_ps();
                int oy = g->oy0;
                for (; oy + 1 < g->oy1; oy += 2) {
                    for (int r = 1; r < 5; r++) {
                        const int iy = 2 * oy - 1 + r;
                        if (iy < h) dws2_row(xc + (ptrdiff_t)(iy - g->xr0) * w, ox, ma, mb, mp, t + 3 * r);
                        else t[3 * r] = t[3 * r + 1] = t[3 * r + 2] = _mm512_setzero_ps();
                    }
                    float *yo = y + (size_t)(oy - g->oy0) * ow + ox;
                    for (int j = i0; j < i1; j++) dws2_out(2, d, ord[j], e, t, yo + (size_t)(ord[j] - c0) * ldy, ow, mo);
                    t[0] = t[12];
                    t[1] = t[13];
                    t[2] = t[14];
                }
                if (oy < g->oy1) { /* the last row of an odd count */
                    const int iy = 2 * oy;
                    dws2_row(xc + (ptrdiff_t)(iy - g->xr0) * w, ox, ma, mb, mp, t + 3);
                    if (iy + 1 < h) dws2_row(xc + (ptrdiff_t)(iy + 1 - g->xr0) * w, ox, ma, mb, mp, t + 6);
                    else t[6] = t[7] = t[8] = _mm512_setzero_ps();
                    float *yo = y + (size_t)(oy - g->oy0) * ow + ox;
                    for (int j = i0; j < i1; j++) dws2_out(1, d, ord[j], e, t, yo + (size_t)(ord[j] - c0) * ldy, ow, mo);
                }
            }
            i0 = i1;
        }
    }
}

/* The kernel of a layer depends on its stride and width, never on its
 * rows, so every band of a layer sums alike. */
void mf_dw_avx512(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    if (d->stride == 2) {
        dws2(d, c0, c1, g, y, ldy, e);
        return;
    }
    if (g->w < 16) {
        dw_rows16(d, c0, c1, g, y, ldy, e);
        return;
    }
    dw_s1_mask mk[DW_S1_MAX_VECS]; /* 8 KiB */
    assert(g->w <= 16 * DW_S1_MAX_VECS); /* mf_workspace_reserve: w <= 16384 */
    dw_s1_masks(g->w, mk);
    for (int q = c0; q < c1; q++) {
        const float *xi = g->x + (size_t)d->src[q] * g->ldx, *k = d->w + (size_t)q * 9;
        dw_plane_s1(xi, g->xr0, g->h, g->w, k, y + (size_t)(q - c0) * ldy, g->oy0, g->oy1, q, e, mk);
    }
}

static void dw_avx512(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e)
{
    mf_dw_avx512(d, c0, c1, g, y + (size_t)c0 * ldy, ldy, e);
}

/* ---- exp ----------------------------------------------------------------
 * exp(x) = 2^n * p(r), x = n ln2 + r, |r| <= ln2/2; degree-6 polynomial,
 * about 1 ulp; scalef handles the 2^n without integer tricks.  For x <= 0
 * only, as every caller has it (a softmax's x - max, GELU's -z^2): x below
 * -100, and NaN, are taken as -100 (max returns its second operand when
 * the first is NaN), so no clamp above is needed. */
static inline __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-100.f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* ---- GELU ---------------------------------------------------------------
 * gelu(x) = 0.5 x (1 + erf(x / sqrt 2)) with erfc(z) = q = t P(t) exp(-z^2),
 * t = 1 / (1 + 0.3275911 z), z = |x| / sqrt 2 (Abramowitz and Stegun 7.1.26,
 * |error| <= 1.5e-7): 0.5 x (2 - q) for x >= 0, 0.5 x q below, so the small
 * values of negative x come without cancellation; within 2e-7 (1 + |gelu|)
 * of the erff twin. */
static void gelu_avx512(float *x, size_t n)
{
    const __m512 half = _mm512_set1_ps(0.5f), two = _mm512_set1_ps(2.f), one = _mm512_set1_ps(1.f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : mask_n((int)(n - i));
        const __m512 v = _mm512_maskz_loadu_ps(mk, x + i);
        const __m512 z = _mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(0.70710678118654752f));
        const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(z, _mm512_set1_ps(0.3275911f), one));
        __m512 p = _mm512_set1_ps(1.061405429f);
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
        /* erfc below 1e-36 (z > 9) is zero here, not a denormal */
        const __m512 q = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, _mm512_set1_ps(9.f), _CMP_LT_OQ),
                                             _mm512_mul_ps(_mm512_mul_ps(p, t), exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z))));
        const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
        const __m512 f = _mm512_mask_mov_ps(_mm512_sub_ps(two, q), neg, q);
        _mm512_mask_storeu_ps(x + i, mk, _mm512_mul_ps(_mm512_mul_ps(half, v), f));
    }
}

/* ---- the bridges' attention ---------------------------------------------- */

#define TMAX 16 /* F->M: tokens held in registers; more go to the reference kernel */

/* acc[s][i] = sum_c q[i][c] x[c][p0 + 16 s + lane] for NT tokens (a
 * constant where called, so the accumulators stay in registers) on NS (1 or
 * 2) 16-pixel strips (masks mk): the scores of both bridges.  Two strips
 * share each broadcast of q. */
static inline __attribute__((always_inline)) void attn_scores(int NT, int NS, const float *x, int ch, int hw, int p0,
                                                              const __mmask16 *mk, const float *q, int ldq,
                                                              __m512 acc[2][TMAX])
{
#pragma GCC unroll 2
    for (int s = 0; s < NS; s++)
#pragma GCC unroll 16
        for (int i = 0; i < TMAX; i++) acc[s][i] = _mm512_setzero_ps(); /* past NT: never read */
    for (int c = 0; c < ch; c++) {
        __m512 xv[2];
#pragma GCC unroll 2
        for (int s = 0; s < NS; s++) xv[s] = _mm512_maskz_loadu_ps(mk[s], x + (size_t)c * hw + p0 + 16 * s);
#pragma GCC unroll 16
        for (int i = 0; i < NT; i++) {
            const __m512 qv = _mm512_set1_ps(q[(size_t)i * ldq + c]);
#pragma GCC unroll 2
            for (int s = 0; s < NS; s++) acc[s][i] = _mm512_fmadd_ps(qv, xv[s], acc[s][i]);
        }
    }
}

/* ---- Mobile -> Former --------------------------------------------------- */

#define TB 6 /* tokens per pass (m2f_attn_avx512 switches on 1..TB) */
_Static_assert(TB == 6, "m2f_attn_avx512 dispatches token counts 1..6");

/* Scores of NT tokens on NS (1 or 2) 16-pixel strips from p0 (masks mk):
 * S[i][p] = scale * sum_c q[i][c] x[c][p] into scratch, and the running
 * maximum of each token's scores in mx (max is exact: the order it meets
 * them in changes nothing).  Two strips share each broadcast of q. */
static inline __attribute__((always_inline)) void m2f_scores(int NT, int NS, const float *x, int ch, int hw, int p0,
                                                             const __mmask16 *mk, const float *q, int ldq,
                                                             float scale, float *scratch, __m512 *mx)
{
    __m512 acc[2][TMAX];
    attn_scores(NT, NS, x, ch, hw, p0, mk, q, ldq, acc);
#pragma GCC unroll 2
    for (int s = 0; s < NS; s++)
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) {
            const __m512 sv = _mm512_mul_ps(acc[s][i], _mm512_set1_ps(scale));
            _mm512_mask_storeu_ps(scratch + (size_t)i * hw + p0 + 16 * s, mk[s], sv);
            mx[i] = _mm512_mask_max_ps(mx[i], mk[s], mx[i], sv);
        }
}

/* acc[j][i] = sum over the pixels' strips of S[i][p] x[c + j][p] (per lane). */
static inline __attribute__((always_inline)) void m2f_out4(int NT, const float *x, int c, int hw,
                                                           const float *scratch, __m512 acc[4][TB])
{
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) acc[j][i] = _mm512_setzero_ps();
    for (int p0 = 0; p0 < hw; p0 += 16) {
        __mmask16 mk = mask_n(hw - p0);
        __m512 xv[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) xv[j] = _mm512_maskz_loadu_ps(mk, x + (size_t)(c + j) * hw + p0);
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) {
            __m512 sv = _mm512_maskz_loadu_ps(mk, scratch + (size_t)i * hw + p0);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) acc[j][i] = _mm512_fmadd_ps(sv, xv[j], acc[j][i]);
        }
    }
}

/* Lane k: _mm512_reduce_add_ps(a[k]) bit for bit -- the same tree (lanes j
 * and j + 8, then j + 4, then j + 2, then j + 1), sixteen vectors at once:
 * 15 shuffles and 15 adds rather than 16 x (3 extracts, a shuffle, 4 adds). */
static inline __m512 m2f_reduce16(const __m512 *a)
{
    __m512 s[8], r[4], u[2];
    for (int p = 0; p < 8; p++) /* [a[2p] lanes j + a[2p] lanes j+8 | the same of a[2p+1]], j < 8 */
        s[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int q = 0; q < 4; q++) /* block b: a[4q + b]'s lanes j + (j + 4), j < 4 */
        r[q] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * q], s[2 * q + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(s[2 * q], s[2 * q + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int m = 0; m < 2; m++) /* block b: (j + (j + 2), j < 2) of a[8m + b], then of a[8m + 4 + b] */
        u[m] = _mm512_add_ps(_mm512_shuffle_ps(r[2 * m], r[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(r[2 * m], r[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* lane 4b + k: the sum of a[4k + b] */
    const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), f);
}

/* NT (a constant, so the accumulators stay in registers) tokens of one
 * head: scores, softmax over pixels, outputs. */
static inline __attribute__((always_inline)) void m2f_tokens(int NT, const float *x, int ch, int hw, const float *q,
                                                             int ldq, float scale, float *o, int ldo, float *scratch)
{
    __m512 mx[TB];
#pragma GCC unroll 6
    for (int i = 0; i < NT; i++) mx[i] = _mm512_set1_ps(-INFINITY);
    int pe = 0; /* strips two at a time, then the odd one */
    for (; pe + 16 < hw; pe += 32) {
        const __mmask16 mk[2] = {0xFFFF, mask_n(hw - pe - 16)};
        m2f_scores(NT, 2, x, ch, hw, pe, mk, q, ldq, scale, scratch, mx);
    }
    if (pe < hw) {
        const __mmask16 mk[2] = {mask_n(hw - pe), 0};
        m2f_scores(NT, 1, x, ch, hw, pe, mk, q, ldq, scale, scratch, mx);
    }
    /* softmax over pixels; 1/sum is applied to the outputs */
    float inv[TB];
    for (int i = 0; i < NT; i++) {
        float *s = scratch + (size_t)i * hw;
        __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx[i])), sum = _mm512_setzero_ps();
        for (int p0 = 0; p0 < hw; p0 += 16) {
            __mmask16 mk = mask_n(hw - p0);
            __m512 ev = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + p0), m)));
            sum = _mm512_add_ps(sum, ev);
            _mm512_mask_storeu_ps(s + p0, mk, ev);
        }
        inv[i] = 1.0f / _mm512_reduce_add_ps(sum);
    }
    /* o[i][c] = sum_p S[i][p] x[c][p]: sixteen channels at a time, their
     * sums reduced together (m2f_reduce16), then four, then one */
    int c = 0;
    for (; c + 16 <= ch; c += 16) {
        __m512 r[TB][16];
#pragma GCC unroll 1
        for (int g = 0; g < 4; g++) {
            __m512 acc[4][TB];
            m2f_out4(NT, x, c + 4 * g, hw, scratch, acc);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
#pragma GCC unroll 6
                for (int i = 0; i < NT; i++) r[i][4 * g + j] = acc[j][i];
        }
        for (int i = 0; i < NT; i++)
            _mm512_storeu_ps(o + (size_t)i * ldo + c, _mm512_mul_ps(m2f_reduce16(r[i]), _mm512_set1_ps(inv[i])));
    }
    for (; c + 4 <= ch; c += 4) {
        __m512 acc[4][TB];
        m2f_out4(NT, x, c, hw, scratch, acc);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++) o[(size_t)i * ldo + c + j] = _mm512_reduce_add_ps(acc[j][i]) * inv[i];
    }
    for (; c < ch; c++) {
        __m512 acc[TB];
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) acc[i] = _mm512_setzero_ps();
        for (int p0 = 0; p0 < hw; p0 += 16) {
            __mmask16 mk = mask_n(hw - p0);
            __m512 xv = _mm512_maskz_loadu_ps(mk, x + (size_t)c * hw + p0);
#pragma GCC unroll 6
            for (int i = 0; i < NT; i++)
                acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, scratch + (size_t)i * hw + p0), xv, acc[i]);
        }
#pragma GCC unroll 6
        for (int i = 0; i < NT; i++) o[(size_t)i * ldo + c] = _mm512_reduce_add_ps(acc[i]) * inv[i];
    }
}

static void m2f_attn_avx512(const float *x, int ch, int hw, const float *q, int ldq, int t, float scale, float *o,
                            int ldo, float *scratch)
{
    for (int t0 = 0; t0 < t; t0 += TB) {
        const int tn = t - t0 < TB ? t - t0 : TB;
        const float *qt = q + (size_t)t0 * ldq;
        float *ot = o + (size_t)t0 * ldo;
        switch (tn) { /* TB == 6 */
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

/* All t tokens of one head on NS (1 or 2) 16-pixel strips from p0 (masks
 * mk); t a constant where it is dispatched (f2m_attn_avx512), so the scores
 * stay in registers, and two strips share each broadcast of k and v. */
static inline __attribute__((always_inline)) void f2m_strips(int t, int NS, float *y, int ch, int hw, int p0,
                                                             const __mmask16 *mk, const float *k, const float *v,
                                                             int ldk, float scale)
{
    __m512 s[2][TMAX];
    attn_scores(t, NS, y, ch, hw, p0, mk, k, ldk, s);
#pragma GCC unroll 2
    for (int j = 0; j < NS; j++) {
        __m512 mx = _mm512_set1_ps(-INFINITY);
#pragma GCC unroll 16
        for (int i = 0; i < t; i++) {
            s[j][i] = _mm512_mul_ps(s[j][i], _mm512_set1_ps(scale));
            mx = _mm512_max_ps(mx, s[j][i]);
        }
        __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int i = 0; i < t; i++) {
            s[j][i] = exp512(_mm512_sub_ps(s[j][i], mx));
            sum = _mm512_add_ps(sum, s[j][i]);
        }
        __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.f), sum);
#pragma GCC unroll 16
        for (int i = 0; i < t; i++) s[j][i] = _mm512_mul_ps(s[j][i], inv);
    }
    int c = 0;
    for (; c + 4 <= ch; c += 4) {
        __m512 a[2][4];
#pragma GCC unroll 2
        for (int j = 0; j < NS; j++)
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) a[j][r] = _mm512_maskz_loadu_ps(mk[j], y + (size_t)(c + r) * hw + p0 + 16 * j);
#pragma GCC unroll 16
        for (int i = 0; i < t; i++) {
            const float *vr = v + (size_t)i * ldk + c;
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                const __m512 vv = _mm512_set1_ps(vr[r]);
#pragma GCC unroll 2
                for (int j = 0; j < NS; j++) a[j][r] = _mm512_fmadd_ps(s[j][i], vv, a[j][r]);
            }
        }
#pragma GCC unroll 2
        for (int j = 0; j < NS; j++)
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) _mm512_mask_storeu_ps(y + (size_t)(c + r) * hw + p0 + 16 * j, mk[j], a[j][r]);
    }
    for (; c < ch; c++) {
#pragma GCC unroll 2
        for (int j = 0; j < NS; j++) {
            __m512 a = _mm512_maskz_loadu_ps(mk[j], y + (size_t)c * hw + p0 + 16 * j);
#pragma GCC unroll 16
            for (int i = 0; i < t; i++) a = _mm512_fmadd_ps(s[j][i], _mm512_set1_ps(v[(size_t)i * ldk + c]), a);
            _mm512_mask_storeu_ps(y + (size_t)c * hw + p0 + 16 * j, mk[j], a);
        }
    }
}

/* Two strips at a time while t leaves the registers for both (t <= 8), then
 * one. */
static inline __attribute__((always_inline)) void f2m_tokens(int t, float *y, int ch, int hw, const float *k,
                                                             const float *v, int ldk, float scale)
{
    int p0 = 0;
    if (t <= 8)
        for (; p0 + 16 < hw; p0 += 32) {
            const __mmask16 mk[2] = {0xFFFF, mask_n(hw - p0 - 16)};
            f2m_strips(t, 2, y, ch, hw, p0, mk, k, v, ldk, scale);
        }
    for (; p0 < hw; p0 += 16) {
        const __mmask16 mk[2] = {mask_n(hw - p0), 0};
        f2m_strips(t, 1, y, ch, hw, p0, mk, k, v, ldk, scale);
    }
}

static void f2m_attn_avx512(float *y, int ch, int hw, const float *k, const float *v, int ldk, int t, float scale)
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
    default:
        if (t > TMAX) mf_kernels_ref.f2m_attn(y, ch, hw, k, v, ldk, t, scale);
        else f2m_tokens(t, y, ch, hw, k, v, ldk, scale);
    }
}

/* ---- token-side linear ---------------------------------------------------
 * y[R][out] = x[R][in] W^T + b for R <= 8 rows at once, so every weight is
 * read once per 8 rows.  Weights are packed in panels of 48 columns, each
 * panel [in][48] contiguous, so a tile streams its weights sequentially. */
#define LP 48

/* Width of the panel starting at column o0: 48, or the rest rounded up to 16. */
static inline int lin_panel_width(int out, int o0) { return out - o0 >= LP ? LP : ((out - o0 + 15) / 16) * 16; }

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

static inline __attribute__((always_inline)) void lin_tile(int R, const mf_lin *l, const float *x, int o0,
                                                           int nv, __mmask16 lastmask, float *y)
{
    __m512 acc[8][3] = {{_mm512_setzero_ps()}};
    const int pw = lin_panel_width(l->out, o0);
    const float *panel = (const float *)l->wp + (size_t)o0 * l->in;
#pragma GCC unroll 3
    for (int v = 0; v < 3; v++) {
        if (v >= nv) break;
        __mmask16 mk = v == nv - 1 ? lastmask : (__mmask16)0xFFFF;
        __m512 b = _mm512_maskz_loadu_ps(mk, l->b + o0 + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[r][v] = b;
    }
    for (int i = 0; i < l->in; i++) {
        const float *w = panel + (size_t)i * pw;
        if (l->stream) { /* read once per run: keep it out of the caches' way */
            _mm_prefetch((const char *)(w + 32 * pw), _MM_HINT_NTA);
            _mm_prefetch((const char *)(w + 32 * pw + 16), _MM_HINT_NTA);
            _mm_prefetch((const char *)(w + 32 * pw + 32), _MM_HINT_NTA);
        } else {
            _mm_prefetch((const char *)(w + 32 * pw), _MM_HINT_T0);
            _mm_prefetch((const char *)(w + 32 * pw + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(w + 32 * pw + 32), _MM_HINT_T0);
        }
        __m512 wv[3];
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++) {
            if (v >= nv) break; /* a narrow last panel holds only nv vectors */
            wv[v] = _mm512_load_ps(w + 16 * v);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_set1_ps(x[(size_t)r * l->in + i]);
#pragma GCC unroll 3
            for (int v = 0; v < 3; v++) {
                if (v >= nv) break;
                acc[r][v] = _mm512_fmadd_ps(xv, wv[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++) {
            if (v >= nv) break;
            _mm512_mask_storeu_ps(y + (size_t)r * l->out + o0 + 16 * v, v == nv - 1 ? lastmask : (__mmask16)0xFFFF,
                                  acc[r][v]);
        }
}

static void linear_avx512(const mf_lin *l, const float *x, int rows, float *y, int ob, int oe, void *scratch)
{
    for (int r0 = 0; r0 < rows; r0 += 8) {
        int R = rows - r0 < 8 ? rows - r0 : 8;
        const float *xr = x + (size_t)r0 * l->in;
        float *yr = y + (size_t)r0 * l->out;
        for (int o0 = ob; o0 < oe; o0 += LP) {
            int cols = oe - o0 < LP ? oe - o0 : LP, nv = (cols + 15) / 16;
            __mmask16 lm = mask_n(cols - 16 * (nv - 1));
            switch (R) {
            case 1: lin_tile(1, l, xr, o0, nv, lm, yr); break;
            case 2: lin_tile(2, l, xr, o0, nv, lm, yr); break;
            case 3: lin_tile(3, l, xr, o0, nv, lm, yr); break;
            case 4: lin_tile(4, l, xr, o0, nv, lm, yr); break;
            case 5: lin_tile(5, l, xr, o0, nv, lm, yr); break;
            case 6: lin_tile(6, l, xr, o0, nv, lm, yr); break;
            case 7: lin_tile(7, l, xr, o0, nv, lm, yr); break;
            default: lin_tile(8, l, xr, o0, nv, lm, yr); break;
            }
        }
    }
}

/* ---- stem -----------------------------------------------------------------
 * 3x3, stride 2, pad 1, from 3 channels, + bias + relu6, direct: for each
 * 16-pixel chunk of an output row, the 27 taps (3 channels x 3x3) are
 * gathered once with the stride-2 deinterleave of the depthwise (dws2_row) into
 * an L1-resident buffer, then multiplied into the output channels NO at a
 * time, their accumulators held in registers (NO a constant, so the loops
 * unroll fully). */
static inline __attribute__((always_inline)) void stem_out(int NO, const __m512 *v, const float *wt,
                                                            const float *bias, int o0, float *out, size_t plane_o,
                                                            __mmask16 mo)
{
    __m512 acc[8];
#pragma GCC unroll 8
    for (int o = 0; o < NO; o++) acc[o] = _mm512_set1_ps(bias[o0 + o]);
#pragma GCC unroll 27
    for (int t = 0; t < 27; t++) {
        const __m512 x = v[t];
#pragma GCC unroll 8
        for (int o = 0; o < NO; o++) acc[o] = _mm512_fmadd_ps(_mm512_set1_ps(wt[(size_t)(o0 + o) * 27 + t]), x, acc[o]);
    }
#pragma GCC unroll 8
    for (int o = 0; o < NO; o++) {
        __m512 t = _mm512_min_ps(_mm512_max_ps(acc[o], _mm512_setzero_ps()), _mm512_set1_ps(6.f));
        _mm512_mask_storeu_ps(out + (size_t)(o0 + o) * plane_o, mo, t);
    }
}

static void stem_avx512(const float *in, int h, int w, const float *wt, const float *bias, int c, float *out, int oh,
                        int ow, int oy0, int oy1)
{
    const size_t plane = (size_t)h * w, plane_o = (size_t)oh * ow;
    __m512 v[27]; /* tap t = ch*9 + ky*3 + kx, as in wt */
    for (int oy = oy0; oy < oy1; oy++) {
        for (int ox = 0; ox < ow; ox += 16) {
            const __mmask16 mo = mask_n(ow - ox), ma = mask_range(2 * ox, w), mb = mask_range(2 * ox + 16, w);
            const __mmask16 mp = ox > 0 ? (__mmask16)0x8000 : 0;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < 3; ky++) {
                    __m512 *vt = v + ch * 9 + ky * 3;
                    int iy = 2 * oy + ky - 1;
                    if (iy < 0 || iy >= h) vt[0] = vt[1] = vt[2] = _mm512_setzero_ps();
                    else dws2_row(in + ch * plane + (size_t)iy * w, ox, ma, mb, mp, vt);
                }
            float *o = out + (size_t)oy * ow + ox;
            int o0 = 0;
            for (; o0 + 8 <= c; o0 += 8) stem_out(8, v, wt, bias, o0, o, plane_o, mo);
            if (o0 + 4 <= c) {
                stem_out(4, v, wt, bias, o0, o, plane_o, mo);
                o0 += 4;
            }
            for (; o0 < c; o0++) stem_out(1, v, wt, bias, o0, o, plane_o, mo);
        }
    }
}

const mf_kernels mf_kernels_avx512 = {
    .name = "avx512",
    .precision = MF_PRECISION_FP32,
    .pw = pw_avx512,
    .dw = dw_avx512,
    .m2f_attn = m2f_attn_avx512,
    .f2m_attn = f2m_attn_avx512,
    .linear = linear_avx512,
    .gelu = gelu_avx512,
    .stem = stem_avx512,
    .pw_packed_bytes = pw_packed_bytes,
    .pw_pack = pw_pack,
    .lin_packed_bytes = lin_packed_bytes,
    .lin_pack = lin_pack,
};
