/* test_decoder.c -- the decode pool (server/decoder.h): the cost estimate
 * from headers, small and large images on threads of their own, each lane
 * by priority then expected finish, cancelling a queued task, freeing with tasks queued,
 * and real decodes that match a direct decode.  Threads are held deterministically by a done
 * callback that blocks until the test releases it. */
#include "decoder.h"
#include "testutil.h"
#include "mf_util.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int order[64], n_done, blocked, release_flag;

typedef struct ttask {
    mf_decode_task t;
    int id;
    int block; /* done blocks until released */
} ttask;

static void on_done(mf_decode_task *t)
{
    ttask *x = t->user;
    pthread_mutex_lock(&mu);
    order[n_done++] = x->id;
    pthread_cond_broadcast(&cv);
    if (x->block) {
        blocked++;
        pthread_cond_broadcast(&cv);
        while (!release_flag) pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
}

static void reset(void)
{
    pthread_mutex_lock(&mu);
    n_done = blocked = release_flag = 0;
    pthread_mutex_unlock(&mu);
}

static void wait_done(int n)
{
    pthread_mutex_lock(&mu);
    while (n_done < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void wait_blocked(int n)
{
    pthread_mutex_lock(&mu);
    while (blocked < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void release(void)
{
    pthread_mutex_lock(&mu);
    release_flag = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* A PNG whose header claims w x h (its data is cut: it decodes to corrupt
 * at once, but its expected cost is that of w x h). */
static uint8_t png_hdr[6][33];
static const uint8_t *claim_png(int slot, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t *b = png_hdr[slot];
    memcpy(b, sig, 8);
    const uint8_t ihdr[8] = {0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    memcpy(b + 8, ihdr, 8);
    const uint8_t dims[8] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                             (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h};
    memcpy(b + 16, dims, 8);
    memset(b + 24, 0, 9);
    b[24] = 8;
    b[25] = 2;
    return b;
}

static mf_preprocess pre;
static float out[64][3 * 32 * 32];

static void task_init(ttask *x, int id, const uint8_t *data, size_t len)
{
    memset(x, 0, sizeof *x);
    x->id = id;
    x->t.data = data;
    x->t.len = len;
    x->t.limits.max_pixels = (size_t)1 << 30;
    x->t.pre = &pre;
    x->t.out = out[id];
    x->t.done = on_done;
    x->t.user = x;
    x->t.slot = -1;
}

static void setup(void)
{
    mf_preprocess_default(&pre);
    pre.input_h = pre.input_w = 32;
    pre.resize = 32;
    reset();
}

/* A one-thread pool whose small-image thread is held by *t0 (a 64x64
 * task blocked in its done until release()). */
static mf_decoder *held_pool(ttask *t0)
{
    mf_decoder *d;
    char err[128];
    ck_assert_int_eq(mf_decoder_new(1, &d, err, sizeof err), 0);
    task_init(t0, 0, claim_png(0, 64, 64), 33);
    t0->block = 1;
    mf_decoder_submit(d, &t0->t);
    wait_blocked(1);
    return d;
}

START_TEST(cost_from_the_header)
{
    const uint8_t *small = claim_png(0, 64, 64), *big = claim_png(1, 4000, 3000);
    uint64_t cs = mf_decode_cost_ns(small, 33, NULL, NULL), cb = mf_decode_cost_ns(big, 33, NULL, NULL);
    ck_assert_uint_lt(cs, 100000);
    ck_assert_uint_gt(cb, 20000000); /* 12 MP: tens of ms */
    /* the preprocess counts: a thumbnail for a 224x224 model costs 140 us more */
    mf_preprocess p224;
    mf_preprocess_default(&p224);
    ck_assert_uint_gt(mf_decode_cost_ns(small, 33, NULL, &p224), cs + 100000);
    ck_assert_uint_gt(mf_decode_cost_ns(big, 33, NULL, &p224), cb + 12000000);
    size_t len;
    uint8_t *jpg = tu_load_fixture("tests/data/images/", "photo.jpg", &len);
    mf_image_limits scaled = {.min_side = 35};
    ck_assert_uint_lt(mf_decode_cost_ns(jpg, len, &scaled, NULL), mf_decode_cost_ns(jpg, len, NULL, NULL));
    free(jpg);
    ck_assert_uint_gt(mf_decode_cost_ns((const uint8_t *)"junk", 4, NULL, NULL), 0);
}
END_TEST

/* One small-image thread, held by a first task: the large images still
 * decode (their own thread), in order of expected finish; the small ones
 * wait for their thread and then run by expected finish. */
START_TEST(lanes_have_their_own_threads)
{
    ttask t[5];
    mf_decoder *d = held_pool(&t[0]);
    task_init(&t[1], 1, claim_png(1, 4000, 3000), 33);
    task_init(&t[2], 2, claim_png(2, 100, 100), 33);
    task_init(&t[3], 3, claim_png(3, 3000, 3000), 33);
    task_init(&t[4], 4, claim_png(4, 50, 50), 33);
    for (int i = 1; i < 5; i++) mf_decoder_submit(d, &t[i].t);
    wait_done(3); /* both large ones, while the small thread is held */
    ck_assert(order[1] == 1 || order[1] == 3);
    ck_assert(order[2] == 1 || order[2] == 3);
    ck_assert_int_eq(mf_decoder_queued(d), 2);
    release();
    wait_done(5);
    ck_assert_int_eq(order[3], 4); /* 50x50 submitted after 100x100 but expected to finish first */
    ck_assert_int_eq(order[4], 2);
    for (int i = 1; i < 5; i++) ck_assert_int_eq(t[i].t.status, MF_IMG_CORRUPT);
    mf_decoder_free(d);
}
END_TEST

/* Within a lane the priority comes first: a high-priority task submitted
 * last, with the latest expected finish, passes default and low ones; a
 * low one waits behind them all. */
START_TEST(priority_first)
{
    ttask t[5];
    mf_decoder *d = held_pool(&t[0]);
    static const int side[5] = {0, 50, 40, 100, 200}, prio[5] = {0, 2, 1, 1, 0};
    for (int i = 1; i < 5; i++) {
        task_init(&t[i], i, claim_png(i, (uint32_t)side[i], (uint32_t)side[i]), 33);
        t[i].t.priority = prio[i];
        mf_decoder_submit(d, &t[i].t);
    }
    ck_assert_int_eq(mf_decoder_queued(d), 4);
    release();
    wait_done(5);
    ck_assert_int_eq(order[1], 4); /* priority 0 */
    ck_assert_int_eq(order[2], 2); /* priority 1, expected first */
    ck_assert_int_eq(order[3], 3);
    ck_assert_int_eq(order[4], 1); /* priority 2, though the cheapest */
    mf_decoder_free(d);
}
END_TEST

/* A task still queued at its start-by time is completed then, expired and
 * not decoded, by the pool's reaper: here while the only small-image thread
 * is still held. */
START_TEST(expired_at_its_deadline)
{
    ttask t[4];
    mf_decoder *d = held_pool(&t[0]);
    const uint64_t t0 = mf_now_ns();
    task_init(&t[1], 1, claim_png(1, 50, 50), 33);
    t[1].t.start_by_ns = t0 + 30000000ull; /* 30 ms */
    task_init(&t[2], 2, claim_png(2, 40, 40), 33);
    task_init(&t[3], 3, claim_png(3, 60, 60), 33);
    t[3].t.start_by_ns = t0 + 60000000000ull; /* 60 s */
    for (int i = 1; i < 4; i++) mf_decoder_submit(d, &t[i].t);
    wait_done(2);
    const double waited = (double)(mf_now_ns() - t0) * 1e-9;
    ck_assert_msg(waited >= 0.029 && waited < 2.0, "answered after %.3f s", waited);
    ck_assert_int_eq(order[1], 1);
    ck_assert_int_eq(t[1].t.expired, 1);
    ck_assert_int_eq(t[1].t.status, MF_IMG_CANCELLED);
    ck_assert_int_eq(mf_decoder_queued(d), 2);
    release();
    wait_done(4);
    for (int i = 2; i < 4; i++) {
        ck_assert_int_eq(t[i].t.expired, 0);
        ck_assert_int_eq(t[i].t.status, MF_IMG_CORRUPT); /* decoded (its data is cut) */
    }
    mf_decoder_free(d);
}
END_TEST

/* Large images held up: one at a time on the one large-image thread of a
 * one-thread pool; small ones meanwhile run on theirs. */
START_TEST(large_ones_leave_a_thread)
{
    mf_decoder *d;
    char err[128];
    ck_assert_int_eq(mf_decoder_new(1, &d, err, sizeof err), 0);
    ttask t[4];
    task_init(&t[0], 0, claim_png(0, 4000, 3000), 33);
    t[0].block = 1;
    task_init(&t[1], 1, claim_png(1, 4000, 3000), 33);
    t[1].block = 1;
    mf_decoder_submit(d, &t[0].t);
    mf_decoder_submit(d, &t[1].t);
    wait_blocked(1);
    usleep(50000);
    ck_assert_int_eq(mf_decoder_running(d), 1); /* the second large one waits */
    ck_assert_int_eq(mf_decoder_queued(d), 1);
    task_init(&t[2], 2, claim_png(2, 64, 64), 33);
    mf_decoder_submit(d, &t[2].t);
    wait_done(2); /* the small one ran while the large thread is held */
    ck_assert_int_eq(order[1], 2);
    release();
    wait_done(3);
    ck_assert_int_eq(order[2], 1);
    mf_decoder_free(d);
}
END_TEST

START_TEST(cancel_and_free)
{
    ttask t[4];
    mf_decoder *d = held_pool(&t[0]);
    char err[128];
    ck_assert_int_eq(mf_decoder_cancel(d, &t[0].t), 0); /* running */
    for (int i = 1; i < 4; i++) {
        task_init(&t[i], i, claim_png(i, 200, 200 + i), 33);
        mf_decoder_submit(d, &t[i].t);
    }
    ck_assert_int_eq(mf_decoder_cancel(d, &t[2].t), 1);
    ck_assert_int_eq(t[2].t.status, MF_IMG_CANCELLED);
    ck_assert_int_eq(mf_decoder_cancel(d, &t[2].t), 0); /* twice */
    ck_assert_int_eq(mf_decoder_queued(d), 2);
    release();
    /* free: the running one finishes, the rest (if still queued) are cancelled */
    mf_decoder_free(d);
    ck_assert_int_eq(n_done, 4);
    for (int i = 1; i < 4; i++)
        ck_assert(t[i].t.status == MF_IMG_CORRUPT || t[i].t.status == MF_IMG_CANCELLED);
    mf_decoder_free(NULL);
    ck_assert_int_ne(mf_decoder_new(0, &d, err, sizeof err), 0);
}
END_TEST

/* Real images through the pool equal a direct decode + preprocess, and the
 * budget starts when the decode does. */
START_TEST(real_decodes)
{
    static const char *const names[] = {"photo.jpg", "png_rgb.png", "webp_lossy.webp", "gif_local.gif"};
    mf_decoder *d;
    char err[128];
    ck_assert_int_eq(mf_decoder_new(2, &d, err, sizeof err), 0);
    ttask t[4];
    uint8_t *bufs[4];
    size_t lens[4];
    for (int i = 0; i < 4; i++) {
        bufs[i] = tu_load_fixture("tests/data/images/", names[i], &lens[i]);
        task_init(&t[i], i, bufs[i], lens[i]);
        t[i].t.budget_ns = 10000000000ull;
        mf_decoder_submit(d, &t[i].t);
    }
    wait_done(4);
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(t[i].t.status == MF_IMG_OK && t[i].t.preprocess_rc == 0, "%s: %s", names[i], t[i].t.err);
        mf_image img;
        ck_assert_int_eq(mf_image_decode(bufs[i], lens[i], 0, &img, NULL, 0), MF_IMG_OK);
        static float want[3 * 32 * 32];
        ck_assert_int_eq(mf_preprocess_image(&img, &pre, want), 0);
        mf_image_free(&img);
        ck_assert_msg(memcmp(want, out[i], sizeof want) == 0, "%s: the pool's tensor differs", names[i]);
        ck_assert(t[i].t.decode_s > 0 && t[i].t.wait_s >= 0);
        free(bufs[i]);
    }
    mf_decoder_free(d);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("decoder");
    TCase *tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, cost_from_the_header);
    tcase_add_test(tc, priority_first);
    tcase_add_test(tc, expired_at_its_deadline);
    tcase_add_test(tc, lanes_have_their_own_threads);
    tcase_add_test(tc, large_ones_leave_a_thread);
    tcase_add_test(tc, cancel_and_free);
    tcase_add_test(tc, real_decodes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
