/* testutil.h -- small helpers shared by the Check suites. */
#ifndef MF_TESTUTIL_H
#define MF_TESTUTIL_H

#include <check.h>
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

#endif
