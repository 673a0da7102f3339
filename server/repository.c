/* repository.c -- models, versions, loading and replacing them; see repository.h.
 *
 * DESIGN
 *
 * One mutex (r->mu) guards the model table, every version record's state and
 * its holder count.  A request's mf_repo_acquire takes it for a few hundred
 * nanoseconds; nothing slow ever runs under it.  The loader thread does the
 * slow work -- reading a file, folding and packing weights, reserving
 * workspaces, freeing a retired version -- with the mutex released, and
 * takes it only to publish (LOADING -> READY, and the version it replaces
 * READY -> UNLOADING in the same critical section, so the switch is atomic:
 * every request sees the old version or the new one, never neither) or to
 * retire.
 *
 * A retired version (UNLOADING) is no longer handed out; it is freed when its
 * holder count reaches zero -- by mf_version_release on a request's thread,
 * which only moves it to the graveyard and wakes the loader, so no HTTP thread
 * ever frees a model.  Requests queued or running on it finish on it: their
 * jobs live in its queue, and the queue is freed only after the last holder
 * (every job belongs to a holder) let go.
 *
 * Records.  Each load of a version is a record; the index shows every
 * record: LOADING ones, the READY ones, UNLOADING ones still held, and one
 * UNAVAILABLE record per version that failed or was unloaded (with the
 * reason).  Older records of a version are dropped once a newer one exists.
 */
#include "repository.h"

#include "endpoints.h"
#include "log.h"
#include "mf_util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_NAME 128
#define MAX_VERSIONS 64 /* version directories considered per model */

typedef struct vrec {
    mf_version v;             /* what requests see (immutable once READY) */
    struct vrec *next;        /* in the model's records */
    struct model_entry *owner;/* its model */
    mf_model_state state;     /* LOADING, READY, UNLOADING, UNAVAILABLE */
    char reason[320];         /* why UNAVAILABLE (or what it is doing) */
    int refs;                 /* holders: requests (r->mu) */
    int dead;                 /* resources freed: only the index keeps it */
    struct stat st;           /* the file as loaded (poll mode compares) */
    mf_model *model;          /* owned */
    char **labels;            /* owned copy of the labels in use */
    char *meta_tail;          /* the metadata after name and versions (owned) */
} vrec;

typedef struct model_entry {
    char name[MAX_NAME + 1];  /* its name */
    struct model_entry *next; /* in r->models */
    vrec *recs;               /* every record, newest first */
    int wanted;               /* explicit mode: loaded (by the start list or the API) */
    int synced;               /* sync_model has run for it once */
    struct stat conf;         /* its config.json when last read (st_ino 0: none) */
    char problem[400];        /* config.json or directory problem, "" if none */
} model_entry;

typedef enum task_kind { T_LOAD = 0, T_UNLOAD, T_RESCAN } task_kind;

typedef struct task {
    task_kind kind;
    char name[MAX_NAME + 1];
    mf_repo_done_fn done;
    void *user;
    struct task *next;
} task;

struct mf_repo {
    const mf_config *cfg;     /* borrowed */
    mf_batcher *b;            /* borrowed */
    mf_metrics *metrics;      /* borrowed */
    int single;               /* no directory: the one --model file */
    int mode;                 /* 0 none, 1 explicit, 2 poll */
    pthread_mutex_t mu;       /* guards models, records' state and refs, graveyard */
    model_entry *models;      /* the models known */
    vrec *graveyard;          /* retired with no holder: the loader frees them */
    pthread_t tid;            /* the loader */
    int started;              /* the loader runs */
    pthread_mutex_t tmu;      /* guards tasks, stop */
    pthread_cond_t tcv;       /* a task, a grave, or stop */
    task *tasks, **tasks_tail;/* FIFO */
    int wake;                 /* the graveyard has work */
    int stop;                 /* the loader must exit */
};

/* ---- config.json ---------------------------------------------------------- */

void mf_model_config_defaults(const mf_config *cfg, mf_model_config *c)
{
    memset(c, 0, sizeof *c);
    c->max_batch = cfg->max_batch;
    c->max_delay_us = cfg->max_delay_us;
    c->max_queue = cfg->max_queue;
    c->request_timeout_ms = cfg->request_timeout_ms;
    c->policy = MF_POLICY_LATEST;
    c->latest_n = 1;
    mf_precision pr = MF_PRECISION_FP32;
    mf_precision_parse(cfg->precision, &pr); /* the setting is one of the two (config.c) */
    c->precision = pr;
}

void mf_model_config_free(mf_model_config *c)
{
    if (c->labels)
        for (int i = 0; i < c->n_labels; i++) free(c->labels[i]);
    free(c->labels);
    c->labels = NULL;
    c->n_labels = 0;
}

static int int_in(json_t *v, long long lo, long long hi, int *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

int mf_model_config_parse(const char *text, size_t len, const char *origin, const mf_config *defaults,
                          mf_model_config *out, char *err, size_t errlen)
{
    mf_model_config_defaults(defaults, out);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        mf_set_err(err, errlen, "%s: line %d: %s", origin, je.line, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        mf_set_err(err, errlen, "%s: must be a JSON object of settings", origin);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
#define BAD(...) do { mf_set_err(err, errlen, __VA_ARGS__); goto out; } while (0)
        if (!strcmp(key, "max_batch")) {
            /* config.c's max_batch setting has the same bound (1..1024) */
            if (int_in(v, 1, MF_MAX_BATCH_LIMIT, &out->max_batch))
                BAD("%s: max_batch must be an integer in 1..%d", origin, MF_MAX_BATCH_LIMIT);
        } else if (!strcmp(key, "max_delay_us")) {
            if (int_in(v, 0, 10000000, &out->max_delay_us))
                BAD("%s: max_delay_us must be an integer in 0..10000000", origin);
        } else if (!strcmp(key, "max_queue")) {
            if (int_in(v, 1, 1000000, &out->max_queue)) BAD("%s: max_queue must be an integer in 1..1000000", origin);
        } else if (!strcmp(key, "request_timeout_ms")) {
            if (int_in(v, 0, 3600000, &out->request_timeout_ms))
                BAD("%s: request_timeout_ms must be an integer in 0..3600000", origin);
        } else if (!strcmp(key, "precision")) {
            if (!json_is_string(v)) BAD("%s: precision must be \"fp32\" or \"bf16\"", origin);
            mf_precision pr;
            if (mf_precision_parse(json_string_value(v), &pr) != 0)
                BAD("%s: precision must be \"fp32\" or \"bf16\", got \"%.32s\"", origin, json_string_value(v));
            out->precision = pr;
        } else if (!strcmp(key, "version_policy")) {
            json_t *x;
            if (!json_is_object(v) || json_object_size(v) != 1)
                BAD("%s: version_policy must be one of {\"latest\": N}, {\"all\": true}, {\"specific\": [..]}",
                    origin);
            if ((x = json_object_get(v, "latest"))) {
                out->policy = MF_POLICY_LATEST;
                if (int_in(x, 1, MAX_VERSIONS, &out->latest_n))
                    BAD("%s: version_policy latest must be an integer in 1..%d", origin, MAX_VERSIONS);
            } else if ((x = json_object_get(v, "all"))) {
                if (!json_is_true(x)) BAD("%s: version_policy all must be true", origin);
                out->policy = MF_POLICY_ALL;
            } else if ((x = json_object_get(v, "specific"))) {
                size_t n = json_array_size(x);
                if (!json_is_array(x) || n < 1 || n > 16)
                    BAD("%s: version_policy specific must be a list of 1..16 versions", origin);
                out->policy = MF_POLICY_SPECIFIC;
                out->n_specific = (int)n;
                for (size_t i = 0; i < n; i++) {
                    json_t *e = json_array_get(x, i);
                    if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > INT_MAX)
                        BAD("%s: version_policy specific: versions are positive integers", origin);
                    out->specific[i] = (long)json_integer_value(e);
                }
            } else {
                BAD("%s: version_policy must be one of {\"latest\": N}, {\"all\": true}, {\"specific\": [..]}",
                    origin);
            }
        } else if (!strcmp(key, "labels")) {
            size_t n = json_array_size(v);
            if (!json_is_array(v) || n < 1 || n > 100000) BAD("%s: labels must be a list of strings", origin);
            mf_model_config_free(out);
            out->labels = calloc(n + 1, sizeof *out->labels);
            if (!out->labels) BAD("%s: out of memory", origin);
            for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(v, i);
                if (!json_is_string(e) || json_string_length(e) > 255 ||
                    strlen(json_string_value(e)) != json_string_length(e))
                    BAD("%s: labels[%zu] must be a string of at most 255 bytes", origin, i);
                out->labels[i] = strdup(json_string_value(e));
                if (!out->labels[i]) BAD("%s: out of memory", origin);
                out->n_labels = (int)i + 1;
            }
        } else {
            BAD("%s: unknown setting '%.64s' (max_batch, max_delay_us, max_queue, request_timeout_ms, "
                "version_policy, precision, labels)",
                origin, key);
        }
#undef BAD
    }
    rc = 0;
out:
    if (rc) mf_model_config_free(out);
    json_decref(root);
    return rc;
}

/* ---- names and directories ----------------------------------------------- */

/* snprintf for paths: -1 (out left truncated) if the path did not fit. */
__attribute__((format(printf, 3, 4))) static int path_fmt(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

static int valid_name(const char *s, size_t n)
{
    if (n < 1 || n > MAX_NAME || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return 0;
    }
    return 1;
}

/* A version directory name: 1..9 digits, no leading zero. */
static long version_number(const char *s, size_t n)
{
    if (n < 1 || n > 9 || s[0] == '0') return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static char *read_small(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        mf_set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    int big = buf && n == (1 << 20) - 1 && fgetc(f) != EOF;
    fclose(f);
    if (!buf || big) {
        mf_set_err(err, errlen, "%s: %s", path, buf ? "larger than 1 MiB" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The model's settings: DIR/<name>/config.json if it exists (*st: its
 * stat, zeroed if there is none). */
static int model_settings(mf_repo *r, const char *name, mf_model_config *mc, struct stat *st, char *err,
                          size_t errlen)
{
    memset(st, 0, sizeof *st);
    if (r->single) {
        mf_model_config_defaults(r->cfg, mc);
        return 0;
    }
    char path[PATH_MAX];
    path_fmt(path, sizeof path, "%s/%s/config.json", r->cfg->model_repository, name);
    if (stat(path, st) != 0) {
        memset(st, 0, sizeof *st);
        mf_model_config_defaults(r->cfg, mc);
        return 0;
    }
    size_t len;
    char *text = read_small(path, &len, err, errlen);
    if (!text) return -1;
    int rc = mf_model_config_parse(text, len, path, r->cfg, mc, err, errlen);
    free(text);
    return rc;
}

/* Versions of name on disk (those with a model file), ascending; the count. */
static int disk_versions(mf_repo *r, const char *name, long *out, int cap)
{
    if (r->single) {
        out[0] = 1;
        return 1;
    }
    char path[PATH_MAX];
    path_fmt(path, sizeof path, "%s/%s", r->cfg->model_repository, name);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        long v = version_number(e->d_name, strlen(e->d_name));
        if (v < 0) continue;
        char f[PATH_MAX];
        struct stat st;
        if (path_fmt(f, sizeof f, "%s/%s/model.safetensors", path, e->d_name) != 0) continue;
        if (stat(f, &st) == 0 && S_ISREG(st.st_mode)) out[n++] = v;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort, ascending */
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            long t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static void version_path(mf_repo *r, const char *name, long v, char *out, size_t n)
{
    if (r->single) path_fmt(out, n, "%s", r->cfg->model);
    else path_fmt(out, n, "%s/%s/%ld/model.safetensors", r->cfg->model_repository, name, v);
}

/* Which of the versions on disk the policy serves. */
static int policy_select(const mf_model_config *mc, const long *disk, int n, long *out)
{
    int k = 0;
    if (mc->policy == MF_POLICY_ALL) {
        for (int i = 0; i < n; i++) out[k++] = disk[i];
    } else if (mc->policy == MF_POLICY_SPECIFIC) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < mc->n_specific; j++)
                if (disk[i] == mc->specific[j]) out[k++] = disk[i];
    } else {
        for (int i = n - mc->latest_n > 0 ? n - mc->latest_n : 0; i < n; i++) out[k++] = disk[i];
    }
    return k;
}

/* ---- records ----------------------------------------------------------------- */

static model_entry *find_model(mf_repo *r, const char *name, size_t len)
{
    for (model_entry *m = r->models; m; m = m->next)
        if (strlen(m->name) == len && memcmp(m->name, name, len) == 0) return m;
    return NULL;
}

static model_entry *add_model(mf_repo *r, const char *name)
{
    model_entry *m = find_model(r, name, strlen(name));
    if (m) return m;
    m = calloc(1, sizeof *m);
    if (!m) return NULL;
    snprintf(m->name, sizeof m->name, "%s", name);
    model_entry **p = &r->models;
    while (*p && strcmp((*p)->name, name) < 0) p = &(*p)->next; /* sorted by name */
    m->next = *p;
    *p = m;
    return m;
}

/* Free what a record holds (loader thread, no holder left). */
static void rec_release_resources(mf_repo *r, vrec *v)
{
    if (v->v.queue) mf_queue_free(v->v.queue);
    v->v.queue = NULL;
    mf_model_free(v->model);
    v->model = NULL;
    v->v.model = NULL;
    if (v->labels) {
        for (int i = 0; v->labels[i]; i++) free(v->labels[i]);
        free(v->labels);
    }
    v->labels = NULL;
    v->v.labels = NULL;
    free(v->meta_tail);
    v->meta_tail = NULL;
    v->v.meta_tail = NULL;
    if (v->v.series) mf_series_free(r->metrics, v->v.series);
    v->v.series = NULL;
    v->dead = 1;
}

/* Retire a READY record (r->mu held; the loader thread, which reaps after
 * every task): no new holder; freed once the last one lets go. */
static void retire(mf_repo *r, vrec *v, const char *why)
{
    (void)r;
    if (v->state != MF_STATE_READY) return;
    v->state = MF_STATE_UNLOADING;
    snprintf(v->reason, sizeof v->reason, "%s", why);
    mf_series_state(v->v.series, MF_STATE_UNLOADING);
}

/* Retired records nobody holds: free them (loader; r->mu not held). */
static int reap(mf_repo *r)
{
    int freed = 0;
    for (;;) {
        vrec *found = NULL;
        pthread_mutex_lock(&r->mu);
        for (model_entry *m = r->models; m && !found; m = m->next)
            for (vrec *v = m->recs; v && !found; v = v->next)
                if (v->state == MF_STATE_UNLOADING && v->refs == 0 && !v->dead) found = v;
        pthread_mutex_unlock(&r->mu);
        if (!found) break;
        const uint64_t t0 = mf_now_ns();
        rec_release_resources(r, found);
        malloc_trim(0); /* the freed weights' pages back to the system, before the index says so */
        mf_metrics_model_unload(r->metrics, found->owner->name);
        pthread_mutex_lock(&r->mu);
        found->state = MF_STATE_UNAVAILABLE;
        /* keep the reason: "unloaded", "replaced by a reload", "version policy" */
        pthread_mutex_unlock(&r->mu);
        mf_log_event("info", "model version unloaded",
                     json_pack("{s:s,s:s,s:s,s:f}", "model", found->owner->name, "version", found->v.version,
                               "reason", found->reason, "free_ms", mf_ms_since(t0)));
        freed++;
    }
    return freed;
}

/* Drop dead records of a version once a newer record of it exists
 * (r->mu held). */
static void prune(model_entry *m)
{
    for (vrec **p = &m->recs; *p;) {
        vrec *v = *p;
        int newer = 0;
        for (vrec *o = m->recs; o != v; o = o->next)
            if (o->v.number == v->v.number) newer = 1;
        if (newer && (v->dead || (v->state == MF_STATE_UNAVAILABLE && !v->model))) {
            *p = v->next;
            free(v);
            continue;
        }
        p = &v->next;
    }
}

/* Load version `number` of model m from path into a new record; publish it
 * (retiring the record it replaces).  Loader thread. */
static int load_version(mf_repo *r, model_entry *m, const mf_model_config *mc, long number, char *msg, size_t msglen)
{
    vrec *v = calloc(1, sizeof *v);
    if (!v) {
        mf_set_err(msg, msglen, "out of memory");
        return -1;
    }
    v->owner = m;
    v->v.name = m->name;
    v->v.number = number;
    snprintf(v->v.version, sizeof v->v.version, "%ld", number);
    v->state = MF_STATE_LOADING;
    snprintf(v->reason, sizeof v->reason, "loading");
    char path[PATH_MAX];
    version_path(r, m->name, number, path, sizeof path);
    pthread_mutex_lock(&r->mu);
    v->next = m->recs;
    m->recs = v;
    pthread_mutex_unlock(&r->mu);

    const uint64_t t0 = mf_now_ns();
    char err[1024] = "";
    int ok = 0;
    if (stat(path, &v->st) != 0) {
        mf_set_err(err, sizeof err, "%s: %s", path, strerror(errno));
        goto done;
    }
    const mf_model_options opts = {.precision = (mf_precision)mc->precision};
    mf_status ms = mf_model_load_opts(path, &opts, &v->model, err, sizeof err);
    if (ms != MF_OK) {
        char e2[sizeof err];
        path_fmt(e2, sizeof e2, "%s: %s", path, err[0] ? err : mf_status_str(ms));
        memcpy(err, e2, sizeof err);
        goto done;
    }
    const int classes = mf_model_num_classes(v->model);
    if (mc->labels && mc->n_labels != classes) {
        mf_set_err(err, sizeof err, "config.json of %s: labels has %d entries, the model has %d classes", m->name,
                   mc->n_labels, classes);
        goto done;
    }
    v->labels = calloc((size_t)classes + 1, sizeof *v->labels);
    for (int i = 0; v->labels && i < classes; i++) {
        v->labels[i] = strdup(mc->labels ? mc->labels[i] : mf_model_label(v->model, i));
        if (!v->labels[i]) {
            mf_set_err(err, sizeof err, "out of memory");
            goto done;
        }
    }
    if (!v->labels) {
        mf_set_err(err, sizeof err, "out of memory");
        goto done;
    }
    v->v.model = v->model;
    v->v.labels = (const char *const *)v->labels;
    v->v.classes = classes;
    v->v.pre = mf_model_preprocess(v->model);
    v->v.precision = mc->precision;
    v->v.series = mf_series_new(r->metrics, m->name, v->v.version, mf_model_arch(v->model)->name, classes,
                                v->v.pre->input_h, v->v.pre->input_w);
    mf_queue_config qc = {.max_batch = mc->max_batch, .max_queue = mc->max_queue, .max_delay_us = mc->max_delay_us,
                          .request_timeout_ms = mc->request_timeout_ms, .series = v->v.series};
    if (mf_queue_new(r->b, v->model, &qc, &v->v.queue, err, sizeof err) != MF_BATCHER_OK) goto done;
    v->meta_tail = mf_metadata_tail(v->model, (const char *const *)v->labels);
    v->v.meta_tail = v->meta_tail;
    if (!v->meta_tail) {
        mf_set_err(err, sizeof err, "cannot build the metadata (out of memory)");
        goto done;
    }
    ok = 1;
done:;
    const double secs = mf_seconds_since(t0);
    mf_metrics_model_load(r->metrics, m->name, ok, secs);
    if (!ok) {
        rec_release_resources(r, v);
        v->dead = 0; /* an UNAVAILABLE record, kept for the index */
        pthread_mutex_lock(&r->mu);
        v->state = MF_STATE_UNAVAILABLE;
        snprintf(v->reason, sizeof v->reason, "%s", err);
        prune(m);
        pthread_mutex_unlock(&r->mu);
        if (!r->single || r->started) /* one --model file: main.c reports it, once */
            mf_log_event("error", "model version failed to load",
                         json_pack("{s:s,s:i,s:s}", "model", m->name, "version", (int)number, "reason", err));
        mf_set_err(msg, msglen, "%s", err);
        return -1;
    }
    pthread_mutex_lock(&r->mu);
    /* the switch: this record READY and the ones it replaces retired, at once */
    for (vrec *o = m->recs; o; o = o->next)
        if (o != v && o->v.number == number && o->state == MF_STATE_READY) retire(r, o, "replaced by a reload");
    v->state = MF_STATE_READY;
    v->reason[0] = '\0';
    mf_series_state(v->v.series, MF_STATE_READY);
    prune(m);
    pthread_mutex_unlock(&r->mu);
    mf_log_event("info", "model version loaded",
                 json_pack("{s:s,s:i,s:s,s:f,s:I,s:I,s:s,s:s,s:s}", "model", m->name, "version", (int)number, "file",
                           path, "load_ms", secs * 1e3, "weights_bytes", (json_int_t)mf_model_bytes(v->model),
                           "workspace_bytes", (json_int_t)mf_queue_bytes(v->v.queue), "precision",
                           mf_precision_name(mf_model_precision(v->model)), "kernels", mf_model_kernels(v->model),
                           "kernels_fp32", mf_model_kernels_fp32(v->model)));
    return 0;
}

/* Bring model `name` in line with its directory and policy.  force: reload
 * the versions already READY too (so does a changed config.json: its
 * settings belong to each version's queue).  A version that fails to load
 * retires nothing: what served before keeps serving.  Loader thread. */
static int sync_model(mf_repo *r, const char *name, int force, char *msg, size_t msglen)
{
    mf_model_config mc;
    char err[600] = "";
    pthread_mutex_lock(&r->mu);
    model_entry *m = add_model(r, name);
    pthread_mutex_unlock(&r->mu);
    if (!m) {
        mf_set_err(msg, msglen, "out of memory");
        return -1;
    }
    struct stat conf;
    if (model_settings(r, name, &mc, &conf, err, sizeof err) != 0) {
        pthread_mutex_lock(&r->mu);
        snprintf(m->problem, sizeof m->problem, "%s", err);
        pthread_mutex_unlock(&r->mu);
        mf_log_event("error", "model settings refused", json_pack("{s:s,s:s}", "model", name, "reason", err));
        mf_set_err(msg, msglen, "%s", err);
        return -1;
    }
    long disk[MAX_VERSIONS], want[MAX_VERSIONS];
    int nd = disk_versions(r, name, disk, MAX_VERSIONS), nw = policy_select(&mc, disk, nd, want);
    pthread_mutex_lock(&r->mu);
    if (m->synced && (conf.st_ino != m->conf.st_ino || conf.st_mtime != m->conf.st_mtime ||
                      conf.st_size != m->conf.st_size))
        force = 1; /* new settings: every version gets a queue with them */
    m->synced = 1;
    m->conf = conf;
    m->problem[0] = '\0';
    if (nw == 0)
        snprintf(m->problem, sizeof m->problem, "no version of '%s' on disk matches its version policy (%d found)",
                 name, nd);
    pthread_mutex_unlock(&r->mu);
    int failed = 0;
    char first_err[600] = "";
    for (int i = 0; i < nw; i++) {
        /* load when no READY record of it, or it changed on disk, or forced */
        int have = 0;
        char path[PATH_MAX];
        version_path(r, name, want[i], path, sizeof path);
        struct stat st;
        int exists = stat(path, &st) == 0;
        pthread_mutex_lock(&r->mu);
        for (vrec *v = m->recs; v; v = v->next)
            if (v->v.number == want[i] && v->state == MF_STATE_READY) {
                have = !force && exists && v->st.st_mtime == st.st_mtime && v->st.st_size == st.st_size &&
                       v->st.st_ino == st.st_ino;
                break;
            }
        pthread_mutex_unlock(&r->mu);
        if (have) continue;
        char e[600];
        if (load_version(r, m, &mc, want[i], e, sizeof e) != 0) {
            if (!failed++) snprintf(first_err, sizeof first_err, "%s", e);
        }
    }
    /* versions the policy no longer serves -- unless a load failed: then the
     * versions that served before go on serving (a corrupt new version
     * does not take the model down) */
    pthread_mutex_lock(&r->mu);
    for (vrec *v = m->recs; v && !failed; v = v->next) {
        if (v->state != MF_STATE_READY) continue;
        int keep = 0;
        for (int i = 0; i < nw; i++) keep |= v->v.number == want[i];
        if (!keep) retire(r, v, nd ? "unloaded: the version policy no longer selects it" : "unloaded: no version on disk");
    }
    pthread_mutex_unlock(&r->mu);
    mf_model_config_free(&mc);
    if (nw == 0) {
        mf_set_err(msg, msglen, "%s", m->problem);
        return -1;
    }
    if (failed) {
        mf_set_err(msg, msglen, "%s", first_err);
        return -1;
    }
    return 0;
}

static void unload_model(mf_repo *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    model_entry *m = find_model(r, name, strlen(name));
    if (m) {
        m->wanted = 0;
        for (vrec *v = m->recs; v; v = v->next) retire(r, v, "unloaded");
    }
    pthread_mutex_unlock(&r->mu);
}

/* Model directories of the repository (names only, valid ones). */
static int list_models(mf_repo *r, char names[][MAX_NAME + 1], int cap)
{
    if (r->single) {
        path_fmt(names[0], MAX_NAME + 1, "%s", r->cfg->model_name);
        return 1;
    }
    DIR *d = opendir(r->cfg->model_repository);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        size_t len = strlen(e->d_name);
        if (!valid_name(e->d_name, len)) continue;
        char p[PATH_MAX];
        struct stat st;
        if (path_fmt(p, sizeof p, "%s/%s", r->cfg->model_repository, e->d_name) != 0) continue;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) path_fmt(names[n++], MAX_NAME + 1, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

static void rescan(mf_repo *r)
{
    static char names[256][MAX_NAME + 1];
    int n = list_models(r, names, 256);
    if (n < 0) {
        mf_log_event("error", "cannot read the model repository",
                     json_pack("{s:s,s:s}", "dir", r->cfg->model_repository, "reason", strerror(errno)));
        return;
    }
    char msg[600];
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&r->mu);
        model_entry *m = find_model(r, names[i], strlen(names[i]));
        int wanted = r->mode == 2 || (m && m->wanted);
        pthread_mutex_unlock(&r->mu);
        if (wanted) sync_model(r, names[i], 0, msg, sizeof msg);
        else if (!m) {
            pthread_mutex_lock(&r->mu);
            add_model(r, names[i]); /* listed in the index, not loaded */
            pthread_mutex_unlock(&r->mu);
        }
    }
    /* models whose directory went away (poll mode) */
    if (r->mode == 2) {
        pthread_mutex_lock(&r->mu);
        for (model_entry *m = r->models; m; m = m->next) {
            int present = 0;
            for (int i = 0; i < n; i++) present |= strcmp(names[i], m->name) == 0;
            if (!present)
                for (vrec *v = m->recs; v; v = v->next) retire(r, v, "unloaded: its directory is gone");
        }
        pthread_mutex_unlock(&r->mu);
    }
}

/* ---- the loader thread -------------------------------------------------------- */

static void *loader_main(void *arg)
{
    mf_repo *r = arg;
    uint64_t next_poll = r->mode == 2 ? mf_now_ns() + (uint64_t)r->cfg->repository_poll_s * 1000000000ull : 0;
    pthread_mutex_lock(&r->tmu);
    for (;;) {
        while (!r->stop && !r->tasks && !r->wake) {
            if (next_poll) {
                uint64_t ns = next_poll;
                struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
                if (pthread_cond_timedwait(&r->tcv, &r->tmu, &ts) == ETIMEDOUT) break;
            } else {
                pthread_cond_wait(&r->tcv, &r->tmu);
            }
        }
        if (r->stop) break;
        task *t = r->tasks;
        if (t) {
            r->tasks = t->next;
            if (!r->tasks) r->tasks_tail = &r->tasks;
        }
        r->wake = 0;
        pthread_mutex_unlock(&r->tmu);
        if (t) {
            char msg[600] = "";
            int ok = 1;
            if (t->kind == T_LOAD) {
                pthread_mutex_lock(&r->mu);
                model_entry *m = add_model(r, t->name);
                if (m) m->wanted = 1;
                pthread_mutex_unlock(&r->mu);
                ok = sync_model(r, t->name, 1, msg, sizeof msg) == 0;
            } else if (t->kind == T_UNLOAD) {
                unload_model(r, t->name);
            } else {
                rescan(r);
            }
            reap(r);
            if (t->done) t->done(t->user, ok, msg);
            free(t);
        } else if (next_poll && mf_now_ns() >= next_poll) {
            rescan(r);
            next_poll = mf_now_ns() + (uint64_t)r->cfg->repository_poll_s * 1000000000ull;
        }
        reap(r);
        pthread_mutex_lock(&r->tmu);
    }
    pthread_mutex_unlock(&r->tmu);
    return NULL;
}

/* 0 queued; -1 out of memory; -2 the loader has stopped (mf_repo_stop). */
static int post(mf_repo *r, task_kind kind, const char *name, mf_repo_done_fn done, void *user)
{
    task *t = calloc(1, sizeof *t);
    if (!t) return -1;
    t->kind = kind;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    t->done = done;
    t->user = user;
    pthread_mutex_lock(&r->tmu);
    if (r->stop) {
        pthread_mutex_unlock(&r->tmu);
        free(t);
        return -2;
    }
    *r->tasks_tail = t;
    r->tasks_tail = &t->next;
    pthread_cond_signal(&r->tcv);
    pthread_mutex_unlock(&r->tmu);
    return 0;
}

static void wake_loader(mf_repo *r)
{
    pthread_mutex_lock(&r->tmu);
    r->wake = 1;
    pthread_cond_signal(&r->tcv);
    pthread_mutex_unlock(&r->tmu);
}

/* ---- the API ------------------------------------------------------------------ */

int mf_repo_open(const mf_config *cfg, mf_batcher *b, mf_metrics *m, mf_repo **out, char *err, size_t errlen)
{
    *out = NULL;
    mf_repo *r = calloc(1, sizeof *r);
    if (!r) {
        mf_set_err(err, errlen, "out of memory");
        return -1;
    }
    r->cfg = cfg;
    r->b = b;
    r->metrics = m;
    r->single = !cfg->model_repository[0];
    r->mode = !strcmp(cfg->model_control, "explicit") ? 1 : !strcmp(cfg->model_control, "poll") ? 2 : 0;
    r->tasks_tail = &r->tasks;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->tmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->tcv, &ca);
    pthread_condattr_destroy(&ca);
    if (r->single && !valid_name(cfg->model_name, strlen(cfg->model_name))) {
        mf_set_err(err, errlen,
                   "model_name '%s': a model name is 1 to %d of A-Z a-z 0-9 _ . - and does not begin with '.' "
                   "(it is part of URLs); set --model_name",
                   cfg->model_name, MAX_NAME);
        mf_repo_close(r);
        return -1;
    }
    if (!r->single) {
        struct stat st;
        if (stat(cfg->model_repository, &st) != 0 || !S_ISDIR(st.st_mode)) {
            mf_set_err(err, errlen, "model_repository %s: %s", cfg->model_repository,
                       errno ? strerror(errno) : "not a directory");
            mf_repo_close(r);
            return -1;
        }
    }
    /* the start: synchronous, on this thread (the loader is not running yet) */
    static char names[256][MAX_NAME + 1];
    int n = list_models(r, names, 256);
    char msg[600];
    for (int i = 0; i < n; i++) {
        int load = 1;
        if (r->mode == 1 && cfg->load_models[0]) {
            /* explicit: only the models named in load_models */
            load = 0;
            const char *p = cfg->load_models;
            size_t len = strlen(names[i]);
            while (*p) {
                const char *e = strchr(p, ',');
                size_t l = e ? (size_t)(e - p) : strlen(p);
                while (l && p[0] == ' ') p++, l--;
                while (l && p[l - 1] == ' ') l--;
                if (l == len && memcmp(p, names[i], len) == 0) load = 1;
                p = e ? e + 1 : p + strlen(p);
            }
        }
        pthread_mutex_lock(&r->mu);
        model_entry *me = add_model(r, names[i]);
        if (me) me->wanted = load;
        pthread_mutex_unlock(&r->mu);
        if (load) sync_model(r, names[i], 0, msg, sizeof msg);
    }
    reap(r);
    if (pthread_create(&r->tid, NULL, loader_main, r) != 0) {
        mf_set_err(err, errlen, "cannot start the model loader thread");
        mf_repo_close(r);
        return -1;
    }
    r->started = 1;
    *out = r;
    return 0;
}

void mf_repo_stop(mf_repo *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->tmu);
    r->stop = 1; /* post refuses from here on */
    pthread_cond_signal(&r->tcv);
    pthread_mutex_unlock(&r->tmu);
    if (r->started) pthread_join(r->tid, NULL); /* after its task in progress */
    r->started = 0;
    pthread_mutex_lock(&r->tmu);
    task *left = r->tasks;
    r->tasks = NULL;
    r->tasks_tail = &r->tasks;
    pthread_mutex_unlock(&r->tmu);
    while (left) {
        task *t = left;
        left = t->next;
        if (t->done) t->done(t->user, -1, "the server is shutting down");
        free(t);
    }
}

void mf_repo_close(mf_repo *r)
{
    if (!r) return;
    mf_repo_stop(r);
    while (r->models) {
        model_entry *m = r->models;
        r->models = m->next;
        while (m->recs) {
            vrec *v = m->recs;
            m->recs = v->next;
            if (!v->dead) rec_release_resources(r, v);
            free(v);
        }
        free(m);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->tmu);
    pthread_cond_destroy(&r->tcv);
    free(r);
}

void mf_repo_names(mf_repo *r, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    pthread_mutex_lock(&r->mu);
    for (model_entry *m = r->models; m && used + 1 < n; m = m->next) {
        int k = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", m->name);
        if (k < 0) break;
        used += (size_t)k;
    }
    pthread_mutex_unlock(&r->mu);
}

const mf_version *mf_repo_acquire(mf_repo *r, const char *name, size_t len, const char *version, size_t vlen,
                                  mf_err *e, char *msg, size_t msglen)
{
    long want = -1;
    if (version) {
        want = version_number(version, vlen);
        if (want < 0) {
            *e = MF_E_VERSION_NOT_FOUND;
            mf_set_err(msg, msglen, "version '%.*s' is not a version number", (int)(vlen > 32 ? 32 : vlen), version);
            return NULL;
        }
    }
    pthread_mutex_lock(&r->mu);
    model_entry *m = find_model(r, name, len);
    vrec *best = NULL;
    int any = 0;
    for (vrec *v = m ? m->recs : NULL; v; v = v->next) {
        if (version && v->v.number == want) any = 1;
        if (v->state != MF_STATE_READY) continue;
        if (version ? v->v.number == want : (!best || v->v.number > best->v.number)) best = v;
    }
    if (best) best->refs++;
    char problem[sizeof m->problem] = "";
    if (m && !best) memcpy(problem, m->problem, sizeof problem); /* the loader may rewrite it */
    pthread_mutex_unlock(&r->mu);
    if (best) return &best->v;
    if (!m) {
        char names[300];
        mf_repo_names(r, names, sizeof names);
        *e = MF_E_MODEL_NOT_FOUND;
        mf_set_err(msg, msglen, "no model named '%.*s' (this server has: %s)", (int)(len > 128 ? 128 : len), name,
                   names[0] ? names : "none");
    } else if (version && !any) {
        *e = MF_E_VERSION_NOT_FOUND;
        mf_set_err(msg, msglen, "model '%s' has no version %ld", m->name, want);
    } else {
        *e = MF_E_MODEL_NOT_READY;
        if (version) mf_set_err(msg, msglen, "version %ld of model '%s' is not ready", want, m->name);
        else mf_set_err(msg, msglen, "model '%s' has no version ready%s%s", m->name, problem[0] ? ": " : "",
                        problem);
    }
    return NULL;
}

void mf_version_release(mf_repo *r, const mf_version *pv)
{
    if (!pv) return;
    vrec *v = (vrec *)pv;
    pthread_mutex_lock(&r->mu);
    int grave = --v->refs == 0 && v->state == MF_STATE_UNLOADING;
    pthread_mutex_unlock(&r->mu);
    if (grave) wake_loader(r);
}

const char *mf_repo_default_model(mf_repo *r, char *msg, size_t msglen)
{
    if (r->cfg->default_model[0]) return r->cfg->default_model;
    const char *only = NULL;
    int n = 0;
    pthread_mutex_lock(&r->mu);
    for (model_entry *m = r->models; m; m = m->next, n++) only = m->name;
    pthread_mutex_unlock(&r->mu);
    if (n == 1) return only;
    char names[300];
    mf_repo_names(r, names, sizeof names);
    mf_set_err(msg, msglen,
               "this server has %d models (%s): name one in the path (/v1/models/{name}/predict) or set default_model",
               n, names);
    return NULL;
}

void mf_repo_first_error(mf_repo *r, char *buf, size_t n)
{
    buf[0] = '\0';
    pthread_mutex_lock(&r->mu);
    for (model_entry *m = r->models; m && !buf[0]; m = m->next) {
        if (m->problem[0]) snprintf(buf, n, "%s", m->problem);
        for (vrec *v = m->recs; v && !buf[0]; v = v->next)
            if (v->state == MF_STATE_UNAVAILABLE && v->reason[0]) snprintf(buf, n, "%s", v->reason);
    }
    pthread_mutex_unlock(&r->mu);
}

int mf_repo_any_ready(mf_repo *r)
{
    int any = 0;
    pthread_mutex_lock(&r->mu);
    for (model_entry *m = r->models; m && !any; m = m->next)
        for (vrec *v = m->recs; v && !any; v = v->next) any = v->state == MF_STATE_READY;
    pthread_mutex_unlock(&r->mu);
    return any;
}

json_t *mf_repo_versions(mf_repo *r, const char *name, size_t len)
{
    pthread_mutex_lock(&r->mu);
    model_entry *m = find_model(r, name, len);
    json_t *a = m ? json_array() : NULL;
    long seen[MAX_VERSIONS];
    int n = 0;
    for (vrec *v = m ? m->recs : NULL; a && v; v = v->next)
        if (v->state == MF_STATE_READY && n < MAX_VERSIONS) seen[n++] = v->v.number;
    pthread_mutex_unlock(&r->mu);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && seen[j - 1] > seen[j]; j--) {
            long t = seen[j];
            seen[j] = seen[j - 1];
            seen[j - 1] = t;
        }
    for (int i = 0; a && i < n; i++) {
        char s[24];
        snprintf(s, sizeof s, "%ld", seen[i]);
        json_array_append_new(a, json_string(s));
    }
    return a;
}

json_t *mf_repo_index(mf_repo *r, int only_ready)
{
    json_t *a = json_array();
    pthread_mutex_lock(&r->mu);
    for (model_entry *m = r->models; a && m; m = m->next) {
        int listed = 0;
        /* oldest version first: the records are newest first, so walk twice */
        long vs[MAX_VERSIONS * 2];
        int nv = 0;
        for (vrec *v = m->recs; v && nv < MAX_VERSIONS * 2; v = v->next) {
            int dup = 0;
            for (int i = 0; i < nv; i++) dup |= vs[i] == v->v.number;
            if (!dup) vs[nv++] = v->v.number;
        }
        for (int i = 1; i < nv; i++)
            for (int j = i; j > 0 && vs[j - 1] > vs[j]; j--) {
                long t = vs[j];
                vs[j] = vs[j - 1];
                vs[j - 1] = t;
            }
        for (int i = 0; i < nv; i++)
            for (vrec *v = m->recs; v; v = v->next) {
                if (v->v.number != vs[i]) continue;
                if (only_ready && v->state != MF_STATE_READY) continue;
                json_t *e = json_pack("{s:s,s:s,s:s}", "name", m->name, "version", v->v.version, "state",
                                      mf_model_state_name(v->state));
                if (e && v->reason[0]) json_object_set_new(e, "reason", json_string(v->reason));
                json_array_append_new(a, e);
                listed = 1;
            }
        if (!listed && !only_ready) {
            json_t *e = json_pack("{s:s}", "name", m->name);
            if (e && m->problem[0]) {
                json_object_set_new(e, "state", json_string("UNAVAILABLE"));
                json_object_set_new(e, "reason", json_string(m->problem));
            }
            json_array_append_new(a, e);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return a;
}

int mf_repo_api_enabled(const mf_repo *r) { return r->mode != 0; }

int mf_repo_load(mf_repo *r, const char *name, mf_repo_done_fn done, void *user, char *err, size_t errlen)
{
    if (r->mode == 0) {
        mf_set_err(err, errlen, "model_control is 'none': the models are fixed (start with --model_control explicit "
                                "or poll to load and unload)");
        return -1;
    }
    if (!valid_name(name, strlen(name))) {
        mf_set_err(err, errlen, "'%.64s' is not a model name (letters, digits, '_', '-', '.')", name);
        return -1;
    }
    if (!r->single) {
        char p[PATH_MAX];
        struct stat st;
        if (path_fmt(p, sizeof p, "%s/%s", r->cfg->model_repository, name) != 0 || stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            mf_set_err(err, errlen, "no model '%s' in the repository %s", name, r->cfg->model_repository);
            return -1;
        }
    } else if (strcmp(name, r->cfg->model_name) != 0) {
        mf_set_err(err, errlen, "no model '%s' (this server has '%s')", name, r->cfg->model_name);
        return -1;
    }
    int posted = post(r, T_LOAD, name, done, user);
    if (posted != 0) {
        mf_set_err(err, errlen, "%s", posted == -2 ? "the server is shutting down" : "out of memory");
        return posted;
    }
    return 0;
}

int mf_repo_unload(mf_repo *r, const char *name, mf_repo_done_fn done, void *user, char *err, size_t errlen)
{
    if (r->mode == 0) {
        mf_set_err(err, errlen, "model_control is 'none': the models are fixed (start with --model_control explicit "
                                "or poll to load and unload)");
        return -1;
    }
    pthread_mutex_lock(&r->mu);
    int known = find_model(r, name, strlen(name)) != NULL;
    pthread_mutex_unlock(&r->mu);
    if (!known) {
        mf_set_err(err, errlen, "no model named '%.64s'", name);
        return -1;
    }
    int posted = post(r, T_UNLOAD, name, done, user);
    if (posted != 0) {
        mf_set_err(err, errlen, "%s", posted == -2 ? "the server is shutting down" : "out of memory");
        return posted;
    }
    return 0;
}

int mf_repo_rescan(mf_repo *r)
{
    if (r->mode == 0) return -1;
    return post(r, T_RESCAN, NULL, NULL, NULL);
}
