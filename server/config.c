/* config.c -- the settings table and the three ways to fill it; see config.h.
 *
 * Every setting is one row of `settings` below: name, type, target field,
 * default (as text, parsed by the same code as user input), range and help.
 * Parsing, validation, --help, the Markdown table and the default JSON file
 * are all loops over that table, so they cannot drift apart.
 */
#include "config.h"
#include "mf_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef enum setting_type {
    SETTING_INT,    /* int field */
    SETTING_INT64,  /* long long field */
    SETTING_BOOL,   /* bool field */
    SETTING_STRING, /* char[size] field; min/max bound the length */
    SETTING_ADDR,   /* char[size] field holding a numeric IPv4/IPv6 address */
    SETTING_CHOICE, /* char[size] field holding one of `choices` */
} setting_type;

typedef struct setting {
    const char *name;  /* file key; flag --name; environment MF_NAME */
    setting_type type; /* how the value is parsed and stored */
    size_t offset;     /* field offset in mf_config */
    size_t size;       /* field size (strings: capacity with the NUL) */
    const char *def;   /* default, as text */
    long long min;     /* smallest value (strings: shortest length) */
    long long max;     /* largest value (strings: longest length) */
    const char *help;  /* one line for --help and the README */
    const char *choices; /* SETTING_CHOICE: the values, '|'-separated */
} setting;

#define FIELD(f) offsetof(mf_config, f), sizeof(((mf_config *)0)->f)

/* Only SETTING_CHOICE rows name `choices`; the others leave it NULL. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const setting settings[] = {
    {"port", SETTING_INT, FIELD(port), "8080", 0, 65535,
     "TCP port; 0 picks a free port, reported in the \"listening\" log line"},
    {"bind", SETTING_ADDR, FIELD(bind), "0.0.0.0", 1, MF_CONFIG_STR - 1,
     "numeric IPv4 or IPv6 address to listen on"},
    {"model", SETTING_STRING, FIELD(model), "models/fashion_mnist_mobileformer.safetensors", 1,
     MF_CONFIG_PATH - 1, "model file (safetensors with mobileformer metadata)"},
    {"model_name", SETTING_STRING, FIELD(model_name), "", 0, MF_CONFIG_STR - 1,
     "model name in URLs and answers; empty = the model file name without extension"},
    {"model_repository", SETTING_STRING, FIELD(model_repository), "", 0, MF_CONFIG_PATH - 1,
     "directory of models, DIR/<name>/<version>/model.safetensors (+ DIR/<name>/config.json); "
     "if set, `model` is not used"},
    {"model_control", SETTING_CHOICE, FIELD(model_control), "none", 1, MF_CONFIG_STR - 1,
     "none: the models of the start are fixed; explicit: load/unload API; poll: also rescan every repository_poll_s",
     "none|explicit|poll"},
    {"load_models", SETTING_STRING, FIELD(load_models), "", 0, MF_CONFIG_PATH - 1,
     "explicit control: the models to load at start, comma-separated (empty = all)"},
    {"repository_poll_s", SETTING_INT, FIELD(repository_poll_s), "10", 1, 86400,
     "poll control: seconds between rescans of model_repository (SIGHUP rescans at once)"},
    {"precision", SETTING_CHOICE, FIELD(precision), "fp32", 1, MF_CONFIG_STR - 1,
     "arithmetic of the 1x1 convolutions and linears: fp32, or bf16 (AMX / AVX512-BF16 where the CPU has them); "
     "a model's config.json may set its own",
     "fp32|bf16"},
    {"default_model", SETTING_STRING, FIELD(default_model), "", 0, MF_CONFIG_STR - 1,
     "the model /v1/predict answers with; empty = the only model (several: 400 naming them)"},
    {"http_threads", SETTING_INT, FIELD(http_threads), "0", 0, 1024,
     "HTTP threads (epoll loops: I/O, decoding, preprocessing); 0 = number of online cores"},
    {"workers", SETTING_INT, FIELD(workers), "0", 0, 1024,
     "inference threads, each with its own engine workspace; 0 = number of online cores"},
    {"engine_threads", SETTING_INT, FIELD(engine_threads), "1", 1, 256,
     "threads inside each worker's engine workspace (BLAS stays single-threaded)"},
    {"decode_threads", SETTING_INT, FIELD(decode_threads), "0", 0, 1024,
     "threads that decode and preprocess uploads (small ones are decoded on the HTTP thread); 0 = online cores"},
    {"jpeg_scaled_decode", SETTING_BOOL, FIELD(jpeg_scaled_decode), "false", 0, 1,
     "decode JPEGs at the smallest DCT scale (1/8..8/8) that still covers the model's resize: several times "
     "cheaper for photos, probabilities no longer PIL-exact"},
    {"max_batch", SETTING_INT, FIELD(max_batch), "8", 1, 1024,
     "most images in one forward pass"},
    {"max_delay_us", SETTING_INT, FIELD(max_delay_us), "2000", 0, 10000000,
     "longest wait, in microseconds, for a batch to fill after its first image"},
    {"max_queue", SETTING_INT, FIELD(max_queue), "256", 1, 1000000,
     "most images waiting for a worker; beyond it requests get 503 with Retry-After"},
    {"request_timeout_ms", SETTING_INT, FIELD(request_timeout_ms), "10000", 0, 3600000,
     "an image not started within this many milliseconds gets 504; 0 = wait forever"},
    {"max_body_bytes", SETTING_INT64, FIELD(max_body_bytes), "16777216", 1,
     (long long)1 << 31, "largest request body in bytes; larger gets 413"},
    {"max_pixels", SETTING_INT64, FIELD(max_pixels), "40000000", 1, (long long)1 << 40,
     "largest image (width x height), checked from its header before decoding; larger gets 413"},
    {"max_image_side", SETTING_INT, FIELD(max_image_side), "65535", 1, 1000000,
     "largest image width or height, checked from its header (413): a 1 x 40,000,000 image is refused"},
    {"decode_timeout_ms", SETTING_INT, FIELD(decode_timeout_ms), "2000", 0, 600000,
     "the time one image may take to decode, checked row by row (422 decode_timeout); 0 = no limit"},
    {"drain_timeout_ms", SETTING_INT, FIELD(drain_timeout_ms), "10000", 0, 3600000,
     "on SIGTERM/SIGINT, time given to queued and in-flight requests before exit"},
    {"api_key", SETTING_STRING, FIELD(api_key), "", 0, MF_CONFIG_STR - 1,
     "if set, predict and model endpoints require 'Authorization: Bearer <key>'"},
    {"cors_origin", SETTING_STRING, FIELD(cors_origin), "", 0, MF_CONFIG_STR - 1,
     "if set, value of Access-Control-Allow-Origin (e.g. * or https://app.example)"},
    {"max_connections", SETTING_INT, FIELD(max_connections), "1000", 1, 1000000,
     "most simultaneous client connections"},
    {"connection_timeout_s", SETTING_INT, FIELD(connection_timeout_s), "30", 0, 86400,
     "close a connection idle this many seconds; also the time a request head gets to arrive (408); 0 = never"},
    {"max_connections_per_client", SETTING_INT, FIELD(max_connections_per_client), "64", 0, 1000000,
     "most simultaneous connections from one client address (503 beyond); 0 = no limit (behind a proxy)"},
    {"body_timeout_s", SETTING_INT, FIELD(body_timeout_s), "60", 0, 86400,
     "a request body must arrive completely within this many seconds (408); 0 = no limit"},
    {"min_body_rate", SETTING_INT, FIELD(min_body_rate), "16384", 0, 1073741824,
     "after 5 s a request body must keep arriving at this many bytes per second (408); 0 = no minimum"},
    {"max_inflight_body_bytes", SETTING_INT64, FIELD(max_inflight_body_bytes), "268435456", 1,
     (long long)1 << 40, "bytes all request bodies being received may hold together; beyond it 503 with Retry-After"},
    {"log_requests", SETTING_BOOL, FIELD(log_requests), "true", 0, 1,
     "one JSON line per request on stderr"},
    {"web_ui", SETTING_BOOL, FIELD(web_ui), "true", 0, 1,
     "serve the upload page at / (false: / answers 404 like any unknown path)"},
};
#pragma GCC diagnostic pop

#define N_SETTINGS (sizeof settings / sizeof settings[0])

/* The error text (mf_set_err's convention) and the status, in one. */
#define fail(err, errlen, ...) (mf_set_err((err), (errlen), __VA_ARGS__), MF_CONFIG_ERROR)

static const char *type_name(setting_type t)
{
    switch (t) {
    case SETTING_INT:
    case SETTING_INT64: return "integer";
    case SETTING_BOOL: return "boolean";
    case SETTING_STRING: return "string";
    case SETTING_ADDR: return "address";
    case SETTING_CHOICE: return "choice";
    }
    return "?";
}

static const setting *find_setting(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strlen(settings[i].name) == len && memcmp(settings[i].name, name, len) == 0)
            return &settings[i];
    return NULL;
}

static mf_config_status store_int(mf_config *c, const setting *s, long long v, const char *origin,
                                  char *err, size_t errlen)
{
    if (v < s->min || v > s->max)
        return fail(err, errlen, "%s (%s): %lld is out of range [%lld, %lld]", s->name, origin, v,
                    s->min, s->max);
    char *field = (char *)c + s->offset;
    if (s->type == SETTING_INT) {
        int iv = (int)v;
        memcpy(field, &iv, sizeof iv);
    } else if (s->type == SETTING_BOOL) {
        bool bv = v != 0;
        memcpy(field, &bv, sizeof bv);
    } else {
        memcpy(field, &v, sizeof v);
    }
    return MF_CONFIG_OK;
}

static mf_config_status store_string(mf_config *c, const setting *s, const char *v, size_t len,
                                     const char *origin, char *err, size_t errlen)
{
    if ((long long)len < s->min)
        return fail(err, errlen, "%s (%s): must not be empty", s->name, origin);
    if ((long long)len > s->max)
        return fail(err, errlen, "%s (%s): longer than %lld characters", s->name, origin, s->max);
    /* values end up in HTTP headers and log lines: no control characters */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return fail(err, errlen, "%s (%s): contains a control character", s->name, origin);
    if (s->type == SETTING_CHOICE) {
        int found = 0;
        for (const char *p = s->choices; *p;) {
            const char *e = strchr(p, '|');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == len && memcmp(p, v, len) == 0) found = 1;
            p = e ? e + 1 : p + l;
        }
        if (!found) return fail(err, errlen, "%s (%s): '%s' is not one of %s", s->name, origin, v, s->choices);
    }
    if (s->type == SETTING_ADDR) {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, v, buf) != 1 && inet_pton(AF_INET6, v, buf) != 1)
            return fail(err, errlen, "%s (%s): '%s' is not a numeric IPv4 or IPv6 address",
                        s->name, origin, v);
    }
    char *field = (char *)c + s->offset;
    memcpy(field, v, len);
    field[len] = '\0';
    return MF_CONFIG_OK;
}

/* Parse a textual value (default, environment, flag) into its field. */
static mf_config_status set_from_text(mf_config *c, const setting *s, const char *v,
                                      const char *origin, char *err, size_t errlen)
{
    switch (s->type) {
    case SETTING_INT:
    case SETTING_INT64: {
        if (!*v || isspace((unsigned char)*v))
            return fail(err, errlen, "%s (%s): '%s' is not an integer", s->name, origin, v);
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (*end)
            return fail(err, errlen, "%s (%s): '%s' is not an integer", s->name, origin, v);
        if (errno == ERANGE)
            return fail(err, errlen, "%s (%s): %s is out of range [%lld, %lld]", s->name, origin,
                        v, s->min, s->max);
        return store_int(c, s, n, origin, err, errlen);
    }
    case SETTING_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "on"};
        static const char *const no[] = {"false", "0", "no", "off"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(v, yes[i]) == 0) return store_int(c, s, 1, origin, err, errlen);
            if (strcasecmp(v, no[i]) == 0) return store_int(c, s, 0, origin, err, errlen);
        }
        return fail(err, errlen, "%s (%s): '%s' is not a boolean (true/false)", s->name, origin, v);
    }
    case SETTING_STRING:
    case SETTING_ADDR:
    case SETTING_CHOICE: return store_string(c, s, v, strlen(v), origin, err, errlen);
    }
    return fail(err, errlen, "%s: unknown type", s->name);
}

void mf_config_defaults(mf_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        char err[256];
        /* the table's own defaults are tested to parse (test_config.c) */
        if (set_from_text(c, &settings[i], settings[i].def, "default", err, sizeof err) !=
            MF_CONFIG_OK)
            abort();
    }
}

mf_config_status mf_config_load_json(mf_config *c, const char *text, const char *origin,
                                     char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return fail(err, errlen, "%s: line %d: %s", origin, jerr.line, jerr.text);
    mf_config_status st = MF_CONFIG_OK;
    if (!json_is_object(root)) {
        st = fail(err, errlen, "%s: must be a JSON object of settings", origin);
        goto out;
    }
    const char *key;
    size_t key_len;
    json_t *val;
    json_object_keylen_foreach(root, key, key_len, val) {
        const setting *s = find_setting(key, key_len);
        if (!s) {
            st = fail(err, errlen, "%s: unknown setting '%s'", origin, key);
            goto out;
        }
        switch (s->type) {
        case SETTING_INT:
        case SETTING_INT64:
            if (!json_is_integer(val)) {
                st = fail(err, errlen, "%s (%s): must be an integer", s->name, origin);
                goto out;
            }
            st = store_int(c, s, json_integer_value(val), origin, err, errlen);
            break;
        case SETTING_BOOL:
            if (!json_is_boolean(val)) {
                st = fail(err, errlen, "%s (%s): must be true or false", s->name, origin);
                goto out;
            }
            st = store_int(c, s, json_is_true(val), origin, err, errlen);
            break;
        case SETTING_STRING:
        case SETTING_ADDR:
        case SETTING_CHOICE:
            if (!json_is_string(val)) {
                st = fail(err, errlen, "%s (%s): must be a string", s->name, origin);
                goto out;
            }
            if (strlen(json_string_value(val)) != json_string_length(val)) {
                st = fail(err, errlen, "%s (%s): contains a control character", s->name, origin);
                goto out;
            }
            st = store_string(c, s, json_string_value(val), json_string_length(val), origin, err,
                              errlen);
            break;
        }
        if (st != MF_CONFIG_OK) goto out;
    }
out:
    json_decref(root);
    return st;
}

mf_config_status mf_config_load_file(mf_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errlen, "config file %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    mf_config_status st = MF_CONFIG_OK;
    for (;;) {
        if (cap - len < 4096) {
            if (cap >= (1u << 20)) {
                st = fail(err, errlen, "config file %s: larger than 1 MiB", path);
                goto out;
            }
            cap = cap ? cap * 2 : 8192;
            char *t = realloc(text, cap + 1);
            if (!t) {
                st = fail(err, errlen, "config file %s: out of memory", path);
                goto out;
            }
            text = t;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) {
        st = fail(err, errlen, "config file %s: read error", path);
        goto out;
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        st = fail(err, errlen, "config file %s: contains a NUL byte", path);
        goto out;
    }
    st = mf_config_load_json(c, text, path, err, errlen);
out:
    free(text);
    fclose(f);
    return st;
}

mf_config_status mf_config_load_env(mf_config *c, char *const *envp, char *err, size_t errlen)
{
    if (!envp) return MF_CONFIG_OK;
    /* walk the table, not the environment: a setting's variable is found the
     * same way whatever else is set */
    for (size_t i = 0; i < N_SETTINGS; i++) {
        char var[96];
        int n = snprintf(var, sizeof var, "MF_%s", settings[i].name);
        for (int j = 3; j < n; j++) var[j] = (char)toupper((unsigned char)var[j]);
        for (char *const *e = envp; *e; e++) {
            if (strncmp(*e, var, (size_t)n) != 0 || (*e)[n] != '=') continue;
            char origin[128];
            snprintf(origin, sizeof origin, "environment %s", var);
            if (set_from_text(c, &settings[i], *e + n + 1, origin, err, errlen) != MF_CONFIG_OK)
                return MF_CONFIG_ERROR;
        }
    }
    return MF_CONFIG_OK;
}

mf_config_status mf_config_load_args(mf_config *c, int argc, char *const *argv, char *err,
                                     size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2])
            return fail(err, errlen, "unexpected argument '%s' (settings are --name value)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        char norm[96];
        if (len >= sizeof norm) return fail(err, errlen, "unknown flag '%s'", a);
        for (size_t j = 0; j < len; j++) norm[j] = name[j] == '-' ? '_' : name[j];
        norm[len] = '\0';
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return fail(err, errlen, "flag --%s needs a value", norm);
        }
        if (strcmp(norm, "config") == 0) continue; /* read by mf_config_init */
        const setting *s = find_setting(norm, len);
        if (!s) return fail(err, errlen, "unknown flag --%s", norm);
        char origin[128];
        snprintf(origin, sizeof origin, "flag --%s", s->name);
        if (set_from_text(c, s, value, origin, err, errlen) != MF_CONFIG_OK)
            return MF_CONFIG_ERROR;
    }
    return MF_CONFIG_OK;
}

void mf_config_resolve(mf_config *c)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (cores > 1024) cores = 1024;
    if (c->http_threads == 0) c->http_threads = (int)cores;
    if (c->workers == 0) c->workers = (int)cores;
    if (c->decode_threads == 0) c->decode_threads = (int)cores;
    if (!c->model_name[0]) {
        const char *base = strrchr(c->model, '/');
        base = base ? base + 1 : c->model;
        size_t len = strlen(base);
        const char *dot = strrchr(base, '.');
        if (dot && dot != base) len = (size_t)(dot - base);
        if (len == 0) {
            base = "model";
            len = 5;
        }
        if (len >= sizeof c->model_name) len = sizeof c->model_name - 1;
        memcpy(c->model_name, base, len);
        c->model_name[len] = '\0';
    }
}

static int is_flag(const char *a, const char *name)
{
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

mf_config_status mf_config_init(mf_config *c, int argc, char *const *argv, char *const *envp,
                                FILE *out, char *err, size_t errlen)
{
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            mf_config_print_help(out);
            return MF_CONFIG_EXIT;
        }
        if (strcmp(argv[i], "--print-config-table") == 0) {
            mf_config_print_markdown(out);
            return MF_CONFIG_EXIT;
        }
        if (strcmp(argv[i], "--print-config-json") == 0) {
            mf_config_print_json(out);
            return MF_CONFIG_EXIT;
        }
        if (is_flag(argv[i], "--config")) {
            if (argv[i][8] == '=') {
                file = argv[i] + 9;
            } else if (i + 1 < argc) {
                file = argv[++i];
            } else {
                return fail(err, errlen, "flag --config needs a value");
            }
        } else if (strncmp(argv[i], "--", 2) == 0 && !strchr(argv[i], '=')) {
            i++; /* skip the value of --setting value */
        }
    }
    mf_config_defaults(c);
    if (file && mf_config_load_file(c, file, err, errlen) != MF_CONFIG_OK) return MF_CONFIG_ERROR;
    if (mf_config_load_env(c, envp, err, errlen) != MF_CONFIG_OK) return MF_CONFIG_ERROR;
    if (mf_config_load_args(c, argc, argv, err, errlen) != MF_CONFIG_OK) return MF_CONFIG_ERROR;
    mf_config_resolve(c);
    return MF_CONFIG_OK;
}

static void env_name(const setting *s, char *out, size_t n)
{
    snprintf(out, n, "MF_%s", s->name);
    for (char *p = out + 3; *p; p++) *p = (char)toupper((unsigned char)*p);
}

static void range_text(const setting *s, char *out, size_t n)
{
    switch (s->type) {
    case SETTING_INT:
    case SETTING_INT64: snprintf(out, n, "%lld..%lld", s->min, s->max); break;
    case SETTING_BOOL: snprintf(out, n, "true, false"); break;
    case SETTING_STRING:
    case SETTING_ADDR: snprintf(out, n, "up to %lld chars", s->max); break;
    case SETTING_CHOICE:
        snprintf(out, n, "%s", s->choices);
        for (char *p = out; *p; p++)
            if (*p == '|') *p = '/';
        break;
    }
}

void mf_config_print_help(FILE *f)
{
    fprintf(f,
            "usage: mobileformer-server [--config FILE] [--SETTING VALUE | --SETTING=VALUE]...\n"
            "       mobileformer-server --help | --print-config-table | --print-config-json\n"
            "\n"
            "Each setting comes from, lowest precedence first: its default, the JSON file\n"
            "given with --config, the environment variable MF_<SETTING>, the flag --<setting>.\n"
            "\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        char env[96], range[64];
        env_name(s, env, sizeof env);
        range_text(s, range, sizeof range);
        fprintf(f, "  --%-22s %s, default \"%s\", %s, env %s\n      %s\n", s->name,
                type_name(s->type), s->def, range, env, s->help);
    }
}

void mf_config_print_markdown(FILE *f)
{
    fprintf(f, "| Setting | Type | Default | Range | Environment | Flag | Description |\n");
    fprintf(f, "|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        char env[96], range[64];
        env_name(s, env, sizeof env);
        range_text(s, range, sizeof range);
        fprintf(f, "| `%s` | %s | `%s` | %s | `%s` | `--%s` | ", s->name, type_name(s->type),
                s->def[0] ? s->def : "\"\"", range, env, s->name);
        for (const char *p = s->help; *p; p++) {
            if (*p == '|') fputc('\\', f);
            fputc(*p, f);
        }
        fputs(" |\n", f);
    }
}

void mf_config_print_json(FILE *f)
{
    mf_config c;
    mf_config_defaults(&c);
    json_t *o = json_object();
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        const char *field = (const char *)&c + s->offset;
        json_t *v = NULL;
        switch (s->type) {
        case SETTING_INT: v = json_integer(*(const int *)field); break;
        case SETTING_INT64: v = json_integer(*(const long long *)field); break;
        case SETTING_BOOL: v = json_boolean(*(const bool *)field); break;
        case SETTING_STRING:
        case SETTING_ADDR:
        case SETTING_CHOICE: v = json_string(field); break;
        }
        json_object_set_new(o, s->name, v);
    }
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text) fprintf(f, "%s\n", text);
    free(text);
    json_decref(o);
}
