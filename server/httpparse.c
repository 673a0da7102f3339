/* httpparse.c -- strict request heads, chunked bodies, unescaping; see httpparse.h. */
#include "httpparse.h"

#include <string.h>
#include <strings.h>

/* tchar of RFC 9110 §5.6.2 */
static int is_tchar(unsigned char c)
{
    if (c >= '0' && c <= '9') return 1;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-value bytes: VCHAR, obs-text, SP, HTAB (no other control character) */
static int is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static int ieq(mf_hp_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

int mf_hp_single(const char *name, size_t len)
{
    static const char *const once[] = {"host",          "content-length", "transfer-encoding",
                                       "authorization", "content-type",   "expect",
                                       "inference-header-content-length", "x-request-id"};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        if (strlen(once[i]) == len && strncasecmp(name, once[i], len) == 0) return 1;
    return 0;
}

const mf_hp_str *mf_hp_get(const mf_hp_request *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (ieq(r->headers[i].name, name)) return &r->headers[i].value;
    return NULL;
}

/* The next line of [p, end): its content [*ls, *le) without CR LF; returns
 * the start of the following line, NULL if no LF yet, or `end + 1` (an
 * impossible pointer value is avoided: *bad is set instead) for a bare CR. */
static const char *next_line(const char *p, const char *end, const char **le, int *bare_cr)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf) return NULL;
    const char *e = lf;
    if (e > p && e[-1] == '\r') e--;
    *bare_cr = memchr(p, '\r', (size_t)(e - p)) != NULL;
    *le = e;
    return lf + 1;
}

#define FAIL(st, msg) do { out->why = (msg); return (st); } while (0)

static mf_hp_status parse_request_line(const char *p, const char *e, mf_hp_request *out)
{
    const char *s = p;
    while (p < e && is_tchar((unsigned char)*p)) p++;
    if (p == s || p >= e || *p != ' ') FAIL(MF_HP_BAD_REQUEST_LINE, "malformed request line (method)");
    out->method = (mf_hp_str){s, (size_t)(p - s)};
    s = ++p;
    while (p < e && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f) p++;
    if (p == s || p >= e || *p != ' ') FAIL(MF_HP_BAD_REQUEST_LINE, "malformed request target");
    out->target = (mf_hp_str){s, (size_t)(p - s)};
    p++;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT */
    if (e - p != 8 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' ||
        p[7] > '9')
        FAIL(MF_HP_BAD_REQUEST_LINE, "malformed request line (version)");
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1')) FAIL(MF_HP_BAD_VERSION, "only HTTP/1.0 and HTTP/1.1 are served");
    out->minor = p[7] - '0';
    /* origin-form, or "*" (OPTIONS); absolute- and authority-form are refused */
    const mf_hp_str t = out->target;
    if (!(t.n == 1 && t.p[0] == '*') && t.p[0] != '/') FAIL(MF_HP_BAD_REQUEST_LINE, "request target must start with /");
    const char *q = memchr(t.p, '?', t.n);
    out->path = (mf_hp_str){t.p, q ? (size_t)(q - t.p) : t.n};
    out->query = q ? (mf_hp_str){q + 1, t.n - (size_t)(q + 1 - t.p)} : (mf_hp_str){t.p + t.n, 0};
    return MF_HP_OK;
}

static mf_hp_status parse_field(const char *p, const char *e, mf_hp_request *out)
{
    if (*p == ' ' || *p == '\t') FAIL(MF_HP_BAD_HEADER, "obsolete line folding is not accepted");
    const char *s = p;
    while (p < e && is_tchar((unsigned char)*p)) p++;
    if (p == s) FAIL(MF_HP_BAD_HEADER, "malformed header field name");
    if (p >= e || *p != ':') {
        if (p < e && (*p == ' ' || *p == '\t')) FAIL(MF_HP_BAD_HEADER, "whitespace before a header's colon");
        FAIL(MF_HP_BAD_HEADER, "malformed header field (no colon)");
    }
    mf_hp_str name = {s, (size_t)(p - s)};
    p++;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    const char *vs = p;
    for (const char *c = vs; c < e; c++)
        if (!is_value_char((unsigned char)*c)) FAIL(MF_HP_BAD_HEADER, "control character in a header value");
    const char *ve = e;
    while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    if (out->n_headers == MF_HP_MAX_HEADERS) FAIL(MF_HP_TOO_MANY_HEADERS, "too many header fields");
    if (mf_hp_single(name.p, name.n))
        for (int i = 0; i < out->n_headers; i++)
            if (out->headers[i].name.n == name.n && strncasecmp(out->headers[i].name.p, name.p, name.n) == 0) {
                if (name.n == 4 && strncasecmp(name.p, "host", 4) == 0) FAIL(MF_HP_BAD_HOST, "more than one Host header");
                FAIL(MF_HP_DUPLICATE, "a header that must appear once appears twice");
            }
    out->headers[out->n_headers++] = (mf_hp_header){name, {vs, (size_t)(ve - vs)}};
    return MF_HP_OK;
}

/* Does the comma-separated list v hold token tok (case-insensitive)? */
static int list_has(mf_hp_str v, const char *tok)
{
    const char *p = v.p, *e = v.p + v.n;
    while (p < e) {
        while (p < e && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        const char *s = p;
        while (p < e && *p != ',') p++;
        const char *t = p;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if (ieq((mf_hp_str){s, (size_t)(t - s)}, tok)) return 1;
    }
    return 0;
}

static mf_hp_status framing(mf_hp_request *out)
{
    const mf_hp_str *host = mf_hp_get(out, "host");
    if (out->minor == 1 && !host) FAIL(MF_HP_BAD_HOST, "HTTP/1.1 requests need a Host header");
    const mf_hp_str *cl = mf_hp_get(out, "content-length"), *te = mf_hp_get(out, "transfer-encoding");
    if (cl && te) FAIL(MF_HP_BAD_TRANSFER, "Content-Length together with Transfer-Encoding");
    if (te) {
        if (!ieq(*te, "chunked")) FAIL(MF_HP_BAD_TRANSFER, "Transfer-Encoding must be exactly chunked");
        if (out->minor == 0) FAIL(MF_HP_BAD_TRANSFER, "Transfer-Encoding in an HTTP/1.0 request");
        out->chunked = 1;
    }
    if (cl) {
        uint64_t n = 0;
        if (cl->n == 0 || cl->n > 18) FAIL(MF_HP_BAD_LENGTH, "Content-Length must be 1 to 18 digits");
        for (size_t i = 0; i < cl->n; i++) {
            if (cl->p[i] < '0' || cl->p[i] > '9') FAIL(MF_HP_BAD_LENGTH, "Content-Length must be digits only");
            n = n * 10 + (uint64_t)(cl->p[i] - '0');
        }
        out->has_length = 1;
        out->content_length = n;
    }
    const mf_hp_str *conn = mf_hp_get(out, "connection");
    out->keep_alive = out->minor == 1;
    if (conn && list_has(*conn, "close")) out->keep_alive = 0;
    else if (conn && out->minor == 0 && list_has(*conn, "keep-alive")) out->keep_alive = 1;
    const mf_hp_str *ex = mf_hp_get(out, "expect");
    out->expect_continue = ex && out->minor == 1 && ieq(*ex, "100-continue");
    return MF_HP_OK;
}

mf_hp_status mf_hp_parse_head(const char *buf, size_t len, size_t max_head, mf_hp_request *out)
{
    memset(out, 0, sizeof *out);
    const char *p = buf, *end = buf + (len < max_head ? len : max_head);
    /* RFC 9112 §2.2: empty lines before the request line are ignored */
    while (p < end && (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))) p += *p == '\r' ? 2 : 1;
    const char *le;
    int bare_cr;
    const char *next = next_line(p, end, &le, &bare_cr);
    if (!next) goto incomplete;
    if (bare_cr) FAIL(MF_HP_BAD_REQUEST_LINE, "bare CR in the request line");
    mf_hp_status st = parse_request_line(p, le, out);
    if (st != MF_HP_OK) return st;
    p = next;
    for (;;) {
        next = next_line(p, end, &le, &bare_cr);
        if (!next) goto incomplete;
        if (bare_cr) FAIL(MF_HP_BAD_HEADER, "bare CR in a header line");
        if (le == p) break; /* the empty line */
        st = parse_field(p, le, out);
        if (st != MF_HP_OK) return st;
        p = next;
    }
    out->head_len = (size_t)(next - buf);
    return framing(out);
incomplete:
    if (len >= max_head) FAIL(MF_HP_TOO_LARGE, "the request head is too large");
    return MF_HP_INCOMPLETE;
}

/* ---- chunked ------------------------------------------------------------- */

enum { C_SIZE = 0, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_TRAILER_LINE, C_TRAILER_LF,
       C_END_LF, C_DONE };

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

mf_hp_chunk_result mf_hp_chunked_next(mf_hp_chunked *c, const char *buf, size_t len, size_t *used,
                                      const char **data, size_t *data_len, const char **why)
{
#define CERR(msg) do { *why = (msg); *used = i; return MF_HPC_ERROR; } while (0)
    size_t i = 0;
    *data = NULL;
    *data_len = 0;
    while (i < len) {
        const unsigned char ch = (unsigned char)buf[i];
        switch (c->state) {
        case C_SIZE: {
            int h = hexval(ch);
            if (h >= 0) {
                if (++c->digits > 15) CERR("chunk size too large");
                c->remaining = c->remaining * 16 + (uint64_t)h;
                i++;
                break;
            }
            if (c->digits == 0) CERR("malformed chunk size");
            if (ch == ';' || ch == ' ' || ch == '\t') { c->state = C_EXT; c->line = 0; break; }
            if (ch == '\r') { c->state = C_SIZE_LF; i++; break; }
            if (ch == '\n') { i++; goto size_done; }
            CERR("malformed chunk size");
        }
        case C_EXT:
            if (ch == '\r') { c->state = C_SIZE_LF; i++; break; }
            if (ch == '\n') { i++; goto size_done; }
            if (!is_value_char(ch)) CERR("control character in a chunk extension");
            if (++c->line > MF_HP_MAX_CHUNK_EXT) CERR("chunk extension too long");
            i++;
            break;
        case C_SIZE_LF:
            if (ch != '\n') CERR("bare CR in a chunk size line");
            i++;
        size_done:
            c->digits = 0;
            c->state = c->remaining ? C_DATA : C_TRAILER;
            break;
        case C_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > c->remaining) n = (size_t)c->remaining;
            *data = buf + i;
            *data_len = n;
            c->remaining -= n;
            if (!c->remaining) c->state = C_DATA_CR;
            *used = i + n;
            return MF_HPC_DATA;
        }
        case C_DATA_CR:
            if (ch == '\r') { c->state = C_DATA_LF; i++; break; }
            if (ch == '\n') { c->state = C_SIZE; i++; break; }
            CERR("chunk data longer than its size");
        case C_DATA_LF:
            if (ch != '\n') CERR("bare CR after chunk data");
            c->state = C_SIZE;
            i++;
            break;
        case C_TRAILER:
            if (ch == '\r') { c->state = C_END_LF; i++; break; }
            if (ch == '\n') { c->state = C_DONE; i++; *used = i; return MF_HPC_DONE; }
            c->state = C_TRAILER_LINE;
            break;
        case C_TRAILER_LINE:
            if (++c->trailers > MF_HP_MAX_TRAILERS) CERR("trailer section too long");
            if (ch == '\n') { c->state = C_TRAILER; i++; break; }
            if (ch == '\r') { c->state = C_TRAILER_LF; i++; break; }
            if (!is_value_char(ch)) CERR("control character in a trailer");
            i++;
            break;
        case C_TRAILER_LF:
            if (ch != '\n') CERR("bare CR in a trailer");
            c->state = C_TRAILER;
            i++;
            break;
        case C_END_LF:
            if (ch != '\n') CERR("bare CR at the end of the chunked body");
            c->state = C_DONE;
            i++;
            *used = i;
            return MF_HPC_DONE;
        default: *used = i; return MF_HPC_DONE;
        }
    }
    *used = i;
    return c->state == C_DONE ? MF_HPC_DONE : MF_HPC_MORE;
#undef CERR
}

long mf_hp_unescape(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == '%') {
            if (i + 2 >= len) return -1;
            int hi = hexval((unsigned char)in[i + 1]), lo = hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            int v = hi * 16 + lo;
            if (v != 0 && v != '/') {
                ch = (char)v;
                i += 2;
            }
        }
        if (o + 1 >= cap) return -1;
        out[o++] = ch;
    }
    if (cap == 0) return -1;
    out[o] = '\0';
    return (long)o;
}
