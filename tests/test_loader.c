/* test_loader.c -- model files: a valid file written here loads and gives
 * the synthetic model's logits; every kind of corruption (truncation at many
 * offsets, garbage header, bad lengths, offsets past the end or overlapping,
 * wrong dtype / shape, missing and unexpected tensors, bad metadata) is an
 * error with a message, never a crash or a leak (run under ASan/valgrind by
 * `make test SANITIZE=address,undefined`).  Also: one model shared by several
 * threads, each with its own workspace, gives the serial results. */
#include "testutil.h"
#include "mf_synthetic.h"
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A small custom architecture keeps files small and tests fast. */
static const char *ARCH =
    "{\"name\":\"tiny\",\"stem\":8,\"tokens\":3,\"token_dim\":16,\"groups\":2,\"classifier_width\":24,"
    "\"blocks\":[[\"A\",2,8,1,0],[\"B3\",3,12,2,2],[\"B\",2,12,1,2]]}";
#define CLASSES 5

typedef struct blob {
    unsigned char *p;
    size_t n;
} blob;

static mf_arch arch;

/* Serialize the synthetic weights as a model file; hook may edit the header
 * JSON before it is written (to make it wrong on purpose). */
static blob make_file(void (*hook)(json_t *root), size_t *data_len_out)
{
    mf_tensor_spec *specs;
    int n = mf_arch_tensor_specs(&arch, CLASSES, &specs);
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("mobileformer/1"));
    json_object_set_new(meta, "arch", json_string(ARCH));
    json_object_set_new(meta, "num_classes", json_string("5"));
    json_object_set_new(meta, "labels", json_string("[\"a\",\"b\",\"c\",\"d\",\"e\"]"));
    json_object_set_new(meta, "preprocess",
                        json_string("{\"input_size\":[32,32],\"resize\":32,\"interpolation\":\"bilinear\","
                                    "\"mean\":[0.5],\"std\":[0.25],\"channels\":1}"));
    json_object_set_new(root, "__metadata__", meta);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *sh = json_array();
        for (int d = 0; d < specs[i].ndim; d++) json_array_append_new(sh, json_integer(specs[i].shape[d]));
        json_object_set_new(root, specs[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", "F32", "shape", sh, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + specs[i].numel * 4)));
        off += specs[i].numel * 4;
    }
    if (hook) hook(root);
    char *hdr = json_dumps(root, JSON_COMPACT);
    size_t hl = strlen(hdr);
    blob b = {malloc(8 + hl + off), 8 + hl + off};
    for (int i = 0; i < 8; i++) b.p[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b.p + 8, hdr, hl);
    /* tensor data: the synthetic rule (seed 7), same order as the offsets */
    size_t pos = 8 + hl;
    for (int i = 0; i < n; i++) {
        float *v = malloc(specs[i].numel * sizeof(float));
        mf_fill_uniform(v, specs[i].numel, 1000 + (uint64_t)i, 0.0, 0.5);
        size_t len = strlen(specs[i].name);
        if (len > 12 && strcmp(specs[i].name + len - 12, ".running_var") == 0)
            for (size_t k = 0; k < specs[i].numel; k++) v[k] = 1.0f + 0.5f * v[k];
        memcpy(b.p + pos, v, specs[i].numel * 4);
        pos += specs[i].numel * 4;
        free(v);
    }
    if (data_len_out) *data_len_out = off;
    free(hdr);
    json_decref(root);
    free(specs);
    return b;
}

static mf_status load(const blob *b, mf_model **m, char *err, size_t errlen)
{
    /* an exact-size heap copy, so any over-read is caught by ASan/valgrind */
    unsigned char *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->p, b->n);
    mf_status st = mf_model_load_buffer(copy, b->n, m, err, errlen);
    free(copy);
    return st;
}

static void expect_error(const blob *b, mf_status want, const char *needle)
{
    mf_model *m = NULL;
    char err[512] = "";
    mf_status st = load(b, &m, err, sizeof err);
    ck_assert_msg(st != MF_OK && m == NULL, "corrupt file loaded (expected '%s')", needle);
    if (want != MF_OK) ck_assert_msg(st == want, "status %s, expected %s (%s)", mf_status_str(st), mf_status_str(want), err);
    ck_assert_msg(err[0] != '\0', "no error message");
    if (needle) ck_assert_msg(strstr(err, needle) != NULL, "error '%s' does not mention '%s'", err, needle);
}

static void setup(void)
{
    char err[256];
    if (mf_arch_parse(ARCH, &arch, err, sizeof err) != MF_OK) {
        fprintf(stderr, "test architecture rejected: %s\n", err);
        exit(1);
    }
}

START_TEST(valid_file_loads)
{
    blob b = make_file(NULL, NULL);
    mf_model *m = NULL;
    char err[512] = "";
    ck_assert_msg(load(&b, &m, err, sizeof err) == MF_OK, "%s", err);
    ck_assert_int_eq(mf_model_num_classes(m), CLASSES);
    ck_assert_str_eq(mf_model_label(m, 4), "e");
    const mf_preprocess *p = mf_model_preprocess(m);
    ck_assert_int_eq(p->channels, 1);
    ck_assert_int_eq(p->input_h, 32);
    ck_assert(p->std[2] == 0.25f);
    mf_workspace *ws;
    ck_assert_int_eq(mf_workspace_new(m, 1, &ws), MF_OK);
    float x[3 * 40 * 36], y[CLASSES];
    mf_fill_uniform(x, sizeof x / sizeof x[0], 3, 0, 1);
    ck_assert_int_eq(mf_forward(m, ws, x, 1, 40, 36, y), MF_OK);
    for (int i = 0; i < CLASSES; i++) ck_assert(isfinite(y[i]));
    ck_assert_int_eq(mf_forward(m, ws, x, 1, 31, 36, y), MF_ERR_ARG); /* below 32 */
    mf_workspace_free(ws);
    mf_model_free(m);
    free(b.p);
}
END_TEST

START_TEST(truncated_everywhere)
{
    blob b = make_file(NULL, NULL);
    /* every prefix in the header region, then a stride through the data */
    size_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b.p[i];
    for (size_t cut = 0; cut < b.n; cut += (cut < hl + 16 ? 1 : 997)) {
        blob t = {b.p, cut};
        mf_model *m = NULL;
        char err[512] = "";
        ck_assert_msg(load(&t, &m, err, sizeof err) != MF_OK, "truncated at %zu loaded", cut);
        ck_assert(err[0]);
    }
    free(b.p);
}
END_TEST

START_TEST(garbage_and_lengths)
{
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 131 + 7);
    blob g = {junk, sizeof junk};
    expect_error(&g, MF_ERR_FORMAT, "header");
    blob b = make_file(NULL, NULL);
    /* header length larger than the file, and absurd */
    b.p[7] = 0x7f;
    expect_error(&b, MF_ERR_FORMAT, "header length");
    b.p[7] = 0;
    b.p[3] = 0xff;
    expect_error(&b, MF_ERR_FORMAT, "header length");
    free(b.p);
    /* a header that is valid JSON but not an object / not JSON */
    const char *bad[] = {"[1,2,3]", "{\"a\":", "nul", "{\"__metadata__\":{\"arch\":\"26m\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t l = strlen(bad[i]);
        unsigned char buf[128] = {0};
        buf[0] = (unsigned char)l;
        memcpy(buf + 8, bad[i], l);
        blob t = {buf, 8 + l};
        expect_error(&t, MF_OK, NULL);
    }
}
END_TEST

static void hook_dtype(json_t *r) { json_object_set_new(json_object_get(r, "stem.0.weight"), "dtype", json_string("F16")); }
static void hook_shape(json_t *r)
{
    json_object_set_new(json_object_get(r, "features.1.conv2.0.weight"), "shape", json_pack("[i,i,i,i]", 12, 9, 1, 1));
}
static void hook_missing(json_t *r) { json_object_del(r, "classifier.fc.1.running_var"); }
static void hook_extra(json_t *r)
{
    json_object_set_new(r, "features.9.conv1.0.weight", json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32", "shape", 1, "data_offsets", 0, 4));
}
static void hook_past_end(json_t *r)
{
    json_object_set_new(json_object_get(r, "tokens.weight"), "data_offsets", json_pack("[I,I]", (json_int_t)1 << 40, ((json_int_t)1 << 40) + 192));
}
static void hook_negative(json_t *r) { json_object_set_new(json_object_get(r, "tokens.weight"), "data_offsets", json_pack("[i,i]", -8, 184)); }
static void hook_overlap(json_t *r)
{
    json_t *a = json_object_get(json_object_get(r, "stem.1.bias"), "data_offsets");
    json_object_set(json_object_get(r, "stem.1.weight"), "data_offsets", a);
}
static void hook_arch(json_t *r) { json_object_set_new(json_object_get(r, "__metadata__"), "arch", json_string("mobile_former_999m")); }
static void hook_arch_json(json_t *r)
{
    json_object_set_new(json_object_get(r, "__metadata__"), "arch", json_string("{\"stem\":8,\"tokens\":3,\"token_dim\":17,\"classifier_width\":8,\"blocks\":[[\"A\",2,8,1,0]]}"));
}
static void hook_classes(json_t *r) { json_object_set_new(json_object_get(r, "__metadata__"), "num_classes", json_string("5x")); }
static void hook_labels(json_t *r) { json_object_set_new(json_object_get(r, "__metadata__"), "labels", json_string("[\"a\",\"b\"]")); }
static void hook_pre(json_t *r)
{
    json_object_set_new(json_object_get(r, "__metadata__"), "preprocess", json_string("{\"input_size\":[8,8]}"));
}
static void hook_std(json_t *r)
{
    json_object_set_new(json_object_get(r, "__metadata__"), "preprocess", json_string("{\"input_size\":64,\"std\":[0,1,1]}"));
}
static void hook_nometa(json_t *r) { json_object_del(r, "__metadata__"); }
static void hook_meta_type(json_t *r) { json_object_set_new(json_object_get(r, "__metadata__"), "num_classes", json_integer(5)); }

START_TEST(bad_headers)
{
    struct { void (*hook)(json_t *); mf_status st; const char *needle; } cases[] = {
        {hook_dtype, MF_ERR_TENSOR, "stem.0.weight"},
        {hook_shape, MF_ERR_TENSOR, "features.1.conv2.0.weight"},
        {hook_missing, MF_ERR_TENSOR, "classifier.fc.1.running_var"},
        {hook_extra, MF_ERR_TENSOR, "features.9.conv1.0.weight"},
        {hook_past_end, MF_ERR_FORMAT, "tokens.weight"},
        {hook_negative, MF_ERR_FORMAT, "tokens.weight"},
        {hook_overlap, MF_ERR_FORMAT, "overlap"},
        {hook_arch, MF_ERR_ARCH, "999m"},
        {hook_arch_json, MF_ERR_ARCH, "token_dim"},
        {hook_classes, MF_ERR_FORMAT, "num_classes"},
        {hook_labels, MF_ERR_FORMAT, "labels"},
        {hook_pre, MF_ERR_FORMAT, "input_size"},
        {hook_std, MF_ERR_FORMAT, "std"},
        {hook_nometa, MF_ERR_FORMAT, "__metadata__"},
        {hook_meta_type, MF_ERR_FORMAT, "num_classes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        blob b = make_file(cases[i].hook, NULL);
        expect_error(&b, cases[i].st, cases[i].needle);
        free(b.p);
    }
}
END_TEST

START_TEST(nonfinite_weights)
{
    blob b = make_file(NULL, NULL);
    /* overwrite the last float of the file (the class layer's last bias) with NaN */
    float nan = NAN;
    memcpy(b.p + b.n - 4, &nan, 4);
    expect_error(&b, MF_ERR_TENSOR, "classifier.classifier.1.bias");
    free(b.p);
}
END_TEST

START_TEST(missing_file)
{
    mf_model *m = NULL;
    char err[512] = "";
    ck_assert_int_eq(mf_model_load("/nonexistent/model.safetensors", &m, err, sizeof err), MF_ERR_IO);
    ck_assert(strstr(err, "/nonexistent/model.safetensors") != NULL);
    ck_assert_int_eq(mf_model_load("/", &m, err, sizeof err), MF_ERR_IO);
}
END_TEST

/* ---- one model, several threads -------------------------------------- */

typedef struct worker_arg {
    const mf_model *m;
    const float *x;
    float *y;
    int b, h, w, reps, threads;
    int status;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    mf_workspace *ws;
    a->status = mf_workspace_new(a->m, a->threads, &ws);
    for (int r = 0; r < a->reps && a->status == MF_OK; r++) a->status = mf_forward(a->m, ws, a->x, a->b, a->h, a->w, a->y);
    mf_workspace_free(ws);
    return NULL;
}

START_TEST(shared_model_threads)
{
    mf_arch a;
    mf_model *m;
    char err[256];
    ck_assert_int_eq(mf_arch_preset("26m", &a), MF_OK);
    ck_assert_int_eq(mf_model_synthetic(&a, 1000, 11, &m, err, sizeof err), MF_OK);
    enum { NT = 4, B = 3, H = 64, W = 48 };
    size_t n = (size_t)B * 3 * H * W;
    float *x[NT], *y[NT], *ser[NT];
    for (int t = 0; t < NT; t++) {
        x[t] = malloc(n * sizeof(float));
        y[t] = malloc((size_t)B * 1000 * sizeof(float));
        ser[t] = malloc((size_t)B * 1000 * sizeof(float));
        mf_fill_uniform(x[t], n, 100 + (uint64_t)t, 0, 1.5);
    }
    mf_workspace *ws;
    ck_assert_int_eq(mf_workspace_new(m, 1, &ws), MF_OK);
    for (int t = 0; t < NT; t++) ck_assert_int_eq(mf_forward(m, ws, x[t], B, H, W, ser[t]), MF_OK);
    mf_workspace_free(ws);
    pthread_t tid[NT];
    worker_arg args[NT];
    for (int t = 0; t < NT; t++) {
        args[t] = (worker_arg){m, x[t], y[t], B, H, W, 3, 1 + t % 3, 0};
        pthread_create(&tid[t], NULL, worker, &args[t]);
    }
    for (int t = 0; t < NT; t++) {
        pthread_join(tid[t], NULL);
        ck_assert_int_eq(args[t].status, MF_OK);
        ck_assert_msg(memcmp(y[t], ser[t], (size_t)B * 1000 * sizeof(float)) == 0,
                      "thread %d (%d engine threads) differs from the serial run", t, args[t].threads);
        free(x[t]); free(y[t]); free(ser[t]);
    }
    mf_model_free(m);
}
END_TEST

/* Batch results equal single-image results, and a workspace that grew for
 * a large size still gives the same answers for a small one. */
START_TEST(batch_equals_single)
{
    mf_arch a;
    mf_model *m;
    char err[256];
    ck_assert_int_eq(mf_arch_parse(ARCH, &a, err, sizeof err), MF_OK);
    ck_assert_int_eq(mf_model_synthetic(&a, CLASSES, 5, &m, err, sizeof err), MF_OK);
    enum { B = 5, H = 37, W = 45 };
    size_t n = (size_t)3 * H * W;
    float *x = malloc(B * n * sizeof(float)), yb[B * CLASSES], y1[CLASSES];
    mf_fill_uniform(x, B * n, 9, 0, 1);
    mf_workspace *ws, *ws1;
    ck_assert_int_eq(mf_workspace_new(m, 2, &ws), MF_OK);
    ck_assert_int_eq(mf_workspace_new(m, 1, &ws1), MF_OK);
    ck_assert_int_eq(mf_workspace_reserve(ws1, 2, 200, 200), MF_OK);
    ck_assert_int_eq(mf_forward(m, ws, x, B, H, W, yb), MF_OK);
    for (int b = 0; b < B; b++) {
        ck_assert_int_eq(mf_forward(m, ws1, x + b * n, 1, H, W, y1), MF_OK);
        for (int c = 0; c < CLASSES; c++)
            ck_assert_msg(fabsf(y1[c] - yb[b * CLASSES + c]) <= 1e-5f * (1 + fabsf(y1[c])), "image %d class %d", b, c);
    }
    mf_workspace_free(ws);
    mf_workspace_free(ws1);
    mf_model_free(m);
    free(x);
}
END_TEST

/* The weights arena (alloc.c): pieces 64-byte aligned and apart, any size
 * (one larger than a chunk too), intact after the seal; a model's weights
 * are read-only once built: a write into them faults (in a child process).
 * Under AddressSanitizer each piece is its own malloc'd block and nothing is
 * sealed, so the fault is not looked for there (said on stdout). */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_PLAIN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_PLAIN 1
#endif
#endif
START_TEST(weights_arena)
{
    static const size_t sizes[] = {1, 63, 64, 65, 1000, 3u << 20, 1, 20u << 20, 5000, 2u << 20, 64};
    enum { N = sizeof sizes / sizeof sizes[0] };
    mf_arena *a = mf_arena_new(1);
    ck_assert_ptr_nonnull(a);
    unsigned char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = mf_arena_alloc(a, sizes[i]);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_uint_eq((uintptr_t)p[i] % 64, 0);
        memset(p[i], 'a' + i, sizes[i]);
    }
    mf_arena_seal(a);
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < sizes[i]; k += 1 + k / 7)
            ck_assert_msg(p[i][k] == 'a' + i, "piece %d byte %zu was overwritten", i, k);
    mf_arena_free(a);
    mf_arena_free(NULL);
    mf_arena_seal(NULL);

    mf_arch arch26;
    mf_model *m;
    char err[256];
    ck_assert_int_eq(mf_arch_preset("26m", &arch26), MF_OK);
    ck_assert_int_eq(mf_model_synthetic(&arch26, 10, 3, &m, err, sizeof err), MF_OK);
#ifdef ARENA_PLAIN
    printf("weights_arena: the seal is not checked under AddressSanitizer (plain allocations there)\n");
#else
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        ((volatile float *)m->stem_w)[0] = 1.0f;
        _exit(0); /* the write went through */
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "a write into the weights did not fault (status %d)", st);
#endif
    mf_model_free(m);
}
END_TEST

int main(void)
{
    setup();
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, valid_file_loads);
    tcase_add_test(tc, truncated_everywhere);
    tcase_add_test(tc, garbage_and_lengths);
    tcase_add_test(tc, bad_headers);
    tcase_add_test(tc, nonfinite_weights);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, shared_model_threads);
    tcase_add_test(tc, batch_equals_single);
    tcase_add_test(tc, weights_arena);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
