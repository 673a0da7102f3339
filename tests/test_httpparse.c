/* test_httpparse.c -- the strict HTTP parser (server/httpparse.h): good heads
 * whole and byte by byte, every refused shape (request smuggling among
 * them), chunked bodies fed in every split, percent-decoding.  Inputs are
 * copied into an exactly sized heap buffer, so ASan catches any read past
 * the end (picohttpparser's guard-page idea). */
#include "httpparse.h"
#include "testutil.h"

#include <string.h>

/* Parse text from a buffer exactly its length. */
static mf_hp_status parse(const char *text, mf_hp_request *r)
{
    size_t n = strlen(text);
    char *b = malloc(n ? n : 1);
    memcpy(b, text, n);
    mf_hp_status st = mf_hp_parse_head(b, n, 32768, r);
    /* pointers into b are only valid while it lives: check what tests use now */
    static char method[32], path[256], query[256];
    snprintf(method, sizeof method, "%.*s", (int)r->method.n, r->method.p ? r->method.p : "");
    snprintf(path, sizeof path, "%.*s", (int)r->path.n, r->path.p ? r->path.p : "");
    snprintf(query, sizeof query, "%.*s", (int)r->query.n, r->query.p ? r->query.p : "");
    r->method = (mf_hp_str){method, strlen(method)};
    r->path = (mf_hp_str){path, strlen(path)};
    r->query = (mf_hp_str){query, strlen(query)};
    r->n_headers = 0; /* their pointers die with b */
    free(b);
    return st;
}

START_TEST(good_heads)
{
    mf_hp_request r;
    ck_assert_int_eq(parse("POST /v1/predict?top_k=3 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nbody...", &r),
                     MF_HP_OK);
    ck_assert_str_eq(r.method.p, "POST");
    ck_assert_str_eq(r.path.p, "/v1/predict");
    ck_assert_str_eq(r.query.p, "top_k=3");
    ck_assert_int_eq(r.minor, 1);
    ck_assert(r.has_length && r.content_length == 12 && !r.chunked && r.keep_alive);
    ck_assert_uint_eq(r.head_len, strlen("POST /v1/predict?top_k=3 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"));

    ck_assert_int_eq(parse("GET / HTTP/1.0\n\n", &r), MF_HP_OK); /* bare LF, no Host in 1.0 */
    ck_assert(!r.keep_alive && r.minor == 0);
    ck_assert_int_eq(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r), MF_HP_OK);
    ck_assert(r.keep_alive);
    ck_assert_int_eq(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", &r), MF_HP_OK);
    ck_assert(!r.keep_alive);
    ck_assert_int_eq(parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &r), MF_HP_OK); /* leading empty lines */
    ck_assert_int_eq(parse("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n", &r),
                     MF_HP_OK);
    ck_assert(r.chunked && !r.has_length && r.expect_continue);
    ck_assert_int_eq(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv \t\r\n\r\n", &r), MF_HP_OK);
    ck_assert_int_eq(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Bin: caf\xc3\xa9\r\n\r\n", &r), MF_HP_OK); /* obs-text */
}
END_TEST

START_TEST(headers_kept_in_place)
{
    static const char t[] = "GET /a HTTP/1.1\r\nHost:  x.y  \r\nX-A: 1\r\nx-a: 2\r\n\r\n";
    mf_hp_request r;
    ck_assert_int_eq(mf_hp_parse_head(t, sizeof t - 1, 32768, &r), MF_HP_OK);
    ck_assert_int_eq(r.n_headers, 3);
    const mf_hp_str *h = mf_hp_get(&r, "HOST");
    ck_assert(h && h->n == 3 && memcmp(h->p, "x.y", 3) == 0);
    h = mf_hp_get(&r, "x-A");
    ck_assert(h && h->n == 1 && h->p[0] == '1'); /* the first of a repeatable field */
    ck_assert_ptr_null(mf_hp_get(&r, "Content-Length"));
}
END_TEST

START_TEST(incomplete_and_too_large)
{
    static const char t[] = "POST /v1/predict HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    mf_hp_request r;
    for (size_t n = 0; n < sizeof t - 1; n++) {
        char *b = malloc(n ? n : 1);
        memcpy(b, t, n);
        ck_assert_msg(mf_hp_parse_head(b, n, 32768, &r) == MF_HP_INCOMPLETE, "prefix of %zu bytes", n);
        free(b);
    }
    char *big = malloc(40000);
    memcpy(big, "GET / HTTP/1.1\r\nHost: a\r\nX: ", 28);
    memset(big + 28, 'a', 40000 - 28);
    ck_assert_int_eq(mf_hp_parse_head(big, 40000, 32768, &r), MF_HP_TOO_LARGE);
    ck_assert_int_eq(mf_hp_parse_head(big, 1000, 1000, &r), MF_HP_TOO_LARGE);
    free(big);
    char many[8192] = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 70; i++) snprintf(many + strlen(many), sizeof many - strlen(many), "X-%d: v\r\n", i);
    strcat(many, "\r\n");
    ck_assert_int_eq(parse(many, &r), MF_HP_TOO_MANY_HEADERS);
}
END_TEST

START_TEST(refused_shapes)
{
    static const struct {
        const char *text;
        mf_hp_status want;
    } cases[] = {
        /* smuggling: the framing must be unambiguous */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", MF_HP_BAD_TRANSFER},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", MF_HP_BAD_TRANSFER},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n", MF_HP_DUPLICATE},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", MF_HP_DUPLICATE},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 44\r\n\r\n", MF_HP_BAD_HEADER}, /* obs-fold */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 44\r\n\r\n", MF_HP_BAD_HEADER},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 44\r\n\r\n", MF_HP_BAD_HEADER},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", MF_HP_BAD_TRANSFER},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", MF_HP_BAD_TRANSFER},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", MF_HP_BAD_TRANSFER},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", MF_HP_BAD_TRANSFER},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", MF_HP_DUPLICATE},
        /* malformed Content-Length */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", MF_HP_BAD_LENGTH},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", MF_HP_BAD_LENGTH},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", MF_HP_BAD_LENGTH},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", MF_HP_BAD_LENGTH},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000000000000000000\r\n\r\n", MF_HP_BAD_LENGTH},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", MF_HP_BAD_LENGTH},
        /* Host */
        {"GET / HTTP/1.1\r\n\r\n", MF_HP_BAD_HOST},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", MF_HP_BAD_HOST},
        {"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", MF_HP_BAD_HOST},
        /* fields that must appear once */
        {"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\nAuthorization: Bearer z\r\n\r\n", MF_HP_DUPLICATE},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\ncontent-type: b\r\n\r\n", MF_HP_DUPLICATE},
        /* control characters, bare CR */
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01" "b\r\n\r\n", MF_HP_BAD_HEADER},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7f\r\n\r\n", MF_HP_BAD_HEADER},
        {"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", MF_HP_BAD_HEADER},
        {"GET / HTTP/1.1\rHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        {"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        /* request line */
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        {"GET /\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        {"GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", MF_HP_BAD_VERSION},
        {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", MF_HP_BAD_VERSION},
        {"GET / FTP/1.1\r\nHost: a\r\n\r\n", MF_HP_BAD_REQUEST_LINE},
        /* field lines */
        {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", MF_HP_BAD_HEADER},
        {"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n", MF_HP_BAD_HEADER},
        {"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", MF_HP_BAD_HEADER},
        {"GET / HTTP/1.1\r\nHost: a\r\nX[1]: v\r\n\r\n", MF_HP_BAD_HEADER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mf_hp_request r;
        mf_hp_status st = parse(cases[i].text, &r);
        ck_assert_msg(st == cases[i].want, "case %zu: got %d, want %d (%s)", i, st, cases[i].want,
                      r.why ? r.why : "");
        ck_assert_msg(r.why && r.why[0], "case %zu: no reason given", i);
    }
    /* a NUL in a value or the target */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\0junk\r\n\r\n";
    mf_hp_request r;
    ck_assert_int_eq(mf_hp_parse_head(nul, sizeof nul - 1, 32768, &r), MF_HP_BAD_HEADER);
    static const char nul2[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(mf_hp_parse_head(nul2, sizeof nul2 - 1, 32768, &r), MF_HP_BAD_REQUEST_LINE);
}
END_TEST

/* Decode text in pieces of `step` bytes (0: all at once); the body into out. */
static mf_hp_chunk_result chunked(const char *text, size_t step, char *out, size_t *out_len, size_t *rest)
{
    size_t n = strlen(text), off = 0;
    mf_hp_chunked c;
    memset(&c, 0, sizeof c);
    *out_len = 0;
    mf_hp_chunk_result res = MF_HPC_MORE;
    while (off < n) {
        size_t piece = step && n - off > step ? step : n - off;
        char *b = malloc(piece);
        memcpy(b, text + off, piece);
        size_t at = 0;
        while (at < piece) {
            size_t used;
            const char *data, *why = NULL;
            size_t dl;
            res = mf_hp_chunked_next(&c, b + at, piece - at, &used, &data, &dl, &why);
            ck_assert_uint_le(used, piece - at);
            if (res == MF_HPC_DATA) {
                ck_assert(data >= b + at && data + dl <= b + piece);
                memcpy(out + *out_len, data, dl);
                *out_len += dl;
            }
            at += used;
            if (res == MF_HPC_ERROR) ck_assert_msg(why && why[0], "no reason");
            if (res == MF_HPC_DONE || res == MF_HPC_ERROR) {
                *rest = n - (off + at);
                free(b);
                return res;
            }
            if (res == MF_HPC_MORE) break;
        }
        free(b);
        off += piece;
    }
    *rest = 0;
    return res;
}

START_TEST(chunked_bodies)
{
    static const char good[] = "5\r\nhello\r\n6;name=value;x\r\n world\r\n0\r\nTrailer: t\r\n\r\nGET";
    char out[256];
    size_t len, rest;
    for (size_t step = 0; step <= 9; step++) {
        ck_assert_int_eq(chunked(good, step, out, &len, &rest), MF_HPC_DONE);
        ck_assert_uint_eq(len, 11);
        ck_assert(memcmp(out, "hello world", 11) == 0);
        ck_assert_uint_eq(rest, 3); /* "GET": the next request */
    }
    ck_assert_int_eq(chunked("A\nabcdefghij\n0\n\n", 0, out, &len, &rest), MF_HPC_DONE);
    ck_assert_uint_eq(len, 10);
    ck_assert_int_eq(chunked("0\r\n\r\n", 1, out, &len, &rest), MF_HPC_DONE);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(chunked("5\r\nhel", 0, out, &len, &rest), MF_HPC_DATA); /* more to come */
    static const char *const bad[] = {
        "x\r\n",                               /* not hex */
        "\r\n",                                /* no size */
        "1000000000000000\r\n",                /* 16 hex digits: overflow guard */
        "5\r\nhelloX\r\n0\r\n\r\n",            /* data longer than its size */
        "5\rxhello",                           /* bare CR */
        "5\r\nhello\r\n0\r\nT: \x01\r\n\r\n",  /* control character in a trailer */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(chunked(bad[i], 0, out, &len, &rest) == MF_HPC_ERROR, "bad chunked case %zu", i);
    /* a 40 KB chunk extension: refused with a reason, not a buffer overrun */
    char *ext = malloc(41000);
    strcpy(ext, "5;");
    memset(ext + 2, 'a', 40000);
    strcpy(ext + 40002, "\r\nabcde\r\n0\r\n\r\n");
    ck_assert_int_eq(chunked(ext, 4096, out, &len, &rest), MF_HPC_ERROR);
    free(ext);
}
END_TEST

START_TEST(unescape)
{
    char out[64];
    ck_assert_int_eq(mf_hp_unescape("/v1/a%20b", 9, out, sizeof out), 7);
    ck_assert_str_eq(out, "/v1/a b");
    ck_assert_int_eq(mf_hp_unescape("/m/a%2Fready", 12, out, sizeof out), 12);
    ck_assert_str_eq(out, "/m/a%2Fready"); /* an encoded slash stays one segment */
    ck_assert_int_eq(mf_hp_unescape("/%2f%00x", 8, out, sizeof out), 8);
    ck_assert_str_eq(out, "/%2f%00x");
    ck_assert_int_eq(mf_hp_unescape("/a+b", 4, out, sizeof out), 4);
    ck_assert_str_eq(out, "/a+b");
    ck_assert_int_eq(mf_hp_unescape("/%zz", 4, out, sizeof out), -1);
    ck_assert_int_eq(mf_hp_unescape("/%4", 3, out, sizeof out), -1);
    ck_assert_int_eq(mf_hp_unescape("/abc", 4, out, 4), -1); /* no room for the NUL */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("httpparse");
    TCase *tc = tcase_create("parser");
    tcase_add_test(tc, good_heads);
    tcase_add_test(tc, headers_kept_in_place);
    tcase_add_test(tc, incomplete_and_too_large);
    tcase_add_test(tc, refused_shapes);
    tcase_add_test(tc, chunked_bodies);
    tcase_add_test(tc, unescape);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
