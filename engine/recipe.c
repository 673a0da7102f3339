/* recipe.c -- the tables of recipe.h: every layer of every block kind, the
 * bridges, the stem and the head, in the reference state_dict's order. */
#include "recipe.h"

#include <stddef.h>

#define D_(s) {MF_DIM_##s, 0, 0}
#define IN D_(IN)
#define OUT D_(OUT)
#define H1 D_(H1)
#define H2 D_(H2)
#define TOK D_(TOK)
#define TOK2 {MF_DIM_TOK, 2, 0}

#define BLK(f) .part = MF_PART_BLOCK, .field = offsetof(mf_block, f)

const mf_block_recipe mf_block_recipes[3] = {
    [MF_BLOCK_A] = {
        .type = MF_BLOCK_A, .name = "A", .n_layers = 2, .bridges = 0,
        .layers = {
            /* dw3x3(e1) -> relu6 -> 1x1 (+x) */
            {.kind = MF_LAYER_DW, .name = "conv.0", .bn = "conv.1", .in = IN, .out = H1, .strided = 1,
             .shuffled = 1, BLK(dw1), .src = MF_MAP_X, .dst = MF_MAP_U1, .act = MF_ACT_RELU6},
            {.kind = MF_LAYER_PW, .name = "conv.4", .bn = "conv.5", .in = H1, .out = OUT, BLK(pw1),
             .src = MF_MAP_U1, .dst = MF_MAP_Y, .act = MF_ACT_NONE, .res = MF_RES_X_IF_IDENTITY},
        },
    },
    [MF_BLOCK_B3] = {
        .type = MF_BLOCK_B3, .name = "B3", .n_layers = 6, .bridges = 1, .post_residual = 1,
        .layers = {
            /* dw3x3(e1) (dyrelu 1) -> 1x1 = r -> dw3x3(e2) (dyrelu 2) -> 1x1 (+r) */
            {.kind = MF_LAYER_DW, .name = "conv1.0", .bn = "conv1.1", .in = IN, .out = H1, .strided = 1,
             .shuffled = 1, BLK(dw1), .src = MF_MAP_X, .dst = MF_MAP_U1, .act = MF_ACT_DYRELU, .dy = 1},
            {.kind = MF_LAYER_HYPER, .name = "hyper1", .out = H1, BLK(hy1)},
            {.kind = MF_LAYER_PW, .name = "conv2.0", .bn = "conv2.1", .in = H1, .out = OUT, BLK(pw1),
             .src = MF_MAP_U1, .dst = MF_MAP_Y, .act = MF_ACT_NONE},
            {.kind = MF_LAYER_DW, .name = "conv3.0", .bn = "conv3.1", .in = OUT, .out = H2, .strided = 0,
             .shuffled = 1, BLK(dw2), .src = MF_MAP_Y, .dst = MF_MAP_U2, .act = MF_ACT_DYRELU, .dy = 2},
            {.kind = MF_LAYER_HYPER, .name = "hyper3", .out = H2, BLK(hy2)},
            {.kind = MF_LAYER_PW, .name = "conv4.0", .bn = "conv4.1", .in = H2, .out = OUT, BLK(pw2),
             .src = MF_MAP_U2, .dst = MF_MAP_Y, .act = MF_ACT_NONE, .res = MF_RES_DST},
        },
    },
    [MF_BLOCK_B] = {
        .type = MF_BLOCK_B, .name = "B", .n_layers = 5, .bridges = 1,
        .layers = {
            /* 1x1(e1) (dyrelu 1, shuffled) -> dw3x3 (dyrelu 2) -> 1x1 (shuffled, +x) */
            {.kind = MF_LAYER_PW, .name = "conv1.0", .bn = "conv1.1", .in = IN, .out = H1, .shuffled = 1,
             BLK(pw1), .src = MF_MAP_X, .dst = MF_MAP_U1, .act = MF_ACT_DYRELU, .dy = 1},
            {.kind = MF_LAYER_HYPER, .name = "hyper1", .out = H1, BLK(hy1)},
            {.kind = MF_LAYER_DW, .name = "conv2.0", .bn = "conv2.1", .in = H1, .out = H1, .strided = 1,
             .shuffled = 0, BLK(dw1), .src = MF_MAP_U1, .dst = MF_MAP_U2, .act = MF_ACT_DYRELU, .dy = 2},
            {.kind = MF_LAYER_HYPER, .name = "hyper2", .out = H1, BLK(hy2)},
            {.kind = MF_LAYER_PW, .name = "conv3.0", .bn = "conv3.1", .in = H1, .out = OUT, .shuffled = 1,
             BLK(pw2), .src = MF_MAP_U2, .dst = MF_MAP_Y, .act = MF_ACT_NONE, .res = MF_RES_X_IF_IDENTITY},
        },
    },
};

#define M2F(f) .part = MF_PART_M2F, .field = offsetof(mf_m2f, f)
#define FOR(f) .part = MF_PART_FORMER, .field = offsetof(mf_former, f)
#define F2M(f) .part = MF_PART_F2M, .field = offsetof(mf_f2m, f)

/* The M2F rows come first: they are also mf_final_m2f_recipe. */
static const mf_layer_recipe bridge_rows[] = {
    {.kind = MF_LAYER_LINEAR, .name = "local_global.alpha.0", .in = TOK, .out = IN, M2F(alpha)},
    {.kind = MF_LAYER_LINEAR, .name = "local_global.q", .in = TOK, .out = IN, M2F(q)},
    {.kind = MF_LAYER_ATTN, .attn = MF_ATTN_M2F, .part = MF_PART_M2F},
    {.kind = MF_LAYER_LINEAR, .name = "local_global.proj", .in = IN, .out = TOK, M2F(proj)},
    {.kind = MF_LAYER_NORM, .name = "local_global.layer_norm", .out = TOK, M2F(ln)},
    {.kind = MF_LAYER_LINEAR, .name = "global_block.ffn.0", .in = TOK, .out = TOK2, FOR(ffn1)},
    {.kind = MF_LAYER_LINEAR, .name = "global_block.ffn.2", .in = TOK2, .out = TOK, FOR(ffn2)},
    {.kind = MF_LAYER_NORM, .name = "global_block.ffn_norm", .out = TOK, FOR(ffn_ln)},
    {.kind = MF_LAYER_LINEAR, .name = "global_block.q", .in = TOK, .out = TOK, FOR(q)},
    {.kind = MF_LAYER_ATTN, .attn = MF_ATTN_FORMER, .part = MF_PART_FORMER},
    {.kind = MF_LAYER_LINEAR, .name = "global_block.channel_mlp", .in = TOK, .out = TOK, FOR(mlp)},
    {.kind = MF_LAYER_NORM, .name = "global_block.layer_norm", .out = TOK, FOR(ln)},
    {.kind = MF_LAYER_LINEAR, .name = "global_local.k", .in = TOK, .out = OUT, F2M(k)},
    {.kind = MF_LAYER_LINEAR, .name = "global_local.proj", .in = TOK, .out = OUT, F2M(v)},
    {.kind = MF_LAYER_ATTN, .attn = MF_ATTN_F2M, .part = MF_PART_F2M},
};

const mf_recipe_list mf_bridge_recipe = {bridge_rows, (int)(sizeof bridge_rows / sizeof bridge_rows[0])};
const mf_recipe_list mf_final_m2f_recipe = {bridge_rows, 5};

#define MDL(f) .part = MF_PART_MODEL, .field = offsetof(mf_model, f)

static const mf_layer_recipe stem_rows[] = {
    {.kind = MF_LAYER_TOKENS, .name = "tokens.weight", .in = D_(NTOK), .out = TOK, MDL(tokens)},
    {.kind = MF_LAYER_STEM, .name = "stem.0", .bn = "stem.1", .in = {MF_DIM_ONE, 3, 0}, .out = D_(STEM),
     MDL(stem_w)},
};

static const mf_layer_recipe head_rows[] = {
    {.kind = MF_LAYER_PW, .name = "classifier.conv.1", .bn = "classifier.conv.2", .in = IN, .out = H1,
     MDL(cls_pw), .act = MF_ACT_RELU6},
    {.kind = MF_LAYER_LINEAR_BN, .name = "classifier.fc.0", .bn = "classifier.fc.1", .in = D_(FCIN),
     .out = D_(CLSW), .per_image = 1, MDL(fc)},
    {.kind = MF_LAYER_LINEAR, .name = "classifier.classifier.1", .in = D_(CLSW), .out = D_(CLASSES),
     .per_image = 1, MDL(head)},
};

const mf_recipe_list mf_stem_recipe = {stem_rows, (int)(sizeof stem_rows / sizeof stem_rows[0])};
const mf_recipe_list mf_head_recipe = {head_rows, (int)(sizeof head_rows / sizeof head_rows[0])};

static mf_widths common(const mf_arch *a)
{
    mf_widths w = {{0}};
    w.v[MF_DIM_TOK] = a->token_dim;
    w.v[MF_DIM_NTOK] = a->tokens;
    w.v[MF_DIM_STEM] = a->stem;
    w.v[MF_DIM_CLSW] = a->classifier_width;
    w.v[MF_DIM_ONE] = 1;
    return w;
}

mf_widths mf_recipe_block_widths(const mf_arch *a, int i, int in)
{
    const mf_block_desc *d = &a->blocks[i];
    mf_widths w = common(a);
    w.v[MF_DIM_IN] = in;
    w.v[MF_DIM_OUT] = d->c;
    w.v[MF_DIM_H1] = in * d->e1;
    w.v[MF_DIM_H2] = d->type == MF_BLOCK_B3 ? d->c * d->e2 : 0;
    return w;
}

mf_widths mf_recipe_top_widths(const mf_arch *a, int num_classes)
{
    mf_widths w = common(a);
    const int C = a->blocks[a->n_blocks - 1].c;
    w.v[MF_DIM_IN] = C;
    w.v[MF_DIM_H1] = C * a->last_exp;
    w.v[MF_DIM_FCIN] = C * a->last_exp + a->token_dim;
    w.v[MF_DIM_CLASSES] = num_classes;
    return w;
}

void *mf_recipe_target(mf_model *m, mf_block *b, const mf_layer_recipe *r)
{
    char *base = NULL;
    switch (r->part) {
    case MF_PART_BLOCK: base = (char *)b; break;
    case MF_PART_M2F: base = b ? (char *)&b->m2f : (char *)&m->final_m2f; break;
    case MF_PART_FORMER: base = (char *)&b->former; break;
    case MF_PART_F2M: base = (char *)&b->f2m; break;
    case MF_PART_MODEL: base = (char *)m; break;
    }
    return base + r->field;
}

const void *mf_recipe_target_const(const mf_model *m, const mf_block *b, const mf_layer_recipe *r)
{
    return mf_recipe_target((mf_model *)m, (mf_block *)b, r);
}
