/* oip.c -- the Open Inference Protocol's infer; see oip.h. */
#include "oip.h"

#include "batcher.h"
#include "mf_util.h"
#include "predict.h"
#include "reply.h"
#include "repository.h"
#include "request.h"
#include "topk.h"
#include "validate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
#define MAX_DEPTH 8 /* nesting of JSON data */

typedef struct oip_state {
    mf_oip_request q;         /* the parsed request */
    uint8_t **images;         /* [q.n] JSON images, base64-decoded (owned), or NULL */
    int prio;                 /* the batcher priority */
    uint64_t deadline_ns;     /* parameters.timeout from the body's arrival, 0 = none */
    uint32_t off[MF_OIP_MAX_IMAGES + 1]; /* binary BYTES: element i at binary + off[i] + 4 */
    int ihcl;                 /* Inference-Header-Content-Length given */
    int compressed;           /* Content-Encoding gzip or deflate: inflated before parsing */
    size_t header_len;        /* its value */
} oip_state;

void mf_oip_request_free(mf_oip_request *q)
{
    json_decref(q->root);
    q->root = NULL;
    free(q->id);
    q->id = NULL;
}

/* ---- parsing ------------------------------------------------------------- */

#define BAD(...) do { mf_set_err(err, errlen, __VA_ARGS__); goto fail; } while (0)

static int uint_param(json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Leaves of nested JSON data: how many, all numbers (want_str: strings). */
static long count_leaves(json_t *d, int depth, int want_str)
{
    if (depth > MAX_DEPTH) return -1;
    if (json_is_array(d)) {
        long n = 0;
        size_t i;
        json_t *e;
        json_array_foreach(d, i, e) {
            long k = count_leaves(e, depth + 1, want_str);
            if (k < 0) return -1;
            n += k;
            if (n > 100000000) return -1;
        }
        return n;
    }
    if (want_str) return json_is_string(d) ? 1 : -1;
    return json_is_number(d) ? 1 : -1;
}

static void fill_leaves(json_t *d, float *out, size_t *k)
{
    if (json_is_array(d)) {
        size_t i;
        json_t *e;
        json_array_foreach(d, i, e) fill_leaves(e, out, k);
        return;
    }
    out[(*k)++] = (float)json_number_value(d);
}

static json_t *nth_string(json_t *d, int *i)
{
    if (json_is_array(d)) {
        size_t k;
        json_t *e;
        json_array_foreach(d, k, e) {
            json_t *s = nth_string(e, i);
            if (s) return s;
        }
        return NULL;
    }
    return (*i)-- == 0 ? d : NULL;
}

int mf_oip_parse(const uint8_t *body, size_t len, size_t header_len, mf_oip_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (header_len > len) {
        mf_set_err(err, errlen, "Inference-Header-Content-Length (%zu) is larger than the body (%zu bytes)", header_len,
                   len);
        return -1;
    }
    if (header_len == 0) {
        mf_set_err(err, errlen, "the request needs a JSON header (an empty one is the raw binary form, not supported)");
        return -1;
    }
    json_error_t je;
    out->root = json_loadb((const char *)body, header_len, JSON_REJECT_DUPLICATES, &je);
    if (!out->root) BAD("the request is not valid JSON: %s (at byte %d)", je.text, je.position);
    json_t *root = out->root;
    if (!json_is_object(root)) BAD("the request must be a JSON object");
    json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id)) BAD("'id' must be a string");
        out->id = strdup(json_string_value(id));
        if (!out->id) BAD("out of memory");
    }
    int binary_default = 0;
    json_t *params = json_object_get(root, "parameters");
    if (params) {
        if (!json_is_object(params)) BAD("'parameters' must be an object");
        json_t *v;
        if ((v = json_object_get(params, "binary_data_output"))) {
            if (!json_is_boolean(v)) BAD("parameters.binary_data_output must be a boolean");
            binary_default = json_is_true(v);
        }
        uint64_t u;
        if ((v = json_object_get(params, "priority"))) {
            if (uint_param(v, 1000000, &u)) BAD("parameters.priority must be an unsigned integer");
            out->priority = (int)u;
        }
        if ((v = json_object_get(params, "timeout"))) {
            if (uint_param(v, (uint64_t)1 << 50, &u)) BAD("parameters.timeout must be an unsigned integer (microseconds)");
            out->timeout_us = u;
        }
    }
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs)) BAD("'inputs' must be a list");
    if (json_array_size(inputs) != 1)
        BAD("this model takes exactly one input, 'input' (FP32 [N,3,H,W]) or 'image' (BYTES [N]); got %zu",
            json_array_size(inputs));
    json_t *in = json_array_get(inputs, 0);
    if (!json_is_object(in)) BAD("inputs[0] must be an object");
    json_t *jn = json_object_get(in, "name"), *jd = json_object_get(in, "datatype"),
           *js = json_object_get(in, "shape");
    if (!json_is_string(jn)) BAD("inputs[0] needs a 'name'");
    if (!json_is_string(jd)) BAD("input '%.64s' needs a 'datatype'", json_string_value(jn));
    if (!json_is_array(js)) BAD("input '%.64s' needs a 'shape' (a list of sizes)", json_string_value(jn));
    const char *name = json_string_value(jn), *dt = json_string_value(jd);
    size_t rank = json_array_size(js);
    long long dims[8] = {0};
    if (rank > 8) BAD("input '%.64s': shape has %zu dimensions", name, rank);
    for (size_t i = 0; i < rank; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0) BAD("input '%.64s': shape sizes are non-negative integers", name);
        dims[i] = json_integer_value(d);
    }
    if (!strcmp(name, "input")) {
        if (strcmp(dt, "FP32")) BAD("input 'input' must be FP32, got %.16s", dt);
        if (rank != 4) BAD("input 'input' must have shape [N, 3, H, W], got %zu dimensions", rank);
        if (dims[1] != 3) BAD("input 'input' must have 3 channels (shape [N, 3, H, W]), got %lld", dims[1]);
        if (dims[2] < 32 || dims[3] < 32)
            BAD("input 'input': H and W must be at least 32, got %lldx%lld", dims[2], dims[3]);
        if (dims[2] > MF_OIP_MAX_SIDE || dims[3] > MF_OIP_MAX_SIDE)
            BAD("input 'input': H and W must be at most %d, got %lldx%lld", MF_OIP_MAX_SIDE, dims[2], dims[3]);
        out->h = (int)dims[2];
        out->w = (int)dims[3];
    } else if (!strcmp(name, "image")) {
        if (strcmp(dt, "BYTES")) BAD("input 'image' must be BYTES, got %.16s", dt);
        if (rank != 1) BAD("input 'image' must have shape [N], got %zu dimensions", rank);
        out->image = 1;
    } else {
        BAD("unknown input '%.64s': this model takes 'input' (FP32 [N,3,H,W]) or 'image' (BYTES [N])", name);
    }
    if (dims[0] < 1 || dims[0] > MF_OIP_MAX_IMAGES)
        BAD("input '%s': N (shape[0]) must be 1 to %d, got %lld", name, MF_OIP_MAX_IMAGES, dims[0]);
    out->n = (int)dims[0];
    json_t *ip = json_object_get(in, "parameters"), *data = json_object_get(in, "data");
    json_t *bds = ip && json_is_object(ip) ? json_object_get(ip, "binary_data_size") : NULL;
    if (ip && !json_is_object(ip)) BAD("input '%s': 'parameters' must be an object", name);
    if (!!data == !!bds) BAD("input '%s' must have exactly one of 'data' and parameters.binary_data_size", name);
    const size_t rest = len - header_len;
    if (bds) {
        uint64_t sz;
        if (uint_param(bds, (uint64_t)1 << 40, &sz)) BAD("input '%s': binary_data_size must be an unsigned integer", name);
        if (sz != rest)
            BAD("input '%s': binary_data_size is %llu but the body has %zu bytes after the JSON header", name,
                (unsigned long long)sz, rest);
        out->binary = body + header_len;
        out->binary_len = rest;
        if (!out->image) {
            uint64_t want = (uint64_t)out->n * 3 * (uint64_t)out->h * (uint64_t)out->w * 4;
            if (sz != want)
                BAD("input 'input': %llu bytes of binary data for shape [%d,3,%d,%d], which needs %llu",
                    (unsigned long long)sz, out->n, out->h, out->w, (unsigned long long)want);
        }
    } else {
        if (rest) BAD("%zu bytes after the JSON header, but no input is binary", rest);
        long leaves = count_leaves(data, 0, out->image);
        if (leaves < 0)
            BAD("input '%s': 'data' must be a list (flat or nested, at most %d deep) of %s", name, MAX_DEPTH,
                out->image ? "strings" : "numbers");
        long want = out->image ? out->n : (long)out->n * 3 * out->h * out->w;
        if (leaves != want) BAD("input '%s': 'data' has %ld elements, shape needs %ld", name, leaves, want);
        out->data = data;
    }
    /* outputs: all by default, in this order */
    json_t *outs = json_object_get(root, "outputs");
    if (outs) {
        if (!json_is_array(outs)) BAD("'outputs' must be a list");
        size_t no = json_array_size(outs);
        if (no < 1 || no > 2) BAD("'outputs' lists %zu outputs; this model has 'logits' and 'probabilities'", no);
        for (size_t i = 0; i < no; i++) {
            json_t *o = json_array_get(outs, i), *on = json_is_object(o) ? json_object_get(o, "name") : NULL;
            if (!json_is_string(on)) BAD("outputs[%zu] needs a 'name'", i);
            const char *oname = json_string_value(on);
            int which = !strcmp(oname, "logits") ? 0 : !strcmp(oname, "probabilities") ? 1 : -1;
            if (which < 0) BAD("unknown output '%.64s': this model has 'logits' and 'probabilities'", oname);
            for (int k = 0; k < out->n_outputs; k++)
                if (out->outputs[k].which == which) BAD("output '%s' is requested twice", oname);
            mf_oip_output *oo = &out->outputs[out->n_outputs++];
            oo->which = which;
            oo->binary = binary_default;
            json_t *op = json_object_get(o, "parameters");
            if (op) {
                if (!json_is_object(op)) BAD("output '%s': 'parameters' must be an object", oname);
                json_t *v;
                uint64_t u;
                if ((v = json_object_get(op, "binary_data"))) {
                    if (!json_is_boolean(v)) BAD("output '%s': binary_data must be a boolean", oname);
                    oo->binary = json_is_true(v);
                }
                if ((v = json_object_get(op, "classification"))) {
                    if (uint_param(v, 100000, &u)) BAD("output '%s': classification must be an unsigned integer", oname);
                    oo->classification = (int)u;
                }
            }
        }
    } else {
        out->n_outputs = 2;
        out->outputs[0] = (mf_oip_output){0, binary_default, 0};
        out->outputs[1] = (mf_oip_output){1, binary_default, 0};
    }
    return 0;
fail:
    json_decref(out->root); /* the id stays, for the error answer */
    out->root = NULL;
    out->data = NULL;
    return -1;
}

int mf_oip_bytes_offsets(const mf_oip_request *q, uint32_t *off, char *err, size_t errlen)
{
    size_t pos = 0;
    for (int i = 0; i < q->n; i++) {
        if (q->binary_len - pos < 4) {
            mf_set_err(err, errlen, "input 'image': the binary data ends inside element %d's length", i);
            return -1;
        }
        const uint8_t *p = q->binary + pos;
        uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if ((uint64_t)n > q->binary_len - pos - 4) {
            mf_set_err(err, errlen, "input 'image': element %d says %u bytes, only %zu remain", i, n,
                       q->binary_len - pos - 4);
            return -1;
        }
        off[i] = (uint32_t)pos;
        pos += 4 + (size_t)n;
    }
    if (pos != q->binary_len) {
        mf_set_err(err, errlen, "input 'image': %zu bytes of binary data after its %d elements", q->binary_len - pos,
                   q->n);
        return -1;
    }
    off[q->n] = (uint32_t)pos;
    return 0;
}

int mf_oip_json_image(const mf_oip_request *q, int i, uint8_t **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    int k = i;
    json_t *e = nth_string(q->data, &k);
    if (!e) {
        mf_set_err(err, errlen, "input 'image': no element %d", i);
        return -1;
    }
    const size_t n = json_string_length(e);
    uint8_t *b = malloc(MF_BASE64_MAX(n));
    if (!b) {
        mf_set_err(err, errlen, "out of memory");
        return -1;
    }
    if (mf_base64_decode(json_string_value(e), n, b, len) != 0) {
        free(b);
        mf_set_err(err, errlen,
                   "input 'image': element %d is not base64 (in JSON data each image is the base64 of its file; "
                   "the binary tensor extension sends the bytes themselves)",
                   i);
        return -1;
    }
    *out = b;
    return 0;
}

int mf_oip_tensor(const mf_oip_request *q, float *out, char *err, size_t errlen)
{
    const size_t n = (size_t)q->n * 3 * q->h * q->w;
    if (q->binary) {
        memcpy(out, q->binary, n * sizeof(float)); /* little-endian, as x86 is */
    } else {
        size_t k = 0;
        fill_leaves(q->data, out, &k);
        if (k != n) {
            mf_set_err(err, errlen, "internal: %zu values for %zu", k, n);
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i])) {
            mf_set_err(err, errlen, "input 'input': element %zu is not a finite number", i);
            return -1;
        }
    return 0;
}

/* ---- the request ---------------------------------------------------------- */

static oip_state *st_of(mf_request *r) { return r->oip; }

int mf_oip_begin(mf_request *r)
{
    const char *ce = mf_request_header(r, "Content-Encoding");
    int compressed = 0;
    if (ce && strcasecmp(ce, "identity") != 0) {
        if (strcasecmp(ce, "gzip") != 0 && strcasecmp(ce, "deflate") != 0)
            return mf_reply_error(r, MF_E_UNSUPPORTED_MEDIA_TYPE,
                                  "Content-Encoding %.32s is not supported: send gzip, deflate or identity", ce);
        compressed = 1;
    }
    oip_state *s = calloc(1, sizeof *s);
    if (!s) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the request");
    r->oip = s;
    s->compressed = compressed;
    const char *h = mf_request_header(r, "Inference-Header-Content-Length");
    if (h) {
        size_t n = 0, len = strlen(h);
        if (len == 0 || len > 15) return mf_reply_error(r, MF_E_BAD_REQUEST, "Inference-Header-Content-Length is not a size");
        for (size_t i = 0; i < len; i++) {
            if (h[i] < '0' || h[i] > '9')
                return mf_reply_error(r, MF_E_BAD_REQUEST, "Inference-Header-Content-Length is not a size");
            n = n * 10 + (size_t)(h[i] - '0');
        }
        s->ihcl = 1;
        s->header_len = n;
    }
    mf_request_expect(r);
    return 0;
}

/* Classification strings of image i: "<score>:<index>:<label>", K of them. */
static json_t *class_strings(const mf_version *v, const float *vals, int k)
{
    int idx[256];
    if (k > v->classes) k = v->classes;
    if (k > 256) k = 256;
    mf_topk(vals, v->classes, k, idx);
    json_t *a = json_array();
    for (int i = 0; a && i < k; i++) {
        char s[400];
        snprintf(s, sizeof s, "%f:%d:%s", (double)vals[idx[i]], idx[i], v->labels[idx[i]]);
        json_array_append_new(a, json_string(s));
    }
    return a;
}

/* Grow buffer *b (cap *cap, used *n) by m bytes from src. */
static int put(uint8_t **b, size_t *n, size_t *cap, const void *src, size_t m)
{
    if (*n + m > *cap) {
        size_t c = *cap ? *cap * 2 : 4096;
        while (c < *n + m) c *= 2;
        uint8_t *nb = realloc(*b, c);
        if (!nb) return -1;
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *n, src, m);
    *n += m;
    return 0;
}

static int oip_answer(mf_request *r)
{
    if (mf_images_check(r) != 0) return 0;
    oip_state *s = st_of(r);
    const mf_oip_request *q = &s->q;
    const mf_version *v = r->mv;
    const int n = q->n, C = v->classes;
    float *probs = NULL;
    for (int k = 0; k < q->n_outputs; k++)
        if (q->outputs[k].which == 1 && !probs) {
            probs = malloc((size_t)n * C * sizeof(float));
            if (!probs) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the answer");
            for (int i = 0; i < n; i++) mf_softmax(mf_images_logits(r, i), C, probs + (size_t)i * C);
        }
    json_t *o = json_pack("{s:s,s:s}", "model_name", v->name, "model_version", v->version);
    if (o && q->id) json_object_set_new(o, "id", json_string(q->id));
    json_t *outs = json_array();
    uint8_t *bin = NULL;
    size_t bn = 0, bcap = 0;
    int failed = !o || !outs;
    for (int k = 0; k < q->n_outputs && !failed; k++) {
        const mf_oip_output *oo = &q->outputs[k];
        const char *oname = oo->which ? "probabilities" : "logits";
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(oname));
        size_t start = bn;
        if (oo->classification) {
            int kk = oo->classification < C ? oo->classification : C;
            json_object_set_new(e, "datatype", json_string("BYTES"));
            json_object_set_new(e, "shape", json_pack("[i,i]", n, kk));
            json_t *strs = json_array();
            for (int i = 0; i < n; i++) {
                const float *vals = oo->which ? probs + (size_t)i * C : mf_images_logits(r, i);
                json_t *a = class_strings(v, vals, kk);
                size_t j;
                json_t *x;
                json_array_foreach(a, j, x) {
                    if (oo->binary) {
                        uint32_t l = (uint32_t)json_string_length(x);
                        uint8_t le[4] = {(uint8_t)l, (uint8_t)(l >> 8), (uint8_t)(l >> 16), (uint8_t)(l >> 24)};
                        failed |= put(&bin, &bn, &bcap, le, 4) || put(&bin, &bn, &bcap, json_string_value(x), l);
                    } else {
                        json_array_append(strs, x);
                    }
                }
                json_decref(a);
            }
            if (oo->binary) json_decref(strs);
            else json_object_set_new(e, "data", strs);
        } else {
            json_object_set_new(e, "datatype", json_string("FP32"));
            json_object_set_new(e, "shape", json_pack("[i,i]", n, C));
            if (oo->binary) {
                for (int i = 0; i < n && !failed; i++)
                    failed |= put(&bin, &bn, &bcap, oo->which ? probs + (size_t)i * C : mf_images_logits(r, i),
                                  (size_t)C * sizeof(float));
            } else {
                json_t *d = json_array();
                for (int i = 0; i < n; i++) {
                    const float *vals = oo->which ? probs + (size_t)i * C : mf_images_logits(r, i);
                    for (int c = 0; c < C; c++) json_array_append_new(d, json_real(vals[c]));
                }
                json_object_set_new(e, "data", d);
            }
        }
        if (oo->binary) json_object_set_new(e, "parameters", json_pack("{s:I}", "binary_data_size", (json_int_t)(bn - start)));
        json_array_append_new(outs, e);
    }
    free(probs);
    if (failed) {
        json_decref(o);
        json_decref(outs);
        free(bin);
        return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot build the answer");
    }
    json_object_set_new(o, "outputs", outs);
    char *text = json_dumps(o, JSON_FLAGS);
    json_decref(o);
    if (!text) {
        free(bin);
        return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot build the answer");
    }
    size_t tl = strlen(text);
    if (!bn) {
        free(bin);
        return mf_reply(r, 200, MF_JSON_TYPE, text, tl, 1, NULL);
    }
    uint8_t *body = malloc(tl + bn);
    if (!body) {
        free(text);
        free(bin);
        return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot build the answer");
    }
    memcpy(body, text, tl);
    memcpy(body + tl, bin, bn);
    free(text);
    free(bin);
    char hl[24];
    snprintf(hl, sizeof hl, "%zu", tl);
    mf_reply_header(r, "Inference-Header-Content-Length", hl);
    return mf_reply(r, 200, "application/octet-stream", (char *)body, tl + bn, 1, NULL);
}

/* The images are in their tensors: queue them. */
static int oip_submit(mf_request *r)
{
    oip_state *s = st_of(r);
    return mf_images_submit(r, s->prio, s->deadline_ns, oip_answer);
}

int mf_oip_inflate(const uint8_t *in, size_t n, size_t max, uint8_t **out, size_t *out_len, int *too_large,
                        char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    *too_large = 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK) { /* +32: a gzip or a zlib header, whichever it has */
        mf_set_err(err, errlen, "out of memory");
        return -1;
    }
    size_t cap = n * 4 < 65536 ? 65536 : n * 4, len = 0;
    if (cap > max + 1) cap = max + 1;
    uint8_t *b = malloc(cap);
    int rc = Z_OK;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)(n > UINT32_MAX ? UINT32_MAX : n);
    while (b) {
        z.next_out = b + len;
        z.avail_out = (uInt)(cap - len);
        rc = inflate(&z, Z_NO_FLUSH);
        len = cap - z.avail_out;
        if (rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR)) break;
        if (len > max) break;
        if (z.avail_out == 0) {
            size_t nc = cap * 2 > max + 1 ? max + 1 : cap * 2;
            if (nc <= cap) break;
            uint8_t *nb = realloc(b, nc);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap = nc;
        } else if (rc == Z_BUF_ERROR || z.avail_in == 0) {
            break; /* no progress: the data ended early */
        }
    }
    inflateEnd(&z);
    if (!b) {
        mf_set_err(err, errlen, "out of memory");
        return -1;
    }
    if (len > max) {
        free(b);
        *too_large = 1;
        mf_set_err(err, errlen, "the body inflates to more than max_body_bytes (%zu)", max);
        return -1;
    }
    if (rc != Z_STREAM_END || z.avail_in != 0) {
        free(b);
        mf_set_err(err, errlen, "the compressed body is not valid gzip or deflate data%s",
                   rc == Z_STREAM_END ? " (bytes after its end)" : "");
        return -1;
    }
    *out = b;
    *out_len = len;
    return 0;
}

int mf_oip_body(mf_request *r)
{
    oip_state *s = st_of(r);
    char err[400];
    if (s->compressed) {
        uint8_t *plain;
        size_t plain_len;
        int too_large;
        if (mf_oip_inflate(r->body, r->body_len, (size_t)r->srv->cfg->max_body_bytes, &plain, &plain_len, &too_large,
                         err, sizeof err) != 0)
            return mf_reply_error(r, too_large ? MF_E_BODY_TOO_LARGE : MF_E_BAD_REQUEST, "%s", err);
        if (mf_request_budget(r, r->budget + plain_len) != 0) {
            free(plain);
            return mf_reply_error(r, MF_E_BODY_BUDGET,
                                  "the server holds too many uploads at once (max_inflight_body_bytes); retry later");
        }
        free(r->body); /* the inflated body takes its place, counted in the budget beside the upload */
        r->body = plain;
        r->body_len = r->body_cap = plain_len;
    }
    size_t hl = s->ihcl ? s->header_len : r->body_len;
    int bad = mf_oip_parse(r->body, r->body_len, hl, &s->q, err, sizeof err);
    mf_oip_request *q = &s->q;
    r->oip_id = q->id; /* echoed in the answer and in errors, this one included */
    if (bad) return mf_reply_error(r, MF_E_BAD_REQUEST, "%s", err);
    if (q->image && q->binary && mf_oip_bytes_offsets(q, s->off, err, sizeof err) != 0)
        return mf_reply_error(r, MF_E_BAD_REQUEST, "%s", err);
    /* JSON images: every base64 decoded before any image is decoded (a bad
     * one is answered with nothing in the decode pool) */
    size_t *lens = NULL;
    if (q->image && !q->binary) {
        s->images = calloc((size_t)q->n, sizeof *s->images);
        lens = calloc((size_t)q->n, sizeof *lens);
        if (!s->images || !lens) {
            free(lens);
            return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the images");
        }
        for (int i = 0; i < q->n; i++)
            if (mf_oip_json_image(q, i, &s->images[i], &lens[i], err, sizeof err) != 0) {
                free(lens);
                return mf_reply_error(r, MF_E_BAD_REQUEST, "%s", err);
            }
    }
    if (mf_images_alloc(r, q->n, q->image ? 0 : q->h, q->image ? 0 : q->w) != 0) {
        free(lens);
        return 0;
    }
    /* OIP priority: 1 highest, 0 and 2 the default, larger ones lower */
    s->prio = q->priority == 1 ? 0 : q->priority <= 2 ? MF_PRIORITY_DEFAULT : MF_PRIORITIES - 1;
    s->deadline_ns = q->timeout_us ? mf_now_ns() + q->timeout_us * 1000u : 0;
    if (q->image) {
        for (int i = 0; i < q->n; i++) {
            if (q->binary)
                mf_images_decode(r, i, q->binary + s->off[i] + 4, s->off[i + 1] - s->off[i] - 4, s->prio,
                                 s->deadline_ns);
            else mf_images_decode(r, i, s->images[i], lens[i], s->prio, s->deadline_ns);
        }
        free(lens);
        return mf_images_decoded(r, oip_submit);
    } else {
        float *tmp = malloc((size_t)q->n * 3 * q->h * q->w * sizeof(float));
        if (!tmp) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot allocate the input");
        if (mf_oip_tensor(q, tmp, err, sizeof err) != 0) {
            free(tmp);
            return mf_reply_error(r, MF_E_BAD_REQUEST, "%s", err);
        }
        const size_t per = (size_t)3 * q->h * q->w;
        for (int i = 0; i < q->n; i++) memcpy(mf_images_input(r, i), tmp + per * i, per * sizeof(float));
        free(tmp);
    }
    return oip_submit(r);
}

void mf_oip_free(mf_request *r)
{
    oip_state *s = r->oip;
    if (!s) return;
    if (s->images)
        for (int i = 0; i < s->q.n; i++) free(s->images[i]);
    free(s->images);
    mf_oip_request_free(&s->q);
    free(s);
    r->oip = NULL;
    r->oip_id = NULL;
}
