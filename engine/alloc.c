/* alloc.c -- 64-byte aligned memory for weights and workspaces (internal.h). */
#include "internal.h"

#include <stdlib.h>

void *mf_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void mf_free(void *p) { free(p); }
