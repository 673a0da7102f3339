/* image.h -- decoding untrusted image uploads (JPEG, PNG, WebP, GIF) to 8-bit RGB.
 *
 * The goal is the pixels the reference pipeline sees: PIL's
 * Image.open(f) -> ImageOps.exif_transpose() -> .convert("RGB"), bit for bit
 * (libjpeg-turbo with its default ISLOW DCT and fancy upsampling, libpng,
 * libwebp and giflib, as PIL 9.4 on Debian 12 uses them).  One exception,
 * on request: a JPEG may be decoded at a reduced scale (min_side).
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

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Pixel limit used when mf_image_decode() is given max_pixels == 0
 * (about 150 MB of decoded RGB). */
#define MF_IMG_DEFAULT_MAX_PIXELS ((size_t)50 * 1000 * 1000)

/* Longest side accepted when none is given: JPEG's own maximum (65,535),
 * so a thin image cannot make libpng handle tens of millions of rows. */
#define MF_IMG_DEFAULT_MAX_SIDE 65535

/* Progressive JPEG scans accepted when none is given.  libjpeg's standard
 * progression has 10 scans for colour and 6 for gray (jpeg_simple_progression),
 * mozjpeg's optimized scripts a few more (its search considers 64 candidate
 * scans and keeps a subset), Photoshop's "3 to 5 scans" fewer; no camera
 * writes progressive files.  Each scan costs a pass over the whole
 * coefficient buffer, so the limit, not the file size, bounds the work. */
#define MF_IMG_DEFAULT_MAX_SCANS 64

typedef enum mf_img_format {
    MF_IMG_FMT_UNKNOWN = 0,
    MF_IMG_FMT_JPEG,
    MF_IMG_FMT_PNG,
    MF_IMG_FMT_WEBP,
    MF_IMG_FMT_GIF,
} mf_img_format;

typedef enum mf_img_status {
    MF_IMG_OK = 0,
    MF_IMG_EMPTY,       /* zero-length input */
    MF_IMG_UNSUPPORTED, /* not an image we know, or a JPEG colour layout we cannot convert */
    MF_IMG_OTHER_FORMAT,/* a known format the service does not decode (HEIC, AVIF, BMP, TIFF, ...) */
    MF_IMG_CORRUPT,     /* truncated, bad data, bad CRC, zero width or height */
    MF_IMG_TOO_LARGE,   /* over max_pixels (decided from the header) */
    MF_IMG_NOMEM,       /* allocation failed */
    MF_IMG_TOO_COMPLEX, /* a progressive JPEG with more scans than max_scans */
    MF_IMG_TOO_SLOW,    /* decoding ran past its deadline */
    MF_IMG_CANCELLED,   /* *limits.cancel was set while decoding */
} mf_img_status;

/* What a decode may cost. */
typedef struct mf_image_limits {
    size_t max_pixels;    /* width x height, from the header (0: MF_IMG_DEFAULT_MAX_PIXELS) */
    int max_side;         /* width and height each (0: MF_IMG_DEFAULT_MAX_SIDE) */
    int max_scans;        /* progressive JPEG scans (0: MF_IMG_DEFAULT_MAX_SCANS) */
    uint64_t deadline_ns; /* mf_now_ns() past which decoding stops (checked every row); 0: none */
    const atomic_int *cancel; /* decoding stops once it is non-zero (checked every row); NULL: never */
    int min_side;         /* JPEG only: 0 decodes at full size (PIL-exact); else at the smallest DCT
                             scale M/8 whose shorter side is still >= min_side (libjpeg-turbo's
                             scaled IDCT: much cheaper for large photos, no longer PIL-exact) */
} mf_image_limits;

/* What a file's header says, without decoding (mf_image_probe). */
typedef struct mf_image_info {
    mf_img_format format; /* MF_IMG_FMT_UNKNOWN if none of ours */
    int w, h;             /* as stored (before EXIF orientation); 0 if the header is cut */
} mf_image_info;

typedef struct mf_image {
    int w, h;     /* size after EXIF orientation */
    uint8_t *rgb; /* w*h*3 bytes, row-major RGB, owned (mf_image_free) */
} mf_image;

/* Format from the magic bytes (JPEG: FF D8 FF, PNG: the 8-byte signature,
 * WebP: RIFF....WEBP, GIF: GIF87a / GIF89a). */
mf_img_format mf_image_sniff(const uint8_t *buf, size_t len);

/* The name of a format the service knows but does not decode ("HEIC",
 * "AVIF", "BMP", "TIFF", "JPEG 2000", "JPEG XL", "ICO", "PSD", "SVG",
 * "PDF"), from its magic bytes, or NULL. */
const char *mf_image_other_format(const uint8_t *buf, size_t len);

/* Format and stored size from the header alone: cheap (no pixel is
 * decoded, nothing is allocated), for estimating what a decode will cost.
 * Trusts nothing: a decode checks everything again. */
void mf_image_probe(const uint8_t *buf, size_t len, mf_image_info *info);

/* Stable snake_case code for JSON error replies ("empty_body",
 * "unsupported_image", "unsupported_media_type", "corrupt_image",
 * "image_too_large", "out_of_memory", "image_too_complex", "decode_timeout",
 * "cancelled"; "ok" for MF_IMG_OK). */
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
 *  - WebP: lossy and lossless, with or without alpha (libwebp, decoded to
 *    RGBA with its default fancy upsampling, alpha dropped); the first
 *    frame of an animation; the EXIF chunk's orientation is applied (PIL
 *    reads it: exif_transpose).
 *  - GIF: the first frame, on the logical screen (grown to the frame when
 *    the frame reaches past it), the rest of the screen filled with the
 *    transparent index or 0; the local palette, else the global one, else
 *    gray (index = level); indices past the palette are gray (PIL's
 *    palettes start as a gray ramp); interlaced frames are deinterlaced.
 * Orientation tags in XMP, or PNG chunks after IDAT, are not read. */
mf_img_status mf_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, mf_image *out,
                              char *err, size_t errlen);

/* The same under the given limits (NULL: the defaults, no deadline); the
 * sizes are checked from the header before any pixel memory is allocated,
 * the scans and the deadline while decoding. */
mf_img_status mf_image_decode_limited(const uint8_t *buf, size_t len, const mf_image_limits *limits, mf_image *out,
                                      char *err, size_t errlen);

/* Release the pixels and reset *img to empty; NULL or empty is fine. */
void mf_image_free(mf_image *img);

#ifdef __cplusplus
}
#endif
#endif
