/* loader.c -- model files: safetensors with mobileformer metadata
 * (docs/model-format.md).  The file is mapped once, its header validated
 * completely (sizes, offsets, dtypes, shapes, names) before any tensor is
 * read, the model built from it (BatchNorm folding and packing copy the
 * weights), and the mapping released: the model owns only folded weights. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER (64u << 20)  /* a header beyond 64 MiB is not a model */
#define MAX_FILE ((size_t)8 << 30)

typedef struct st_tensor {
    const char *name;  /* points into the parsed JSON */
    size_t begin, end; /* byte offsets into the data section */
} st_tensor;

typedef struct st_file {
    const unsigned char *data; /* data section */
    size_t data_len;
    st_tensor *t;
    int n;
    float **copies;            /* aligned copies of unaligned tensors */
    int ncopies;
} st_file;

static int cmp_begin(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static const float *st_lookup(void *ctx, const mf_tensor_spec *spec)
{
    st_file *f = ctx;
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->t[i].name, spec->name) != 0) continue;
        const unsigned char *p = f->data + f->t[i].begin;
        if (((uintptr_t)p & 3) == 0) return (const float *)(const void *)p;
        float *c = malloc(spec->numel * sizeof(float));
        if (!c) return NULL;
        memcpy(c, p, spec->numel * sizeof(float));
        f->copies[f->ncopies++] = c;
        return c;
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static mf_status parse_preprocess(const char *text, mf_preprocess *p, char *err, size_t errlen)
{
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    mf_status st = MF_ERR_FORMAT;
    if (!json_is_object(o)) {
        mf_set_err(err, errlen, "metadata 'preprocess' is not a JSON object");
        goto done;
    }
    json_t *v = json_object_get(o, "input_size");
    if (json_is_integer(v)) {
        p->input_h = p->input_w = (int)json_integer_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_integer(json_array_get(v, 0)) &&
               json_is_integer(json_array_get(v, 1))) {
        p->input_h = (int)json_integer_value(json_array_get(v, 0));
        p->input_w = (int)json_integer_value(json_array_get(v, 1));
    } else if (v) {
        mf_set_err(err, errlen, "metadata 'preprocess.input_size' must be an integer or [H, W]");
        goto done;
    }
    if (p->input_h < 32 || p->input_w < 32 || p->input_h > 4096 || p->input_w > 4096) {
        mf_set_err(err, errlen, "metadata 'preprocess.input_size' must be within 32..4096");
        goto done;
    }
    if ((v = json_object_get(o, "resize"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 8192) {
            mf_set_err(err, errlen, "metadata 'preprocess.resize' must be an integer in 1..8192");
            goto done;
        }
        p->resize = (int)json_integer_value(v);
    }
    if ((v = json_object_get(o, "interpolation"))) {
        const char *s = json_string_value(v);
        if (!s || (strcmp(s, "bilinear") != 0 && strcmp(s, "nearest") != 0)) {
            mf_set_err(err, errlen, "metadata 'preprocess.interpolation' must be \"bilinear\" or \"nearest\"");
            goto done;
        }
        snprintf(p->interpolation, sizeof p->interpolation, "%s", s);
    }
    if ((v = json_object_get(o, "channels"))) {
        if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != 3)) {
            mf_set_err(err, errlen, "metadata 'preprocess.channels' must be 1 or 3");
            goto done;
        }
        p->channels = (int)json_integer_value(v);
    }
    const char *keys[2] = {"mean", "std"};
    float *dst[2] = {p->mean, p->std};
    for (int k = 0; k < 2; k++) {
        if (!(v = json_object_get(o, keys[k]))) continue;
        size_t n = json_array_size(v);
        if (!json_is_array(v) || (n != 1 && n != 3)) {
            mf_set_err(err, errlen, "metadata 'preprocess.%s' must be a list of 1 or 3 numbers", keys[k]);
            goto done;
        }
        for (size_t i = 0; i < 3; i++) {
            json_t *x = json_array_get(v, n == 1 ? 0 : i);
            double d = json_number_value(x);
            if (!json_is_number(x) || !(d > -1e6 && d < 1e6) || (k == 1 && !(d > 1e-8))) {
                mf_set_err(err, errlen, "metadata 'preprocess.%s' holds a bad value", keys[k]);
                goto done;
            }
            dst[k][i] = (float)d;
        }
    }
    st = MF_OK;
done:
    json_decref(o);
    return st;
}

static mf_status parse_labels(const char *text, int n, char ***out, char *err, size_t errlen)
{
    json_error_t je;
    json_t *a = json_loads(text, 0, &je);
    if (!json_is_array(a) || (int)json_array_size(a) != n) {
        mf_set_err(err, errlen, "metadata 'labels' must be a JSON list of num_classes (%d) strings", n);
        json_decref(a);
        return MF_ERR_FORMAT;
    }
    char **l = calloc((size_t)n + 1, sizeof *l);
    if (!l) { json_decref(a); return MF_ERR_NOMEM; }
    for (int i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, (size_t)i));
        if (!s) {
            mf_set_err(err, errlen, "metadata 'labels'[%d] is not a string", i);
            for (int j = 0; j < i; j++) free(l[j]);
            free(l);
            json_decref(a);
            return MF_ERR_FORMAT;
        }
        l[i] = strdup(s);
        if (!l[i]) { /* a NULL label would silently become "class_<i>" in mf_model_build */
            for (int j = 0; j < i; j++) free(l[j]);
            free(l);
            json_decref(a);
            return MF_ERR_NOMEM;
        }
    }
    json_decref(a);
    *out = l;
    return MF_OK;
}

mf_status mf_model_load_buffer(const void *buf, size_t len, mf_model **out, char *err, size_t errlen)
{
    return mf_model_load_buffer_opts(buf, len, NULL, out, err, errlen);
}

mf_status mf_model_load_buffer_opts(const void *buf, size_t len, const mf_model_options *o, mf_model **out,
                                    char *err, size_t errlen)
{
    const unsigned char *b = buf;
    *out = NULL;
    if (err && errlen) err[0] = '\0';
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    mf_set_err(err, errlen, "model files are little-endian; this host is not");
    return MF_ERR_FORMAT;
#endif
    if (len < 8) {
        mf_set_err(err, errlen, "file too small to be a model (%zu bytes)", len);
        return MF_ERR_FORMAT;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen < 2 || hlen > MAX_HEADER || hlen > len - 8) {
        mf_set_err(err, errlen, "bad header length %llu for a %zu-byte file (truncated or not safetensors)",
                   (unsigned long long)hlen, len);
        return MF_ERR_FORMAT;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)b + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(root)) {
        mf_set_err(err, errlen, "header is not a JSON object (%s)", root ? "wrong type" : je.text);
        json_decref(root);
        return MF_ERR_FORMAT;
    }
    mf_status st = MF_ERR_FORMAT;
    st_file f = {.data = b + 8 + hlen, .data_len = len - 8 - (size_t)hlen};
    mf_tensor_spec *specs = NULL;
    char **labels = NULL;
    int nspecs = 0, num_classes = 0;
    mf_arch arch;
    mf_preprocess pre;
    mf_preprocess_default(&pre);

    json_t *meta = json_object_get(root, "__metadata__");
    if (!json_is_object(meta)) {
        mf_set_err(err, errlen, "no __metadata__ in the header (not a mobileformer model file; convert the checkpoint with tools/convert_checkpoint.py)");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (!json_is_string(val)) {
            mf_set_err(err, errlen, "metadata '%s' is not a string", key);
            goto done;
        }
    }
    const char *arch_s = json_string_value(json_object_get(meta, "arch"));
    const char *ncls_s = json_string_value(json_object_get(meta, "num_classes"));
    if (!arch_s || !ncls_s) {
        mf_set_err(err, errlen, "metadata lacks '%s'", arch_s ? "num_classes" : "arch");
        goto done;
    }
    char tmp[256];
    if ((st = mf_arch_parse(arch_s, &arch, tmp, sizeof tmp)) != MF_OK) {
        mf_set_err(err, errlen, "metadata 'arch': %s", tmp);
        goto done;
    }
    st = MF_ERR_FORMAT;
    char *endp;
    errno = 0;
    long nc = strtol(ncls_s, &endp, 10);
    if (errno || *endp || endp == ncls_s || nc < 1 || nc > 100000) {
        mf_set_err(err, errlen, "metadata 'num_classes' must be an integer in 1..100000, got '%.32s'", ncls_s);
        goto done;
    }
    num_classes = (int)nc;
    const char *pre_s = json_string_value(json_object_get(meta, "preprocess"));
    if (pre_s && (st = parse_preprocess(pre_s, &pre, err, errlen)) != MF_OK) goto done;
    const char *lab_s = json_string_value(json_object_get(meta, "labels"));
    if (lab_s && (st = parse_labels(lab_s, num_classes, &labels, err, errlen)) != MF_OK) goto done;
    st = MF_ERR_FORMAT;

    /* tensor table */
    size_t ntensors = json_object_size(root);
    f.t = calloc(ntensors, sizeof *f.t);
    f.copies = calloc(ntensors, sizeof *f.copies);
    if (!f.t || !f.copies) { st = MF_ERR_NOMEM; goto done; }
    nspecs = mf_arch_tensor_specs(&arch, num_classes, &specs);
    if (nspecs < 0) { st = MF_ERR_NOMEM; goto done; }
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (ends_with(key, ".num_batches_tracked")) continue; /* BatchNorm counters carry nothing */
        const mf_tensor_spec *spec = NULL;
        for (int i = 0; i < nspecs; i++)
            if (strcmp(specs[i].name, key) == 0) { spec = &specs[i]; break; }
        if (!spec) {
            mf_set_err(err, errlen, "unexpected tensor '%.96s' (not part of architecture %s)", key, arch.name);
            st = MF_ERR_TENSOR;
            goto done;
        }
        json_t *dt = json_object_get(val, "dtype"), *sh = json_object_get(val, "shape"),
               *off = json_object_get(val, "data_offsets");
        if (!json_is_object(val) || !json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) ||
            json_array_size(off) != 2) {
            mf_set_err(err, errlen, "tensor '%s': header entry needs dtype, shape and data_offsets", key);
            goto done;
        }
        if (strcmp(json_string_value(dt), "F32") != 0) {
            mf_set_err(err, errlen, "tensor '%s' has dtype %s; only F32 is supported (convert with tools/convert_checkpoint.py)",
                       key, json_string_value(dt));
            st = MF_ERR_TENSOR;
            goto done;
        }
        int ok = (int)json_array_size(sh) == spec->ndim;
        for (int d = 0; ok && d < spec->ndim; d++) {
            json_t *x = json_array_get(sh, (size_t)d);
            ok = json_is_integer(x) && json_integer_value(x) == spec->shape[d];
        }
        if (!ok) {
            char want[64], *got = json_dumps(sh, JSON_COMPACT);
            int p = snprintf(want, sizeof want, "[");
            for (int d = 0; d < spec->ndim; d++) p += snprintf(want + p, sizeof want - (size_t)p, d ? ",%d" : "%d", spec->shape[d]);
            snprintf(want + p, sizeof want - (size_t)p, "]");
            mf_set_err(err, errlen, "tensor '%s' has shape %s, architecture %s expects %s", key, got ? got : "?",
                       arch.name, want);
            free(got);
            st = MF_ERR_TENSOR;
            goto done;
        }
        json_t *o0 = json_array_get(off, 0), *o1 = json_array_get(off, 1);
        if (!json_is_integer(o0) || !json_is_integer(o1) || json_integer_value(o0) < 0 ||
            json_integer_value(o1) < json_integer_value(o0) || (uint64_t)json_integer_value(o1) > f.data_len ||
            (uint64_t)(json_integer_value(o1) - json_integer_value(o0)) != spec->numel * sizeof(float)) {
            mf_set_err(err, errlen, "tensor '%s': data_offsets outside the file or not matching its shape (file truncated?)", key);
            goto done;
        }
        f.t[f.n++] = (st_tensor){spec->name, (size_t)json_integer_value(o0), (size_t)json_integer_value(o1)};
    }
    qsort(f.t, (size_t)f.n, sizeof *f.t, cmp_begin);
    for (int i = 1; i < f.n; i++)
        if (f.t[i].begin < f.t[i - 1].end) {
            mf_set_err(err, errlen, "tensors '%s' and '%s' overlap in the file", f.t[i - 1].name, f.t[i].name);
            goto done;
        }
    for (int i = 0; i < nspecs; i++) {
        int found = 0;
        for (int j = 0; j < f.n && !found; j++) found = strcmp(f.t[j].name, specs[i].name) == 0;
        if (!found) {
            mf_set_err(err, errlen, "missing tensor '%s' (architecture %s)", specs[i].name, arch.name);
            st = MF_ERR_TENSOR;
            goto done;
        }
    }
    /* f.t names point into specs, which outlive the build */
    st = mf_model_build_opts(&arch, num_classes, st_lookup, &f, &pre, (const char *const *)labels, o, out, err,
                             errlen);
done:
    for (int i = 0; i < f.ncopies; i++) free(f.copies[i]);
    free(f.copies);
    free(f.t);
    free(specs);
    if (labels) {
        for (int i = 0; i < num_classes; i++) free(labels[i]);
        free(labels);
    }
    json_decref(root);
    return st;
}

mf_status mf_model_load(const char *path, mf_model **out, char *err, size_t errlen)
{
    return mf_model_load_opts(path, NULL, out, err, errlen);
}

mf_status mf_model_load_opts(const char *path, const mf_model_options *o, mf_model **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mf_set_err(err, errlen, "cannot open model file '%s': %s", path, strerror(errno));
        return MF_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        mf_set_err(err, errlen, "model file '%s' is not a regular file", path);
        close(fd);
        return MF_ERR_IO;
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8 || len > MAX_FILE) {
        mf_set_err(err, errlen, "model file '%s' has an implausible size (%zu bytes)", path, len);
        close(fd);
        return MF_ERR_FORMAT;
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        mf_set_err(err, errlen, "cannot map model file '%s': %s", path, strerror(errno));
        return MF_ERR_IO;
    }
    char tmp[512] = "";
    mf_status st = mf_model_load_buffer_opts(map, len, o, out, tmp, sizeof tmp);
    munmap(map, len);
#ifdef __GLIBC__
    /* give the header parse's and the folding's freed temporaries back to
     * the system: the process keeps only the folded weights */
    malloc_trim(0);
#endif
    if (st != MF_OK) mf_set_err(err, errlen, "%s: %s", path, tmp);
    return st;
}
