/* metrics.c -- counters, gauges and histograms, rendered as Prometheus text;
 * see metrics.h. */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATUS_MIN 100
#define STATUS_SLOTS 500 /* 100..599 */
#define MAX_BOUNDS 16

static const double seconds_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64};
static const double load_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

#define N_SECONDS (int)(sizeof seconds_bounds / sizeof seconds_bounds[0])
#define N_BATCH (int)(sizeof batch_bounds / sizeof batch_bounds[0])
#define N_LOAD (int)(sizeof load_bounds / sizeof load_bounds[0])

typedef struct histogram {
    pthread_mutex_t mu;                     /* guards the fields below */
    const double *bounds;                   /* upper bounds, ascending (+Inf implied) */
    int n_bounds;                           /* entries in bounds */
    unsigned long long buckets[MAX_BOUNDS]; /* non-cumulative counts per bound */
    unsigned long long count;               /* observations, = the +Inf bucket */
    double sum;                             /* sum of observations */
} histogram;

struct mf_series {
    mf_series *next;                        /* in m->series */
    char *model, *version, *arch;           /* labels (owned) */
    int num_classes, input_h, input_w;      /* model_info labels */
    histogram hist[MF_HIST_COUNT];          /* stage histograms */
    _Atomic unsigned long long requests[STATUS_SLOTS]; /* by status */
    _Atomic long depth;                     /* images queued */
    _Atomic int state;                      /* mf_model_state */
};

/* Loads of one model name (kept after its versions are unloaded). */
typedef struct load_stats {
    struct load_stats *next;
    char *model;
    unsigned long long ok, failed, unloads;
    histogram seconds;
} load_stats;

struct mf_metrics {
    _Atomic unsigned long long requests[MF_ENDPOINT_COUNT][STATUS_SLOTS]; /* by endpoint, status */
    histogram duration[MF_ENDPOINT_COUNT]; /* request duration by endpoint */
    _Atomic long gauges[MF_GAUGE_COUNT];   /* current gauge values */
    _Atomic unsigned long long counters[MF_COUNTER_COUNT]; /* MF_COUNTERS */
    pthread_mutex_t mu;                    /* guards series and loads */
    mf_series *series;                     /* model versions */
    load_stats *loads;                     /* per model name */
    double start_time;                     /* process_start_time_seconds */
};

static const struct {
    const char *name; /* metric family name */
    const char *help; /* HELP text */
} hist_info[MF_HIST_COUNT] = {
    [MF_HIST_DECODE] = {"mobileformer_decode_seconds", "Time to decode one uploaded image."},
    [MF_HIST_PREPROCESS] = {"mobileformer_preprocess_seconds", "Time to resize, crop and normalize one image."},
    [MF_HIST_QUEUE] = {"mobileformer_queue_seconds", "Time one image waited in the queue for a worker."},
    [MF_HIST_INFERENCE] = {"mobileformer_inference_seconds", "Time of one forward pass of a batch."},
    [MF_HIST_BATCH_SIZE] = {"mobileformer_batch_size", "Images per forward pass."},
    [MF_HIST_REQUEST] = {"mobileformer_model_request_duration_seconds",
                         "Time from request headers to answer, requests to a model."},
    [MF_HIST_DECODE_WAIT] = {"mobileformer_decode_wait_seconds",
                             "Time one image waited for a thread of the decode pool."},
};

static const char *const state_names[MF_STATE_COUNT] = {
    [MF_STATE_LOADING] = "LOADING",
    [MF_STATE_READY] = "READY",
    [MF_STATE_UNLOADING] = "UNLOADING",
    [MF_STATE_UNAVAILABLE] = "UNAVAILABLE",
};

const char *mf_model_state_name(mf_model_state s)
{
    return (unsigned)s < MF_STATE_COUNT ? state_names[s] : "UNKNOWN";
}

static const struct {
    const char *family, *labels, *help;
} counter_info[MF_COUNTER_COUNT] = {
#define MF_COUNTER_ROW(name, f, l, h) [MF_COUNTER_##name] = {f, l, h},
    MF_COUNTERS(MF_COUNTER_ROW)
#undef MF_COUNTER_ROW
};

static void hist_init(histogram *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    h->bounds = bounds;
    h->n_bounds = n;
}

static void hist_observe(histogram *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    pthread_mutex_lock(&h->mu);
    if (i < h->n_bounds) h->buckets[i]++;
    h->count++;
    h->sum += v;
    pthread_mutex_unlock(&h->mu);
}

static char *dup_str(const char *s)
{
    s = s ? s : "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

mf_metrics *mf_metrics_new(void)
{
    mf_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    for (int e = 0; e < MF_ENDPOINT_COUNT; e++) hist_init(&m->duration[e], seconds_bounds, N_SECONDS);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    return m;
}

static void series_destroy(mf_series *s)
{
    for (int h = 0; h < MF_HIST_COUNT; h++) pthread_mutex_destroy(&s->hist[h].mu);
    free(s->model);
    free(s->version);
    free(s->arch);
    free(s);
}

void mf_metrics_free(mf_metrics *m)
{
    if (!m) return;
    for (int e = 0; e < MF_ENDPOINT_COUNT; e++) pthread_mutex_destroy(&m->duration[e].mu);
    while (m->series) {
        mf_series *s = m->series;
        m->series = s->next;
        series_destroy(s);
    }
    while (m->loads) {
        load_stats *l = m->loads;
        m->loads = l->next;
        pthread_mutex_destroy(&l->seconds.mu);
        free(l->model);
        free(l);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

mf_series *mf_series_new(mf_metrics *m, const char *model, const char *version, const char *arch, int num_classes,
                         int input_h, int input_w)
{
    if (!m) return NULL;
    mf_series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->model = dup_str(model);
    s->version = dup_str(version);
    s->arch = dup_str(arch);
    if (!s->model || !s->version || !s->arch) {
        free(s->model);
        free(s->version);
        free(s->arch);
        free(s);
        return NULL;
    }
    s->num_classes = num_classes;
    s->input_h = input_h;
    s->input_w = input_w;
    for (int h = 0; h < MF_HIST_COUNT; h++)
        hist_init(&s->hist[h], h == MF_HIST_BATCH_SIZE ? batch_bounds : seconds_bounds,
                  h == MF_HIST_BATCH_SIZE ? N_BATCH : N_SECONDS);
    atomic_store(&s->state, MF_STATE_LOADING);
    pthread_mutex_lock(&m->mu);
    /* in creation order, so the text lists models in a stable order */
    mf_series **p = &m->series;
    while (*p) p = &(*p)->next;
    *p = s;
    pthread_mutex_unlock(&m->mu);
    return s;
}

void mf_series_free(mf_metrics *m, mf_series *s)
{
    if (!m || !s) return;
    pthread_mutex_lock(&m->mu);
    for (mf_series **p = &m->series; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&m->mu);
    series_destroy(s);
}

void mf_series_observe(mf_series *s, mf_histogram h, double value)
{
    if (s && (unsigned)h < MF_HIST_COUNT) hist_observe(&s->hist[h], value);
}

void mf_series_request(mf_series *s, int status, double seconds)
{
    if (!s) return;
    if (status >= STATUS_MIN && status < STATUS_MIN + STATUS_SLOTS)
        atomic_fetch_add_explicit(&s->requests[status - STATUS_MIN], 1, memory_order_relaxed);
    hist_observe(&s->hist[MF_HIST_REQUEST], seconds);
}

unsigned long long mf_series_request_count(mf_series *s, int status)
{
    if (!s || status < STATUS_MIN || status >= STATUS_MIN + STATUS_SLOTS) return 0;
    return atomic_load_explicit(&s->requests[status - STATUS_MIN], memory_order_relaxed);
}

void mf_series_depth(mf_series *s, long delta)
{
    if (s) atomic_fetch_add_explicit(&s->depth, delta, memory_order_relaxed);
}

void mf_series_state(mf_series *s, mf_model_state st)
{
    if (s) atomic_store(&s->state, (int)st);
}

static load_stats *loads_of(mf_metrics *m, const char *model)
{
    for (load_stats *l = m->loads; l; l = l->next)
        if (strcmp(l->model, model) == 0) return l;
    load_stats *l = calloc(1, sizeof *l);
    if (!l || !(l->model = dup_str(model))) {
        free(l);
        return NULL;
    }
    hist_init(&l->seconds, load_bounds, N_LOAD);
    load_stats **p = &m->loads;
    while (*p) p = &(*p)->next;
    *p = l;
    return l;
}

void mf_metrics_model_load(mf_metrics *m, const char *model, int ok, double seconds)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    load_stats *l = loads_of(m, model);
    if (l) {
        if (ok) l->ok++;
        else l->failed++;
        hist_observe(&l->seconds, seconds);
    }
    pthread_mutex_unlock(&m->mu);
}

void mf_metrics_model_unload(mf_metrics *m, const char *model)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    load_stats *l = loads_of(m, model);
    if (l) l->unloads++;
    pthread_mutex_unlock(&m->mu);
}

void mf_metrics_request(mf_metrics *m, mf_endpoint e, int status, double seconds)
{
    if (!m) return;
    if ((unsigned)e >= MF_ENDPOINT_COUNT) e = MF_ENDPOINT_OTHER;
    if (status >= STATUS_MIN && status < STATUS_MIN + STATUS_SLOTS)
        atomic_fetch_add_explicit(&m->requests[e][status - STATUS_MIN], 1, memory_order_relaxed);
    hist_observe(&m->duration[e], seconds);
}

unsigned long long mf_metrics_request_count(mf_metrics *m, mf_endpoint e, int status)
{
    if (!m || (unsigned)e >= MF_ENDPOINT_COUNT || status < STATUS_MIN || status >= STATUS_MIN + STATUS_SLOTS)
        return 0;
    return atomic_load_explicit(&m->requests[e][status - STATUS_MIN], memory_order_relaxed);
}

void mf_metrics_count(mf_metrics *m, mf_counter c, unsigned long long n)
{
    if (m && (unsigned)c < MF_COUNTER_COUNT) atomic_fetch_add_explicit(&m->counters[c], n, memory_order_relaxed);
}

unsigned long long mf_metrics_counter(mf_metrics *m, mf_counter c)
{
    if (!m || (unsigned)c >= MF_COUNTER_COUNT) return 0;
    return atomic_load_explicit(&m->counters[c], memory_order_relaxed);
}

void mf_metrics_gauge_add(mf_metrics *m, mf_gauge g, long delta)
{
    if (m && (unsigned)g < MF_GAUGE_COUNT) atomic_fetch_add_explicit(&m->gauges[g], delta, memory_order_relaxed);
}

void mf_metrics_gauge_set(mf_metrics *m, mf_gauge g, long value)
{
    if (m && (unsigned)g < MF_GAUGE_COUNT) atomic_store_explicit(&m->gauges[g], value, memory_order_relaxed);
}

long mf_metrics_gauge_get(mf_metrics *m, mf_gauge g)
{
    if (!m || (unsigned)g >= MF_GAUGE_COUNT) return 0;
    return atomic_load_explicit(&m->gauges[g], memory_order_relaxed);
}

/* A label value with \, " and newline escaped as the format requires. */
static void put_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* `model="...",version="...",` of a series (escaped), into buf. */
static void series_labels(const mf_series *s, char *buf, size_t n)
{
    FILE *f = fmemopen(buf, n, "w");
    if (!f) {
        buf[0] = '\0';
        return;
    }
    fputs("model=\"", f);
    put_label(f, s->model);
    fputs("\",version=\"", f);
    put_label(f, s->version);
    fputs("\",", f);
    fclose(f);
    buf[n - 1] = '\0';
}

/* Buckets, sum and count of one histogram series; `labels` is "" or
 * `key="value",` (with the trailing comma). */
static void put_histogram(FILE *f, const char *name, const char *labels, histogram *h)
{
    unsigned long long buckets[MAX_BOUNDS], count;
    double sum;
    pthread_mutex_lock(&h->mu);
    memcpy(buckets, h->buckets, sizeof buckets);
    count = h->count;
    sum = h->sum;
    pthread_mutex_unlock(&h->mu);
    unsigned long long cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += buckets[i];
        fprintf(f, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, h->bounds[i], cum);
    }
    fprintf(f, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, count);
    size_t ll = strlen(labels);
    if (ll) {
        /* drop the trailing comma for the plain series */
        fprintf(f, "%s_sum{%.*s} %.9g\n", name, (int)ll - 1, labels, sum);
        fprintf(f, "%s_count{%.*s} %llu\n", name, (int)ll - 1, labels, count);
    } else {
        fprintf(f, "%s_sum %.9g\n%s_count %llu\n", name, sum, name, count);
    }
}

static void render_series(FILE *f, mf_metrics *m)
{
    char lb[600];
    fputs("# HELP mobileformer_model_requests_total Requests to a model version, by status.\n"
          "# TYPE mobileformer_model_requests_total counter\n",
          f);
    for (mf_series *s = m->series; s; s = s->next) {
        series_labels(s, lb, sizeof lb);
        for (int st = 0; st < STATUS_SLOTS; st++) {
            unsigned long long v = atomic_load_explicit(&s->requests[st], memory_order_relaxed);
            if (v) fprintf(f, "mobileformer_model_requests_total{%sstatus=\"%d\"} %llu\n", lb, st + STATUS_MIN, v);
        }
    }
    for (int h = 0; h < MF_HIST_COUNT; h++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", hist_info[h].name, hist_info[h].help, hist_info[h].name);
        for (mf_series *s = m->series; s; s = s->next) {
            series_labels(s, lb, sizeof lb);
            put_histogram(f, hist_info[h].name, lb, &s->hist[h]);
        }
    }
    fputs("# HELP mobileformer_queue_depth Images waiting for an inference worker.\n"
          "# TYPE mobileformer_queue_depth gauge\n",
          f);
    for (mf_series *s = m->series; s; s = s->next) {
        series_labels(s, lb, sizeof lb);
        size_t n = strlen(lb);
        fprintf(f, "mobileformer_queue_depth{%.*s} %ld\n", (int)(n ? n - 1 : 0), lb, atomic_load(&s->depth));
    }
    fputs("# HELP mobileformer_model_state A model version's state (1 for the state it is in).\n"
          "# TYPE mobileformer_model_state gauge\n",
          f);
    for (mf_series *s = m->series; s; s = s->next) {
        series_labels(s, lb, sizeof lb);
        int cur = atomic_load(&s->state);
        for (int st = 0; st < MF_STATE_COUNT; st++)
            fprintf(f, "mobileformer_model_state{%sstate=\"%s\"} %d\n", lb, state_names[st], st == cur);
    }
    fputs("# HELP mobileformer_model_info The model versions being served (always 1).\n"
          "# TYPE mobileformer_model_info gauge\n",
          f);
    for (mf_series *s = m->series; s; s = s->next) {
        series_labels(s, lb, sizeof lb);
        fprintf(f, "mobileformer_model_info{%sarch=\"", lb);
        put_label(f, s->arch);
        fprintf(f, "\",num_classes=\"%d\",input_size=\"%dx%d\"} 1\n", s->num_classes, s->input_h, s->input_w);
    }
    fputs("# HELP mobileformer_model_loads_total Loads of a model's versions, by result.\n"
          "# TYPE mobileformer_model_loads_total counter\n",
          f);
    for (load_stats *l = m->loads; l; l = l->next) {
        fputs("mobileformer_model_loads_total{model=\"", f);
        put_label(f, l->model);
        fprintf(f, "\",result=\"ok\"} %llu\n", l->ok);
        fputs("mobileformer_model_loads_total{model=\"", f);
        put_label(f, l->model);
        fprintf(f, "\",result=\"failed\"} %llu\n", l->failed);
    }
    fputs("# HELP mobileformer_model_unloads_total Versions of a model unloaded.\n"
          "# TYPE mobileformer_model_unloads_total counter\n",
          f);
    for (load_stats *l = m->loads; l; l = l->next) {
        fputs("mobileformer_model_unloads_total{model=\"", f);
        put_label(f, l->model);
        fprintf(f, "\"} %llu\n", l->unloads);
    }
    fputs("# HELP mobileformer_model_load_seconds Time to load one version of a model.\n"
          "# TYPE mobileformer_model_load_seconds histogram\n",
          f);
    for (load_stats *l = m->loads; l; l = l->next) {
        char lab[400];
        FILE *g = fmemopen(lab, sizeof lab, "w");
        if (!g) continue;
        fputs("model=\"", g);
        put_label(g, l->model);
        fputs("\",", g);
        fclose(g);
        lab[sizeof lab - 1] = '\0';
        put_histogram(f, "mobileformer_model_load_seconds", lab, &l->seconds);
    }
}

char *mf_metrics_render(mf_metrics *m, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;

    fputs("# HELP mobileformer_requests_total HTTP requests answered, by endpoint and status.\n"
          "# TYPE mobileformer_requests_total counter\n",
          f);
    for (int e = 0; e < MF_ENDPOINT_COUNT; e++)
        for (int s = 0; s < STATUS_SLOTS; s++) {
            unsigned long long v = atomic_load_explicit(&m->requests[e][s], memory_order_relaxed);
            if (v)
                fprintf(f, "mobileformer_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", mf_endpoint_labels[e],
                        s + STATUS_MIN, v);
        }

    fputs("# HELP mobileformer_request_duration_seconds Time from request headers to answer.\n"
          "# TYPE mobileformer_request_duration_seconds histogram\n",
          f);
    for (int e = 0; e < MF_ENDPOINT_COUNT; e++) {
        pthread_mutex_lock(&m->duration[e].mu);
        unsigned long long c = m->duration[e].count;
        pthread_mutex_unlock(&m->duration[e].mu);
        if (!c && e != MF_ENDPOINT_PREDICT) continue;
        char labels[64];
        snprintf(labels, sizeof labels, "endpoint=\"%s\",", mf_endpoint_labels[e]);
        put_histogram(f, "mobileformer_request_duration_seconds", labels, &m->duration[e]);
    }

    pthread_mutex_lock(&m->mu);
    render_series(f, m);
    pthread_mutex_unlock(&m->mu);

    fprintf(f,
            "# HELP mobileformer_inflight_requests Requests received and not yet answered.\n"
            "# TYPE mobileformer_inflight_requests gauge\n"
            "mobileformer_inflight_requests %ld\n"
            "# HELP mobileformer_open_connections Client connections open now.\n"
            "# TYPE mobileformer_open_connections gauge\n"
            "mobileformer_open_connections %ld\n"
            "# HELP mobileformer_inflight_body_bytes Bytes reserved by request bodies being received.\n"
            "# TYPE mobileformer_inflight_body_bytes gauge\n"
            "mobileformer_inflight_body_bytes %ld\n",
            mf_metrics_gauge_get(m, MF_GAUGE_INFLIGHT), mf_metrics_gauge_get(m, MF_GAUGE_CONNECTIONS),
            mf_metrics_gauge_get(m, MF_GAUGE_BODY_BYTES));
    for (int c = 0; c < MF_COUNTER_COUNT; c++) {
        if (c == 0 || strcmp(counter_info[c].family, counter_info[c - 1].family) != 0)
            fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", counter_info[c].family, counter_info[c].help,
                    counter_info[c].family);
        unsigned long long v = atomic_load_explicit(&m->counters[c], memory_order_relaxed);
        if (counter_info[c].labels[0])
            fprintf(f, "%s{%s} %llu\n", counter_info[c].family, counter_info[c].labels, v);
        else
            fprintf(f, "%s %llu\n", counter_info[c].family, v);
    }

    fprintf(f,
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n"
            "# TYPE process_start_time_seconds gauge\n"
            "process_start_time_seconds %.3f\n",
            m->start_time);

    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len) *len = n;
    return buf;
}
