/* mf_synthetic.h -- deterministic weights, for benchmarks (`bench --arch`)
 * and tests on architectures without a checkpoint.
 *
 * The rule (also tools/mfweights.py, which the PyTorch twin uses, so both
 * build the same model from a seed): tensor number i of the architecture's
 * state_dict order -- counting each BatchNorm's num_batches_tracked slot,
 * which mf_arch_tensor_specs omits -- is filled by mf_fill_uniform with seed
 * `seed + i`: weights uniform with variance 1/fan_in (offset 0, scale
 * sqrt(3/fan_in)); the tokens +-1; BatchNorm and LayerNorm gains 1 +- 0.25;
 * biases +-0.02; running means +-0.05; running variances 1 +- 0.4.
 */
#ifndef MF_SYNTHETIC_H
#define MF_SYNTHETIC_H

#include "mf.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = offset + scale * (2u - 1), u the top 24 bits of the i-th output
 * of splitmix64 started at seed, as a fraction of 2^24: i < n. */
void mf_fill_uniform(float *out, size_t n, uint64_t seed, double offset, double scale);

/* A model of architecture a with the rule's weights. */
mf_status mf_model_synthetic(const mf_arch *a, int num_classes, uint64_t seed, mf_model **out,
                             char *err, size_t errlen);

/* The same with options (NULL: fp32), e.g. a bf16 model. */
mf_status mf_model_synthetic_opts(const mf_arch *a, int num_classes, uint64_t seed, const mf_model_options *o,
                                  mf_model **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
