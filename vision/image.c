/* image.c -- JPEG (libjpeg-turbo) and PNG (libpng) uploads to RGB; see image.h.
 *
 * DESIGN: both libraries report fatal errors through a callback that must
 * not return; ours longjmp back into the decoder.  Everything that must
 * survive the jump (library handles, the pixel buffer, the status to report)
 * lives in a job struct owned by the caller of the function that calls
 * setjmp, so after the jump the caller releases it all in one place and no
 * non-volatile local is needed across the jump.  Memory libjpeg allocates
 * from its own pools is released by jpeg_destroy_decompress().
 *
 * The pixel count is checked against max_pixels right after the header is
 * parsed, before any pixel memory is allocated; libjpeg's own working
 * memory (whole-image coefficient buffers for progressive files) is capped
 * in proportion, and the number of progressive scans is bounded, so a small
 * hostile file cannot make the decoder allocate or spin without limit.
 */
#include "image.h"

#include "mf_util.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

/* Legitimate progressive files have about ten scans; thousands of tiny
 * scans are a known way to make libjpeg burn CPU on a small input. */


mf_img_format mf_image_sniff(const uint8_t *buf, size_t len)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!buf)
        return MF_IMG_FMT_UNKNOWN;
    if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
        return MF_IMG_FMT_JPEG;
    if (len >= 8 && memcmp(buf, png_sig, 8) == 0)
        return MF_IMG_FMT_PNG;
    return MF_IMG_FMT_UNKNOWN;
}

const char *mf_img_status_code(mf_img_status s)
{
    switch (s) {
    case MF_IMG_OK: return "ok";
    case MF_IMG_EMPTY: return "empty_body";
    case MF_IMG_UNSUPPORTED: return "unsupported_image";
    case MF_IMG_CORRUPT: return "corrupt_image";
    case MF_IMG_TOO_LARGE: return "image_too_large";
    case MF_IMG_NOMEM: return "out_of_memory";
    case MF_IMG_TOO_COMPLEX: return "image_too_complex";
    case MF_IMG_TOO_SLOW: return "decode_timeout";
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

static uint32_t rd16(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? rd16(p, 1) | rd16(p + 2, 1) << 16 : rd16(p, 0) << 16 | rd16(p + 2, 0);
}

/* Orientation (1..8) from IFD0 of a TIFF structure t[0..n) -- the EXIF
 * payload -- or 1 when it is absent, malformed or out of range.  As PIL
 * reads it: a later entry for the tag wins; SHORT, LONG, SBYTE, SSHORT and
 * SLONG count (PIL turns BYTE into bytes, which match no orientation); of
 * several values (inline, or at an offset when over 4 bytes) the first is
 * used; an entry whose values lie past the end is skipped. */
static int tiff_orientation(const uint8_t *t, size_t n)
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
    if (rd16(t + 2, le) != 42)
        return 1;
    size_t ifd = rd32(t + 4, le);
    if (ifd > n || n - ifd < 2)
        return 1;
    uint32_t entries = rd16(t + ifd, le);
    int orient = 1;
    for (uint32_t i = 0; i < entries; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (n - e < 12) /* e <= n holds: the previous entry ended at e */
            break;
        if (rd16(t + e, le) != 0x0112)
            continue;
        uint32_t type = rd16(t + e + 2, le), count = rd32(t + e + 4, le);
        size_t size = type < sizeof type_size ? type_size[type] : 0;
        if (size == 0 || count == 0)
            continue; /* no usable value: PIL's lookup finds no transpose */
        uint64_t bytes = (uint64_t)size * count;
        const uint8_t *v = t + e + 8;
        if (bytes > 4) {
            uint32_t off = rd32(v, le);
            if (off > n || bytes > n - off)
                continue;
            v = t + off;
        }
        int64_t val = size == 1 ? v[0] : size == 2 ? rd16(v, le) : rd32(v, le);
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
static mf_img_status hand_over(mf_image *out, uint8_t **pix, int w, int h, int o)
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
static void orient_put_row(uint8_t *dst, int w, int h, int o, int y, const uint8_t *row)
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

/* ---- JPEG --------------------------------------------------------------- */

typedef struct jpeg_job {
    struct jpeg_decompress_struct cinfo; /* first: callbacks cast cinfo back to the job */
    struct jpeg_error_mgr jerr;          /* our error manager (see jpeg_on_*) */
    struct jpeg_progress_mgr progress;   /* scan count and time budget (jpeg_on_progress) */
    const mf_image_limits *lim;          /* the caller's limits */
    jmp_buf jump;                        /* where fatal errors land */
    mf_img_status status;                /* what to report after a jump */
    char msg[JMSG_LENGTH_MAX];           /* libjpeg's message for the failure */
    uint8_t *pix;                        /* output pixels, malloc'd; freed unless handed out */
} jpeg_job;

static void jpeg_fail(jpeg_job *job, mf_img_status st)
{
    job->status = st;
    job->jerr.format_message((j_common_ptr)&job->cinfo, job->msg);
    longjmp(job->jump, 1);
}

static void jpeg_on_error(j_common_ptr c)
{
    jpeg_job *job = (jpeg_job *)c;
    switch (c->err->msg_code) {
    case JERR_OUT_OF_MEMORY:
        jpeg_fail(job, MF_IMG_NOMEM);
        break;
    case JERR_NO_BACKING_STORE: /* working memory over max_memory_to_use */
    case JERR_IMAGE_TOO_BIG:
    case JERR_WIDTH_OVERFLOW:
        jpeg_fail(job, MF_IMG_TOO_LARGE);
        break;
    case JERR_BAD_PRECISION: /* 12-bit, lossless, ...: PIL cannot read them either */
    case JERR_SOF_UNSUPPORTED:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_ARITH_NOTIMPL:
    case JERR_NOT_COMPILED:
        jpeg_fail(job, MF_IMG_UNSUPPORTED);
        break;
    default:
        jpeg_fail(job, MF_IMG_CORRUPT);
    }
}

/* Warnings that mean image data was lost: libjpeg would carry on and fill
 * the rest with gray, which must not reach the model as a real picture.
 * Other warnings (extraneous bytes between markers, odd JFIF versions,
 * unknown Adobe transforms, bad ICC chunks) are common in real files whose
 * pixels are fine, and are ignored. */
static void jpeg_on_message(j_common_ptr c, int level)
{
    if (level >= 0) /* trace messages */
        return;
    switch (c->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
        jpeg_fail((jpeg_job *)c, MF_IMG_CORRUPT);
        break;
    default:
        c->err->num_warnings++;
    }
}

static void jpeg_on_output(j_common_ptr c)
{
    (void)c; /* never print to stderr: failures are reported through the status */
}

/* Called by libjpeg about once per row of MCUs, while it reads the scans
 * and while it writes rows: the work of a decode is bounded here, not only
 * its pixels.  A progressive file may hold any number of scans, each of
 * which makes libjpeg pass over the whole coefficient buffer again. */
static void jpeg_on_progress(j_common_ptr c)
{
    jpeg_job *job = (jpeg_job *)c;
    if (job->cinfo.input_scan_number > job->lim->max_scans) {
        job->status = MF_IMG_TOO_COMPLEX;
        snprintf(job->msg, sizeof job->msg, "a progressive JPEG with more than %d scans", job->lim->max_scans);
        longjmp(job->jump, 1);
    }
    if (job->lim->deadline_ns && mf_now_ns() > job->lim->deadline_ns) {
        job->status = MF_IMG_TOO_SLOW;
        snprintf(job->msg, sizeof job->msg, "decoding took longer than its budget");
        longjmp(job->jump, 1);
    }
}

/* Width and height against the limits; 0 when they fit. */
static mf_img_status size_check(uint64_t w, uint64_t h, const mf_image_limits *lim, char *msg, size_t n)
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

/* libjpeg's working-memory cap: whole-image coefficient buffers take at
 * most 2 bytes per sample and 4 samples per pixel (plus MCU padding, which
 * the fixed slack covers even for 1-pixel-wide images). */
static long jpeg_mem_limit(size_t max_pixels)
{
    const uint64_t slack = (uint64_t)32 << 20;
    uint64_t lim = (uint64_t)max_pixels;
    if (lim > ((uint64_t)LONG_MAX - slack) / 10)
        return LONG_MAX;
    return (long)(lim * 10 + slack);
}

/* PIL's CMYK->RGB (Convert.c cmyk2rgb) after its "CMYK;I" unpacker: JPEG
 * files store Adobe-inverted CMYK, so the bytes are 255-C, 255-M, 255-Y, 255-K. */
static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int w)
{
    for (int x = 0; x < w; x++, in += 4, out += 3) {
        int nk = in[3]; /* 255 - K */
        for (int c = 0; c < 3; c++) {
            int t = (255 - in[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* The part of the JPEG decode that may longjmp: returns a status; on
 * failure the caller releases the job. */
static mf_img_status jpeg_run(jpeg_job *job, const uint8_t *buf, size_t len, mf_image *out)
{
    struct jpeg_decompress_struct *ci = &job->cinfo;
    if (setjmp(job->jump))
        return job->status;

    jpeg_create_decompress(ci);
    ci->mem->max_memory_to_use = jpeg_mem_limit(job->lim->max_pixels);
    job->progress.progress_monitor = jpeg_on_progress;
    ci->progress = &job->progress;
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(ci, TRUE);

    uint64_t w = ci->image_width, h = ci->image_height;
    mf_img_status sc = size_check(w, h, job->lim, job->msg, sizeof job->msg);
    if (sc != MF_IMG_OK) return sc;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        ci->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        ci->out_color_space = JCS_CMYK; /* libjpeg undoes YCC; the rest is ours */
        break;
    default:
        snprintf(job->msg, sizeof job->msg, "unsupported JPEG colour space (%d components)",
                 ci->num_components);
        return MF_IMG_UNSUPPORTED;
    }

    /* PIL reads the first APP1 "Exif" segment. */
    int orient = 1;
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0) {
            orient = tiff_orientation(m->data + 6, m->data_length - 6);
            break;
        }
    }

    jpeg_start_decompress(ci);
    int ow = (int)ci->output_width, oh = (int)ci->output_height, nc = ci->output_components;
    if ((uint64_t)ow != w || (uint64_t)oh != h || (nc != 3 && nc != 4)) {
        snprintf(job->msg, sizeof job->msg, "unexpected decoder output layout");
        return MF_IMG_CORRUPT;
    }
    job->pix = malloc((size_t)w * (size_t)h * 3);
    if (!job->pix) {
        snprintf(job->msg, sizeof job->msg, "cannot allocate %llux%llu RGB pixels",
                 (unsigned long long)w, (unsigned long long)h);
        return MF_IMG_NOMEM;
    }
    /* Scanlines land straight in the output when no conversion or
     * reorientation is needed; else they pass through pool rows. */
    int direct = nc == 3 && orient == 1;
    JSAMPARRAY raw = NULL, rgb = NULL;
    if (!direct) {
        raw = ci->mem->alloc_sarray((j_common_ptr)ci, JPOOL_IMAGE, (JDIMENSION)(ow * nc), 1);
        rgb = nc == 3 ? raw
                      : ci->mem->alloc_sarray((j_common_ptr)ci, JPOOL_IMAGE, (JDIMENSION)(ow * 3), 1);
    }
    while (ci->output_scanline < ci->output_height) {
        int y = (int)ci->output_scanline;
        JSAMPROW dst = direct ? job->pix + (size_t)y * (size_t)ow * 3 : raw[0];
        if (jpeg_read_scanlines(ci, &dst, 1) != 1) {
            snprintf(job->msg, sizeof job->msg, "decoder returned no scanline");
            return MF_IMG_CORRUPT;
        }
        if (direct)
            continue;
        if (nc == 4)
            cmyk_row_to_rgb(raw[0], rgb[0], ow);
        orient_put_row(job->pix, ow, oh, orient, y, rgb[0]);
    }
    jpeg_finish_decompress(ci);

    return hand_over(out, &job->pix, ow, oh, orient);
}

static mf_img_status decode_jpeg(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out,
                                 char *err, size_t errlen)
{
    jpeg_job job;
    memset(&job, 0, sizeof job);
    job.lim = lim;
    job.cinfo.err = jpeg_std_error(&job.jerr);
    job.jerr.error_exit = jpeg_on_error;
    job.jerr.emit_message = jpeg_on_message;
    job.jerr.output_message = jpeg_on_output;

    mf_img_status st = len > ULONG_MAX ? MF_IMG_TOO_LARGE : jpeg_run(&job, buf, len, out);
    jpeg_destroy_decompress(&job.cinfo);
    if (st != MF_IMG_OK) {
        free(job.pix);
        mf_set_err(err, errlen, "JPEG: %s", job.msg[0] ? job.msg : "input too large");
    }
    return st;
}

/* ---- PNG ---------------------------------------------------------------- */

typedef struct png_job {
    png_structp png;     /* libpng read state */
    png_infop info;      /* header and ancillary chunks */
    const uint8_t *buf;  /* whole input */
    size_t len, pos;     /* its length, and how much libpng has consumed */
    int nomem;           /* an allocation failed (status NOMEM) */
    int over_limit;      /* libpng refused the IHDR size by its user limits */
    int too_slow;        /* the time budget ran out (png_on_row) */
    const mf_image_limits *lim; /* the caller's limits */
    char msg[200];       /* the failure, for the caller's err */
    uint8_t *pix;        /* output pixels, malloc'd; freed unless handed out */
} png_job;

/* After every row (of every pass, when interlaced): the time budget. */
static void png_on_row(png_structp png, png_uint_32 row, int pass)
{
    (void)row;
    (void)pass;
    png_job *job = png_get_io_ptr(png);
    if (job->lim->deadline_ns && mf_now_ns() > job->lim->deadline_ns) {
        job->too_slow = 1;
        png_error(png, "decoding took longer than its budget");
    }
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof job->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    /* png_check_IHDR() warns with this text right before its "Invalid IHDR
     * data" error: the size, not the data, was refused. */
    if (strstr(msg, "exceeds user limit"))
        job->over_limit = 1;
}

static png_voidp png_on_malloc(png_structp png, png_alloc_size_t n)
{
    void *p = malloc(n);
    if (!p)
        ((png_job *)png_get_mem_ptr(png))->nomem = 1;
    return p;
}

static void png_on_free(png_structp png, png_voidp p)
{
    (void)png;
    free(p);
}

static void png_on_read(png_structp png, png_bytep data, size_t n)
{
    png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos)
        png_error(png, "truncated PNG data");
    memcpy(data, job->buf + job->pos, n);
    job->pos += n;
}

/* libpng allocates some ancillary chunks (eXIf) at their declared length
 * before reading them, so a 40-byte file could ask for gigabytes: refuse
 * any chunk before the image data that claims more bytes than the input
 * has.  The image data itself is streamed, never allocated by length. */
static int png_chunks_fit(const uint8_t *buf, size_t len)
{
    size_t pos = 8;
    while (len - pos >= 8) {
        if (memcmp(buf + pos + 4, "IDAT", 4) == 0)
            return 1;
        uint32_t n = rd32(buf + pos, 0);
        if ((uint64_t)n + 12 > len - pos)
            return 0;
        pos += 12 + (size_t)n;
    }
    return 1; /* a cut chunk header: libpng reports the truncation */
}

/* The part of the PNG decode that may longjmp; see jpeg_run(). */
static mf_img_status png_run(png_job *job, mf_image *out)
{
    png_structp png = job->png;
    png_infop info = job->info;
    if (setjmp(png_jmpbuf(png)))
        return job->nomem        ? MF_IMG_NOMEM
               : job->too_slow   ? MF_IMG_TOO_SLOW
               : job->over_limit ? MF_IMG_TOO_LARGE
                                 : MF_IMG_CORRUPT;

    /* A side beyond max_side (or max_pixels) is refused by libpng from IHDR. */
    size_t side = job->lim->max_pixels < (size_t)job->lim->max_side ? job->lim->max_pixels : (size_t)job->lim->max_side;
    png_uint_32 lim = side < 0x7fffffff ? (png_uint_32)side : 0x7fffffff;
    png_set_user_limits(png, lim, lim);
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    /* Chunks we never use are skipped unparsed (their CRC is still checked). */
    static const png_byte skip[] = "iCCP\0tEXt\0zTXt\0iTXt\0sPLT";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skip, (int)(sizeof skip / 5));
    png_set_read_fn(png, job, png_on_read);
    png_set_read_status_fn(png, png_on_row);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    mf_img_status sc = size_check(w, h, job->lim, job->msg, sizeof job->msg);
    if (sc != MF_IMG_OK) return sc;

    /* libpng delivers 8-bit RGB, except for 16-bit gray without alpha,
     * which it delivers as is for PIL's clipping (below). */
    int gray16 = depth == 16 && ctype == PNG_COLOR_TYPE_GRAY;
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (!gray16) {
        png_set_strip_16(png);    /* keeps the high byte, as PIL's ";16B" unpackers */
        png_set_strip_alpha(png); /* also any alpha the palette's tRNS produced */
        if (!(ctype & PNG_COLOR_MASK_COLOR))
            png_set_gray_to_rgb(png);
    }
    const int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * (gray16 ? 2 : 3)) {
        snprintf(job->msg, sizeof job->msg, "unexpected decoder output layout");
        return MF_IMG_CORRUPT;
    }

    job->pix = malloc((size_t)w * h * 3);
    if (!job->pix) {
        snprintf(job->msg, sizeof job->msg, "cannot allocate %lux%lu RGB pixels",
                 (unsigned long)w, (unsigned long)h);
        return MF_IMG_NOMEM;
    }
    /* row by row (what png_read_image does, without its array of h row
     * pointers: 8 bytes per row is 320 MB for a 1 x 40,000,000 image) */
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(png, job->pix + (size_t)y * rowbytes, NULL);

    if (gray16) {
        /* PIL opens 16-bit gray as mode "I" and convert("RGB") clips it to
         * 0..255.  Expand in place from the end: pixel i's 2 input bytes are
         * read before its 3 output bytes (at 3i >= 2i) are written. */
        for (size_t i = (size_t)w * h; i-- > 0;) {
            unsigned v = (unsigned)job->pix[2 * i] << 8 | job->pix[2 * i + 1];
            uint8_t g = v > 255 ? 255 : (uint8_t)v;
            job->pix[3 * i] = job->pix[3 * i + 1] = job->pix[3 * i + 2] = g;
        }
    }

    int orient = 1;
    png_uint_32 exif_len = 0;
    png_bytep exif = NULL;
    if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif)
        orient = tiff_orientation(exif, exif_len);
    if (orient != 1) {
        uint8_t *dst = malloc((size_t)w * h * 3);
        if (!dst) {
            snprintf(job->msg, sizeof job->msg, "cannot allocate the reoriented image");
            return MF_IMG_NOMEM;
        }
        for (png_uint_32 y = 0; y < h; y++)
            orient_put_row(dst, (int)w, (int)h, orient, (int)y, job->pix + (size_t)y * w * 3);
        free(job->pix);
        job->pix = dst;
    }

    return hand_over(out, &job->pix, (int)w, (int)h, orient);
}

static mf_img_status decode_png(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out,
                                char *err, size_t errlen)
{
    png_job job;
    memset(&job, 0, sizeof job);
    job.lim = lim;
    job.buf = buf;
    job.len = len;
    job.png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &job, png_on_error, png_on_warning,
                                       &job, png_on_malloc, png_on_free);
    if (job.png)
        job.info = png_create_info_struct(job.png);
    mf_img_status st;
    /* the size from IHDR (the first chunk) before libpng sees it, so a
     * refusal names the limit */
    if (len >= 24 && memcmp(buf + 12, "IHDR", 4) == 0 &&
        (st = size_check(rd32(buf + 16, 0), rd32(buf + 20, 0), lim, job.msg, sizeof job.msg)) != MF_IMG_OK &&
        st != MF_IMG_CORRUPT) {
        /* too large; a zero size is left to libpng's own message */
    } else if (!png_chunks_fit(buf, len)) {
        snprintf(job.msg, sizeof job.msg, "a chunk is longer than the data");
        st = MF_IMG_CORRUPT;
    } else if (!job.png || !job.info) {
        snprintf(job.msg, sizeof job.msg, "cannot allocate the decoder");
        st = MF_IMG_NOMEM;
    } else {
        st = png_run(&job, out);
    }
    png_destroy_read_struct(&job.png, &job.info, NULL);
    if (st != MF_IMG_OK) {
        free(job.pix);
        mf_set_err(err, errlen, "PNG: %s", job.msg);
    }
    return st;
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
    case MF_IMG_FMT_JPEG: return decode_jpeg(buf, len, &lim, out, err, errlen);
    case MF_IMG_FMT_PNG: return decode_png(buf, len, &lim, out, err, errlen);
    default: mf_set_err(err, errlen, "not a JPEG or PNG image"); return MF_IMG_UNSUPPORTED;
    }
}

mf_img_status mf_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, mf_image *out, char *err,
                              size_t errlen)
{
    mf_image_limits lim = {.max_pixels = max_pixels};
    return mf_image_decode_limited(buf, len, &lim, out, err, errlen);
}
