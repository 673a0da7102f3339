/* roofline.c -- how fast could batch-1, one-thread inference be on this CPU?
 *
 * Measures two machine limits on one core: the FMA peak (independent
 * vector FMAs in registers, 512-bit where the CPU has AVX-512, else 256-bit)
 * and the read bandwidth from memory (a 256 MiB sum).  For each variant it
 * then prints the floors they imply at 224x224, batch 1:
 *   compute floor  = 2 * MAdds / FMA peak
 *   memory floor   = all weight bytes / read bandwidth, if weights do not
 *                    stay in cache between images (true of the bigger
 *                    variants, which exceed L2 and share L3 with everything
 *                    else; a variant that fits in L3 can beat it)
 *   estimate       = compute floor + 2-D (token-side linear) weight bytes /
 *                    bandwidth: at batch 1 the linears are matrix-vector
 *                    products that cannot hide their memory traffic.
 * Compare `build/mobileformer bench --arch A --batch 1 --threads 1` to them.
 *
 *   make roofline            (ARCHS="mobile_former_26m ..." to choose) */
#include "mf.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CHAINS 24
#define STEPS 4000000L

__attribute__((target("avx512f"))) static double peak512(float *sink)
{
    __m512 a[CHAINS], m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
    double t0 = now();
    for (long s = 0; s < STEPS; s++)
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
    double dt = now() - t0;
    for (int i = 0; i < CHAINS; i++) *sink += _mm512_reduce_add_ps(a[i]);
    return STEPS * (double)CHAINS * 32 / dt;
}

__attribute__((target("avx2,fma"))) static double peak256(float *sink)
{
    __m256 a[CHAINS], m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps((float)i);
    double t0 = now();
    for (long s = 0; s < STEPS; s++)
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
    double dt = now() - t0;
    float v[8];
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(v, a[i]);
        *sink += v[0];
    }
    return STEPS * (double)CHAINS * 16 / dt;
}

__attribute__((target("avx2"))) static double read_bandwidth(void)
{
    const size_t n = (size_t)64 << 20; /* floats: 256 MiB */
    float *buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023);
    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        double t0 = now();
        for (size_t i = 0; i < n; i += 32) {
            s0 = _mm256_add_ps(s0, _mm256_load_ps(buf + i));
            s1 = _mm256_add_ps(s1, _mm256_load_ps(buf + i + 8));
            s2 = _mm256_add_ps(s2, _mm256_load_ps(buf + i + 16));
            s3 = _mm256_add_ps(s3, _mm256_load_ps(buf + i + 24));
        }
        double dt = now() - t0, bw = n * sizeof(float) / dt;
        float v[8];
        _mm256_storeu_ps(v, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        sink += v[0];
        if (bw > best) best = bw;
    }
    free(buf);
    return best;
}

int main(int argc, char **argv)
{
    float sink = 0;
    int has512 = __builtin_cpu_supports("avx512f");
    double peak = 0;
    for (int r = 0; r < 3; r++) {
        double p = has512 ? peak512(&sink) : peak256(&sink);
        if (p > peak) peak = p;
    }
    double bw = read_bandwidth();
    printf("one core: FMA peak %.1f GFLOP/s (%s), read bandwidth %.1f GB/s%s\n", peak / 1e9,
           has512 ? "512-bit" : "256-bit", bw / 1e9, sink == 12345.f ? " " : "");
    const char *defaults[] = {"mobile_former_26m", "mobile_former_151m", "mobile_former_508m"};
    int n = argc > 1 ? argc - 1 : 3;
    for (int i = 0; i < n; i++) {
        const char *name = argc > 1 ? argv[i + 1] : defaults[i];
        mf_arch a;
        if (mf_arch_preset(name, &a) != MF_OK) {
            fprintf(stderr, "roofline: unknown architecture '%s'\n", name);
            return 1;
        }
        mf_tensor_spec *specs = NULL;
        int ns = mf_arch_tensor_specs(&a, 1000, &specs);
        if (ns <= 0) {
            fprintf(stderr, "roofline: cannot list the tensors of %s\n", name);
            return 1;
        }
        double all = 0, lin = 0;
        for (int s = 0; s < ns; s++) {
            if (specs[s].ndim < 2) continue; /* biases and norms: folded or tiny */
            all += specs[s].numel * 4.0;
            if (specs[s].ndim == 2) lin += specs[s].numel * 4.0;
        }
        free(specs);
        double madds = mf_arch_madds(&a, 1000, 224, 224);
        double tc = 2 * madds / peak * 1e3, tm = all / bw * 1e3, tl = lin / bw * 1e3;
        printf("%-20s %6.1f M MAdds  weights %5.1f MB (linear %5.1f MB)  compute floor %6.2f ms  memory floor "
               "%5.2f ms  compute + linear weights %6.2f ms\n",
               name, madds / 1e6, all / 1e6, lin / 1e6, tc, tm, tc + tl);
    }
    return 0;
}
