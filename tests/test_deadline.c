/* test_deadline.c -- request-head deadlines (server/deadline.h) on socket
 * pairs: an armed connection is shut down after its timeout, a disarmed one
 * is left alone, re-arming starts a new period, closing forgets it. */
#include "deadline.h"
#include "testutil.h"
#include "mf_util.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Wait up to ms for the peer of sv[0] to see end-of-stream. */
static int sees_eof(int peer, int ms)
{
    struct pollfd p = {peer, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return 0;
    char c;
    return recv(peer, &c, 1, MSG_DONTWAIT) == 0;
}

static double now_s(void) { return (double)mf_now_ns() * 1e-9; }

START_TEST(null_and_zero)
{
    ck_assert_ptr_null(mf_deadline_new(0));
    mf_deadline_conn *c = mf_deadline_open(NULL, 0);
    ck_assert_ptr_null(c);
    mf_deadline_disarm(NULL, NULL);
    mf_deadline_rearm(NULL, NULL);
    mf_deadline_close(NULL, NULL);
    ck_assert_uint_eq(mf_deadline_expired(NULL), 0);
    mf_deadline_free(NULL);
}
END_TEST

START_TEST(armed_is_shut_disarmed_is_not)
{
    mf_deadline *d = mf_deadline_new(1);
    ck_assert_ptr_nonnull(d);
    int a[2], b[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    double t0 = now_s();
    mf_deadline_conn *ca = mf_deadline_open(d, a[0]);
    mf_deadline_conn *cb = mf_deadline_open(d, b[0]);
    ck_assert(ca && cb);
    mf_deadline_disarm(d, cb);
    ck_assert(!sees_eof(a[1], 700)); /* not before the deadline */
    ck_assert(sees_eof(a[1], 2000));
    double t = now_s() - t0;
    ck_assert_msg(t >= 0.99 && t < 3.0, "shut after %.2f s", t); /* + the reaper period, loaded machine */
    ck_assert(!sees_eof(b[1], 500));
    ck_assert_uint_eq(mf_deadline_expired(d), 1);
    /* re-armed: a new full period */
    mf_deadline_rearm(d, cb);
    ck_assert(!sees_eof(b[1], 700));
    ck_assert(sees_eof(b[1], 2000));
    ck_assert_uint_eq(mf_deadline_expired(d), 2);
    mf_deadline_close(d, ca);
    mf_deadline_close(d, cb);
    mf_deadline_free(d);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}
END_TEST

START_TEST(closed_is_forgotten)
{
    mf_deadline *d = mf_deadline_new(1);
    int a[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    mf_deadline_conn *c = mf_deadline_open(d, a[0]);
    mf_deadline_close(d, c);
    ck_assert(!sees_eof(a[1], 1800));
    ck_assert_uint_eq(mf_deadline_expired(d), 0);
    /* open entries at free are released (no leak under ASan) */
    mf_deadline_open(d, a[0]);
    mf_deadline_free(d);
    close(a[0]);
    close(a[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deadline");
    TCase *tc = tcase_create("deadline");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, null_and_zero);
    tcase_add_test(tc, armed_is_shut_disarmed_is_not);
    tcase_add_test(tc, closed_is_forgotten);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
