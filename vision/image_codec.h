/* image_codec.h -- what the decoders of vision/ share (internal: image.h is
 * the interface).  image.c holds these helpers and the entry point; each
 * image_<format>.c one decoder.  A decoder checks the size from its header
 * with img_size_check before any pixel memory exists, calls img_budget
 * about once per row (deadline and cancellation), and gives its pixels
 * away with img_hand_over; on failure it leaves *out empty and its message
 * in err ("<FORMAT>: ..."). */
#ifndef MF_IMAGE_CODEC_H
#define MF_IMAGE_CODEC_H

#include "image.h"

#include <stddef.h>
#include <stdint.h>

static inline uint32_t img_rd16(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t img_rd32(const uint8_t *p, int le)
{
    return le ? img_rd16(p, 1) | img_rd16(p + 2, 1) << 16 : img_rd16(p, 0) << 16 | img_rd16(p + 2, 0);
}

/* EXIF orientation (1..8) of a TIFF structure (an EXIF payload), 1 if none. */
int img_tiff_orientation(const uint8_t *t, size_t n);

/* Source row y of a w x h image into dst, where orientation o puts it. */
void img_orient_put_row(uint8_t *dst, int w, int h, int o, int y, const uint8_t *row);

/* The decoded w x h pixels *pix (before orientation o) become *out. */
mf_img_status img_hand_over(mf_image *out, uint8_t **pix, int w, int h, int o);

/* Width and height against the limits (MF_IMG_OK when they fit). */
mf_img_status img_size_check(uint64_t w, uint64_t h, const mf_image_limits *lim, char *msg, size_t n);

/* MF_IMG_OK while the decode may go on; MF_IMG_TOO_SLOW past the deadline,
 * MF_IMG_CANCELLED once *lim->cancel is set (msg says which). */
mf_img_status img_budget(const mf_image_limits *lim, char *msg, size_t n);

/* The decoders; limits are complete (no zero fields but deadline, cancel, min_side). */
mf_img_status img_decode_jpeg(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out, char *err,
                              size_t errlen);
mf_img_status img_decode_png(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out, char *err,
                             size_t errlen);
mf_img_status img_decode_webp(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out, char *err,
                              size_t errlen);
mf_img_status img_decode_gif(const uint8_t *buf, size_t len, const mf_image_limits *lim, mf_image *out, char *err,
                             size_t errlen);

/* Header-only sizes (mf_image_probe): 0 with *w, *h, or -1. */
int img_probe_jpeg(const uint8_t *buf, size_t len, int *w, int *h);
int img_probe_webp(const uint8_t *buf, size_t len, int *w, int *h);

#endif
