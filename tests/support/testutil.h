/* testutil.h -- small helpers shared by the Check suites: the build
 * directory, running a suite, and loading fixture files. */
#ifndef MF_TESTUTIL_H
#define MF_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Directory of the build (binaries), from MF_BUILD (set by tests/run.sh). */
static inline const char *tu_build_dir(void)
{
    const char *b = getenv("MF_BUILD");
    return b && *b ? b : "build";
}

/* Run a suite with CK_NORMAL output; returns the process exit status. */
static inline int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* The whole of fixture dir/name (malloc'd; the test fails if it is missing). */
static inline uint8_t *tu_load_fixture(const char *dir, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "missing fixture %s (run tools/make_test_images.py)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

#endif
