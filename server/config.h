/* config.h -- the server's settings: one table drives the JSON file, the
 * MF_<SETTING> environment variables, the --setting flags, --help and the
 * Markdown table in the README.
 *
 * Precedence, lowest first: built-in defaults, the file (--config PATH),
 * the environment, the command line.  Every value is checked against the
 * table's type and range when it is read; a bad value, an unknown key in the
 * file or an unknown flag is refused with a message naming the setting.
 * mf_config is a plain value (no pointers): copy it freely.
 */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define MF_CONFIG_STR 256   /* capacity of short string settings, with the NUL */
#define MF_CONFIG_PATH 4096 /* capacity of path settings, with the NUL */

typedef struct mf_config {
    int port;                        /* TCP port; 0 = any free port (printed at start) */
    char bind[MF_CONFIG_STR];        /* numeric IPv4 or IPv6 address to listen on */
    char model[MF_CONFIG_PATH];      /* model file (safetensors) */
    char model_name[MF_CONFIG_STR];  /* name in URLs and answers; "" = file name stem */
    char model_repository[MF_CONFIG_PATH]; /* directory of models; "" = `model` alone */
    char model_control[MF_CONFIG_STR];     /* none | explicit | poll */
    char load_models[MF_CONFIG_PATH];      /* explicit: models to load at start, comma-separated */
    int repository_poll_s;                 /* poll: seconds between rescans */
    char default_model[MF_CONFIG_STR];     /* /v1/predict's model; "" = the only one */
    char precision[MF_CONFIG_STR];         /* "fp32" or "bf16": the models' default */
    int http_threads;                /* HTTP threads (epoll loops); 0 = online cores */
    int workers;                     /* inference threads; 0 = online cores */
    int engine_threads;              /* threads per worker's engine workspace */
    int decode_threads;              /* decode pool threads; 0 = online cores (resolved at start) */
    bool jpeg_scaled_decode;         /* JPEG decoded at a reduced DCT scale covering the resize */
    int max_batch;                   /* most images per forward pass */
    int max_delay_us;                /* longest wait for a batch to fill */
    int max_queue;                   /* most images waiting for a worker */
    int request_timeout_ms;          /* queued longer than this -> 504; 0 = never */
    long long max_body_bytes;        /* largest request body */
    long long max_pixels;            /* largest decoded image, width * height */
    int max_image_side;              /* largest width or height */
    int decode_timeout_ms;           /* the time one image may take to decode; 0 = no limit */
    int drain_timeout_ms;            /* time given to in-flight requests at shutdown */
    char api_key[MF_CONFIG_STR];     /* "" = no authentication */
    char cors_origin[MF_CONFIG_STR]; /* "" = no CORS headers */
    int max_connections;             /* simultaneous connections */
    int connection_timeout_s;        /* idle timeout, and the whole head's deadline; 0 = never */
    int max_connections_per_client;  /* open connections per client address; 0 = no limit */
    int body_timeout_s;              /* the whole body's deadline; 0 = none */
    int min_body_rate;               /* bytes/s a body must keep up after 5 s; 0 = none */
    long long max_inflight_body_bytes; /* bytes all bodies being received may hold */
    bool log_requests;               /* one JSON line per request on stderr */
    bool web_ui;                     /* serve the embedded page at / */
} mf_config;

typedef enum mf_config_status {
    MF_CONFIG_OK = 0,
    MF_CONFIG_EXIT,  /* --help or --print-config-table was served: exit 0 */
    MF_CONFIG_ERROR, /* bad value, key or flag: message in err */
} mf_config_status;

/* Defaults of every setting (auto values stay 0 / ""; see mf_config_resolve). */
void mf_config_defaults(mf_config *c);

/* Apply a JSON object of settings from a file or a string. */
mf_config_status mf_config_load_file(mf_config *c, const char *path, char *err, size_t errlen);
mf_config_status mf_config_load_json(mf_config *c, const char *text, const char *origin,
                                     char *err, size_t errlen);

/* Apply MF_<SETTING> variables from an environ-style NULL-terminated array.
 * Other MF_* variables (MF_BUILD, MF_KERNELS, ...) belong to other tools
 * and are ignored. */
mf_config_status mf_config_load_env(mf_config *c, char *const *envp, char *err, size_t errlen);

/* Apply --setting value / --setting=value flags (dashes or underscores).
 * --config is skipped here (see mf_config_init); --help and
 * --print-config-table are refused (handled by mf_config_init). */
mf_config_status mf_config_load_args(mf_config *c, int argc, char *const *argv, char *err,
                                     size_t errlen);

/* Fill the auto values: http_threads and workers from the online cores,
 * model_name from the model file's name without directory and extension. */
void mf_config_resolve(mf_config *c);

/* Everything in order: defaults, --config file (if given), environment,
 * flags, resolve.  --help and --print-config-table print to out and return
 * MF_CONFIG_EXIT. */
mf_config_status mf_config_init(mf_config *c, int argc, char *const *argv, char *const *envp,
                                FILE *out, char *err, size_t errlen);

/* --help text and the Markdown table (setting, type, default, range,
 * environment variable, flag, description). */
void mf_config_print_help(FILE *f);
void mf_config_print_markdown(FILE *f);

/* The default config/server.json: every setting with its default. */
void mf_config_print_json(FILE *f);

#endif
