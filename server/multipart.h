/* multipart.h -- multipart/form-data (RFC 7578 over RFC 2046) for a body
 * that is already complete in memory.
 *
 * The parser copies nothing: every part's data points into the caller's
 * body buffer and lives as long as it.  Parsing is strict (CRLF line ends,
 * a closing delimiter, bounded part headers and part count) and never reads
 * outside [body, body + len).
 */
#ifndef MF_MULTIPART_H
#define MF_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define MF_MULTIPART_MAX_BOUNDARY 70    /* RFC 2046 §5.1.1 */
#define MF_MULTIPART_MAX_HEADER 8192    /* bytes of one part's header block */
#define MF_MULTIPART_NAME 128           /* capacity of name and filename, with the NUL */

typedef enum mf_multipart_status {
    MF_MULTIPART_OK = 0,
    MF_MULTIPART_NO_BOUNDARY,      /* Content-Type has no usable boundary parameter */
    MF_MULTIPART_NO_DELIMITER,     /* the body does not start with a delimiter line */
    MF_MULTIPART_NO_CLOSE,         /* the closing --boundary-- delimiter is missing */
    MF_MULTIPART_BAD_DELIMITER,    /* a delimiter line is followed by garbage */
    MF_MULTIPART_HEADER_TOO_LONG,  /* a part's headers exceed MF_MULTIPART_MAX_HEADER */
    MF_MULTIPART_BAD_HEADER,       /* a part header line is malformed */
    MF_MULTIPART_NO_DISPOSITION,   /* a part lacks Content-Disposition: form-data; name=... */
    MF_MULTIPART_TOO_MANY_PARTS,   /* more parts than the caller allows */
} mf_multipart_status;

/* Stable snake_case code of a status (used in HTTP error replies). */
const char *mf_multipart_status_code(mf_multipart_status s);

typedef struct mf_multipart_part {
    const uint8_t *data;               /* part content, inside the body buffer */
    size_t len;                        /* content bytes */
    char name[MF_MULTIPART_NAME];      /* form field name (truncated if longer) */
    char filename[MF_MULTIPART_NAME];  /* filename parameter, "" if none */
    char content_type[MF_MULTIPART_NAME]; /* part Content-Type, "" if none */
} mf_multipart_part;

/* Boundary of a "multipart/form-data; boundary=..." Content-Type (token or
 * quoted string, 1..70 chars) into out (>= MF_MULTIPART_MAX_BOUNDARY + 1 bytes).
 * Returns MF_MULTIPART_OK or MF_MULTIPART_NO_BOUNDARY. */
mf_multipart_status mf_multipart_boundary(const char *content_type, char *out, size_t outlen);

/* Parse body (NULL is fine when len is 0): every part counts against max_parts (more ->
 * MF_MULTIPART_TOO_MANY_PARTS); parts whose field name equals `field` are
 * stored in order in out[0..*n_out) (out holds max_parts entries).
 * Preamble and epilogue are ignored. */
mf_multipart_status mf_multipart_parse(const char *content_type, const uint8_t *body, size_t len,
                                       const char *field, mf_multipart_part *out, int max_parts,
                                       int *n_out);

#endif
