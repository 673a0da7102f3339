/* test_topk.c -- softmax (engine/mf_util.h) and top-k (vision/topk.h). */
#include "testutil.h"
#include "topk.h"
#include "mf_util.h"

#include <math.h>
#include <string.h>

START_TEST(softmax_sums_to_one_and_matches_double)
{
    float logits[7] = {0.5f, -1.0f, 2.0f, 0.0f, 3.5f, -7.0f, 1.25f};
    float p[7];
    mf_softmax(logits, 7, p);
    double max = 3.5, sum = 0, ref[7];
    for (int i = 0; i < 7; i++) sum += exp(logits[i] - max);
    double total = 0;
    for (int i = 0; i < 7; i++) {
        ref[i] = exp(logits[i] - max) / sum;
        ck_assert_double_eq_tol(p[i], ref[i], 1e-6);
        total += p[i];
    }
    ck_assert_double_eq_tol(total, 1.0, 1e-6);
}
END_TEST

START_TEST(softmax_is_stable_for_large_logits)
{
    float logits[3] = {1000.0f, 1001.0f, -1000.0f};
    float p[3];
    mf_softmax(logits, 3, p);
    for (int i = 0; i < 3; i++) ck_assert(isfinite(p[i]));
    ck_assert_double_eq_tol(p[0], 1.0 / (1.0 + exp(1.0)), 1e-6);
    ck_assert_double_eq_tol(p[1], exp(1.0) / (1.0 + exp(1.0)), 1e-6);
    ck_assert_float_eq(p[2], 0.0f);
    float big[2] = {-3e38f, -3e38f};
    mf_softmax(big, 2, big); /* in place */
    ck_assert_double_eq_tol(big[0], 0.5, 1e-7);
    float one = 42.0f;
    mf_softmax(&one, 1, &one);
    ck_assert_float_eq(one, 1.0f);
}
END_TEST

START_TEST(topk_orders_and_breaks_ties_by_index)
{
    float s[6] = {0.1f, 0.3f, 0.3f, 0.05f, 0.5f, 0.3f};
    int idx[6];
    ck_assert_int_eq(mf_topk(s, 6, 4, idx), 4);
    int want[4] = {4, 1, 2, 5};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(idx[i], want[i]);
    ck_assert_int_eq(mf_topk(s, 6, 1, idx), 1);
    ck_assert_int_eq(idx[0], 4);
}
END_TEST

START_TEST(topk_caps_k)
{
    float s[3] = {1, 3, 2};
    int idx[3] = {-1, -1, -1};
    ck_assert_int_eq(mf_topk(s, 3, 100, idx), 3);
    ck_assert_int_eq(idx[0], 1);
    ck_assert_int_eq(idx[1], 2);
    ck_assert_int_eq(idx[2], 0);
    ck_assert_int_eq(mf_topk(s, 3, 0, idx), 0);
    ck_assert_int_eq(mf_topk(s, 3, -5, idx), 0);
}
END_TEST

static const float *sort_scores;
static int cmp_rank(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_scores[i] != sort_scores[j]) return sort_scores[i] > sort_scores[j] ? -1 : 1;
    return i - j;
}

START_TEST(topk_matches_full_sort)
{
    enum { N = 1000 };
    static float s[N];
    static int idx[N], ref[N];
    unsigned seed = 12345;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            seed = seed * 1103515245u + 12345u;
            s[i] = (float)((seed >> 16) % 200) / 10.0f; /* many ties */
            ref[i] = i;
        }
        sort_scores = s;
        qsort(ref, N, sizeof ref[0], cmp_rank);
        int k = round == 19 ? N : 1 + round * 7;
        ck_assert_int_eq(mf_topk(s, N, k, idx), k);
        for (int i = 0; i < k; i++) ck_assert_int_eq(idx[i], ref[i]);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("topk");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, softmax_sums_to_one_and_matches_double);
    tcase_add_test(tc, softmax_is_stable_for_large_logits);
    tcase_add_test(tc, topk_orders_and_breaks_ties_by_index);
    tcase_add_test(tc, topk_caps_k);
    tcase_add_test(tc, topk_matches_full_sort);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
