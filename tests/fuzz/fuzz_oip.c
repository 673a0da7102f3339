/* fuzz_oip.c -- libFuzzer target: the Open Inference Protocol's infer body
 * parser alone (server/oip.h): the JSON header, the binary tensor framing,
 * the element counts, the length-prefixed BYTES elements, base64 images.
 *
 * Input: a body.  If it starts with '{' it is all JSON header (no
 * Inference-Header-Content-Length); if it starts with a gzip or zlib header
 * it is inflated first (at most 1 MiB: checked, the output within it, a
 * refusal with its reason) and the result is taken as all JSON header;
 * otherwise its first 4 bytes are the header length (little-endian, any
 * value: larger than the body too) and the rest is the body.  Checked: a refusal says why and holds nothing but the
 * id; an accepted request has 1..MF_OIP_MAX_IMAGES images, 1 or 2 distinct
 * outputs, an FP32 input of 3 x H x W within the limits whose binary part is
 * exactly its size, binary data inside the body; reading the tensor, the
 * element offsets and every JSON image stays inside what was given.
 */
#include "fuzz.h"

#include "oip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t header_len;
    const uint8_t *body = data;
    size_t len = size;
    uint8_t *plain = NULL;
    if (size >= 2 && ((data[0] == 0x1f && data[1] == 0x8b) || (data[0] == 0x78 && (data[0] * 256 + data[1]) % 31 == 0))) {
        size_t pl;
        int big;
        char e[200] = "";
        if (mf_oip_inflate(data, size, (size_t)1 << 20, &plain, &pl, &big, e, sizeof e) != 0) {
            FUZZ_CHECK(plain == NULL && e[0]);
            return 0;
        }
        FUZZ_CHECK(plain != NULL && pl <= ((size_t)1 << 20));
        body = plain;
        len = header_len = pl;
    } else if (size > 0 && data[0] == '{') {
        header_len = size;
    } else {
        if (size < 4) return 0;
        header_len = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
        body = data + 4;
        len = size - 4;
    }
    /* a copy of exactly len bytes, so ASan sees any read past the body */
    uint8_t *b = malloc(len ? len : 1);
    FUZZ_CHECK(b != NULL);
    memcpy(b, body, len);
    mf_oip_request q;
    char err[400] = "";
    int rc = mf_oip_parse(b, len, header_len, &q, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1 && err[0]);
        FUZZ_CHECK(q.root == NULL && q.data == NULL);
        mf_oip_request_free(&q);
        free(b);
        free(plain);
        return 0;
    }
    FUZZ_CHECK(q.root != NULL);
    FUZZ_CHECK(q.n >= 1 && q.n <= MF_OIP_MAX_IMAGES);
    FUZZ_CHECK(q.n_outputs == 1 || q.n_outputs == 2);
    if (q.n_outputs == 2) FUZZ_CHECK(q.outputs[0].which != q.outputs[1].which);
    for (int k = 0; k < q.n_outputs; k++) FUZZ_CHECK(q.outputs[k].which == 0 || q.outputs[k].which == 1);
    FUZZ_CHECK(!q.binary == !!q.data);
    if (q.binary) FUZZ_CHECK(q.binary >= b + header_len && q.binary + q.binary_len == b + len);
    if (q.image) {
        if (q.binary) {
            uint32_t off[MF_OIP_MAX_IMAGES + 1];
            if (mf_oip_bytes_offsets(&q, off, err, sizeof err) == 0) {
                FUZZ_CHECK(off[0] == 0 && off[q.n] == q.binary_len);
                for (int i = 0; i < q.n; i++) FUZZ_CHECK(off[i] + 4 <= off[i + 1]);
            } else {
                FUZZ_CHECK(err[0]);
            }
        } else {
            for (int i = 0; i < q.n; i++) {
                uint8_t *img;
                size_t il;
                if (mf_oip_json_image(&q, i, &img, &il, err, sizeof err) == 0) {
                    if (il) FUZZ_CHECK(img != NULL && (img[0] | img[il - 1]) < 256);
                    free(img);
                } else {
                    FUZZ_CHECK(img == NULL && err[0]);
                }
            }
        }
    } else {
        FUZZ_CHECK(q.h >= 32 && q.w >= 32 && q.h <= MF_OIP_MAX_SIDE && q.w <= MF_OIP_MAX_SIDE);
        const size_t n = (size_t)q.n * 3 * q.h * q.w;
        if (q.binary) FUZZ_CHECK(q.binary_len == n * sizeof(float));
        float *t = malloc(n * sizeof(float));
        FUZZ_CHECK(t != NULL);
        if (mf_oip_tensor(&q, t, err, sizeof err) != 0) FUZZ_CHECK(err[0]);
        free(t);
    }
    mf_oip_request_free(&q);
    free(b);
    free(plain);
    return 0;
}
