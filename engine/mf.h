/* mf.h -- Mobile-Former inference engine: public API.
 *
 * The engine runs the Mobile-Former (CVPR 2022) image classifier on the CPU.
 * Data path: a model file (safetensors + metadata) is loaded once into an
 * mf_model, which folds every BatchNorm and packs weights for the kernels and
 * is read-only afterwards, so any number of threads may share it.  Each
 * inference thread owns an mf_workspace (scratch memory plus optional helper
 * threads); mf_forward() maps a float32 NCHW batch to logits and allocates
 * nothing once the workspace has seen the largest batch/size it will get.
 *
 * Ownership: every pointer returned by a getter points into the model and
 * lives as long as the model.  Error text goes to a caller-owned buffer
 * (err, errlen), which may be NULL.  Library code never exits the process.
 */
#ifndef MF_H
#define MF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mf_status {
    MF_OK = 0,
    MF_ERR_IO,       /* file missing or unreadable */
    MF_ERR_FORMAT,   /* not a valid model file (header, offsets, sizes) */
    MF_ERR_ARCH,     /* unknown or invalid architecture description */
    MF_ERR_TENSOR,   /* a tensor is missing, unexpected, or has the wrong dtype/shape */
    MF_ERR_NOMEM,    /* allocation failed */
    MF_ERR_ARG,      /* bad argument (shape, batch, size) */
    MF_ERR_THREAD,   /* could not start helper threads */
} mf_status;

const char *mf_status_str(mf_status s);

/* ---- Architecture ------------------------------------------------------ */

#define MF_MAX_BLOCKS 32
#define MF_MAX_NAME 64

typedef enum mf_block_type {
    MF_BLOCK_A = 0,  /* conv-only first block: dw3x3(e1) -> relu6 -> 1x1 */
    MF_BLOCK_B3,     /* DnaBlock3: dw3x3(e1) -> 1x1 -> dw3x3(e2) -> 1x1, bridges */
    MF_BLOCK_B,      /* DnaBlock: 1x1(e1) -> dw3x3 -> 1x1, bridges */
} mf_block_type;

typedef struct mf_block_desc {
    mf_block_type type; /* block kind */
    int e1;             /* first expansion */
    int c;              /* output channels */
    int s;              /* stride (1 or 2) */
    int e2;             /* second expansion (B3: dw multiplier; B: unused; A: 0) */
} mf_block_desc;

typedef struct mf_arch {
    char name[MF_MAX_NAME]; /* preset name or a user's name for a custom one */
    int stem;               /* stem output channels */
    int tokens;             /* T, number of global tokens */
    int token_dim;          /* D, token width (multiple of 4: 4 Former heads) */
    int groups;             /* G for 1x1 convs and channel shuffles (1 = none) */
    int classifier_width;   /* width of the fc layer before the class layer */
    int last_exp;           /* classifier 1x1 expansion (6 in every preset) */
    int n_blocks;           /* number of entries in blocks */
    mf_block_desc blocks[MF_MAX_BLOCKS];
} mf_arch;

/* Names of the seven published presets, NULL-terminated. */
extern const char *const mf_arch_presets[];

/* Fill *out with a preset ("mobile_former_26m", or the short "26m"). */
mf_status mf_arch_preset(const char *name, mf_arch *out);

/* Parse either a preset name or a JSON description:
 *   {"name": "...", "stem": 8, "tokens": 3, "token_dim": 128, "groups": 4,
 *    "classifier_width": 1024, "last_exp": 6,
 *    "blocks": [["A", 3, 12, 2, 0], ["B", 3, 12, 1, 3], ["B3", 6, 24, 2, 4], ...]}
 * Each block row is [type, e1, c, s, e2] as in the specification.
 * The result is validated (mf_arch_validate). */
mf_status mf_arch_parse(const char *text, mf_arch *out, char *err, size_t errlen);

/* Check channel counts, divisibility by groups/heads, strides, limits. */
mf_status mf_arch_validate(const mf_arch *a, char *err, size_t errlen);

/* JSON description of *a (malloc'd, caller frees), as accepted by mf_arch_parse. */
char *mf_arch_to_json(const mf_arch *a);

/* Every checkpoint tensor the architecture expects, in reference state_dict
 * order: name and shape.  Returns the count; *out is malloc'd: free() it. */
typedef struct mf_tensor_spec {
    char name[96];   /* reference state_dict name, e.g. "features.1.conv1.0.weight" */
    int ndim;        /* 1, 2 or 4 */
    int shape[4];    /* dims, outermost first */
    size_t numel;    /* product of shape */
} mf_tensor_spec;

int mf_arch_tensor_specs(const mf_arch *a, int num_classes, mf_tensor_spec **out);

/* Parameter count (all checkpoint tensors except BN running stats) and
 * multiply-adds of one image at h x w (convs, linears, attention products). */
size_t mf_arch_param_count(const mf_arch *a, int num_classes);
double mf_arch_madds(const mf_arch *a, int num_classes, int h, int w);

/* Multiply-adds of one image at h x w by kind of layer (mf_arch_madds is
 * their sum): what a precision or a kernel speeds up, and what it leaves. */
typedef enum mf_madds_kind {
    MF_MADDS_CONV1X1 = 0, /* 1x1 convolutions (blocks and classifier) */
    MF_MADDS_LINEAR,      /* token-side linears, hyper-functions, the fc and class layers */
    MF_MADDS_DEPTHWISE,   /* 3x3 depthwise convolutions */
    MF_MADDS_STEM,        /* the 3x3 stem convolution */
    MF_MADDS_ATTENTION,   /* the bridges' and the Former's attention products */
    MF_MADDS_KINDS
} mf_madds_kind;

void mf_arch_madds_by_kind(const mf_arch *a, int num_classes, int h, int w, double out[MF_MADDS_KINDS]);

/* ---- Model ------------------------------------------------------------- */

typedef struct mf_model mf_model; /* opaque; read-only after load */

/* Arithmetic of a model's 1x1 convolutions (the classifier's included) and
 * linear layers (token side, hyper-functions, fc and class layer).  FP32:
 * all float32.  BF16: their weights are rounded to bfloat16 (round to
 * nearest even) and packed at load, their inputs rounded the same way as
 * the GEMM reads them, products accumulated in float32; biases,
 * activations, dynamic ReLU, residuals, the depthwise and stem
 * convolutions, attention, softmax and LayerNorm stay float32.  Every CPU
 * runs both: AMX-BF16 tiles, AVX512-BF16 dot products, or a portable
 * fallback with the same rounding (mf_model_kernels says which). */
typedef enum mf_precision {
    MF_PRECISION_FP32 = 0,
    MF_PRECISION_BF16,
} mf_precision;

/* "fp32" / "bf16" ("?" for a value outside the enum). */
const char *mf_precision_name(mf_precision p);

/* "fp32" or "bf16" -> *out; 0 on success, -1 (and *out untouched) otherwise. */
int mf_precision_parse(const char *s, mf_precision *out);

/* How a model is built; a zeroed struct (or a NULL pointer) is fp32 with the
 * kernels the CPU (or $MF_KERNELS) selects. */
typedef struct mf_model_options {
    mf_precision precision; /* arithmetic of the 1x1 convolutions and linears */
    const char *kernels;    /* NULL: $MF_KERNELS, else "auto" (see mf_kernels_name) */
} mf_model_options;

typedef struct mf_preprocess {
    int input_h, input_w;   /* network input (crop) size */
    int resize;             /* shorter side is resized to this before the center crop */
    char interpolation[16]; /* "bilinear" (antialiased when shrinking) or "nearest" */
    float mean[3], std[3];  /* per channel, applied to [0,1] values */
    int channels;           /* 3 = RGB; 1 = gray (luma, repeated on the 3 input channels) */
} mf_preprocess;

/* Default preprocessing of the ImageNet checkpoints (256 -> 224, bilinear). */
void mf_preprocess_default(mf_preprocess *p);

/* Tensor source used while building a model: return the float32 data of the
 * named tensor, which must have exactly spec->numel elements, or NULL if absent.
 * Returned pointers must stay valid until mf_model_build returns. */
typedef const float *(*mf_tensor_lookup)(void *ctx, const mf_tensor_spec *spec);

/* Build a model from an architecture and a tensor source.  Labels may be NULL
 * (then "class_<i>").  The source's memory may be freed after the call. */
mf_status mf_model_build(const mf_arch *a, int num_classes, mf_tensor_lookup lookup, void *ctx,
                         const mf_preprocess *pre, const char *const *labels,
                         mf_model **out, char *err, size_t errlen);

/* The same with options (NULL: fp32, the default kernels).  Fails with
 * MF_ERR_ARG, and says why in err, when the options or $MF_KERNELS ask for
 * kernels this CPU cannot run. */
mf_status mf_model_build_opts(const mf_arch *a, int num_classes, mf_tensor_lookup lookup, void *ctx,
                              const mf_preprocess *pre, const char *const *labels, const mf_model_options *o,
                              mf_model **out, char *err, size_t errlen);

/* Load a model file (safetensors with mobileformer metadata), fp32. */
mf_status mf_model_load(const char *path, mf_model **out, char *err, size_t errlen);

/* Same from a buffer in memory (not kept after the call). */
mf_status mf_model_load_buffer(const void *buf, size_t len, mf_model **out, char *err, size_t errlen);

/* Both with options (NULL: as without). */
mf_status mf_model_load_opts(const char *path, const mf_model_options *o, mf_model **out, char *err,
                             size_t errlen);
mf_status mf_model_load_buffer_opts(const void *buf, size_t len, const mf_model_options *o, mf_model **out,
                                    char *err, size_t errlen);

/* Models with deterministic weights, for benchmarks: mf_synthetic.h. */

void mf_model_free(mf_model *m);

const mf_arch *mf_model_arch(const mf_model *m);
int mf_model_num_classes(const mf_model *m);
const char *mf_model_label(const mf_model *m, int i); /* never NULL for 0 <= i < classes */
const mf_preprocess *mf_model_preprocess(const mf_model *m);
size_t mf_model_bytes(const mf_model *m); /* memory held by the model's weights */
mf_precision mf_model_precision(const mf_model *m);
/* The kernel set of the model's 1x1 convolutions and linears: "avx512",
 * "portable" or "reference" (fp32); "amx-bf16", "avx512-bf16",
 * "portable-bf16" or "reference-bf16" (bf16). */
const char *mf_model_kernels(const mf_model *m);
/* The fp32 set running its other layers (depthwise, attention, stem; the
 * same as mf_model_kernels for an fp32 model): "avx512", "portable", "reference". */
const char *mf_model_kernels_fp32(const mf_model *m);

/* ---- Inference --------------------------------------------------------- */

typedef struct mf_workspace mf_workspace; /* per inference thread; not shareable */

/* A workspace for model m running each batch on `threads` threads (>= 1; the
 * calling thread is one of them, threads-1 helpers are started). */
mf_status mf_workspace_new(const mf_model *m, int threads, mf_workspace **out);
void mf_workspace_free(mf_workspace *ws);

/* Size the scratch memory for batches up to b images of h x w now, so later
 * calls within those bounds allocate nothing. */
mf_status mf_workspace_reserve(mf_workspace *ws, int b, int h, int w);
size_t mf_workspace_bytes(const mf_workspace *ws);

/* Intermediate outputs, for tests: called after the stem ("stem"), after every
 * block ("blockNN.features", "blockNN.tokens") and after the last bridge
 * ("final_tokens"), once per image, with that image's tensor (CHW or TD). */
typedef void (*mf_trace_fn)(void *user, const char *name, int image, const float *data,
                            const int *shape, int ndim);
void mf_workspace_set_trace(mf_workspace *ws, mf_trace_fn fn, void *user);

/* input: b x 3 x h x w float32 (normalized), logits: b x num_classes.
 * h, w >= 32 (smaller inputs are refused with MF_ERR_ARG). */
mf_status mf_forward(const mf_model *m, mf_workspace *ws, const float *input, int b, int h, int w,
                     float *logits);

/* The fp32 kernel set a model built now gets ("avx512", "avx2" or "portable", or
 * "reference"; "?" when $MF_KERNELS is invalid or asks for what the CPU
 * lacks).  $MF_KERNELS (or mf_model_options.kernels) forces a path:
 *   auto (or unset)  the fastest this CPU has: fp32 avx512 > avx2 > portable;
 *                    bf16 amx-bf16 > avx512-bf16 > avx2-bf16 > portable-bf16
 *   reference        the plain scalar twins (fp32: reference; bf16: reference-bf16)
 *   portable         OpenBLAS + plain loops (fp32: portable; bf16: portable-bf16)
 *   avx2             fp32: avx2 (AVX2 + FMA); bf16: avx2-bf16 (rounded inputs, fp32 FMAs)
 *   avx512           fp32: avx512; bf16: avx512-bf16 (vdpbf16ps)
 *   avx512bf16       bf16: avx512-bf16 (fp32: avx512)
 *   amx              bf16: amx-bf16 (fp32: avx512)
 * Forcing what the CPU lacks (or an unknown value) makes the model build fail
 * with a message naming the missing feature. */
const char *mf_kernels_name(void);

#ifdef __cplusplus
}
#endif
#endif
