/* image_jpeg.c -- JPEG through libjpeg-turbo, as PIL decodes it (ISLOW DCT,
 * fancy upsampling), or scaled in the DCT domain when the limits ask for a
 * minimum side (image.h); see image.c for the DESIGN. */
#include "image_codec.h"

#include "mf_util.h"

#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

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
    mf_img_status b = img_budget(job->lim, job->msg, sizeof job->msg);
    if (b != MF_IMG_OK) {
        job->status = b;
        longjmp(job->jump, 1);
    }
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
    mf_img_status sc = img_size_check(w, h, job->lim, job->msg, sizeof job->msg);
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
            orient = img_tiff_orientation(m->data + 6, m->data_length - 6);
            break;
        }
    }

    /* scaled: the smallest M/8 whose shorter side still covers min_side */
    if (job->lim->min_side > 0) {
        for (unsigned m = 1; m <= 8; m++) {
            ci->scale_num = m;
            ci->scale_denom = 8;
            jpeg_calc_output_dimensions(ci);
            JDIMENSION shorter = ci->output_width < ci->output_height ? ci->output_width : ci->output_height;
            if (shorter >= (JDIMENSION)job->lim->min_side) break;
        }
        w = ci->output_width;
        h = ci->output_height;
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
        img_orient_put_row(job->pix, ow, oh, orient, y, rgb[0]);
    }
    jpeg_finish_decompress(ci);

    return img_hand_over(out, &job->pix, ow, oh, orient);
}

mf_img_status img_decode_jpeg(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out,
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


int img_probe_jpeg(const uint8_t *buf, size_t len, int *w, int *h)
{
    size_t p = 2; /* after SOI */
    while (p + 4 <= len) {
        if (buf[p] != 0xff) return -1;
        while (p < len && buf[p] == 0xff) p++; /* fill bytes */
        if (p + 3 > len) return -1;
        const uint8_t m = buf[p++];
        if (m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; /* no length */
        if (m == 0xd9 || m == 0xda) return -1;                          /* no frame header before */
        const size_t seg = img_rd16(buf + p, 0);
        if (seg < 2 || seg > len - p) return -1;
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            if (seg < 7) return -1;
            *h = (int)img_rd16(buf + p + 3, 0);
            *w = (int)img_rd16(buf + p + 5, 0);
            return 0;
        }
        p += seg;
    }
    return -1;
}
