/* fuzz_image.c -- libFuzzer target: an upload through image decoding
 * (vision/image*.c: JPEG, PNG, WebP, GIF, EXIF orientation; the header probe;
 * JPEG scaled decoding on one input in four) and, when it decodes, through
 * preprocessing (vision/preprocess.c), as the server's decode pool does.
 *
 * The input is the upload itself, so the image fixtures of tests/data/images
 * seed it unchanged.  The preprocessing settings (input size, resize, filter,
 * channels) are drawn from a hash of the input rather than from its bytes, so
 * that they vary without spoiling the seeds.  The pixel limit is small
 * (1 Mpixel) so that headers mutated into huge sizes stay cheap; that limit
 * path is itself what is exercised.
 */
#include "fuzz.h"

#include "image.h"
#include "preprocess.h"

#include <math.h>

#define MAX_PIXELS ((size_t)1 << 20)

static uint64_t fnv1a(const uint8_t *d, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 0x100000001b3ull;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_image img = {7, 7, (uint8_t *)&img}; /* garbage in: the decoder must reset it */
    char err[256];
    const uint64_t hash = fnv1a(data, size);
    mf_image_info info;
    mf_image_probe(data, size, &info);
    FUZZ_CHECK(info.format == mf_image_sniff(data, size) && info.w >= 0 && info.h >= 0);
    mf_image_limits lim = {.max_pixels = MAX_PIXELS, .min_side = (hash >> 30) % 4 == 0 ? 1 + (int)((hash >> 32) % 96) : 0};
    mf_img_status st = mf_image_decode_limited(data, size, &lim, &img, err, sizeof err);
    FUZZ_CHECK(st >= MF_IMG_OK && st <= MF_IMG_CANCELLED && st != MF_IMG_CANCELLED && st != MF_IMG_TOO_SLOW);
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
    FUZZ_CHECK(mf_img_status_code(st)[0] != '\0');
    if (st != MF_IMG_OK) {
        FUZZ_CHECK(img.rgb == NULL && img.w == 0 && img.h == 0);
        return 0;
    }
    FUZZ_CHECK(img.rgb != NULL && img.w > 0 && img.h > 0);
    FUZZ_CHECK((size_t)img.w * (size_t)img.h <= MAX_PIXELS);
    FUZZ_CHECK(mf_image_sniff(data, size) != MF_IMG_FMT_UNKNOWN);

    uint64_t h = hash;
    mf_preprocess p;
    mf_preprocess_default(&p);
    p.input_h = 32 + (int)(h & 63);
    p.input_w = 32 + (int)((h >> 6) & 63);
    /* shorter side to 1..160: below, at and above the crop (zero padding) */
    p.resize = 1 + (int)((h >> 12) % 160);
    snprintf(p.interpolation, sizeof p.interpolation, "%s", (h >> 20) & 1 ? "nearest" : "bilinear");
    p.channels = (h >> 21) & 1 ? 1 : 3;
    size_t n = (size_t)3 * p.input_h * p.input_w;
    float *out = malloc(n * sizeof *out);
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(mf_preprocess_image(&img, &p, out) == 0);
    float lo = (0.0f - p.mean[0]) / p.std[0] - 1.0f, hi = (1.0f - p.mean[0]) / p.std[0] + 1.0f;
    for (int c = 1; c < 3; c++) {
        float l = (0.0f - p.mean[c]) / p.std[c] - 1.0f, u = (1.0f - p.mean[c]) / p.std[c] + 1.0f;
        lo = l < lo ? l : lo;
        hi = u > hi ? u : hi;
    }
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(isfinite(out[i]) && out[i] >= lo && out[i] <= hi);
    free(out);
    mf_image_free(&img);
    FUZZ_CHECK(img.rgb == NULL);
    return 0;
}
