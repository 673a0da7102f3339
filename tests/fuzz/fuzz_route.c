/* fuzz_route.c -- libFuzzer target: the request head as http.c reads it --
 * routing, top_k, Content-Type and Authorization (the daemon-free functions of
 * http.h), plus the multipart boundary of the Content-Type.
 *
 * Input: up to five lines (LF-separated):
 *   method \n path \n top_k value \n Content-Type \n Authorization
 * A missing third line means no top_k in the query.  Each result is checked
 * against its contract and, for top_k and the API key, against a plain
 * reference implementation written here.
 */
#include "fuzz.h"

#include "route.h"
#include "validate.h"
#include "multipart.h"

#include <ctype.h>
#include <strings.h>

#define CLASSES 10
#define API_KEY "s3cret-key"

static int top_k_reference(const char *v, size_t len, int classes)
{
    if (!v) return 5 < classes ? 5 : classes;
    if (len == 0 || len > 200) return len == 0 ? -1 : -2; /* -2: too long to compare */
    unsigned long long n = 0;
    int big = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)v[i])) return -1;
        if (n > 1000000000ull) big = 1;
        else n = n * 10 + (unsigned)(v[i] - '0');
    }
    if (!big && n == 0) return -1;
    return big || n > (unsigned long long)classes ? classes : (int)n;
}

static int bearer_reference(const char *h, const char *key)
{
    if (!key[0]) return 1;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return strcmp(h, key) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *f[5] = {NULL, NULL, NULL, NULL, NULL}, *block;
    int n = fuzz_split(data, size, '\n', f, 5, &block);
    const char *method = f[0], *path = n > 1 ? f[1] : "";

    mf_route_match m;
    memset(&m, 0xa5, sizeof m);
    mf_route_find(method, path, &m);
    switch (m.status) {
    case MF_ROUTE_FOUND:
        FUZZ_CHECK(m.route != NULL && m.endpoint >= 0 && m.endpoint < MF_ENDPOINT_OTHER);
        FUZZ_CHECK(strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
                   strcmp(method, "POST") == 0);
        FUZZ_CHECK(path[0] == '/');
        if (m.model) {
            FUZZ_CHECK(m.model > path && m.model + m.model_len <= path + strlen(path));
            FUZZ_CHECK(m.model_len >= 1 && !memchr(m.model, '/', m.model_len));
        }
        break;
    case MF_ROUTE_OPTIONS:
        FUZZ_CHECK(strcmp(method, "OPTIONS") == 0 && m.endpoint == MF_ENDPOINT_OPTIONS);
        break;
    case MF_ROUTE_NOT_FOUND:
        FUZZ_CHECK(m.route == NULL && m.endpoint == MF_ENDPOINT_OTHER);
        break;
    case MF_ROUTE_METHOD_NOT_ALLOWED:
        FUZZ_CHECK(m.route != NULL && m.allow && m.allow[0]);
        FUZZ_CHECK(strcmp(method, "POST") != 0 || strstr(m.allow, "POST") == NULL);
        break;
    default: FUZZ_CHECK(!"route status out of range");
    }
    /* the same path with each other method agrees on whether the path exists */
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE"};
    for (int i = 0; i < 5; i++) {
        mf_route_match o;
        mf_route_find(methods[i], path, &o);
        if (m.status == MF_ROUTE_FOUND || m.status == MF_ROUTE_METHOD_NOT_ALLOWED)
            FUZZ_CHECK(o.status == MF_ROUTE_FOUND || o.status == MF_ROUTE_METHOD_NOT_ALLOWED);
        if (m.status == MF_ROUTE_NOT_FOUND) FUZZ_CHECK(o.status == MF_ROUTE_NOT_FOUND);
    }

    const char *tk = n > 2 ? f[2] : NULL;
    size_t tk_len = tk ? strlen(tk) : 0;
    for (int classes = 1; classes <= 1000; classes *= CLASSES) {
        int k = mf_parse_top_k(tk, tk_len, classes);
        FUZZ_CHECK(k == -1 || (k >= 1 && k <= classes));
        int ref = top_k_reference(tk, tk_len, classes);
        if (ref != -2) FUZZ_CHECK(k == ref);
    }

    const char *ct = n > 3 ? f[3] : "";
    char mt[128];
    mf_media_type(ct, mt, sizeof mt);
    FUZZ_CHECK(strlen(mt) < sizeof mt);
    for (const char *p = mt; *p; p++) FUZZ_CHECK(*p != ';' && *p != ' ' && !isupper((unsigned char)*p));
    char boundary[MF_MULTIPART_MAX_BOUNDARY + 1];
    if (mf_multipart_boundary(ct, boundary, sizeof boundary) == MF_MULTIPART_OK)
        FUZZ_CHECK(strlen(boundary) >= 1 && strlen(boundary) <= MF_MULTIPART_MAX_BOUNDARY);

    const char *auth = n > 4 ? f[4] : NULL;
    FUZZ_CHECK(mf_bearer_ok(auth, API_KEY) == bearer_reference(auth, API_KEY));
    FUZZ_CHECK(mf_bearer_ok(auth, "") == 1);
    free(block);
    return 0;
}
