/* test_image.c -- server/image.c: decoding of untrusted JPEG/PNG uploads.
 *
 * Fixtures come from tools/make_test_images.py (tests/data/images/); every
 * good one must decode to exactly the bytes PIL produces
 * (exif_transpose + convert("RGB")).  Both sides use the system
 * libjpeg-turbo with default settings, so no tolerance is needed anywhere.
 */
#include "image.h"
#include "testutil.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <jpeglib.h>

#define DIR "tests/data/images/"

/* Sanitizers that reserve huge shadow mappings (capping RLIMIT_AS breaks them). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_BIG_SHADOW 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define TU_BIG_SHADOW 1
#endif
#endif

static uint8_t *load(const char *name, size_t *len) { return tu_load_fixture(DIR, name, len); }

/* name.ext -> name + suffix */
static void sibling(const char *name, const char *suffix, char *out, size_t outlen)
{
    const char *dot = strrchr(name, '.');
    int stem = dot ? (int)(dot - name) : (int)strlen(name);
    snprintf(out, outlen, "%.*s%s", stem, name, suffix);
}

static void expected_size(const char *name, int *w, int *h)
{
    char txt[128];
    size_t len;
    sibling(name, ".txt", txt, sizeof txt);
    uint8_t *t = load(txt, &len);
    char s[64] = {0};
    memcpy(s, t, len < sizeof s - 1 ? len : sizeof s - 1);
    ck_assert_int_eq(sscanf(s, "%d %d", w, h), 2);
    free(t);
}

static mf_img_status decode_file(const char *name, size_t max_pixels, mf_image *img, char *err,
                                 size_t errlen)
{
    size_t len;
    uint8_t *buf = load(name, &len);
    mf_img_status st = mf_image_decode(buf, len, max_pixels, img, err, errlen);
    free(buf);
    return st;
}

/* Exact comparison with the PIL bytes, reporting where it differs. */
static void check_pixels(const char *name, const mf_image *img, const uint8_t *want, size_t wantlen)
{
    ck_assert_uint_eq((size_t)img->w * img->h * 3, wantlen);
    size_t diff = 0, first = 0;
    int maxd = 0;
    for (size_t i = 0; i < wantlen; i++) {
        int d = abs((int)img->rgb[i] - (int)want[i]);
        if (d) {
            if (!diff)
                first = i;
            diff++;
            if (d > maxd)
                maxd = d;
        }
    }
    ck_assert_msg(diff == 0, "%s: %zu of %zu bytes differ from PIL (max %d, first at pixel %zu)",
                  name, diff, wantlen, maxd, first / 3);
}

static void check_against_rgb(const char *name, const char *rgbname)
{
    mf_image img;
    char err[256];
    mf_img_status st = decode_file(name, 0, &img, err, sizeof err);
    ck_assert_msg(st == MF_IMG_OK, "%s: %s (%s)", name, mf_img_status_code(st), err);
    int w, h;
    expected_size(name, &w, &h);
    ck_assert_int_eq(img.w, w);
    ck_assert_int_eq(img.h, h);
    size_t len;
    uint8_t *want = load(rgbname, &len);
    check_pixels(name, &img, want, len);
    free(want);
    mf_image_free(&img);
    ck_assert_ptr_null(img.rgb);
}

/* ---- fixtures ----------------------------------------------------------- */

static const char *const good[] = {
    "base.jpg", "base_444.jpg", "base_422.jpg", "base_progressive.jpg", "base_gray.jpg",
    "base_cmyk.jpg", "base_ycck.jpg",
    "exif_1.jpg", "exif_2.jpg", "exif_3.jpg", "exif_4.jpg",
    "exif_5.jpg", "exif_6.jpg", "exif_7.jpg", "exif_8.jpg",
    "png_rgb.png", "png_rgba.png", "png_gray.png", "png_la.png", "png_gray1.png", "png_gray2.png",
    "png_palette.png", "png_palette_trns.png", "png_gray16.png", "png_rgb16.png",
    "png_rgba16.png", "png_la16.png", "png_interlaced.png", "png_interlaced_gray16.png",
    "png_interlaced_pal4.png", "png_exif6.png", "tall.png",
    "webp_lossy.webp", "webp_lossless.webp", "webp_alpha.webp", "webp_alpha_lossless.webp",
    "webp_exif6.webp", "webp_anim.webp",
    "gif_pil.gif", "gif_local.gif", "gif_offset_trns.gif", "gif_past_screen.gif", "gif_interlaced.gif",
    "gif_no_table.gif", "gif_gray_local.gif", "gif_past_table.gif", "gif_anim.gif",
};
#define N_GOOD ((int)(sizeof good / sizeof good[0]))

START_TEST(test_good_fixture)
{
    char rgb[128];
    sibling(good[_i], ".rgb", rgb, sizeof rgb);
    check_against_rgb(good[_i], rgb);
}
END_TEST

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* photo.jpg is too large for a raw reference: its hash is stored. */
START_TEST(test_photo_hash)
{
    mf_image img;
    ck_assert_int_eq(decode_file("photo.jpg", 0, &img, NULL, 0), MF_IMG_OK);
    int w, h;
    expected_size("photo.jpg", &w, &h);
    ck_assert_int_eq(img.w, w);
    ck_assert_int_eq(img.h, h);
    size_t len;
    uint8_t *t = load("photo.fnv1a64", &len);
    char s[32] = {0};
    memcpy(s, t, len < 17 ? len : 16);
    free(t);
    unsigned long long want = strtoull(s, NULL, 16);
    ck_assert_msg(fnv1a64(img.rgb, (size_t)w * h * 3) == want, "photo.jpg pixels differ from PIL");
    mf_image_free(&img);
}
END_TEST

/* Lossless re-encoding of base.jpg with libjpeg (same DCT coefficients, so
 * the same pixels): arithmetic coding, progressive, both. */
static uint8_t *transcode(const uint8_t *src, size_t len, int arith, int progressive, size_t *outlen)
{
    struct jpeg_decompress_struct d;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr ed, ec;
    d.err = jpeg_std_error(&ed);
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, src, (unsigned long)len);
    ck_assert_int_eq(jpeg_read_header(&d, TRUE), JPEG_HEADER_OK);
    jvirt_barray_ptr *coefs = jpeg_read_coefficients(&d);
    c.err = jpeg_std_error(&ec);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &out, &n);
    jpeg_copy_critical_parameters(&d, &c);
    c.arith_code = arith ? TRUE : FALSE;
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_write_coefficients(&c, coefs);
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    *outlen = n;
    return out;
}

START_TEST(test_jpeg_transcoded)
{
    static const int modes[][2] = {{1, 0}, {1, 1}, {0, 1}};
    size_t len, rgblen;
    uint8_t *src = load("base.jpg", &len);
    uint8_t *want = load("base.rgb", &rgblen);
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        size_t n;
        uint8_t *jpg = transcode(src, len, modes[m][0], modes[m][1], &n);
        mf_image img;
        char err[256];
        mf_img_status st = mf_image_decode(jpg, n, 0, &img, err, sizeof err);
        ck_assert_msg(st == MF_IMG_OK, "arith=%d progressive=%d: %s", modes[m][0], modes[m][1], err);
        check_pixels(modes[m][0] ? "arithmetic" : "progressive", &img, want, rgblen);
        mf_image_free(&img);
        free(jpg);
    }
    free(want);
    free(src);
}
END_TEST

static const struct {
    const char *name;
    mf_img_status want;
} bad[] = {
    {"trunc.jpg", MF_IMG_CORRUPT},
    {"trunc_progressive.jpg", MF_IMG_CORRUPT},
    {"trunc.png", MF_IMG_CORRUPT},
    {"badcrc.png", MF_IMG_CORRUPT},
    {"badcrc_text.png", MF_IMG_CORRUPT},
    {"random.bin", MF_IMG_UNSUPPORTED},
    {"random_jpeg.jpg", MF_IMG_CORRUPT},
    {"random_png.png", MF_IMG_CORRUPT},
    {"zero.jpg", MF_IMG_CORRUPT},
    {"zero.png", MF_IMG_CORRUPT},
    {"huge.jpg", MF_IMG_TOO_LARGE},
    {"huge.png", MF_IMG_TOO_LARGE},
    {"trunc.webp", MF_IMG_CORRUPT},
    {"trunc.gif", MF_IMG_CORRUPT},
    {"huge.gif", MF_IMG_TOO_LARGE},
    {"other.bmp", MF_IMG_OTHER_FORMAT},
    {"other.tiff", MF_IMG_OTHER_FORMAT},
    {"other.heic", MF_IMG_OTHER_FORMAT},
    {"other.avif", MF_IMG_OTHER_FORMAT},
};
#define N_BAD ((int)(sizeof bad / sizeof bad[0]))

START_TEST(test_bad_fixture)
{
    mf_image img = {7, 7, (uint8_t *)&img}; /* must be reset */
    char err[256] = "untouched";
    mf_img_status st = decode_file(bad[_i].name, 0, &img, err, sizeof err);
    ck_assert_msg(st == bad[_i].want, "%s: got %s, want %s (%s)", bad[_i].name,
                  mf_img_status_code(st), mf_img_status_code(bad[_i].want), err);
    ck_assert_ptr_null(img.rgb);
    ck_assert_int_eq(img.w, 0);
    ck_assert_int_eq(img.h, 0);
    ck_assert_msg(err[0] && strcmp(err, "untouched") != 0, "%s: no error text", bad[_i].name);
    /* the same without an error buffer */
    ck_assert_int_eq(decode_file(bad[_i].name, 0, &img, NULL, 0), bad[_i].want);
}
END_TEST

START_TEST(test_empty)
{
    mf_image img;
    char err[64];
    uint8_t b = 0xff;
    ck_assert_int_eq(mf_image_decode(&b, 0, 0, &img, err, sizeof err), MF_IMG_EMPTY);
    ck_assert_int_eq(mf_image_decode(NULL, 0, 0, &img, err, sizeof err), MF_IMG_EMPTY);
    ck_assert_ptr_null(img.rgb);
    ck_assert_int_eq(mf_image_decode(&b, 1, 0, &img, err, sizeof err), MF_IMG_UNSUPPORTED);
    /* a tiny error buffer is truncated, not overrun */
    char tiny[4] = {'x', 'x', 'x', 'x'};
    ck_assert_int_eq(mf_image_decode(&b, 0, 0, &img, tiny, 3), MF_IMG_EMPTY);
    ck_assert_int_eq(tiny[2], '\0');
    ck_assert_int_eq(tiny[3], 'x');
}
END_TEST

START_TEST(test_sniff)
{
    static const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0};
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0};
    static const uint8_t gif[] = "GIF89a....";
    static const uint8_t gif7[] = "GIF87a....";
    static const uint8_t webp[] = "RIFF\x10\0\0\0WEBPVP8 ";
    static const uint8_t notgif[] = "GIF90a....";
    ck_assert_int_eq(mf_image_sniff(jpg, sizeof jpg), MF_IMG_FMT_JPEG);
    ck_assert_int_eq(mf_image_sniff(jpg, 3), MF_IMG_FMT_JPEG);
    ck_assert_int_eq(mf_image_sniff(jpg, 2), MF_IMG_FMT_UNKNOWN);
    ck_assert_int_eq(mf_image_sniff(png, sizeof png), MF_IMG_FMT_PNG);
    ck_assert_int_eq(mf_image_sniff(png, 8), MF_IMG_FMT_PNG);
    ck_assert_int_eq(mf_image_sniff(png, 7), MF_IMG_FMT_UNKNOWN);
    ck_assert_int_eq(mf_image_sniff(gif, sizeof gif), MF_IMG_FMT_GIF);
    ck_assert_int_eq(mf_image_sniff(gif7, sizeof gif7), MF_IMG_FMT_GIF);
    ck_assert_int_eq(mf_image_sniff(notgif, sizeof notgif), MF_IMG_FMT_UNKNOWN);
    ck_assert_int_eq(mf_image_sniff(webp, sizeof webp), MF_IMG_FMT_WEBP);
    ck_assert_int_eq(mf_image_sniff(webp, 11), MF_IMG_FMT_UNKNOWN);
    ck_assert_int_eq(mf_image_sniff(NULL, 10), MF_IMG_FMT_UNKNOWN);
    ck_assert_int_eq(mf_image_sniff(jpg, 0), MF_IMG_FMT_UNKNOWN);
    size_t len;
    uint8_t *b = load("base.jpg", &len);
    ck_assert_int_eq(mf_image_sniff(b, len), MF_IMG_FMT_JPEG);
    free(b);
    b = load("png_rgb.png", &len);
    ck_assert_int_eq(mf_image_sniff(b, len), MF_IMG_FMT_PNG);
    free(b);
}
END_TEST

START_TEST(test_status_codes)
{
    ck_assert_str_eq(mf_img_status_code(MF_IMG_OK), "ok");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_EMPTY), "empty_body");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_UNSUPPORTED), "unsupported_image");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_CORRUPT), "corrupt_image");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_TOO_LARGE), "image_too_large");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_NOMEM), "out_of_memory");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_OTHER_FORMAT), "unsupported_media_type");
    ck_assert_str_eq(mf_img_status_code(MF_IMG_CANCELLED), "cancelled");
    ck_assert_ptr_nonnull(mf_img_status_code((mf_img_status)99));
    mf_image img = {0, 0, NULL};
    mf_image_free(&img);
    mf_image_free(NULL);
}
END_TEST

/* Formats we know and do not decode are named, in the error text too. */
START_TEST(test_other_formats)
{
    static const struct {
        const char *file, *name;
    } cases[] = {{"other.bmp", "BMP"}, {"other.tiff", "TIFF"}, {"other.heic", "HEIC"}, {"other.avif", "AVIF"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *b = load(cases[i].file, &len);
        ck_assert_str_eq(mf_image_other_format(b, len), cases[i].name);
        mf_image img;
        char err[256];
        ck_assert_int_eq(mf_image_decode(b, len, 0, &img, err, sizeof err), MF_IMG_OTHER_FORMAT);
        ck_assert_msg(strncmp(err, cases[i].name, strlen(cases[i].name)) == 0, "%s", err);
        free(b);
    }
    static const uint8_t jxl[] = {0xff, 0x0a, 1, 2}, j2k[] = {0xff, 0x4f, 0xff, 0x51, 0};
    static const uint8_t svg[] = "  <svg xmlns='http://www.w3.org/2000/svg'/>", pdf[] = "%PDF-1.7";
    ck_assert_str_eq(mf_image_other_format(jxl, sizeof jxl), "JPEG XL");
    ck_assert_str_eq(mf_image_other_format(j2k, sizeof j2k), "JPEG 2000");
    ck_assert_str_eq(mf_image_other_format(svg, sizeof svg), "SVG");
    ck_assert_str_eq(mf_image_other_format(pdf, sizeof pdf), "PDF");
    static const uint8_t mp4[] = "\0\0\0\x18" "ftypisom\0\0\0\0isomavc1";
    ck_assert_ptr_null(mf_image_other_format(mp4, sizeof mp4 - 1));
    ck_assert_ptr_null(mf_image_other_format((const uint8_t *)"BM", 2));
    ck_assert_ptr_null(mf_image_other_format(NULL, 10));
}
END_TEST

/* The header's size, without decoding, for every format. */
START_TEST(test_probe)
{
    static const struct {
        const char *file;
        mf_img_format f;
        int w, h;
    } cases[] = {{"base.jpg", MF_IMG_FMT_JPEG, 37, 23},        {"base_progressive.jpg", MF_IMG_FMT_JPEG, 37, 23},
                 {"exif_6.jpg", MF_IMG_FMT_JPEG, 37, 23},      {"png_rgb.png", MF_IMG_FMT_PNG, 37, 23},
                 {"webp_lossy.webp", MF_IMG_FMT_WEBP, 37, 23}, {"webp_lossless.webp", MF_IMG_FMT_WEBP, 37, 23},
                 {"gif_offset_trns.gif", MF_IMG_FMT_GIF, 30, 20}, {"huge.jpg", MF_IMG_FMT_JPEG, 60000, 60000},
                 {"random.bin", MF_IMG_FMT_UNKNOWN, 0, 0},     {"random_jpeg.jpg", MF_IMG_FMT_JPEG, 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *b = load(cases[i].file, &len);
        mf_image_info info;
        mf_image_probe(b, len, &info);
        ck_assert_msg(info.format == cases[i].f && info.w == cases[i].w && info.h == cases[i].h, "%s: %d %dx%d",
                      cases[i].file, info.format, info.w, info.h);
        for (size_t cut = 0; cut < len && cut < 400; cut += 7) { /* cut headers: no read past them */
            uint8_t *t = malloc(cut ? cut : 1);
            memcpy(t, b, cut);
            mf_image_probe(t, cut, &info);
            free(t);
        }
        free(b);
    }
}
END_TEST

/* min_side: libjpeg's DCT scaling, the smallest M/8 covering it; at 1/2,
 * 1/4 and 1/8 the pixels are PIL's draft() ones, EXIF orientation included. */
START_TEST(test_jpeg_scaled)
{
    static const struct {
        const char *file, *ref;
        int min_side;
    } cases[] = {{"photo.jpg", "photo.draft8", 35},  {"photo.jpg", "photo.draft4", 70},
                 {"photo.jpg", "photo.draft2", 140}, {"photo.jpg", "photo.draft4", 36},
                 {"exif_6.jpg", "exif_6.draft8", 2}, {"exif_6.jpg", "exif_6.draft2", 12}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len, tl;
        uint8_t *b = load(cases[i].file, &len);
        mf_image_limits lim = {.min_side = cases[i].min_side};
        mf_image img;
        char err[256], name[64];
        ck_assert_int_eq(mf_image_decode_limited(b, len, &lim, &img, err, sizeof err), MF_IMG_OK);
        snprintf(name, sizeof name, "%s.txt", cases[i].ref);
        uint8_t *t = load(name, &tl);
        int w = 0, h = 0;
        char s[64] = {0};
        memcpy(s, t, tl < 63 ? tl : 63);
        ck_assert_int_eq(sscanf(s, "%d %d", &w, &h), 2);
        free(t);
        ck_assert_msg(img.w == w && img.h == h, "%s min_side %d: %dx%d, PIL %dx%d", cases[i].file,
                      cases[i].min_side, img.w, img.h, w, h);
        ck_assert_int_ge(img.w < img.h ? img.w : img.h, cases[i].min_side);
        snprintf(name, sizeof name, "%s.fnv1a64", cases[i].ref);
        t = load(name, &tl);
        memset(s, 0, sizeof s);
        memcpy(s, t, tl < 17 ? tl : 16);
        free(t);
        ck_assert_msg(fnv1a64(img.rgb, (size_t)w * h * 3) == strtoull(s, NULL, 16), "%s min_side %d: pixels differ "
                      "from PIL's draft", cases[i].file, cases[i].min_side);
        mf_image_free(&img);
        free(b);
    }
    /* an image smaller than min_side: full size; PNG ignores min_side */
    size_t len;
    uint8_t *b = load("base.jpg", &len);
    mf_image_limits lim = {.min_side = 1000};
    mf_image img;
    ck_assert_int_eq(mf_image_decode_limited(b, len, &lim, &img, NULL, 0), MF_IMG_OK);
    ck_assert(img.w == 37 && img.h == 23);
    mf_image_free(&img);
    free(b);
    b = load("png_rgb.png", &len);
    lim.min_side = 2;
    ck_assert_int_eq(mf_image_decode_limited(b, len, &lim, &img, NULL, 0), MF_IMG_OK);
    ck_assert(img.w == 37 && img.h == 23);
    mf_image_free(&img);
    free(b);
}
END_TEST

/* A cancel flag already set stops every decoder at its first check. */
START_TEST(test_cancelled)
{
    static const char *const names[] = {"photo.jpg", "png_rgb.png", "webp_lossy.webp", "gif_local.gif"};
    atomic_int flag = 1;
    for (size_t i = 0; i < 4; i++) {
        size_t len;
        uint8_t *b = load(names[i], &len);
        mf_image_limits lim = {.cancel = &flag};
        mf_image img;
        char err[256];
        ck_assert_msg(mf_image_decode_limited(b, len, &lim, &img, err, sizeof err) == MF_IMG_CANCELLED, "%s: %s",
                      names[i], err);
        ck_assert_ptr_null(img.rgb);
        free(b);
    }
}
END_TEST

/* ---- pixel limit -------------------------------------------------------- */

START_TEST(test_limit_exact)
{
    static const char *const names[] = {"base.jpg", "png_rgb.png", "exif_6.jpg"};
    for (size_t i = 0; i < 3; i++) {
        int w, h;
        expected_size(names[i], &w, &h);
        mf_image img;
        ck_assert_int_eq(decode_file(names[i], (size_t)w * h, &img, NULL, 0), MF_IMG_OK);
        mf_image_free(&img);
        char err[256];
        ck_assert_int_eq(decode_file(names[i], (size_t)w * h - 1, &img, err, sizeof err),
                         MF_IMG_TOO_LARGE);
        ck_assert_ptr_null(img.rgb);
        ck_assert_msg(strstr(err, "exceeds") != NULL, "%s", err);
        /* a limit below one dimension trips libpng's own user limits first */
        ck_assert_int_eq(decode_file(names[i], (size_t)(w < h ? w : h) - 1, &img, NULL, 0),
                         MF_IMG_TOO_LARGE);
    }
}
END_TEST

/* 60000x60000 (10.8 GB of RGB) is refused from the header.  Where the
 * address space can be capped (not under ASan/TSan or valgrind, which need
 * large mappings of their own), cap it at +512 MB: a decoder that allocated
 * first would then fail with out_of_memory instead. */
START_TEST(test_limit_header)
{
    int capped = 0;
#ifndef TU_BIG_SHADOW
    const char *pre = getenv("LD_PRELOAD");
    if (!(pre && strstr(pre, "vgpreload"))) {
        struct rlimit rl;
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (f && fscanf(f, "%lu", &pages) == 1 && getrlimit(RLIMIT_AS, &rl) == 0) {
            rl.rlim_cur = (rlim_t)pages * 4096 + ((rlim_t)512 << 20);
            capped = setrlimit(RLIMIT_AS, &rl) == 0;
        }
        if (f)
            fclose(f);
    }
#endif
    static const char *const names[] = {"huge.jpg", "huge.png", "huge.gif"};
    for (size_t i = 0; i < 3; i++) {
        for (size_t lim = 0; lim < 2; lim++) {
            size_t max_pixels = lim ? (size_t)60000 * 60000 - 1 : 0;
            clock_t t0 = clock();
            mf_image img;
            char err[256];
            mf_img_status st = decode_file(names[i], max_pixels, &img, err, sizeof err);
            ck_assert_msg(st == MF_IMG_TOO_LARGE, "%s (max %zu): %s %s%s", names[i], max_pixels,
                          mf_img_status_code(st), err, capped ? " [address space capped]" : "");
            ck_assert_ptr_null(img.rgb);
            ck_assert_msg((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0, "%s: slow refusal",
                          names[i]);
        }
    }
}
END_TEST

/* A 57-byte PNG whose eXIf chunk claims 1.7 GB: libpng would allocate the
 * declared size before reading (and then fail on the missing data); the
 * decoder must refuse it before libpng sees it. */
START_TEST(test_png_oversized_chunk)
{
    size_t len;
    uint8_t *src = load("png_rgb.png", &len);
    static const uint8_t exif_hdr[8] = {0x67, 0x00, 0x00, 0x1a, 'e', 'X', 'I', 'f'};
    size_t at = 8 + 25; /* after the signature and IHDR */
    uint8_t *png = malloc(len + sizeof exif_hdr + 16);
    memcpy(png, src, at);
    memcpy(png + at, exif_hdr, sizeof exif_hdr);
    memset(png + at + sizeof exif_hdr, 'M', 16);
    mf_image img;
    char err[256];
    ck_assert_int_eq(mf_image_decode(png, at + sizeof exif_hdr + 16, 0, &img, err, sizeof err),
                     MF_IMG_CORRUPT);
    ck_assert_ptr_null(img.rgb);
    ck_assert_msg(strstr(err, "longer than the data") != NULL, "%s", err);
    free(png);
    free(src);
}
END_TEST

/* ---- EXIF parsing on crafted segments ----------------------------------- */

/* base.jpg with APP1 segments (each given as a payload) right after SOI. */
static uint8_t *with_app1(const uint8_t *jpg, size_t len, const uint8_t *const *payload,
                          const size_t *plen, int n, size_t *outlen)
{
    size_t total = len;
    for (int i = 0; i < n; i++)
        total += 4 + plen[i];
    uint8_t *out = malloc(total), *p = out;
    ck_assert_ptr_nonnull(out);
    memcpy(p, jpg, 2);
    p += 2;
    for (int i = 0; i < n; i++) {
        size_t seg = plen[i] + 2;
        *p++ = 0xff;
        *p++ = 0xe1;
        *p++ = (uint8_t)(seg >> 8);
        *p++ = (uint8_t)seg;
        memcpy(p, payload[i], plen[i]);
        p += plen[i];
    }
    memcpy(p, jpg + 2, len - 2);
    *outlen = total;
    return out;
}

/* "Exif\0\0" + TIFF with one IFD0 entry (tag, type, count, value). */
static size_t exif_payload(uint8_t *b, int le, unsigned tag, unsigned type, unsigned count,
                           unsigned value)
{
    memcpy(b, "Exif\0\0", 6);
    uint8_t *t = b + 6;
#define P16(p, v) (le ? ((p)[0] = (uint8_t)(v), (p)[1] = (uint8_t)((v) >> 8)) \
                      : ((p)[1] = (uint8_t)(v), (p)[0] = (uint8_t)((v) >> 8)))
#define P32(p, v) (le ? (P16(p, (v) & 0xffff), P16((p) + 2, (v) >> 16)) \
                      : (P16((p) + 2, (v) & 0xffff), P16(p, (v) >> 16)))
    t[0] = t[1] = le ? 'I' : 'M';
    P16(t + 2, 42u);
    P32(t + 4, 8u);
    P16(t + 8, 1u);
    P16(t + 10, tag);
    P16(t + 12, type);
    P32(t + 14, count);
    memset(t + 18, 0, 4);
    if (type == 1 || type == 6)
        t[18] = (uint8_t)value;
    else if (type == 3 || type == 8)
        P16(t + 18, value);
    else
        P32(t + 18, value);
    memset(t + 22, 0, 4); /* no next IFD */
#undef P16
#undef P32
    return 6 + 26;
}

static void check_oriented(const uint8_t *jpg, size_t len, int orient, const char *what)
{
    char rgb[32];
    snprintf(rgb, sizeof rgb, "exif_%d.rgb", orient);
    size_t rgblen;
    uint8_t *want = load(rgb, &rgblen);
    mf_image img;
    char err[256];
    mf_img_status st = mf_image_decode(jpg, len, 0, &img, err, sizeof err);
    ck_assert_msg(st == MF_IMG_OK, "%s: %s", what, err);
    check_pixels(what, &img, want, rgblen);
    ck_assert_int_eq(img.w, orient >= 5 ? 23 : 37);
    mf_image_free(&img);
    free(want);
}

START_TEST(test_exif_crafted)
{
    size_t len, n;
    uint8_t *base = load("base.jpg", &len);
    uint8_t p1[64], p2[64];
    const uint8_t *pl[2] = {p1, p2};
    size_t pn[2];

    for (int le = 0; le < 2; le++) {
        for (int o = 1; o <= 8; o++) {
            pn[0] = exif_payload(p1, le, 0x0112, 3, 1, (unsigned)o);
            uint8_t *j = with_app1(base, len, pl, pn, 1, &n);
            check_oriented(j, n, o, le ? "II SHORT" : "MM SHORT");
            free(j);
        }
        pn[0] = exif_payload(p1, le, 0x0112, 4, 1, 6); /* LONG, as PIL accepts */
        uint8_t *j = with_app1(base, len, pl, pn, 1, &n);
        check_oriented(j, n, 6, "LONG");
        free(j);
    }
    uint8_t *j0;
    /* as PIL (checked against Pillow 9.4): the first of two inline SHORTs;
     * the signed integer types */
    static const unsigned taken[][3] = {{3, 2, 6}, {8, 1, 3}, {9, 1, 5}, {6, 1, 7}};
    for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
        pn[0] = exif_payload(p1, (int)(i % 2), 0x0112, taken[i][0], taken[i][1], taken[i][2]);
        j0 = with_app1(base, len, pl, pn, 1, &n);
        check_oriented(j0, n, (int)taken[i][2], "integer types");
        free(j0);
    }
    /* ignored: out of range, BYTE/ASCII/RATIONAL, no values, other tag */
    static const unsigned ignored[][4] = {
        {0x0112, 3, 1, 9}, {0x0112, 3, 1, 0}, {0x0112, 2, 1, 6}, {0x0112, 3, 0, 6}, {0x0113, 3, 1, 6},
        {0x0112, 5, 1, 6}, {0x0112, 1, 1, 2},
    };
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        pn[0] = exif_payload(p1, 1, ignored[i][0], ignored[i][1], ignored[i][2], ignored[i][3]);
        uint8_t *j = with_app1(base, len, pl, pn, 1, &n);
        check_oriented(j, n, 1, "ignored entry");
        free(j);
    }
    /* the first Exif segment wins */
    pn[0] = exif_payload(p1, 1, 0x0112, 3, 1, 8);
    pn[1] = exif_payload(p2, 0, 0x0112, 3, 1, 6);
    uint8_t *j = with_app1(base, len, pl, pn, 2, &n);
    check_oriented(j, n, 8, "two segments");
    free(j);
    /* truncated and malformed TIFF structures.  As in PIL, entries read
     * before the data runs out still count: the orientation entry ends at
     * byte 28 of the 32-byte payload (the next-IFD pointer follows). */
    uint8_t full[64];
    size_t fl = exif_payload(full, 1, 0x0112, 3, 1, 6);
    for (size_t cut = 0; cut < fl; cut++) {
        memcpy(p1, full, cut);
        pn[0] = cut;
        j = with_app1(base, len, pl, pn, 1, &n);
        check_oriented(j, n, cut >= 28 ? 6 : 1, "truncated exif");
        free(j);
    }
    static const struct { size_t at; uint8_t v; int orient; } breaks[] = {
        {6 + 2, 43, 1},   /* TIFF magic */
        {6 + 0, 'X', 1},  /* byte order */
        {6 + 4, 200, 1},  /* IFD0 offset past the end */
        {6 + 7, 0x80, 1}, /* IFD0 offset far past the end */
        {6 + 8, 9, 6},    /* 9 entries claimed, 1 present */
        {6 + 9, 0xff, 6}, /* 65281 entries claimed */
        {0, 'e', 1},      /* not "Exif" */
    };
    for (size_t i = 0; i < sizeof breaks / sizeof breaks[0]; i++) {
        memcpy(p1, full, fl);
        p1[breaks[i].at] = breaks[i].v;
        pn[0] = fl;
        j = with_app1(base, len, pl, pn, 1, &n);
        check_oriented(j, n, breaks[i].orient, "malformed exif");
        free(j);
    }
    free(base);
}
END_TEST

/* ---- robustness ---------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int decode_any(const uint8_t *buf, size_t len)
{
    mf_image img;
    char err[128];
    /* a small limit keeps headers mutated into big sizes cheap */
    mf_img_status st = mf_image_decode(buf, len, (size_t)1 << 20, &img, err, sizeof err);
    ck_assert_int_ge((int)st, MF_IMG_OK);
    ck_assert_int_le((int)st, MF_IMG_NOMEM);
    if (st == MF_IMG_OK) {
        ck_assert(img.w > 0 && img.h > 0 && img.rgb != NULL);
        ck_assert_uint_le((size_t)img.w * img.h, (size_t)1 << 20);
        volatile uint8_t sink = img.rgb[(size_t)img.w * img.h * 3 - 1];
        (void)sink;
    } else {
        ck_assert_ptr_null(img.rgb);
    }
    mf_image_free(&img);
    return st == MF_IMG_OK;
}

static const char *const fuzz_seeds[] = {
    "base.jpg", "base_progressive.jpg", "base_cmyk.jpg", "base_gray.jpg", "exif_6.jpg",
    "png_rgb.png", "png_interlaced.png", "png_palette_trns.png", "png_gray16.png",
    "png_la16.png", "png_interlaced_pal4.png", "png_exif6.png",
    "webp_lossy.webp", "webp_alpha_lossless.webp", "webp_exif6.webp", "gif_local.gif", "gif_interlaced.gif",
    "gif_offset_trns.gif",
};
#define N_FUZZ ((int)(sizeof fuzz_seeds / sizeof fuzz_seeds[0]))

/* Every input is decoded from an exact-size heap copy, so ASan/valgrind
 * catch any read past the end. */
START_TEST(test_fuzz_mutations)
{
    size_t len;
    uint8_t *src = load(fuzz_seeds[_i], &len);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    rng_state ^= (uint64_t)(_i + 1) * 0x2545f4914f6cdd1dull;
    int decoded = 0, runs = 0;
    for (size_t cut = 0; cut < len; cut += 97, runs++) {
        uint8_t *t = malloc(cut ? cut : 1);
        memcpy(t, src, cut);
        decoded += decode_any(t, cut);
        free(t);
    }
    for (int it = 0; it < 250; it++, runs++) {
        memcpy(buf, src, len);
        int flips = 1 + (int)(rnd() % 8);
        for (int f = 0; f < flips; f++) {
            size_t at = rnd() % len;
            if (rnd() % 4 == 0)
                at = rnd() % (len < 64 ? len : 64); /* headers are where it hurts */
            buf[at] = (rnd() % 3 == 0) ? (uint8_t)(buf[at] ^ (1u << (rnd() % 8))) : (uint8_t)rnd();
        }
        size_t n = rnd() % 5 == 0 ? (size_t)(rnd() % len) + 1 : len;
        uint8_t *t = malloc(n);
        memcpy(t, buf, n);
        decoded += decode_any(t, n);
        free(t);
    }
    /* the untouched file still decodes: mutations did not leak state */
    ck_assert(decode_any(src, len));
    ck_assert_int_ge(runs, 250);
    (void)decoded;
    free(buf);
    free(src);
}
END_TEST

START_TEST(test_fuzz_random)
{
    static const uint8_t jpg[] = {0xff, 0xd8, 0xff};
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    for (int it = 0; it < 600; it++) {
        size_t n = 1 + rnd() % 600;
        uint8_t *b = malloc(n + 8);
        for (size_t i = 0; i < n + 8; i++)
            b[i] = (uint8_t)rnd();
        if (it % 3 == 0)
            memcpy(b, jpg, 3);
        else if (it % 3 == 1)
            memcpy(b, png, 8);
        decode_any(b, n + 8);
        free(b);
    }
}
END_TEST

static Suite *image_suite(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("fixtures");
    tcase_add_loop_test(tc, test_good_fixture, 0, N_GOOD);
    tcase_add_test(tc, test_photo_hash);
    tcase_add_test(tc, test_jpeg_transcoded);
    tcase_add_loop_test(tc, test_bad_fixture, 0, N_BAD);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_sniff);
    tcase_add_test(tc, test_status_codes);
    tcase_add_test(tc, test_other_formats);
    tcase_add_test(tc, test_probe);
    tcase_add_test(tc, test_jpeg_scaled);
    tcase_add_test(tc, test_cancelled);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, test_limit_exact);
    tcase_add_test(tc, test_limit_header);
    tcase_add_test(tc, test_png_oversized_chunk);
    suite_add_tcase(s, tc);

    tc = tcase_create("exif");
    tcase_add_test(tc, test_exif_crafted);
    suite_add_tcase(s, tc);

    tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_fuzz_mutations, 0, N_FUZZ);
    tcase_add_test(tc, test_fuzz_random);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(image_suite());
}
