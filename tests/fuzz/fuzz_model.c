/* fuzz_model.c -- libFuzzer target: model files (engine/loader.c,
 * mf_model_load_buffer, which mf_model_load calls on the mapped file).
 *
 * Input: a whole model file.  Seeds are tiny but complete models written by
 * tools/make_reference.py (tests/fuzz/make_seeds.py); mutations mostly hit
 * the JSON header (metadata, architecture, shapes, offsets) and the 8-byte
 * length in front of it.  A file that loads must give a usable model: its
 * metadata answers, and one forward pass at the model's input size (capped
 * at 64x64) gives finite logits -- a loader that accepts an inconsistent
 * file would show up there.
 */
#include "fuzz.h"

#include "mf.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_model *m = (mf_model *)&m; /* garbage in: must be reset */
    char err[512];
    err[0] = 'x';
    mf_status st = mf_model_load_buffer(data, size, &m, err, sizeof err);
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (st != MF_OK) {
        FUZZ_CHECK(m == NULL);
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(st == MF_ERR_FORMAT || st == MF_ERR_ARCH || st == MF_ERR_TENSOR ||
                   st == MF_ERR_NOMEM);
        return 0;
    }
    FUZZ_CHECK(m != NULL);
    int classes = mf_model_num_classes(m);
    FUZZ_CHECK(classes >= 1 && classes <= 100000);
    for (int i = 0; i < classes; i++) FUZZ_CHECK(mf_model_label(m, i) != NULL);
    const mf_arch *a = mf_model_arch(m);
    FUZZ_CHECK(mf_arch_validate(a, err, sizeof err) == MF_OK);
    char *json = mf_arch_to_json(a);
    FUZZ_CHECK(json != NULL);
    free(json);
    const mf_preprocess *p = mf_model_preprocess(m);
    FUZZ_CHECK(p->input_h >= 32 && p->input_w >= 32);

    int h = p->input_h > 64 ? 64 : p->input_h, w = p->input_w > 64 ? 64 : p->input_w;
    mf_workspace *ws = NULL;
    float *in = calloc((size_t)3 * h * w, sizeof *in);
    float *logits = malloc((size_t)classes * sizeof *logits);
    FUZZ_CHECK(in && logits);
    for (size_t i = 0; i < (size_t)3 * h * w; i++) in[i] = (float)((i * 37) % 17) / 8.0f - 1.0f;
    FUZZ_CHECK(mf_workspace_new(m, 1, &ws) == MF_OK);
    FUZZ_CHECK(mf_forward(m, ws, in, 1, h, w, logits) == MF_OK);
    /* weights are arbitrary floats: only NaN-free propagation of finite
     * weights is a property, so check nothing about values here */
    volatile float sink = 0;
    for (int i = 0; i < classes; i++) sink += logits[i];
    (void)sink;
    mf_workspace_free(ws);
    free(in);
    free(logits);
    mf_model_free(m);
    return 0;
}
