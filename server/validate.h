/* validate.h -- the pure checks of a request: API key, top_k, media type,
 * base64.  Nothing here allocates or touches server state; returned pointers
 * point into the arguments.  Used by the handlers and callable alone
 * (tests/test_http.c, tests/fuzz/fuzz_route.c).
 */
#ifndef MF_VALIDATE_H
#define MF_VALIDATE_H

#include <stddef.h>

#define MF_DEFAULT_TOP_K 5

/* top_k from its query value (len bytes, not NUL-terminated; NULL = no top_k
 * in the query): absent -> 5 capped at classes; 1.. -> capped at classes;
 * empty, zero, signs, anything but digits -> -1 (400 bad_top_k). */
int mf_parse_top_k(const char *value, size_t len, int classes);

/* Media type of a Content-Type value, lower-cased, without parameters, into
 * out (cap bytes, truncated). */
void mf_media_type(const char *content_type, char *out, size_t cap);

/* Does an Authorization header value (NULL if absent) carry api_key as
 * "Bearer <key>"?  Always true when api_key is empty.  Constant time in the
 * header's content. */
int mf_bearer_ok(const char *authorization, const char *api_key);

/* Base64 (RFC 4648, the standard or the URL-safe alphabet, '=' padding
 * optional) of s[0..n) into out, which holds at least MF_BASE64_MAX(n)
 * bytes; *outlen gets the decoded length.  0, or -1 for anything else:
 * other characters, whitespace, a length that cannot be base64, bits left
 * over in the last character. */
#define MF_BASE64_MAX(n) ((n) / 4 * 3 + 3)
int mf_base64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen);

#endif
