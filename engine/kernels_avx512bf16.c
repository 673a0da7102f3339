/* kernels_avx512bf16.c -- bf16 GEMMs with vdpbf16ps, for CPUs with
 * AVX512-BF16 but no AMX (AMD Zen 4/5; also forced on AMX machines with
 * MF_KERNELS=avx512bf16): the 1x1 convolutions and the linears of a bf16
 * model.  Compiled with -mavx512bf16 (and AVX-512), called only after
 * mf_cpu_has_avx512bf16(); the twins are the bf16 reference kernels
 * (kernels_ref.c), tests/test_kernels.c holds them together.
 *
 * Same operand layouts as the AMX set (kernels_bf16.h): one vdpbf16ps takes
 * a zmm of 16 VNNI pairs of the operand along the output's columns and one
 * broadcast pair of the other, and adds two products per lane into fp32.
 * The 1x1 weights have layouts of their own (pw_pack): blocks of 4 rows,
 * each one stream, and after them the same weights transposed ([MB][KB*16
 * pairs][16 rows][2], the linears' layout) for the last 1-8 columns of a
 * map (see pw_tail).  Both kernels stop at the
 * last pair K has: the pairs up to the 32-multiple of the layouts are zero,
 * and vdpbf16ps adds them exactly (AMX needs them, this set does not). */
#include "kernels_bf16.h"

#include <immintrin.h>

#define NVM 6 /* column blocks of 16 per micro-tile, at most */

static inline __m512bh bcast_pair(const uint16_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return (__m512bh)_mm512_set1_epi32(v);
}

/* ---- 1x1 convolution ----------------------------------------------------
 * Columns in passes of mf_bf16_pw_cols(K), packed into the scratch; then
 * micro-tiles of MR rows x 16*NV columns over all of K: 4 rows x 3-6
 * blocks (12-24 accumulators, a weight broadcast per 3-6 vdpbf16ps: the
 * broadcasts, not the products, had bounded 8 x 3 tiles on Zen 4), or 8
 * rows x 1-2 blocks where a pass has fewer than 3. */

/* MR rows of weights at a (MR/4 of pw_pack's 4-row blocks, [KP][4][2]
 * each) against NV input blocks at b ([NV][KP][16][2]). */
static inline __attribute__((always_inline)) void pw_tile(int MR, int NV, const uint16_t *a, const uint16_t *b,
                                                          int KB, int KPn, int rows, int row0, int cols, float *y,
                                                          size_t ldy, const mf_epi *e, const float *res)
{
    const int KP = KB * 16;
    __m512 acc[8][NVM];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int kp = 0; kp < KPn; kp++) {
        __m512bh xv[NVM];
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) xv[v] = (__m512bh)_mm512_load_si512((const void *)(b + ((size_t)v * KP + kp) * 32));
        const uint16_t *ak = a + (size_t)kp * 8;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512bh wv = bcast_pair(ak + (size_t)(r / 4) * KP * 8 + (r % 4) * 2);
#pragma GCC unroll 6
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wv, xv[v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) {
            const __mmask16 mk = mf_bf16_mask(cols - 16 * v);
            const float *rr = res ? res + (size_t)r * e->ldr + 16 * v : NULL;
            _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16 * v, mk, mf_bf16_epi(acc[r][v], row0 + r, e, rr, mk));
        }
    }
}

/* Each shape its own function: inlined all into pw_run, they made one
 * function that clang took over 20 minutes to compile with the fuzz build's
 * sanitizers (about 9 this way, as the file took before these shapes). */
#define PW_TILE_FN(M_, N_)                                                                                     \
    static __attribute__((noinline)) void pw_tile_##M_##x##N_(const uint16_t *a, const uint16_t *b, int KB,   \
                                                              int KPn, int rows, int row0, int cols, float *y, \
                                                              size_t ldy, const mf_epi *e, const float *res)   \
    {                                                                                                          \
        pw_tile(M_, N_, a, b, KB, KPn, rows, row0, cols, y, ldy, e, res);                                      \
    }
PW_TILE_FN(4, 6)
PW_TILE_FN(4, 5)
PW_TILE_FN(4, 4)
PW_TILE_FN(4, 3)
PW_TILE_FN(4, 2)
PW_TILE_FN(4, 1)
PW_TILE_FN(8, 2)
PW_TILE_FN(8, 1)

/* The last C (1-8) columns of a pass, rows in the lanes: C broadcast pairs
 * of x (xt: [C][KPn] pairs, gathered from the packed block) against NP
 * panels of 16 rows of the transposed weights (wt, panels ps apart).  Lane
 * r of column j runs the vdpbf16ps sequence pw_tile runs for row r, column
 * j (the same pairs in the same order; the instruction's two operands
 * commute), and the epilogue is mf_bf16_epi's (mf_bf16_bias_act) on a
 * vector of rows, so the bits are pw_tile's; it takes C/16 of a 16-column tile's
 * operations.  rows: valid rows from row0 (the panel's first). */
static inline __attribute__((always_inline)) void pw_tail_tile(int C, int NP, const uint32_t *xt, int KPn,
                                                               const uint16_t *wt, size_t ps, int rows, int row0,
                                                               float *y, size_t ldy, const mf_epi *e, const float *res)
{
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int j = 0; j < C; j++)
#pragma GCC unroll 3
        for (int v = 0; v < NP; v++) acc[j][v] = _mm512_setzero_ps();
    for (int kp = 0; kp < KPn; kp++) {
        __m512bh wv[3];
#pragma GCC unroll 3
        for (int v = 0; v < NP; v++) wv[v] = (__m512bh)_mm512_load_si512((const void *)(wt + v * ps + (size_t)kp * 32));
#pragma GCC unroll 8
        for (int j = 0; j < C; j++) {
            const __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xt[(size_t)j * KPn + kp]);
#pragma GCC unroll 3
            for (int v = 0; v < NP; v++) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], xv, wv[v]);
        }
    }
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i iy = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)ldy));
    const __m512i ir = res ? _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)e->ldr)) : iy;
#pragma GCC unroll 3
    for (int v = 0; v < NP; v++) {
        const int rv = rows - 16 * v, r0 = row0 + 16 * v;
        if (rv <= 0) break;
        const __mmask16 mk = mf_bf16_mask(rv);
        const __m512 bias = _mm512_maskz_loadu_ps(mk, e->bias + r0);
        __m512 da = bias, db = bias;
        if (e->act == MF_ACT_DYRELU) {
            da = _mm512_maskz_loadu_ps(mk, e->dya + r0);
            db = _mm512_maskz_loadu_ps(mk, e->dyb + r0);
        }
#pragma GCC unroll 8
        for (int j = 0; j < C; j++) {
            __m512 t = mf_bf16_bias_act(acc[j][v], bias, e->act, da, db);
            if (res)
                t = _mm512_add_ps(t, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, ir,
                                                              res + (size_t)16 * v * e->ldr + j, 4));
            _mm512_mask_i32scatter_ps(y + (size_t)16 * v * ldy + j, mk, iy, t, 4);
        }
    }
}

#define PW_TAIL_FN(C_, N_)                                                                                     \
    static __attribute__((noinline)) void pw_tail_##C_##x##N_(const uint32_t *xt, int KPn, const uint16_t *wt,  \
                                                              size_t ps, int rows, int row0, float *y,         \
                                                              size_t ldy, const mf_epi *e, const float *res)   \
    {                                                                                                          \
        pw_tail_tile(C_, N_, xt, KPn, wt, ps, rows, row0, y, ldy, e, res);                                     \
    }
#define PW_TAIL_FNS(C_) PW_TAIL_FN(C_, 1) PW_TAIL_FN(C_, 2) PW_TAIL_FN(C_, 3)
PW_TAIL_FNS(1)
PW_TAIL_FNS(2)
PW_TAIL_FNS(3)
PW_TAIL_FNS(4)
PW_TAIL_FNS(5)
PW_TAIL_FNS(6)
PW_TAIL_FNS(7)
PW_TAIL_FNS(8)

#define TAIL_CASE(C)                                                                                           \
    case C:                                                                                                    \
        if (np == 3) pw_tail_##C##x3(xt, KPn, w, ps, rows, m0, yt, ldy, e, rs);                                \
        else if (np == 2) pw_tail_##C##x2(xt, KPn, w, ps, rows, m0, yt, ldy, e, rs);                           \
        else pw_tail_##C##x1(xt, KPn, w, ps, rows, m0, yt, ldy, e, rs);                                        \
        break;

/* Columns c0..c0+C-1 (C <= 8), the partial 16-column block blk of a pass,
 * over all M rows with pw_tail_tile; xt: scratch for C*KPn pairs. */
static void pw_tail(const uint16_t *wtp, int M, int KB, int KPn, const uint16_t *blk, int C, int c0, float *y,
                    size_t ldy, const mf_epi *e, uint32_t *xt)
{
    const uint32_t *bp = (const uint32_t *)blk; /* [KP][16] pairs */
    for (int j = 0; j < C; j++)
        for (int kp = 0; kp < KPn; kp++) xt[(size_t)j * KPn + kp] = bp[(size_t)kp * 16 + j];
    const size_t ps = (size_t)KB * 512; /* elements per panel of 16 rows */
    for (int m0 = 0; m0 < M; m0 += 48) {
        const int rows = M - m0 < 48 ? M - m0 : 48, np = (rows + 15) / 16;
        const uint16_t *w = wtp + (size_t)(m0 / 16) * ps;
        const float *rs = e->res ? e->res + (size_t)m0 * e->ldr + c0 : NULL;
        float *yt = y + (size_t)m0 * ldy + c0;
        switch (C) {
            TAIL_CASE(1)
            TAIL_CASE(2)
            TAIL_CASE(3)
            TAIL_CASE(4)
            TAIL_CASE(5)
            TAIL_CASE(6)
            TAIL_CASE(7)
            TAIL_CASE(8)
        }
    }
}

/* Columns a tail of which pw_tail takes: up to half a block. */
#define TAIL_MAX 8

/* Bytes of pw_tile's layout of the weights (see pw_pack). */
static size_t main_bytes(int m, int k) { return (size_t)((m + 3) / 4) * mf_bf16_kb(k) * 256; }

/* x: fp32 inputs packed here pass by pass; or xp: packed already (a whole
 * map, from column xc0 on). */
static void pw_run(const mf_pw *p, int g, const float *x, size_t ldx, const uint16_t *xp, int xc0, int n, float *y,
                   size_t ldy, const mf_epi *e, void *scratch)
{
    const int M = p->cout / p->groups, K = p->cin / p->groups, KB = mf_bf16_kb(K), KPn = (K + 1) / 2;
    const int NC = mf_bf16_pw_cols(K);
    const uint16_t *wp = (const uint16_t *)((const char *)p->wp + p->wp_group * (size_t)g);
    const uint16_t *wtp = wp + main_bytes(M, K) / 2;
    uint32_t *xt = (uint32_t *)((char *)scratch + mf_bf16_pw_scratch(K));
    /* pw_tail's gathers and scatters take 32-bit row offsets */
    const int idx_ok = ldy <= INT32_MAX / 16 && (!e->res || e->ldr <= INT32_MAX / 16);
    for (int n0 = 0; n0 < n; n0 += NC) {
        const int cols = n - n0 < NC ? n - n0 : NC, C = cols % 16;
        const int NB = C && C <= TAIL_MAX && idx_ok ? cols / 16 : (cols + 15) / 16; /* blocks for pw_tile */
        const uint16_t *xb = xp ? xp + (size_t)((xc0 + n0) / 16) * KB * 512 : scratch;
        if (!xp) mf_bf16_pack_x(x + n0, ldx, K, cols, scratch);
        /* groups of 3-6 blocks, as even as they go (7 = 3 + 4, not 6 + 1) */
        const int ng = (NB + NVM - 1) / NVM;
        for (int gi = 0, nb = 0; gi < ng; gi++) {
            const int nv = (NB - nb) / (ng - gi), c0 = n0 + 16 * nb, MR = nv >= 3 ? 4 : 8;
            const uint16_t *b = xb + (size_t)nb * KB * 512;
            for (int m0 = 0; m0 < M; m0 += MR) {
                const int rows = M - m0 < MR ? M - m0 : MR;
                const uint16_t *a = wp + (size_t)(m0 / 4) * KB * 128;
                const float *res = e->res ? e->res + (size_t)m0 * e->ldr + c0 : NULL;
                float *yt = y + (size_t)m0 * ldy + c0;
                switch (nv) {
                case 6: pw_tile_4x6(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res); break;
                case 5: pw_tile_4x5(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res); break;
                case 4: pw_tile_4x4(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res); break;
                case 3: pw_tile_4x3(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res); break;
                /* 8 rows; 4 for the last 1-4 (pw_pack has only ceil(M/4) blocks) */
                case 2:
                    if (rows > 4) pw_tile_8x2(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res);
                    else pw_tile_4x2(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res);
                    break;
                default:
                    if (rows > 4) pw_tile_8x1(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res);
                    else pw_tile_4x1(a, b, KB, KPn, rows, m0, n - c0, yt, ldy, e, res);
                    break;
                }
            }
            nb += nv;
        }
        if (NB * 16 < cols)
            pw_tail(wtp, M, KB, KPn, xb + (size_t)NB * KB * 512, cols - NB * 16, n0 + NB * 16, y, ldy, e, xt);
    }
}

static void pw_avx512bf16(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                          const mf_epi *e, void *scratch)
{
    pw_run(p, g, x, ldx, NULL, 0, n, y, ldy, e, scratch);
}

static void pw_packed_avx512bf16(const mf_pw *p, int g, const uint16_t *xp, int n, int c0, int cols, float *y,
                                 size_t ldy, const mf_epi *e, void *scratch)
{
    (void)n;
    pw_run(p, g, NULL, 0, xp, c0, cols, y, ldy, e, scratch);
}

/* ---- linear -------------------------------------------------------------
 * Rows 16 at a time, rounded and packed into the scratch, taken R <= 8 at a
 * time against NP <= 3 panels of 16 outputs. */

static inline __attribute__((always_inline)) void lin_tile(int R, int NP, const uint16_t *xa, int KB, int KPn,
                                                           const uint16_t *w, int stream, const float *bias, int cols,
                                                           float *y, size_t ldy)
{
    const int KP = KB * 16;
    const size_t ps = (size_t)KP * 32;
    __m512 acc[8][3];
#pragma GCC unroll 3
    for (int v = 0; v < NP; v++) {
        const __m512 b = _mm512_maskz_loadu_ps(mf_bf16_mask(cols - 16 * v), bias + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[r][v] = b;
    }
    for (int kp = 0; kp < KPn; kp++) {
        __m512bh wv[3];
#pragma GCC unroll 3
        for (int v = 0; v < NP; v++) {
            const uint16_t *wk = w + v * ps + (size_t)kp * 32;
            if (stream) _mm_prefetch((const char *)(wk + 16 * 32), _MM_HINT_NTA);
            wv[v] = (__m512bh)_mm512_load_si512((const void *)wk);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512bh xv = bcast_pair(xa + (size_t)r * KB * 32 + 2 * kp);
#pragma GCC unroll 3
            for (int v = 0; v < NP; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xv, wv[v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NP; v++) _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16 * v, mf_bf16_mask(cols - 16 * v), acc[r][v]);
}

#define LIN_CASE(R)                                                                                             \
    case R:                                                                                                    \
        if (np == 3) lin_tile(R, 3, xr, KB, KPn, w, l->stream, l->b + c0, o1 - c0, yr, (size_t)l->out);            \
        else if (np == 2) lin_tile(R, 2, xr, KB, KPn, w, l->stream, l->b + c0, o1 - c0, yr, (size_t)l->out);       \
        else lin_tile(R, 1, xr, KB, KPn, w, l->stream, l->b + c0, o1 - c0, yr, (size_t)l->out);                    \
        break;

static void linear_avx512bf16(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    const int KB = mf_bf16_kb(l->in), KPn = (l->in + 1) / 2, p0 = o0 / 16, p1 = (o1 + 15) / 16;
    const uint16_t *wp = l->wp;
    uint16_t *xa = scratch;
    for (int r0 = 0; r0 < rows; r0 += 16) {
        const int R16 = rows - r0 < 16 ? rows - r0 : 16;
        mf_bf16_pack_rows(x + (size_t)r0 * l->in, l->in, R16, xa);
        for (int p = p0; p < p1; p += 3) {
            const int np = p1 - p < 3 ? p1 - p : 3, c0 = p * 16;
            const uint16_t *w = wp + (size_t)p * KB * 512;
            for (int rr = 0; rr < R16; rr += 8) {
                const uint16_t *xr = xa + (size_t)rr * KB * 32;
                float *yr = y + (size_t)(r0 + rr) * l->out + c0;
                switch (R16 - rr < 8 ? R16 - rr : 8) {
                    LIN_CASE(1)
                    LIN_CASE(2)
                    LIN_CASE(3)
                    LIN_CASE(4)
                    LIN_CASE(5)
                    LIN_CASE(6)
                    LIN_CASE(7)
                    LIN_CASE(8)
                }
            }
        }
    }
}

/* The 1x1 weights, in two layouts one after the other:
 *   [ceil(M/4)][KB*16 pairs][4 rows][2] for pw_tile: the weights of a row
 *       block are one sequential stream, and the blocks follow each other
 *       in the order the tiles take them (at batch 1 they come from DRAM,
 *       and strided 64-byte pieces of AMX's 16-row blocks did not);
 *   [ceil(M/16)][KB*16 pairs][16 rows][2] for pw_tail (rows in the lanes).
 * Rows past M and pairs past K are zero. */
static size_t pw_packed_bytes(int m, int k) { return main_bytes(m, k) + mf_bf16_pw_packed_bytes(m, k); }

/* w[m][k] as [ceil(m/rb)][KB*16 pairs][rb rows][2] at o; returns the end. */
static uint16_t *pack_row_blocks(const float *w, int m, int k, int rb, uint16_t *o)
{
    const int KP = mf_bf16_kb(k) * 16;
    for (int b = 0; b < (m + rb - 1) / rb; b++)
        for (int kp = 0; kp < KP; kp++)
            for (int r = 0; r < rb; r++)
                for (int h = 0; h < 2; h++) {
                    const int row = b * rb + r, kk = 2 * kp + h;
                    *o++ = row < m && kk < k ? mf_bf16_bits(w[(size_t)row * k + kk]) : 0;
                }
    return o;
}

static void pw_pack(const float *w, int m, int k, void *dst)
{
    pack_row_blocks(w, m, k, 16, pack_row_blocks(w, m, k, 4, dst));
}

/* a pass of packed inputs, then pw_tail's pairs of up to TAIL_MAX columns */
static size_t pw_scratch(int k) { return mf_bf16_pw_scratch(k) + (size_t)TAIL_MAX * mf_bf16_kb(k) * 16 * 4; }
static size_t lin_scratch(int in) { return mf_bf16_lin_scratch(in); }

/* the padding pairs stay as they were: pw_tile and pw_tail stop at K's last pair */
static void dw_packed_avx512bf16(const mf_dw *d, int s0, int s1, const mf_dw_rows *g, uint16_t *y, int kg,
                                 const mf_epi *e, float *scratch)
{
    mf_bf16_dw_packed_t(0, d, s0, s1, g, y, kg, e, scratch);
}

const mf_kernels mf_kernels_avx512_bf16 = {
    .name = "avx512-bf16",
    .precision = MF_PRECISION_BF16,
    .pw = pw_avx512bf16,
    .linear = linear_avx512bf16,
    .pw_packed_bytes = pw_packed_bytes,
    .pw_pack = pw_pack,
    .lin_packed_bytes = mf_bf16_lin_packed_bytes,
    .lin_pack = mf_bf16_lin_pack,
    .pw_scratch_bytes = pw_scratch,
    .lin_scratch_bytes = lin_scratch,
    .packed_map_bytes = mf_bf16_packed_map_bytes,
    .dw_packed = dw_packed_avx512bf16,
    .pw_packed = pw_packed_avx512bf16,
};
