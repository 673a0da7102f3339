/* image.c -- decoding image uploads: the format dispatch, the limits and the
 * helpers every decoder shares (EXIF orientation, sizes, budget); see
 * image.h.  The decoders: image_jpeg.c (libjpeg-turbo), image_png.c
 * (libpng), image_webp.c (libwebp), image_gif.c (giflib).
 *
 * DESIGN: the libraries report fatal errors through callbacks that must not
 * return; ours longjmp back into the decoder.  Everything that must survive
 * the jump (library handles, the pixel buffer, the status to report) lives
 * in a job struct owned by the caller of the function that calls setjmp, so
 * after the jump the caller releases it all in one place and no
 * non-volatile local is needed across the jump.
 *
 * The pixel count is checked against max_pixels right after the header is
 * parsed, before any pixel memory is allocated; the decoders' working
 * memory is capped in proportion, and the work is bounded too (progressive
 * scans, a per-image time budget checked row by row, cancellation), so a
 * small hostile file cannot make a decoder allocate or spin without limit.
 */
#include "image.h"

#include "image_codec.h"
#include "mf_util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mf_img_format mf_image_sniff(const uint8_t *buf, size_t len)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!buf)
        return MF_IMG_FMT_UNKNOWN;
    if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
        return MF_IMG_FMT_JPEG;
    if (len >= 8 && memcmp(buf, png_sig, 8) == 0)
        return MF_IMG_FMT_PNG;
    if (len >= 12 && memcmp(buf, "RIFF", 4) == 0 && memcmp(buf + 8, "WEBP", 4) == 0)
        return MF_IMG_FMT_WEBP;
    if (len >= 6 && (memcmp(buf, "GIF87a", 6) == 0 || memcmp(buf, "GIF89a", 6) == 0))
        return MF_IMG_FMT_GIF;
    return MF_IMG_FMT_UNKNOWN;
}

const char *mf_image_other_format(const uint8_t *buf, size_t len)
{
    if (!buf) return NULL;
    if (len >= 12 && memcmp(buf + 4, "ftyp", 4) == 0) {
        /* ISO base media: the major brand, then the compatible ones */
        const uint32_t box = img_rd32(buf, 0);
        const size_t end = box >= 16 && box <= len ? box : 12;
        for (size_t o = 8; o + 4 <= end; o += o == 8 ? 8 : 4) {
            const uint8_t *b = buf + o;
            if (!memcmp(b, "avif", 4) || !memcmp(b, "avis", 4)) return "AVIF";
            if (!memcmp(b, "heic", 4) || !memcmp(b, "heix", 4) || !memcmp(b, "hevc", 4) || !memcmp(b, "heim", 4) ||
                !memcmp(b, "heis", 4) || !memcmp(b, "hevx", 4) || !memcmp(b, "mif1", 4) || !memcmp(b, "msf1", 4))
                return "HEIC";
            if (!memcmp(b, "jxl ", 4)) return "JPEG XL";
            if (!memcmp(b, "jp2 ", 4)) return "JPEG 2000";
        }
        return NULL;
    }
    if (len >= 12 && !memcmp(buf, "\0\0\0\x0cjP  \r\n\x87\n", 12)) return "JPEG 2000";
    if (len >= 4 && buf[0] == 0xff && buf[1] == 0x4f && buf[2] == 0xff && buf[3] == 0x51) return "JPEG 2000";
    if (len >= 12 && !memcmp(buf, "\0\0\0\x0cJXL \r\n\x87\n", 12)) return "JPEG XL";
    if (len >= 2 && buf[0] == 0xff && buf[1] == 0x0a) return "JPEG XL";
    if (len >= 4 && (!memcmp(buf, "II*\0", 4) || !memcmp(buf, "MM\0*", 4))) return "TIFF";
    if (len >= 14 && buf[0] == 'B' && buf[1] == 'M') return "BMP";
    if (len >= 4 && !memcmp(buf, "8BPS", 4)) return "PSD";
    if (len >= 4 && !memcmp(buf, "\0\0\1\0", 4)) return "ICO";
    if (len >= 4 && !memcmp(buf, "%PDF", 4)) return "PDF";
    size_t i = 0;
    while (i < len && i < 64 && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')) i++;
    if (len - i >= 4 && (!memcmp(buf + i, "<svg", 4) || (len - i >= 5 && !memcmp(buf + i, "<?xml", 5)))) return "SVG";
    return NULL;
}

void mf_image_probe(const uint8_t *buf, size_t len, mf_image_info *info)
{
    info->format = mf_image_sniff(buf, len);
    info->w = info->h = 0;
    switch (info->format) {
    case MF_IMG_FMT_JPEG:
        if (img_probe_jpeg(buf, len, &info->w, &info->h) != 0) info->w = info->h = 0;
        break;
    case MF_IMG_FMT_PNG:
        if (len >= 24 && memcmp(buf + 12, "IHDR", 4) == 0) {
            uint32_t w = img_rd32(buf + 16, 0), h = img_rd32(buf + 20, 0);
            if (w <= INT_MAX && h <= INT_MAX) {
                info->w = (int)w;
                info->h = (int)h;
            }
        }
        break;
    case MF_IMG_FMT_WEBP:
        img_probe_webp(buf, len, &info->w, &info->h);
        break;
    case MF_IMG_FMT_GIF:
        if (len >= 10) {
            info->w = (int)img_rd16(buf + 6, 1);
            info->h = (int)img_rd16(buf + 8, 1);
        }
        break;
    default: break;
    }
}

const char *mf_img_status_code(mf_img_status s)
{
    switch (s) {
    case MF_IMG_OK: return "ok";
    case MF_IMG_EMPTY: return "empty_body";
    case MF_IMG_UNSUPPORTED: return "unsupported_image";
    case MF_IMG_OTHER_FORMAT: return "unsupported_media_type";
    case MF_IMG_CORRUPT: return "corrupt_image";
    case MF_IMG_TOO_LARGE: return "image_too_large";
    case MF_IMG_NOMEM: return "out_of_memory";
    case MF_IMG_TOO_COMPLEX: return "image_too_complex";
    case MF_IMG_TOO_SLOW: return "decode_timeout";
    case MF_IMG_CANCELLED: return "cancelled";
    }
    return "unknown_error";
}

void mf_image_free(mf_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

/* ---- EXIF orientation --------------------------------------------------- */

/* Orientation (1..8) from IFD0 of a TIFF structure t[0..n) -- the EXIF
 * payload -- or 1 when it is absent, malformed or out of range.  As PIL
 * reads it: a later entry for the tag wins; SHORT, LONG, SBYTE, SSHORT and
 * SLONG count (PIL turns BYTE into bytes, which match no orientation); of
 * several values (inline, or at an offset when over 4 bytes) the first is
 * used; an entry whose values lie past the end is skipped. */
int img_tiff_orientation(const uint8_t *t, size_t n)
{
    static const uint8_t type_size[10] = {0, 0, 0, 2, 4, 0, 1, 0, 2, 4}; /* by TIFF type */
    int le;
    if (n < 8)
        return 1;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (img_rd16(t + 2, le) != 42)
        return 1;
    size_t ifd = img_rd32(t + 4, le);
    if (ifd > n || n - ifd < 2)
        return 1;
    uint32_t entries = img_rd16(t + ifd, le);
    int orient = 1;
    for (uint32_t i = 0; i < entries; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (n - e < 12) /* e <= n holds: the previous entry ended at e */
            break;
        if (img_rd16(t + e, le) != 0x0112)
            continue;
        uint32_t type = img_rd16(t + e + 2, le), count = img_rd32(t + e + 4, le);
        size_t size = type < sizeof type_size ? type_size[type] : 0;
        if (size == 0 || count == 0)
            continue; /* no usable value: PIL's lookup finds no transpose */
        uint64_t bytes = (uint64_t)size * count;
        const uint8_t *v = t + e + 8;
        if (bytes > 4) {
            uint32_t off = img_rd32(v, le);
            if (off > n || bytes > n - off)
                continue;
            v = t + off;
        }
        int64_t val = size == 1 ? v[0] : size == 2 ? img_rd16(v, le) : img_rd32(v, le);
        if (type == 6) /* signed types */
            val = (int8_t)val;
        else if (type == 8)
            val = (int16_t)val;
        else if (type == 9)
            val = (int32_t)val;
        orient = val >= 1 && val <= 8 ? (int)val : 1;
    }
    return orient;
}

/* The decoded image, w x h before orientation o is applied, becomes *out:
 * its pixels are taken from *pix. */
mf_img_status img_hand_over(mf_image *out, uint8_t **pix, int w, int h, int o)
{
    out->w = o >= 5 ? h : w;
    out->h = o >= 5 ? w : h;
    out->rgb = *pix;
    *pix = NULL;
    return MF_IMG_OK;
}

/* Copy source row y (w RGB pixels of a w x h image) to where EXIF
 * orientation o puts it in dst, which is h x w for o >= 5 and w x h
 * otherwise.  The eight cases are PIL's exif_transpose(): 2 mirror,
 * 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
 * 8 rotate 90 counter-clockwise. */
void img_orient_put_row(uint8_t *dst, int w, int h, int o, int y, const uint8_t *row)
{
    ptrdiff_t dw = o >= 5 ? h : w; /* destination width */
    ptrdiff_t base, step;          /* destination pixel of x = 0, and per x */
    switch (o) {
    case 2: base = y * dw + (w - 1); step = -1; break;
    case 3: base = (ptrdiff_t)(h - 1 - y) * dw + (w - 1); step = -1; break;
    case 4: base = (ptrdiff_t)(h - 1 - y) * dw; step = 1; break;
    case 5: base = y; step = dw; break;
    case 6: base = h - 1 - y; step = dw; break;
    case 7: base = (ptrdiff_t)(w - 1) * dw + (h - 1 - y); step = -dw; break;
    case 8: base = (ptrdiff_t)(w - 1) * dw + y; step = -dw; break;
    default:
        memcpy(dst + (size_t)y * (size_t)w * 3, row, (size_t)w * 3);
        return;
    }
    uint8_t *d = dst + base * 3;
    for (int x = 0; x < w; x++, d += step * 3, row += 3) {
        d[0] = row[0];
        d[1] = row[1];
        d[2] = row[2];
    }
}

/* Width and height against the limits; 0 when they fit. */
mf_img_status img_size_check(uint64_t w, uint64_t h, const mf_image_limits *lim, char *msg, size_t n)
{
    if (w == 0 || h == 0) {
        snprintf(msg, n, "image has zero width or height");
        return MF_IMG_CORRUPT;
    }
    if (w * h > lim->max_pixels) {
        snprintf(msg, n, "%llux%llu pixels exceeds the limit of %zu", (unsigned long long)w, (unsigned long long)h,
                 lim->max_pixels);
        return MF_IMG_TOO_LARGE;
    }
    if (w > (uint64_t)lim->max_side || h > (uint64_t)lim->max_side) {
        snprintf(msg, n, "%llux%llu: a side is longer than the limit of %d pixels", (unsigned long long)w,
                 (unsigned long long)h, lim->max_side);
        return MF_IMG_TOO_LARGE;
    }
    return MF_IMG_OK;
}

mf_img_status img_budget(const mf_image_limits *lim, char *msg, size_t n)
{
    if (lim->cancel && atomic_load_explicit(lim->cancel, memory_order_relaxed)) {
        snprintf(msg, n, "the request was cancelled");
        return MF_IMG_CANCELLED;
    }
    if (lim->deadline_ns && mf_now_ns() > lim->deadline_ns) {
        snprintf(msg, n, "decoding took longer than its budget");
        return MF_IMG_TOO_SLOW;
    }
    return MF_IMG_OK;
}

/* ---- Entry point -------------------------------------------------------- */

mf_img_status mf_image_decode_limited(const uint8_t *buf, size_t len, const mf_image_limits *limits, mf_image *out,
                                      char *err, size_t errlen)
{
    out->w = out->h = 0;
    out->rgb = NULL;
    if (err && errlen) err[0] = '\0';
    if (!buf || len == 0) {
        mf_set_err(err, errlen, "empty request body");
        return MF_IMG_EMPTY;
    }
    mf_image_limits lim = limits ? *limits : (mf_image_limits){0};
    if (lim.max_pixels == 0) lim.max_pixels = MF_IMG_DEFAULT_MAX_PIXELS;
    if (lim.max_side <= 0) lim.max_side = MF_IMG_DEFAULT_MAX_SIDE;
    if (lim.max_scans <= 0) lim.max_scans = MF_IMG_DEFAULT_MAX_SCANS;
    switch (mf_image_sniff(buf, len)) {
    case MF_IMG_FMT_JPEG: return img_decode_jpeg(buf, len, &lim, out, err, errlen);
    case MF_IMG_FMT_PNG: return img_decode_png(buf, len, &lim, out, err, errlen);
    case MF_IMG_FMT_WEBP: return img_decode_webp(buf, len, &lim, out, err, errlen);
    case MF_IMG_FMT_GIF: return img_decode_gif(buf, len, &lim, out, err, errlen);
    default: break;
    }
    const char *other = mf_image_other_format(buf, len);
    if (other) {
        mf_set_err(err, errlen, "%s images are not supported: send JPEG, PNG, WebP or GIF", other);
        return MF_IMG_OTHER_FORMAT;
    }
    mf_set_err(err, errlen, "not a JPEG, PNG, WebP or GIF image");
    return MF_IMG_UNSUPPORTED;
}

mf_img_status mf_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, mf_image *out, char *err,
                              size_t errlen)
{
    mf_image_limits lim = {.max_pixels = max_pixels};
    return mf_image_decode_limited(buf, len, &lim, out, err, errlen);
}
