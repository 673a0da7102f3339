/* internal.h -- engine-private types: the folded weights of a model, the
 * kernel table, and the helpers model.c, forward.c and the kernels share.
 * Not installed; the public API is mf.h.
 *
 * Files of the engine, by job:
 *   recipe.c     the network's structure (recipe.h): every layer of every block kind
 *   arch.c       presets, JSON descriptions, validation, tensor list, counts
 *   loader.c     safetensors file -> tensors -> model.c
 *   model.c      folding and packing, from the recipe
 *   forward.c    the forward pass and the workspace plan
 *   team.c       a workspace's helper threads (team.h)
 *   kernels.c    CPU features and the choice of kernel set
 *   kernels_ref.c, kernels_avx512.c   the fp32 kernel sets (and the bf16 twins, portable bf16)
 *   kernels_avx512bf16.c, kernels_amx.c   bf16 GEMMs: vdpbf16ps, AMX tiles (kernels_bf16.h: layouts)
 *   mathfn.c     softmax, LayerNorm, hard sigmoid (scalar)
 *   synthetic.c  deterministic weights (mf_synthetic.h)
 *   status.c, alloc.c, clock.c   status text and error messages, aligned memory, the clock
 */
#ifndef MF_INTERNAL_H
#define MF_INTERNAL_H

#include "mf.h"
#include "mf_util.h"

#include <stddef.h>
#include <stdint.h>

/* 64-byte aligned allocation (NULL on failure); free with mf_free. */
void *mf_alloc(size_t bytes);
void mf_free(void *p);

/* A model's weight memory (alloc.c): 64-byte aligned pieces from 2 MiB
 * aligned chunks of their own mappings (huge pages when `huge`), read-only
 * once sealed, all freed together (unmapped: back to the system at once). */
typedef struct mf_arena mf_arena;
mf_arena *mf_arena_new(int huge);               /* NULL when out of memory */
void *mf_arena_alloc(mf_arena *a, size_t bytes); /* NULL when out of memory */
void mf_arena_seal(mf_arena *a);                /* no more writes (NULL is fine) */
void mf_arena_free(mf_arena *a);                /* NULL is fine */

/* ---- folded weights ------------------------------------------------------ */

/* Epilogue applied to a convolution's output, element by element:
 *   t = acc + bias[o];  t = act(t);  t += res[o][p] (if res) */
typedef enum mf_act { MF_ACT_NONE = 0, MF_ACT_RELU6, MF_ACT_DYRELU } mf_act;

typedef struct mf_epi {
    mf_act act;          /* activation after the bias */
    const float *bias;   /* [M] folded BatchNorm shift */
    const float *dya;    /* [M] dynamic-ReLU slope a (MF_ACT_DYRELU) */
    const float *dyb;    /* [M] dynamic-ReLU slope b */
    const float *res;    /* residual added last, same layout as the output, or NULL; it may be the
                            output itself only with act MF_ACT_NONE (the portable sets' GEMM
                            writes the output before their epilogue reads res) */
    size_t ldr;          /* row stride of res (floats) */
} mf_epi;

/* 1x1 convolution with `groups` groups, BatchNorm folded.  Output rows of
 * group g are written at rows j*G+g when shuffle_out (a following channel
 * shuffle(G), folded into the output stride), else at g*(M/G)+j. */
typedef struct mf_kernels mf_kernels;

/* Rows [oy0, oy1) of a 3x3 depthwise's oh x ow output, read from a window
 * of rows of its h x w input (a band of the block, forward.c): input
 * channel c's row iy is at x + c * ldx + (iy - xr0) * w for every row
 * [oy0 * s - 1, (oy1 - 1) * s + 2) inside [0, h) that those outputs read. */
typedef struct mf_dw_rows {
    const float *x; /* input channel 0, row xr0 */
    size_t ldx;     /* floats between input channels */
    int xr0;        /* first input row held */
    int h, w;       /* input size */
    int oh, ow;     /* output size */
    int oy0, oy1;   /* output rows computed */
} mf_dw_rows;

typedef struct mf_pw {
    const mf_kernels *k;   /* the set that packed the weights and runs the layer */
    int cout, cin, groups; /* channels out / in, groups */
    int shuffle_out;       /* 1: apply shuffle(groups) to the output */
    float *w;              /* [cout][cin/groups] plain (kernels without pw_pack) or NULL */
    void *wp;              /* packed per group by the kernel set's pw_pack, or NULL */
    size_t wp_group;       /* bytes per group in wp */
    float *bias;           /* [cout], in pre-shuffle order */
} mf_pw;

/* Depthwise 3x3 (pad 1) whose output channel q reads input channel src[q];
 * a multiplier and a following shuffle are both folded into src. */
typedef struct mf_dw {
    int cout, cin, stride; /* channels out / in, stride */
    float *w;              /* [cout][9] */
    float *bias;           /* [cout] */
    int *src;              /* [cout] input channel of each output channel */
} mf_dw;

/* Linear layer stored transposed for the token kernels: y = x W^T + b. */
typedef struct mf_lin {
    const mf_kernels *k; /* the set that packed the weights and runs the layer */
    int out, in;  /* features out / in */
    float *wt;    /* [in][out] plain (kernels without lin_pack) or NULL */
    void *wp;     /* packed by the kernel set's lin_pack, or NULL */
    float *b;     /* [out] */
    int stream;   /* 1: large and read once per run, prefetched non-temporally */
} mf_lin;

typedef struct mf_norm {
    float *g, *b; /* LayerNorm gain and shift [D] */
} mf_norm;

typedef struct mf_m2f {  /* Mobile -> Former bridge ("local_global") */
    mf_lin q, alpha, proj;
    mf_norm ln;
} mf_m2f;

typedef struct mf_former { /* token self-attention + FFN ("global_block") */
    mf_lin q, mlp, ffn1, ffn2;
    mf_norm ln, ffn_ln;
} mf_former;

typedef struct mf_f2m {  /* Former -> Mobile bridge ("global_local") */
    mf_lin k, v;
} mf_f2m;

typedef struct mf_hyper { /* dynamic-ReLU coefficients from token 0 */
    mf_lin l1, l2;
} mf_hyper;

typedef struct mf_block {
    mf_block_type type;
    int cin, cout, stride, identity;
    int hid1, hid2;          /* hidden widths */
    /* A:  dw1 (relu6) -> pw1
     * B3: dw1 (dyrelu hy1) -> pw1 = r -> dw2 (dyrelu hy2) -> pw2 (+r) -> f2m
     * B:  pw1 (dyrelu hy1) -> dw1 (dyrelu hy2) -> pw2 (+x) -> f2m       */
    mf_dw dw1, dw2;
    mf_pw pw1, pw2;
    mf_hyper hy1, hy2;
    mf_m2f m2f;
    mf_former former;
    mf_f2m f2m;
} mf_block;

struct mf_model {
    mf_arch arch;
    int num_classes;
    mf_preprocess pre;
    char **labels;           /* [num_classes] */
    mf_precision precision;  /* of the 1x1 convolutions and linears */
    const mf_kernels *k;     /* their kernel set, chosen at build time (k->precision) */
    const mf_kernels *k32;   /* the fp32 set of every other layer (== k for fp32) */
    float *tokens;           /* [T][D] learned tokens */
    float *stem_w;           /* [stem][27] BN folded */
    float *stem_b;           /* [stem] */
    mf_block blocks[MF_MAX_BLOCKS];
    mf_m2f final_m2f;
    mf_pw cls_pw;            /* classifier 1x1 (+BN), relu6 */
    mf_lin fc;               /* fc.0 with BatchNorm1d folded, hswish */
    mf_lin head;             /* classifier.1 */
    size_t bytes;            /* weight memory */
    mf_arena *arena;         /* every weight array (sealed read-only after the build) */
};

/* ---- kernels --------------------------------------------------------------
 * Each optimized kernel has a plain reference twin (kernels_ref.c) and a test
 * holding the two together.  Feature maps are CHW, one image at a time.
 *
 * A set's precision is that of its pw and linear kernels (the GEMMs).  A bf16
 * set has only those and its pack functions; a bf16 model runs the layers
 * around them on the fp32 set chosen with it (mf_kernels_choose, model->k32).
 * A layer records the set that packed it (mf_pw.k, mf_lin.k), so layers of
 * both precisions can sit in one model.
 *
 * scratch: pw_scratch_bytes(k) / lin_scratch_bytes(in) bytes (64-byte aligned)
 * that the kernel may use, whatever n or rows; NULL functions: none needed. */
struct mf_kernels {
    const char *name;
    mf_precision precision; /* of pw and linear */
    /* y[M][N] (row stride ldy) = W x[K][N] (row stride ldx) + epilogue; one group. */
    void (*pw)(const mf_pw *p, int group, const float *x, size_t ldx, int n, float *y, size_t ldy,
               const mf_epi *e, void *scratch);
    /* 3x3 depthwise, output channels [c0, c1), rows g->oy0 .. g->oy1:
     * channel q's row oy at y + q * ldy + (oy - g->oy0) * g->ow. */
    void (*dw)(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e);
    /* Mobile->Former attention of one head: o[T][ch] = softmax(q x / sqrt(ch)) x^T,
     * x: [ch][hw]; q, o with row strides ldq, ldo; scratch >= T*hw floats. */
    void (*m2f_attn)(const float *x, int ch, int hw, const float *q, int ldq, int t, float scale,
                     float *o, int ldo, float *scratch);
    /* Former->Mobile attention of one head, in place: y[ch][hw] += v^T softmax(k y / sqrt(ch)),
     * k, v: [T][ch] with row strides ldk. */
    void (*f2m_attn)(float *y, int ch, int hw, const float *k, const float *v, int ldk, int t,
                     float scale);
    /* Columns [o0, o1) of y[rows][out] = x[rows][in] W^T + b (token-side linears,
     * the classifier head); o0 a multiple of 48. */
    void (*linear)(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch);
    /* x[i] = gelu(x[i]) = 0.5 x (1 + erf(x / sqrt 2)) for i < n (the Former's FFN). */
    void (*gelu)(float *x, size_t n);
    /* The stem, 3x3 stride 2 pad 1 from 3 channels, + bias + relu6, direct,
     * output rows [oy0, oy1); NULL: im2col + pw instead.  w: [c][27]. */
    void (*stem)(const float *in, int h, int w, const float *wt, const float *bias, int c, float *out,
                 int oh, int ow, int oy0, int oy1);
    /* Weight layouts, private to each kernel set.  pw_pack: one group's
     * folded weights [m][k] into pw_packed_bytes(m, k) bytes at out (64-byte
     * aligned); NULL: the pw kernel reads plain rows in mf_pw.w.  lin_pack:
     * a linear's transposed weights [in][out]; NULL: plain in mf_lin.wt.
     * A bf16 set's plain weights are already rounded to bf16 values. */
    size_t (*pw_packed_bytes)(int m, int k);
    void (*pw_pack)(const float *w, int m, int k, void *dst);
    size_t (*lin_packed_bytes)(int in, int out);
    void (*lin_pack)(const float *wt, int in, int out, void *dst);
    size_t (*pw_scratch_bytes)(int k);
    size_t (*lin_scratch_bytes)(int in);
    /* Optional, bf16 sets on the avx512 fp32 set: a 3x3 depthwise whose
     * output goes straight into the bf16 input layout of the 1x1 that reads
     * it (packed_map_bytes(groups, kg, n) bytes: per group of kg channels,
     * kernels_bf16.h), rather than into fp32 planes that the 1x1 would read
     * back, round and pack; the rounding is the same.  Pair slots [s0, s1)
     * of the groups * ceil(kg / 2); the n = (oy1 - oy0) * ow columns are
     * the rows g->oy0 .. g->oy1; scratch: mf_dw_packed_scratch(n) floats. */
    size_t (*packed_map_bytes)(int groups, int kg, int n);
    void (*dw_packed)(const mf_dw *d, int s0, int s1, const mf_dw_rows *g, uint16_t *y, int kg, const mf_epi *e,
                      float *scratch);
    /* 1: dw_packed zeroes the pairs past ceil(kg / 2) up to the layout's
     * 32-multiple of k, which the set's pw_packed reads (AMX tiles); 0: it
     * leaves them as they were, and pw_packed never reads them. */
    int dw_packed_pads;
    /* The 1x1 on such inputs: xp the group's packed map of n columns;
     * computes columns [c0, c0 + cols) (c0 a multiple of 16), y and e->res
     * offset to column c0 as for pw. */
    void (*pw_packed)(const mf_pw *p, int group, const uint16_t *xp, int n, int c0, int cols, float *y, size_t ldy,
                      const mf_epi *e, void *scratch);
};

/* Output planes dw_packed computes at once: at least eight (four channel
 * pairs), and for narrow maps as many as fit in 32 KiB, up to 64, so the
 * depthwise's per-call set-up (its masks, its input's phases) serves more
 * channels.  The scratch it needs for n columns is at most
 * mf_dw_packed_scratch(n) floats. */
#define MF_DW_PACKED_PLANES 8
#define MF_DW_PACKED_MAX_PLANES 64
#define MF_DW_PACKED_FLOATS 8192

static inline size_t mf_dw_packed_ld(size_t n) { return (n + 15) & ~(size_t)15; }

static inline int mf_dw_packed_planes(size_t n)
{
    size_t p = MF_DW_PACKED_FLOATS / mf_dw_packed_ld(n);
    if (p > MF_DW_PACKED_MAX_PLANES) p = MF_DW_PACKED_MAX_PLANES;
    if (p < MF_DW_PACKED_PLANES) p = MF_DW_PACKED_PLANES;
    return (int)p & ~1;
}

/* Scratch floats enough for dw_packed on any n' <= n columns. */
static inline size_t mf_dw_packed_scratch(size_t n)
{
    const size_t a = MF_DW_PACKED_PLANES * mf_dw_packed_ld(n);
    return a > MF_DW_PACKED_FLOATS ? a : MF_DW_PACKED_FLOATS;
}

extern const mf_kernels mf_kernels_ref;    /* plain scalar twins */
extern const mf_kernels mf_kernels_blas;   /* portable: OpenBLAS GEMM + plain loops */
extern const mf_kernels mf_kernels_avx512; /* only when mf_cpu_has_avx512() */
extern const mf_kernels mf_kernels_avx2;   /* AVX2 + FMA: only when mf_cpu_has_avx2() */
extern const mf_kernels mf_kernels_ref_bf16;     /* bf16 scalar twins */
extern const mf_kernels mf_kernels_blas_bf16;    /* bf16 portable: round, then fp32 OpenBLAS */
extern const mf_kernels mf_kernels_avx2_bf16;    /* round, then the avx2 fp32 GEMMs: only when mf_cpu_has_avx2() */
extern const mf_kernels mf_kernels_avx512_bf16;  /* vdpbf16ps: only when mf_cpu_has_avx512bf16() */
extern const mf_kernels mf_kernels_amx_bf16;     /* AMX tiles: only when mf_cpu_has_amx_bf16() */

/* The avx512 set's depthwise (mf_kernels.dw) for the bf16 sets' dw_packed,
 * channel q (c0 <= q < c1) written at y + (q - c0) * ldy. */
void mf_dw_avx512(const mf_dw *d, int c0, int c1, const mf_dw_rows *g, float *y, size_t ldy, const mf_epi *e);

/* kernels.c: CPU features, and the set MF_KERNELS or the CPU selects. */
int mf_cpu_has_avx512(void);
int mf_cpu_has_avx2(void);         /* AVX2 and FMA (with the OS saving the ymm state) */
int mf_cpu_has_avx512bf16(void);   /* AVX-512 (as above) and AVX512-BF16 */
int mf_cpu_has_amx_bf16(void);     /* the above, AMX-TILE/AMX-BF16, and the OS's permission (requested once) */
/* Whether linears read once per run (the classifier head at batch 1) are
 * best prefetched non-temporally (mf_lin.stream): on AMD, where it was
 * measured faster; not on Intel, where NTA prefetches skip L2 and the fp32
 * head ran at 4.5 GB/s against 11.4 GB/s with the usual T0 prefetches. */
int mf_cpu_stream_nt(void);

/* The sets for precision p, forced by `force` ("auto", "reference", ...; see
 * mf_kernels_name in mf.h) or, when NULL, by $MF_KERNELS: *gemm for the
 * 1x1 convolutions and linears, *f32 for the rest.  MF_ERR_ARG with the
 * reason in err when the value is unknown or names what the CPU lacks. */
mf_status mf_kernels_choose(mf_precision p, const char *force, const mf_kernels **gemm, const mf_kernels **f32,
                            char *err, size_t errlen);

/* ---- bfloat16 -------------------------------------------------------------
 * Round to nearest even, as VCVTNE2PS2BF16 does (so every path rounds the
 * same): zero and denormal inputs become a zero of their sign, NaN stays a
 * quiet NaN, overflow becomes infinity. */
static inline uint16_t mf_bf16_bits(float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float mf_bf16_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

/* f rounded to the nearest bfloat16, as a float. */
static inline float mf_bf16_round(float f) { return mf_bf16_float(mf_bf16_bits(f)); }

/* bf16 by rounding (kernels_ref.c), for the sets with no bf16 arithmetic of
 * their own (portable-bf16, avx2-bf16): the inputs are rounded into the
 * scratch, a pass at a time, and the set's fp32 kernel runs on them. */
typedef void (*mf_pw_fn)(const mf_pw *p, int group, const float *x, size_t ldx, int n, float *y, size_t ldy,
                         const mf_epi *e, void *scratch);
typedef void (*mf_linear_fn)(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch);
size_t mf_rounded_pw_scratch(int k);
void mf_rounded_pw(mf_pw_fn f32, const mf_pw *p, int g, const float *x, size_t ldx, int n, float *y, size_t ldy,
                   const mf_epi *e, void *scratch);
size_t mf_rounded_lin_scratch(int rows_per_pass, int in);
void mf_rounded_linear(mf_linear_fn f32, int rows_per_pass, const mf_lin *l, const float *x, int rows, float *y,
                       int o0, int o1, void *scratch);

/* Token-side helpers (tiny tensors, T x D); mf_linear_ref is the plain twin. */
void mf_linear_ref(const mf_lin *l, const float *x, int rows, float *y, int o0, int o1, void *scratch);
void mf_layernorm(float *x, int rows, int d, const mf_norm *n); /* mathfn.c */
float mf_hsig(float x);                                         /* mathfn.c */

#endif
