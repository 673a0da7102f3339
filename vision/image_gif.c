/* image_gif.c -- GIF through giflib, as PIL 9.4 decodes it (image.h).
 *
 * PIL's first frame of a GIF, converted to RGB:
 *  - the image is the logical screen, grown to the frame where the frame
 *    reaches past it; outside the frame it is the frame's transparent index
 *    (graphic control extension) if it has one, else index 0;
 *  - colours come from the local colour table, unless it is absent or the
 *    identity gray ramp (PIL then falls back), then from the global table
 *    unless that is absent or the identity ramp too, then gray (index =
 *    level); an index past the table's entries is gray as well (PIL's
 *    palettes start as a gray ramp and the table overwrites its head);
 *  - transparency is not applied (convert("RGB") keeps the index's colour);
 *  - interlaced frames are deinterlaced (rows in passes 0/8, 4/8, 2/4, 1/2).
 * Only the records up to the first image are read: an animation's later
 * frames cost nothing.  Sizes are checked before any pixel memory exists,
 * the time budget and cancellation once per row.
 */
#include "image_codec.h"

#include "mf_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>

typedef struct gif_src {
    const uint8_t *buf;
    size_t len, pos;
} gif_src;

static int gif_read(GifFileType *g, GifByteType *dst, int n)
{
    gif_src *s = g->UserData;
    if (n < 0) return 0;
    size_t k = (size_t)n <= s->len - s->pos ? (size_t)n : s->len - s->pos;
    memcpy(dst, s->buf + s->pos, k);
    s->pos += k;
    return (int)k;
}

/* PIL's _is_palette_needed: anything but the identity gray ramp. */
static int palette_needed(const ColorMapObject *m)
{
    if (!m) return 0;
    for (int i = 0; i < m->ColorCount; i++)
        if (m->Colors[i].Red != i || m->Colors[i].Green != i || m->Colors[i].Blue != i) return 1;
    return 0;
}

static const char *gif_error(int code)
{
    const char *s = GifErrorString(code);
    return s ? s : "unreadable GIF data";
}

mf_img_status img_decode_gif(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out, char *err,
                             size_t errlen)
{
    char msg[200] = "";
    mf_img_status st = MF_IMG_CORRUPT;
    gif_src src = {buf, len, 0};
    int e = 0, trans = -1;
    uint8_t *idx = NULL, *pix = NULL, *line = NULL;
    GifFileType *g = DGifOpen(&src, gif_read, &e);
    if (!g) {
        snprintf(msg, sizeof msg, "%s", gif_error(e));
        if (e == D_GIF_ERR_NOT_ENOUGH_MEM) st = MF_IMG_NOMEM;
        goto done;
    }
    if ((st = img_size_check(g->SWidth, g->SHeight, lim, msg, sizeof msg)) != MF_IMG_OK) goto done;
    st = MF_IMG_CORRUPT;
    /* the records before the first image: extensions (the last graphic
     * control one gives the transparent index) */
    for (;;) {
        GifRecordType rt;
        if (DGifGetRecordType(g, &rt) == GIF_ERROR) {
            snprintf(msg, sizeof msg, "%s", gif_error(g->Error));
            goto done;
        }
        if (rt == IMAGE_DESC_RECORD_TYPE) break;
        if (rt == TERMINATE_RECORD_TYPE) {
            snprintf(msg, sizeof msg, "no image in the GIF file");
            goto done;
        }
        if (rt != EXTENSION_RECORD_TYPE) {
            snprintf(msg, sizeof msg, "unexpected GIF record");
            goto done;
        }
        int code;
        GifByteType *ext;
        if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) {
            snprintf(msg, sizeof msg, "%s", gif_error(g->Error));
            goto done;
        }
        if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4) {
            GraphicsControlBlock gcb;
            if (DGifExtensionToGCB(ext[0], ext + 1, &gcb) == GIF_OK) trans = gcb.TransparentColor;
        }
        while (ext) {
            if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) {
                snprintf(msg, sizeof msg, "%s", gif_error(g->Error));
                goto done;
            }
        }
    }
    if (DGifGetImageDesc(g) == GIF_ERROR) {
        snprintf(msg, sizeof msg, "%s", gif_error(g->Error));
        goto done;
    }
    const GifImageDesc *d = &g->Image;
    if (d->Width <= 0 || d->Height <= 0) {
        snprintf(msg, sizeof msg, "a frame of zero width or height");
        goto done;
    }
    const uint64_t x1 = (uint64_t)d->Left + (uint64_t)d->Width, y1 = (uint64_t)d->Top + (uint64_t)d->Height;
    const uint64_t W = x1 > (uint64_t)g->SWidth ? x1 : (uint64_t)g->SWidth;
    const uint64_t H = y1 > (uint64_t)g->SHeight ? y1 : (uint64_t)g->SHeight;
    if ((st = img_size_check(W, H, lim, msg, sizeof msg)) != MF_IMG_OK) goto done;
    st = MF_IMG_CORRUPT;
    const int w = (int)W, h = (int)H, fw = d->Width, fh = d->Height;
    idx = malloc((size_t)w * h);
    line = malloc((size_t)fw);
    if (!idx || !line) {
        snprintf(msg, sizeof msg, "cannot allocate %dx%d pixels", w, h);
        st = MF_IMG_NOMEM;
        goto done;
    }
    memset(idx, trans >= 0 ? trans : 0, (size_t)w * h);
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    const int passes = d->Interlace ? 4 : 1;
    for (int p = 0; p < passes; p++)
        for (int r = d->Interlace ? start[p] : 0; r < fh; r += d->Interlace ? step[p] : 1) {
            if ((st = img_budget(lim, msg, sizeof msg)) != MF_IMG_OK) goto done;
            if (DGifGetLine(g, line, fw) == GIF_ERROR) {
                snprintf(msg, sizeof msg, "%s", gif_error(g->Error));
                st = g->Error == D_GIF_ERR_NOT_ENOUGH_MEM ? MF_IMG_NOMEM : MF_IMG_CORRUPT;
                goto done;
            }
            memcpy(idx + (size_t)(d->Top + r) * w + d->Left, line, (size_t)fw);
        }
    /* indices to colours */
    const ColorMapObject *map = palette_needed(d->ColorMap) ? d->ColorMap
                                : palette_needed(g->SColorMap) ? g->SColorMap
                                                               : NULL;
    uint8_t lut[256][3];
    for (int i = 0; i < 256; i++) {
        const int in = map && i < map->ColorCount;
        lut[i][0] = in ? map->Colors[i].Red : (uint8_t)i;
        lut[i][1] = in ? map->Colors[i].Green : (uint8_t)i;
        lut[i][2] = in ? map->Colors[i].Blue : (uint8_t)i;
    }
    pix = malloc((size_t)w * h * 3);
    if (!pix) {
        snprintf(msg, sizeof msg, "cannot allocate %dx%d RGB pixels", w, h);
        st = MF_IMG_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < (size_t)w * h; i++) memcpy(pix + 3 * i, lut[idx[i]], 3);
    st = img_hand_over(out, &pix, w, h, 1);
done:
    if (g) DGifCloseFile(g, &e);
    free(idx);
    free(line);
    free(pix);
    if (st != MF_IMG_OK) mf_set_err(err, errlen, "GIF: %s", msg);
    return st;
}
