/* test_multipart.c -- multipart/form-data parser (server/multipart.h).
 * Bodies are copied into exact-size heap buffers so that, under ASan, any
 * read past the end is caught. */
#include "multipart.h"
#include "testutil.h"

#include <string.h>

#define CT "multipart/form-data; boundary=XyZ"

typedef struct parsed {
    mf_multipart_status st;
    int n;
    mf_multipart_part parts[8];
    uint8_t *copy; /* exact-size copy the parts point into */
} parsed;

static parsed parse_n(const char *ct, const void *body, size_t len, int max_parts)
{
    parsed p;
    memset(&p, 0, sizeof p);
    p.copy = malloc(len ? len : 1);
    memcpy(p.copy, body, len);
    p.st = mf_multipart_parse(ct, p.copy, len, "image", p.parts, max_parts, &p.n);
    return p;
}

static parsed parse(const char *ct, const char *body) { return parse_n(ct, body, strlen(body), 8); }

static void check_part(const parsed *p, int i, const char *data)
{
    ck_assert_int_lt(i, p->n);
    ck_assert_uint_eq(p->parts[i].len, strlen(data));
    ck_assert(memcmp(p->parts[i].data, data, strlen(data)) == 0);
    ck_assert(p->parts[i].data >= p->copy);
}

START_TEST(boundary_forms)
{
    char b[MF_MULTIPART_MAX_BOUNDARY + 1];
    ck_assert_int_eq(mf_multipart_boundary(CT, b, sizeof b), MF_MULTIPART_OK);
    ck_assert_str_eq(b, "XyZ");
    ck_assert_int_eq(mf_multipart_boundary("multipart/form-data; charset=utf-8; BOUNDARY=\"a b:c\"",
                                           b, sizeof b),
                     MF_MULTIPART_OK);
    ck_assert_str_eq(b, "a b:c");
    ck_assert_int_eq(mf_multipart_boundary("multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxk",
                                           b, sizeof b),
                     MF_MULTIPART_OK);
    ck_assert_str_eq(b, "----WebKitFormBoundary7MA4YWxk");
    ck_assert_int_eq(mf_multipart_boundary("multipart/form-data; boundary=\"q\\\"x\"", b, sizeof b),
                     MF_MULTIPART_NO_BOUNDARY); /* '"' is not a boundary character */
    const char *bad[] = {
        "multipart/form-data",
        "multipart/form-data;",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=\"\"",
        "multipart/form-data; boundary=\"abc",
        "multipart/form-data; boundary=\"ends with space \"",
        "multipart/form-data; boundary=a\x01" "b",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; =x",
        "multipart/form-data; boundary=12345678901234567890123456789012345678901234567890"
        "123456789012345678901", /* 71 characters */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(mf_multipart_boundary(bad[i], b, sizeof b) == MF_MULTIPART_NO_BOUNDARY, "%s",
                      bad[i]);
    ck_assert_int_eq(mf_multipart_boundary(NULL, b, sizeof b), MF_MULTIPART_NO_BOUNDARY);
}
END_TEST

START_TEST(single_part)
{
    parsed p = parse(CT, "--XyZ\r\n"
                         "Content-Disposition: form-data; name=\"image\"; filename=\"cat.jpg\"\r\n"
                         "Content-Type: image/jpeg\r\n"
                         "\r\n"
                         "JPEGDATA\r\n"
                         "--XyZ--\r\n");
    ck_assert_int_eq(p.st, MF_MULTIPART_OK);
    ck_assert_int_eq(p.n, 1);
    check_part(&p, 0, "JPEGDATA");
    ck_assert_str_eq(p.parts[0].name, "image");
    ck_assert_str_eq(p.parts[0].filename, "cat.jpg");
    ck_assert_str_eq(p.parts[0].content_type, "image/jpeg");
    free(p.copy);
}
END_TEST

START_TEST(several_parts_preamble_epilogue)
{
    parsed p = parse("multipart/form-data; boundary=\"b d\"",
                     "This is the preamble.\r\nIgnore --b d without CRLF before it.\r\n"
                     "--b d  \t\r\n" /* transport padding */
                     "content-disposition: FORM-DATA; NAME=image\r\n\r\n"
                     "first\r\nwith CRLF and --b d inside a line\r\n"
                     "--b d\r\n"
                     "Content-Disposition: form-data; name=\"note\"\r\n\r\n"
                     "not an image\r\n"
                     "--b d\r\n"
                     "Content-Disposition: form-data; filename=\"x\\\"y.png\"; name=\"image\"\r\n"
                     "X-Other: whatever\r\n\r\n"
                     "\r\n"
                     "--b d\r\n"
                     "Content-Disposition: form-data; name=\"image\"\r\n\r\n"
                     "third\r\n"
                     "--b d--epilogue, ignored\r\n--b d\r\n");
    ck_assert_int_eq(p.st, MF_MULTIPART_OK);
    ck_assert_int_eq(p.n, 3);
    check_part(&p, 0, "first\r\nwith CRLF and --b d inside a line");
    check_part(&p, 1, "");
    ck_assert_str_eq(p.parts[1].filename, "x\"y.png");
    check_part(&p, 2, "third");
    free(p.copy);
}
END_TEST

START_TEST(binary_content)
{
    /* NULs and CR/LF bytes inside content are data */
    const char body[] = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
                        "\x00\x01\r\n\r\x00--XyY\r\n--XyZ--";
    parsed p = parse_n(CT, body, sizeof body - 1, 8);
    ck_assert_int_eq(p.st, MF_MULTIPART_OK);
    ck_assert_int_eq(p.n, 1);
    ck_assert_uint_eq(p.parts[0].len, 11);
    ck_assert(memcmp(p.parts[0].data, "\x00\x01\r\n\r\x00--XyY", 11) == 0);
    free(p.copy);
}
END_TEST

START_TEST(no_image_field)
{
    parsed p = parse(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--XyZ--");
    ck_assert_int_eq(p.st, MF_MULTIPART_OK);
    ck_assert_int_eq(p.n, 0);
    free(p.copy);
}
END_TEST

static void expect(const char *ct, const char *body, mf_multipart_status want)
{
    parsed p = parse(ct, body);
    ck_assert_msg(p.st == want, "got %s, want %s for body: %s", mf_multipart_status_code(p.st),
                  mf_multipart_status_code(want), body);
    free(p.copy);
}

#define DISP "Content-Disposition: form-data; name=\"image\"\r\n"

START_TEST(malformed_bodies)
{
    expect("multipart/form-data", "--XyZ\r\n" DISP "\r\nx\r\n--XyZ--", MF_MULTIPART_NO_BOUNDARY);
    expect(CT, "", MF_MULTIPART_NO_DELIMITER);
    /* no body at all: http.c passes NULL (found by tests/fuzz/fuzz_http.c:
     * NULL + 0 is undefined behaviour, which UBSan reports) */
    mf_multipart_part part;
    int n = -1;
    ck_assert_int_eq(mf_multipart_parse(CT, NULL, 0, "image", &part, 1, &n), MF_MULTIPART_NO_DELIMITER);
    ck_assert_int_eq(n, 0);
    expect(CT, "just some bytes", MF_MULTIPART_NO_DELIMITER);
    expect(CT, "--XyZ\r\n" DISP "\r\nno closing delimiter", MF_MULTIPART_NO_CLOSE);
    expect(CT, "--XyZ\r\n" DISP "\r\nx\r\n--XyZ", MF_MULTIPART_NO_CLOSE);
    expect(CT, "--XyZ\r\n" DISP "\r\nx\r\n--XyZ-", MF_MULTIPART_NO_CLOSE);
    expect(CT, "--XyZ", MF_MULTIPART_NO_CLOSE);
    expect(CT, "--XyZ\r\n", MF_MULTIPART_NO_CLOSE);
    expect(CT, "--XyZ\r\n" DISP, MF_MULTIPART_NO_CLOSE);
    expect(CT, "--XyZgarbage\r\n" DISP "\r\nx\r\n--XyZ--", MF_MULTIPART_BAD_DELIMITER);
    expect(CT, "--XyZ\r\n" DISP "\r\nx\r\n--XyZ2\r\n" DISP "\r\ny\r\n--XyZ--",
           MF_MULTIPART_BAD_DELIMITER);
    expect(CT, "--XyZ\n" DISP "\r\nx\r\n--XyZ--", MF_MULTIPART_BAD_DELIMITER); /* bare LF */
    expect(CT, "--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--", MF_MULTIPART_BAD_HEADER);
    expect(CT, "--XyZ\r\n: empty name\r\n\r\nx\r\n--XyZ--", MF_MULTIPART_BAD_HEADER);
    expect(CT, "--XyZ\r\nBad Name: v\r\n\r\nx\r\n--XyZ--", MF_MULTIPART_BAD_HEADER);
    expect(CT, "--XyZ\r\n" DISP " folded: line\r\n\r\nx\r\n--XyZ--", MF_MULTIPART_BAD_HEADER);
    expect(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"unterminated\r\n\r\nx\r\n--XyZ--",
           MF_MULTIPART_BAD_HEADER);
    expect(CT, "--XyZ\r\nContent-Disposition: form-data; name\r\n\r\nx\r\n--XyZ--",
           MF_MULTIPART_BAD_HEADER);
    expect(CT, "--XyZ\r\nContent-Type: image/png\r\n\r\nx\r\n--XyZ--", MF_MULTIPART_NO_DISPOSITION);
    expect(CT, "--XyZ\r\n\r\nx\r\n--XyZ--", MF_MULTIPART_NO_DISPOSITION);
    expect(CT, "--XyZ\r\nContent-Disposition: attachment; name=\"image\"\r\n\r\nx\r\n--XyZ--",
           MF_MULTIPART_NO_DISPOSITION);
    expect(CT, "--XyZ\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--XyZ--",
           MF_MULTIPART_NO_DISPOSITION);
}
END_TEST

START_TEST(header_too_long)
{
    size_t n = MF_MULTIPART_MAX_HEADER + 100;
    char *body = malloc(n + 200);
    int k = sprintf(body, "--XyZ\r\n" DISP "X-Long: ");
    memset(body + k, 'a', n);
    strcpy(body + k + n, "\r\n\r\nx\r\n--XyZ--");
    expect(CT, body, MF_MULTIPART_HEADER_TOO_LONG);
    /* an unterminated header block longer than the limit is too long, not truncated */
    body[k + n] = '\0';
    expect(CT, body, MF_MULTIPART_HEADER_TOO_LONG);
    free(body);
}
END_TEST

START_TEST(too_many_parts)
{
    char body[4096];
    size_t k = 0;
    for (int i = 0; i < 5; i++) k += (size_t)sprintf(body + k, "--XyZ\r\n" DISP "\r\n%d\r\n", i);
    strcpy(body + k, "--XyZ--");
    parsed p = parse_n(CT, body, strlen(body), 5);
    ck_assert_int_eq(p.st, MF_MULTIPART_OK);
    ck_assert_int_eq(p.n, 5);
    check_part(&p, 4, "4");
    free(p.copy);
    p = parse_n(CT, body, strlen(body), 4);
    ck_assert_int_eq(p.st, MF_MULTIPART_TOO_MANY_PARTS);
    free(p.copy);
}
END_TEST

START_TEST(truncated_at_every_offset)
{
    const char *body = "preamble\r\n--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                       "Content-Type: image/png\r\n\r\n"
                       "\x89PNG\r\n\x1a\n....\r\n"
                       "--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"image\"\r\n\r\n"
                       "second\r\n"
                       "--XyZ--\r\n";
    size_t len = strlen(body);
    size_t closed = (size_t)(strstr(body, "--XyZ--") - body) + 7;
    for (size_t cut = 0; cut <= len; cut++) {
        parsed p = parse_n(CT, body, cut, 8);
        if (cut < closed)
            ck_assert_msg(p.st != MF_MULTIPART_OK, "prefix of %zu bytes accepted", cut);
        else
            ck_assert_int_eq(p.n, 2);
        for (int i = 0; i < p.n; i++)
            ck_assert(p.parts[i].data + p.parts[i].len <= p.copy + cut);
        free(p.copy);
    }
}
END_TEST

START_TEST(random_mutations_do_not_crash)
{
    const char *body = "--XyZ\r\n" DISP "Content-Type: image/jpeg\r\n\r\nDATA\r\n"
                       "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"\"\r\n\r\n"
                       "MORE\r\n--XyZ--\r\n";
    size_t len = strlen(body);
    char *buf = malloc(len);
    unsigned seed = 99;
    const char alphabet[] = "\r\n-XyZ\";=: \x00\xff";
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, body, len);
        int flips = 1 + round % 4;
        for (int f = 0; f < flips; f++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            buf[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        seed = seed * 1103515245u + 12345u;
        size_t cut = len - (seed >> 8) % 8;
        parsed p = parse_n(CT, buf, cut, 8);
        for (int i = 0; i < p.n; i++) ck_assert(p.parts[i].data + p.parts[i].len <= p.copy + cut);
        free(p.copy);
    }
    free(buf);
}
END_TEST

START_TEST(status_codes_are_distinct)
{
    for (int i = 0; i <= MF_MULTIPART_TOO_MANY_PARTS; i++)
        for (int j = i + 1; j <= MF_MULTIPART_TOO_MANY_PARTS; j++)
            ck_assert_str_ne(mf_multipart_status_code(i), mf_multipart_status_code(j));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("multipart");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, boundary_forms);
    tcase_add_test(tc, single_part);
    tcase_add_test(tc, several_parts_preamble_epilogue);
    tcase_add_test(tc, binary_content);
    tcase_add_test(tc, no_image_field);
    tcase_add_test(tc, malformed_bodies);
    tcase_add_test(tc, header_too_long);
    tcase_add_test(tc, too_many_parts);
    tcase_add_test(tc, truncated_at_every_offset);
    tcase_add_test(tc, random_mutations_do_not_crash);
    tcase_add_test(tc, status_codes_are_distinct);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
