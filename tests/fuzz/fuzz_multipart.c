/* fuzz_multipart.c -- libFuzzer target: multipart/form-data (server/multipart.c).
 *
 * Input: the Content-Type header value, a newline, then the body, e.g.
 *   multipart/form-data; boundary=XyZ\n--XyZ\r\nContent-Disposition: ...
 * The body is parsed from an exact-size heap copy (so ASan sees any read
 * past its end; an empty body is passed as NULL, as http.c does) twice: keeping the "image" parts, as http.c does, and keeping
 * none; both must agree on the status, and every kept part must lie inside
 * the body with NUL-terminated names.
 */
#include "fuzz.h"

#include "multipart.h"

#define MAX_PARTS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    size_t ct_len = (size_t)(nl - data);
    char *ct = malloc(ct_len + 1);
    FUZZ_CHECK(ct != NULL);
    memcpy(ct, data, ct_len);
    ct[ct_len] = '\0';
    size_t len = size - ct_len - 1;
    uint8_t *body = malloc(len ? len : 1);
    FUZZ_CHECK(body != NULL);
    memcpy(body, nl + 1, len);

    char boundary[MF_MULTIPART_MAX_BOUNDARY + 1];
    mf_multipart_status bs = mf_multipart_boundary(ct, boundary, sizeof boundary);
    FUZZ_CHECK(bs == MF_MULTIPART_OK || bs == MF_MULTIPART_NO_BOUNDARY);
    if (bs == MF_MULTIPART_OK) {
        size_t bl = strlen(boundary);
        FUZZ_CHECK(bl >= 1 && bl <= MF_MULTIPART_MAX_BOUNDARY && boundary[bl - 1] != ' ');
    }

    static mf_multipart_part parts[MAX_PARTS];
    int n = -1, m = -1;
    /* no body at all reaches the parser as NULL (http.c: nothing was sent) */
    const uint8_t *in = len ? body : NULL;
    mf_multipart_status st = mf_multipart_parse(ct, in, len, "image", parts, MAX_PARTS, &n);
    FUZZ_CHECK(st >= MF_MULTIPART_OK && st <= MF_MULTIPART_TOO_MANY_PARTS);
    FUZZ_CHECK(strcmp(mf_multipart_status_code(st), "multipart_error") != 0);
    FUZZ_CHECK(n >= 0 && n <= MAX_PARTS);
    if (bs != MF_MULTIPART_OK) FUZZ_CHECK(st == MF_MULTIPART_NO_BOUNDARY);
    for (int i = 0; i < n; i++) {
        const mf_multipart_part *p = &parts[i];
        FUZZ_CHECK(p->data >= body && p->len <= len && (size_t)(p->data - body) <= len - p->len);
        FUZZ_CHECK(memchr(p->name, '\0', sizeof p->name) && strcmp(p->name, "image") == 0);
        FUZZ_CHECK(memchr(p->filename, '\0', sizeof p->filename));
        FUZZ_CHECK(memchr(p->content_type, '\0', sizeof p->content_type));
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < p->len; k++) sink ^= p->data[k];
        (void)sink;
    }
    mf_multipart_status st2 = mf_multipart_parse(ct, in, len, NULL, parts, MAX_PARTS, &m);
    FUZZ_CHECK(st2 == st && m == 0);
    free(body);
    free(ct);
    return 0;
}
