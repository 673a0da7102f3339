/* httpparse.h -- strict HTTP/1.1 request heads and chunked bodies, parsed in
 * place from the caller's buffer (RFC 9110, 9112).
 *
 * Pure functions: nothing is allocated, no I/O, no global state, so the
 * parser is fuzzed alone (tests/fuzz/fuzz_httpparse.c) and unit-tested on
 * partial, truncated and malformed input (tests/test_httpparse.c).  Every
 * returned string points into the caller's buffer and lives as long as it.
 *
 * Strictness is the point: the shapes that let a front proxy and this server
 * disagree about where a request ends (request smuggling) are refused, never
 * guessed at:
 *   - Content-Length together with Transfer-Encoding; Content-Length twice,
 *     or not exactly 1*DIGIT (no sign, no hex, no list, no overflow);
 *     Transfer-Encoding other than exactly "chunked";
 *   - whitespace between a field name and its colon; obs-fold (a line that
 *     starts with SP or HTAB); a field name that is not a token; NUL or any
 *     other control character but HTAB in a field value or the target;
 *   - HTTP/1.1 without exactly one Host; Host, Authorization, Content-Type
 *     and the other fields that must appear once (mf_hp_single) twice;
 *   - a bare CR anywhere in the head (a bare LF ends a line, as RFC 9112
 *     allows a recipient to accept);
 *   - chunk sizes that overflow, chunk extensions or trailers beyond their
 *     bounds, missing CRLF after chunk data.
 */
#ifndef MF_HTTPPARSE_H
#define MF_HTTPPARSE_H

#include <stddef.h>
#include <stdint.h>

#define MF_HP_MAX_HEADERS 64       /* fields in one head */
#define MF_HP_MAX_CHUNK_EXT 1024   /* bytes of one chunk line's extensions */
#define MF_HP_MAX_TRAILERS 8192    /* bytes of the trailer section */

typedef struct mf_hp_str {
    const char *p; /* start, inside the caller's buffer */
    size_t n;      /* length */
} mf_hp_str;

typedef struct mf_hp_header {
    mf_hp_str name;  /* field name as sent (compare case-insensitively) */
    mf_hp_str value; /* field value without surrounding whitespace */
} mf_hp_header;

typedef enum mf_hp_status {
    MF_HP_OK = 0,           /* a complete head */
    MF_HP_INCOMPLETE,       /* not all of the head yet: read more */
    MF_HP_TOO_LARGE,        /* the head is longer than max_head (431) */
    MF_HP_BAD_REQUEST_LINE, /* method, target or version malformed (400) */
    MF_HP_BAD_VERSION,      /* not HTTP/1.0 or HTTP/1.1 (505) */
    MF_HP_BAD_HEADER,       /* a malformed field line (400) */
    MF_HP_TOO_MANY_HEADERS, /* more than MF_HP_MAX_HEADERS fields (431) */
    MF_HP_BAD_HOST,         /* HTTP/1.1 without exactly one Host (400) */
    MF_HP_DUPLICATE,        /* a field that must appear once appears twice (400) */
    MF_HP_BAD_LENGTH,       /* Content-Length malformed (400) */
    MF_HP_BAD_TRANSFER,     /* Transfer-Encoding not exactly chunked, or with Content-Length (400) */
} mf_hp_status;

typedef struct mf_hp_request {
    mf_hp_str method;       /* e.g. "POST" (case-sensitive token) */
    mf_hp_str target;       /* request-target as sent: origin-form ("/...") or "*" */
    mf_hp_str path;         /* target up to '?' (still percent-encoded) */
    mf_hp_str query;        /* after '?', empty if none */
    int minor;              /* HTTP/1.<minor>: 0 or 1 */
    mf_hp_header headers[MF_HP_MAX_HEADERS]; /* the fields, in order */
    int n_headers;          /* how many */
    size_t head_len;        /* bytes of the head, the empty line included */
    /* framing and connection, from the fields */
    int has_length;         /* Content-Length present */
    uint64_t content_length;/* its value */
    int chunked;            /* Transfer-Encoding: chunked */
    int expect_continue;    /* Expect: 100-continue */
    int keep_alive;         /* the connection may carry another request after this one */
    const char *why;        /* on an error: what was wrong, for the answer's message (static) */
} mf_hp_request;

/* Parse the head at buf[0..len).  max_head bounds head_len. */
mf_hp_status mf_hp_parse_head(const char *buf, size_t len, size_t max_head, mf_hp_request *out);

/* The value of field `name` (case-insensitive), or NULL; the first one. */
const mf_hp_str *mf_hp_get(const mf_hp_request *r, const char *name);

/* Does name (case-insensitive) have to appear at most once? */
int mf_hp_single(const char *name, size_t len);

/* ---- chunked transfer coding -------------------------------------------
 * An incremental decoder: feed it what arrived, in any pieces. */

typedef struct mf_hp_chunked {
    int state;          /* private */
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t line;        /* bytes of the current size/extension or trailer line */
    size_t trailers;    /* bytes of trailers so far */
    int digits;         /* hex digits of the current size */
} mf_hp_chunked;

typedef enum mf_hp_chunk_result {
    MF_HPC_MORE = 0, /* all of the input was used: feed more */
    MF_HPC_DATA,     /* *data, *data_len: body bytes (inside buf) */
    MF_HPC_DONE,     /* the last chunk and the trailers are in: the body is complete */
    MF_HPC_ERROR,    /* malformed (400); *why says what */
} mf_hp_chunk_result;

/* Decode from buf[0..len): *used is how many bytes were taken (the rest,
 * after DONE, belongs to the next request).  Call again with the rest after
 * DATA. */
mf_hp_chunk_result mf_hp_chunked_next(mf_hp_chunked *c, const char *buf, size_t len, size_t *used,
                                      const char **data, size_t *data_len, const char **why);

/* Percent-decode a path or query value into out (cap bytes, NUL-terminated),
 * leaving "%00" and "%2F" (and "%2f") encoded, so that decoding can neither
 * cut a string short nor create a path segment boundary.  '+' is kept (it
 * is not a space in a path).  Returns the length, or -1 if out is too small
 * or an escape is malformed. */
long mf_hp_unescape(const char *in, size_t len, char *out, size_t cap);

#endif
