/* kernels_bf16.h -- the operand layouts the two x86 bf16 kernel sets share
 * (kernels_amx.c: AMX tiles; kernels_avx512bf16.c: vdpbf16ps), written once
 * here (engine-private).
 *
 * Both multiply bf16 pairs: an AMX tile product or a vdpbf16ps lane adds
 * a[2i] * b[2i] + a[2i+1] * b[2i+1] into an fp32 accumulator, so the
 * operand that varies along the output's columns is stored "VNNI": pairs of
 * consecutive K values side by side, the even one in the low 16 bits.
 *
 *   1x1 weights W[M][K] (mf_bf16_pw_pack, the AMX set's):  [MB][KB][16 rows]
 *       [32 k] bf16, MB = ceil(M/16), KB = ceil(K/32); rows past M and k
 *       past K are 0.  One 16x32 block is an AMX A tile (1 KiB).  (The
 *       AVX512-BF16 set packs its 1x1 weights its own way: see
 *       kernels_avx512bf16.c.)
 *   1x1 inputs x[K][n] (packed per call into the scratch, mf_bf16_pack_x):
 *       [NB][KB*16 pairs][16 columns][2] bf16, NB = ceil(cols/16); one
 *       [16 pairs][16][2] block is an AMX B tile, one pair row a zmm.
 *   linear weights Wt[in][out] (lin_pack): [OP][KB*16 pairs][16 outputs][2]
 *       bf16, OP = ceil(out/16), KB = ceil(in/32): B tiles / zmm rows again.
 *   linear inputs x[R][in] (mf_bf16_pack_rows): [16 rows][KB*32] bf16, rows
 *       past R and columns past in 0: an AMX A tile per 32 columns.
 *
 * Rounding is mf_bf16_bits (internal.h) for the weights, at load, and
 * VCVTNE2PS2BF16 for the inputs, which rounds identically (a test holds the
 * two together).  The pack of the inputs needs AVX512-BF16 and is compiled
 * only into the files built with it. */
#ifndef MF_KERNELS_BF16_H
#define MF_KERNELS_BF16_H

#include "internal.h"

#include <string.h>

/* Bytes of packed inputs one pass of a 1x1 conv may hold: its columns are
 * taken in passes of mf_bf16_pw_cols(K), a multiple of 32. */
#define MF_BF16_PW_BUDGET (192u << 10)

static inline int mf_bf16_kb(int k) { return (k + 31) / 32; }

static inline int mf_bf16_pw_cols(int k)
{
    int nb = (int)(MF_BF16_PW_BUDGET / ((unsigned)mf_bf16_kb(k) * 1024u)) & ~1;
    return (nb < 2 ? 2 : nb > 32 ? 32 : nb) * 16;
}

static inline size_t mf_bf16_pw_scratch(int k) { return (size_t)mf_bf16_pw_cols(k) / 16 * mf_bf16_kb(k) * 1024; }

static inline size_t mf_bf16_lin_scratch(int in) { return (size_t)mf_bf16_kb(in) * 1024; }

/* A whole map of n columns in the 1x1 input layout, per group of kg channels. */
static inline size_t mf_bf16_packed_map_bytes(int groups, int kg, int n)
{
    return (size_t)groups * (size_t)((n + 15) / 16) * (size_t)mf_bf16_kb(kg) * 1024;
}

static inline size_t mf_bf16_pw_packed_bytes(int m, int k) { return (size_t)((m + 15) / 16) * mf_bf16_kb(k) * 1024; }

static inline void mf_bf16_pw_pack(const float *w, int m, int k, void *dst)
{
    uint16_t *o = dst;
    const int MB = (m + 15) / 16, KB = mf_bf16_kb(k);
    for (int mb = 0; mb < MB; mb++)
        for (int kb = 0; kb < KB; kb++)
            for (int r = 0; r < 16; r++)
                for (int c = 0; c < 32; c++) {
                    const int row = mb * 16 + r, kk = kb * 32 + c;
                    *o++ = row < m && kk < k ? mf_bf16_bits(w[(size_t)row * k + kk]) : 0;
                }
}

static inline size_t mf_bf16_lin_packed_bytes(int in, int out) { return (size_t)((out + 15) / 16) * mf_bf16_kb(in) * 1024; }

static inline void mf_bf16_lin_pack(const float *wt, int in, int out, void *dst)
{
    uint16_t *o = dst;
    const int OP = (out + 15) / 16, KP = mf_bf16_kb(in) * 16;
    for (int p = 0; p < OP; p++)
        for (int kp = 0; kp < KP; kp++)
            for (int c = 0; c < 16; c++)
                for (int h = 0; h < 2; h++) {
                    const int i = 2 * kp + h, oc = p * 16 + c;
                    *o++ = i < in && oc < out ? mf_bf16_bits(wt[(size_t)i * out + oc]) : 0;
                }
}

#ifdef __AVX512BF16__
#include <immintrin.h>

static inline __mmask16 mf_bf16_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u); }

/* Two fp32 rows (16 lanes each) -> 16 bf16 pairs (even row low), rounded
 * to nearest even. */
static inline __m512i mf_bf16_pair(__m512 even, __m512 odd)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    /* words 0..15: even, 16..31: odd */
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
}

/* x[K][cols] (row stride ldx) -> dst [NB][KB*16][16][2]; lanes past cols
 * and pairs past K are zero.  Two rows at a time across all columns, so
 * the reads are two sequential streams (a column block at a time would
 * touch K rows at once, more streams than the prefetchers follow). */
static inline void mf_bf16_pack_x(const float *x, size_t ldx, int K, int cols, uint16_t *dst)
{
    const int KP = mf_bf16_kb(K) * 16, NB = (cols + 15) / 16;
    const size_t bstride = (size_t)KP * 32; /* elements between column blocks */
    for (int kp = 0; kp < KP; kp++) {
        const int k = 2 * kp;
        const float *r0 = x + (size_t)k * ldx, *r1 = r0 + ldx;
        uint16_t *d = dst + (size_t)kp * 32;
        if (k + 1 < K) {
            int nb = 0;
            for (; nb < cols / 16; nb++)
                _mm512_store_si512((void *)(d + nb * bstride),
                                   mf_bf16_pair(_mm512_loadu_ps(r0 + 16 * nb), _mm512_loadu_ps(r1 + 16 * nb)));
            if (nb < NB) {
                const __mmask16 mk = mf_bf16_mask(cols - 16 * nb);
                _mm512_store_si512((void *)(d + nb * bstride), mf_bf16_pair(_mm512_maskz_loadu_ps(mk, r0 + 16 * nb),
                                                                            _mm512_maskz_loadu_ps(mk, r1 + 16 * nb)));
            }
        } else if (k < K) { /* K odd: the last pair's odd half is zero */
            for (int nb = 0; nb < NB; nb++)
                _mm512_store_si512((void *)(d + nb * bstride),
                                   mf_bf16_pair(_mm512_maskz_loadu_ps(mf_bf16_mask(cols - 16 * nb), r0 + 16 * nb),
                                                _mm512_setzero_ps()));
        } else {
            for (int nb = 0; nb < NB; nb++) _mm512_store_si512((void *)(d + nb * bstride), _mm512_setzero_si512());
        }
    }
}

/* The depthwise into the packed input of the next 1x1 (mf_kernels.dw_packed):
 * the planes of up to mf_dw_packed_planes(n) / 2 pair slots at once (rows
 * g->oy0 .. g->oy1, consecutive channels of one group) are computed into the
 * scratch by the fp32 kernel, then rounded and interleaved a column block at
 * a time, its pair rows one after the other (sequential stores: a slot at a
 * time down the blocks would store KB KiB apart, into a few L1 sets).  With
 * pad, the thread with a group's last pair also zeroes the group's padding
 * pairs (AMX reads them; the avx512-bf16 1x1 stops at K's last pair). */
static inline __attribute__((always_inline)) void mf_bf16_dw_packed_t(int pad, const mf_dw *d, int s0, int s1,
                                                                      const mf_dw_rows *g, uint16_t *y, int kg,
                                                                      const mf_epi *e, float *scratch)
{
    const int n = (g->oy1 - g->oy0) * g->ow, NB = (n + 15) / 16, KP = mf_bf16_kb(kg) * 16, PG = (kg + 1) / 2;
    const size_t ld = mf_dw_packed_ld((size_t)n);
    const int per = mf_dw_packed_planes((size_t)n) / 2;
    for (int sa = s0; sa < s1;) {
        /* slots [sa, sb): within one group, channels q0 .. q1 */
        const int gi = sa / PG, sb0 = sa + per, gend = (gi + 1) * PG;
        const int sb = sb0 < s1 ? (sb0 < gend ? sb0 : gend) : (s1 < gend ? s1 : gend);
        const int q0 = gi * kg + 2 * (sa % PG), q1e = gi * kg + 2 * ((sb - 1) % PG) + 2,
                  q1 = q1e < (gi + 1) * kg ? q1e : (gi + 1) * kg;
        mf_dw_avx512(d, q0, q1, g, scratch, ld, e);
        const int kp0 = sa % PG, kp1 = kp0 + (sb - sa), odd_last = 2 * (kp1 - 1) + 1 >= kg;
        const int zero = pad && kp1 == PG; /* this call has the group's last pair */
        uint16_t *base = y + (size_t)gi * NB * KP * 32;
        for (int nb = 0; nb < NB; nb++) {
            const __mmask16 mk = mf_bf16_mask(n - 16 * nb);
            uint16_t *dst = base + (size_t)nb * KP * 32;
            const float *pa = scratch + 16 * nb;
            for (int kp = kp0; kp < kp1; kp++, pa += 2 * ld) {
                const __m512 a = _mm512_maskz_loadu_ps(mk, pa);
                const __m512 b = kp == kp1 - 1 && odd_last ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk, pa + ld);
                _mm512_store_si512((void *)(dst + (size_t)kp * 32), mf_bf16_pair(a, b));
            }
            if (zero)
                for (int k2 = PG; k2 < KP; k2++) _mm512_store_si512((void *)(dst + (size_t)k2 * 32), _mm512_setzero_si512());
        }
        sa = sb;
    }
}

/* x[R][in] (R <= 16) -> dst [16][KB*32]; rows past R, columns past in zero. */
static inline void mf_bf16_pack_rows(const float *x, int in, int R, uint16_t *dst)
{
    const int KW = mf_bf16_kb(in) * 32;
    for (int r = 0; r < 16; r++) {
        uint16_t *d = dst + (size_t)r * KW;
        for (int c = 0; c < KW; c += 32) {
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
            if (r < R) {
                a = _mm512_maskz_loadu_ps(mf_bf16_mask(in - c), x + (size_t)r * in + c);
                b = _mm512_maskz_loadu_ps(mf_bf16_mask(in - c - 16), x + (size_t)r * in + c + 16);
            }
            /* row-major bf16: words 0..15 from a, 16..31 from b */
            _mm512_store_si512((void *)(d + c), (__m512i)_mm512_cvtne2ps_pbh(b, a));
        }
    }
}

/* Bias, then the activation (da, db: dynamic ReLU's two slopes): the
 * arithmetic of every bf16 epilogue, whether its lanes are columns of one
 * row (mf_bf16_epi) or rows of one column (the avx512-bf16 tail), so the
 * two give the same bits. */
static inline __m512 mf_bf16_bias_act(__m512 acc, __m512 bias, mf_act act, __m512 da, __m512 db)
{
    __m512 t = _mm512_add_ps(acc, bias);
    if (act == MF_ACT_RELU6) t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(6.f));
    else if (act == MF_ACT_DYRELU) t = _mm512_max_ps(_mm512_mul_ps(t, da), _mm512_mul_ps(t, db));
    return t;
}

/* The epilogue of one output row's 16 columns: bias, activation, residual
 * (added last, as the reference does). */
static inline __m512 mf_bf16_epi(__m512 t, int row, const mf_epi *e, const float *res, __mmask16 mk)
{
    const int dy = e->act == MF_ACT_DYRELU;
    t = mf_bf16_bias_act(t, _mm512_set1_ps(e->bias[row]), e->act, dy ? _mm512_set1_ps(e->dya[row]) : t,
                         dy ? _mm512_set1_ps(e->dyb[row]) : t);
    if (res) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, res));
    return t;
}
#endif

#endif
