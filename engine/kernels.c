/* kernels.c -- which kernel set runs: CPU features from CPUID (through the
 * compiler's cpu-supports), and the MF_KERNELS override the tests use to
 * run every set on the same machine. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int mf_cpu_has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

const mf_kernels *mf_kernels_select(void)
{
    const char *env = getenv("MF_KERNELS");
    if (env && strcmp(env, "reference") == 0) return &mf_kernels_ref;
    if (env && strcmp(env, "portable") == 0) return &mf_kernels_blas;
    if (mf_cpu_has_avx512()) return &mf_kernels_avx512;
    return &mf_kernels_blas;
}

const char *mf_kernels_name(void) { return mf_kernels_select()->name; }
