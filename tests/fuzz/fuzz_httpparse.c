/* fuzz_httpparse.c -- libFuzzer target: the strict HTTP parser alone
 * (server/httpparse.h).  The input is a request head, possibly followed by a
 * chunked body; checked: every returned string lies inside the input, the
 * head length is within the input and ends with an empty line, the framing
 * is never ambiguous (chunked and a Content-Length never both), a refusal
 * always says why, and the chunked decoder, fed the rest in pieces whose
 * sizes come from the input, only ever points inside what it was given and
 * decodes the same bytes whatever the pieces. */
#include "fuzz.h"

#include "httpparse.h"

static int inside(const mf_hp_str *s, const char *b, size_t n)
{
    return s->n == 0 || (s->p >= b && s->p + s->n <= b + n);
}

/* Decode [b, b+n) in pieces of `step`; returns the result, body in out. */
static mf_hp_chunk_result decode(const char *b, size_t n, size_t step, char *out, size_t *out_len)
{
    mf_hp_chunked c;
    memset(&c, 0, sizeof c);
    size_t off = 0;
    *out_len = 0;
    mf_hp_chunk_result res = MF_HPC_MORE;
    while (off < n) {
        size_t piece = n - off < step ? n - off : step;
        size_t at = 0;
        while (at < piece) {
            size_t used, dl;
            const char *data, *why = NULL;
            res = mf_hp_chunked_next(&c, b + off + at, piece - at, &used, &data, &dl, &why);
            FUZZ_CHECK(used <= piece - at);
            if (res == MF_HPC_DATA) {
                FUZZ_CHECK(data >= b + off + at && data + dl <= b + off + piece && dl > 0);
                memcpy(out + *out_len, data, dl);
                *out_len += dl;
            }
            if (res == MF_HPC_ERROR) FUZZ_CHECK(why && why[0]);
            at += used;
            if (res == MF_HPC_DONE || res == MF_HPC_ERROR) return res;
            if (res == MF_HPC_MORE) {
                FUZZ_CHECK(at == piece);
                break;
            }
        }
        off += piece;
    }
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const size_t max_head = 64 + data[0] * 16;
    char *b = malloc(size - 1 ? size - 1 : 1); /* exactly sized: ASan sees any over-read */
    memcpy(b, data + 1, size - 1);
    const size_t n = size - 1;
    mf_hp_request r;
    mf_hp_status st = mf_hp_parse_head(b, n, max_head, &r);
    FUZZ_CHECK(st >= MF_HP_OK && st <= MF_HP_BAD_TRANSFER);
    if (st != MF_HP_OK && st != MF_HP_INCOMPLETE) FUZZ_CHECK(r.why && r.why[0]);
    if (st == MF_HP_OK) {
        FUZZ_CHECK(r.head_len >= 4 && r.head_len <= n && r.head_len <= max_head);
        FUZZ_CHECK(b[r.head_len - 1] == '\n');
        FUZZ_CHECK(inside(&r.method, b, r.head_len) && r.method.n > 0);
        FUZZ_CHECK(inside(&r.target, b, r.head_len) && r.target.n > 0);
        FUZZ_CHECK(inside(&r.path, b, r.head_len) && inside(&r.query, b, r.head_len));
        FUZZ_CHECK(r.minor == 0 || r.minor == 1);
        FUZZ_CHECK(!(r.chunked && r.has_length));
        FUZZ_CHECK(r.n_headers >= 0 && r.n_headers <= MF_HP_MAX_HEADERS);
        for (int i = 0; i < r.n_headers; i++) {
            FUZZ_CHECK(inside(&r.headers[i].name, b, r.head_len) && r.headers[i].name.n > 0);
            FUZZ_CHECK(inside(&r.headers[i].value, b, r.head_len));
            for (size_t k = 0; k < r.headers[i].value.n; k++)
                FUZZ_CHECK(r.headers[i].value.p[k] != '\0' && r.headers[i].value.p[k] != '\r' &&
                           r.headers[i].value.p[k] != '\n');
        }
        if (r.minor == 1) FUZZ_CHECK(mf_hp_get(&r, "host") != NULL);
        /* the rest as a chunked body, whole and in pieces: the same bytes */
        const char *rest = b + r.head_len;
        size_t rn = n - r.head_len;
        char *one = malloc(rn + 1), *many = malloc(rn + 1);
        size_t l1, l2;
        mf_hp_chunk_result a = decode(rest, rn, rn ? rn : 1, one, &l1);
        mf_hp_chunk_result c = decode(rest, rn, 1 + (size_t)(data[0] % 7), many, &l2);
        FUZZ_CHECK(a == c && l1 == l2 && memcmp(one, many, l1) == 0);
        free(one);
        free(many);
    }
    /* the path decoder on the whole input */
    char out[512];
    long k = mf_hp_unescape(b, n < 400 ? n : 400, out, sizeof out);
    FUZZ_CHECK(k >= -1 && k < (long)sizeof out);
    if (k >= 0) FUZZ_CHECK(out[k] == '\0');
    free(b);
    return 0;
}
