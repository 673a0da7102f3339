/* fuzz.h -- helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * A target checks the contract of the function it drives (statuses in range,
 * outputs inside their buffers, nothing held after a failure) and calls
 * FUZZ_CHECK on each property: a broken one aborts, so libFuzzer records the
 * input as a crash just as it does for a sanitizer report.
 */
#ifndef MF_FUZZ_H
#define MF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Split data at each `sep` into at most max NUL-terminated fields, copied
 * into one malloc'd block returned through *block (free it).  Returns the
 * number of fields (>= 1); a field keeps any NUL bytes it held only up to
 * the first one, as C strings would. */
static inline int fuzz_split(const uint8_t *data, size_t size, uint8_t sep, char **fields, int max,
                             char **block)
{
    char *b = malloc(size + 1);
    if (!b) abort();
    memcpy(b, data, size);
    b[size] = '\0';
    int n = 0;
    char *p = b, *end = b + size;
    fields[n++] = p;
    for (; p < end && n < max; p++)
        if ((uint8_t)*p == sep) {
            *p = '\0';
            fields[n++] = p + 1;
        }
    *block = b;
    return n;
}

#endif
