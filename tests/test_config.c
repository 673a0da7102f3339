/* test_config.c -- the settings table (server/config.h): defaults, file,
 * environment and flag precedence, and that every refusal names the setting. */
#include "config.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>

static char err[1024];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static char tmp_path[64];

static const char *tmp_config(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/mf_test_config_%d.json", (int)getpid());
    write_file(tmp_path, text);
    return tmp_path;
}

/* err mentions every given word */
static void err_has(const char *a, const char *b)
{
    ck_assert_msg(strstr(err, a) != NULL, "error '%s' lacks '%s'", err, a);
    if (b) ck_assert_msg(strstr(err, b) != NULL, "error '%s' lacks '%s'", err, b);
}

START_TEST(built_in_defaults)
{
    mf_config c;
    mf_config_defaults(&c);
    ck_assert_int_eq(c.port, 8080);
    ck_assert_str_eq(c.bind, "0.0.0.0");
    ck_assert_str_eq(c.model, "models/fashion_mnist_mobileformer.safetensors");
    ck_assert_str_eq(c.model_name, "");
    ck_assert_int_eq(c.max_batch, 8);
    ck_assert_int_eq(c.max_delay_us, 2000);
    ck_assert_int_eq(c.engine_threads, 1);
    ck_assert(c.max_body_bytes == 16 << 20);
    ck_assert(c.max_pixels == 40000000);
    ck_assert_str_eq(c.api_key, "");
    ck_assert_str_eq(c.cors_origin, "");
    ck_assert(c.log_requests);
    mf_config_resolve(&c);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_eq(c.workers, cores);
    ck_assert_int_eq(c.http_threads, cores);
    ck_assert_str_eq(c.model_name, "fashion_mnist_mobileformer");
}
END_TEST

START_TEST(model_name_derivation)
{
    mf_config c;
    mf_config_defaults(&c);
    strcpy(c.model, "/a/b.c/my.model.safetensors");
    mf_config_resolve(&c);
    ck_assert_str_eq(c.model_name, "my.model");
    mf_config_defaults(&c);
    strcpy(c.model, "plain");
    mf_config_resolve(&c);
    ck_assert_str_eq(c.model_name, "plain");
    mf_config_defaults(&c);
    strcpy(c.model, "dir/.hidden");
    mf_config_resolve(&c);
    ck_assert_str_eq(c.model_name, ".hidden");
    mf_config_defaults(&c);
    strcpy(c.model, "m.safetensors");
    strcpy(c.model_name, "given");
    mf_config_resolve(&c);
    ck_assert_str_eq(c.model_name, "given");
}
END_TEST

START_TEST(file_values)
{
    mf_config c;
    mf_config_defaults(&c);
    ck_assert_int_eq(mf_config_load_json(&c,
                                         "{\"port\": 9000, \"bind\": \"::1\", \"log_requests\": false,"
                                         " \"max_body_bytes\": 1048576, \"api_key\": \"s3cret\"}",
                                         "test.json", err, sizeof err),
                     MF_CONFIG_OK);
    ck_assert_int_eq(c.port, 9000);
    ck_assert_str_eq(c.bind, "::1");
    ck_assert(!c.log_requests);
    ck_assert(c.max_body_bytes == 1048576);
    ck_assert_str_eq(c.api_key, "s3cret");
    ck_assert_int_eq(c.max_batch, 8); /* untouched */
}
END_TEST

static void file_refused(const char *json, const char *word1, const char *word2)
{
    mf_config c;
    mf_config_defaults(&c);
    err[0] = '\0';
    ck_assert_int_eq(mf_config_load_json(&c, json, "server.json", err, sizeof err), MF_CONFIG_ERROR);
    err_has(word1, word2);
}

START_TEST(file_refusals_name_the_setting)
{
    file_refused("{\"prot\": 8080}", "prot", "unknown");
    file_refused("{\"port\": \"8080\"}", "port", "integer");
    file_refused("{\"port\": 80.5}", "port", "integer");
    file_refused("{\"port\": 70000}", "port", "range");
    file_refused("{\"port\": -1}", "port", "range");
    file_refused("{\"max_batch\": 0}", "max_batch", "range");
    file_refused("{\"workers\": true}", "workers", "integer");
    file_refused("{\"log_requests\": 1}", "log_requests", "true or false");
    file_refused("{\"bind\": 1}", "bind", "string");
    file_refused("{\"bind\": \"localhost\"}", "bind", "address");
    file_refused("{\"model\": \"\"}", "model", "empty");
    file_refused("{\"cors_origin\": \"a\\r\\nX-Evil: 1\"}", "cors_origin", "control");
    file_refused("{\"api_key\": \"a\\u0000b\"}", "api_key", "control");
    file_refused("{\"max_body_bytes\": 99999999999999}", "max_body_bytes", "range");
    file_refused("{\"port\": 1, \"port\": 2}", "server.json", NULL);
    file_refused("{\"port\\u0000x\": 1}", "server.json", NULL);
    file_refused("[1, 2]", "server.json", "object");
    file_refused("{\"port\": ", "server.json", "line");
}
END_TEST

START_TEST(file_missing_or_broken)
{
    mf_config c;
    mf_config_defaults(&c);
    ck_assert_int_eq(mf_config_load_file(&c, "/nonexistent/x.json", err, sizeof err), MF_CONFIG_ERROR);
    err_has("/nonexistent/x.json", NULL);
    const char *p = tmp_config("{\"workers\": 3,}");
    ck_assert_int_eq(mf_config_load_file(&c, p, err, sizeof err), MF_CONFIG_ERROR);
    err_has(p, NULL);
    p = tmp_config("{\"workers\": 3}");
    ck_assert_int_eq(mf_config_load_file(&c, p, err, sizeof err), MF_CONFIG_OK);
    ck_assert_int_eq(c.workers, 3);
    unlink(p);
}
END_TEST

START_TEST(environment)
{
    mf_config c;
    mf_config_defaults(&c);
    char *env[] = {"PATH=/bin", "MF_PORT=9100", "MF_MAX_DELAY_US=0", "MF_LOG_REQUESTS=off",
                   "MF_BUILD=build", "MF_KERNELS=portable", "MF_PORTX=1", "MF_CORS_ORIGIN=*", NULL};
    ck_assert_int_eq(mf_config_load_env(&c, env, err, sizeof err), MF_CONFIG_OK);
    ck_assert_int_eq(c.port, 9100);
    ck_assert_int_eq(c.max_delay_us, 0);
    ck_assert(!c.log_requests);
    ck_assert_str_eq(c.cors_origin, "*");

    char *bad1[] = {"MF_MAX_QUEUE=lots", NULL};
    ck_assert_int_eq(mf_config_load_env(&c, bad1, err, sizeof err), MF_CONFIG_ERROR);
    err_has("max_queue", "MF_MAX_QUEUE");
    char *bad2[] = {"MF_WORKERS= 4", NULL};
    ck_assert_int_eq(mf_config_load_env(&c, bad2, err, sizeof err), MF_CONFIG_ERROR);
    err_has("workers", "integer");
    char *bad3[] = {"MF_LOG_REQUESTS=maybe", NULL};
    ck_assert_int_eq(mf_config_load_env(&c, bad3, err, sizeof err), MF_CONFIG_ERROR);
    err_has("log_requests", "boolean");
    char *bad4[] = {"MF_REQUEST_TIMEOUT_MS=99999999999999999999999", NULL};
    ck_assert_int_eq(mf_config_load_env(&c, bad4, err, sizeof err), MF_CONFIG_ERROR);
    err_has("request_timeout_ms", "range");
    char *bad5[] = {"MF_PORT=", NULL};
    ck_assert_int_eq(mf_config_load_env(&c, bad5, err, sizeof err), MF_CONFIG_ERROR);
    err_has("port", NULL);
}
END_TEST

START_TEST(flags)
{
    mf_config c;
    mf_config_defaults(&c);
    char *argv[] = {"prog", "--port", "9200", "--max-batch=4", "--api_key", "k", "--bind=127.0.0.1",
                    "--log-requests", "false", NULL};
    ck_assert_int_eq(mf_config_load_args(&c, 9, argv, err, sizeof err), MF_CONFIG_OK);
    ck_assert_int_eq(c.port, 9200);
    ck_assert_int_eq(c.max_batch, 4);
    ck_assert_str_eq(c.api_key, "k");
    ck_assert_str_eq(c.bind, "127.0.0.1");
    ck_assert(!c.log_requests);

    char *u[] = {"prog", "--no-such-thing", "1", NULL};
    ck_assert_int_eq(mf_config_load_args(&c, 3, u, err, sizeof err), MF_CONFIG_ERROR);
    err_has("no_such_thing", "unknown");
    char *m[] = {"prog", "--port", NULL};
    ck_assert_int_eq(mf_config_load_args(&c, 2, m, err, sizeof err), MF_CONFIG_ERROR);
    err_has("port", "value");
    char *pos[] = {"prog", "stray", NULL};
    ck_assert_int_eq(mf_config_load_args(&c, 2, pos, err, sizeof err), MF_CONFIG_ERROR);
    err_has("stray", NULL);
    char *r[] = {"prog", "--max_queue=0", NULL};
    ck_assert_int_eq(mf_config_load_args(&c, 2, r, err, sizeof err), MF_CONFIG_ERROR);
    err_has("max_queue", "--max_queue");
    char *t[] = {"prog", "--drain_timeout_ms", "1e3", NULL};
    ck_assert_int_eq(mf_config_load_args(&c, 3, t, err, sizeof err), MF_CONFIG_ERROR);
    err_has("drain_timeout_ms", "integer");
}
END_TEST

START_TEST(precedence_flags_env_file_defaults)
{
    const char *p = tmp_config("{\"port\": 1111, \"workers\": 3, \"max_batch\": 2, \"max_queue\": 7}");
    char cfgflag[128];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", p);
    char *argv[] = {"prog", cfgflag, "--port", "3333", NULL};
    char *env[] = {"MF_PORT=2222", "MF_WORKERS=5", NULL};
    mf_config c;
    ck_assert_int_eq(mf_config_init(&c, 4, argv, env, stdout, err, sizeof err), MF_CONFIG_OK);
    ck_assert_int_eq(c.port, 3333);     /* flag > env > file */
    ck_assert_int_eq(c.workers, 5);     /* env > file */
    ck_assert_int_eq(c.max_batch, 2);   /* file > default */
    ck_assert_int_eq(c.max_queue, 7);
    ck_assert_int_eq(c.max_delay_us, 2000); /* default */

    char *argv2[] = {"prog", "--config", (char *)p, NULL};
    char *env2[] = {"MF_MAX_BATCH=0", NULL};
    ck_assert_int_eq(mf_config_init(&c, 3, argv2, env2, stdout, err, sizeof err), MF_CONFIG_ERROR);
    err_has("max_batch", "MF_MAX_BATCH");
    char *argv3[] = {"prog", "--config", NULL};
    ck_assert_int_eq(mf_config_init(&c, 2, argv3, NULL, stdout, err, sizeof err), MF_CONFIG_ERROR);
    err_has("config", NULL);
    unlink(p);
}
END_TEST

START_TEST(help_and_tables_list_every_setting)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    char *argv[] = {"prog", "--port", "1", "--help", NULL};
    mf_config c;
    ck_assert_int_eq(mf_config_init(&c, 4, argv, NULL, f, err, sizeof err), MF_CONFIG_EXIT);
    char *argv2[] = {"prog", "--print-config-table", NULL};
    ck_assert_int_eq(mf_config_init(&c, 2, argv2, NULL, f, err, sizeof err), MF_CONFIG_EXIT);
    fclose(f);
    const char *names[] = {"port", "bind", "model", "model_name", "http_threads", "workers",
                           "engine_threads", "max_batch", "max_delay_us", "max_queue",
                           "request_timeout_ms", "max_body_bytes", "max_pixels", "drain_timeout_ms",
                           "api_key", "cors_origin", "max_connections", "connection_timeout_s",
                           "log_requests"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char flag[64], row[64];
        snprintf(flag, sizeof flag, "--%s ", names[i]);
        snprintf(row, sizeof row, "| `%s` |", names[i]);
        ck_assert_msg(strstr(buf, flag), "--help lacks %s", names[i]);
        ck_assert_msg(strstr(buf, row), "table lacks %s", names[i]);
    }
    ck_assert(strstr(buf, "`MF_MAX_BATCH`"));
    free(buf);
}
END_TEST

/* config/server.json holds exactly the defaults, every key, in table order
 * (it is the output of --print-config-json), so file and table cannot drift */
START_TEST(repository_config_file_is_the_defaults)
{
    mf_config from_file, defaults;
    mf_config_defaults(&defaults);
    FILE *f = fopen("config/server.json", "r");
    if (!f) {
        printf("SKIP config/server.json not found from %s\n", getcwd(err, sizeof err));
        return;
    }
    fclose(f);
    mf_config_defaults(&from_file);
    ck_assert_int_eq(mf_config_load_file(&from_file, "config/server.json", err, sizeof err),
                     MF_CONFIG_OK);
    ck_assert(memcmp(&from_file, &defaults, sizeof defaults) == 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    mf_config_print_json(m);
    fclose(m);
    f = fopen("config/server.json", "r");
    char *text = calloc(1, len + 2);
    size_t n = fread(text, 1, len + 1, f);
    fclose(f);
    ck_assert_uint_eq(n, len);
    ck_assert_str_eq(text, buf);
    free(text);
    free(buf);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, built_in_defaults);
    tcase_add_test(tc, model_name_derivation);
    tcase_add_test(tc, file_values);
    tcase_add_test(tc, file_refusals_name_the_setting);
    tcase_add_test(tc, file_missing_or_broken);
    tcase_add_test(tc, environment);
    tcase_add_test(tc, flags);
    tcase_add_test(tc, precedence_flags_env_file_defaults);
    tcase_add_test(tc, help_and_tables_list_every_setting);
    tcase_add_test(tc, repository_config_file_is_the_defaults);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
