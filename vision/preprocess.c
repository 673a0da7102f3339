/* preprocess.c -- Resize + CenterCrop + ToTensor + Normalize; see preprocess.h.
 *
 * DESIGN: the resize is separable and each output pixel depends only on
 * its own index, so we first decide which resized pixels the center crop
 * keeps (an axis-aligned window) and compute just those, with PIL's exact
 * arithmetic:
 *   bilinear  horizontal pass over the source rows the window needs into a
 *             uint8 scratch image [rows][window_w][ch], then a vertical
 *             pass straight into the float output.  Weights follow PIL's
 *             precompute_coeffs(): triangle filter with support scaled by
 *             the shrink factor, normalized in double, then rounded to
 *             22-bit fixed point; sums start at half a unit, are shifted
 *             back and clipped to 0..255 after each pass.
 *   nearest   PIL's ImagingScaleAffine(): the source index of output i is
 *             floor(x) with x = (0.5 + i) * in/out accumulated by repeated
 *             addition, as PIL accumulates it.
 * The float conversion of each of the 256 byte values is tabulated per
 * channel once per call.
 */
#include "preprocess.h"

#include <limits.h>
#include <math.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MF_PP_X86 1
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22 /* PIL: 32 - 8 - 2 (8-bit data, 2 bits of headroom) */

/* Beyond this many outputs on an axis the nearest index is computed
 * directly rather than by PIL's running sum, which would take seconds;
 * PIL itself cannot allocate such an image. */
#define NEAREST_SUM_LIMIT ((int64_t)1 << 26)

/* The part of one axis of the resized image that the crop keeps. */
typedef struct axis {
    int64_t rsize; /* resized length */
    int64_t r0;    /* first resized index kept */
    int lo;        /* crop index of r0 (> 0 where the crop pads before the image) */
    int n;         /* resized indices kept: r0 .. r0+n-1 -> crop lo .. lo+n-1 */
} axis;

/* Fixed-point filter taps of the kept outputs of one axis. */
typedef struct taps {
    int ksize;     /* taps per output, at most */
    int *first;    /* [n] first input index */
    int *count;    /* [n] taps used */
    int32_t *k;    /* [n][ksize] weights, sum ~ 1 << PRECISION_BITS */
} taps;

/* torchvision Resize(int): the shorter side becomes `size`, the longer one
 * int(size * long / short).  Python divides the exact integers; the double
 * division here agrees while size * long < 2^53. */
static void resized_size(int w, int h, int size, int64_t *rw, int64_t *rh)
{
    int64_t s = w <= h ? w : h, l = w <= h ? h : w;
    int64_t nl = (int64_t)((double)((int64_t)size * l) / (double)s);
    *rw = w <= h ? size : nl;
    *rh = w <= h ? nl : size;
}

/* torchvision CenterCrop on an axis of length rsize: crop index c shows
 * resized index c + off, where off = round((rsize - crop) / 2) with
 * Python's half-to-even round(), or, when the crop is larger, -pad with
 * pad = (crop - rsize) // 2 zeros before the image. */
static void axis_init(axis *a, int64_t rsize, int crop)
{
    int64_t off;
    if (crop > rsize) {
        off = -((crop - rsize) / 2);
    } else {
        int64_t d = rsize - crop, q = d / 2;
        off = (d % 2 == 0 || q % 2 == 0) ? q : q + 1;
    }
    int64_t hi = rsize - off < crop ? rsize - off : crop;
    a->rsize = rsize;
    a->lo = off < 0 ? (int)-off : 0;
    a->r0 = a->lo + off;
    a->n = (int)(hi - a->lo);
}

static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Input pixels per output pixel.  PIL passes the source box as floats,
 * hence (float)in. */
static double resize_scale(int in, int64_t out)
{
    return (double)(float)in / (double)out;
}

/* Taps per output: PIL widens the triangle (support 1) by the shrink
 * factor, which is the antialiasing. */
static int taps_ksize(int in, int64_t out)
{
    double scale = resize_scale(in, out);
    return (int)ceil(scale < 1.0 ? 1.0 : scale) * 2 + 1;
}

/* PIL's precompute_coeffs() + normalize_coeffs_8bpc() for the outputs
 * a->r0 .. a->r0 + a->n - 1 of an in -> a->rsize resize; w is scratch for
 * t->ksize doubles. */
static void taps_init(taps *t, int in, const axis *a, double *w)
{
    double scale = resize_scale(in, a->rsize);
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    double ss = 1.0 / filterscale;
    for (int i = 0; i < a->n; i++) {
        double center = 0.0 + ((double)(a->r0 + i) + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in)
            xmax = in;
        xmax -= xmin;
        if (xmax > t->ksize) /* cannot happen (2 * support + 1 taps at most) */
            xmax = t->ksize;
        if (xmax < 0)
            xmax = 0;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = bilinear_filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = t->k + (size_t)i * t->ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        t->first[i] = xmin;
        t->count[i] = xmax;
    }
}

static uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS; /* arithmetic shift, as PIL's clip8 lookup */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static uint8_t luma(const uint8_t *px)
{
    return (uint8_t)((px[0] * 19595 + px[1] * 38470 + px[2] * 7471 + 0x8000) >> 16);
}

/* PIL's nearest source index of outputs a->r0 .. a->r0+n-1, -1 outside. */
static void nearest_index(int in, const axis *a, int *idx)
{
    double a0 = (double)(float)in / (double)a->rsize;
    int64_t end = a->r0 + a->n;
    if (end <= NEAREST_SUM_LIMIT) {
        double xo = 0.0 + a0 * 0.5;
        for (int64_t r = 0; r < end; r++, xo += a0) {
            if (r < a->r0)
                continue;
            int v = xo < 0.0 ? -1 : (int)xo;
            idx[r - a->r0] = v < in ? v : -1;
        }
    } else {
        for (int i = 0; i < a->n; i++) {
            double xo = 0.0 + a0 * 0.5 + (double)(a->r0 + i) * a0;
            int v = xo < 0.0 ? -1 : xo >= in ? -1 : (int)xo;
            idx[i] = v;
        }
    }
}

/* Output writer: lut[c][v] is ToTensor + Normalize of byte v on channel c. */
typedef struct sink {
    float *out;          /* [3][ch][cw] */
    int cw, ch;          /* crop size */
    int nch;             /* planes computed: 1 (luma) or 3 */
    float lut[3][256];   /* ((float)v / 255 - mean[c]) / std[c] */
} sink;

/* Store byte value(s) px[0..nch) at crop position (y, x). */
static void sink_put(const sink *s, int y, int x, const uint8_t *px)
{
    size_t plane = (size_t)s->cw * s->ch, at = (size_t)y * s->cw + x;
    for (int c = 0; c < 3; c++)
        s->out[c * plane + at] = s->lut[c][px[s->nch == 1 ? 0 : c]];
}

/* Store a row of n pixels (nch bytes each) at crop position (y, x0). */
static void sink_row(const sink *s, int y, int x0, const uint8_t *px, int n)
{
    size_t plane = (size_t)s->cw * s->ch, at = (size_t)y * s->cw + x0;
    for (int c = 0; c < 3; c++) {
        float *o = s->out + c * plane + at;
        const float *lut = s->lut[c];
        if (s->nch == 1)
            for (int i = 0; i < n; i++)
                o[i] = lut[px[i]];
        else
            for (int i = 0; i < n; i++)
                o[i] = lut[px[3 * i + c]];
    }
}

/* Where no resized pixel lands (zero padding), byte value 0. */
static void sink_pad(const sink *s, const axis *ax, const axis *ay)
{
    if (ax->n == s->cw && ay->n == s->ch)
        return;
    static const uint8_t zero[3];
    for (int y = 0; y < s->ch; y++)
        for (int x = 0; x < s->cw; x++)
            if (y < ay->lo || y >= ay->lo + ay->n || x < ax->lo || x >= ax->lo + ax->n)
                sink_put(s, y, x, zero);
}

/* Source pixel (x, y) as nch bytes into px. */
static void source_px(const mf_image *img, int nch, int x, int y, uint8_t *px)
{
    const uint8_t *p = img->rgb + ((size_t)y * img->w + x) * 3;
    if (nch == 1) {
        px[0] = luma(p);
    } else {
        px[0] = p[0];
        px[1] = p[1];
        px[2] = p[2];
    }
}

/* Nearest neighbour (also the no-resize case, with identity indices). */
static int run_nearest(const mf_image *img, const sink *s, const axis *ax, const axis *ay,
                       int identity)
{
    int *xi = malloc(((size_t)ax->n + ay->n) * sizeof *xi);
    if (!xi)
        return MF_PREPROCESS_NOMEM;
    int *yi = xi + ax->n;
    if (identity) {
        for (int i = 0; i < ax->n; i++)
            xi[i] = (int)(ax->r0 + i);
        for (int j = 0; j < ay->n; j++)
            yi[j] = (int)(ay->r0 + j);
    } else {
        nearest_index(img->w, ax, xi);
        nearest_index(img->h, ay, yi);
    }
    static const uint8_t zero[3];
    for (int j = 0; j < ay->n; j++) {
        for (int i = 0; i < ax->n; i++) {
            uint8_t px[3];
            if (yi[j] < 0 || xi[i] < 0)
                memcpy(px, zero, sizeof px);
            else
                source_px(img, s->nch, xi[i], yi[j], px);
            sink_put(s, ay->lo + j, ax->lo + i, px);
        }
    }
    free(xi);
    return 0;
}

/* Round a byte count up to a multiple of 16 so every piece carved from
 * the scratch block stays aligned.  Sizes here are far below SIZE_MAX
 * (crop sizes times taps, each bounded by int). */
static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/* ---- the two passes' inner loops --------------------------------------
 * Plain loops, and AVX2 twins used when the CPU has AVX2 (the same integer
 * arithmetic, so the same bytes; tests/test_preprocess.c compares them on
 * random images).  mf_preprocess_set_simd(0) forces the plain ones. */

static int simd_allowed = 1;

void mf_preprocess_set_simd(int on)
{
    simd_allowed = on;
}

/* One output pixel of the horizontal pass over an RGB row. */
static inline void hpass_rgb_one(const uint8_t *src, const int32_t *k, int first, int count, uint8_t *dst)
{
    const uint8_t *in = src + (size_t)first * 3;
    int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
    for (int t = 0; t < count; t++, in += 3) {
        s0 += in[0] * k[t];
        s1 += in[1] * k[t];
        s2 += in[2] * k[t];
    }
    dst[0] = clip8(s0);
    dst[1] = clip8(s1);
    dst[2] = clip8(s2);
}

/* Horizontal pass of one RGB source row (w pixels): dst[i][c] for the nx
 * kept outputs.  last_row: src is the image's last row. */
static void hpass_rgb(const uint8_t *src, const taps *tx, int nx, uint8_t *dst, int last_row, int w)
{
    (void)last_row;
    (void)w;
    for (int i = 0; i < nx; i++)
        hpass_rgb_one(src, tx->k + (size_t)i * tx->ksize, tx->first[i], tx->count[i], dst + (size_t)i * 3);
}

/* Vertical pass of one output row: n bytes of out from the scratch rows
 * first .. first+count-1 (row stride `stride`) weighted by k. */
static void vpass(const uint8_t *tmp, size_t stride, size_t n, int first, int count, const int32_t *k, uint8_t *out)
{
    for (size_t e = 0; e < n; e++) {
        int32_t acc = 1 << (PRECISION_BITS - 1);
        const uint8_t *p = tmp + (size_t)first * stride + e;
        for (int t = 0; t < count; t++, p += stride)
            acc += *p * k[t];
        out[e] = clip8(acc);
    }
}

#ifdef MF_PP_X86
static inline __attribute__((target("avx2"))) __m128i clip8x4(__m128i v)
{
    v = _mm_srai_epi32(v, PRECISION_BITS);
    v = _mm_packs_epi32(v, v);    /* saturates to int16: order kept */
    return _mm_packus_epi16(v, v); /* clips to 0..255 */
}

__attribute__((target("avx2"))) static void hpass_rgb_avx2(const uint8_t *src, const taps *tx, int nx, uint8_t *dst,
                                                           int last_row, int w)
{
    const __m128i half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int i = 0; i < nx; i++) {
        const int32_t *k = tx->k + (size_t)i * tx->ksize;
        const int n = tx->count[i];
        /* each tap loads 4 bytes (R, G, B and the next pixel's R); only the
         * image's very last pixel has no fourth byte after it */
        if (last_row && tx->first[i] + n == w) {
            hpass_rgb_one(src, k, tx->first[i], n, dst + (size_t)i * 3);
            continue;
        }
        const uint8_t *in = src + (size_t)tx->first[i] * 3;
        __m128i acc = half;
        for (int t = 0; t < n; t++, in += 3) {
            int32_t b;
            memcpy(&b, in, 4);
            __m128i px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(b));
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[t])));
        }
        int32_t o = _mm_cvtsi128_si32(clip8x4(acc));
        memcpy(dst + (size_t)i * 3, &o, 3);
    }
}

__attribute__((target("avx2"))) static void vpass_avx2(const uint8_t *tmp, size_t stride, size_t n, int first,
                                                       int count, const int32_t *k, uint8_t *out)
{
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    const __m256i pack = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                          -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    size_t e = 0;
    for (; e + 8 <= n; e += 8) {
        __m256i acc = half;
        const uint8_t *p = tmp + (size_t)first * stride + e;
        for (int t = 0; t < count; t++, p += stride) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, _mm256_set1_epi32(k[t])));
        }
        acc = _mm256_srai_epi32(acc, PRECISION_BITS);
        acc = _mm256_min_epi32(_mm256_max_epi32(acc, _mm256_setzero_si256()), _mm256_set1_epi32(255));
        acc = _mm256_shuffle_epi8(acc, pack); /* bytes 0..3 of each 128-bit half */
        uint32_t lo = (uint32_t)_mm256_cvtsi256_si32(acc), hi = (uint32_t)_mm256_extract_epi32(acc, 4);
        memcpy(out + e, &lo, 4);
        memcpy(out + e + 4, &hi, 4);
    }
    if (e < n)
        vpass(tmp + e, stride, n - e, first, count, k, out + e);
}
#endif

/* PIL's two-pass bilinear resize, restricted to the kept window. */
static int run_bilinear(const mf_image *img, const sink *s, const axis *ax, const axis *ay)
{
    int nch = s->nch, nx = ax->n, ny = ay->n;
    void (*hpass)(const uint8_t *, const taps *, int, uint8_t *, int, int) = hpass_rgb;
    void (*vp)(const uint8_t *, size_t, size_t, int, int, const int32_t *, uint8_t *) = vpass;
#ifdef MF_PP_X86
    if (simd_allowed && __builtin_cpu_supports("avx2")) {
        hpass = hpass_rgb_avx2;
        vp = vpass_avx2;
    }
#endif
    taps tx = {.ksize = taps_ksize(img->w, ax->rsize)};
    taps ty = {.ksize = taps_ksize(img->h, ay->rsize)};
    int kmax = tx.ksize > ty.ksize ? tx.ksize : ty.ksize;

    /* One block for the taps and row buffers; the scratch image follows
     * once the vertical taps say which source rows it needs. */
    size_t sz_tx = align16((size_t)nx * (2 * sizeof(int) + (size_t)tx.ksize * sizeof(int32_t)));
    size_t sz_ty = align16((size_t)ny * (2 * sizeof(int) + (size_t)ty.ksize * sizeof(int32_t)));
    size_t sz_w = align16((size_t)kmax * sizeof(double));
    size_t sz_acc = align16((size_t)nx * nch); /* one output row of bytes */
    size_t sz_luma = align16(nch == 1 ? (size_t)img->w : 0);
    uint8_t *block = malloc(sz_tx + sz_ty + sz_w + sz_acc + sz_luma);
    if (!block)
        return MF_PREPROCESS_NOMEM;
    uint8_t *p = block;
    double *w = (double *)p;
    p += sz_w;
    uint8_t *orow = p;
    p += sz_acc;
    tx.k = (int32_t *)p;
    tx.first = (int *)(tx.k + (size_t)nx * tx.ksize);
    tx.count = tx.first + nx;
    p += sz_tx;
    ty.k = (int32_t *)p;
    ty.first = (int *)(ty.k + (size_t)ny * ty.ksize);
    ty.count = ty.first + ny;
    p += sz_ty;
    uint8_t *lrow = sz_luma ? p : NULL;
    taps_init(&tx, img->w, ax, w);
    taps_init(&ty, img->h, ay, w);

    int sy0 = img->h, sy1 = 0;
    for (int j = 0; j < ny; j++) {
        if (ty.count[j] == 0)
            continue;
        if (ty.first[j] < sy0)
            sy0 = ty.first[j];
        if (ty.first[j] + ty.count[j] > sy1)
            sy1 = ty.first[j] + ty.count[j];
    }
    if (sy1 < sy0)
        sy1 = sy0 = 0;
    size_t rowlen = (size_t)nx * nch;
    uint8_t *tmp = malloc(rowlen * (size_t)(sy1 - sy0) + 1); /* [sy1-sy0][nx][nch] */
    if (!tmp) {
        free(block);
        return MF_PREPROCESS_NOMEM;
    }

    /* source columns the horizontal taps touch (luma is made for these only) */
    int sx0 = img->w, sx1 = 0;
    for (int i = 0; i < nx; i++) {
        if (tx.count[i] == 0)
            continue;
        if (tx.first[i] < sx0)
            sx0 = tx.first[i];
        if (tx.first[i] + tx.count[i] > sx1)
            sx1 = tx.first[i] + tx.count[i];
    }

    /* horizontal pass: source rows sy0 .. sy1-1 -> tmp */
    for (int sy = sy0; sy < sy1; sy++) {
        const uint8_t *src = img->rgb + (size_t)sy * img->w * 3;
        uint8_t *dst = tmp + (size_t)(sy - sy0) * rowlen;
        if (nch == 1) {
            for (int x = sx0; x < sx1; x++)
                lrow[x] = luma(src + (size_t)x * 3);
            for (int i = 0; i < nx; i++) {
                const int32_t *k = tx.k + (size_t)i * tx.ksize;
                const uint8_t *in = lrow + tx.first[i];
                int32_t ss = 1 << (PRECISION_BITS - 1);
                for (int t = 0; t < tx.count[i]; t++)
                    ss += in[t] * k[t];
                dst[i] = clip8(ss);
            }
            continue;
        }
        hpass(src, &tx, nx, dst, sy == img->h - 1, img->w);
    }

    /* vertical pass: tmp -> output window, a row at a time */
    for (int j = 0; j < ny; j++) {
        int f = ty.count[j] ? ty.first[j] - sy0 : 0;
        vp(tmp, rowlen, rowlen, f, ty.count[j], ty.k + (size_t)j * ty.ksize, orow);
        sink_row(s, ay->lo + j, ax->lo, orow, nx);
    }
    free(tmp);
    free(block);
    return 0;
}

int mf_preprocess_image(const mf_image *img, const mf_preprocess *p, float *out)
{
    if (!img || !img->rgb || !p || !out || img->w < 1 || img->h < 1 ||
        img->w > INT_MAX / 4 || img->h > INT_MAX / 4 || p->resize < 1 ||
        p->input_w < 1 || p->input_h < 1 || (p->channels != 1 && p->channels != 3))
        return MF_PREPROCESS_ARG;
    int nearest;
    if (strcmp(p->interpolation, "bilinear") == 0)
        nearest = 0;
    else if (strcmp(p->interpolation, "nearest") == 0)
        nearest = 1;
    else
        return MF_PREPROCESS_ARG;
    for (int c = 0; c < 3; c++)
        if (p->std[c] == 0.0f || !isfinite(p->std[c]) || !isfinite(p->mean[c]))
            return MF_PREPROCESS_ARG;

    sink s = {.out = out, .cw = p->input_w, .ch = p->input_h, .nch = p->channels};
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            s.lut[c][v] = ((float)v / 255.0f - p->mean[c]) / p->std[c];

    int64_t rw, rh;
    resized_size(img->w, img->h, p->resize, &rw, &rh);
    axis ax, ay;
    axis_init(&ax, rw, p->input_w);
    axis_init(&ay, rh, p->input_h);
    sink_pad(&s, &ax, &ay);

    if (rw == img->w && rh == img->h) /* torchvision skips the resize */
        return run_nearest(img, &s, &ax, &ay, 1);
    if (nearest)
        return run_nearest(img, &s, &ax, &ay, 0);
    return run_bilinear(img, &s, &ax, &ay);
}
