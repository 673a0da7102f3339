/* test_precision.c -- the precision API of mf.h and the choice of kernel
 * sets: names and parsing, options (NULL = fp32), every MF_KERNELS value in
 * both precisions (a path this CPU lacks must fail with a message naming
 * the missing feature, and that branch is what runs on such a CPU), an
 * unknown value, mf_model_options.kernels over the environment, fp32 and
 * bf16 models side by side in one process (bf16 within its bar of the fp32
 * logits, smaller weights), team and shares passes of a bf16 model against
 * one thread, and a bf16 model loaded from a file and from a buffer. */
#include "testutil.h"
#include "internal.h"
#include "mf_synthetic.h"

#include <math.h>
#include <string.h>

START_TEST(names_and_parse)
{
    mf_precision p = MF_PRECISION_BF16;
    ck_assert_str_eq(mf_precision_name(MF_PRECISION_FP32), "fp32");
    ck_assert_str_eq(mf_precision_name(MF_PRECISION_BF16), "bf16");
    ck_assert_str_eq(mf_precision_name((mf_precision)7), "?");
    ck_assert_int_eq(mf_precision_parse("fp32", &p), 0);
    ck_assert_int_eq(p, MF_PRECISION_FP32);
    ck_assert_int_eq(mf_precision_parse("bf16", &p), 0);
    ck_assert_int_eq(p, MF_PRECISION_BF16);
    const char *bad[] = {"", "FP32", "bf16 ", "fp16", "float32", "b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = MF_PRECISION_BF16;
        ck_assert_int_eq(mf_precision_parse(bad[i], &p), -1);
        ck_assert_int_eq(p, MF_PRECISION_BF16); /* untouched */
    }
    ck_assert_int_eq(mf_precision_parse(NULL, &p), -1);
}
END_TEST

/* A 26m model with precision p and forced kernels (NULL: $MF_KERNELS). */
static mf_status make(mf_precision p, const char *kernels, mf_model **m, char *err, size_t errlen)
{
    mf_arch a;
    ck_assert_int_eq(mf_arch_preset("26m", &a), MF_OK);
    const mf_model_options o = {.precision = p, .kernels = kernels};
    return mf_model_synthetic_opts(&a, 10, 3, &o, m, err, errlen);
}

typedef struct expect {
    const char *force;
    const char *fp32, *bf16; /* sets, or NULL where `lacks` is missing */
    int (*has)(void);        /* the CPU check of the bf16 path (NULL: always runs) */
    const char *lacks;       /* the feature the error must name */
} expect;

START_TEST(kernel_choice)
{
    const char *best32 = mf_cpu_has_avx512() ? "avx512" : mf_cpu_has_avx2() ? "avx2" : "portable";
    const expect ex[] = {
        {"reference", "reference", "reference-bf16", NULL, NULL},
        {"portable", "portable", "portable-bf16", NULL, NULL},
        {"auto", best32,
         mf_cpu_has_amx_bf16()      ? "amx-bf16"
         : mf_cpu_has_avx512bf16() ? "avx512-bf16"
         : mf_cpu_has_avx2()       ? "avx2-bf16"
                                   : "portable-bf16",
         NULL, NULL},
        {"avx2", "avx2", "avx2-bf16", NULL, NULL},
        {"avx512", "avx512", "avx512-bf16", mf_cpu_has_avx512bf16, "AVX512-BF16"},
        {"avx512bf16", "avx512", "avx512-bf16", mf_cpu_has_avx512bf16, "AVX512-BF16"},
        {"amx", "avx512", "amx-bf16", mf_cpu_has_amx_bf16, "AMX-BF16"},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        for (int p = 0; p < 2; p++) {
            mf_model *m = NULL;
            char err[256] = "";
            const int needs_avx = !strcmp(ex[i].force, "avx512") || !strcmp(ex[i].force, "avx512bf16") ||
                                  !strcmp(ex[i].force, "amx");
            const int needs_avx2 = !strcmp(ex[i].force, "avx2");
            const int fp32_ok = needs_avx ? mf_cpu_has_avx512() : needs_avx2 ? mf_cpu_has_avx2() : 1;
            const int runs = fp32_ok && (p == 0 || !ex[i].has || ex[i].has());
            mf_status st = make((mf_precision)p, ex[i].force, &m, err, sizeof err);
            if (!runs) {
                ck_assert_msg(st == MF_ERR_ARG && !m, "%s/%d built on a CPU that lacks it", ex[i].force, p);
                ck_assert_msg(strstr(err, p && ex[i].lacks ? ex[i].lacks : needs_avx2 ? "AVX2" : "AVX-512"),
                              "%s: the error '%s' does not name the missing feature", ex[i].force, err);
                printf("SKIP MF_KERNELS=%s %s: %s (the refusal was checked)\n", ex[i].force, p ? "bf16" : "fp32", err);
                continue;
            }
            ck_assert_msg(st == MF_OK, "MF_KERNELS=%s %s: %s", ex[i].force, p ? "bf16" : "fp32", err);
            ck_assert_int_eq(mf_model_precision(m), p);
            ck_assert_str_eq(mf_model_kernels(m), p ? ex[i].bf16 : ex[i].fp32);
            ck_assert_str_eq(mf_model_kernels_fp32(m), ex[i].fp32);
            mf_model_free(m);
        }
    }
    /* unknown values are refused, naming the accepted ones */
    mf_model *m = NULL;
    char err[256] = "";
    ck_assert_int_eq(make(MF_PRECISION_BF16, "turbo", &m, err, sizeof err), MF_ERR_ARG);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, "turbo") && strstr(err, "amx"), "%s", err);
    /* the option wins over the environment; without it the environment counts */
    setenv("MF_KERNELS", "reference", 1);
    ck_assert_int_eq(make(MF_PRECISION_BF16, "portable", &m, err, sizeof err), MF_OK);
    ck_assert_str_eq(mf_model_kernels(m), "portable-bf16");
    mf_model_free(m);
    ck_assert_int_eq(make(MF_PRECISION_BF16, NULL, &m, err, sizeof err), MF_OK);
    ck_assert_str_eq(mf_model_kernels(m), "reference-bf16");
    mf_model_free(m);
    ck_assert_str_eq(mf_kernels_name(), "reference");
    setenv("MF_KERNELS", "bogus", 1);
    ck_assert_str_eq(mf_kernels_name(), "?");
    ck_assert_int_eq(make(MF_PRECISION_FP32, NULL, &m, err, sizeof err), MF_ERR_ARG);
    unsetenv("MF_KERNELS");
    /* a precision outside the enum */
    mf_arch a;
    mf_arch_preset("26m", &a);
    const mf_model_options o = {.precision = (mf_precision)5};
    ck_assert_int_eq(mf_model_synthetic_opts(&a, 10, 3, &o, &m, err, sizeof err), MF_ERR_ARG);
}
END_TEST

static float *run(const mf_model *m, int threads, const float *x, int b, int h, int w)
{
    mf_workspace *ws;
    ck_assert_int_eq(mf_workspace_new(m, threads, &ws), MF_OK);
    float *y = malloc((size_t)b * mf_model_num_classes(m) * sizeof(float));
    ck_assert_int_eq(mf_forward(m, ws, x, b, h, w, y), MF_OK);
    mf_workspace_free(ws);
    return y;
}

/* One process, both precisions, each on its own kernels; bf16 within 3e-2
 * of max|fp32 logit| with the same top-1; its packed weights smaller. */
START_TEST(side_by_side)
{
    mf_model *m32, *m16;
    char err[256];
    ck_assert_int_eq(make(MF_PRECISION_FP32, NULL, &m32, err, sizeof err), MF_OK);
    ck_assert_int_eq(make(MF_PRECISION_BF16, NULL, &m16, err, sizeof err), MF_OK);
    const int B = 3, H = 64, W = 72, C = 10;
    float *x = malloc((size_t)B * 3 * H * W * sizeof(float));
    mf_fill_uniform(x, (size_t)B * 3 * H * W, 5, 0.0, 2.0);
    float *y32 = run(m32, 1, x, B, H, W), *y16 = run(m16, 1, x, B, H, W);
    double mx = 0, err16 = 0;
    for (int i = 0; i < B * C; i++) {
        mx = fmax(mx, fabs(y32[i]));
        err16 = fmax(err16, fabs((double)y16[i] - y32[i]));
    }
    ck_assert_msg(err16 <= 3e-2 * mx, "bf16 vs fp32: %g > 3e-2 * %g", err16, mx);
    ck_assert_msg(err16 > 0, "bf16 gave the fp32 logits exactly");
    for (int b = 0; b < B; b++) {
        int a32 = 0, a16 = 0;
        for (int c = 1; c < C; c++) {
            if (y32[b * C + c] > y32[b * C + a32]) a32 = c;
            if (y16[b * C + c] > y16[b * C + a16]) a16 = c;
        }
        ck_assert_int_eq(a16, a32);
    }
    /* 26m is mostly linear weights: bf16 halves them, where the bf16 set
     * packs bf16 (the portable and avx2 ones hold the rounded values as
     * fp32 floats for their fp32 GEMMs, so their weights are no smaller) */
    if (strcmp(mf_model_kernels(m16), "portable-bf16") != 0 && strcmp(mf_model_kernels(m16), "avx2-bf16") != 0)
        ck_assert_msg(mf_model_bytes(m16) < 0.6 * mf_model_bytes(m32), "bf16 weights %zu vs fp32 %zu",
                      mf_model_bytes(m16), mf_model_bytes(m32));
    else
        ck_assert_msg(mf_model_bytes(m16) <= mf_model_bytes(m32), "portable bf16 weights %zu vs fp32 %zu",
                      mf_model_bytes(m16), mf_model_bytes(m32));
    /* a team (batch 1 on 3 threads) and shares (batch 3 on 2) agree with one thread */
    float *t1 = run(m16, 3, x, 1, H, W), *t2 = run(m16, 2, x, B, H, W);
    for (int i = 0; i < B * C; i++) {
        if (i < C) ck_assert_msg(fabs(t1[i] - y16[i]) <= 1e-4 * (1 + fabs(y16[i])), "team %d: %g vs %g", i, t1[i], y16[i]);
        ck_assert_msg(fabs(t2[i] - y16[i]) <= 1e-4 * (1 + fabs(y16[i])), "shares %d: %g vs %g", i, t2[i], y16[i]);
    }
    printf("REPORT 26m side by side: bf16 [%s] vs fp32 [%s] max logit error %.4f of max|fp32|; weights %.1f vs %.1f MiB\n",
           mf_model_kernels(m16), mf_model_kernels(m32), err16 / mx, mf_model_bytes(m16) / 1048576.0,
           mf_model_bytes(m32) / 1048576.0);
    free(x); free(y32); free(y16); free(t1); free(t2);
    mf_model_free(m32);
    mf_model_free(m16);
}
END_TEST

/* The bundled model loads as bf16 from its file and from a buffer, and
 * the two give the same logits. */
START_TEST(load_bf16)
{
    const char *path = "models/fashion_mnist_mobileformer.safetensors";
    const mf_model_options o = {.precision = MF_PRECISION_BF16};
    mf_model *a = NULL, *b = NULL;
    char err[512];
    ck_assert_msg(mf_model_load_opts(path, &o, &a, err, sizeof err) == MF_OK, "%s", err);
    ck_assert_int_eq(mf_model_precision(a), MF_PRECISION_BF16);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)len);
    ck_assert_int_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    ck_assert_msg(mf_model_load_buffer_opts(buf, (size_t)len, &o, &b, err, sizeof err) == MF_OK, "%s", err);
    ck_assert_int_eq(mf_model_precision(b), MF_PRECISION_BF16);
    ck_assert_str_eq(mf_model_label(b, 0), mf_model_label(a, 0));
    const mf_preprocess *p = mf_model_preprocess(a);
    float *x = malloc((size_t)3 * p->input_h * p->input_w * sizeof(float));
    mf_fill_uniform(x, (size_t)3 * p->input_h * p->input_w, 9, 0.0, 1.5);
    float *ya = run(a, 1, x, 1, p->input_h, p->input_w), *yb = run(b, 1, x, 1, p->input_h, p->input_w);
    ck_assert_mem_eq(ya, yb, (size_t)mf_model_num_classes(a) * sizeof(float));
    /* NULL options: fp32, as mf_model_load */
    mf_model *c = NULL;
    ck_assert_int_eq(mf_model_load_opts(path, NULL, &c, err, sizeof err), MF_OK);
    ck_assert_int_eq(mf_model_precision(c), MF_PRECISION_FP32);
    mf_model_free(c);
    free(x); free(ya); free(yb); free(buf);
    mf_model_free(a);
    mf_model_free(b);
}
END_TEST

int main(void)
{
    unsetenv("MF_KERNELS");
    Suite *s = suite_create("precision");
    TCase *tc = tcase_create("precision");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, names_and_parse);
    tcase_add_test(tc, kernel_choice);
    tcase_add_test(tc, side_by_side);
    tcase_add_test(tc, load_bf16);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
