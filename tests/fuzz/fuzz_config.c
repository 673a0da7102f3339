/* fuzz_config.c -- libFuzzer target: the settings table (server/config.c)
 * through all three ways in: the JSON file text, MF_* environment variables
 * and --flags, then mf_config_init() on the same environment and flags.
 *
 * Input: three sections separated by NUL bytes:
 *   JSON text \0 environment entries, one per line \0 arguments, one per line
 * (missing sections are empty).  After every accepted step the settings must
 * still satisfy the table: strings NUL-terminated within their fields and free
 * of control characters, numbers within their ranges (spot-checked below).
 * Arguments naming --config are left to mf_config_load_args only: in
 * mf_config_init they would make the target read arbitrary files.
 */
#include "fuzz.h"

#include "config.h"

#define MAX_LINES 64

static FILE *devnull;

static void check_string(const char *s, size_t cap)
{
    const char *end = memchr(s, '\0', cap);
    FUZZ_CHECK(end != NULL);
    for (; s < end; s++) FUZZ_CHECK((unsigned char)*s >= 0x20 && *s != 0x7f);
}

static void check_config(const mf_config *c)
{
    check_string(c->bind, sizeof c->bind);
    check_string(c->model, sizeof c->model);
    check_string(c->model_name, sizeof c->model_name);
    check_string(c->api_key, sizeof c->api_key);
    check_string(c->cors_origin, sizeof c->cors_origin);
    FUZZ_CHECK(c->bind[0] && c->model[0]);
    FUZZ_CHECK(c->port >= 0 && c->port <= 65535);
    FUZZ_CHECK(c->max_batch >= 1 && c->max_queue >= 1 && c->engine_threads >= 1);
    FUZZ_CHECK(c->http_threads >= 0 && c->workers >= 0);
    FUZZ_CHECK(c->max_body_bytes >= 1 && c->max_body_bytes <= (1ll << 31));
    FUZZ_CHECK(c->max_pixels >= 1 && c->max_connections >= 1);
    FUZZ_CHECK(c->connection_timeout_s >= 0 && c->drain_timeout_ms >= 0);
}

/* Split text at '\n' into a NULL-terminated vector (strings point into text). */
static int lines(char *text, char **out, int max)
{
    int n = 0;
    if (!*text) {
        out[0] = NULL;
        return 0;
    }
    out[n++] = text;
    for (char *p = text; *p && n < max - 1; p++)
        if (*p == '\n') {
            *p = '\0';
            out[n++] = p + 1;
        }
    out[n] = NULL;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!devnull) devnull = fopen("/dev/null", "w");
    char *fields[3] = {"", "", ""}, *block;
    fuzz_split(data, size, 0, fields, 3, &block);
    char *envp[MAX_LINES], *args[MAX_LINES + 1];
    lines(fields[1], envp, MAX_LINES);
    args[0] = "mobileformer-server";
    int argc = 1 + lines(fields[2], args + 1, MAX_LINES);
    char err[1024];
    mf_config c;

    mf_config_defaults(&c);
    check_config(&c);
    err[0] = '\0';
    if (mf_config_load_json(&c, fields[0], "fuzz", err, sizeof err) == MF_CONFIG_OK)
        check_config(&c);
    else
        FUZZ_CHECK(err[0] != '\0');
    mf_config_defaults(&c);
    err[0] = '\0';
    if (mf_config_load_env(&c, envp, err, sizeof err) == MF_CONFIG_OK)
        check_config(&c);
    else
        FUZZ_CHECK(err[0] != '\0');
    mf_config_defaults(&c);
    err[0] = '\0';
    if (mf_config_load_args(&c, argc, args, err, sizeof err) == MF_CONFIG_OK) {
        check_config(&c);
        mf_config_resolve(&c);
        check_config(&c);
        FUZZ_CHECK(c.http_threads >= 1 && c.workers >= 1 && c.model_name[0]);
    } else {
        FUZZ_CHECK(err[0] != '\0');
    }

    for (int i = 1; i < argc; i++)
        if (strstr(args[i], "-config")) goto out;
    err[0] = '\0';
    mf_config_status st = mf_config_init(&c, argc, args, envp, devnull, err, sizeof err);
    FUZZ_CHECK(st == MF_CONFIG_OK || st == MF_CONFIG_EXIT || st == MF_CONFIG_ERROR);
    if (st == MF_CONFIG_OK) check_config(&c);
    if (st == MF_CONFIG_ERROR) FUZZ_CHECK(err[0] != '\0');
out:
    free(block);
    return 0;
}
