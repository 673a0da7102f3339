/* image_webp.c -- WebP through libwebp, as PIL 9.4 decodes it (image.h).
 *
 * PIL opens every WebP file (still or animated) with libwebpdemux's
 * WebPAnimDecoder in RGBA and reads its first frame; so does this, so the
 * pixels are the same bytes: lossy files through libwebp's default fancy
 * upsampling, alpha kept unpremultiplied and then dropped (convert("RGB")),
 * a first frame smaller than the canvas on transparent black.  The EXIF
 * chunk's orientation is applied, as exif_transpose does.
 *
 * The canvas size is checked against the limits from the header before the
 * decoder allocates it.  libwebp decodes a frame in one call, so the time
 * budget is checked before and after it, not per row: a WebP decode is
 * bounded by max_pixels.
 */
#include "image_codec.h"

#include "mf_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

int img_probe_webp(const uint8_t *buf, size_t len, int *w, int *h)
{
    return WebPGetInfo(buf, len, w, h) ? 0 : -1;
}

/* Orientation from the EXIF chunk, if any ("Exif\0\0" prefix optional). */
static int webp_orientation(const WebPDemuxer *dmx)
{
    WebPChunkIterator it;
    int o = 1;
    if (WebPDemuxGetChunk(dmx, "EXIF", 1, &it)) {
        const uint8_t *p = it.chunk.bytes;
        size_t n = it.chunk.size;
        if (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0) {
            p += 6;
            n -= 6;
        }
        o = img_tiff_orientation(p, n);
        WebPDemuxReleaseChunkIterator(&it);
    }
    return o;
}

mf_img_status img_decode_webp(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out, char *err,
                              size_t errlen)
{
    char msg[200] = "";
    mf_img_status st = MF_IMG_OK;
    WebPAnimDecoder *dec = NULL;
    uint8_t *pix = NULL;
    WebPBitstreamFeatures f;
    /* the first frame's header: a file libwebp cannot parse is corrupt */
    if (WebPGetFeatures(buf, len, &f) != VP8_STATUS_OK) {
        snprintf(msg, sizeof msg, "not a valid WebP file");
        st = MF_IMG_CORRUPT;
        goto done;
    }
    /* the canvas (VP8X) or the image: before anything is allocated */
    WebPData data = {buf, len};
    WebPDemuxState ds;
    WebPDemuxer *probe = WebPDemuxPartial(&data, &ds);
    if (!probe || ds < WEBP_DEMUX_PARSED_HEADER) {
        WebPDemuxDelete(probe);
        snprintf(msg, sizeof msg, "not a valid WebP container");
        st = MF_IMG_CORRUPT;
        goto done;
    }
    const uint32_t cw = WebPDemuxGetI(probe, WEBP_FF_CANVAS_WIDTH), ch = WebPDemuxGetI(probe, WEBP_FF_CANVAS_HEIGHT);
    WebPDemuxDelete(probe);
    if ((st = img_size_check(cw, ch, lim, msg, sizeof msg)) != MF_IMG_OK) goto done;
    if ((st = img_budget(lim, msg, sizeof msg)) != MF_IMG_OK) goto done;

    WebPAnimDecoderOptions opts;
    if (!WebPAnimDecoderOptionsInit(&opts)) {
        snprintf(msg, sizeof msg, "libwebp version mismatch");
        st = MF_IMG_UNSUPPORTED;
        goto done;
    }
    opts.color_mode = MODE_RGBA;
    opts.use_threads = 0;
    dec = WebPAnimDecoderNew(&data, &opts);
    if (!dec) {
        snprintf(msg, sizeof msg, "not a valid WebP file (or out of memory)");
        st = MF_IMG_CORRUPT;
        goto done;
    }
    WebPAnimInfo info;
    if (!WebPAnimDecoderGetInfo(dec, &info) || info.canvas_width != cw || info.canvas_height != ch) {
        snprintf(msg, sizeof msg, "inconsistent WebP canvas");
        st = MF_IMG_CORRUPT;
        goto done;
    }
    uint8_t *rgba = NULL;
    int ts;
    if (!WebPAnimDecoderGetNext(dec, &rgba, &ts) || !rgba) {
        snprintf(msg, sizeof msg, "the first WebP frame does not decode");
        st = MF_IMG_CORRUPT;
        goto done;
    }
    if ((st = img_budget(lim, msg, sizeof msg)) != MF_IMG_OK) goto done;
    const int w = (int)cw, h = (int)ch;
    const int orient = webp_orientation(WebPAnimDecoderGetDemuxer(dec));
    pix = malloc((size_t)w * h * 3);
    uint8_t *row = malloc((size_t)w * 3);
    if (!pix || !row) {
        free(row);
        snprintf(msg, sizeof msg, "cannot allocate %dx%d RGB pixels", w, h);
        st = MF_IMG_NOMEM;
        goto done;
    }
    for (int y = 0; y < h; y++) {
        const uint8_t *s = rgba + (size_t)y * w * 4;
        for (int x = 0; x < w; x++) {
            row[3 * x] = s[4 * x];
            row[3 * x + 1] = s[4 * x + 1];
            row[3 * x + 2] = s[4 * x + 2];
        }
        img_orient_put_row(pix, w, h, orient, y, row);
    }
    free(row);
    st = img_hand_over(out, &pix, w, h, orient);
done:
    WebPAnimDecoderDelete(dec);
    free(pix);
    if (st != MF_IMG_OK) mf_set_err(err, errlen, "WebP: %s", msg);
    return st;
}
