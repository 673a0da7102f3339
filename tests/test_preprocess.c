/* test_preprocess.c -- server/preprocess.c against torchvision-on-PIL.
 *
 * References come from tools/make_test_images.py: float32 [3][H][W] tensors
 * (NAME.pre_CONFIG.f32), and for the 224x224 ImageNet config the uint8 crop
 * as a PNG plus the per-channel float value of every byte (a raw float file
 * would be 600 KB).  The resize reproduces PIL's integer arithmetic, so the
 * results are expected to be bit-identical; the 1e-6 bound is the contract.
 */
#include "image.h"
#include "mf.h"
#include "preprocess.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIR "tests/data/images/"
#define TOL 1e-6f

/* Check records every ck_assert with a syscall: per-element checks count
 * failures in plain C and assert once. */

/* The configs of tools/make_test_images.py.  Means and stds go through
 * double -> float as torch.as_tensor(list, dtype=float32) does. */
typedef struct config {
    const char *name;
    int resize, h, w, channels;
    const char *interp;
    double mean[3], std[3];
} config;

static const config configs[] = {
    {"imagenet", 256, 224, 224, 3, "bilinear", {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}},
    {"gray", 32, 32, 32, 1, "bilinear", {0.286, 0.286, 0.286}, {0.353, 0.353, 0.353}},
    {"nearest", 24, 28, 26, 3, "nearest", {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}},
    {"pad", 20, 26, 31, 3, "bilinear", {0.5, 0.4, 0.3}, {0.25, 0.2, 0.3}},
};

static mf_preprocess make_pre(const config *c)
{
    mf_preprocess p;
    memset(&p, 0, sizeof p);
    p.resize = c->resize;
    p.input_h = c->h;
    p.input_w = c->w;
    p.channels = c->channels;
    snprintf(p.interpolation, sizeof p.interpolation, "%s", c->interp);
    for (int i = 0; i < 3; i++) {
        p.mean[i] = (float)c->mean[i];
        p.std[i] = (float)c->std[i];
    }
    return p;
}

static const config *find_config(const char *name)
{
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
        if (strcmp(configs[i].name, name) == 0)
            return &configs[i];
    ck_abort_msg("no config %s", name);
    return NULL;
}

static uint8_t *load(const char *name, size_t *len) { return tu_load_fixture(DIR, name, len); }

static void decode(const char *name, mf_image *img)
{
    size_t len;
    uint8_t *buf = load(name, &len);
    char err[256];
    mf_img_status st = mf_image_decode(buf, len, 0, img, err, sizeof err);
    ck_assert_msg(st == MF_IMG_OK, "%s: %s", name, err);
    free(buf);
}

static void compare(const char *what, const float *got, const float *want, size_t n)
{
    size_t inexact = 0, worst = 0, nonfinite = 0;
    float maxd = 0;
    for (size_t i = 0; i < n; i++) {
        nonfinite += !isfinite(got[i]);
        float d = fabsf(got[i] - want[i]);
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            inexact++;
        if (d > maxd) {
            maxd = d;
            worst = i;
        }
    }
    ck_assert_msg(nonfinite == 0, "%s: %zu non-finite outputs", what, nonfinite);
    ck_assert_msg(maxd <= TOL, "%s: max |diff| %g at %zu (got %.9g want %.9g)", what, maxd, worst,
                  got[worst], want[worst]);
    ck_assert_msg(inexact == 0, "%s: %zu of %zu values not bit-identical", what, inexact, n);
}

/* ---- references ---------------------------------------------------------- */

static const struct {
    const char *image, *config;
} refs[] = {
    {"photo.jpg", "imagenet"}, {"photo.jpg", "gray"},
    {"base.jpg", "imagenet"},  {"base.jpg", "nearest"}, {"base.jpg", "pad"},
    {"tall.png", "gray"},      {"tall.png", "nearest"}, {"tall.png", "pad"},
    {"exif_6.jpg", "pad"},
};
#define N_REFS ((int)(sizeof refs / sizeof refs[0]))

START_TEST(test_reference)
{
    const config *c = find_config(refs[_i].config);
    mf_preprocess p = make_pre(c);
    size_t n = (size_t)3 * c->h * c->w;
    float *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
    ck_assert(got && want);
    mf_image img;
    decode(refs[_i].image, &img);
    ck_assert_int_eq(mf_preprocess_image(&img, &p, got), 0);
    mf_image_free(&img);

    char stem[64], ref[128], what[128];
    const char *dot = strrchr(refs[_i].image, '.');
    snprintf(stem, sizeof stem, "%.*s", (int)(dot - refs[_i].image), refs[_i].image);
    snprintf(what, sizeof what, "%s/%s", refs[_i].image, c->name);
    if (strcmp(c->name, "imagenet") == 0) {
        /* uint8 crop (PNG) through the byte -> float table */
        size_t lutlen;
        float *lut = (float *)load("pre_imagenet.lut.f32", &lutlen);
        ck_assert_uint_eq(lutlen, 3 * 256 * sizeof(float));
        snprintf(ref, sizeof ref, "%s.pre_imagenet.png", stem);
        mf_image crop;
        decode(ref, &crop);
        ck_assert_int_eq(crop.w, c->w);
        ck_assert_int_eq(crop.h, c->h);
        for (int ch = 0; ch < 3; ch++)
            for (size_t i = 0; i < (size_t)c->h * c->w; i++)
                want[(size_t)ch * c->h * c->w + i] = lut[ch * 256 + crop.rgb[i * 3 + ch]];
        mf_image_free(&crop);
        free(lut);
    } else {
        size_t len;
        snprintf(ref, sizeof ref, "%s.pre_%s.f32", stem, c->name);
        float *f = (float *)load(ref, &len);
        ck_assert_uint_eq(len, n * sizeof(float));
        memcpy(want, f, len);
        free(f);
    }
    compare(what, got, want, n);
    free(got);
    free(want);
}
END_TEST

/* ---- properties that need no reference ----------------------------------- */

static mf_image make_image(int w, int h, int pattern)
{
    mf_image img = {w, h, malloc((size_t)w * h * 3)};
    ck_assert_ptr_nonnull(img.rgb);
    for (size_t i = 0; i < (size_t)w * h; i++)
        for (int c = 0; c < 3; c++)
            img.rgb[i * 3 + c] = pattern < 0 ? (uint8_t)(-pattern * (c + 1))
                                             : (uint8_t)((i * (7 + c * 13) + pattern) % 251);
    return img;
}

static float norm(const mf_preprocess *p, int c, int v)
{
    return ((float)v / 255.0f - p->mean[c]) / p->std[c];
}

/* A constant image stays constant through any resize (the fixed-point
 * weights sum to 1 within rounding that cannot move a byte); where a
 * config's crop is larger than the resized image, the border is byte 0. */
static void check_constant(int w, int h, const config *c)
{
    mf_image img = make_image(w, h, -40); /* RGB = 40, 80, 120 */
    mf_preprocess p = make_pre(c);
    size_t plane = (size_t)c->h * c->w;
    float *out = malloc(3 * plane * sizeof *out);
    ck_assert_int_eq(mf_preprocess_image(&img, &p, out), 0);
    int luma = (40 * 19595 + 80 * 38470 + 120 * 7471 + 0x8000) >> 16;
    for (int ch = 0; ch < 3; ch++) {
        float want = norm(&p, ch, c->channels == 1 ? luma : 40 * (ch + 1));
        float pad = norm(&p, ch, 0);
        ck_assert_msg(out[ch * plane + plane / 2 + c->w / 2] == want, "%dx%d %s: centre", w, h,
                      c->name);
        size_t bad = 0;
        for (size_t i = 0; i < plane; i++)
            bad += out[ch * plane + i] != want && out[ch * plane + i] != pad;
        ck_assert_msg(bad == 0, "%dx%d %s: channel %d: %zu pixels not %g", w, h, c->name, ch, bad,
                      want);
    }
    free(out);
    mf_image_free(&img);
}

START_TEST(test_degenerate_sizes)
{
    static const int sizes[][2] = {{1, 1}, {1, 5000}, {5000, 1}, {1, 10000}, {2, 3}, {3, 700}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
            check_constant(sizes[s][0], sizes[s][1], &configs[c]);
            /* and a non-constant image: finite, in range, no crash */
            mf_image img = make_image(sizes[s][0], sizes[s][1], 3);
            mf_preprocess p = make_pre(&configs[c]);
            size_t n = (size_t)3 * p.input_h * p.input_w;
            float *out = malloc(n * sizeof *out);
            ck_assert_int_eq(mf_preprocess_image(&img, &p, out), 0);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                int ch = (int)(i / ((size_t)p.input_h * p.input_w));
                bad += !isfinite(out[i]) || out[i] < norm(&p, ch, 0) || out[i] > norm(&p, ch, 255);
            }
            ck_assert_msg(bad == 0, "%dx%d %s: %zu values out of range", sizes[s][0], sizes[s][1],
                          configs[c].name, bad);
            free(out);
            mf_image_free(&img);
        }
    }
}
END_TEST

/* Shorter side already equal to resize: no resampling, only the crop, with
 * Python's round-half-to-even offsets: (41 - 32) / 2 = 4.5 -> 4 and
 * (43 - 32) / 2 = 5.5 -> 6. */
START_TEST(test_crop_offsets)
{
    static const int widths[][2] = {{41, 4}, {43, 6}, {42, 5}, {32, 0}};
    const config *c = find_config("gray");
    for (size_t k = 0; k < 4; k++) {
        int w = widths[k][0], left = widths[k][1];
        mf_image img = make_image(w, 32, 11);
        mf_preprocess p = make_pre(c);
        float *out = malloc((size_t)3 * 32 * 32 * sizeof *out);
        ck_assert_int_eq(mf_preprocess_image(&img, &p, out), 0);
        int bad = 0;
        for (int y = 0; y < 32; y++) {
            for (int x = 0; x < 32; x++) {
                const uint8_t *px = img.rgb + ((size_t)y * w + x + left) * 3;
                int l = (px[0] * 19595 + px[1] * 38470 + px[2] * 7471 + 0x8000) >> 16;
                for (int ch = 0; ch < 3; ch++)
                    bad += out[ch * 1024 + y * 32 + x] != norm(&p, ch, l);
            }
        }
        ck_assert_msg(bad == 0, "width %d: %d values differ", w, bad);
        free(out);
        mf_image_free(&img);
    }
}
END_TEST

/* A crop larger than the resized image pads with byte 0 on both sides,
 * (crop - size) // 2 before. */
START_TEST(test_padding)
{
    mf_image img = make_image(10, 10, 5);
    config c = {"pad10", 10, 14, 13, 3, "bilinear", {0.1, 0.2, 0.3}, {0.5, 0.6, 0.7}};
    mf_preprocess p = make_pre(&c);
    float *out = malloc((size_t)3 * 14 * 13 * sizeof *out);
    ck_assert_int_eq(mf_preprocess_image(&img, &p, out), 0);
    int bad = 0;
    for (int ch = 0; ch < 3; ch++) {
        for (int y = 0; y < 14; y++) {
            for (int x = 0; x < 13; x++) {
                int sy = y - 2, sx = x - 1;
                int v = sy >= 0 && sy < 10 && sx >= 0 && sx < 10 ? img.rgb[(sy * 10 + sx) * 3 + ch] : 0;
                bad += out[(ch * 14 + y) * 13 + x] != norm(&p, ch, v);
            }
        }
    }
    ck_assert_msg(bad == 0, "%d values differ", bad);
    free(out);
    mf_image_free(&img);
}
END_TEST

START_TEST(test_bad_args)
{
    mf_image img = make_image(8, 8, 1);
    mf_preprocess p = make_pre(&configs[0]);
    float *out = malloc((size_t)3 * 224 * 224 * sizeof *out);
    ck_assert_int_eq(mf_preprocess_image(&img, &p, out), 0);
    ck_assert_int_eq(mf_preprocess_image(NULL, &p, out), -1);
    ck_assert_int_eq(mf_preprocess_image(&img, NULL, out), -1);
    ck_assert_int_eq(mf_preprocess_image(&img, &p, NULL), -1);
    mf_preprocess q = p;
    q.channels = 2;
    ck_assert_int_eq(mf_preprocess_image(&img, &q, out), -1);
    q = p;
    q.resize = 0;
    ck_assert_int_eq(mf_preprocess_image(&img, &q, out), -1);
    q = p;
    q.input_w = 0;
    ck_assert_int_eq(mf_preprocess_image(&img, &q, out), -1);
    q = p;
    snprintf(q.interpolation, sizeof q.interpolation, "bicubic");
    ck_assert_int_eq(mf_preprocess_image(&img, &q, out), -1);
    q = p;
    q.std[1] = 0.0f;
    ck_assert_int_eq(mf_preprocess_image(&img, &q, out), -1);
    q = p;
    q.mean[2] = NAN;
    ck_assert_int_eq(mf_preprocess_image(&img, &q, out), -1);
    mf_image empty = {0, 0, NULL};
    ck_assert_int_eq(mf_preprocess_image(&empty, &p, out), -1);
    free(out);
    mf_image_free(&img);
}
END_TEST

/* The AVX2 inner loops against the plain ones: same bytes, on random
 * images (noise, with saturated patches to exercise the clipping), random
 * sizes, up- and downscaling, crops larger than the image, one and three
 * channels.  On a CPU without AVX2 both runs take the plain loops. */
START_TEST(test_simd_matches_plain)
{
    uint64_t r = 0x9E3779B97F4A7C15u;
#define NEXT() (r ^= r << 13, r ^= r >> 7, r ^= r << 17, r)
    for (int trial = 0; trial < 150; trial++) {
        int w = 1 + (int)(NEXT() % 400), h = 1 + (int)(NEXT() % 400);
        if (trial % 10 == 0)
            w = 1000 + (int)(NEXT() % 3000); /* strong shrink: many taps */
        mf_image img = {w, h, malloc((size_t)w * h * 3)};
        ck_assert_ptr_nonnull(img.rgb);
        for (size_t i = 0; i < (size_t)w * h * 3; i++) {
            uint64_t v = NEXT();
            img.rgb[i] = (v >> 40) % 4 == 0 ? ((v >> 20) % 2 ? 255 : 0) : (uint8_t)v;
        }
        config c = configs[trial % 2 == 0 ? 0 : 3];
        c.channels = trial % 3 == 0 ? 1 : 3;
        c.resize = 1 + (int)(NEXT() % 300);
        c.h = 1 + (int)(NEXT() % 260);
        c.w = 1 + (int)(NEXT() % 260);
        mf_preprocess p = make_pre(&c);
        size_t n = (size_t)3 * c.h * c.w;
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        ck_assert(a && b);
        mf_preprocess_set_simd(1);
        ck_assert_int_eq(mf_preprocess_image(&img, &p, a), 0);
        mf_preprocess_set_simd(0);
        ck_assert_int_eq(mf_preprocess_image(&img, &p, b), 0);
        mf_preprocess_set_simd(1);
        ck_assert_msg(memcmp(a, b, n * sizeof *a) == 0, "%dx%d -> resize %d crop %dx%d, %d channel(s): AVX2 and plain differ",
                      w, h, c.resize, c.w, c.h, c.channels);
        free(a);
        free(b);
        mf_image_free(&img);
    }
#undef NEXT
}
END_TEST

static Suite *preprocess_suite(void)
{
    Suite *s = suite_create("preprocess");
    TCase *tc = tcase_create("reference");
    tcase_add_loop_test(tc, test_reference, 0, N_REFS);
    suite_add_tcase(s, tc);
    tc = tcase_create("properties");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_degenerate_sizes);
    tcase_add_test(tc, test_crop_offsets);
    tcase_add_test(tc, test_padding);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_simd_matches_plain);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(preprocess_suite());
}
