/* kernels.c -- which kernel sets run: CPU features from CPUID (and, for
 * AMX, the OS's permission to use the tile registers), and the MF_KERNELS
 * override the tests use to run every set on the same machine.
 *
 * A model gets two sets at build time (mf_kernels_choose): one for its 1x1
 * convolutions and linears, in the model's precision, and the fp32 set for
 * everything else.  Nothing here is per process except the feature probe,
 * so models of both precisions (or forced to different sets) can coexist. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MF_X86 1
#endif

int mf_cpu_has_avx512(void)
{
#ifdef MF_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int mf_cpu_has_avx2(void)
{
#ifdef MF_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int mf_cpu_stream_nt(void)
{
#ifdef MF_X86
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

#ifdef MF_X86
static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

/* CPUID.(7,1):EAX[5] */
int mf_cpu_has_avx512bf16(void)
{
#ifdef MF_X86
    unsigned a, b, c, d;
    if (!mf_cpu_has_avx512() || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;
#else
    return 0;
#endif
}

#ifdef MF_X86
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
static int amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

/* CPUID.(7,0):EDX[22] AMX-BF16, [24] AMX-TILE; XCR0[17,18] tile state
 * enabled by the OS; then Linux's per-process permission for the 8 KiB of
 * tile data (arch_prctl, kernel 5.16+), which every thread then has. */
static void amx_probe(void)
{
    unsigned a, b, c, d;
    if (!mf_cpu_has_avx512bf16() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (!((d >> 22) & 1) || !((d >> 24) & 1)) return;
    if ((xgetbv0() & (3ull << 17)) != (3ull << 17)) return;
    amx_ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

int mf_cpu_has_amx_bf16(void)
{
#ifdef MF_X86
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
#else
    return 0;
#endif
}

/* MF_KERNELS values: the fp32 and bf16 sets each forces. */
typedef struct kernel_choice {
    const char *name;
    const mf_kernels *fp32, *bf16;
} kernel_choice;

static const kernel_choice choices[] = {
    {"reference", &mf_kernels_ref, &mf_kernels_ref_bf16},
    {"portable", &mf_kernels_blas, &mf_kernels_blas_bf16},
    {"avx2", &mf_kernels_avx2, &mf_kernels_avx2_bf16},
    {"avx512", &mf_kernels_avx512, &mf_kernels_avx512_bf16},
    {"avx512bf16", &mf_kernels_avx512, &mf_kernels_avx512_bf16},
    {"amx", &mf_kernels_avx512, &mf_kernels_amx_bf16},
};

/* The CPU feature set k needs and this CPU lacks, or NULL. */
static const char *missing(const mf_kernels *k)
{
    if (k == &mf_kernels_amx_bf16 && !mf_cpu_has_amx_bf16())
        return "AMX-BF16 (or the operating system's permission to use AMX tiles)";
    if ((k == &mf_kernels_avx512_bf16 || k == &mf_kernels_amx_bf16) && !mf_cpu_has_avx512bf16()) return "AVX512-BF16";
    if (k == &mf_kernels_avx512 && !mf_cpu_has_avx512()) return "AVX-512";
    if ((k == &mf_kernels_avx2 || k == &mf_kernels_avx2_bf16) && !mf_cpu_has_avx2()) return "AVX2 and FMA";
    return NULL;
}

mf_status mf_kernels_choose(mf_precision p, const char *force, const mf_kernels **gemm, const mf_kernels **f32,
                            char *err, size_t errlen)
{
    if (!force) force = getenv("MF_KERNELS");
    const mf_kernels *best32 = mf_cpu_has_avx512() ? &mf_kernels_avx512
                               : mf_cpu_has_avx2()  ? &mf_kernels_avx2
                                                    : &mf_kernels_blas;
    if (!force || !*force || strcmp(force, "auto") == 0) {
        *f32 = best32;
        if (p == MF_PRECISION_FP32) *gemm = best32;
        else if (mf_cpu_has_amx_bf16()) *gemm = &mf_kernels_amx_bf16;
        else if (mf_cpu_has_avx512bf16()) *gemm = &mf_kernels_avx512_bf16;
        else if (mf_cpu_has_avx2()) *gemm = &mf_kernels_avx2_bf16;
        else *gemm = &mf_kernels_blas_bf16;
        return MF_OK;
    }
    for (size_t i = 0; i < sizeof choices / sizeof choices[0]; i++) {
        const kernel_choice *c = &choices[i];
        if (strcmp(force, c->name) != 0) continue;
        const mf_kernels *g = p == MF_PRECISION_BF16 ? c->bf16 : c->fp32;
        const char *lack = missing(g) ? missing(g) : missing(c->fp32);
        if (lack) {
            mf_set_err(err, errlen, "MF_KERNELS=%s: this CPU lacks %s", force, lack);
            return MF_ERR_ARG;
        }
        *gemm = g;
        *f32 = c->fp32;
        return MF_OK;
    }
    mf_set_err(err, errlen, "MF_KERNELS='%s' is not one of auto, reference, portable, avx2, avx512, avx512bf16, amx", force);
    return MF_ERR_ARG;
}

const char *mf_kernels_name(void)
{
    const mf_kernels *g, *f;
    if (mf_kernels_choose(MF_PRECISION_FP32, NULL, &g, &f, NULL, 0) != MF_OK) return "?";
    return f->name;
}
