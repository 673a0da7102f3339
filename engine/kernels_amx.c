/* kernels_amx.c -- bf16 GEMMs on AMX tiles (Intel Sapphire Rapids and
 * later): the 1x1 convolutions and the linears of a bf16 model.  Compiled
 * with -mamx-tile -mamx-bf16 -mavx512bf16 (and AVX-512) and called only
 * after mf_cpu_has_amx_bf16(), which also obtained the OS's permission to
 * use the tile data; the twins are the bf16 reference kernels
 * (kernels_ref.c), tests/test_kernels.c holds them together.
 *
 * Every call configures the eight tiles as 16 rows x 64 bytes and releases
 * them on return, so no tile state outlives a kernel: tiles 0-3 accumulate
 * fp32 outputs (16 x 16 each), 4-7 hold bf16 operands.  Operand layouts:
 * kernels_bf16.h.  Outputs leave the tiles through a 1 KiB buffer on the
 * stack, where the fp32 epilogue (bias, activation, residual) is applied
 * with AVX-512 on the way to y. */
#include "kernels_bf16.h"

#include <immintrin.h>
#include <string.h>

typedef struct tilecfg {
    uint8_t palette;   /* 1: the 8 x 1 KiB tiles */
    uint8_t start_row; /* 0 */
    uint8_t reserved[14];
    uint16_t colsb[16]; /* bytes per row of tile i */
    uint8_t rows[16];   /* rows of tile i */
} tilecfg;

static void tiles_begin(void)
{
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    _tile_loadconfig(&c);
}

/* Up to 16 rows x 16 columns of c (row stride 16) through the epilogue into
 * y (row stride ldy); rows: valid rows, mk: valid columns; res like y. */
static inline void tile_out(const float *c, int rows, __mmask16 mk, int row0, float *y, size_t ldy, const mf_epi *e,
                            const float *res)
{
    for (int r = 0; r < rows; r++) {
        __m512 t = mf_bf16_epi(_mm512_load_ps(c + 16 * r), row0 + r, e, res ? res + (size_t)r * e->ldr : NULL, mk);
        _mm512_mask_storeu_ps(y + (size_t)r * ldy, mk, t);
    }
}

/* ---- 1x1 convolution ----------------------------------------------------
 * Columns in passes of mf_bf16_pw_cols(K): the pass's inputs are rounded
 * and packed into the scratch, then every pair of 16-row weight blocks
 * meets every pair of 16-column input blocks: 2 x 2 output tiles, K in
 * steps of 32 (four tile products per two A and two B loads). */

/* The 2 x 2 (or smaller, MT/NT = 1) tile block at weight block a, input block
 * b; out: [4][256] the tiles in order (0,0) (0,1) (1,0) (1,1). */
#define AMX_BLOCK(MT, NT)                                                                                       \
    static void amx_block_##MT##NT(const uint16_t *a, const uint16_t *b, int KB, float *out)                  \
    {                                                                                                          \
        const size_t as = (size_t)KB * 512, bs = (size_t)KB * 512;                                             \
        _tile_zero(0);                                                                                         \
        if (NT > 1) _tile_zero(1);                                                                             \
        if (MT > 1) _tile_zero(2);                                                                             \
        if (MT > 1 && NT > 1) _tile_zero(3);                                                                   \
        for (int kb = 0; kb < KB; kb++) {                                                                      \
            _tile_loadd(4, a + (size_t)kb * 512, 64);                                                          \
            _tile_loadd(6, b + (size_t)kb * 512, 64);                                                          \
            _tile_dpbf16ps(0, 4, 6);                                                                           \
            if (NT > 1) {                                                                                      \
                _tile_loadd(7, b + bs + (size_t)kb * 512, 64);                                                 \
                _tile_dpbf16ps(1, 4, 7);                                                                       \
            }                                                                                                  \
            if (MT > 1) {                                                                                      \
                _tile_loadd(5, a + as + (size_t)kb * 512, 64);                                                 \
                _tile_dpbf16ps(2, 5, 6);                                                                       \
                if (NT > 1) _tile_dpbf16ps(3, 5, 7);                                                           \
            }                                                                                                  \
        }                                                                                                      \
        _tile_stored(0, out, 64);                                                                              \
        if (NT > 1) _tile_stored(1, out + 256, 64);                                                            \
        if (MT > 1) _tile_stored(2, out + 512, 64);                                                            \
        if (MT > 1 && NT > 1) _tile_stored(3, out + 768, 64);                                                  \
    }
AMX_BLOCK(2, 2)
AMX_BLOCK(2, 1)
AMX_BLOCK(1, 2)
AMX_BLOCK(1, 1)

/* x: fp32 inputs (row stride ldx) packed here pass by pass; or xp: inputs
 * packed already (a whole map, from column xc0 on). */
static void pw_amx_run(const mf_pw *p, int g, const float *x, size_t ldx, const uint16_t *xp, int xc0, int n,
                       float *y, size_t ldy, const mf_epi *e, void *scratch)
{
    const int M = p->cout / p->groups, K = p->cin / p->groups, MB = (M + 15) / 16, KB = mf_bf16_kb(K);
    const int NC = mf_bf16_pw_cols(K);
    const uint16_t *wp = (const uint16_t *)((const char *)p->wp + p->wp_group * (size_t)g);
    float out[4 * 256] __attribute__((aligned(64)));
    tiles_begin();
    for (int n0 = 0; n0 < n; n0 += NC) {
        const int cols = n - n0 < NC ? n - n0 : NC, NB = (cols + 15) / 16;
        const uint16_t *xb = xp ? xp + (size_t)((xc0 + n0) / 16) * KB * 512 : scratch;
        if (!xp) mf_bf16_pack_x(x + n0, ldx, K, cols, scratch);
        for (int mb = 0; mb < MB; mb += 2) {
            const int MT = MB - mb > 1 ? 2 : 1;
            const uint16_t *a = wp + (size_t)mb * KB * 512;
            const int rows2 = M - mb * 16 < 32 ? M - mb * 16 : 32;
            for (int nb = 0; nb < NB; nb += 2) {
                const int NT = NB - nb > 1 ? 2 : 1;
                const uint16_t *b = xb + (size_t)nb * KB * 512;
                /* the next block's outputs (and residual): they are rows far
                 * apart, which the hardware prefetchers do not follow */
                if (nb + 2 < NB) {
                    const size_t c2 = (size_t)n0 + (nb + 2) * 16;
                    for (int r = 0; r < rows2; r++) {
                        _mm_prefetch((const char *)(y + (size_t)(mb * 16 + r) * ldy + c2), _MM_HINT_T0);
                        if (e->res) _mm_prefetch((const char *)(e->res + (size_t)(mb * 16 + r) * e->ldr + c2), _MM_HINT_T0);
                        if (nb + 3 < NB) {
                            _mm_prefetch((const char *)(y + (size_t)(mb * 16 + r) * ldy + c2 + 16), _MM_HINT_T0);
                            if (e->res)
                                _mm_prefetch((const char *)(e->res + (size_t)(mb * 16 + r) * e->ldr + c2 + 16), _MM_HINT_T0);
                        }
                    }
                }
                if (MT == 2 && NT == 2) amx_block_22(a, b, KB, out);
                else if (MT == 2) amx_block_21(a, b, KB, out);
                else if (NT == 2) amx_block_12(a, b, KB, out);
                else amx_block_11(a, b, KB, out);
                for (int i = 0; i < MT; i++)
                    for (int j = 0; j < NT; j++) {
                        const int m0 = (mb + i) * 16, c0 = n0 + (nb + j) * 16;
                        const int rows = M - m0 < 16 ? M - m0 : 16;
                        const float *res = e->res ? e->res + (size_t)m0 * e->ldr + c0 : NULL;
                        tile_out(out + 256 * (2 * i + j), rows, mf_bf16_mask(n - c0), m0,
                                 y + (size_t)m0 * ldy + c0, ldy, e, res);
                    }
            }
        }
    }
    _tile_release();
}

static void pw_amx(const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy, const mf_epi *e,
                   void *scratch)
{
    pw_amx_run(p, g, x, ldx, NULL, 0, n, y, ldy, e, scratch);
}

static void pw_packed_amx(const mf_pw *p, int g, const uint16_t *xp, int n, int c0, int cols, float *y, size_t ldy,
                          const mf_epi *e, void *scratch)
{
    (void)n;
    pw_amx_run(p, g, NULL, 0, xp, c0, cols, y, ldy, e, scratch);
}

/* ---- linear -------------------------------------------------------------
 * Rows 16 at a time (rounded and packed into the scratch: the A tile),
 * outputs in groups of three 16-wide panels (48, the unit a team splits
 * by), K in steps of 32. */

#define AMX_LIN(NP)                                                                                             \
    static void amx_lin_##NP(const uint16_t *xa, int KB, const uint16_t *w, float *out)                       \
    {                                                                                                          \
        const size_t ps = (size_t)KB * 512;                                                                    \
        _tile_zero(0);                                                                                         \
        if (NP > 1) _tile_zero(1);                                                                             \
        if (NP > 2) _tile_zero(2);                                                                             \
        for (int kb = 0; kb < KB; kb++) {                                                                      \
            _tile_loadd(4, xa + (size_t)kb * 32, KB * 64);                                                     \
            _tile_loadd(5, w + (size_t)kb * 512, 64);                                                          \
            _tile_dpbf16ps(0, 4, 5);                                                                           \
            if (NP > 1) {                                                                                      \
                _tile_loadd(6, w + ps + (size_t)kb * 512, 64);                                                 \
                _tile_dpbf16ps(1, 4, 6);                                                                       \
            }                                                                                                  \
            if (NP > 2) {                                                                                      \
                _tile_loadd(7, w + 2 * ps + (size_t)kb * 512, 64);                                             \
                _tile_dpbf16ps(2, 4, 7);                                                                       \
            }                                                                                                  \
        }                                                                                                      \
        _tile_stored(0, out, 64);                                                                              \
        if (NP > 1) _tile_stored(1, out + 256, 64);                                                            \
        if (NP > 2) _tile_stored(2, out + 512, 64);                                                            \
    }
AMX_LIN(3)
AMX_LIN(2)
AMX_LIN(1)

static void linear_amx(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch)
{
    const int KB = mf_bf16_kb(l->in), p0 = o0 / 16, p1 = (o1 + 15) / 16;
    const uint16_t *wp = l->wp;
    uint16_t *xa = scratch;
    float out[3 * 256] __attribute__((aligned(64)));
    tiles_begin();
    for (int r0 = 0; r0 < rows; r0 += 16) {
        const int R = rows - r0 < 16 ? rows - r0 : 16;
        mf_bf16_pack_rows(x + (size_t)r0 * l->in, l->in, R, xa);
        for (int p = p0; p < p1; p += 3) {
            const int np = p1 - p < 3 ? p1 - p : 3;
            const uint16_t *w = wp + (size_t)p * KB * 512;
            if (np == 3) amx_lin_3(xa, KB, w, out);
            else if (np == 2) amx_lin_2(xa, KB, w, out);
            else amx_lin_1(xa, KB, w, out);
            for (int j = 0; j < np; j++) {
                const int c0 = (p + j) * 16;
                const __mmask16 mk = mf_bf16_mask(o1 - c0);
                const __m512 b = _mm512_maskz_loadu_ps(mk, l->b + c0);
                for (int r = 0; r < R; r++)
                    _mm512_mask_storeu_ps(y + (size_t)(r0 + r) * l->out + c0, mk,
                                          _mm512_add_ps(_mm512_load_ps(out + 256 * j + 16 * r), b));
            }
        }
    }
    _tile_release();
}

static size_t pw_scratch(int k) { return mf_bf16_pw_scratch(k); }
static size_t lin_scratch(int in) { return mf_bf16_lin_scratch(in); }

/* AMX's tiles read the padding pairs up to K's 32-multiple: zeroed here */
static void dw_packed_amx(const mf_dw *d, int s0, int s1, const mf_dw_rows *g, uint16_t *y, int kg, const mf_epi *e,
                          float *scratch)
{
    mf_bf16_dw_packed_t(1, d, s0, s1, g, y, kg, e, scratch);
}

const mf_kernels mf_kernels_amx_bf16 = {
    .name = "amx-bf16",
    .precision = MF_PRECISION_BF16,
    .pw = pw_amx,
    .linear = linear_amx,
    .pw_packed_bytes = mf_bf16_pw_packed_bytes,
    .pw_pack = mf_bf16_pw_pack,
    .lin_packed_bytes = mf_bf16_lin_packed_bytes,
    .lin_pack = mf_bf16_lin_pack,
    .pw_scratch_bytes = pw_scratch,
    .lin_scratch_bytes = lin_scratch,
    .packed_map_bytes = mf_bf16_packed_map_bytes,
    .dw_packed = dw_packed_amx,
    .dw_packed_pads = 1,
    .pw_packed = pw_packed_amx,
};
