/* arch.c -- Mobile-Former architectures: the seven presets, JSON descriptions,
 * validation, the checkpoint tensor list an architecture implies, and
 * parameter / multiply-add counts. */
#include "mf.h"
#include "internal.h"
#include "recipe.h"

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
            if (strcmp(t, mf_block_recipes[k].name) == 0) type = k;
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
        json_array_append_new(bl, json_pack("[siiii]", mf_block_recipes[b->type].name, b->e1, b->c, b->s, b->e2));
    }
    json_object_set_new(root, "blocks", bl);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

/* ---- tensor list and counts, from the recipe ------------------------------ */

typedef struct spec_list {
    mf_tensor_spec *v;
    int n, cap;
    int oom;
} spec_list;

static void add(spec_list *l, int ndim, int d0, int d1, int d2, int d3, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
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

static void add_bn(spec_list *l, int c, const char *p, const char *bn)
{
    add(l, 1, c, 0, 0, 0, "%s%s.weight", p, bn);
    add(l, 1, c, 0, 0, 0, "%s%s.bias", p, bn);
    add(l, 1, c, 0, 0, 0, "%s%s.running_mean", p, bn);
    add(l, 1, c, 0, 0, 0, "%s%s.running_var", p, bn);
}

static void add_linear(spec_list *l, int out, int in, const char *p, const char *name, const char *sub)
{
    add(l, 2, out, in, 0, 0, "%s%s%s.weight", p, name, sub);
    add(l, 1, out, 0, 0, 0, "%s%s%s.bias", p, name, sub);
}

/* The checkpoint tensors of recipe rows under prefix p (e.g. "features.3."). */
static void add_rows(spec_list *l, const mf_layer_recipe *rows, int n, const char *p, const mf_widths *w, int G)
{
    const int D = w->v[MF_DIM_TOK];
    for (int i = 0; i < n; i++) {
        const mf_layer_recipe *r = &rows[i];
        const int in = mf_dim_eval(r->in, w), out = mf_dim_eval(r->out, w);
        switch (r->kind) {
        case MF_LAYER_DW:
            add(l, 4, out, 1, 3, 3, "%s%s.weight", p, r->name);
            add_bn(l, out, p, r->bn);
            break;
        case MF_LAYER_PW:
            add(l, 4, out, in / G, 1, 1, "%s%s.weight", p, r->name);
            add_bn(l, out, p, r->bn);
            break;
        case MF_LAYER_STEM:
            add(l, 4, out, in, 3, 3, "%s%s.weight", p, r->name);
            add_bn(l, out, p, r->bn);
            break;
        case MF_LAYER_HYPER:
            add_linear(l, D / 4, D, p, r->name, ".hyper.0");
            add_linear(l, 2 * out, D / 4, p, r->name, ".hyper.2");
            break;
        case MF_LAYER_LINEAR: add_linear(l, out, in, p, r->name, ""); break;
        case MF_LAYER_LINEAR_BN:
            add_linear(l, out, in, p, r->name, "");
            add_bn(l, out, p, r->bn);
            break;
        case MF_LAYER_NORM:
            add(l, 1, out, 0, 0, 0, "%s%s.weight", p, r->name);
            add(l, 1, out, 0, 0, 0, "%s%s.bias", p, r->name);
            break;
        case MF_LAYER_TOKENS: add(l, 2, in, out, 0, 0, "%s%s", p, r->name); break;
        case MF_LAYER_ATTN: break;
        }
    }
}

int mf_arch_tensor_specs(const mf_arch *a, int num_classes, mf_tensor_spec **out)
{
    spec_list l = {0};
    const mf_widths top = mf_recipe_top_widths(a, num_classes);
    add_rows(&l, mf_stem_recipe.rows, mf_stem_recipe.n, "", &top, a->groups);
    int in = a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block_recipe *br = &mf_block_recipes[a->blocks[i].type];
        const mf_widths w = mf_recipe_block_widths(a, i, in);
        char p[32];
        snprintf(p, sizeof p, "features.%d.", i);
        add_rows(&l, br->layers, br->n_layers, p, &w, a->groups);
        if (br->bridges) add_rows(&l, mf_bridge_recipe.rows, mf_bridge_recipe.n, p, &w, a->groups);
        in = a->blocks[i].c;
    }
    add_rows(&l, mf_final_m2f_recipe.rows, mf_final_m2f_recipe.n, "", &top, a->groups);
    add_rows(&l, mf_head_recipe.rows, mf_head_recipe.n, "", &top, a->groups);
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

/* Multiply-adds of recipe rows on T tokens; the map is h x w at the start and
 * becomes oh x ow after a strided depthwise row.  hw_in / hw_out: the block's
 * input and output maps (for the attention products). */
/* Multiply-adds of recipe rows, added to m[] by kind. */
static void madds_rows(const mf_layer_recipe *rows, int n, const mf_widths *w, int G, double T, double *hw,
                       double hw_in, double hw_out, double *m)
{
    const double D = w->v[MF_DIM_TOK];
    for (int i = 0; i < n; i++) {
        const mf_layer_recipe *r = &rows[i];
        const double in = mf_dim_eval(r->in, w), out = mf_dim_eval(r->out, w);
        switch (r->kind) {
        case MF_LAYER_DW:
            if (r->strided) *hw = hw_out;
            m[MF_MADDS_DEPTHWISE] += 9 * out * *hw;
            break;
        case MF_LAYER_PW: m[MF_MADDS_CONV1X1] += out * in / G * *hw; break;
        case MF_LAYER_STEM: m[MF_MADDS_STEM] += 9 * in * out * *hw; break;
        case MF_LAYER_HYPER: m[MF_MADDS_LINEAR] += D * (D / 4) + (D / 4) * 2 * out; break;
        case MF_LAYER_LINEAR:
        case MF_LAYER_LINEAR_BN: m[MF_MADDS_LINEAR] += (r->per_image ? 1 : T) * in * out; break;
        case MF_LAYER_ATTN:
            if (r->attn == MF_ATTN_M2F) m[MF_MADDS_ATTENTION] += 2 * T * hw_in * w->v[MF_DIM_IN];
            else if (r->attn == MF_ATTN_FORMER) m[MF_MADDS_ATTENTION] += 2 * T * T * D;
            else m[MF_MADDS_ATTENTION] += 2 * T * hw_out * w->v[MF_DIM_OUT];
            break;
        case MF_LAYER_NORM:
        case MF_LAYER_TOKENS: break;
        }
    }
}

void mf_arch_madds_by_kind(const mf_arch *a, int num_classes, int h, int w, double out[MF_MADDS_KINDS])
{
    const double T = a->tokens;
    const int G = a->groups;
    const mf_widths top = mf_recipe_top_widths(a, num_classes);
    for (int k = 0; k < MF_MADDS_KINDS; k++) out[k] = 0;
    h = conv_out(h, 2);
    w = conv_out(w, 2);
    double hw = (double)h * w;
    madds_rows(mf_stem_recipe.rows, mf_stem_recipe.n, &top, G, T, &hw, hw, hw, out);
    int in = a->stem;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block_desc *b = &a->blocks[i];
        const mf_block_recipe *br = &mf_block_recipes[b->type];
        const mf_widths wd = mf_recipe_block_widths(a, i, in);
        int oh = conv_out(h, b->s), ow = conv_out(w, b->s);
        const double hin = hw, hwo = (double)oh * ow;
        madds_rows(br->layers, br->n_layers, &wd, G, T, &hw, hin, hwo, out);
        if (br->bridges) madds_rows(mf_bridge_recipe.rows, mf_bridge_recipe.n, &wd, G, T, &hw, hin, hwo, out);
        h = oh;
        w = ow;
        hw = hwo;
        in = b->c;
    }
    madds_rows(mf_final_m2f_recipe.rows, mf_final_m2f_recipe.n, &top, G, T, &hw, hw, hw, out);
    madds_rows(mf_head_recipe.rows, mf_head_recipe.n, &top, G, T, &hw, hw, hw, out);
}

double mf_arch_madds(const mf_arch *a, int num_classes, int h, int w)
{
    double k[MF_MADDS_KINDS], m = 0;
    mf_arch_madds_by_kind(a, num_classes, h, w, k);
    for (int i = 0; i < MF_MADDS_KINDS; i++) m += k[i];
    return m;
}
