/* test_batcher.c -- the worker pool and its queues (server/batcher.h) on a
 * real, small synthetic model: results belong to their own inputs under
 * concurrency, batches form, a full queue refuses, old jobs time out, drain
 * finishes or cancels, priorities order a queue, queues take turns, a job can
 * be cancelled, carry its own deadline or its own input size, and a queue can
 * be removed while others serve.  Worker threads are held deterministically by a done callback that
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
    int seq;              /* completion order (1 = first) */
    int block;            /* the callback blocks until *release */
    int *blocked;         /* set while blocking */
    int *release;
} tjob;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done_count, blocked, release_flag, seq_counter;

static void on_done(mf_job *j, void *user)
{
    tjob *t = user;
    ck_assert_ptr_eq(&t->job, j);
    pthread_mutex_lock(&mu);
    t->calls++;
    done_count++;
    t->seq = ++seq_counter;
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
    done_count = blocked = release_flag = seq_counter = 0;
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

/* A pool with one queue for `model`: most tests need just that. */
typedef struct tb {
    mf_batcher *b;
    mf_queue *q;
} tb;

static mf_queue *queue_new(mf_batcher *b, const mf_model *m, int max_batch, int max_queue, long delay_us,
                           long timeout_ms, mf_series *series)
{
    mf_queue_config qc = {max_batch, max_queue, delay_us, timeout_ms, series};
    mf_queue *q;
    char err[256];
    ck_assert_msg(mf_queue_new(b, m, &qc, &q, err, sizeof err) == MF_BATCHER_OK, "%s", err);
    return q;
}

static tb batcher_new(int workers, int max_batch, int max_queue, long delay_us, long timeout_ms,
                      mf_metrics *metrics, mf_series *series)
{
    mf_batcher_config c = {workers, 1};
    tb t;
    char err[256];
    ck_assert_msg(mf_batcher_new(&c, metrics, &t.b, err, sizeof err) == MF_BATCHER_OK, "%s", err);
    t.q = queue_new(t.b, model, max_batch, max_queue, delay_us, timeout_ms, series);
    return t;
}

/* ---- concurrent submitters: every answer is its own input's ------------- */

enum { SUBMITTERS = 4, PER_SUBMITTER = 24 };

typedef struct submitter {
    mf_queue *q;
    tjob *jobs;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    mf_batcher_expect(s->q, +1); /* like an HTTP thread with uploads in progress */
    for (int i = 0; i < PER_SUBMITTER; i++) {
        mf_job *j = &s->jobs[i].job;
        ck_assert_int_eq(mf_batcher_submit(s->q, &j, 1), MF_BATCHER_OK);
        if (i % 5 == 0) usleep(200);
    }
    mf_batcher_expect(s->q, -1);
    return NULL;
}

START_TEST(concurrent_results_match_serial_forward)
{
    reset_flags();
    mf_metrics *metrics = mf_metrics_new();
    mf_series *series = mf_series_new(metrics, "tiny", "1", "tiny", CLASSES, in_h, in_w);
    tb t2 = batcher_new(2, 8, 1000, 3000, 0, metrics, series);
    mf_batcher *b = t2.b;
    submitter subs[SUBMITTERS];
    pthread_t tids[SUBMITTERS];
    for (int s = 0; s < SUBMITTERS; s++) {
        subs[s].q = t2.q;
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
    const char *bs = strstr(text, "mobileformer_batch_size_count");
    ck_assert_msg(strstr(text, "mobileformer_batch_size_count{model=\"tiny\",version=\"1\"} ") != NULL, "%.300s",
                  bs ? bs : text);
    const char *qd = strstr(text, "mobileformer_queue_depth{");
    ck_assert_msg(qd && strncmp(qd, "mobileformer_queue_depth{model=\"tiny\",version=\"1\"} 0\n", 51) == 0, "%.200s",
                  qd ? qd : text);
    free(text);
    mf_series_free(metrics, series);
    mf_metrics_free(metrics);
    for (int s = 0; s < SUBMITTERS; s++) tjobs_free(subs[s].jobs, PER_SUBMITTER);
}
END_TEST

START_TEST(burst_forms_full_batches)
{
    reset_flags();
    tb tb_ = batcher_new(1, 8, 100, 200000, 0, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(16, 5);
    mf_job *jobs[16];
    for (int i = 0; i < 16; i++) jobs[i] = &t[i].job;
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 16), MF_BATCHER_OK);
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
    tb tb_ = batcher_new(1, 8, 100, 2000000 /* 2 s */, 0, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(1, 9);
    mf_job *j = &t[0].job;
    double t0 = now_s();
    ck_assert_int_eq(mf_batcher_submit(q, &j, 1), MF_BATCHER_OK);
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
    tb tb_ = batcher_new(1, 8, 100, 5000000 /* 5 s */, 0, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(2, 11);
    mf_job *j0 = &t[0].job, *j1 = &t[1].job;
    mf_batcher_expect(q, +1);
    ck_assert_int_eq(mf_batcher_submit(q, &j0, 1), MF_BATCHER_OK);
    usleep(100000);
    ck_assert_int_eq(mf_batcher_submit(q, &j1, 1), MF_BATCHER_OK);
    mf_batcher_expect(q, -1);
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
    tb tb_ = batcher_new(1, 1, 4, 0, 0, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(10, 9);
    t[0].block = 1; /* holds the only worker */
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *jobs[5];
    for (int i = 0; i < 5; i++) jobs[i] = &t[1 + i].job;
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 5), MF_BATCHER_QUEUE_FULL);
    ck_assert_int_eq(mf_batcher_queue_depth(b), 0);
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 3), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_submit(q, jobs + 3, 2), MF_BATCHER_QUEUE_FULL);
    ck_assert_int_eq(mf_batcher_submit(q, jobs + 3, 1), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_queue_depth(b), 4);
    ck_assert_int_eq(mf_batcher_submit(q, jobs + 4, 1), MF_BATCHER_QUEUE_FULL);
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
    tb tb_ = batcher_new(1, 1, 16, 0, 50, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(4, 11);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *jobs[3] = {&t[1].job, &t[2].job, &t[3].job};
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 3), MF_BATCHER_OK);
    wait_count(4); /* the reaper answers them while the worker is held */
    for (int i = 1; i < 4; i++) {
        ck_assert_int_eq(t[i].job.status, MF_BATCHER_TIMEOUT);
        ck_assert_int_eq(t[i].job.batch_size, 0);
        ck_assert(t[i].job.queue_s >= 0.045);
    }
    ck_assert_int_eq(mf_batcher_queue_depth(b), 0);
    release_worker();
    mf_job *j = &t[1].job; /* reusable after done */
    ck_assert_int_eq(mf_batcher_submit(q, &j, 1), MF_BATCHER_OK);
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
    tb tb_ = batcher_new(2, 4, 100, 1000, 0, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(20, 13);
    mf_job *jobs[20];
    for (int i = 0; i < 20; i++) jobs[i] = &t[i].job;
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 20), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_drain(b, 30000), 0);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(t[i].calls, 1);
        ck_assert_int_eq(t[i].job.status, MF_BATCHER_OK);
    }
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 1), MF_BATCHER_DRAINING);
    ck_assert_int_eq(mf_batcher_drain(b, 0), 0); /* idempotent */
    mf_batcher_free(b);
    tjobs_free(t, 20);
}
END_TEST

START_TEST(drain_timeout_cancels_the_rest)
{
    reset_flags();
    tb tb_ = batcher_new(1, 1, 100, 0, 0, NULL, NULL);
    mf_batcher *b = tb_.b;
    mf_queue *q = tb_.q;
    tjob *t = tjobs_new(4, 17);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *jobs[3] = {&t[1].job, &t[2].job, &t[3].job};
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 3), MF_BATCHER_OK);
    drain_arg d = {b, 100, -1};
    pthread_t tid;
    pthread_create(&tid, NULL, drain_main, &d);
    wait_count(4); /* the three queued ones are cancelled after 100 ms */
    for (int i = 1; i < 4; i++) ck_assert_int_eq(t[i].job.status, MF_BATCHER_DRAINING);
    ck_assert_int_eq(mf_batcher_submit(q, jobs, 1), MF_BATCHER_DRAINING);
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
    mf_batcher_config c = {0, 1};
    mf_batcher *b = (mf_batcher *)1;
    char err[256];
    ck_assert_int_eq(mf_batcher_new(&c, NULL, &b, err, sizeof err), MF_BATCHER_ARG);
    ck_assert_ptr_null(b);
    tb tb_ = batcher_new(1, 2, 4, 0, 0, NULL, NULL);
    mf_queue *q = tb_.q, *q2 = (mf_queue *)1;
    mf_queue_config bad = {0, 4, 0, 0, NULL};
    ck_assert_int_eq(mf_queue_new(tb_.b, model, &bad, &q2, err, sizeof err), MF_BATCHER_ARG);
    ck_assert_ptr_null(q2);
    tjob *t = tjobs_new(1, 1);
    t[0].job.done = NULL;
    mf_job *j = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(q, &j, 1), MF_BATCHER_ARG);
    ck_assert_int_eq(mf_batcher_submit(q, NULL, 1), MF_BATCHER_ARG);
    ck_assert_int_eq(mf_batcher_submit(q, &j, 0), MF_BATCHER_OK);
    t[0].job.done = on_done;
    t[0].job.priority = MF_PRIORITIES;
    ck_assert_int_eq(mf_batcher_submit(q, &j, 1), MF_BATCHER_ARG);
    ck_assert_int_eq(mf_batcher_cancel(j), 0); /* never queued */
    ck_assert_int_eq(mf_batcher_cancel(NULL), 0);
    mf_batcher_free(tb_.b);
    mf_batcher_free(NULL);
    mf_queue_free(NULL);
    tjobs_free(t, 1);
}
END_TEST

/* With the only worker held, higher priority jobs submitted later run first;
 * within one priority, oldest first. */
START_TEST(priorities_order_the_queue)
{
    reset_flags();
    tb tb_ = batcher_new(1, 1, 100, 0, 0, NULL, NULL);
    tjob *t = tjobs_new(7, 23);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    const int prio[6] = {2, 2, 1, 0, 1, 0}; /* jobs 1..6 */
    for (int i = 1; i <= 6; i++) {
        t[i].job.priority = prio[i - 1];
        mf_job *j = &t[i].job;
        ck_assert_int_eq(mf_batcher_submit(tb_.q, &j, 1), MF_BATCHER_OK);
    }
    release_worker();
    wait_count(7);
    /* expected order after job 0: 4, 6 (priority 0), 3, 5 (1), 1, 2 (2) */
    const int order[6] = {4, 6, 3, 5, 1, 2};
    for (int k = 0; k < 6; k++)
        ck_assert_msg(t[order[k]].seq == k + 2, "job %d finished %d-th, expected %d-th", order[k], t[order[k]].seq,
                      k + 2);
    mf_batcher_free(tb_.b);
    tjobs_free(t, 7);
}
END_TEST

/* Two queues on one worker: a backlog on the first delays a job of the second
 * by one batch, not by the backlog. */
START_TEST(queues_take_turns)
{
    reset_flags();
    tb tb_ = batcher_new(1, 1, 100, 0, 0, NULL, NULL);
    mf_queue *other = queue_new(tb_.b, model, 4, 100, 0, 0, NULL);
    tjob *t = tjobs_new(8, 29);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    mf_job *flood[6];
    for (int i = 0; i < 6; i++) flood[i] = &t[1 + i].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, flood, 6), MF_BATCHER_OK);
    mf_job *j7 = &t[7].job;
    ck_assert_int_eq(mf_batcher_submit(other, &j7, 1), MF_BATCHER_OK);
    ck_assert_int_eq(mf_queue_depth(tb_.q), 6);
    ck_assert_int_eq(mf_queue_depth(other), 1);
    ck_assert_int_eq(mf_batcher_queue_depth(tb_.b), 7);
    release_worker();
    wait_count(8);
    ck_assert_msg(t[7].seq <= 3, "the other queue's job finished %d-th, behind the flood", t[7].seq);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(t[i].job.status, MF_BATCHER_OK);
    mf_queue_free(other); /* idle: freed at once, the pool keeps serving the first */
    mf_job *j1 = &t[1].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j1, 1), MF_BATCHER_OK);
    wait_count(9);
    ck_assert_int_eq(t[1].job.status, MF_BATCHER_OK);
    mf_batcher_free(tb_.b);
    tjobs_free(t, 8);
}
END_TEST

/* Queues of two different models side by side give each its own answers. */
START_TEST(two_models_two_queues)
{
    reset_flags();
    mf_arch a;
    char err[256];
    ck_assert(mf_arch_parse(TINY_ARCH, &a, err, sizeof err) == MF_OK);
    mf_model *m2;
    ck_assert(mf_model_synthetic(&a, CLASSES, 99, &m2, err, sizeof err) == MF_OK);
    tb tb_ = batcher_new(2, 4, 100, 500, 0, NULL, NULL);
    mf_queue *q2 = queue_new(tb_.b, m2, 4, 100, 500, 0, NULL);
    tjob *t = tjobs_new(16, 31);
    mf_job *ja[8], *jb[8];
    for (int i = 0; i < 8; i++) {
        ja[i] = &t[i].job;
        jb[i] = &t[8 + i].job;
    }
    ck_assert_int_eq(mf_batcher_submit(tb_.q, ja, 8), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_submit(q2, jb, 8), MF_BATCHER_OK);
    wait_count(16);
    mf_workspace *ws;
    ck_assert(mf_workspace_new(m2, 1, &ws) == MF_OK);
    for (int i = 0; i < 16; i++) {
        float ref[CLASSES];
        if (i < 8) serial_logits(t[i].input, ref);
        else ck_assert(mf_forward(m2, ws, t[i].input, 1, in_h, in_w, ref) == MF_OK);
        for (int k = 0; k < CLASSES; k++)
            ck_assert_msg(fabsf(t[i].logits[k] - ref[k]) <= 1e-5f * (1 + fabsf(ref[k])), "job %d class %d", i, k);
    }
    mf_workspace_free(ws);
    mf_queue_free(q2);
    mf_batcher_free(tb_.b);
    mf_model_free(m2);
    tjobs_free(t, 16);
}
END_TEST

START_TEST(cancel_takes_a_queued_job_back)
{
    reset_flags();
    tb tb_ = batcher_new(1, 1, 100, 0, 0, NULL, NULL);
    tjob *t = tjobs_new(3, 37);
    t[0].block = 1;
    mf_job *j0 = &t[0].job, *js[2] = {&t[1].job, &t[2].job};
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    ck_assert_int_eq(mf_batcher_cancel(j0), 0); /* running: not cancellable */
    ck_assert_int_eq(mf_batcher_submit(tb_.q, js, 2), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_cancel(js[0]), 1);
    ck_assert_int_eq(t[1].calls, 1); /* done ran here, at once */
    ck_assert_int_eq(t[1].job.status, MF_BATCHER_CANCELLED);
    ck_assert_int_eq(t[1].job.batch_size, 0);
    ck_assert_int_eq(mf_batcher_cancel(js[0]), 0); /* twice: no second callback */
    ck_assert_int_eq(mf_queue_depth(tb_.q), 1);
    release_worker();
    wait_count(3);
    ck_assert_int_eq(t[1].calls, 1);
    ck_assert_int_eq(t[2].job.status, MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_cancel(js[1]), 0); /* done: not cancellable */
    mf_batcher_free(tb_.b);
    tjobs_free(t, 3);
}
END_TEST

/* A job's own deadline applies though the queue has none, and a later
 * deadline does not extend the queue's timeout. */
START_TEST(job_deadline_overrides_queue_timeout)
{
    reset_flags();
    tb tb_ = batcher_new(1, 1, 100, 0, 0, NULL, NULL);
    tjob *t = tjobs_new(3, 41);
    t[0].block = 1;
    mf_job *j0 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j0, 1), MF_BATCHER_OK);
    wait_blocked();
    t[1].job.deadline_ns = mf_now_ns() + 40 * 1000000ull; /* 40 ms */
    mf_job *j1 = &t[1].job, *j2 = &t[2].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j1, 1), MF_BATCHER_OK);
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j2, 1), MF_BATCHER_OK);
    wait_count(2); /* the reaper answers job 1 while the worker is held */
    ck_assert_int_eq(t[1].job.status, MF_BATCHER_TIMEOUT);
    ck_assert_int_eq(t[2].calls, 0);
    release_worker();
    wait_count(3);
    ck_assert_int_eq(t[2].job.status, MF_BATCHER_OK);
    mf_batcher_free(tb_.b);
    tjobs_free(t, 3);
}
END_TEST

/* A job of another input size runs alone, at its size, next to batches of
 * the queue's own size. */
START_TEST(odd_size_job_runs_at_its_size)
{
    reset_flags();
    tb tb_ = batcher_new(1, 4, 100, 200000, 0, NULL, NULL);
    const int oh = in_h + 32, ow = in_w + 64;
    tjob *t = tjobs_new(4, 43);
    free(t[1].input);
    t[1].input = malloc((size_t)3 * oh * ow * sizeof(float));
    unsigned seed = 5;
    for (size_t i = 0; i < (size_t)3 * oh * ow; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[1].input[i] = (float)((int)(seed >> 9) % 2001 - 1000) / 500.0f;
    }
    t[1].job.input = t[1].input;
    t[1].job.h = oh;
    t[1].job.w = ow;
    mf_job *js[4] = {&t[0].job, &t[1].job, &t[2].job, &t[3].job};
    ck_assert_int_eq(mf_batcher_submit(tb_.q, js, 4), MF_BATCHER_OK);
    wait_count(4);
    ck_assert_int_eq(t[1].job.batch_size, 1);
    ck_assert_int_eq(t[0].job.batch_size, 3);
    mf_workspace *ws;
    float ref[CLASSES];
    ck_assert(mf_workspace_new(model, 1, &ws) == MF_OK);
    ck_assert(mf_forward(model, ws, t[1].input, 1, oh, ow, ref) == MF_OK);
    mf_workspace_free(ws);
    for (int k = 0; k < CLASSES; k++) ck_assert(fabsf(t[1].logits[k] - ref[k]) <= 1e-5f * (1 + fabsf(ref[k])));
    for (int i = 0; i < 4; i++) ck_assert_int_eq(t[i].job.status, MF_BATCHER_OK);
    mf_batcher_free(tb_.b);
    tjobs_free(t, 4);
}
END_TEST

/* A queue removed while its leader waits for a fuller batch: the leader is
 * woken and the queue freed without touching freed memory (ASan/TSan). */
START_TEST(queue_free_while_leader_waits)
{
    reset_flags();
    tb tb_ = batcher_new(1, 8, 100, 5000000 /* 5 s */, 0, NULL, NULL);
    mf_queue *q2 = queue_new(tb_.b, model, 8, 100, 5000000, 0, NULL);
    tjob *t = tjobs_new(1, 47);
    mf_job *j = &t[0].job;
    mf_batcher_expect(q2, +1); /* the leader will wait for more */
    ck_assert_int_eq(mf_batcher_submit(q2, &j, 1), MF_BATCHER_OK);
    usleep(50000);
    ck_assert_int_eq(mf_batcher_cancel(j), 1); /* the leader now leads an empty queue */
    double t0 = now_s();
    mf_queue_free(q2);
    ck_assert_msg(now_s() - t0 < 2.0, "queue free waited for the leader's whole delay");
    mf_job *j2 = &t[0].job;
    ck_assert_int_eq(mf_batcher_submit(tb_.q, &j2, 1), MF_BATCHER_OK);
    wait_count(2);
    ck_assert_int_eq(t[0].job.status, MF_BATCHER_OK);
    mf_batcher_free(tb_.b);
    tjobs_free(t, 1);
}
END_TEST

/* A model loaded with a larger max_batch while a worker is inside a batch:
 * the worker goes on using its job array outside the pool's lock, so that
 * array must not move (it was realloc'd to the largest max_batch: under
 * ASan a heap-use-after-free in run_batch).  Job 0's callback holds the
 * worker mid-batch while the new queue is made. */
START_TEST(queue_added_during_a_batch)
{
    reset_flags();
    tb tb_ = batcher_new(1, 2, 100, 20000, 0, NULL, NULL);
    tjob *t = tjobs_new(2, 53);
    t[0].block = 1;
    mf_job *js[2] = {&t[0].job, &t[1].job};
    ck_assert_int_eq(mf_batcher_submit(tb_.q, js, 2), MF_BATCHER_OK);
    wait_blocked();
    mf_queue *big = queue_new(tb_.b, model, 64, 100, 0, 0, NULL);
    release_worker();
    wait_count(2);
    ck_assert_int_eq(t[0].job.batch_size, 2);
    ck_assert_int_eq(t[1].job.status, MF_BATCHER_OK);
    mf_queue_config over = {MF_MAX_BATCH_LIMIT + 1, 4, 0, 0, NULL};
    mf_queue *q3 = (mf_queue *)1;
    char err[256];
    ck_assert_int_eq(mf_queue_new(tb_.b, model, &over, &q3, err, sizeof err), MF_BATCHER_ARG);
    ck_assert_ptr_null(q3);
    mf_queue_free(big);
    mf_batcher_free(tb_.b);
    tjobs_free(t, 2);
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
    tcase_add_test(tc, priorities_order_the_queue);
    tcase_add_test(tc, queues_take_turns);
    tcase_add_test(tc, two_models_two_queues);
    tcase_add_test(tc, cancel_takes_a_queued_job_back);
    tcase_add_test(tc, job_deadline_overrides_queue_timeout);
    tcase_add_test(tc, odd_size_job_runs_at_its_size);
    tcase_add_test(tc, queue_free_while_leader_waits);
    tcase_add_test(tc, queue_added_during_a_batch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(suite()); }
