/* image_png.c -- PNG through libpng, as PIL decodes it (image.h); see image.c
 * for the DESIGN. */
#include "image_codec.h"

#include "mf_util.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

typedef struct png_job {
    png_structp png;     /* libpng read state */
    png_infop info;      /* header and ancillary chunks */
    const uint8_t *buf;  /* whole input */
    size_t len, pos;     /* its length, and how much libpng has consumed */
    int nomem;           /* an allocation failed (status NOMEM) */
    int over_limit;      /* libpng refused the IHDR size by its user limits */
    mf_img_status budget;/* the time budget ran out or the decode was cancelled (png_on_row) */
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
    char msg[100];
    mf_img_status b = img_budget(job->lim, msg, sizeof msg);
    if (b != MF_IMG_OK) {
        job->budget = b;
        png_error(png, msg);
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
        uint32_t n = img_rd32(buf + pos, 0);
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
               : job->budget     ? job->budget
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
    mf_img_status sc = img_size_check(w, h, job->lim, job->msg, sizeof job->msg);
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
        orient = img_tiff_orientation(exif, exif_len);
    if (orient != 1) {
        uint8_t *dst = malloc((size_t)w * h * 3);
        if (!dst) {
            snprintf(job->msg, sizeof job->msg, "cannot allocate the reoriented image");
            return MF_IMG_NOMEM;
        }
        for (png_uint_32 y = 0; y < h; y++)
            img_orient_put_row(dst, (int)w, (int)h, orient, (int)y, job->pix + (size_t)y * w * 3);
        free(job->pix);
        job->pix = dst;
    }

    return img_hand_over(out, &job->pix, (int)w, (int)h, orient);
}

mf_img_status img_decode_png(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out,
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
        (st = img_size_check(img_rd32(buf + 16, 0), img_rd32(buf + 20, 0), lim, job.msg, sizeof job.msg)) != MF_IMG_OK &&
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

