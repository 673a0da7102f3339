/* main.c -- build/mobileformer, the engine's command line:
 *   run      raw float32 tensors in and out (acceptance against the reference)
 *   predict  images -> JSON top-k, through the same decode/preprocess as the server
 *   bench    latency and throughput of the engine
 *   info     architecture, classes, parameters, MAdds
 * Every error is one line on stderr and a non-zero exit. */
#include "image.h"
#include "mf.h"
#include "mf_synthetic.h"
#include "mf_util.h"
#include "preprocess.h"
#include "topk.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

void openblas_set_num_threads(int);

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mobileformer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: mobileformer <command> [options]\n"
            "  run     --model M --input X.f32 --shape B,3,H,W --output Y.f32 [--threads N]\n"
            "  predict --model M [--top-k K] [--logits] IMAGE...\n"
            "  bench   (--model M | --arch A) [--batch N] [--threads N] [--workers N] [--size S] [--iters N]\n"
            "          [--warmup N]   (--workers: N independent runners at once, as the server's worker pool)\n"
            "  info    (--model M | --arch A)\n"
            "Every command takes --precision fp32|bf16 (default fp32): the arithmetic of the 1x1\n"
            "convolutions and linear layers.\n"
            "Kernels: %s for fp32; MF_KERNELS=auto|reference|portable|avx2|avx512|avx512bf16|amx forces a path\n",
            mf_kernels_name());
}

typedef struct opts {
    const char *model, *arch, *input, *output, *shape, *trace;
    int top_k, batch, threads, workers, size, iters, warmup;
    int logits;      /* predict: also print the raw logits */
    mf_precision precision; /* --precision */
    int nfiles;
    char **files;
} opts;

static int parse_int(const char *flag, const char *v, int lo, int hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) die("%s: expected an integer in %d..%d, got '%s'", flag, lo, hi, v);
    return (int)x;
}

static void parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->top_k = 5;
    o->batch = 1;
    o->threads = 1;
    o->workers = 1;
    o->iters = 20;
    o->warmup = 3;
    o->files = calloc((size_t)argc, sizeof *o->files);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') { o->files[o->nfiles++] = argv[i]; continue; }
        if (!strcmp(a, "--logits")) { o->logits = 1; continue; }
        if (i + 1 >= argc) die("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--arch")) o->arch = v;
        else if (!strcmp(a, "--input")) o->input = v;
        else if (!strcmp(a, "--output")) o->output = v;
        else if (!strcmp(a, "--shape")) o->shape = v;
        else if (!strcmp(a, "--trace")) o->trace = v;
        else if (!strcmp(a, "--precision")) {
            if (mf_precision_parse(v, &o->precision) != 0) die("--precision: expected fp32 or bf16, got '%s'", v);
        }
        else if (!strcmp(a, "--top-k")) o->top_k = parse_int(a, v, 1, 1000000);
        else if (!strcmp(a, "--batch")) o->batch = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--threads")) o->threads = parse_int(a, v, 1, 256);
        else if (!strcmp(a, "--workers")) o->workers = parse_int(a, v, 1, 256);
        else if (!strcmp(a, "--size")) o->size = parse_int(a, v, 32, 4096);
        else if (!strcmp(a, "--iters")) o->iters = parse_int(a, v, 1, 1000000);
        else if (!strcmp(a, "--warmup")) o->warmup = parse_int(a, v, 0, 1000000);
        else die("unknown option %s (see mobileformer --help)", a);
    }
}

/* Resident set size of this process in bytes (0 if unknown). */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

static size_t rss_before_load, rss_after_load;

static mf_model *load_model(const opts *o)
{
    char err[512];
    mf_model *m = NULL;
    mf_status st;
    const mf_model_options mo = {.precision = o->precision};
    rss_before_load = rss_bytes();
    if (o->model && o->arch) die("give --model FILE or --arch NAME, not both");
    if (o->model) {
        st = mf_model_load_opts(o->model, &mo, &m, err, sizeof err);
    } else if (o->arch) {
        mf_arch a;
        if ((st = mf_arch_parse(o->arch, &a, err, sizeof err)) == MF_OK)
            st = mf_model_synthetic_opts(&a, 1000, 1, &mo, &m, err, sizeof err);
    } else {
        die("--model FILE (or --arch NAME for synthetic weights) is required");
    }
    if (st != MF_OK) die("%s", err);
    rss_after_load = rss_bytes();
    return m;
}

/* "resident: model ... (file ...)" -- what loading the model added to the process. */
static void print_memory(const opts *o, const mf_model *m)
{
    struct stat sb;
    double file = o->model && stat(o->model, &sb) == 0 ? (double)sb.st_size : 0;
    double grew = rss_after_load > rss_before_load ? (double)(rss_after_load - rss_before_load) : 0;
    printf("memory: weights %.1f MiB; resident growth on load %.1f MiB", mf_model_bytes(m) / 1048576.0,
           grew / 1048576.0);
    if (file > 0) printf("; file %.1f MiB (resident / file = %.2f)", file / 1048576.0, grew / file);
    printf("\n");
}

/* The whole of a regular file, or NULL with the reason in err. */
static void *load_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    void *buf = NULL;
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
        snprintf(err, errlen, "cannot read '%s': not a regular file", path);
    else if (!(buf = malloc((size_t)st.st_size + 1)))
        snprintf(err, errlen, "out of memory reading '%s'", path);
    else if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        snprintf(err, errlen, "cannot read '%s'", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)st.st_size : 0;
    return buf;
}

static void *read_file(const char *path, size_t *len)
{
    char err[1200];
    void *buf = load_file(path, len, err, sizeof err);
    if (!buf) die("%s", err);
    return buf;
}

/* --trace DIR: every intermediate as DIR/<name>.f32, images in batch order.
 * Called from the workspace's threads, so each image writes its own region. */
typedef struct trace_out {
    const char *dir;
} trace_out;

static void on_trace(void *user, const char *name, int image, const float *data, const int *shape, int ndim)
{
    const trace_out *t = user;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.f32", t->dir, name);
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die("cannot write '%s': %s", path, strerror(errno));
    ssize_t want = (ssize_t)(n * sizeof(float));
    if (pwrite(fd, data, (size_t)want, (off_t)image * want) != want) die("cannot write '%s'", path);
    close(fd);
}

static int cmd_run(const opts *o)
{
    int B, C, H, W;
    char tail;
    if (!o->input || !o->output || !o->shape) die("run needs --model, --input, --shape and --output");
    if (sscanf(o->shape, "%d,%d,%d,%d%c", &B, &C, &H, &W, &tail) != 4 || B < 1 || B > 4096 || H < 1 || W < 1 ||
        H > 16384 || W > 16384)
        die("--shape must be B,3,H,W with positive sizes, got '%s'", o->shape);
    if (C != 3) die("--shape: the network takes 3 input channels, got %d", C);
    if (H < 32 || W < 32) die("--shape: height and width must be at least 32, got %dx%d", H, W);
    size_t len;
    float *in = read_file(o->input, &len);
    size_t need = (size_t)B * 3 * H * W * sizeof(float);
    if (len != need)
        die("input '%s' has %zu bytes but shape %s needs %zu (B*3*H*W float32)", o->input, len, o->shape, need);
    mf_model *m = load_model(o);
    openblas_set_num_threads(1);
    mf_workspace *ws;
    if (mf_workspace_new(m, o->threads, &ws) != MF_OK) die("cannot create a workspace");
    trace_out tr = {o->trace};
    if (o->trace) mf_workspace_set_trace(ws, on_trace, &tr);
    int K = mf_model_num_classes(m);
    float *out = malloc((size_t)B * K * sizeof(float));
    if (!out) die("out of memory");
    mf_status st = mf_forward(m, ws, in, B, H, W, out);
    if (st != MF_OK) die("inference failed: %s", mf_status_str(st));
    FILE *f = fopen(o->output, "wb");
    if (!f || fwrite(out, sizeof(float), (size_t)B * K, f) != (size_t)B * K || fclose(f) != 0)
        die("cannot write '%s'", o->output);
    fprintf(stderr, "wrote %d x %d logits to %s\n", B, K, o->output);
    free(out);
    free(in);
    mf_workspace_free(ws);
    mf_model_free(m);
    return 0;
}

static int cmd_predict(const opts *o)
{
    if (o->nfiles == 0) die("predict needs at least one IMAGE");
    mf_model *m = load_model(o);
    openblas_set_num_threads(1);
    const mf_preprocess *p = mf_model_preprocess(m);
    mf_workspace *ws;
    if (mf_workspace_new(m, 1, &ws) != MF_OK) die("cannot create a workspace");
    int K = mf_model_num_classes(m), k = o->top_k < K ? o->top_k : K, failures = 0;
    float *x = malloc((size_t)3 * p->input_h * p->input_w * sizeof(float));
    float *logits = malloc((size_t)K * sizeof(float)), *prob = malloc((size_t)K * sizeof(float));
    const char **labels = malloc((size_t)K * sizeof *labels);
    if (!x || !logits || !prob || !labels) die("out of memory");
    for (int i = 0; i < K; i++) labels[i] = mf_model_label(m, i);
    for (int i = 0; i < o->nfiles; i++) {
        size_t len;
        char err[1200] = "";
        json_t *r = json_object();
        json_object_set_new(r, "image", json_string(o->files[i]));
        uint8_t *buf = load_file(o->files[i], &len, err, sizeof err);
        mf_image img;
        mf_img_status is = buf ? mf_image_decode(buf, len, 0, &img, err, sizeof err) : MF_IMG_OK;
        free(buf);
        if (!buf) {
            json_object_set_new(r, "error", json_pack("{s:s,s:s}", "code", "unreadable_file", "message", err));
            failures++;
        } else if (is != MF_IMG_OK) {
            json_object_set_new(r, "error", json_pack("{s:s,s:s}", "code", mf_img_status_code(is), "message", err));
            failures++;
        } else {
            if (mf_preprocess_image(&img, p, x) != 0) die("out of memory");
            mf_image_free(&img);
            if (mf_forward(m, ws, x, 1, p->input_h, p->input_w, logits) != MF_OK) die("inference failed");
            mf_softmax(logits, K, prob);
            json_t *preds = mf_predictions_json(prob, K, labels, k);
            if (!preds) die("the model produced non-finite scores for '%s'", o->files[i]);
            json_object_set_new(r, "predictions", preds);
            if (o->logits) {
                json_t *lg = json_array();
                for (int j = 0; j < K; j++) json_array_append_new(lg, json_real(logits[j]));
                json_object_set_new(r, "logits", lg);
            }
        }
        char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(r);
    }
    free(x);
    free(logits);
    free(prob);
    free(labels);
    mf_workspace_free(ws);
    mf_model_free(m);
    return failures ? 1 : 0;
}

static double now_ms(void) { return (double)mf_now_ns() * 1e-6; }

/* CPU time of the calling thread: unlike the wall clock, it does not count
 * the time other processes on a shared machine take the core away. */
static double thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One runner of `bench`: its own workspace, `iters` timed forward passes
 * after `warmup` untimed ones; with --workers N, N of them start together
 * (as the server's worker pool runs batches side by side). */
typedef struct runner {
    const mf_model *m;
    const opts *o;
    int H, W;
    const float *x;
    double *t;                 /* [iters] ms */
    double *cpu;               /* [iters] ms of this thread's CPU time (meaningful with --threads 1) */
    pthread_barrier_t *start;  /* NULL: run alone */
    double t0, t1;             /* first timed start, last timed end (ms) */
    size_t ws_bytes;
    const char *err;
} runner;

static void *run_bench(void *arg)
{
    runner *r = arg;
    const opts *o = r->o;
    int B = o->batch;
    mf_workspace *ws = NULL;
    float *y = malloc((size_t)B * mf_model_num_classes(r->m) * sizeof(float));
    if (!y) r->err = "out of memory";
    else if (mf_workspace_new(r->m, o->threads, &ws) != MF_OK) r->err = "cannot create a workspace";
    else if (mf_workspace_reserve(ws, B, r->H, r->W) != MF_OK) r->err = "cannot allocate the workspace";
    if (!r->err)
        for (int i = 0; i < o->warmup; i++) mf_forward(r->m, ws, r->x, B, r->H, r->W, y);
    if (r->start) pthread_barrier_wait(r->start);
    r->t0 = now_ms();
    for (int i = 0; i < o->iters && !r->err; i++) {
        double t0 = now_ms(), c0 = thread_cpu_ms();
        mf_forward(r->m, ws, r->x, B, r->H, r->W, y);
        r->t[i] = now_ms() - t0;
        r->cpu[i] = thread_cpu_ms() - c0;
    }
    r->t1 = now_ms();
    r->ws_bytes = ws ? mf_workspace_bytes(ws) : 0;
    mf_workspace_free(ws);
    free(y);
    return NULL;
}

static int cmd_bench(const opts *o)
{
    mf_model *m = load_model(o);
    openblas_set_num_threads(1);
    const mf_preprocess *p = mf_model_preprocess(m);
    int H = o->size ? o->size : p->input_h, W = o->size ? o->size : p->input_w, B = o->batch, N = o->workers;
    size_t n = (size_t)B * 3 * H * W, iters = (size_t)o->iters;
    float *x = malloc(n * sizeof(float));
    double *t = malloc(iters * N * sizeof(double)), *cpu = malloc(iters * N * sizeof(double));
    runner *r = calloc((size_t)N, sizeof *r);
    pthread_t *th = calloc((size_t)N, sizeof *th);
    pthread_barrier_t start;
    if (!x || !t || !cpu || !r || !th) die("out of memory");
    mf_fill_uniform(x, n, 42, 0.0, 2.0);
    if (N > 1 && pthread_barrier_init(&start, NULL, (unsigned)N) != 0) die("cannot start %d workers", N);
    for (int i = 0; i < N; i++) {
        r[i] = (runner){.m = m, .o = o, .H = H, .W = W, .x = x, .t = t + iters * i, .cpu = cpu + iters * i,
                        .start = N > 1 ? &start : NULL};
        if (N > 1 && pthread_create(&th[i], NULL, run_bench, &r[i]) != 0) die("cannot start %d workers", N);
    }
    if (N == 1) run_bench(&r[0]);
    double t0 = 0, t1 = 0;
    for (int i = 0; i < N; i++) {
        if (N > 1) pthread_join(th[i], NULL);
        if (r[i].err) die("%s", r[i].err);
        if (i == 0 || r[i].t0 < t0) t0 = r[i].t0;
        if (i == 0 || r[i].t1 > t1) t1 = r[i].t1;
    }
    if (N > 1) pthread_barrier_destroy(&start);
    size_t all = iters * N;
    qsort(t, all, sizeof *t, cmp_double);
    double med = t[all / 2], p10 = t[all / 10], p90 = t[(all * 9) / 10];
    const mf_arch *a = mf_model_arch(m);
    printf("arch %s batch %d size %dx%d threads %d%s precision %s kernels %s (fp32 layers %s)\n", a->name, B, H, W,
           o->threads, N > 1 ? " (per worker)" : "", mf_precision_name(mf_model_precision(m)), mf_model_kernels(m),
           mf_model_kernels_fp32(m));
    printf("median %.3f ms  p10 %.3f  p90 %.3f  min %.3f  max %.3f  (%zu iters)\n", med, p10, p90, t[0], t[all - 1], all);
    if (o->threads == 1 && N == 1) { /* helpers' spinning would make CPU time meaningless otherwise */
        qsort(cpu, all, sizeof *cpu, cmp_double);
        printf("cpu median %.3f ms  min %.3f  (this thread's CPU time: what other load on the machine does not inflate)\n",
               cpu[all / 2], cpu[0]);
    }
    if (N > 1)
        printf("images/s %.1f (%d workers at once, %zu batches of %d in %.1f ms)\n", all * B * 1000.0 / (t1 - t0), N, all,
               B, t1 - t0);
    else
        printf("images/s %.1f\n", B * 1000.0 / med);
    printf("workspace %.1f MiB (batch %d, %dx%d, %d threads)%s\n", r[0].ws_bytes / 1048576.0, B, H, W, o->threads,
           N > 1 ? " per worker" : "");
    print_memory(o, m);
    free(x);
    free(t);
    free(cpu);
    free(r);
    free(th);
    mf_model_free(m);
    return 0;
}

static int cmd_info(const opts *o)
{
    mf_model *m = load_model(o);
    const mf_arch *a = mf_model_arch(m);
    const mf_preprocess *p = mf_model_preprocess(m);
    int K = mf_model_num_classes(m);
    char *desc = mf_arch_to_json(a);
    printf("architecture: %s\n", a->name);
    printf("description: %s\n", desc);
    printf("classes: %d (", K);
    for (int i = 0; i < K && i < 5; i++) printf("%s%s", i ? ", " : "", mf_model_label(m, i));
    printf("%s)\n", K > 5 ? ", ..." : "");
    printf("parameters: %zu\n", mf_arch_param_count(a, K));
    printf("madds: %.1f M at %dx%d\n", mf_arch_madds(a, K, p->input_h, p->input_w) / 1e6, p->input_h, p->input_w);
    printf("preprocess: resize %d, crop %dx%d, %s, mean %.4g %.4g %.4g, std %.4g %.4g %.4g, channels %d\n", p->resize,
           p->input_h, p->input_w, p->interpolation, p->mean[0], p->mean[1], p->mean[2], p->std[0], p->std[1], p->std[2],
           p->channels);
    print_memory(o, m);
    printf("precision: %s\n", mf_precision_name(mf_model_precision(m)));
    printf("kernels: %s (fp32 layers: %s)\n", mf_model_kernels(m), mf_model_kernels_fp32(m));
    free(desc);
    mf_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    opts o;
    parse_opts(argc - 2, argv + 2, &o);
    int rc;
    if (!strcmp(argv[1], "run")) rc = cmd_run(&o);
    else if (!strcmp(argv[1], "predict")) rc = cmd_predict(&o);
    else if (!strcmp(argv[1], "bench")) rc = cmd_bench(&o);
    else if (!strcmp(argv[1], "info")) rc = cmd_info(&o);
    else {
        usage();
        die("unknown command '%s'", argv[1]);
    }
    free(o.files);
    return rc;
}
