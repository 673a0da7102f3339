/* arch.c -- Mobile-Former architectures: the seven presets, JSON descriptions,
 * validation, the checkpoint tensor list an architecture implies, and
 * parameter / multiply-add counts. */
#include "mf.h"
#include "internal.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const mf_arch_presets[] = {
    "mobile_former_26m",  "mobile_former_52m",  "mobile_former_96m",  "mobile_former_151m",
    "mobile_former_214m", "mobile_former_294m", "mobile_former_508m", NULL,
};

typedef struct preset_row {
    const char *name;
    int stem, tokens, token_dim, groups, cls;
    int n;
    int rows[12][5]; /* type, e1, c, s, e2 */
} preset_row;

#define A MF_BLOCK_A
#define B3 MF_BLOCK_B3
#define B MF_BLOCK_B
static const preset_row presets[] = {
    {"mobile_former_508m", 24, 6, 192, 1, 1920, 12,
     {{A, 2, 24, 1, 0}, {B3, 6, 40, 2, 4}, {B, 3, 40, 1, 3}, {B3, 6, 72, 2, 4},
      {B, 3, 72, 1, 3}, {B3, 6, 128, 2, 4}, {B, 4, 128, 1, 4}, {B, 6, 176, 1, 4},
      {B, 6, 176, 1, 4}, {B3, 6, 240, 2, 4}, {B, 6, 240, 1, 4}, {B, 6, 240, 1, 4}}},
    {"mobile_former_294m", 16, 6, 192, 1, 1920, 12,
     {{A, 2, 16, 1, 0}, {B3, 6, 24, 2, 4}, {B, 4, 24, 1, 4}, {B3, 6, 48, 2, 4},
      {B, 4, 48, 1, 4}, {B3, 6, 96, 2, 4}, {B, 4, 96, 1, 4}, {B, 6, 128, 1, 4},
      {B, 6, 128, 1, 4}, {B3, 6, 192, 2, 4}, {B, 6, 192, 1, 4}, {B, 6, 192, 1, 4}}},
    {"mobile_former_214m", 12, 6, 192, 1, 1600, 12,
     {{A, 2, 12, 1, 0}, {B3, 6, 20, 2, 4}, {B, 3, 20, 1, 4}, {B3, 6, 40, 2, 4},
      {B, 4, 40, 1, 4}, {B3, 6, 80, 2, 4}, {B, 4, 80, 1, 4}, {B, 6, 112, 1, 4},
      {B, 6, 112, 1, 4}, {B3, 6, 160, 2, 4}, {B, 6, 160, 1, 4}, {B, 6, 160, 1, 4}}},
    {"mobile_former_151m", 12, 6, 192, 1, 1280, 12,
     {{A, 2, 12, 1, 0}, {B3, 6, 16, 2, 4}, {B, 3, 16, 1, 3}, {B3, 6, 32, 2, 4},
      {B, 3, 32, 1, 3}, {B3, 6, 64, 2, 4}, {B, 4, 64, 1, 4}, {B, 6, 88, 1, 4},
      {B, 6, 88, 1, 4}, {B3, 6, 128, 2, 4}, {B, 6, 128, 1, 4}, {B, 6, 128, 1, 4}}},
    {"mobile_former_96m", 12, 4, 128, 1, 1280, 9,
     {{A, 2, 12, 1, 0}, {B3, 6, 16, 2, 4}, {B3, 6, 32, 2, 4}, {B, 3, 32, 1, 3},
      {B3, 6, 64, 2, 4}, {B, 4, 64, 1, 4}, {B, 6, 88, 1, 4}, {B3, 6, 128, 2, 4},
      {B, 6, 128, 1, 4}}},
    {"mobile_former_52m", 8, 3, 128, 1, 1024, 9,
     {{A, 3, 12, 2, 0}, {B, 3, 12, 1, 3}, {B3, 6, 24, 2, 4}, {B, 3, 24, 1, 3},
      {B3, 6, 48, 2, 4}, {B, 4, 48, 1, 4}, {B, 6, 64, 1, 4}, {B3, 6, 96, 2, 4},
      {B, 6, 96, 1, 4}}},
    {"mobile_former_26m", 8, 3, 128, 4, 1024, 9,
     {{A, 3, 12, 2, 0}, {B, 3, 12, 1, 3}, {B3, 6, 24, 2, 4}, {B, 3, 24, 1, 3},
      {B3, 6, 48, 2, 4}, {B, 4, 48, 1, 4}, {B, 6, 64, 1, 4}, {B3, 6, 96, 2, 4},
      {B, 6, 96, 1, 4}}},
};
#undef A
#undef B3
#undef B

static const char *type_names[] = {"A", "B3", "B"};

void mf_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *mf_status_str(mf_status s)
{
    switch (s) {
    case MF_OK: return "ok";
    case MF_ERR_IO: return "i/o error";
    case MF_ERR_FORMAT: return "bad model file format";
    case MF_ERR_ARCH: return "bad architecture";
    case MF_ERR_TENSOR: return "bad tensor";
    case MF_ERR_NOMEM: return "out of memory";
    case MF_ERR_ARG: return "bad argument";
    case MF_ERR_THREAD: return "thread error";
    }
    return "unknown error";
}

mf_status mf_arch_preset(const char *name, mf_arch *out)
{
    char full[MF_MAX_NAME];
    if (!name) return MF_ERR_ARCH;
    if (strncmp(name, "mobile_former_", 14) != 0) {
        snprintf(full, sizeof full, "mobile_former_%s", name);
        name = full;
    }
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset_row *p = &presets[i];
        if (strcmp(p->name, name) != 0) continue;
        memset(out, 0, sizeof *out);
        snprintf(out->name, sizeof out->name, "%s", p->name);
        out->stem = p->stem;
        out->tokens = p->tokens;
        out->token_dim = p->token_dim;
        out->groups = p->groups;
        out->classifier_width = p->cls;
        out->last_exp = 6;
        out->n_blocks = p->n;
        for (int b = 0; b < p->n; b++) {
            out->blocks[b].type = (mf_block_type)p->rows[b][0];
            out->blocks[b].e1 = p->rows[b][1];
            out->blocks[b].c = p->rows[b][2];
            out->blocks[b].s = p->rows[b][3];
            out->blocks[b].e2 = p->rows[b][4];
        }
        return MF_OK;
    }
    return MF_ERR_ARCH;
}

/* Limits keep every derived size far from int overflow and keep absurd
 * descriptions (from untrusted model files) from asking for huge memory. */
#define LIM_CH 4096
#define LIM_EXP 16
#define LIM_TOKENS 64
#define LIM_DIM 2048
#define LIM_CLS 8192

mf_status mf_arch_validate(const mf_arch *a, char *err, size_t errlen)
{
#define BAD(...) do { mf_set_err(err, errlen, __VA_ARGS__); return MF_ERR_ARCH; } while (0)
    if (a->stem < 1 || a->stem > LIM_CH) BAD("stem must be in 1..%d, got %d", LIM_CH, a->stem);
    if (a->tokens < 1 || a->tokens > LIM_TOKENS) BAD("tokens must be in 1..%d, got %d", LIM_TOKENS, a->tokens);
    if (a->token_dim < 4 || a->token_dim > LIM_DIM || a->token_dim % 4)
        BAD("token_dim must be a multiple of 4 in 4..%d, got %d", LIM_DIM, a->token_dim);
    if (a->groups < 1 || a->groups > 64) BAD("groups must be in 1..64, got %d", a->groups);
    if (a->classifier_width < 1 || a->classifier_width > LIM_CLS)
        BAD("classifier_width must be in 1..%d, got %d", LIM_CLS, a->classifier_width);
    if (a->last_exp < 1 || a->last_exp > LIM_EXP) BAD("last_exp must be in 1..%d, got %d", LIM_EXP, a->last_exp);
    if (a->n_blocks < 1 || a->n_blocks > MF_MAX_BLOCKS)
        BAD("blocks: need 1..%d blocks, got %d", MF_MAX_BLOCKS, a->n_blocks);
    const int G = a->groups;
    if (G > 1 && a->stem % G) BAD("stem (%d) must be divisible by groups (%d)", a->stem, G);
    int in = a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block_desc *b = &a->blocks[i];
        if ((int)b->type < 0 || b->type > MF_BLOCK_B) BAD("block %d: unknown type", i);
        if (b->type == MF_BLOCK_A && i != 0) BAD("block %d: type A is only allowed as the first block", i);
        if (b->c < 2 || b->c > LIM_CH) BAD("block %d: channels must be in 2..%d, got %d", i, LIM_CH, b->c);
        if (b->c % 2) BAD("block %d: channels (%d) must be even (2 attention heads)", i, b->c);
        if (b->s != 1 && b->s != 2) BAD("block %d: stride must be 1 or 2, got %d", i, b->s);
        if (b->e1 < 1 || b->e1 > LIM_EXP) BAD("block %d: e1 must be in 1..%d, got %d", i, LIM_EXP, b->e1);
        if (b->c % G) BAD("block %d: channels (%d) must be divisible by groups (%d)", i, b->c, G);
        int hid = in * b->e1;
        if (hid % G) BAD("block %d: hidden width %d must be divisible by groups (%d)", i, hid, G);
        if (b->type == MF_BLOCK_A) {
            if (b->e2 != 0) BAD("block %d: type A takes e2 = 0", i);
        } else {
            if (in % 2) BAD("block %d: input channels (%d) must be even (2 attention heads)", i, in);
            if (b->type == MF_BLOCK_B3) {
                if (b->e2 < 1 || b->e2 > LIM_EXP) BAD("block %d: e2 must be in 1..%d, got %d", i, LIM_EXP, b->e2);
                if ((b->c * b->e2) % G) BAD("block %d: hidden width must be divisible by groups", i);
            }
        }
        if (b->type != MF_BLOCK_A && b->e1 == 1) BAD("block %d: types B and B3 need e1 > 1", i);
        in = b->c;
    }
    if (in % 2) BAD("last block channels must be even");
    return MF_OK;
#undef BAD
}

static int json_int(json_t *o, const char *key, int *out, int required, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) { mf_set_err(err, errlen, "architecture: missing \"%s\"", key); return -1; }
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < -1000000 || json_integer_value(v) > 1000000) {
        mf_set_err(err, errlen, "architecture: \"%s\" must be an integer", key);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

mf_status mf_arch_parse(const char *text, mf_arch *out, char *err, size_t errlen)
{
    if (!text) { mf_set_err(err, errlen, "architecture: empty"); return MF_ERR_ARCH; }
    while (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r') text++;
    if (*text != '{') {
        if (mf_arch_preset(text, out) == MF_OK) return MF_OK;
        mf_set_err(err, errlen, "unknown architecture '%.64s' (presets: 26m 52m 96m 151m 214m 294m 508m, or a JSON description)", text);
        return MF_ERR_ARCH;
    }
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root || !json_is_object(root)) {
        mf_set_err(err, errlen, "architecture: invalid JSON (%s)", root ? "not an object" : je.text);
        json_decref(root);
        return MF_ERR_ARCH;
    }
    mf_status st = MF_ERR_ARCH;
    memset(out, 0, sizeof *out);
    out->groups = 1;
    out->last_exp = 6;
    json_t *nm = json_object_get(root, "name");
    snprintf(out->name, sizeof out->name, "%s", json_is_string(nm) ? json_string_value(nm) : "custom");
    if (json_int(root, "stem", &out->stem, 1, err, errlen) ||
        json_int(root, "tokens", &out->tokens, 1, err, errlen) ||
        json_int(root, "token_dim", &out->token_dim, 1, err, errlen) ||
        json_int(root, "groups", &out->groups, 0, err, errlen) ||
        json_int(root, "classifier_width", &out->classifier_width, 1, err, errlen) ||
        json_int(root, "last_exp", &out->last_exp, 0, err, errlen))
        goto done;
    json_t *blocks = json_object_get(root, "blocks");
    if (!json_is_array(blocks) || json_array_size(blocks) < 1 || json_array_size(blocks) > MF_MAX_BLOCKS) {
        mf_set_err(err, errlen, "architecture: \"blocks\" must be a list of 1..%d rows", MF_MAX_BLOCKS);
        goto done;
    }
    out->n_blocks = (int)json_array_size(blocks);
    for (int i = 0; i < out->n_blocks; i++) {
        json_t *row = json_array_get(blocks, (size_t)i);
        if (!json_is_array(row) || json_array_size(row) != 5 || !json_is_string(json_array_get(row, 0))) {
            mf_set_err(err, errlen, "architecture: block %d must be [type, e1, c, s, e2]", i);
            goto done;
        }
        const char *t = json_string_value(json_array_get(row, 0));
        int type = -1;
        for (int k = 0; k < 3; k++)
            if (strcmp(t, type_names[k]) == 0) type = k;
        if (type < 0) { mf_set_err(err, errlen, "architecture: block %d: type must be A, B3 or B", i); goto done; }
        int v[4];
        for (int k = 0; k < 4; k++) {
            json_t *x = json_array_get(row, (size_t)k + 1);
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 1000000) {
                mf_set_err(err, errlen, "architecture: block %d: e1, c, s, e2 must be non-negative integers", i);
                goto done;
            }
            v[k] = (int)json_integer_value(x);
        }
        out->blocks[i] = (mf_block_desc){(mf_block_type)type, v[0], v[1], v[2], v[3]};
    }
    st = mf_arch_validate(out, err, errlen);
done:
    json_decref(root);
    return st;
}

char *mf_arch_to_json(const mf_arch *a)
{
    json_t *root = json_object();
    json_object_set_new(root, "name", json_string(a->name));
    json_object_set_new(root, "stem", json_integer(a->stem));
    json_object_set_new(root, "tokens", json_integer(a->tokens));
    json_object_set_new(root, "token_dim", json_integer(a->token_dim));
    json_object_set_new(root, "groups", json_integer(a->groups));
    json_object_set_new(root, "classifier_width", json_integer(a->classifier_width));
    json_object_set_new(root, "last_exp", json_integer(a->last_exp));
    json_t *bl = json_array();
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block_desc *b = &a->blocks[i];
        json_array_append_new(bl, json_pack("[siiii]", type_names[b->type], b->e1, b->c, b->s, b->e2));
    }
    json_object_set_new(root, "blocks", bl);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

/* ---- tensor list --------------------------------------------------------- */

typedef struct spec_list {
    mf_tensor_spec *v;
    int n, cap;
    int oom;
} spec_list;

static void add(spec_list *l, int ndim, int d0, int d1, int d2, int d3, const char *fmt, ...)
{
    if (l->oom) return;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        mf_tensor_spec *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) { l->oom = 1; return; }
        l->v = v;
        l->cap = cap;
    }
    mf_tensor_spec *s = &l->v[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    s->shape[0] = d0; s->shape[1] = d1; s->shape[2] = d2; s->shape[3] = d3;
    s->numel = 1;
    for (int i = 0; i < ndim; i++) s->numel *= (size_t)s->shape[i];
    for (int i = ndim; i < 4; i++) s->shape[i] = 0;
}

static void add_bn(spec_list *l, int c, const char *prefix)
{
    add(l, 1, c, 0, 0, 0, "%s.weight", prefix);
    add(l, 1, c, 0, 0, 0, "%s.bias", prefix);
    add(l, 1, c, 0, 0, 0, "%s.running_mean", prefix);
    add(l, 1, c, 0, 0, 0, "%s.running_var", prefix);
}

static void add_linear(spec_list *l, int out, int in, const char *prefix)
{
    add(l, 2, out, in, 0, 0, "%s.weight", prefix);
    add(l, 1, out, 0, 0, 0, "%s.bias", prefix);
}

static void add_conv(spec_list *l, int out, int in_per_group, int k, const char *prefix)
{
    add(l, 4, out, in_per_group, k, k, "%s.weight", prefix);
}

static void add_m2f(spec_list *l, const char *p, int C, int D)
{
    char b[128];
    snprintf(b, sizeof b, "%s.alpha.0", p); add_linear(l, C, D, b);
    snprintf(b, sizeof b, "%s.q", p); add_linear(l, C, D, b);
    snprintf(b, sizeof b, "%s.proj", p); add_linear(l, D, C, b);
    add(l, 1, D, 0, 0, 0, "%s.layer_norm.weight", p);
    add(l, 1, D, 0, 0, 0, "%s.layer_norm.bias", p);
}

static void add_bridges(spec_list *l, int i, int cin, int cout, int D)
{
    char p[64], b[128];
    snprintf(p, sizeof p, "features.%d.local_global", i);
    add_m2f(l, p, cin, D);
    snprintf(b, sizeof b, "features.%d.global_block.ffn.0", i); add_linear(l, 2 * D, D, b);
    snprintf(b, sizeof b, "features.%d.global_block.ffn.2", i); add_linear(l, D, 2 * D, b);
    add(l, 1, D, 0, 0, 0, "features.%d.global_block.ffn_norm.weight", i);
    add(l, 1, D, 0, 0, 0, "features.%d.global_block.ffn_norm.bias", i);
    snprintf(b, sizeof b, "features.%d.global_block.q", i); add_linear(l, D, D, b);
    snprintf(b, sizeof b, "features.%d.global_block.channel_mlp", i); add_linear(l, D, D, b);
    add(l, 1, D, 0, 0, 0, "features.%d.global_block.layer_norm.weight", i);
    add(l, 1, D, 0, 0, 0, "features.%d.global_block.layer_norm.bias", i);
    snprintf(b, sizeof b, "features.%d.global_local.k", i); add_linear(l, cout, D, b);
    snprintf(b, sizeof b, "features.%d.global_local.proj", i); add_linear(l, cout, D, b);
}

static void add_hyper(spec_list *l, int i, const char *name, int D, int C)
{
    char b[128];
    snprintf(b, sizeof b, "features.%d.%s.hyper.0", i, name); add_linear(l, D / 4, D, b);
    snprintf(b, sizeof b, "features.%d.%s.hyper.2", i, name); add_linear(l, 2 * C, D / 4, b);
}

int mf_arch_tensor_specs(const mf_arch *a, int num_classes, mf_tensor_spec **out)
{
    spec_list l = {0};
    char b[128];
    const int D = a->token_dim, G = a->groups;
    add(&l, 2, a->tokens, D, 0, 0, "tokens.weight");
    add_conv(&l, a->stem, 3, 3, "stem.0");
    add_bn(&l, a->stem, "stem.1");
    int in = a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block_desc *bd = &a->blocks[i];
        int oup = bd->c;
        if (bd->type == MF_BLOCK_A) {
            int hid = in * bd->e1;
            snprintf(b, sizeof b, "features.%d.conv.0", i); add_conv(&l, hid, 1, 3, b);
            snprintf(b, sizeof b, "features.%d.conv.1", i); add_bn(&l, hid, b);
            snprintf(b, sizeof b, "features.%d.conv.4", i); add_conv(&l, oup, hid / G, 1, b);
            snprintf(b, sizeof b, "features.%d.conv.5", i); add_bn(&l, oup, b);
        } else if (bd->type == MF_BLOCK_B3) {
            int h1 = in * bd->e1, h2 = oup * bd->e2;
            snprintf(b, sizeof b, "features.%d.conv1.0", i); add_conv(&l, h1, 1, 3, b);
            snprintf(b, sizeof b, "features.%d.conv1.1", i); add_bn(&l, h1, b);
            add_hyper(&l, i, "hyper1", D, h1);
            snprintf(b, sizeof b, "features.%d.conv2.0", i); add_conv(&l, oup, h1 / G, 1, b);
            snprintf(b, sizeof b, "features.%d.conv2.1", i); add_bn(&l, oup, b);
            snprintf(b, sizeof b, "features.%d.conv3.0", i); add_conv(&l, h2, 1, 3, b);
            snprintf(b, sizeof b, "features.%d.conv3.1", i); add_bn(&l, h2, b);
            add_hyper(&l, i, "hyper3", D, h2);
            snprintf(b, sizeof b, "features.%d.conv4.0", i); add_conv(&l, oup, h2 / G, 1, b);
            snprintf(b, sizeof b, "features.%d.conv4.1", i); add_bn(&l, oup, b);
            add_bridges(&l, i, in, oup, D);
        } else {
            int h = in * bd->e1;
            snprintf(b, sizeof b, "features.%d.conv1.0", i); add_conv(&l, h, in / G, 1, b);
            snprintf(b, sizeof b, "features.%d.conv1.1", i); add_bn(&l, h, b);
            add_hyper(&l, i, "hyper1", D, h);
            snprintf(b, sizeof b, "features.%d.conv2.0", i); add_conv(&l, h, 1, 3, b);
            snprintf(b, sizeof b, "features.%d.conv2.1", i); add_bn(&l, h, b);
            add_hyper(&l, i, "hyper2", D, h);
            snprintf(b, sizeof b, "features.%d.conv3.0", i); add_conv(&l, oup, h / G, 1, b);
            snprintf(b, sizeof b, "features.%d.conv3.1", i); add_bn(&l, oup, b);
            add_bridges(&l, i, in, oup, D);
        }
        in = oup;
    }
    add_m2f(&l, "local_global", in, D);
    int hid = in * a->last_exp;
    add_conv(&l, hid, in / G, 1, "classifier.conv.1");
    add_bn(&l, hid, "classifier.conv.2");
    add_linear(&l, a->classifier_width, hid + D, "classifier.fc.0");
    add_bn(&l, a->classifier_width, "classifier.fc.1");
    add_linear(&l, num_classes, a->classifier_width, "classifier.classifier.1");
    if (l.oom) { free(l.v); *out = NULL; return -1; }
    *out = l.v;
    return l.n;
}

size_t mf_arch_param_count(const mf_arch *a, int num_classes)
{
    mf_tensor_spec *s;
    int n = mf_arch_tensor_specs(a, num_classes, &s);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(s[i].name);
        if (len > 13 && (strcmp(s[i].name + len - 13, ".running_mean") == 0 ||
                         strcmp(s[i].name + len - 12, ".running_var") == 0))
            continue;
        total += s[i].numel;
    }
    free(s);
    return total;
}

static int conv_out(int n, int s) { return (n + 2 - 3) / s + 1; }

double mf_arch_madds(const mf_arch *a, int num_classes, int h, int w)
{
    const double T = a->tokens, D = a->token_dim, G = a->groups;
    h = conv_out(h, 2);
    w = conv_out(w, 2);
    double hw = (double)h * w, m = 27.0 * a->stem * hw;
    int in = a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block_desc *b = &a->blocks[i];
        double hin = hw;
        int oh = conv_out(h, b->s), ow = conv_out(w, b->s);
        double hwo = (double)oh * ow;
        if (b->type == MF_BLOCK_A) {
            double hid = (double)in * b->e1;
            m += 9 * hid * hwo + hid * b->c / G * hwo;
        } else {
            /* bridges: M->F (q, alpha, 2 attention products, proj), Former, F->M */
            m += 2 * T * D * in + 2 * T * hin * in + T * in * D;
            m += T * D * D + 2 * T * T * D + T * D * D + 4 * T * D * D;
            m += 2 * T * D * b->c + 2 * hwo * T * b->c;
            if (b->type == MF_BLOCK_B3) {
                double h1 = (double)in * b->e1, h2 = (double)b->c * b->e2;
                m += 9 * h1 * hwo + h1 * b->c / G * hwo + 9 * h2 * hwo + h2 * b->c / G * hwo;
                m += 2 * (D * D / 4) + D / 4 * 2 * (h1 + h2);
            } else {
                double hid = (double)in * b->e1;
                m += hid * in / G * hin + 9 * hid * hwo + hid * b->c / G * hwo;
                m += 2 * (D * D / 4) + D / 4 * 2 * 2 * hid;
            }
        }
        h = oh; w = ow; hw = hwo;
        in = b->c;
    }
    double hid = (double)in * a->last_exp;
    m += 2 * T * D * in + 2 * T * hw * in + T * in * D;
    m += hid * in / G * hw + (hid + D) * a->classifier_width + (double)a->classifier_width * num_classes;
    return m;
}
