/* validate.c -- request-head checks; see validate.h. */
#include "validate.h"

#include <stdint.h>

#include <string.h>
#include <strings.h>

/* Constant time in the content of `given`: the loop runs over the key. */
static int key_equal(const char *given, const char *key)
{
    size_t gl = strlen(given), kl = strlen(key);
    volatile unsigned char diff = gl != kl;
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)((i < gl ? given[i] : 0) ^ key[i]);
    return diff == 0;
}

int mf_bearer_ok(const char *authorization, const char *api_key)
{
    if (!api_key[0]) return 1;
    const char *h = authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_equal(h, api_key);
}

int mf_parse_top_k(const char *v, size_t len, int classes)
{
    if (!v) return MF_DEFAULT_TOP_K < classes ? MF_DEFAULT_TOP_K : classes;
    if (len == 0) return -1;
    long long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        if (n <= classes) n = n * 10 + (v[i] - '0'); /* stop growing once above the cap */
    }
    if (n < 1) return -1;
    return n > classes ? classes : (int)n;
}

void mf_media_type(const char *ct, char *out, size_t cap)
{
    size_t n = 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && *ct != '\t' && n + 1 < cap; ct++)
        out[n++] = (char)((*ct >= 'A' && *ct <= 'Z') ? *ct + 32 : *ct);
    out[n] = '\0';
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

int mf_base64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen)
{
    *outlen = 0;
    if (n % 4 == 0 && n >= 2 && s[n - 1] == '=') n -= s[n - 2] == '=' ? 2 : 1; /* padding */
    if (n % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* the last character's unused bits must be zero */
    *outlen = o;
    return 0;
}
