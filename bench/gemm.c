/* gemm.c -- the kernels alone, on the shapes of one network: every 1x1
 * convolution at its map size, every linear layer at the rows it gets at a
 * given batch, every depthwise, and both bridges' attention at every
 * block's map, timed with each kernel set this CPU has.  Prints, per set,
 * the total time of one image's 1x1 convolutions, linears, depthwise and
 * attention, and their throughput, so a kernel change can be judged
 * without the rest of the network around it (make bench measures the
 * whole).
 *
 *   build/gemm-bench [ARCH] [SIZE] [IMAGES]     (default mobile_former_508m 224 1)
 *
 * MF_GEMM_LAYERS=1 also prints every layer's shape, time and rate, and the stem's.
 * MF_GEMM_COLD=1 reads 64 MiB of other data before every timed call, so the
 * weights come from DRAM as they do at batch 1 in the network (the default
 * times warm calls: weights and inputs in cache).
 *
 * IMAGES: images whose tokens a linear takes at once (a thread's run); the
 * times are divided by it.  Uses engine-private headers: a tool of the
 * engine's own, not an API user. */
#include "internal.h"
#include "mf_synthetic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fastest of REPS timed calls of one layer (after one untimed): on a shared
 * machine the minimum is what the kernel costs, the rest is other load. */
#define REPS 15

static float *evict_buf; /* MF_GEMM_COLD: read before every timed call */
static size_t evict_n;

static void evict(void)
{
    if (!evict_buf) return;
    volatile float sink = 0;
    float acc = 0;
    for (size_t i = 0; i < evict_n; i += 16) acc += evict_buf[i];
    sink = acc;
    (void)sink;
}

static double time_pw(const mf_pw *p, const float *x, int n, float *y, void *scr)
{
    const int G = p->groups, M = p->cout / G, K = p->cin / G;
    double t[REPS];
    for (int r = 0; r <= REPS; r++) {
        evict();
        uint64_t t0 = mf_now_ns();
        for (int g = 0; g < G; g++) {
            mf_epi e = {.act = MF_ACT_NONE, .bias = p->bias + (size_t)g * M};
            p->k->pw(p, g, x + (size_t)g * K * n, (size_t)n, n, y + (size_t)g * M * n, (size_t)n, &e, scr);
        }
        if (r) t[r - 1] = (mf_now_ns() - t0) * 1e-9;
    }
    qsort(t, REPS, sizeof t[0], cmp);
    return t[0];
}

static double time_lin(const mf_lin *l, const float *x, int rows, float *y, void *scr)
{
    double t[REPS];
    for (int r = 0; r <= REPS; r++) {
        evict();
        uint64_t t0 = mf_now_ns();
        l->k->linear(l, x, rows, y, 0, l->out, scr);
        if (r) t[r - 1] = (mf_now_ns() - t0) * 1e-9;
    }
    qsort(t, REPS, sizeof t[0], cmp);
    return t[0];
}

static int verbose;

typedef struct totals {
    double pw_s, pw_madds, lin_s, lin_madds, lin_bytes, dw_s, dw_madds, at_s, at_madds;
} totals;

static void add_lin(totals *tt, const mf_lin *l, int rows, float *x, float *y, void *scr, size_t wbytes)
{
    if (!l->k) return;
    const double s = time_lin(l, x, rows, y, scr);
    tt->lin_s += s;
    tt->lin_madds += (double)rows * l->in * l->out;
    tt->lin_bytes += (double)l->in * l->out * wbytes;
    if (verbose)
        printf("    linear %4d <- %4d x %2d rows%s: %8.1f us %6.1f GB/s of weights\n", l->out, l->in, rows,
               l->stream ? " (streamed)" : "", s * 1e6, (double)l->in * l->out * wbytes / s / 1e9);
}

static int conv_out(int n, int s) { return (n - 1) / s + 1; }

/* One bridge's attention over both heads of a C-channel map of hw pixels:
 * Mobile -> Former (m2f = 1, scores, softmax over pixels, outputs) or
 * Former -> Mobile (scores, softmax over tokens, the map updated in place),
 * as forward.c's attn_run calls them; q, k, v and o at z. */
static void add_attn(totals *tt, const mf_model *m, int m2f, int C, int hw, float *map, float *z, void *scr)
{
    const int T = m->arch.tokens, ch = C / 2;
    const float scale = 1.0f / sqrtf((float)ch);
    double t[REPS];
    for (int r = 0; r <= REPS; r++) {
        evict();
        uint64_t t0 = mf_now_ns();
        for (int hd = 0; hd < 2; hd++) {
            float *xm = map + (size_t)hd * ch * hw, *q = z + hd * ch;
            if (m2f) m->k32->m2f_attn(xm, ch, hw, q, C, T, scale, z + (size_t)2 * T * C + hd * ch, C, scr);
            else m->k32->f2m_attn(xm, ch, hw, q, q + (size_t)T * C, C, T, scale);
        }
        if (r) t[r - 1] = (mf_now_ns() - t0) * 1e-9;
    }
    qsort(t, REPS, sizeof t[0], cmp);
    const double madds = 2.0 * T * C * hw;
    tt->at_s += t[0];
    tt->at_madds += madds;
    if (verbose)
        printf("    %s %4d channels x %5d pixels: %8.1f us %6.1f GFLOP/s\n", m2f ? "m2f" : "f2m", C, hw, t[0] * 1e6,
               2 * madds / t[0] / 1e9);
}


static void add_pw(totals *tt, const mf_pw *p, int n, const float *x, float *y, void *scr)
{
    const double s = time_pw(p, x, n, y, scr), madds = (double)p->cout * p->cin / p->groups * n;
    tt->pw_s += s;
    tt->pw_madds += madds;
    if (verbose)
        printf("    1x1 %4d <- %4d (groups %d) x %5d columns: %8.1f us %6.1f GFLOP/s\n", p->cout, p->cin, p->groups, n,
               s * 1e6, 2 * madds / s / 1e9);
}

/* One depthwise over its whole map (rows 0 .. oh), with the dynamic ReLU of
 * blocks B and B3; into the packed bf16 input of its 1x1 (kg channels per
 * group of `to`) when the model's set has dw_packed, as forward.c runs it. */
static void add_dw(totals *tt, const mf_model *m, const mf_dw *d, const mf_pw *to, int h, int w, const float *x,
                   float *y, void *scr, const float *slopes)
{
    const int oh = conv_out(h, d->stride), ow = conv_out(w, d->stride);
    const mf_dw_rows g = {.x = x, .ldx = (size_t)h * w, .xr0 = 0, .h = h, .w = w, .oh = oh, .ow = ow, .oy0 = 0, .oy1 = oh};
    const mf_epi e = {.act = MF_ACT_DYRELU, .bias = d->bias, .dya = slopes, .dyb = slopes + d->cout};
    const int packed = m->k->dw_packed && m->k32 == &mf_kernels_avx512, kg = to->cin / to->groups;
    double t[REPS];
    for (int r = 0; r <= REPS; r++) {
        evict();
        uint64_t t0 = mf_now_ns();
        if (packed) m->k->dw_packed(d, 0, to->groups * ((kg + 1) / 2), &g, (uint16_t *)(void *)y, kg, &e, scr);
        else m->k32->dw(d, 0, d->cout, &g, y, (size_t)oh * ow, &e);
        if (r) t[r - 1] = (mf_now_ns() - t0) * 1e-9;
    }
    qsort(t, REPS, sizeof t[0], cmp);
    const double madds = 9.0 * d->cout * oh * ow;
    tt->dw_s += t[0];
    tt->dw_madds += madds;
    if (verbose)
        printf("    dw  %4d <- %4d stride %d %3dx%-3d%s: %8.1f us %6.1f GFLOP/s\n", d->cout, d->cin, d->stride, h, w,
               packed ? " (packed)" : "", t[0] * 1e6, 2 * madds / t[0] / 1e9);
}

int main(int argc, char **argv)
{
    const char *arch = argc > 1 ? argv[1] : "mobile_former_508m";
    const int size = argc > 2 ? atoi(argv[2]) : 224, imgs = argc > 3 ? atoi(argv[3]) : 1;
    const char *sets[] = {"avx512", "avx2", "portable", "avx512bf16", "amx", "avx2", "portable"};
    const mf_precision precs[] = {MF_PRECISION_FP32, MF_PRECISION_FP32, MF_PRECISION_FP32, MF_PRECISION_BF16,
                                  MF_PRECISION_BF16, MF_PRECISION_BF16, MF_PRECISION_BF16};
    mf_arch a;
    char err[256];
    if (size < 32 || imgs < 1 || mf_arch_parse(arch, &a, err, sizeof err) != MF_OK) {
        fprintf(stderr, "usage: gemm-bench [ARCH] [SIZE >= 32] [IMAGES >= 1]\n");
        return 2;
    }
    const size_t big = (size_t)16 << 20;
    float *x = mf_alloc(big * sizeof(float)), *y = mf_alloc(big * sizeof(float));
    if (!x || !y) return 1;
    mf_fill_uniform(x, big, 7, 0.0, 1.0);
    float *slopes = mf_alloc(2 * 4096 * sizeof(float)); /* dynamic ReLU's a and b, per channel */
    if (!slopes) return 1;
    mf_fill_uniform(slopes, 2 * 4096, 5, -1.0, 1.0);
    /* attention: a map and its tokens' q, k / v, o (values of the size a
     * network's maps and queries have; f2m adds to its map in place) */
    const size_t amap = (size_t)4 << 20, az_n = (size_t)3 * 64 * 4096;
    float *am = mf_alloc(amap * sizeof(float)), *az = mf_alloc(az_n * sizeof(float));
    if (!am || !az) return 1;
    mf_fill_uniform(am, amap, 11, -1.0, 1.0);
    mf_fill_uniform(az, az_n, 13, -0.2, 0.2);
    const char *v = getenv("MF_GEMM_LAYERS");
    verbose = v && *v && strcmp(v, "0") != 0;
    const char *cold = getenv("MF_GEMM_COLD");
    if (cold && *cold && strcmp(cold, "0") != 0) {
        evict_n = (size_t)16 << 20;
        evict_buf = mf_alloc(evict_n * sizeof(float));
        if (!evict_buf) return 1;
        mf_fill_uniform(evict_buf, evict_n, 3, 0.0, 1.0);
    }
    printf("%s at %dx%d, linears with the tokens of %d image(s)%s; per image:\n", a.name, size, size, imgs,
           evict_buf ? ", caches evicted before every call" : "");
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
        mf_model *m;
        mf_model_options o = {.precision = precs[si], .kernels = sets[si]};
        if (mf_model_synthetic_opts(&a, 1000, 1, &o, &m, err, sizeof err) != MF_OK) {
            printf("  %-14s SKIP: %s\n", sets[si], err);
            continue;
        }
        void *scr = mf_alloc(8u << 20);
        totals tt = {0};
        const size_t wb = m->precision == MF_PRECISION_BF16 ? 2 : 4;
        const int T = m->arch.tokens, R = T * imgs;
        int h = conv_out(size, 2), w = conv_out(size, 2);
        for (int i = 0; i < m->arch.n_blocks; i++) {
            const mf_block *b = &m->blocks[i];
            const int oh = conv_out(h, b->stride), ow = conv_out(w, b->stride);
            /* A and B3: both 1x1s after the strided depthwise; B: the first before it */
            const int n1 = b->type == MF_BLOCK_B ? h * w : oh * ow, n2 = oh * ow;
            /* A: dw1 -> pw1; B3: dw1 -> pw1, dw2 -> pw2; B: dw1 -> pw2 */
            add_dw(&tt, m, &b->dw1, b->type == MF_BLOCK_B ? &b->pw2 : &b->pw1, h, w, x, y, scr, slopes);
            if (b->type == MF_BLOCK_B3) add_dw(&tt, m, &b->dw2, &b->pw2, oh, ow, x, y, scr, slopes);
            add_pw(&tt, &b->pw1, n1, x, y, scr);
            if (b->pw2.k) add_pw(&tt, &b->pw2, n2, x, y, scr);
            if (b->type != MF_BLOCK_A) {
                add_attn(&tt, m, 1, b->cin, h * w, am, az, scr);
                add_attn(&tt, m, 0, b->cout, oh * ow, am, az, scr);
                const mf_lin *ls[] = {&b->m2f.q, &b->m2f.alpha, &b->m2f.proj, &b->former.q, &b->former.mlp,
                                      &b->former.ffn1, &b->former.ffn2, &b->f2m.k, &b->f2m.v, &b->hy1.l1, &b->hy2.l1};
                for (size_t j = 0; j < sizeof ls / sizeof ls[0]; j++) add_lin(&tt, ls[j], j < 9 ? R : imgs, x, y, scr, wb);
                for (int j = 0; j < imgs; j++) { /* l2: once per image, as forward.c runs it */
                    add_lin(&tt, &b->hy1.l2, 1, x, y, scr, wb);
                    add_lin(&tt, &b->hy2.l2, 1, x, y, scr, wb);
                }
            }
            h = oh;
            w = ow;
        }
        add_pw(&tt, &m->cls_pw, h * w, x, y, scr);
        if (verbose && m->k32->stem) { /* the stem: once per kernel set's fp32 layers */
            double ts[REPS];
            const int so = conv_out(size, 2);
            for (int r = 0; r <= REPS; r++) {
                evict();
                uint64_t t0 = mf_now_ns();
                m->k32->stem(am, size, size, m->stem_w, m->stem_b, m->arch.stem, y, so, so, 0, so);
                if (r) ts[r - 1] = (mf_now_ns() - t0) * 1e-9;
            }
            qsort(ts, REPS, sizeof ts[0], cmp);
            printf("    stem %d <- 3 at %dx%d: %8.1f us %6.1f GFLOP/s\n", m->arch.stem, size, size, ts[0] * 1e6,
                   2.0 * 27 * m->arch.stem * so * so / ts[0] / 1e9);
        }
        add_attn(&tt, m, 1, m->blocks[m->arch.n_blocks - 1].cout, h * w, am, az, scr);
        const mf_lin *top[] = {&m->final_m2f.q, &m->final_m2f.alpha, &m->final_m2f.proj};
        for (int j = 0; j < 3; j++) add_lin(&tt, top[j], R, x, y, scr, wb);
        add_lin(&tt, &m->fc, imgs, x, y, scr, wb);
        add_lin(&tt, &m->head, imgs, x, y, scr, wb);
        printf("  %-14s 1x1 convs %7.3f ms (%6.1f GFLOP/s)   linears %7.3f ms (%6.1f GFLOP/s, weights %5.1f GB/s)"
               "   depthwise %7.3f ms (%5.1f GFLOP/s)   attention %7.3f ms (%5.1f GFLOP/s)\n",
               mf_model_kernels(m), tt.pw_s * 1e3, 2 * tt.pw_madds / tt.pw_s / 1e9, tt.lin_s * 1e3 / imgs,
               2 * tt.lin_madds / tt.lin_s / 1e9, tt.lin_bytes / tt.lin_s / 1e9, tt.dw_s * 1e3,
               2 * tt.dw_madds / tt.dw_s / 1e9, tt.at_s * 1e3, 2 * tt.at_madds / tt.at_s / 1e9);
        mf_free(scr);
        mf_model_free(m);
    }
    mf_free(x);
    mf_free(y);
    mf_free(slopes);
    mf_free(am);
    mf_free(az);
    mf_free(evict_buf);
    return 0;
}
