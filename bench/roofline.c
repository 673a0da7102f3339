/* roofline.c -- how fast could batch-1, one-thread inference be on this CPU?
 *
 * Measures one core's limits:
 *   - the fp32 FMA peak with 256- and 512-bit vectors, each with 8 to 24
 *     independent accumulators (an FMA's latency is 4 cycles and two issue
 *     per cycle, so fewer than 8 chains cannot reach the peak; the best
 *     count is reported);
 *   - the AVX512-BF16 peak (vdpbf16ps: 16 lanes x 2 products per
 *     instruction) where the CPU has it;
 *   - the AMX-BF16 peak (tdpbf16ps, 16 x 16 x 32 products per instruction)
 *     where the CPU has it and the OS grants the tile permission: with the
 *     operands held in tiles, and with two A and two B tiles loaded from L1
 *     for every four products (the 2 x 2 blocking of engine/kernels_amx.c);
 *   - read bandwidth from L2, L3 and DRAM (a sum over buffers of half the
 *     L2, a few times L2, and twice the L3 as sysfs reports them).
 * For each variant it then prints the floors they imply at 224x224, batch
 * 1, in each precision:
 *   compute floor  = 2 * MAdds / peak; in bf16 the 1x1 convolutions and
 *                    linears at the bf16 peak (AMX, else vdpbf16ps), the
 *                    rest (depthwise, stem, attention) at the fp32 peak;
 *   estimate       = compute floor + token-side weight bytes (4 per weight
 *                    in fp32, 2 in bf16) / L3 or DRAM bandwidth: at batch 1
 *                    the linears are matrix-vector products that stream
 *                    their weights once per image, from L3 when the model
 *                    stays there between images, else from memory.
 * Compare `build/mobileformer bench --arch A --batch 1 --threads 1
 * [--precision bf16]` to them.
 *
 *   make roofline            (ARCHS="mobile_former_26m ..." to choose) */
#include "mf.h"

#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <cpuid.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define STEPS 250000L /* about 1 ms per run: short enough to fit between other tasks on a busy machine */

/* a[i] = a[i] * m + c over NC chains; NC a constant so they stay in registers */
#define FMA_PEAK(NAME, ATTR, VT, SET1, FMA, LANES, NC)                                                          \
    ATTR static double NAME(float *sink)                                                                       \
    {                                                                                                          \
        VT a[NC], m = SET1(0.999f), c = SET1(1e-4f);                                                           \
        for (int i = 0; i < NC; i++) a[i] = SET1((float)i);                                                    \
        double t0 = now();                                                                                     \
        for (long s = 0; s < STEPS; s++) {                                                                     \
            _Pragma("GCC unroll 24") for (int i = 0; i < NC; i++) a[i] = FMA(a[i], m, c);                     \
        }                                                                                                      \
        double dt = now() - t0;                                                                                \
        for (int i = 0; i < NC; i++) *sink += a[i][0];                                                         \
        return STEPS * (double)NC * LANES * 2 / dt;                                                            \
    }

#define A512 __attribute__((target("avx512f")))
#define A256 __attribute__((target("avx2,fma")))
FMA_PEAK(fma512_8, A512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, 8)
FMA_PEAK(fma512_12, A512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, 12)
FMA_PEAK(fma512_16, A512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, 16)
FMA_PEAK(fma512_24, A512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, 24)
FMA_PEAK(fma256_8, A256, __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, 8)
FMA_PEAK(fma256_12, A256, __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, 12)
FMA_PEAK(fma256_16, A256, __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, 16)
FMA_PEAK(fma256_24, A256, __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, 24)

#define ABF16 __attribute__((target("avx512f,avx512bf16")))
/* vdpbf16ps: each lane adds two products */
#define DP_PEAK(NAME, NC)                                                                                      \
    ABF16 static double NAME(float *sink)                                                                      \
    {                                                                                                          \
        __m512 a[NC];                                                                                          \
        const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f), y = (__m512bh)_mm512_set1_epi32(0x38d138d1); \
        for (int i = 0; i < NC; i++) a[i] = _mm512_set1_ps((float)i);                                          \
        double t0 = now();                                                                                     \
        for (long s = 0; s < STEPS; s++) {                                                                     \
            _Pragma("GCC unroll 24") for (int i = 0; i < NC; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);        \
        }                                                                                                      \
        double dt = now() - t0;                                                                                \
        for (int i = 0; i < NC; i++) *sink += _mm512_reduce_add_ps(a[i]);                                      \
        return STEPS * (double)NC * 16 * 4 / dt;                                                               \
    }
DP_PEAK(dp_12, 12)
DP_PEAK(dp_16, 16)
DP_PEAK(dp_24, 24)

static int has_avx512bf16(void)
{
    unsigned a, b, c, d;
    if (!__builtin_cpu_supports("avx512f") || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;
}

/* AMX-TILE + AMX-BF16, tile state enabled by the OS, and Linux's permission. */
static int amx_ready(void)
{
    unsigned a, b, c, d, lo, hi;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1)) return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

typedef struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

#define AAMX __attribute__((target("amx-tile,amx-bf16")))
/* with_loads: two A and two B tiles reloaded (from L1) for every four products */
AAMX static double amx_peak(int with_loads, float *sink)
{
    static uint16_t buf[4][512] __attribute__((aligned(64)));
    static float out[256] __attribute__((aligned(64)));
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 512; i++) buf[t][i] = 0x3c00 + (uint16_t)(i & 7);
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, buf[0], 64);
    _tile_loadd(5, buf[1], 64);
    _tile_loadd(6, buf[2], 64);
    _tile_loadd(7, buf[3], 64);
    const long n = STEPS;
    double t0 = now();
    if (with_loads)
        for (long s = 0; s < n; s++) {
            _tile_loadd(4, buf[0], 64);
            _tile_loadd(6, buf[2], 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, buf[3], 64);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, buf[1], 64);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    else
        for (long s = 0; s < n; s++) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    double dt = now() - t0;
    _tile_stored(0, out, 64);
    _tile_release();
    *sink += out[0];
    return n * 4.0 * 16 * 16 * 32 * 2 / dt;
}

#define RUNS 15

/* Best of RUNS runs of a peak probe. */
static double best(double (*f)(float *), float *sink)
{
    double b = 0;
    for (int r = 0; r < RUNS; r++) {
        double p = f(sink);
        if (p > b) b = p;
    }
    return b;
}

/* Read bandwidth over a buffer of `bytes`, best of several passes. */
__attribute__((target("avx512f"))) static double read_bw512(const float *buf, size_t n, int passes)
{
    double bestv = 0;
    volatile float sink = 0;
    for (int r = 0; r < passes; r++) {
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        double t0 = now();
        for (size_t i = 0; i < n; i += 64) {
            s0 = _mm512_add_ps(s0, _mm512_load_ps(buf + i));
            s1 = _mm512_add_ps(s1, _mm512_load_ps(buf + i + 16));
            s2 = _mm512_add_ps(s2, _mm512_load_ps(buf + i + 32));
            s3 = _mm512_add_ps(s3, _mm512_load_ps(buf + i + 48));
        }
        double dt = now() - t0, bw = n * sizeof(float) / dt;
        sink += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
        if (bw > bestv) bestv = bw;
    }
    return bestv;
}

__attribute__((target("avx2"))) static double read_bw256(const float *buf, size_t n, int passes)
{
    double bestv = 0;
    volatile float sink = 0;
    for (int r = 0; r < passes; r++) {
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
        if (bw > bestv) bestv = bw;
    }
    return bestv;
}

static double read_bandwidth(size_t bytes, int has512)
{
    bytes = (bytes + 4095) & ~(size_t)4095;
    float *buf = aligned_alloc(4096, bytes);
    if (!buf) return 0;
    const size_t n = bytes / sizeof(float);
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023);
    /* about 4 GB read in all, at least 3 passes */
    int passes = (int)((4ull << 30) / bytes);
    passes = passes < 3 ? 3 : passes > 4000 ? 4000 : passes;
    double bw = has512 ? read_bw512(buf, n, passes) : read_bw256(buf, n, passes);
    free(buf);
    return bw;
}

/* A cache level's size from sysfs (bytes), or 0. */
static size_t cache_size(int level)
{
    for (int i = 0; i < 8; i++) {
        char path[128], buf[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f) break;
        int lv = fgets(buf, sizeof buf, f) ? atoi(buf) : -1;
        fclose(f);
        if (lv != level) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!(f = fopen(path, "r"))) break;
        size_t kb = fgets(buf, sizeof buf, f) ? strtoul(buf, NULL, 10) : 0;
        int mega = strchr(buf, 'M') != NULL;
        fclose(f);
        return kb * (mega ? 1048576 : 1024);
    }
    return 0;
}

static void cpu_model(char *out, size_t n)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    int family = -1, model = -1;
    snprintf(out, n, "unknown CPU");
    while (f && fgets(line, sizeof line, f)) {
        char *v = strchr(line, ':');
        if (!v) continue;
        v += 2;
        v[strcspn(v, "\n")] = 0;
        if (!strncmp(line, "model name", 10)) snprintf(out, n, "%s", v);
        else if (!strncmp(line, "cpu family", 10) && family < 0) family = atoi(v);
        else if (!strncmp(line, "model\t", 6) && model < 0) model = atoi(v);
        if (!strncmp(line, "flags", 5)) break;
    }
    if (f) fclose(f);
    size_t l = strlen(out);
    if (family >= 0 && l < n) snprintf(out + l, n - l, " (family %d, model %d)", family, model);
}

int main(int argc, char **argv)
{
    float sink = 0;
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    const int has512 = __builtin_cpu_supports("avx512f"), hasbf16 = has_avx512bf16(), hasamx = hasbf16 && amx_ready();
    printf("cpu: %s; AVX-512 %s, AVX512-BF16 %s, AMX-BF16 %s\n", cpu, has512 ? "yes" : "no", hasbf16 ? "yes" : "no",
           hasamx ? "yes" : "no");
    printf("one core, GFLOP/s (a multiply-add is 2 FLOP), best of %d runs per accumulator count:\n", RUNS);
    double p256[4] = {best(fma256_8, &sink), best(fma256_12, &sink), best(fma256_16, &sink), best(fma256_24, &sink)};
    double f256 = 0, f512 = 0, fbf = 0, famx = 0, famx_l = 0;
    for (int i = 0; i < 4; i++) f256 = p256[i] > f256 ? p256[i] : f256;
    printf("  fp32 FMA 256-bit   %7.1f  (8/12/16/24 accumulators: %.1f %.1f %.1f %.1f)\n", f256 / 1e9, p256[0] / 1e9,
           p256[1] / 1e9, p256[2] / 1e9, p256[3] / 1e9);
    if (has512) {
        double p512[4] = {best(fma512_8, &sink), best(fma512_12, &sink), best(fma512_16, &sink), best(fma512_24, &sink)};
        for (int i = 0; i < 4; i++) f512 = p512[i] > f512 ? p512[i] : f512;
        printf("  fp32 FMA 512-bit   %7.1f  (8/12/16/24 accumulators: %.1f %.1f %.1f %.1f)\n", f512 / 1e9,
               p512[0] / 1e9, p512[1] / 1e9, p512[2] / 1e9, p512[3] / 1e9);
    } else {
        printf("  fp32 FMA 512-bit   -- (no AVX-512)\n");
    }
    if (hasbf16) {
        double d[3] = {best(dp_12, &sink), best(dp_16, &sink), best(dp_24, &sink)};
        for (int i = 0; i < 3; i++) fbf = d[i] > fbf ? d[i] : fbf;
        printf("  bf16 vdpbf16ps     %7.1f  (12/16/24 accumulators: %.1f %.1f %.1f)\n", fbf / 1e9, d[0] / 1e9,
               d[1] / 1e9, d[2] / 1e9);
    } else {
        printf("  bf16 vdpbf16ps     -- (no AVX512-BF16)\n");
    }
    if (hasamx) {
        for (int r = 0; r < RUNS; r++) {
            double a = amx_peak(0, &sink), b = amx_peak(1, &sink);
            famx = a > famx ? a : famx;
            famx_l = b > famx_l ? b : famx_l;
        }
        printf("  bf16 AMX tdpbf16ps %7.1f  (operands in tiles); %.1f with 2 A + 2 B tile loads per 4 products\n",
               famx / 1e9, famx_l / 1e9);
    } else {
        printf("  bf16 AMX tdpbf16ps -- (no AMX-BF16, or the OS refused the tile permission)\n");
    }
    const double f32 = f512 > f256 ? f512 : f256, fb16 = famx_l > 0 ? famx_l : fbf > 0 ? fbf : f32;
    const char *b16name = famx_l > 0 ? "AMX with loads" : fbf > 0 ? "vdpbf16ps" : "fp32 FMA (portable bf16)";

    size_t l2 = cache_size(2), l3 = cache_size(3);
    if (!l2) l2 = 1u << 20;
    if (!l3) l3 = 32u << 20;
    size_t dram = 2 * l3 < ((size_t)512 << 20) ? (size_t)512 << 20 : 2 * l3;
    if (dram > ((size_t)2 << 30)) dram = (size_t)2 << 30;
    const size_t l3set = 4 * l2 < l3 / 2 ? 4 * l2 : l3 / 2;
    double bw2 = read_bandwidth(l2 / 2, has512), bw3 = read_bandwidth(l3set, has512), bwm = read_bandwidth(dram, has512);
    printf("read bandwidth, one core: L2 %.1f GB/s (%zu KiB), L3 %.1f GB/s (%zu MiB), DRAM %.1f GB/s (%zu MiB)%s\n",
           bw2 / 1e9, l2 / 2 >> 10, bw3 / 1e9, l3set >> 20, bwm / 1e9, dram >> 20, sink == 12345.f ? " " : "");
    printf("floors at 224x224, batch 1, one core (fp32 at %.1f GFLOP/s; bf16 GEMMs at %.1f, %s):\n", f32 / 1e9,
           fb16 / 1e9, b16name);

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
        double conv1 = 0, lin = 0, other = 0; /* weights: 1x1 convs, linears, depthwise + stem */
        for (int s = 0; s < ns; s++) {
            if (specs[s].ndim < 2) continue; /* biases and norms: folded or tiny */
            if (specs[s].ndim == 2 && strcmp(specs[s].name, "tokens.weight") != 0) lin += specs[s].numel;
            else if (specs[s].ndim == 4 && specs[s].shape[2] == 1) conv1 += specs[s].numel;
            else other += specs[s].numel;
        }
        free(specs);
        double mk[MF_MADDS_KINDS];
        mf_arch_madds_by_kind(&a, 1000, 224, 224, mk);
        const double gemm = mk[MF_MADDS_CONV1X1] + mk[MF_MADDS_LINEAR];
        const double rest = mk[MF_MADDS_DEPTHWISE] + mk[MF_MADDS_STEM] + mk[MF_MADDS_ATTENTION];
        printf("%s: %.1f M MAdds (1x1 %.1f, linear %.1f, depthwise %.1f, stem %.1f, attention %.1f); "
               "weights %.1f M (1x1 %.1f, linear %.1f)\n",
               name, (gemm + rest) / 1e6, mk[MF_MADDS_CONV1X1] / 1e6, mk[MF_MADDS_LINEAR] / 1e6,
               mk[MF_MADDS_DEPTHWISE] / 1e6, mk[MF_MADDS_STEM] / 1e6, mk[MF_MADDS_ATTENTION] / 1e6,
               (conv1 + lin + other) / 1e6, conv1 / 1e6, lin / 1e6);
        for (int prec = 0; prec < 2; prec++) {
            const double tg = 2 * gemm / (prec ? fb16 : f32) * 1e3, tr = 2 * rest / f32 * 1e3;
            const double wb = lin * (prec ? 2 : 4), w3 = wb / bw3 * 1e3, wm = wb / bwm * 1e3;
            printf("  %s  compute floor %6.2f ms (GEMMs %5.2f, rest %5.2f); linear weights %5.1f MB: %5.2f ms from L3, "
                   "%5.2f from DRAM; estimate %5.2f-%5.2f ms\n",
                   prec ? "bf16" : "fp32", tg + tr, tg, tr, wb / 1e6, w3, wm, tg + tr + w3, tg + tr + wm);
        }
    }
    return 0;
}
