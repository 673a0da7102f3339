/* recipe.h -- the network's structure, written down once (engine-private).
 *
 * Mobile-Former is a stem, a list of blocks of three kinds (A, B3, B), a last
 * Mobile->Former bridge and a classifier head.  Each block kind is one row of
 * mf_block_recipes: its layers in the reference state_dict's order, each with
 * its checkpoint name, its widths as formulas of the block's widths (input,
 * output, the hidden widths, the token width), where its folded weights live,
 * and how the forward pass chains it (source and destination maps,
 * activation, residual).  The bridges of B and B3 blocks, the stem and the
 * head are tables of the same rows.
 *
 * Everything that depends on the structure loops over these tables:
 *   - mf_arch_tensor_specs (arch.c): the checkpoint tensors and their shapes;
 *   - mf_arch_madds (arch.c): multiply-adds per image;
 *   - mf_model_build (model.c): folding and packing each layer;
 *   - the block convolutions of the forward pass (forward.c).
 * So the four cannot drift apart: a change of structure is a change here.
 */
#ifndef MF_RECIPE_H
#define MF_RECIPE_H

#include "internal.h"

#include <stddef.h>

/* A width as a formula of the stage's widths: sym * mul / div. */
typedef enum mf_dim_sym {
    MF_DIM_IN = 0, /* block input channels (head: the last block's channels) */
    MF_DIM_OUT,    /* block output channels (c) */
    MF_DIM_H1,     /* first hidden width: in * e1 (head: in * last_exp) */
    MF_DIM_H2,     /* second hidden width: B3 c * e2 */
    MF_DIM_TOK,    /* token width D */
    MF_DIM_STEM,   /* stem channels */
    MF_DIM_FCIN,   /* head: pooled features + token 0, h1 + D */
    MF_DIM_CLSW,   /* head: classifier_width */
    MF_DIM_CLASSES,/* head: number of classes */
    MF_DIM_NTOK,   /* number of tokens T */
    MF_DIM_ONE,    /* the constant 1 (with mul: a small constant) */
    MF_DIM_COUNT
} mf_dim_sym;

typedef struct mf_dim {
    unsigned char sym; /* mf_dim_sym */
    unsigned char mul; /* multiplier (0 means 1) */
    unsigned char div; /* divisor (0 means 1) */
} mf_dim;

/* The widths a stage's formulas are evaluated against, indexed by mf_dim_sym. */
typedef struct mf_widths {
    int v[MF_DIM_COUNT];
} mf_widths;

static inline int mf_dim_eval(mf_dim d, const mf_widths *w)
{
    return w->v[d.sym] * (d.mul ? d.mul : 1) / (d.div ? d.div : 1);
}

typedef enum mf_layer_kind {
    MF_LAYER_DW = 0,   /* 3x3 depthwise conv (no bias) + BatchNorm: in -> out = in * multiplier */
    MF_LAYER_PW,       /* 1x1 conv (no bias, grouped) + BatchNorm: in -> out */
    MF_LAYER_HYPER,    /* dynamic-ReLU coefficients from token 0: linear D -> D/4, relu, D/4 -> 2 * out */
    MF_LAYER_LINEAR,   /* linear (weight + bias): in -> out, on every token (or once per image) */
    MF_LAYER_LINEAR_BN,/* linear + BatchNorm1d folded (the head's fc) */
    MF_LAYER_NORM,     /* LayerNorm over out features (weight + bias) */
    MF_LAYER_ATTN,     /* an attention product: no tensors, multiply-adds only */
    MF_LAYER_TOKENS,   /* the learned tokens [T][D] */
    MF_LAYER_STEM,     /* 3x3 stride-2 conv from 3 channels (no bias) + BatchNorm */
} mf_layer_kind;

/* Which attention product an MF_LAYER_ATTN row counts. */
typedef enum mf_attn {
    MF_ATTN_M2F = 0, /* tokens attend to the input map: 2 * T * hw * in */
    MF_ATTN_FORMER,  /* tokens attend to tokens: 2 * T * T * D */
    MF_ATTN_F2M,     /* the output map attends to the tokens: 2 * T * hw_out * out */
} mf_attn;

/* Feature maps of the forward pass, per image (forward.c). */
typedef enum mf_map {
    MF_MAP_X = 0, /* the block's input */
    MF_MAP_Y,     /* the block's output */
    MF_MAP_U1,    /* hidden scratch 1 */
    MF_MAP_U2,    /* hidden scratch 2 */
} mf_map;

/* Residual added in a convolution's epilogue. */
typedef enum mf_res {
    MF_RES_NONE = 0,
    MF_RES_X_IF_IDENTITY, /* the block input, when stride 1 and in == out */
    MF_RES_DST,           /* what the destination map holds (B3: conv4 adds conv2's output) */
} mf_res;

/* The struct a row's `field` is an offset in. */
typedef enum mf_part {
    MF_PART_BLOCK = 0, /* mf_block (convolutions, hypers) */
    MF_PART_M2F,       /* the block's mf_m2f, or the model's final_m2f */
    MF_PART_FORMER,    /* the block's mf_former */
    MF_PART_F2M,       /* the block's mf_f2m */
    MF_PART_MODEL,     /* mf_model (stem, tokens, head) */
} mf_part;

typedef struct mf_layer_recipe {
    mf_layer_kind kind; /* what it is */
    const char *name;   /* checkpoint name under the stage's prefix: "conv1.0", "hyper1", "global_local.k" */
    const char *bn;     /* DW, PW, STEM, LINEAR_BN: the BatchNorm folded into it; else NULL */
    mf_dim in, out;     /* widths (DW: out = in * multiplier; HYPER: out = the width it drives) */
    int strided;        /* DW: runs at the block's stride (else 1) */
    int shuffled;       /* DW: a following shuffle(G) folded into its index map, when G > 1;
                           PW: shuffle(G) applied to its output through the output stride */
    int per_image;      /* LINEAR(_BN): one row per image (the head), not one per token */
    mf_part part;       /* which struct `field` is an offset in */
    size_t field;       /* offset of its mf_dw / mf_pw / mf_hyper / mf_lin / mf_norm */
    mf_attn attn;       /* ATTN: which product */
    /* forward pass of DW / PW rows of a block */
    mf_map src, dst;    /* maps read and written */
    mf_act act;         /* activation in the epilogue */
    int dy;             /* DYRELU: slopes of the block's hyper 1 or 2 */
    mf_res res;         /* residual in the epilogue */
} mf_layer_recipe;

#define MF_RECIPE_MAX_LAYERS 8

typedef struct mf_block_recipe {
    mf_block_type type;  /* the block kind this row describes */
    const char *name;    /* its name in architecture descriptions: "A", "B3", "B" */
    int n_layers;        /* rows in layers */
    mf_layer_recipe layers[MF_RECIPE_MAX_LAYERS]; /* convolutions and hypers, state_dict order */
    int bridges;         /* followed in the checkpoint by the bridges (mf_bridge_recipe) */
    int post_residual;   /* B3: y += x after the Former->Mobile bridge, when identity */
} mf_block_recipe;

typedef struct mf_recipe_list {
    const mf_layer_recipe *rows; /* the rows */
    int n;                       /* how many */
} mf_recipe_list;

/* Indexed by mf_block_type. */
extern const mf_block_recipe mf_block_recipes[3];

/* The bridges of a B or B3 block, state_dict order, under "features.<i>.":
 * Mobile->Former ("local_global"), the Former ("global_block") and
 * Former->Mobile ("global_local"), with their attention products. */
extern const mf_recipe_list mf_bridge_recipe;

/* The last Mobile->Former bridge, at the top level: the M2F rows of the
 * bridges (same names, no prefix). */
extern const mf_recipe_list mf_final_m2f_recipe;

/* Before the blocks: tokens and stem.  After the last bridge: the head
 * (classifier conv, fc, class layer). */
extern const mf_recipe_list mf_stem_recipe;
extern const mf_recipe_list mf_head_recipe;

/* Widths of block i (input channels in), or of the stem / head. */
mf_widths mf_recipe_block_widths(const mf_arch *a, int i, int in);
mf_widths mf_recipe_top_widths(const mf_arch *a, int num_classes);

/* The folded layer a row describes: inside block b, or inside model m
 * (stem, head, the last bridge) when b is NULL. */
void *mf_recipe_target(mf_model *m, mf_block *b, const mf_layer_recipe *r);
const void *mf_recipe_target_const(const mf_model *m, const mf_block *b, const mf_layer_recipe *r);

#endif
