/* test_batcher.c -- the inference queue (server/batcher.h) on a real, small
 * synthetic model: results belong to their own inputs under concurrency,
 * batches form, a full queue refuses, old jobs time out, drain finishes or
 * cancels.  Worker threads are held deterministically by a done callback that
 * blocks until the test lets it go (callbacks run on the worker). */
#include "batcher.h"
#include "testutil.h"
#include "mf_util.h"
#include "mf_synthetic.h"

#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TINY_ARCH                                                                                 \
    "{\"name\": \"tiny\", \"stem\": 8, \"tokens\": 3, \"token_dim\": 16, \"groups\": 1,"          \
    " \"classifier_width\": 32, \"last_exp\": 6,"                                                 \
    " \"blocks\": [[\"A\", 2, 8, 2, 0], [\"B3\", 3, 16, 2, 2], [\"B\", 2, 16, 1, 2]]}"
#define CLASSES 10

static mf_model *model;
static int in_h, in_w;
static size_t image_floats;

static void setup(void)
{
    mf_arch a;
    char err[256];
    ck_assert_msg(mf_arch_parse(TINY_ARCH, &a, err, sizeof err) == MF_OK, "%s", err);
    ck_assert_msg(mf_model_synthetic(&a, CLASSES, 7, &model, err, sizeof err) == MF_OK, "%s", err);
    in_h = mf_model_preprocess(model)->input_h;
    in_w = mf_model_preprocess(model)->input_w;
    image_floats = (size_t)3 * in_h * in_w;
}

static void teardown(void)
{
    mf_model_free(model);
    model = NULL;
}

/* ---- a job with its own buffers and a completion flag ------------------- */

typedef struct tjob {
    mf_job job;
    float *input;
    float logits[CLASSES];
    pthread_mutex_t *mu; /* shared: guards done_count/calls below */
    pthread_cond_t *cv;
    int *done_count;
    int calls;            /* times done ran for this job (must end at 1) */
    int block;            /* the callback blocks until *release */
    int *blocked;         /* set while blocking */
    int *release;
} tjob;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done_count, blocked, release_flag;

static void on_done(mf_job *j, void *user)
{
    tjob *t = user;
    ck_assert_ptr_eq(&t->job, j);
    pthread_mutex_lock(&mu);
    t->calls++;
    done_count++;
    pthread_cond_broadcast(&cv);
    if (t->block) {
        blocked = 1;
        pthread_cond_broadcast(&cv);
        while (!release_flag) pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
}

static void fill_input(float *x, unsigned seed)
{
    for (size_t i = 0; i < image_floats; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int)(seed >> 9) % 2001 - 1000) / 500.0f;
    }
}

static tjob *tjobs_new(int n, unsigned seed0)
{
    tjob *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        t[i].input = malloc(image_floats * sizeof(float));
        fill_input(t[i].input, seed0 + (unsigned)i * 7919u);
        t[i].job.input = t[i].input;
        t[i].job.logits = t[i].logits;
        t[i].job.done = on_done;
        t[i].job.user = &t[i];
    }
    return t;
}

static void tjobs_free(tjob *t, int n)
{
    for (int i = 0; i < n; i++) free(t[i].input);
    free(t);
}

static void reset_flags(void)
{
    pthread_mutex_lock(&mu);
    done_count = blocked = release_flag = 0;
    pthread_mutex_unlock(&mu);
}

static void wait_count(int n)
{
    pthread_mutex_lock(&mu);
    while (done_count < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void wait_blocked(void)
{
    pthread_mutex_lock(&mu);
    while (!blocked) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void release_worker(void)
{
    pthread_mutex_lock(&mu);
    release_flag = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void serial_logits(const float *input, float *out)
{
    mf_workspace *ws;
    ck_assert(mf_workspace_new(model, 1, &ws) == MF_OK);
    ck_assert(mf_forward(model, ws, input, 1, in_h, in_w, out) == MF_OK);
    mf_workspace_free(ws);
}

static mf_batcher *batcher_new(int workers, int max_batch, int max_queue, long delay_us,
                               long timeout_ms, mf_metrics *metrics)
{
    mf_batcher_config c = {workers, 1, max_batch, max_queue, delay_us, timeout_ms};
    mf_batcher *b;
    char err[256];
    ck_assert_msg(mf_batcher_new(model, &c, metrics, &b, err, sizeof err) == MF_BATCHER_OK, "%s", err);
    return b;
}

/* ---- concurrent submitters: every answer is its own input's ------------- */

enum { SUBMITTERS = 4, PER_SUBMITTER = 24 };

typedef struct submitter {
    mf_batcher *b;
    tjob *jobs;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    mf_batcher_expect(s->b, +1); /* like an HTTP thread with uploads in progress */
    for (int i = 0; i < PER_SUBMITTER; i++) {
        mf_job *j = &s->jobs[i].job;
        ck_assert_int_eq(mf_batcher_submit(s->b, &j, 1), MF_BATCHER_OK);
        if (i % 5 == 0) usleep(200);
    }
    mf_batcher_expect(s->b, -1);
    return NULL;
}

START_TEST(concurrent_results_match_serial_forward)
{
    reset_flags();
    mf_metrics *metrics = mf_metrics_new("tiny", "tiny", CLASSES, in_h, in_w);
    mf_batcher *b = batcher_new(2, 8, 1000, 3000, 0, metrics);
    submitter subs[SUBMITTERS];
    pthread_t tids[SUBMITTERS];
    for (int s = 0; s < SUBMITTERS; s++) {
        subs[s].b = b;
        subs[s].jobs = tjobs_new(PER_SUBMITTER, 1000u + (unsigned)s * 100u);
        pthread_create(&tids[s], NULL, submit_main, &subs[s]);
    }
    for (int s = 0; s < SUBMITTERS; s++) pthread_join(tids[s], NULL);
    wait_count(SUBMITTERS * PER_SUBMITTER);
    int max_batch_seen = 0;
    float ref[CLASSES];
    for (int s = 0; s < SUBMITTERS; s++)
        for (int i = 0; i < PER_SUBMITTER; i++) {
            tjob *t = &subs[s].jobs[i];
            ck_assert_int_eq(t->calls, 1);
            ck_assert_int_eq(t->job.status, MF_BATCHER_OK);
            ck_assert_int_ge(t->job.batch_size, 1);
            ck_assert_int_le(t->job.batch_size, 8);
            ck_assert(t->job.queue_s >= 0 && t->job.inference_s > 0);
            if (t->job.batch_size > max_batch_seen) max_batch_seen = t->job.batch_size;
            serial_logits(t->input, ref);
            for (int k = 0; k < CLASSES; k++)
                ck_assert_msg(fabsf(t->logits[k] - ref[k]) <= 1e-5f * (1 + fabsf(ref[k])),
                              "submitter %d job %d class %d: %g vs serial %g", s, i, k,
                              t->logits[k], ref[k]);
        }
    ck_assert_msg(max_batch_seen > 1, "no batch larger than 1 formed");
    mf_batcher_free(b);
    size_t len;
    char *text = mf_metrics_render(metrics, &len);
    ck_assert(strstr(text, "mobileformer_batch_size_count") != NULL);
    ck_assert(strstr(text, "mobileformer_queue_depth 0\n") != NULL);
    free(text);
    mf_metrics_free(metrics);
    for (int s = 0; s < SUBMITTERS; s++) tjobs_free(subs[s].jobs, PER_SUBMITTER);
}
END_TEST

START_TEST(burst_forms_full_batches)
{
    reset_flags();
    mf_batcher *b = batcher_new(1, 8, 100, 200000, 0, NULL);
    tjob *t = tjobs_new(16, 5);
    mf_job *jobs[16];
    for (int i = 0; i < 16; i++) jobs[i] = &t[i].job;
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 16), MF_BATCHER_OK);
    wait_count(16);
    for (int i = 0; i < 16; i++) ck_assert_int_eq(t[i].job.batch_size, 8);
    mf_batcher_free(b);
    tjobs_free(t, 16);
}
END_TEST

static double now_s(void) { return (double)mf_now_ns() * 1e-9; }

/* Nothing else on its way: a lone job runs at once, not after max_delay_us. */
START_TEST(lone_job_does_not_wait)
{
    reset_flags();
    mf_batcher *b = batcher_new(1, 8, 100, 2000000 /* 2 s */, 0, NULL);
    tjob *t = tjobs_new(1, 9);
    mf_job *j = &t[0].job;
    double t0 = now_s();
    ck_assert_int_eq(mf_batcher_submit(b, &j, 1), MF_BATCHER_OK);
    wait_count(1);
    double waited = now_s() - t0;
    ck_assert_msg(waited < 1.0, "a lone job waited %.3f s for a batch that could not fill", waited);
    ck_assert_int_eq(t[0].job.batch_size, 1);
    mf_batcher_free(b);
    tjobs_free(t, 1);
}
END_TEST

/* An image on its way (expect +1) is waited for, up to max_delay_us. */
START_TEST(expected_image_joins_the_batch)
{
    reset_flags();
    mf_batcher *b = batcher_new(1, 8, 100, 5000000 /* 5 s */, 0, NULL);
    tjob *t = tjobs_new(2, 11);
    mf_job *j0 = &t[0].job, *j1 = &t[1].job;
    mf_batcher_expect(b, +1);
    ck_assert_int_eq(mf_batcher_submit(b, &j0, 1), MF_BATCHER_OK);
    usleep(100000);
    ck_assert_int_eq(mf_batcher_submit(b, &j1, 1), MF_BATCHER_OK);
    mf_batcher_expect(b, -1);
    wait_count(2);
    ck_assert_int_eq(t[0].job.batch_size, 2);
    ck_assert_int_eq(t[1].job.batch_size, 2);
    mf_batcher_free(b);
    tjobs_free(t, 2);
}
END_TEST

START_TEST(full_queue_refuses_all_or_nothing)
{
    reset_flags();
    mf_batcher *b = batcher_new(1, 1, 4, 0, 0, NULL);
    tjob *t = tjobs_new(10, 9);
    t[0].block = 1; /* holds the only worker */
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(b, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *jobs[5];
    for (int i = 0; i < 5; i++) jobs[i] = &t[1 + i].job;
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 5), MF_BATCHER_QUEUE_FULL);
    ck_assert_int_eq(mf_batcher_queue_depth(b), 0);
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 3), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_submit(b, jobs + 3, 2), MF_BATCHER_QUEUE_FULL);
    ck_assert_int_eq(mf_batcher_submit(b, jobs + 3, 1), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_queue_depth(b), 4);
    ck_assert_int_eq(mf_batcher_submit(b, jobs + 4, 1), MF_BATCHER_QUEUE_FULL);
    release_worker();
    wait_count(5);
    for (int i = 0; i < 5; i++) ck_assert_int_eq(t[i].job.status, MF_BATCHER_OK);
    ck_assert_int_eq(t[5].calls, 0); /* refused jobs never complete */
    mf_batcher_free(b);
    tjobs_free(t, 10);
}
END_TEST

START_TEST(queued_too_long_times_out_unrun)
{
    reset_flags();
    mf_batcher *b = batcher_new(1, 1, 16, 0, 50, NULL);
    tjob *t = tjobs_new(4, 11);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(b, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *jobs[3] = {&t[1].job, &t[2].job, &t[3].job};
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 3), MF_BATCHER_OK);
    wait_count(4); /* the reaper answers them while the worker is held */
    for (int i = 1; i < 4; i++) {
        ck_assert_int_eq(t[i].job.status, MF_BATCHER_TIMEOUT);
        ck_assert_int_eq(t[i].job.batch_size, 0);
        ck_assert(t[i].job.queue_s >= 0.045);
    }
    ck_assert_int_eq(mf_batcher_queue_depth(b), 0);
    release_worker();
    mf_job *j = &t[1].job; /* reusable after done */
    ck_assert_int_eq(mf_batcher_submit(b, &j, 1), MF_BATCHER_OK);
    wait_count(5);
    ck_assert_int_eq(t[1].job.status, MF_BATCHER_OK);
    mf_batcher_free(b);
    tjobs_free(t, 4);
}
END_TEST

typedef struct drain_arg {
    mf_batcher *b;
    long timeout_ms;
    int cancelled;
} drain_arg;

static void *drain_main(void *arg)
{
    drain_arg *d = arg;
    d->cancelled = mf_batcher_drain(d->b, d->timeout_ms);
    return NULL;
}

START_TEST(drain_finishes_queued_work)
{
    reset_flags();
    mf_batcher *b = batcher_new(2, 4, 100, 1000, 0, NULL);
    tjob *t = tjobs_new(20, 13);
    mf_job *jobs[20];
    for (int i = 0; i < 20; i++) jobs[i] = &t[i].job;
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 20), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_drain(b, 30000), 0);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(t[i].calls, 1);
        ck_assert_int_eq(t[i].job.status, MF_BATCHER_OK);
    }
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 1), MF_BATCHER_DRAINING);
    ck_assert_int_eq(mf_batcher_drain(b, 0), 0); /* idempotent */
    mf_batcher_free(b);
    tjobs_free(t, 20);
}
END_TEST

START_TEST(drain_timeout_cancels_the_rest)
{
    reset_flags();
    mf_batcher *b = batcher_new(1, 1, 100, 0, 0, NULL);
    tjob *t = tjobs_new(4, 17);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(b, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *jobs[3] = {&t[1].job, &t[2].job, &t[3].job};
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 3), MF_BATCHER_OK);
    drain_arg d = {b, 100, -1};
    pthread_t tid;
    pthread_create(&tid, NULL, drain_main, &d);
    wait_count(4); /* the three queued ones are cancelled after 100 ms */
    for (int i = 1; i < 4; i++) ck_assert_int_eq(t[i].job.status, MF_BATCHER_DRAINING);
    ck_assert_int_eq(mf_batcher_submit(b, jobs, 1), MF_BATCHER_DRAINING);
    release_worker(); /* the running batch always finishes */
    pthread_join(tid, NULL);
    ck_assert_int_eq(d.cancelled, 3);
    ck_assert_int_eq(t[0].job.status, MF_BATCHER_OK);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(t[i].calls, 1);
    mf_batcher_free(b);
    tjobs_free(t, 4);
}
END_TEST

START_TEST(bad_arguments)
{
    mf_batcher_config c = {0, 1, 8, 8, 0, 0};
    mf_batcher *b = (mf_batcher *)1;
    char err[256];
    ck_assert_int_eq(mf_batcher_new(model, &c, NULL, &b, err, sizeof err), MF_BATCHER_ARG);
    ck_assert_ptr_null(b);
    b = batcher_new(1, 2, 4, 0, 0, NULL);
    tjob *t = tjobs_new(1, 1);
    t[0].job.done = NULL;
    mf_job *j = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(b, &j, 1), MF_BATCHER_ARG);
    ck_assert_int_eq(mf_batcher_submit(b, NULL, 1), MF_BATCHER_ARG);
    ck_assert_int_eq(mf_batcher_submit(b, &j, 0), MF_BATCHER_OK);
    mf_batcher_free(b);
    mf_batcher_free(NULL);
    tjobs_free(t, 1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("batcher");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, concurrent_results_match_serial_forward);
    tcase_add_test(tc, burst_forms_full_batches);
    tcase_add_test(tc, lone_job_does_not_wait);
    tcase_add_test(tc, expected_image_joins_the_batch);
    tcase_add_test(tc, full_queue_refuses_all_or_nothing);
    tcase_add_test(tc, queued_too_long_times_out_unrun);
    tcase_add_test(tc, drain_finishes_queued_work);
    tcase_add_test(tc, drain_timeout_cancels_the_rest);
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
