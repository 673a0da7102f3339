/* failmalloc.c -- LD_PRELOAD shim for the out-of-memory tests
 * (tests/py/test_reliability.py): every allocation of at least
 * MF_FAILMALLOC_MIN bytes fails -- NULL with errno ENOMEM -- and smaller ones go
 * to glibc.  Deterministic: which requests fail depends only on their sizes,
 * so a test can make a request's big allocations (body, pixels, tensors) fail
 * while start-up and small allocations succeed.  Without the variable nothing
 * fails.  Not for sanitizer builds (their runtime must come first; there the
 * tests use ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=N,
 * the same rule). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);

/* These replace glibc's for the whole process; prototypes for -Wmissing-prototypes. */
void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
void *aligned_alloc(size_t align, size_t n);
void *memalign(size_t align, size_t n);
int posix_memalign(void **out, size_t align, size_t n);

static size_t limit(void)
{
    static size_t cached; /* 0: not read yet; SIZE_MAX: no limit */
    if (!cached) {
        const char *v = getenv("MF_FAILMALLOC_MIN"); /* getenv does not allocate */
        size_t n = 0;
        for (; v && *v >= '0' && *v <= '9'; v++) n = n * 10 + (size_t)(*v - '0');
        cached = n ? n : SIZE_MAX;
    }
    return cached;
}

static int fails(size_t n)
{
    if (n < limit()) return 0;
    errno = ENOMEM;
    return 1;
}

void *malloc(size_t n) { return fails(n) ? NULL : __libc_malloc(n); }

void *calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    return fails(n * size) ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) { return fails(n) ? NULL : __libc_realloc(p, n); }

void *aligned_alloc(size_t align, size_t n) { return fails(n) ? NULL : __libc_memalign(align, n); }

void *memalign(size_t align, size_t n) { return fails(n) ? NULL : __libc_memalign(align, n); }

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    if (fails(n)) return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
