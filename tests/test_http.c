/* test_http.c -- the daemon-free part of the HTTP front end (server/route.h, validate.h):
 * routing, top_k, Content-Type media types and the API key check.  The
 * black-box tests (tests/py/test_server.py) cover the same rules through real
 * sockets; tests/fuzz/fuzz_route.c fuzzes them. */
#include "route.h"
#include "validate.h"
#include "testutil.h"

#include <string.h>

static mf_route_match route(const char *method, const char *path)
{
    mf_route_match m;
    mf_route_find(method, path, &m);
    return m;
}

START_TEST(routes_found)
{
    static const struct {
        const char *method, *path;
        mf_endpoint endpoint;
        int auth;
        const char *name;
    } cases[] = {
        {"POST", "/v1/predict", MF_ENDPOINT_PREDICT, 1, NULL},
        {"POST", "/v1/models/tiny/predict", MF_ENDPOINT_PREDICT, 1, "tiny"},
        {"GET", "/v2/health/live", MF_ENDPOINT_HEALTH_LIVE, 0, NULL},
        {"HEAD", "/v2/health/live", MF_ENDPOINT_HEALTH_LIVE, 0, NULL},
        {"GET", "/v2/health/ready", MF_ENDPOINT_HEALTH_READY, 0, NULL},
        {"GET", "/v2/models/m-1.x", MF_ENDPOINT_MODEL_METADATA, 1, "m-1.x"},
        {"GET", "/v2/models/m/ready", MF_ENDPOINT_MODEL_READY, 1, "m"},
        {"GET", "/metrics", MF_ENDPOINT_METRICS, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mf_route_match m = route(cases[i].method, cases[i].path);
        ck_assert_msg(m.status == MF_ROUTE_FOUND, "%s %s", cases[i].method, cases[i].path);
        ck_assert_ptr_nonnull(m.route);
        ck_assert_int_eq(m.endpoint, cases[i].endpoint);
        ck_assert_int_eq(!!(m.route->flags & MF_ROUTE_AUTH), cases[i].auth);
        if (cases[i].name) {
            ck_assert_uint_eq(m.model_len, strlen(cases[i].name));
            ck_assert(memcmp(m.model, cases[i].name, m.model_len) == 0);
        } else {
            ck_assert_ptr_null(m.model);
        }
    }
}
END_TEST

START_TEST(routes_refused)
{
    mf_route_match m = route("OPTIONS", "/anything/at/all");
    ck_assert_int_eq(m.status, MF_ROUTE_OPTIONS);
    ck_assert_int_eq(m.endpoint, MF_ENDPOINT_OPTIONS);
    static const char *const not_found[] = {"/v2/health/live/", "/v1/predictions", "/v1/models//predict",
                                            "/v2/models/a/b", "", "v1/predict", "/metrics?x"};
    for (size_t i = 0; i < sizeof not_found / sizeof not_found[0]; i++) {
        m = route("GET", not_found[i]);
        ck_assert_msg(m.status == MF_ROUTE_NOT_FOUND, "%s", not_found[i]);
        ck_assert_int_eq(m.endpoint, MF_ENDPOINT_OTHER);
        ck_assert_ptr_null(m.route);
    }
    m = route("GET", "/v1/predict");
    ck_assert_int_eq(m.status, MF_ROUTE_METHOD_NOT_ALLOWED);
    ck_assert_str_eq(m.allow, "POST, OPTIONS");
    ck_assert_int_eq(m.endpoint, MF_ENDPOINT_PREDICT);
    m = route("POST", "/v2/health/live");
    ck_assert_int_eq(m.status, MF_ROUTE_METHOD_NOT_ALLOWED);
    ck_assert_str_eq(m.allow, "GET, HEAD, OPTIONS");
    m = route("DELETE", "/metrics");
    ck_assert_int_eq(m.status, MF_ROUTE_METHOD_NOT_ALLOWED);
    m = route("get", "/metrics"); /* methods are case-sensitive (RFC 9110) */
    ck_assert_int_eq(m.status, MF_ROUTE_METHOD_NOT_ALLOWED);
}
END_TEST

static int top_k(const char *v) { return mf_parse_top_k(v, v ? strlen(v) : 0, 10); }

START_TEST(top_k_values)
{
    ck_assert_int_eq(top_k(NULL), 5);
    ck_assert_int_eq(mf_parse_top_k(NULL, 0, 3), 3);
    ck_assert_int_eq(top_k("1"), 1);
    ck_assert_int_eq(top_k("10"), 10);
    ck_assert_int_eq(top_k("007"), 7);
    ck_assert_int_eq(top_k("1000"), 10);
    ck_assert_int_eq(top_k("99999999999999999999999999999999"), 10);
    static const char *const bad[] = {"", "0", "000", "-1", "+2", "1.5", "3x", " 3", "0x5", "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(top_k(bad[i]) == -1, "'%s'", bad[i]);
    /* only len bytes count: the value is not NUL-terminated in the query */
    ck_assert_int_eq(mf_parse_top_k("34", 1, 10), 3);
    ck_assert_int_eq(mf_parse_top_k("3\0", 2, 10), -1);
}
END_TEST

START_TEST(media_types)
{
    char mt[32];
    mf_media_type("image/png", mt, sizeof mt);
    ck_assert_str_eq(mt, "image/png");
    mf_media_type("  IMAGE/JPEG ; q=1", mt, sizeof mt);
    ck_assert_str_eq(mt, "image/jpeg");
    mf_media_type("multipart/form-data;boundary=x", mt, sizeof mt);
    ck_assert_str_eq(mt, "multipart/form-data");
    mf_media_type("", mt, sizeof mt);
    ck_assert_str_eq(mt, "");
    mf_media_type("application/a-very-long-media-type-indeed", mt, 8);
    ck_assert_str_eq(mt, "applica");
}
END_TEST

START_TEST(bearer)
{
    ck_assert(mf_bearer_ok(NULL, ""));
    ck_assert(mf_bearer_ok("anything", ""));
    ck_assert(mf_bearer_ok("Bearer k3y", "k3y"));
    ck_assert(mf_bearer_ok("bearer   k3y", "k3y"));
    ck_assert(!mf_bearer_ok(NULL, "k3y"));
    ck_assert(!mf_bearer_ok("Bearer k3", "k3y"));
    ck_assert(!mf_bearer_ok("Bearer k3yy", "k3y"));
    ck_assert(!mf_bearer_ok("Bearer ", "k3y"));
    ck_assert(!mf_bearer_ok("Basic k3y", "k3y"));
    ck_assert(!mf_bearer_ok("Bearerk3y", "k3y"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("request head");
    tcase_add_test(tc, routes_found);
    tcase_add_test(tc, routes_refused);
    tcase_add_test(tc, top_k_values);
    tcase_add_test(tc, media_types);
    tcase_add_test(tc, bearer);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
