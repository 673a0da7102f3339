/* oip.h -- the Open Inference Protocol's infer (KServe v2, with Triton's
 * binary tensor data, classification and schedule-policy extensions):
 * POST /v2/models/{m}[/versions/{v}]/infer.
 *
 * The body is a JSON header, optionally followed by raw tensors
 * (Inference-Header-Content-Length gives the header's length).  A request
 * carries exactly one input:
 *   "input"  FP32  [N, 3, H, W]  an already normalized NCHW batch, run as is
 *                                (H, W from 32 to MF_OIP_MAX_SIDE); the logits
 *                                equal `mobileformer run` on the same tensor
 *   "image"  BYTES [N]           N encoded images, decoded and preprocessed
 *                                exactly as /v1/predict does (binary data:
 *                                the files' bytes; JSON data: their base64)
 * and gets the outputs it asks for (all by default): "logits" and
 * "probabilities", FP32 [N, classes], in JSON or binary, or as
 * classification strings "<score>:<index>:<label>" (BYTES [N, K]).  Every
 * image is a job on the model version's queue, batched with everyone else's.
 *
 * The parsing half (mf_oip_parse) is pure and checks every size against the
 * body before anything is read from it; it is fuzzed alone
 * (tests/fuzz/fuzz_oip.c).
 */
#ifndef MF_OIP_H
#define MF_OIP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MF_OIP_MAX_SIDE 1024  /* largest H or W of an FP32 input tensor */
#define MF_OIP_MAX_IMAGES 256 /* largest N */

typedef struct mf_request mf_request;

int mf_oip_begin(mf_request *r);
int mf_oip_body(mf_request *r);

/* Release the request's infer state (none is fine). */
void mf_oip_free(mf_request *r);

typedef struct mf_oip_output {
    int which;           /* 0 logits, 1 probabilities */
    int binary;          /* answer it as binary data */
    int classification;  /* > 0: that many classification strings per image */
} mf_oip_output;

/* A parsed infer request; pointers point into the body or into `root`. */
typedef struct mf_oip_request {
    json_t *root;              /* the JSON header (owned: mf_oip_request_free) */
    char *id;                  /* "id" (owned), or NULL; kept when the parse fails after it */
    int priority;              /* parameters.priority as given (0 = default) */
    uint64_t timeout_us;       /* parameters.timeout, 0 = none */
    int image;                 /* the input is "image" (BYTES), else "input" (FP32) */
    int n, h, w;               /* images; H, W of an FP32 input */
    const uint8_t *binary;     /* the binary input section, or NULL (JSON data) */
    size_t binary_len;         /* its length */
    json_t *data;              /* the JSON data, or NULL */
    mf_oip_output outputs[2];  /* what to answer, in order */
    int n_outputs;             /* 1 or 2 */
} mf_oip_request;

/* Parse and check body[0..len), whose JSON header is its first header_len
 * bytes (len when there is no binary part).  0, or -1 with the reason in err
 * (a 400).  Either way mf_oip_request_free releases what it holds (after a
 * failure, the id, if it was read before the problem). */
int mf_oip_parse(const uint8_t *body, size_t len, size_t header_len, mf_oip_request *out, char *err, size_t errlen);
void mf_oip_request_free(mf_oip_request *q);

/* The FP32 values of a parsed "input" (flat or nested JSON, or binary) into
 * out[n*3*h*w]; 0 or -1 with the reason. */
int mf_oip_tensor(const mf_oip_request *q, float *out, char *err, size_t errlen);

/* A gzip or zlib body (RFC 1952, RFC 1950: HTTP's "deflate") inflated into a
 * new buffer (*out, malloc'd) of at most max bytes.  0, or -1 with the
 * reason, and *too_large set when the data inflates past max. */
int mf_oip_inflate(const uint8_t *in, size_t n, size_t max, uint8_t **out, size_t *out_len, int *too_large, char *err,
                   size_t errlen);

/* The N length-prefixed elements of a binary "image" input: element i's
 * 4-byte length at binary + off[i], its bytes up to off[i + 1] (off holds
 * N + 1 entries).  0, or -1 with the reason when the lengths overrun,
 * underrun or leave bytes over. */
int mf_oip_bytes_offsets(const mf_oip_request *q, uint32_t *off, char *err, size_t errlen);

/* Image i of a parsed "image" input given as JSON data: the element's
 * base64 decoded into *out (malloc'd, *len bytes).  0, or -1 with the
 * reason. */
int mf_oip_json_image(const mf_oip_request *q, int i, uint8_t **out, size_t *len, char *err, size_t errlen);

#endif
