/* web.h -- the page for people, served at GET /: upload an image, see the
 * top-k, where the time went, and a live panel from /metrics.
 *
 * The files of server/web/ are embedded in the binary at build time (web.c,
 * .incbin), so the service needs no directory to serve them from and no
 * path ever reaches the file system: a path that is not in the table is
 * simply not found.  Everything returned points into static storage and
 * lives as long as the process; nothing is allocated.
 */
#ifndef MF_WEB_H
#define MF_WEB_H

#include <stddef.h>

typedef struct mf_web_asset {
    const char *path;            /* URL path it answers, e.g. "/app.js" */
    const char *content_type;    /* Content-Type value */
    const unsigned char *data;   /* the file's bytes (read-only data of the binary) */
    size_t len;                  /* their length */
    const char *etag;            /* strong validator, quoted: "\"<16 hex digits>\"" */
    const char *const *headers;  /* every other header, name, value, ..., NULL (below) */
} mf_web_asset;

/* The asset at exactly `path` (no decoding, no normalisation), or NULL.
 * Thread-safe.
 *
 * Its headers, for the 200 and the 304 alike: Content-Security-Policy
 * (script, style and requests to this origin only, previews from blob:
 * URLs, no framing), X-Content-Type-Options: nosniff, Referrer-Policy:
 * no-referrer, X-Frame-Options: DENY, Cache-Control: no-cache (revalidate
 * with If-None-Match) and the ETag. */
const mf_web_asset *mf_web_find(const char *path);

#endif
