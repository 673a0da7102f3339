/* alloc.c -- 64-byte aligned memory for workspaces, and the weights arena
 * (internal.h).
 *
 * The arena holds a model's weights in chunks of anonymous memory, each
 * 2 MiB aligned and advised MADV_HUGEPAGE, so that with transparent huge
 * pages set to "madvise" (or "always") the weights sit in 2 MiB pages: at
 * batch 1 the GEMMs stream every weight once per image, and 4 KiB pages cost
 * them a TLB miss every 4 KiB.  Chunks come straight from mmap and go back
 * with munmap, never through malloc: an unload returns all of it, and the
 * huge-page advice never reaches memory that malloc later hands to someone
 * else (a malloc'd arena with the advice made RSS grow over load/unload
 * cycles).  Their bookkeeping lives in the arena struct, allocated before
 * the build, so an untouched chunk stays unfaulted and no small live block
 * lands among the load's temporaries.  Chunks start at 2 MiB and double up to 16 MiB, so a small model
 * costs one 2 MiB page, and a piece goes to the first chunk with room for
 * it, so the huge pages are nearly all weights (at most the last, partly
 * used 2 MiB page of each chunk is not).  After the build the chunks are made read-only
 * (mf_arena_seal): a stray write into the weights faults instead of
 * changing every later answer.
 *
 * Under AddressSanitizer every allocation is its own malloc'd block
 * instead (the sanitizer's redzones then catch a kernel reading past a
 * weight array, which one contiguous chunk would hide). */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

void *mf_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void mf_free(void *p) { free(p); }

#if defined(__SANITIZE_ADDRESS__)
#define MF_ARENA_PLAIN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_ARENA_PLAIN 1
#endif
#endif

#define HUGE_PAGE ((size_t)2 << 20)
#define CHUNK_MAX ((size_t)16 << 20)

#define MAX_CHUNKS 48

typedef struct chunk {
    uint8_t *base; /* the mapping, HUGE_PAGE aligned */
    size_t len;    /* its bytes (a multiple of HUGE_PAGE) */
    size_t used;   /* handed out from base */
} chunk;

/* One allocation, made before the build's temporaries (the chunks' books
 * inside it, never in the heap between them: a small live block above the
 * freed temporaries of a load kept glibc from trimming them). */
struct mf_arena {
    chunk chunks[MAX_CHUNKS];
    int n;           /* chunks mapped */
    size_t next_len; /* the next chunk's size */
    int huge;        /* chunks advised MADV_HUGEPAGE */
    void **plain;    /* MF_ARENA_PLAIN: every allocation */
    size_t n_plain, cap_plain;
};

mf_arena *mf_arena_new(int huge)
{
    mf_arena *a = calloc(1, sizeof *a);
    if (a) {
        a->next_len = HUGE_PAGE;
        a->huge = huge;
    }
    return a;
}

#ifdef MF_ARENA_PLAIN
void *mf_arena_alloc(mf_arena *a, size_t bytes)
{
    if (a->n_plain == a->cap_plain) {
        size_t cap = a->cap_plain ? a->cap_plain * 2 : 512;
        void **p = realloc(a->plain, cap * sizeof *p);
        if (!p) return NULL;
        a->plain = p;
        a->cap_plain = cap;
    }
    void *p = mf_alloc(bytes);
    if (p) a->plain[a->n_plain++] = p;
    return p;
}
#else
/* len bytes (a multiple of HUGE_PAGE) at a HUGE_PAGE boundary, or NULL */
static void *map_aligned(size_t len, int huge)
{
    if (len > SIZE_MAX - HUGE_PAGE) return NULL;
    uint8_t *m = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    const size_t head = (HUGE_PAGE - (uintptr_t)m % HUGE_PAGE) % HUGE_PAGE;
    if (head) munmap(m, head);
    if (HUGE_PAGE - head) munmap(m + head + len, HUGE_PAGE - head);
    if (huge) madvise(m + head, len, MADV_HUGEPAGE); /* advice: fine to fail (THP off, old kernel) */
    return m + head;
}

void *mf_arena_alloc(mf_arena *a, size_t bytes)
{
    if (bytes == 0) bytes = 64;
    if (bytes > SIZE_MAX / 2) return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    chunk *c = NULL;
    for (int i = 0; i < a->n && !c; i++) /* first fit: the older chunks' ends fill too */
        if (a->chunks[i].len - a->chunks[i].used >= bytes) c = &a->chunks[i];
    if (!c) {
        if (a->n == MAX_CHUNKS) return NULL;
        size_t len = a->next_len;
        if (len < bytes) len = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        uint8_t *base = map_aligned(len, a->huge);
        if (!base) return NULL;
        c = &a->chunks[a->n++];
        *c = (chunk){base, len, 0};
        /* 2, 4, 8, then 16 MiB; past 16 chunks doubling again (48 reach far beyond any model) */
        if (a->next_len < CHUNK_MAX || a->n >= 16) a->next_len *= 2;
    }
    void *p = c->base + c->used;
    c->used += bytes;
    return p;
}
#endif

void mf_arena_seal(mf_arena *a)
{
    if (!a) return;
    for (int i = 0; i < a->n; i++) mprotect(a->chunks[i].base, a->chunks[i].len, PROT_READ); /* best effort */
}

void mf_arena_free(mf_arena *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n_plain; i++) mf_free(a->plain[i]);
    free(a->plain);
    for (int i = 0; i < a->n; i++) munmap(a->chunks[i].base, a->chunks[i].len);
    free(a);
}
