/* image.h -- decoding untrusted image uploads (JPEG, PNG) to 8-bit RGB.
 *
 * The goal is the pixels the reference pipeline sees: PIL's
 * Image.open(f) -> ImageOps.exif_transpose() -> .convert("RGB"), bit for bit
 * (libjpeg-turbo with its default ISLOW DCT and fancy upsampling, as PIL).
 * Input is hostile: every failure is a status, never an exit or a crash,
 * and the pixel count is checked against a limit from the header, before
 * any pixel memory is allocated.
 *
 * Ownership: mf_image_decode() fills a caller-owned mf_image whose rgb
 * buffer it allocates; release it with mf_image_free().  On any status but
 * MF_IMG_OK the image is left empty ({0, 0, NULL}) and nothing is held.
 * Error text goes to a caller-owned buffer (err, errlen), which may be NULL.
 */
#ifndef MF_IMAGE_H
#define MF_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Pixel limit used when mf_image_decode() is given max_pixels == 0
 * (about 150 MB of decoded RGB). */
#define MF_IMG_DEFAULT_MAX_PIXELS ((size_t)50 * 1000 * 1000)

typedef enum mf_img_format {
    MF_IMG_FMT_UNKNOWN = 0,
    MF_IMG_FMT_JPEG,
    MF_IMG_FMT_PNG,
} mf_img_format;

typedef enum mf_img_status {
    MF_IMG_OK = 0,
    MF_IMG_EMPTY,       /* zero-length input */
    MF_IMG_UNSUPPORTED, /* not JPEG/PNG, or a JPEG colour layout we cannot convert */
    MF_IMG_CORRUPT,     /* truncated, bad data, bad CRC, zero width or height */
    MF_IMG_TOO_LARGE,   /* over max_pixels (decided from the header) */
    MF_IMG_NOMEM,       /* allocation failed */
} mf_img_status;

typedef struct mf_image {
    int w, h;     /* size after EXIF orientation */
    uint8_t *rgb; /* w*h*3 bytes, row-major RGB, owned (mf_image_free) */
} mf_image;

/* Format from the magic bytes (JPEG: FF D8 FF, PNG: the 8-byte signature). */
mf_img_format mf_image_sniff(const uint8_t *buf, size_t len);

/* Stable snake_case code for JSON error replies ("empty_body",
 * "unsupported_image", "corrupt_image", "image_too_large", "out_of_memory";
 * "ok" for MF_IMG_OK). */
const char *mf_img_status_code(mf_img_status s);

/* Decode buf[0..len) into *out.  max_pixels bounds width*height
 * (0 = MF_IMG_DEFAULT_MAX_PIXELS).  Details, all chosen to match PIL:
 *  - JPEG: grayscale, YCbCr, RGB, CMYK and YCCK; 4-component images are
 *    taken as Adobe-inverted CMYK (PIL assumes this with or without an
 *    APP14 marker) and converted with PIL's CMYK->RGB formula.  Baseline,
 *    progressive and arithmetic coding.  Warnings that mean lost data
 *    (premature end, bad Huffman/arithmetic code, resync) fail the decode
 *    as MF_IMG_CORRUPT instead of returning gray filler.  The EXIF
 *    orientation (first APP1 "Exif", IFD0 tag 0x0112) is applied.
 *  - PNG: every colour type and bit depth; alpha and tRNS are dropped
 *    (convert("RGB") does not composite); 16-bit samples keep the high
 *    byte, except 16-bit grayscale without alpha, which PIL opens as mode
 *    "I" and clips to 0..255 -- done the same here so results agree.
 *    Every CRC error is fatal.  An eXIf chunk before IDAT is honoured.
 * Orientation tags in XMP, or PNG chunks after IDAT, are not read. */
mf_img_status mf_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, mf_image *out,
                              char *err, size_t errlen);

/* Release the pixels and reset *img to empty; NULL or empty is fine. */
void mf_image_free(mf_image *img);

#ifdef __cplusplus
}
#endif
#endif
