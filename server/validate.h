/* validate.h -- the pure checks of a request head: API key, top_k, media
 * type.  Nothing here allocates or touches server state; returned pointers
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

#endif
