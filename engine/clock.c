/* clock.c -- the monotonic clock of mf_util.h. */
#include "mf_util.h"

#include <time.h>

uint64_t mf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double mf_seconds_since(uint64_t t0) { return (double)(mf_now_ns() - t0) * 1e-9; }

double mf_ms_since(uint64_t t0) { return (double)(mf_now_ns() - t0) * 1e-6; }
