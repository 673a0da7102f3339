/* preprocess.h -- decoded RGB image -> normalized network input tensor.
 *
 * Reproduces the reference pipeline, torchvision's
 *   Resize(resize) -> CenterCrop(input_h, input_w) -> ToTensor() -> Normalize(mean, std)
 * on a PIL image, bit for bit: the resize is PIL's Image.resize() (BILINEAR
 * with its antialiasing support when shrinking, fixed-point weights and
 * uint8 rounding between the two passes; or NEAREST), the crop offsets use
 * Python's round() (half to even) and a crop larger than the image pads
 * with zeros, and the float math is float32 in torchvision's order,
 * ((v / 255) - mean[c]) / std[c].
 *
 * For channels == 1 the image is first converted to luma exactly as PIL's
 * convert("L") (L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16), resized
 * and cropped as one plane, and that plane is written to all three output
 * channels, each normalized with its own mean[c] / std[c].
 *
 * Only the part of the resized image that survives the crop is computed,
 * so extreme aspect ratios (a 1x10000 image resized to 256x2560000) cost no
 * more than ordinary ones.  One block of scratch memory is allocated per
 * call and freed before returning; out is caller-owned.
 */
#ifndef MF_PREPROCESS_H
#define MF_PREPROCESS_H

#include "image.h"
#include "mf.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MF_PREPROCESS_ARG (-1)   /* an argument is invalid */
#define MF_PREPROCESS_NOMEM (-2) /* scratch memory cannot be had */

/* img -> out, float32 [3][p->input_h][p->input_w] (CHW).  Returns 0,
 * MF_PREPROCESS_ARG when an argument is invalid (empty image, sizes < 1,
 * unknown interpolation, channels not 1 or 3, a zero or non-finite std or
 * mean), or MF_PREPROCESS_NOMEM.  Thread-safe; p and img are only read. */
int mf_preprocess_image(const mf_image *img, const mf_preprocess *p, float *out);

/* The resize's inner loops use AVX2 where the CPU has it (same integer
 * arithmetic, same bytes).  0 forces the plain loops: for tests, which
 * compare the two; set it before any thread preprocesses. */
void mf_preprocess_set_simd(int on);

#ifdef __cplusplus
}
#endif
#endif
