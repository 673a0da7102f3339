/* test_golden.c -- the engine against the reference implementation's golden
 * outputs in ../shared/golden (or $MF_GOLDEN_DIR): weights regenerated from
 * manifest.json with splitmix64, every recorded intermediate and the logits
 * compared within the stated tolerance, with every kernel set this CPU has.
 * In bf16 (every bf16 set this CPU has; the others are reported as SKIP
 * with the feature they lack) the bar is the bf16 one: every logit within
 * 3e-2 * max|reference| and the same top-1 class on every image.
 * Without the golden directory the cases are skipped (tests/py covers all
 * seven variants with references computed by the PyTorch twin). */
#include "testutil.h"
#include "mf_synthetic.h"
#include "mf.h"
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

typedef struct entry {
    char name[96];
    uint64_t seed;
    double offset, scale;
    size_t numel;
} entry;

typedef struct manifest {
    entry *e;
    int n;
    float **bufs; /* [n] regenerated tensors, valid until freed after the build */
} manifest;

static const float *lookup(void *ctx, const mf_tensor_spec *spec)
{
    manifest *mf = ctx;
    for (int i = 0; i < mf->n; i++) {
        if (strcmp(mf->e[i].name, spec->name) != 0) continue;
        if (mf->e[i].numel != spec->numel) return NULL;
        if (!mf->bufs[i]) {
            mf->bufs[i] = malloc(spec->numel * sizeof(float));
            mf_fill_uniform(mf->bufs[i], spec->numel, mf->e[i].seed, mf->e[i].offset, mf->e[i].scale);
        }
        return mf->bufs[i];
    }
    return NULL;
}

static float *read_f32(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *d = malloc(n * sizeof(float));
    size_t got = fread(d, sizeof(float), n, f);
    fclose(f);
    if (got != n) { free(d); return NULL; }
    return d;
}

typedef struct expected {
    char name[64];
    float *data;   /* reference values, all images */
    size_t per;    /* floats per image */
    double tol;
    double max_err;
    int first_bad_image;
    size_t first_bad_index;
} expected;

typedef struct trace_ctx {
    expected *ex;
    int n;
    char first_bad[96];
} trace_ctx;

static void on_trace(void *user, const char *name, int image, const float *data, const int *shape, int ndim)
{
    trace_ctx *t = user;
    for (int i = 0; i < t->n; i++) {
        expected *e = &t->ex[i];
        if (strcmp(e->name, name) != 0) continue;
        size_t n = 1;
        for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
        ck_assert_msg(n == e->per, "%s: engine has %zu values per image, reference %zu", name, n, e->per);
        const float *ref = e->data + e->per * image;
        for (size_t k = 0; k < n; k++) {
            double err = fabs((double)data[k] - ref[k]);
            if (!(err <= e->max_err)) e->max_err = isnan(err) ? INFINITY : err;
            if (!(err <= e->tol) && !t->first_bad[0]) {
                snprintf(t->first_bad, sizeof t->first_bad, "%s (image %d, index %zu: %g vs %g)", name, image, k,
                         data[k], ref[k]);
            }
        }
    }
}

static char golden_dir[512];

static int find_golden(void)
{
    const char *env = getenv("MF_GOLDEN_DIR");
    snprintf(golden_dir, sizeof golden_dir, "%s", env && *env ? env : "../shared/golden");
    struct stat st;
    return stat(golden_dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* bf16's bar, relative to the largest |reference logit| */
#define BF16_TOL 3e-2

static void run_case(const char *variant, const char *kernels, mf_precision prec)
{
    const int bf16 = prec == MF_PRECISION_BF16;
    char path[1024];
    setenv("MF_KERNELS", kernels, 1);
    snprintf(path, sizeof path, "%s/%s/case.json", golden_dir, variant);
    json_error_t je;
    json_t *cs = json_load_file(path, 0, &je);
    ck_assert_msg(cs, "cannot read %s: %s", path, je.text);
    snprintf(path, sizeof path, "%s/%s/manifest.json", golden_dir, variant);
    json_t *mj = json_load_file(path, 0, &je);
    ck_assert_msg(mj && json_is_array(mj), "cannot read %s", path);

    manifest mf = {0};
    mf.n = (int)json_array_size(mj);
    mf.e = calloc((size_t)mf.n, sizeof *mf.e);
    mf.bufs = calloc((size_t)mf.n, sizeof *mf.bufs);
    for (int i = 0; i < mf.n; i++) {
        json_t *o = json_array_get(mj, (size_t)i);
        snprintf(mf.e[i].name, sizeof mf.e[i].name, "%s", json_string_value(json_object_get(o, "name")));
        mf.e[i].seed = (uint64_t)json_integer_value(json_object_get(o, "seed"));
        mf.e[i].offset = json_number_value(json_object_get(o, "offset"));
        mf.e[i].scale = json_number_value(json_object_get(o, "scale"));
        json_t *sh = json_object_get(o, "shape");
        mf.e[i].numel = 1;
        for (size_t d = 0; d < json_array_size(sh); d++) mf.e[i].numel *= (size_t)json_integer_value(json_array_get(sh, d));
    }

    mf_arch arch;
    ck_assert_int_eq(mf_arch_preset(json_string_value(json_object_get(cs, "variant")), &arch), MF_OK);
    int classes = (int)json_integer_value(json_object_get(cs, "num_classes"));
    mf_model *m = NULL;
    char err[256] = "";
    const mf_model_options mo = {.precision = prec};
    mf_status st = mf_model_build_opts(&arch, classes, lookup, &mf, NULL, NULL, &mo, &m, err, sizeof err);
    ck_assert_msg(st == MF_OK, "%s: build failed: %s", variant, err);
    for (int i = 0; i < mf.n; i++) free(mf.bufs[i]);
    free(mf.bufs);

    json_t *in = json_object_get(cs, "input");
    json_t *ish = json_object_get(in, "shape");
    int B = (int)json_integer_value(json_array_get(ish, 0)), H = (int)json_integer_value(json_array_get(ish, 2)),
        W = (int)json_integer_value(json_array_get(ish, 3));
    snprintf(path, sizeof path, "%s/%s/%s", golden_dir, variant, json_string_value(json_object_get(in, "file")));
    float *input = read_f32(path, (size_t)B * 3 * H * W);
    ck_assert_msg(input, "cannot read %s", path);

    json_t *outs = json_object_get(cs, "outputs");
    trace_ctx tc = {0};
    tc.ex = calloc(json_object_size(outs), sizeof *tc.ex);
    const char *key;
    json_t *val;
    expected *logits_ex = NULL;
    json_object_foreach(outs, key, val) {
        expected *e = &tc.ex[tc.n++];
        snprintf(e->name, sizeof e->name, "%s", key);
        json_t *sh = json_object_get(val, "shape");
        size_t total = 1;
        for (size_t d = 0; d < json_array_size(sh); d++) total *= (size_t)json_integer_value(json_array_get(sh, d));
        e->per = total / (size_t)B;
        double mx = json_number_value(json_object_get(val, "max_abs"));
        /* bf16: only the logits are held to a bar (intermediates: unlimited) */
        e->tol = bf16 ? (strcmp(key, "logits") == 0 ? BF16_TOL * mx : INFINITY) : 2e-4 * (mx > 1.0 ? mx : 1.0);
        snprintf(path, sizeof path, "%s/%s/%s", golden_dir, variant, json_string_value(json_object_get(val, "file")));
        e->data = read_f32(path, total);
        ck_assert_msg(e->data, "cannot read %s", path);
        if (strcmp(key, "logits") == 0) logits_ex = e;
    }
    ck_assert(logits_ex);

    mf_workspace *ws = NULL;
    ck_assert_int_eq(mf_workspace_new(m, 1, &ws), MF_OK);
    mf_workspace_set_trace(ws, on_trace, &tc);
    float *logits = calloc((size_t)B * classes, sizeof(float));
    ck_assert_int_eq(mf_forward(m, ws, input, B, H, W, logits), MF_OK);
    on_trace(&tc, "logits", 0, logits, (int[]){classes}, 1);
    for (int b = 1; b < B; b++) on_trace(&tc, "logits", b, logits + (size_t)b * classes, (int[]){classes}, 1);

    printf("%s%s [%s %s kernels]:", bf16 ? "REPORT " : "", variant, mf_precision_name(prec), mf_model_kernels(m));
    for (int i = 0; i < tc.n; i++)
        if (strcmp(tc.ex[i].name, "logits") == 0 || (!bf16 && (strcmp(tc.ex[i].name, "final_tokens") == 0 ||
                                                               strcmp(tc.ex[i].name, "stem") == 0)))
            printf(" %s max|err| %.3g (tol %.3g)", tc.ex[i].name, tc.ex[i].max_err, tc.ex[i].tol);
    printf("\n");
    ck_assert_msg(!tc.first_bad[0], "%s [%s]: first diverging tensor: %s", variant, kernels, tc.first_bad);
    for (int i = 0; i < tc.n; i++) ck_assert_msg(tc.ex[i].max_err <= tc.ex[i].tol, "%s: %s never traced or off", variant, tc.ex[i].name);

    /* bf16: the same top-1 on every image */
    for (int b = 0; bf16 && b < B; b++) {
        const float *ref = logits_ex->data + (size_t)b * classes, *got = logits + (size_t)b * classes;
        int ri = 0, gi = 0;
        for (int c = 1; c < classes; c++) {
            if (ref[c] > ref[ri]) ri = c;
            if (got[c] > got[gi]) gi = c;
        }
        ck_assert_msg(ri == gi, "%s [bf16 %s] image %d: top-1 %d, reference %d", variant, kernels, b, gi, ri);
    }
    /* top-5 order wherever the reference's top-5 logits are separated */
    for (int b = 0; !bf16 && b < B; b++) {
        const float *ref = logits_ex->data + (size_t)b * classes, *got = logits + (size_t)b * classes;
        int ri[5], gi[5];
        for (int r = 0; r < 5; r++) {
            ri[r] = gi[r] = -1;
            for (int c = 0; c < classes; c++) {
                int used_r = 0, used_g = 0;
                for (int q = 0; q < r; q++) { used_r |= ri[q] == c; used_g |= gi[q] == c; }
                if (!used_r && (ri[r] < 0 || ref[c] > ref[ri[r]])) ri[r] = c;
                if (!used_g && (gi[r] < 0 || got[c] > got[gi[r]])) gi[r] = c;
            }
        }
        for (int r = 0; r < 5; r++) {
            int separated = (r == 0 || ref[ri[r - 1]] - ref[ri[r]] > logits_ex->tol) &&
                            (r == 4 || ref[ri[r]] - ref[ri[r + 1]] > logits_ex->tol);
            if (separated) ck_assert_msg(ri[r] == gi[r], "%s image %d: top-%d is %d, reference %d", variant, b, r + 1, gi[r], ri[r]);
        }
    }

    /* mf_model_synthetic with the case's base seed follows the manifest rule */
    mf_model *ms = NULL;
    if (bf16) goto done;
    uint64_t base = (uint64_t)json_integer_value(json_object_get(cs, "weights_base_seed"));
    ck_assert_int_eq(mf_model_synthetic(&arch, classes, base, &ms, err, sizeof err), MF_OK);
    mf_workspace *ws2 = NULL;
    ck_assert_int_eq(mf_workspace_new(ms, 1, &ws2), MF_OK);
    float *l2 = calloc((size_t)B * classes, sizeof(float));
    ck_assert_int_eq(mf_forward(ms, ws2, input, B, H, W, l2), MF_OK);
    for (size_t i = 0; i < (size_t)B * classes; i++)
        ck_assert_msg(fabs((double)l2[i] - logits_ex->data[i]) <= logits_ex->tol,
                      "%s: mf_model_synthetic(seed %llu) logit %zu: %g vs %g", variant, (unsigned long long)base, i,
                      l2[i], logits_ex->data[i]);
    free(l2);
    mf_workspace_free(ws2);
    mf_model_free(ms);
done:
    mf_workspace_free(ws);
    mf_model_free(m);
    free(logits);
    free(input);
    for (int i = 0; i < tc.n; i++) free(tc.ex[i].data);
    free(tc.ex);
    free(mf.e);
    json_decref(cs);
    json_decref(mj);
}

static const char *variants[] = {"mobile_former_26m", "mobile_former_151m", "mobile_former_508m"};

START_TEST(golden_case)
{
    if (!find_golden()) {
        printf("SKIP golden %s: %s not found (the twin-computed references in tests/py cover all variants)\n",
               variants[_i], golden_dir);
        return;
    }
    run_case(variants[_i], "portable", MF_PRECISION_FP32);
    if (mf_cpu_has_avx2()) run_case(variants[_i], "avx2", MF_PRECISION_FP32);
    else printf("SKIP golden %s [avx2]: this CPU lacks AVX2 or FMA\n", variants[_i]);
    unsetenv("MF_KERNELS");
    if (strcmp(mf_kernels_name(), "avx512") == 0 && !getenv("MF_TEST_NO_AVX512"))
        run_case(variants[_i], "avx512", MF_PRECISION_FP32);
}
END_TEST

/* bf16 on every bf16 path: portable everywhere, avx2-bf16, vdpbf16ps and AMX where the
 * CPU has them. */
START_TEST(golden_case_bf16)
{
    if (!find_golden()) {
        printf("SKIP golden bf16 %s: %s not found\n", variants[_i], golden_dir);
        return;
    }
    run_case(variants[_i], "portable", MF_PRECISION_BF16);
    if (mf_cpu_has_avx2()) run_case(variants[_i], "avx2", MF_PRECISION_BF16);
    else printf("SKIP golden bf16 %s [avx2-bf16]: this CPU lacks AVX2 or FMA\n", variants[_i]);
    if (mf_cpu_has_avx512bf16()) run_case(variants[_i], "avx512bf16", MF_PRECISION_BF16);
    else printf("SKIP golden bf16 %s [avx512-bf16]: this CPU lacks AVX512-BF16\n", variants[_i]);
    if (mf_cpu_has_amx_bf16()) run_case(variants[_i], "amx", MF_PRECISION_BF16);
    else printf("SKIP golden bf16 %s [amx-bf16]: this CPU lacks AMX-BF16\n", variants[_i]);
    unsetenv("MF_KERNELS");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, golden_case, 0, 3);
    tcase_add_loop_test(tc, golden_case_bf16, 0, 3);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
