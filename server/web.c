/* web.c -- the embedded page; see web.h.
 *
 * Each file of server/web/ is pulled into .rodata by the assembler's
 * .incbin, between a start and an end label, so the build needs no
 * generator (xxd, ld -b binary) and the bytes are the file's exactly.  The
 * path in .incbin is relative to the directory the compiler runs in: the
 * Makefile compiles from the repository root.  -MMD cannot see .incbin, so
 * the Makefile names the server/web/ files as prerequisites of web.o.
 */
#include "web.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Labels are local to this object (no .globl); a NUL follows each file so
 * the bytes are also a C string in a debugger. */
#define WEB_EMBED(sym, file)                                                                 \
    __asm__(".pushsection .rodata.mf_web_" #sym ", \"a\", @progbits\n"                        \
            ".balign 16\n"                                                                   \
            "mf_web_" #sym "_start:\n"                                                       \
            ".incbin \"" file "\"\n"                                                         \
            "mf_web_" #sym "_end:\n"                                                         \
            ".byte 0\n"                                                                      \
            ".popsection\n");                                                                \
    extern const unsigned char mf_web_##sym##_start[] __attribute__((visibility("hidden"))); \
    extern const unsigned char mf_web_##sym##_end[] __attribute__((visibility("hidden")))

WEB_EMBED(index, "server/web/index.html");
WEB_EMBED(css, "server/web/app.css");
WEB_EMBED(js, "server/web/app.js");

/* The script and the style are files of their own, so the policy needs no
 * 'unsafe-inline'; img-src allows the blob: URL of the chosen file's
 * preview and the empty data: favicon. */
#define WEB_CSP                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "  \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

#define ETAG_LEN 19 /* '"' + 16 hex digits + '"' + NUL */

typedef struct web_file {
    mf_web_asset asset;       /* what callers see; len, etag and headers set by finish_files() */
    const unsigned char *end; /* end label of the embedded bytes */
    char etag[ETAG_LEN];      /* asset.etag points here */
    const char *headers[13];  /* asset.headers points here */
} web_file;

#define WEB_FILE(p, ctype, sym) \
    {{p, ctype, mf_web_##sym##_start, 0, NULL, NULL}, mf_web_##sym##_end, "", {NULL}}

static web_file files[] = {
    WEB_FILE("/", "text/html; charset=utf-8", index),
    WEB_FILE("/index.html", "text/html; charset=utf-8", index),
    WEB_FILE("/app.css", "text/css; charset=utf-8", css),
    WEB_FILE("/app.js", "text/javascript; charset=utf-8", js),
};

#define N_FILES (sizeof files / sizeof files[0])

static pthread_once_t files_once = PTHREAD_ONCE_INIT;

/* Lengths are differences of link-time addresses, not constant expressions,
 * so they are set here, once.  The ETag is FNV-1a 64 of the bytes: it
 * changes exactly when a rebuilt binary serves a different file. */
static void finish_files(void)
{
    for (size_t i = 0; i < N_FILES; i++) {
        web_file *f = &files[i];
        mf_web_asset *a = &f->asset;
        a->len = (size_t)(f->end - a->data);
        uint64_t h = 0xcbf29ce484222325u;
        for (size_t j = 0; j < a->len; j++) h = (h ^ a->data[j]) * 0x100000001b3u;
        snprintf(f->etag, sizeof f->etag, "\"%016llx\"", (unsigned long long)h);
        a->etag = f->etag;
        const char *hs[] = {"Content-Security-Policy", WEB_CSP, "X-Content-Type-Options", "nosniff",
                            "Referrer-Policy", "no-referrer", "X-Frame-Options", "DENY",
                            "Cache-Control", "no-cache", "ETag", f->etag, NULL};
        _Static_assert(sizeof hs == sizeof f->headers, "web_file.headers holds every header");
        memcpy(f->headers, hs, sizeof hs);
        a->headers = f->headers;
    }
}

const mf_web_asset *mf_web_find(const char *path)
{
    pthread_once(&files_once, finish_files);
    for (size_t i = 0; i < N_FILES; i++)
        if (strcmp(files[i].asset.path, path) == 0) return &files[i].asset;
    return NULL;
}
