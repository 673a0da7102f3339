/* multipart.c -- multipart/form-data parser over a complete body; see multipart.h.
 *
 * Grammar (RFC 2046 §5.1.1, strict CRLF):
 *   body      := preamble? dash-boundary padding CRLF part (delimiter padding CRLF part)*
 *                close-delimiter epilogue?
 *   delimiter := CRLF "--" boundary     close-delimiter := delimiter "--"
 *   part      := header-lines CRLF content     (content never contains a delimiter)
 * Every search is bounded by the body's end; nothing is copied but the short
 * header values the caller asked for.
 */
#include "multipart.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

const char *mf_multipart_status_code(mf_multipart_status s)
{
    switch (s) {
    case MF_MULTIPART_OK: return "ok";
    case MF_MULTIPART_NO_BOUNDARY: return "multipart_no_boundary";
    case MF_MULTIPART_NO_DELIMITER: return "multipart_no_delimiter";
    case MF_MULTIPART_NO_CLOSE: return "multipart_truncated";
    case MF_MULTIPART_BAD_DELIMITER: return "multipart_bad_delimiter";
    case MF_MULTIPART_HEADER_TOO_LONG: return "multipart_header_too_long";
    case MF_MULTIPART_BAD_HEADER: return "multipart_bad_header";
    case MF_MULTIPART_NO_DISPOSITION: return "multipart_no_disposition";
    case MF_MULTIPART_TOO_MANY_PARTS: return "multipart_too_many_parts";
    }
    return "multipart_error";
}

/* bcharsnospace of RFC 2046, plus space (not allowed last) */
static int is_bchar(int c)
{
    return isalnum(c) || (c && strchr("'()+_,-./:=? ", c) != NULL);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

/* Copy [s, e) into out (truncating), NUL-terminated. */
static void copy_trunc(char *out, size_t cap, const char *s, const char *e)
{
    size_t n = (size_t)(e - s);
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Read one ";"-separated parameter at *pp in [*pp, end): name into
 * [*ns, *ne), value (unquoted) into val.  Returns 1 on a parameter, 0 at the
 * end, -1 on a malformed one.  Quoted values honour backslash escapes. */
static int next_param(const char **pp, const char *end, const char **ns, const char **ne,
                      char *val, size_t valcap)
{
    const char *p = skip_ws(*pp, end);
    if (p == end) return 0;
    if (*p != ';') return -1;
    p = skip_ws(p + 1, end);
    if (p == end) return 0; /* a trailing ';' is harmless */
    *ns = p;
    while (p < end && *p != '=' && *p != ';' && *p != ' ' && *p != '\t') p++;
    *ne = p;
    if (*ne == *ns) return -1;
    p = skip_ws(p, end);
    if (p == end || *p != '=') return -1;
    p = skip_ws(p + 1, end);
    size_t n = 0;
    if (p < end && *p == '"') {
        p++;
        for (;;) {
            if (p == end) return -1; /* unterminated quoted string */
            if (*p == '"') {
                p++;
                break;
            }
            if (*p == '\\' && p + 1 < end) p++;
            if (n + 1 < valcap) val[n++] = *p;
            p++;
        }
    } else {
        const char *vs = p;
        while (p < end && *p != ';' && *p != ' ' && *p != '\t') p++;
        if (p == vs) return -1;
        for (const char *q = vs; q < p; q++)
            if (n + 1 < valcap) val[n++] = *q;
    }
    val[n] = '\0';
    *pp = p;
    return 1;
}

mf_multipart_status mf_multipart_boundary(const char *content_type, char *out, size_t outlen)
{
    if (!content_type || outlen < MF_MULTIPART_MAX_BOUNDARY + 1) return MF_MULTIPART_NO_BOUNDARY;
    const char *end = content_type + strlen(content_type);
    const char *p = strchr(content_type, ';');
    if (!p) return MF_MULTIPART_NO_BOUNDARY;
    const char *ns, *ne;
    char val[256];
    int r;
    while ((r = next_param(&p, end, &ns, &ne, val, sizeof val)) == 1) {
        if ((size_t)(ne - ns) != 8 || strncasecmp(ns, "boundary", 8) != 0) continue;
        size_t n = strlen(val);
        if (n < 1 || n > MF_MULTIPART_MAX_BOUNDARY || val[n - 1] == ' ')
            return MF_MULTIPART_NO_BOUNDARY;
        for (size_t i = 0; i < n; i++)
            if (!is_bchar((unsigned char)val[i])) return MF_MULTIPART_NO_BOUNDARY;
        memcpy(out, val, n + 1);
        return MF_MULTIPART_OK;
    }
    return MF_MULTIPART_NO_BOUNDARY;
}

/* Parse the header block [p, end) of one part (lines separated by CRLF). */
static mf_multipart_status parse_headers(const char *p, const char *end, mf_multipart_part *part,
                                         int *has_disposition)
{
    *has_disposition = 0;
    part->name[0] = part->filename[0] = part->content_type[0] = '\0';
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        /* obsolete line folding and nameless lines are refused */
        if (*p == ' ' || *p == '\t') return MF_MULTIPART_BAD_HEADER;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p) return MF_MULTIPART_BAD_HEADER;
        for (const char *q = p; q < colon; q++)
            if (*q <= ' ' || *q >= 0x7f) return MF_MULTIPART_BAD_HEADER;
        const char *v = skip_ws(colon + 1, eol);
        const char *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t nlen = (size_t)(colon - p);
        if (nlen == 19 && strncasecmp(p, "Content-Disposition", 19) == 0) {
            const char *t = v;
            while (t < ve && *t != ';' && *t != ' ' && *t != '\t') t++;
            if ((size_t)(t - v) != 9 || strncasecmp(v, "form-data", 9) != 0)
                return MF_MULTIPART_NO_DISPOSITION;
            const char *ns, *ne;
            char val[MF_MULTIPART_NAME];
            int r, have_name = 0;
            while ((r = next_param(&t, ve, &ns, &ne, val, sizeof val)) == 1) {
                size_t n = (size_t)(ne - ns);
                if (n == 4 && strncasecmp(ns, "name", 4) == 0) {
                    memcpy(part->name, val, sizeof val);
                    have_name = 1;
                } else if (n == 8 && strncasecmp(ns, "filename", 8) == 0) {
                    memcpy(part->filename, val, sizeof val);
                }
            }
            if (r < 0) return MF_MULTIPART_BAD_HEADER;
            if (!have_name) return MF_MULTIPART_NO_DISPOSITION;
            *has_disposition = 1;
        } else if (nlen == 12 && strncasecmp(p, "Content-Type", 12) == 0) {
            copy_trunc(part->content_type, sizeof part->content_type, v, ve);
        }
        p = eol == end ? end : eol + 2;
    }
    return MF_MULTIPART_OK;
}

mf_multipart_status mf_multipart_parse(const char *content_type, const uint8_t *body, size_t len,
                                       const char *field, mf_multipart_part *out, int max_parts,
                                       int *n_out)
{
    char boundary[MF_MULTIPART_MAX_BOUNDARY + 1];
    char delim[MF_MULTIPART_MAX_BOUNDARY + 5]; /* CRLF "--" boundary */
    *n_out = 0;
    if (mf_multipart_boundary(content_type, boundary, sizeof boundary) != MF_MULTIPART_OK)
        return MF_MULTIPART_NO_BOUNDARY;
    size_t bl = strlen(boundary);
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, bl);
    size_t dl = bl + 4;
    /* an empty body may come as NULL (no body was sent); NULL + 0 is undefined */
    const char *b = body ? (const char *)body : "";
    const char *end = b + len;
    const char *p;

    /* first delimiter: at the very start, or after a preamble line */
    if (len >= dl - 2 && memcmp(b, delim + 2, dl - 2) == 0) {
        p = b + dl - 2;
    } else {
        const char *d = len ? memmem(b, len, delim, dl) : NULL;
        if (!d) return MF_MULTIPART_NO_DELIMITER;
        p = d + dl;
    }

    int parts = 0;
    for (;;) {
        /* after a delimiter: "--" closes, else padding then CRLF */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return MF_MULTIPART_OK;
        p = skip_ws(p, end);
        if (end - p < 2) return MF_MULTIPART_NO_CLOSE;
        if (p[0] != '\r' || p[1] != '\n') return MF_MULTIPART_BAD_DELIMITER;
        p += 2;
        if (++parts > max_parts) return MF_MULTIPART_TOO_MANY_PARTS;

        /* header block, ended by an empty line */
        const char *hend, *content;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p;
            content = p + 2;
        } else {
            size_t window = (size_t)(end - p);
            if (window > MF_MULTIPART_MAX_HEADER + 4) window = MF_MULTIPART_MAX_HEADER + 4;
            hend = memmem(p, window, "\r\n\r\n", 4);
            if (!hend)
                return (size_t)(end - p) > MF_MULTIPART_MAX_HEADER ? MF_MULTIPART_HEADER_TOO_LONG
                                                                  : MF_MULTIPART_NO_CLOSE;
            if ((size_t)(hend - p) > MF_MULTIPART_MAX_HEADER) return MF_MULTIPART_HEADER_TOO_LONG;
            content = hend + 4;
        }
        mf_multipart_part part;
        int has_disposition;
        mf_multipart_status st = parse_headers(p, hend, &part, &has_disposition);
        if (st != MF_MULTIPART_OK) return st;
        if (!has_disposition) return MF_MULTIPART_NO_DISPOSITION;

        /* content runs to the next delimiter (CRLF "--" boundary) */
        const char *d = memmem(content, (size_t)(end - content), delim, dl);
        if (!d) return MF_MULTIPART_NO_CLOSE;
        if (field && strcmp(part.name, field) == 0) {
            part.data = (const uint8_t *)content;
            part.len = (size_t)(d - content);
            out[(*n_out)++] = part;
        }
        p = d + dl;
    }
}
