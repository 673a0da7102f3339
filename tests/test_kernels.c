/* test_kernels.c -- every optimized kernel against its plain scalar twin on
 * random shapes, odd sizes included: 1x1 convolutions (dense, grouped,
 * shuffled output, every epilogue, in-place residual, K beyond one depth
 * block, columns beyond one packing pass), 3x3 depthwise (strides 1 and 2,
 * multipliers, folded shuffles, odd sizes), both attention bridges,
 * token-side linears, the direct stem, GELU, LayerNorm and the hard sigmoid.
 * The depthwise runs in bands of rows read from windows of its input, as
 * the forward pass runs it.
 * The GEMMs in both precisions: the fp32 sets against the fp32 twins, the
 * bf16 sets (portable, AVX512-BF16, AMX, each where the CPU has it; a
 * missing one is reported as SKIP with the feature it lacks) against the
 * bf16 twins, and the bf16 twins against fp32 within bf16's error.  The
 * scalar bf16 rounding against VCVTNE2PS2BF16, bit for bit.  Also the
 * folding of multiplier + shuffle into the depthwise index map against an
 * explicit shuffle of the reference convolution's output. */
#include "testutil.h"
#include "internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static uint64_t rng_state = 12345;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.f - 1.f;
}
static int irand(int lo, int hi) { return lo + (int)((frand() * 0.5f + 0.5f) * (float)(hi - lo + 1)) % (hi - lo + 1); }

static float *rvec(size_t n)
{
    float *v = mf_alloc(n * sizeof(float) + 64);
    for (size_t i = 0; i < n; i++) v[i] = frand();
    return v;
}

static const mf_kernels *kernel_sets[4], *bf16_sets[4];
static int n_sets, n_bf16;

static void setup(void)
{
    n_sets = n_bf16 = 0;
    kernel_sets[n_sets++] = &mf_kernels_blas;
    if (mf_cpu_has_avx2()) kernel_sets[n_sets++] = &mf_kernels_avx2;
    else printf("SKIP avx2 kernels: this CPU lacks AVX2 or FMA\n");
    if (mf_cpu_has_avx512()) kernel_sets[n_sets++] = &mf_kernels_avx512;
    else printf("SKIP avx512 kernels: this CPU lacks AVX-512\n");
    bf16_sets[n_bf16++] = &mf_kernels_blas_bf16;
    if (mf_cpu_has_avx2()) bf16_sets[n_bf16++] = &mf_kernels_avx2_bf16;
    else printf("SKIP avx2-bf16 kernels: this CPU lacks AVX2 or FMA\n");
    if (mf_cpu_has_avx512bf16()) bf16_sets[n_bf16++] = &mf_kernels_avx512_bf16;
    else printf("SKIP avx512-bf16 kernels: this CPU lacks AVX512-BF16\n");
    if (mf_cpu_has_amx_bf16()) bf16_sets[n_bf16++] = &mf_kernels_amx_bf16;
    else printf("SKIP amx-bf16 kernels: this CPU lacks AMX-BF16 (or the OS refused the tile permission)\n");
}

/* A kernel's scratch, with a guard after it that must survive the call. */
#define GUARD 256
static void *scratch_new(size_t bytes)
{
    unsigned char *p = mf_alloc(bytes + GUARD);
    memset(p + bytes, 0xA5, GUARD);
    return p;
}

static void scratch_check(void *s, size_t bytes, const char *what)
{
    const unsigned char *p = s;
    for (size_t i = 0; i < GUARD; i++) ck_assert_msg(p[bytes + i] == 0xA5, "%s: wrote past its scratch", what);
}

static void round_all(float *w, size_t n)
{
    for (size_t i = 0; i < n; i++) w[i] = mf_bf16_round(w[i]);
}

static double worst; /* largest error / tolerance seen by assert_close since the last report */

static void assert_close(const float *got, const float *want, size_t n, double tol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]), lim = tol * (1.0 + fabs(want[i]));
        ck_assert_msg(err <= lim, "%s: index %zu: %.7g vs reference %.7g", what, i, got[i], want[i]);
        if (err / lim > worst) worst = err / lim;
    }
}

/* One line per kernel family and set list: what ran, and how close it was. */
static void report(const char *what, const mf_kernels *const *sets, int nsets)
{
    printf("REPORT %s:", what);
    for (int s = 0; s < nsets; s++) printf(" %s", sets[s]->name);
    printf(" -- worst error %.3f of tolerance\n", worst);
    worst = 0;
}

/* Columns [c0, c1) of an n-column map through p, every group (outputs
 * shuffled when p says so), with the epilogue act / bias / dynamic ReLU
 * slopes (per output channel) and resmode's residual: 1 res, 2 y itself
 * (in place). */
static void pw_columns(const mf_pw *p, const float *x, int n, int c0, int c1, float *y, mf_act act,
                       const float *b, const float *dya, const float *dyb, int resmode, const float *res,
                       void *scr)
{
    const int G = p->groups, Mg = p->cout / G, Kg = p->cin / G;
    float *ga = malloc((size_t)Mg * sizeof(float)), *gb = malloc((size_t)Mg * sizeof(float));
    for (int g = 0; g < G; g++) {
        const size_t off = p->shuffle_out ? (size_t)g * n : (size_t)g * Mg * n;
        const size_t ld = p->shuffle_out ? (size_t)G * n : (size_t)n;
        mf_epi e = {.act = act, .bias = b + (size_t)g * Mg};
        if (act == MF_ACT_DYRELU) {
            for (int j = 0; j < Mg; j++) {
                size_t o = p->shuffle_out ? (size_t)j * G + g : (size_t)g * Mg + j;
                ga[j] = dya[o];
                gb[j] = dyb[o];
            }
            e.dya = ga;
            e.dyb = gb;
        }
        if (resmode == 1) { e.res = res + off + c0; e.ldr = ld; }
        if (resmode == 2) { e.res = y + off + c0; e.ldr = ld; }
        p->k->pw(p, g, x + (size_t)g * Kg * n + c0, (size_t)n, c1 - c0, y + off + c0, ld, &e, scr);
    }
    free(ga);
    free(gb);
}

/* Random 1x1 convolutions through sets[] against twin.  bf16: the weights
 * are rounded first, as model.c does for a bf16 set. */
static void pw_check(const mf_kernels *const *sets, int nsets, const mf_kernels *twin, int bf16)
{
    for (int trial = 0; trial < 70; trial++) {
        int G = (trial % 3 == 0) ? irand(2, 4) : 1;
        int M = G * irand(1, 40), K = G * irand(1, trial % 7 == 0 ? 300 : 50), n = irand(1, 200);
        if (trial % 10 == 9) { /* weights beyond L2: the kernel's row-block-outer order */
            G = 1;
            M = irand(300, 700);
            K = irand(200, 600);
            n = irand(1, 120);
        }
        if (trial % 10 == 4) { /* columns beyond one bf16 packing pass */
            G = 1;
            M = irand(1, 40);
            K = irand(300, 700);
            n = irand(150, 700);
        }
        if (trial % 10 == 6) { /* 1-15 columns past whole tiles, over many row blocks: the tails of the
                                  fp32 set (1-7 past 48) and of the avx512-bf16 set (1-8 rows-in-lanes,
                                  9-15 a masked block) */
            G = 1;
            M = irand(1, 80);
            if ((trial / 10) % 2) K = irand(130, 400); /* and over several passes in depth */
            n = 48 * irand(1, 4) + irand(1, (trial / 10) % 2 ? 15 : 7);
        }
        int shuffle = G > 1 && (trial & 1);
        mf_act act = (mf_act)(trial % 3);
        int resmode = trial % 4; /* 0 none, 1 separate, 2 in place (act none: internal.h) */
        if (resmode == 2 && act != MF_ACT_NONE) resmode = 1;
        if (resmode == 3) resmode = 0;
        float *w = rvec((size_t)M * (K / G)), *b = rvec((size_t)M), *x = rvec((size_t)K * n);
        float *dya = rvec((size_t)M), *dyb = rvec((size_t)M), *res = rvec((size_t)M * n);
        float *want = mf_alloc((size_t)M * n * sizeof(float)), *got = mf_alloc((size_t)M * n * sizeof(float));
        if (bf16) round_all(w, (size_t)M * (K / G));
        for (int s = 0; s < nsets; s++) {
            const mf_kernels *k = sets[s];
            mf_pw pr = {.k = twin, .cout = M, .cin = K, .groups = G, .shuffle_out = shuffle, .w = w, .bias = b};
            mf_pw pk = pr;
            pk.k = k;
            if (k->pw_pack) { /* the kernel set's own layout, as model.c packs it */
                int Mg = M / G, Kg = K / G;
                pk.wp_group = (k->pw_packed_bytes(Mg, Kg) + 63) & ~(size_t)63;
                pk.wp = mf_alloc(pk.wp_group * (size_t)G);
                for (int g = 0; g < G; g++) k->pw_pack(w + (size_t)g * Mg * Kg, Mg, Kg, (char *)pk.wp + pk.wp_group * g);
                pk.w = NULL;
            }
            const size_t sb = k->pw_scratch_bytes ? k->pw_scratch_bytes(K / G) : 0;
            void *scr = scratch_new(sb);
            const mf_pw *ps[2] = {&pr, &pk};
            float *outs[2] = {want, got};
            for (int v = 0; v < 2; v++) {
                if (resmode == 2) memcpy(outs[v], res, (size_t)M * n * sizeof(float));
                pw_columns(ps[v], x, n, 0, n, outs[v], act, b, dya, dyb, resmode, res, v ? scr : NULL);
            }
            char what[128];
            snprintf(what, sizeof what, "pw[%s] M=%d K=%d n=%d G=%d shuffle=%d act=%d res=%d", k->name, M, K, n, G,
                     shuffle, act, resmode);
            assert_close(got, want, (size_t)M * n, 2e-5, what);
            /* the columns in two calls give the same bits (the forward pass
             * runs a map's columns in bands): no sum of our own kernels
             * depends on the split (OpenBLAS's, the portable sets', may) */
            if (k->pw_pack && n > 1) {
                float *part = mf_alloc((size_t)M * n * sizeof(float));
                const int c0 = irand(1, n - 1);
                if (resmode == 2) memcpy(part, res, (size_t)M * n * sizeof(float));
                pw_columns(&pk, x, n, 0, c0, part, act, b, dya, dyb, resmode, res, scr);
                pw_columns(&pk, x, n, c0, n, part, act, b, dya, dyb, resmode, res, scr);
                ck_assert_msg(memcmp(part, got, (size_t)M * n * sizeof(float)) == 0, "%s: columns split at %d differ",
                              what, c0);
                mf_free(part);
            }
            scratch_check(scr, sb, what);
            mf_free(scr);
            if (pk.wp) mf_free(pk.wp);
        }
        mf_free(w); mf_free(b); mf_free(x); mf_free(dya); mf_free(dyb); mf_free(res); mf_free(want); mf_free(got);
    }
}

START_TEST(pw_random)
{
    pw_check(kernel_sets, n_sets, &mf_kernels_ref, 0);
    report("pw", kernel_sets, n_sets);
}
END_TEST

START_TEST(pw_random_bf16)
{
    pw_check(bf16_sets, n_bf16, &mf_kernels_ref_bf16, 1);
    report("pw bf16", bf16_sets, n_bf16);
}
END_TEST

/* The bf16 twin is bf16 arithmetic: against fp32 on the same (rounded)
 * weights it differs, by no more than the inputs' rounding allows
 * (8 significant bits: |x - bf16(x)| <= 2^-8 |x|, so |error| <= 2^-8 sum |w x|). */
START_TEST(bf16_twin_vs_fp32)
{
    int differ = 0;
    for (int trial = 0; trial < 20; trial++) {
        int M = irand(1, 30), K = irand(1, 200), n = irand(1, 100);
        float *w = rvec((size_t)M * K), *b = rvec((size_t)M), *x = rvec((size_t)K * n);
        float *y32 = mf_alloc((size_t)M * n * sizeof(float)), *y16 = mf_alloc((size_t)M * n * sizeof(float));
        round_all(w, (size_t)M * K);
        mf_pw p = {.cout = M, .cin = K, .groups = 1, .w = w, .bias = b};
        mf_epi e = {.act = MF_ACT_NONE, .bias = b};
        mf_kernels_ref.pw(&p, 0, x, (size_t)n, n, y32, (size_t)n, &e, NULL);
        mf_kernels_ref_bf16.pw(&p, 0, x, (size_t)n, n, y16, (size_t)n, &e, NULL);
        for (int j = 0; j < M; j++)
            for (int q = 0; q < n; q++) {
                double bound = 0;
                for (int k = 0; k < K; k++) bound += fabs((double)w[j * K + k] * x[(size_t)k * n + q]);
                double err = fabs((double)y16[j * n + q] - y32[j * n + q]);
                ck_assert_msg(err <= bound / 256 + 1e-6, "bf16 twin M=%d K=%d: error %g beyond %g", M, K, err, bound / 256);
                differ += err > 0;
            }
        mf_free(w); mf_free(b); mf_free(x); mf_free(y32); mf_free(y16);
    }
    ck_assert_msg(differ > 0, "the bf16 twin gave exactly the fp32 results: it does not round");
}
END_TEST

__attribute__((target("avx512f,avx512bf16"))) static void cvt_hw(const float *in, uint16_t *out)
{
    __m512 a = _mm512_loadu_ps(in), b = _mm512_loadu_ps(in + 16);
    _mm512_storeu_si512((void *)out, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

/* mf_bf16_bits (the weights, the portable and reference paths) against the
 * instruction the AVX512-BF16 and AMX sets round their inputs with: zeros,
 * denormals, ties both ways, the largest finite values, infinities, NaNs,
 * and random bit patterns. */
START_TEST(bf16_rounding)
{
    const uint32_t special[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x00800000u, 0x3f808000u,
                                0x3f818000u, 0x3f80ffffu, 0x3f807fffu, 0x7f7fffffu, 0xff7f8000u, 0x7f800000u,
                                0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffbfffffu, 0x3f800000u, 0xc0490fdbu};
    const int ns = (int)(sizeof special / sizeof special[0]);
    ck_assert_uint_eq(mf_bf16_bits(1.0f), 0x3f80);
    ck_assert_uint_eq(mf_bf16_bits(1e-40f), 0x0000);     /* denormal -> zero */
    ck_assert(mf_bf16_round(1.00390625f) == 1.0f);       /* tie (1 + 2^-8) to even: down */
    ck_assert(mf_bf16_round(1.01171875f) == 1.015625f);  /* tie (1 + 3 * 2^-8) to even: up */
    if (!mf_cpu_has_avx512bf16()) {
        printf("SKIP bf16 rounding against VCVTNE2PS2BF16: this CPU lacks AVX512-BF16\n");
        return;
    }
    uint64_t st = 99;
    for (int round = 0; round < 20000; round++) {
        float in[32];
        uint16_t hw[32];
        for (int i = 0; i < 32; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t u = round == 0 && i < ns ? special[i] : (uint32_t)(st >> 32);
            if (round % 3 == 1) u = (u & 0xffff0000u) | 0x8000u; /* exact ties */
            memcpy(&in[i], &u, 4);
        }
        cvt_hw(in, hw);
        for (int i = 0; i < 32; i++) {
            uint32_t u;
            memcpy(&u, &in[i], 4);
            ck_assert_msg(mf_bf16_bits(in[i]) == hw[i], "bf16 of 0x%08x: scalar 0x%04x, VCVTNE2PS2BF16 0x%04x", u,
                          mf_bf16_bits(in[i]), hw[i]);
        }
    }
}
END_TEST

/* The rows [oy0, oy1) of a depthwise's output read input rows [*lo, *hi). */
static void dw_in_rows(int s, int h, int oy0, int oy1, int *lo, int *hi)
{
    *lo = oy0 * s - 1 < 0 ? 0 : oy0 * s - 1;
    *hi = (oy1 - 1) * s + 2 > h ? h : (oy1 - 1) * s + 2;
}

/* Input rows [lo, hi) of every channel copied into a window whose channels
 * are ld >= (hi - lo) * w floats apart, NaN everywhere else: a kernel that
 * read a row outside the window would show it. */
static float *dw_window(const float *x, int cin, int h, int w, int lo, int hi, size_t ld)
{
    float *win = mf_alloc(((size_t)cin * ld + 32) * sizeof(float));
    for (size_t i = 0; i < (size_t)cin * ld + 32; i++) win[i] = NAN;
    for (int c = 0; c < cin; c++) memcpy(win + c * ld, x + ((size_t)c * h + lo) * w, (size_t)(hi - lo) * w * sizeof(float));
    (void)h;
    return win;
}

/* Every set's depthwise (the reference twin included) in random bands of
 * output rows, each read from a window holding only the input rows it
 * needs and written with a channel stride of its own, and in two channel
 * ranges, against the reference on the whole map. */
START_TEST(dw_random)
{
    const mf_kernels *sets[5] = {&mf_kernels_ref};
    const int nsets = 1 + n_sets;
    for (int i = 0; i < n_sets; i++) sets[1 + i] = kernel_sets[i];
    for (int trial = 0; trial < 80; trial++) {
        int cin = irand(1, 9), e = irand(1, 4), cout = cin * e, s = 1 + (trial & 1);
        int h = irand(1, 40), w = irand(1, 70);
        if (trial % 5 == 0) { h = irand(1, 3); w = irand(1, 3); }
        /* the avx512 kernels' own limits: narrow and tall maps (a row per
         * vector, two channels' rows in one up to 7 wide), maps of several
         * vectors a row (strided: many), very wide ones, and more output
         * channels than the strided kernel orders by input at once (1024;
         * shuffled, their inputs spread wider than it buckets) */
        int shuffled = trial % 3 == 0;
        /* (these trials are all odd or all even: their stride alternates by tens) */
        if (trial % 10 == 3) { s = 1 + (trial / 10) % 2; h = irand(70, 160); w = irand(4, 16); }
        if (trial % 10 == 7) { s = 1 + (trial / 10) % 2; h = irand(40, 90); w = s == 2 ? irand(150, 260) : irand(16, 40); }
        if (trial % 20 == 9) { s = 1 + (trial / 20) % 2; h = irand(1, 6); w = irand(2040, 2100); }
        if (trial % 10 == 1) { s = 1; h = irand(1, 30); w = 7 + (trial / 10) % 2; } /* the 7x7 maps, and 8 */
        if (trial % 20 == 12) { /* shuffled: inputs within 1024 (bucketed) or not (kept in order) */
            cin = (trial / 20) % 2 ? irand(1030, 1100) : irand(300, 900);
            e = 3;
            cout = cin * e;
            s = 2;
            shuffled = 1;
            h = irand(1, 12);
            w = irand(1, 12);
        }
        int oh = (h - 1) / s + 1, ow = (w - 1) / s + 1;
        mf_act act = (mf_act)(trial % 3);
        float *k = rvec((size_t)cout * 9), *b = rvec((size_t)cout), *x = rvec((size_t)cin * h * w);
        float *dya = rvec((size_t)cout), *dyb = rvec((size_t)cout);
        int *src = malloc((size_t)cout * sizeof(int));
        for (int q = 0; q < cout; q++) src[q] = shuffled ? q % cin : q / e; /* shuffled or plain */
        mf_dw d = {.cout = cout, .cin = cin, .stride = s, .w = k, .bias = b, .src = src};
        mf_epi ep = {.act = act, .bias = b, .dya = dya, .dyb = dyb};
        size_t n = (size_t)cout * oh * ow;
        float *want = mf_alloc(n * sizeof(float)), *got = mf_alloc((n + (size_t)cout * (10 * ow + 8)) * sizeof(float));
        const mf_dw_rows whole = {.x = x, .ldx = (size_t)h * w, .xr0 = 0, .h = h, .w = w, .oh = oh, .ow = ow,
                                  .oy0 = 0, .oy1 = oh};
        float *own = mf_alloc(n * sizeof(float));
        mf_kernels_ref.dw(&d, 0, cout, &whole, want, (size_t)oh * ow, &ep);
        for (int si = 0; si < nsets; si++) {
            sets[si]->dw(&d, 0, cout, &whole, own, (size_t)oh * ow, &ep);
            for (int oy0 = 0; oy0 < oh;) {
                const int step = irand(1, oh > 40 ? 60 : 9), oy1 = oy0 + step < oh ? oy0 + step : oh, rows = oy1 - oy0;
                int lo, hi;
                dw_in_rows(s, h, oy0, oy1, &lo, &hi);
                const size_t ldx = (size_t)(hi - lo) * w + (size_t)irand(0, 5), ldy = (size_t)rows * ow + (size_t)irand(0, 7);
                float *win = dw_window(x, cin, h, w, lo, hi, ldx);
                const mf_dw_rows g = {.x = win, .ldx = ldx, .xr0 = lo, .h = h, .w = w, .oh = oh, .ow = ow,
                                      .oy0 = oy0, .oy1 = oy1};
                /* in two channel ranges, as a split between threads would */
                sets[si]->dw(&d, 0, cout / 2, &g, got, ldy, &ep);
                sets[si]->dw(&d, cout / 2, cout, &g, got, ldy, &ep);
                char what[128];
                snprintf(what, sizeof what, "dw[%s] c=%d e=%d s=%d %dx%d act=%d rows %d-%d", sets[si]->name, cin, e, s,
                         h, w, act, oy0, oy1);
                for (int q = 0; q < cout; q++) {
                    assert_close(got + q * ldy, want + ((size_t)q * oh + oy0) * ow, (size_t)rows * ow, 1e-5, what);
                    /* and the bits of the set's own whole-map result: banding changes no sum */
                    ck_assert_msg(memcmp(got + q * ldy, own + ((size_t)q * oh + oy0) * ow, (size_t)rows * ow * 4) == 0,
                                  "%s: channel %d differs from the whole map's", what, q);
                }
                mf_free(win);
                oy0 = oy1;
            }
        }
        free(src);
        mf_free(k); mf_free(b); mf_free(x); mf_free(dya); mf_free(dyb); mf_free(want); mf_free(got); mf_free(own);
    }
}
END_TEST

/* The depthwise that writes the next 1x1's packed bf16 input (dw_packed)
 * against the fp32 depthwise rounded to bf16, bit for bit, lanes past the
 * map and the odd half of an odd kg's last pair zero, the padding pairs up
 * to the layout's 32-multiple zero where the set says it writes them
 * (dw_packed_pads) and left alone otherwise; then that 1x1 on the packed
 * input (pw_packed) against the same 1x1 packing the fp32 map itself, bit
 * for bit (the padding still NaN where dw_packed left it: a pw_packed that
 * read it would differ). */
START_TEST(dw_pw_packed)
{
    int ran = 0;
    for (int si = 0; si < n_bf16; si++) {
        const mf_kernels *k = bf16_sets[si];
        if (!k->dw_packed) continue;
        ran++;
        for (int trial = 0; trial < 24; trial++) {
            const int G = 1 + trial % 3, kg = irand(1, 40), cout = G * kg, e = 1 + trial % 2, cin = (cout + e - 1) / e;
            const int s = 1 + (trial / 3) % 2, h = irand(1, 40), w = irand(1, 50), oh = (h - 1) / s + 1,
                      ow = (w - 1) / s + 1, n = oh * ow, M = G * irand(1, 20);
            float *kw = rvec((size_t)cout * 9), *b = rvec((size_t)cout), *x = rvec((size_t)cin * h * w);
            float *dya = rvec((size_t)cout), *dyb = rvec((size_t)cout);
            int *src = malloc((size_t)cout * sizeof(int));
            for (int q = 0; q < cout; q++) src[q] = q / e < cin ? q / e : cin - 1;
            mf_dw d = {.cout = cout, .cin = cin, .stride = s, .w = kw, .bias = b, .src = src};
            mf_epi ep = {.act = (mf_act)(trial % 3), .bias = b, .dya = dya, .dyb = dyb};
            float *yf = mf_alloc((size_t)cout * n * sizeof(float));
            const mf_dw_rows whole = {.x = x, .ldx = (size_t)h * w, .xr0 = 0, .h = h, .w = w, .oh = oh, .ow = ow,
                                      .oy0 = 0, .oy1 = oh};
            mf_kernels_avx512.dw(&d, 0, cout, &whole, yf, (size_t)n, &ep);
            const size_t pb = k->packed_map_bytes(G, kg, n);
            uint16_t *yp = mf_alloc(pb);
            memset(yp, 0xFF, pb); /* NaN everywhere: what is not written shows */
            float *scr = mf_alloc(mf_dw_packed_scratch((size_t)n) * sizeof(float));
            const int slots = G * ((kg + 1) / 2), mid = slots / 2;
            k->dw_packed(&d, 0, mid, &whole, yp, kg, &ep, scr); /* in two ranges, as a team would */
            k->dw_packed(&d, mid, slots, &whole, yp, kg, &ep, scr);
            const int NB = (n + 15) / 16, KP = (kg + 31) / 32 * 16;
            for (int g = 0; g < G; g++)
                for (int nb = 0; nb < NB; nb++)
                    for (int kp = 0; kp < KP; kp++)
                        for (int j = 0; j < 16; j++)
                            for (int hf = 0; hf < 2; hf++) {
                                const int kk = 2 * kp + hf, p = 16 * nb + j;
                                const uint16_t got = yp[((((size_t)g * NB + nb) * KP + kp) * 16 + j) * 2 + hf];
                                const uint16_t want = kp >= (kg + 1) / 2 && !k->dw_packed_pads ? 0xFFFF
                                                      : kk < kg && p < n ? mf_bf16_bits(yf[(size_t)(g * kg + kk) * n + p])
                                                                         : 0;
                                ck_assert_msg(got == want, "dw_packed[%s] G=%d kg=%d %dx%d s=%d: group %d channel %d "
                                              "pixel %d: 0x%04x, want 0x%04x", k->name, G, kg, h, w, s, g, kk, p, got, want);
                            }
            /* a band of rows from a window of the input: the same bits as those rows of the whole */
            {
                const int oy0 = irand(0, oh - 1), oy1 = oy0 + irand(1, oh - oy0), nb = (oy1 - oy0) * ow;
                int lo, hi;
                dw_in_rows(s, h, oy0, oy1, &lo, &hi);
                float *win = dw_window(x, cin, h, w, lo, hi, (size_t)(hi - lo) * w + 3);
                const mf_dw_rows g = {.x = win, .ldx = (size_t)(hi - lo) * w + 3, .xr0 = lo, .h = h, .w = w,
                                      .oh = oh, .ow = ow, .oy0 = oy0, .oy1 = oy1};
                const size_t pbb = k->packed_map_bytes(G, kg, nb);
                uint16_t *ypb = mf_alloc(pbb);
                memset(ypb, 0xFF, pbb);
                k->dw_packed(&d, 0, slots, &g, ypb, kg, &ep, scr);
                const int NBb = (nb + 15) / 16;
                for (int gi = 0; gi < G; gi++)
                    for (int kk = 0; kk < KP * 2; kk++)
                        for (int p = 0; p < NBb * 16; p++) {
                            const uint16_t got = ypb[((((size_t)gi * NBb + p / 16) * KP + kk / 2) * 16 + p % 16) * 2 + kk % 2];
                            const uint16_t want =
                                kk / 2 >= (kg + 1) / 2 && !k->dw_packed_pads ? 0xFFFF
                                : kk < kg && p < nb ? mf_bf16_bits(yf[(size_t)(gi * kg + kk) * n + (size_t)oy0 * ow + p])
                                                    : 0;
                            ck_assert_msg(got == want, "dw_packed[%s] rows %d-%d of %dx%d s=%d: 0x%04x, want 0x%04x",
                                          k->name, oy0, oy1, h, w, s, got, want);
                        }
                mf_free(ypb);
                mf_free(win);
            }
            /* the 1x1 reading it */
            float *wt = rvec((size_t)M * kg), *pbias = rvec((size_t)M);
            round_all(wt, (size_t)M * kg);
            mf_pw pw = {.k = k, .cout = M, .cin = cout, .groups = G, .bias = pbias};
            pw.wp_group = (k->pw_packed_bytes(M / G, kg) + 63) & ~(size_t)63;
            pw.wp = mf_alloc(pw.wp_group * (size_t)G);
            for (int g = 0; g < G; g++) k->pw_pack(wt + (size_t)g * (M / G) * kg, M / G, kg, (char *)pw.wp + pw.wp_group * g);
            float *y1 = mf_alloc((size_t)M * n * sizeof(float)), *y2 = mf_alloc((size_t)M * n * sizeof(float));
            void *ps = mf_alloc(k->pw_scratch_bytes(kg));
            float *pdya = rvec((size_t)M), *pdyb = rvec((size_t)M), *pres = rvec((size_t)M * n);
            const mf_act pact = (mf_act)((trial / 2) % 3); /* every epilogue, with and without a residual */
            for (int g = 0; g < G; g++) {
                const size_t ro = (size_t)g * (M / G), yo = ro * n;
                mf_epi pe = {.act = pact, .bias = pbias + ro, .dya = pdya + ro, .dyb = pdyb + ro,
                             .res = trial % 2 ? pres + yo : NULL, .ldr = (size_t)n};
                k->pw(&pw, g, yf + (size_t)g * kg * n, (size_t)n, n, y1 + yo, (size_t)n, &pe, ps);
                const uint16_t *xg = yp + pb / 2 / G * g;
                const int c16 = n > 16 ? 16 * ((n / 16) / 2) : 0; /* two column ranges */
                if (c16) k->pw_packed(&pw, g, xg, n, 0, c16, y2 + yo, (size_t)n, &pe, ps);
                if (pe.res) pe.res += c16;
                k->pw_packed(&pw, g, xg, n, c16, n - c16, y2 + yo + c16, (size_t)n, &pe, ps);
            }
            ck_assert_msg(memcmp(y1, y2, (size_t)M * n * sizeof(float)) == 0, "pw_packed[%s] differs from pw (act %d, res %d)",
                          k->name, pact, trial % 2);
            mf_free(pdya); mf_free(pdyb); mf_free(pres);
            mf_free(ps); mf_free(y1); mf_free(y2); mf_free(wt); mf_free(pbias); mf_free(pw.wp);
            free(src);
            mf_free(kw); mf_free(b); mf_free(x); mf_free(dya); mf_free(dyb); mf_free(yf); mf_free(yp); mf_free(scr);
        }
    }
    if (!ran) printf("SKIP dw_packed/pw_packed: no bf16 set of this CPU has them (they need AVX512-BF16)\n");
}
END_TEST

/* Depthwise with multiplier e followed by shuffle(cin), computed plainly,
 * equals the folded index map of model.c: out q = j*cin + i reads input i
 * with the weights of pre-shuffle channel i*e + j. */
START_TEST(dw_shuffle_fold)
{
    int cin = 6, e = 3, h = 9, w = 11, cout = cin * e;
    float *k = rvec((size_t)cout * 9), *b = rvec((size_t)cout), *x = rvec((size_t)cin * h * w);
    int *plain = malloc((size_t)cout * sizeof(int)), *fold = malloc((size_t)cout * sizeof(int));
    float *kf = malloc((size_t)cout * 9 * sizeof(float)), *bf = malloc((size_t)cout * sizeof(float));
    for (int q = 0; q < cout; q++) {
        plain[q] = q / e;
        int pre = (q % cin) * e + q / cin;
        fold[q] = pre / e;
        memcpy(kf + q * 9, k + pre * 9, 9 * sizeof(float));
        bf[q] = b[pre];
    }
    mf_dw dp = {.cout = cout, .cin = cin, .stride = 1, .w = k, .bias = b, .src = plain};
    mf_dw df = {.cout = cout, .cin = cin, .stride = 1, .w = kf, .bias = bf, .src = fold};
    mf_epi ep = {.act = MF_ACT_NONE, .bias = b}, ef = {.act = MF_ACT_NONE, .bias = bf};
    size_t plane = (size_t)h * w;
    float *y = malloc((size_t)cout * plane * sizeof(float)), *yf = malloc((size_t)cout * plane * sizeof(float));
    const mf_dw_rows g = {.x = x, .ldx = (size_t)h * w, .xr0 = 0, .h = h, .w = w, .oh = h, .ow = w, .oy0 = 0, .oy1 = h};
    mf_kernels_ref.dw(&dp, 0, cout, &g, y, (size_t)h * w, &ep);
    mf_kernels_ref.dw(&df, 0, cout, &g, yf, (size_t)h * w, &ef);
    /* explicit shuffle(g = cin): output channel j*g + i takes input i*(C/g) + j */
    for (int i = 0; i < cin; i++)
        for (int j = 0; j < e; j++)
            for (size_t p = 0; p < plane; p++)
                ck_assert_float_eq(yf[(size_t)(j * cin + i) * plane + p], y[(size_t)(i * e + j) * plane + p]);
    free(plain); free(fold); free(kf); free(bf); free(y); free(yf);
    mf_free(k); mf_free(b); mf_free(x);
}
END_TEST

START_TEST(attention_random)
{
    for (int trial = 0; trial < 40; trial++) {
        int t = irand(1, trial % 5 == 0 ? 20 : 7), ch = irand(1, 70), hw = irand(1, 300);
        int ld = ch + irand(0, 5);
        float scale = 1.0f / sqrtf((float)ch);
        float *x = rvec((size_t)ch * hw), *q = rvec((size_t)t * ld), *v = rvec((size_t)t * ld);
        float *sc = mf_alloc((size_t)t * hw * sizeof(float));
        float *want = mf_alloc((size_t)t * ld * sizeof(float)), *got = mf_alloc((size_t)t * ld * sizeof(float));
        float *y0 = mf_alloc((size_t)ch * hw * sizeof(float)), *y1 = mf_alloc((size_t)ch * hw * sizeof(float));
        for (int s = 0; s < n_sets; s++) {
            char what[128];
            snprintf(what, sizeof what, "m2f[%s] t=%d ch=%d hw=%d", kernel_sets[s]->name, t, ch, hw);
            mf_kernels_ref.m2f_attn(x, ch, hw, q, ld, t, scale, want, ld, sc);
            kernel_sets[s]->m2f_attn(x, ch, hw, q, ld, t, scale, got, ld, sc);
            for (int i = 0; i < t; i++) assert_close(got + (size_t)i * ld, want + (size_t)i * ld, (size_t)ch, 2e-5, what);
            memcpy(y0, x, (size_t)ch * hw * sizeof(float));
            memcpy(y1, x, (size_t)ch * hw * sizeof(float));
            mf_kernels_ref.f2m_attn(y0, ch, hw, q, v, ld, t, scale);
            kernel_sets[s]->f2m_attn(y1, ch, hw, q, v, ld, t, scale);
            snprintf(what, sizeof what, "f2m[%s] t=%d ch=%d hw=%d", kernel_sets[s]->name, t, ch, hw);
            assert_close(y1, y0, (size_t)ch * hw, 2e-5, what);
        }
        mf_free(x); mf_free(q); mf_free(v); mf_free(sc); mf_free(want); mf_free(got); mf_free(y0); mf_free(y1);
    }
}
END_TEST

static void linear_check(const mf_kernels *const *sets, int nsets, const mf_kernels *twin, int bf16)
{
    for (int trial = 0; trial < 40; trial++) {
        int rows = irand(1, trial % 4 == 3 ? 60 : 20), in = irand(1, 300), out = irand(1, 200);
        mf_lin l = {.k = twin, .out = out, .in = in, .wt = rvec((size_t)in * out), .b = rvec((size_t)out),
                    .stream = trial & 1};
        float *x = rvec((size_t)rows * in);
        float *want = mf_alloc((size_t)rows * out * sizeof(float)), *got = mf_alloc((size_t)rows * out * sizeof(float));
        if (bf16) round_all(l.wt, (size_t)in * out);
        twin->linear(&l, x, rows, want, 0, out, NULL);
        for (int s = 0; s < nsets; s++) {
            mf_lin lk = l;
            lk.k = sets[s];
            if (sets[s]->lin_pack) {
                lk.wp = mf_alloc(sets[s]->lin_packed_bytes(in, out));
                sets[s]->lin_pack(l.wt, in, out, lk.wp);
            }
            const size_t sb = sets[s]->lin_scratch_bytes ? sets[s]->lin_scratch_bytes(in) : 0;
            void *scr = scratch_new(sb);
            /* in two column ranges (split at a multiple of 48), as a team would */
            int mid = out > 48 ? 48 * ((out / 48 + 1) / 2) : out;
            if (mid > out) mid = out;
            sets[s]->linear(&lk, x, rows, got, 0, mid, scr);
            if (mid < out) sets[s]->linear(&lk, x, rows, got, mid, out, scr);
            char what[128];
            snprintf(what, sizeof what, "linear[%s] rows=%d in=%d out=%d", sets[s]->name, rows, in, out);
            assert_close(got, want, (size_t)rows * out, 2e-5, what);
            scratch_check(scr, sb, what);
            mf_free(scr);
            if (lk.wp) mf_free(lk.wp);
        }
        mf_free(l.wt); mf_free(l.b); mf_free(x); mf_free(want); mf_free(got);
    }
}

START_TEST(linear_random)
{
    linear_check(kernel_sets, n_sets, &mf_kernels_ref, 0);
    report("linear", kernel_sets, n_sets);
}
END_TEST

START_TEST(linear_random_bf16)
{
    linear_check(bf16_sets, n_bf16, &mf_kernels_ref_bf16, 1);
    report("linear bf16", bf16_sets, n_bf16);
}
END_TEST

/* Token-side LayerNorm (eps 1e-5, biased variance) and hard sigmoid against
 * plain double-precision formulas. */
START_TEST(layernorm_and_activations)
{
    for (int trial = 0; trial < 20; trial++) {
        int rows = irand(1, 12), d = irand(1, 400);
        float *x = rvec((size_t)rows * d), *g = rvec((size_t)d), *b = rvec((size_t)d);
        float *y = mf_alloc((size_t)rows * d * sizeof(float));
        for (size_t i = 0; i < (size_t)rows * d; i++) x[i] = x[i] * 3.f + (float)(trial % 5);
        memcpy(y, x, (size_t)rows * d * sizeof(float));
        mf_norm n = {g, b};
        mf_layernorm(y, rows, d, &n);
        for (int r = 0; r < rows; r++) {
            double mean = 0, var = 0;
            for (int i = 0; i < d; i++) mean += x[r * d + i];
            mean /= d;
            for (int i = 0; i < d; i++) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
            var /= d;
            for (int i = 0; i < d; i++) {
                double want = (x[r * d + i] - mean) / sqrt(var + 1e-5) * g[i] + b[i];
                ck_assert_msg(fabs(y[r * d + i] - want) <= 1e-5 * (1 + fabs(want)), "layernorm row %d col %d: %g vs %g",
                              r, i, y[r * d + i], want);
            }
        }
        mf_free(x); mf_free(g); mf_free(b); mf_free(y);
    }
    const float pts[] = {-10.f, -3.f, -2.5f, 0.f, 1.f, 2.999f, 3.f, 7.f};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        double v = pts[i] + 3.0, want = (v < 0 ? 0 : v > 6 ? 6 : v) / 6.0;
        ck_assert_msg(fabs(mf_hsig(pts[i]) - want) < 1e-7, "hsig(%g)", pts[i]);
    }
}
END_TEST

/* GELU of every set against the erff twin: random values across the range
 * that matters, the tails and zeros. */
START_TEST(gelu_random)
{
    const size_t n = 4099;
    float *x = rvec(n), *want = mf_alloc(n * sizeof(float)), *got = mf_alloc(n * sizeof(float));
    const float special[] = {0.f, -0.f, 1e-30f, -1e-30f, 1e-6f, -1e-6f, 3.f, -3.f, 8.f, -8.f, 12.7f, -12.7f, 40.f, -40.f};
    for (size_t i = 0; i < n; i++) x[i] *= 14.f;
    memcpy(x, special, sizeof special);
    memcpy(want, x, n * sizeof(float));
    mf_kernels_ref.gelu(want, n);
    for (int s = 0; s < n_sets; s++) {
        memcpy(got, x, n * sizeof(float));
        kernel_sets[s]->gelu(got, n - s); /* odd lengths: the tail */
        for (size_t i = n - s; i < n; i++) { /* past the length: untouched */
            ck_assert_msg(memcmp(&got[i], &x[i], sizeof x[i]) == 0, "gelu[%s] wrote past n", kernel_sets[s]->name);
            got[i] = want[i];
        }
        char what[64];
        snprintf(what, sizeof what, "gelu[%s]", kernel_sets[s]->name);
        assert_close(got, want, n, 1e-6, what);
    }
    mf_free(x); mf_free(want); mf_free(got);
}
END_TEST

/* The direct stem kernels (each set that has one) against a plain 3x3
 * stride-2 convolution. */
START_TEST(stem_random)
{
    if (!mf_cpu_has_avx512()) printf("SKIP stem[avx512]: this CPU lacks AVX-512\n");
    if (!mf_cpu_has_avx2()) printf("SKIP stem[avx2]: this CPU lacks AVX2 or FMA\n");
    const mf_kernels *ran[4];
    int nran = 0;
    for (int s = 0; s < n_sets; s++) {
        const mf_kernels *ks = kernel_sets[s];
        if (!ks->stem) continue;
        ran[nran++] = ks;
        for (int trial = 0; trial < 30; trial++) {
            int c = irand(1, 27), h = irand(1, 70), w = irand(1, 90);
            int oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
            float *x = rvec((size_t)3 * h * w), *k = rvec((size_t)c * 27), *b = rvec((size_t)c);
            float *want = mf_alloc((size_t)c * oh * ow * sizeof(float)), *got = mf_alloc((size_t)c * oh * ow * sizeof(float));
            for (int o = 0; o < c; o++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        double acc = b[o];
                        for (int ch = 0; ch < 3; ch++)
                            for (int ky = 0; ky < 3; ky++)
                                for (int kx = 0; kx < 3; kx++) {
                                    int iy = 2 * oy + ky - 1, ix = 2 * ox + kx - 1;
                                    if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                        acc += (double)k[o * 27 + ch * 9 + ky * 3 + kx] * x[((size_t)ch * h + iy) * w + ix];
                                }
                        want[((size_t)o * oh + oy) * ow + ox] = acc < 0 ? 0.f : acc > 6 ? 6.f : (float)acc;
                    }
            /* in two row ranges, as a team would */
            ks->stem(x, h, w, k, b, c, got, oh, ow, 0, oh / 2);
            ks->stem(x, h, w, k, b, c, got, oh, ow, oh / 2, oh);
            char what[96];
            snprintf(what, sizeof what, "stem[%s] c=%d %dx%d", ks->name, c, h, w);
            assert_close(got, want, (size_t)c * oh * ow, 1e-5, what);
            mf_free(x); mf_free(k); mf_free(b); mf_free(want); mf_free(got);
        }
    }
    report("stem", ran, nran);
}
END_TEST

int main(void)
{
    setup();
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, pw_random);
    tcase_add_test(tc, pw_random_bf16);
    tcase_add_test(tc, bf16_twin_vs_fp32);
    tcase_add_test(tc, bf16_rounding);
    tcase_add_test(tc, dw_random);
    tcase_add_test(tc, dw_shuffle_fold);
    tcase_add_test(tc, dw_pw_packed);
    tcase_add_test(tc, attention_random);
    tcase_add_test(tc, linear_random);
    tcase_add_test(tc, linear_random_bf16);
    tcase_add_test(tc, stem_random);
    tcase_add_test(tc, gelu_random);
    tcase_add_test(tc, layernorm_and_activations);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
