/* fuzz_model_config.c -- libFuzzer target: a model's config.json
 * (mf_model_config_parse, server/repository.h) over the server's defaults.
 * Checked: a refusal names the file and holds nothing; an accepted file
 * gives settings in their ranges, a version policy that is one of the
 * three with its versions positive, and labels that are NUL-terminated
 * strings, as many as n_labels. */
#include "fuzz.h"

#include "config.h"
#include "repository.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mf_config defaults;
    static int ready;
    if (!ready) {
        mf_config_defaults(&defaults);
        ready = 1;
    }
    char *text = malloc(size ? size : 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    mf_model_config c;
    char err[600] = "";
    int rc = mf_model_config_parse(text, size, "repo/m/config.json", &defaults, &c, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1 && strstr(err, "repo/m/config.json") == err);
        FUZZ_CHECK(c.labels == NULL && c.n_labels == 0);
    } else {
        FUZZ_CHECK(c.max_batch >= 1 && c.max_batch <= 1024);
        FUZZ_CHECK(c.max_delay_us >= 0 && c.max_delay_us <= 10000000);
        FUZZ_CHECK(c.max_queue >= 1 && c.max_queue <= 1000000);
        FUZZ_CHECK(c.request_timeout_ms >= 0 && c.request_timeout_ms <= 3600000);
        FUZZ_CHECK(c.policy == MF_POLICY_LATEST || c.policy == MF_POLICY_ALL || c.policy == MF_POLICY_SPECIFIC);
        if (c.policy == MF_POLICY_LATEST) FUZZ_CHECK(c.latest_n >= 1);
        if (c.policy == MF_POLICY_SPECIFIC) {
            FUZZ_CHECK(c.n_specific >= 1 && c.n_specific <= 16);
            for (int i = 0; i < c.n_specific; i++) FUZZ_CHECK(c.specific[i] >= 1);
        }
        FUZZ_CHECK(!c.labels == !c.n_labels);
        for (int i = 0; i < c.n_labels; i++) FUZZ_CHECK(c.labels[i] && strlen(c.labels[i]) <= 255);
        if (c.labels) FUZZ_CHECK(c.labels[c.n_labels] == NULL);
    }
    mf_model_config_free(&c);
    free(text);
    return 0;
}
