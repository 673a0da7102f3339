/* mf_util.h -- the small helpers every part of the project shares (engine,
 * vision, server, command line), so each exists once: the monotonic clock,
 * error text into a caller's buffer, and softmax.
 *
 * All are thread-safe and allocate nothing.
 */
#ifndef MF_UTIL_H
#define MF_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CLOCK_MONOTONIC in nanoseconds: for durations and deadlines, never dates. */
uint64_t mf_now_ns(void);

/* Seconds and milliseconds since t0 (an mf_now_ns() value). */
double mf_seconds_since(uint64_t t0);
double mf_ms_since(uint64_t t0);

/* The error-text convention of every module: format into a caller-owned
 * buffer err of errlen bytes, which may be NULL (then nothing is written).
 * Always NUL-terminated when errlen > 0. */
void mf_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* probs[i] = exp(x[i] - max) / sum_j exp(x[j] - max), i < n: subtracting the
 * max keeps every exp() in [0, 1]; the sum is accumulated in double, so
 * thousands of terms add no visible rounding.  probs may alias x.  n >= 1. */
void mf_softmax(const float *x, int n, float *probs);

#ifdef __cplusplus
}
#endif
#endif
