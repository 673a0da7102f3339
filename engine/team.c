/* team.c -- a workspace's helper threads; see team.h. */
#include "team.h"

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

/* Waiting in the team: spin briefly (tasks follow each other within
 * microseconds), then yield the core. */
static inline void cpu_relax(unsigned *spins)
{
    if (++*spins < 2000) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
}

void mf_split(int n, int unit, int i, int nt, int *lo, int *hi)
{
    int units = (n + unit - 1) / unit;
    *lo = (int)((long)units * i / nt) * unit;
    *hi = (int)((long)units * (i + 1) / nt) * unit;
    if (*hi > n) *hi = n;
    if (*lo > n) *lo = n;
}

void mf_team_par(mf_team *t, mf_team_task fn, void *arg)
{
    const int nt = t->size;
    if (nt <= 1) {
        fn(arg, 0, 1);
        return;
    }
    t->task_fn = fn;
    t->task_arg = arg;
    atomic_store_explicit(&t->task_done, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->task_gen, 1, memory_order_release);
    fn(arg, 0, nt);
    unsigned spins = 0;
    while (atomic_load_explicit(&t->task_done, memory_order_acquire) < nt - 1) cpu_relax(&spins);
}

/* Helper side of a team pass: run tasks until thread 0 publishes the end. */
static void team_loop(mf_team *t, int i)
{
    unsigned seen = t->gen0; /* tasks published before this thread woke still count */
    for (;;) {
        unsigned g, spins = 0;
        while ((g = atomic_load_explicit(&t->task_gen, memory_order_acquire)) == seen) cpu_relax(&spins);
        seen = g;
        mf_team_task fn = t->task_fn;
        if (!fn) return;
        fn(t->task_arg, i, t->size);
        atomic_fetch_add_explicit(&t->task_done, 1, memory_order_release);
    }
}

typedef struct helper_arg {
    mf_team *t;
    int i;
} helper_arg;

static void *helper_main(void *arg)
{
    helper_arg ha = *(helper_arg *)arg;
    free(arg);
    mf_team *t = ha.t;
    unsigned seen = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (t->generation == seen && !t->quit) pthread_cond_wait(&t->cv_start, &t->mu);
        if (t->quit) break;
        seen = t->generation;
        pthread_mutex_unlock(&t->mu);
        if (t->size > 1) team_loop(t, ha.i);
        else t->share(t->ctx, ha.i);
        pthread_mutex_lock(&t->mu);
        if (--t->pending == 0) pthread_cond_signal(&t->cv_done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

mf_status mf_team_init(mf_team *t, int threads, void (*share)(void *ctx, int t), void *ctx)
{
    *t = (mf_team){.threads = threads, .share = share, .ctx = ctx, .size = 1, .started = 1};
    t->tids = calloc((size_t)threads, sizeof *t->tids);
    if (!t->tids) return MF_ERR_NOMEM;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv_start, NULL);
    pthread_cond_init(&t->cv_done, NULL);
    for (int i = 1; i < threads; i++) {
        helper_arg *a = malloc(sizeof *a);
        if (!a) {
            mf_team_destroy(t);
            return MF_ERR_NOMEM;
        }
        *a = (helper_arg){t, i};
        if (pthread_create(&t->tids[i], NULL, helper_main, a) != 0) {
            free(a);
            mf_team_destroy(t);
            return MF_ERR_THREAD;
        }
        t->started = i + 1;
    }
    return MF_OK;
}

void mf_team_destroy(mf_team *t)
{
    if (!t->tids) return;
    pthread_mutex_lock(&t->mu);
    t->quit = 1;
    pthread_cond_broadcast(&t->cv_start);
    pthread_mutex_unlock(&t->mu);
    for (int i = 1; i < t->started; i++) pthread_join(t->tids[i], NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv_start);
    pthread_cond_destroy(&t->cv_done);
    free(t->tids);
    t->tids = NULL;
}

void mf_team_begin(mf_team *t, int together)
{
    t->size = together ? t->threads : 1;
    t->gen0 = atomic_load_explicit(&t->task_gen, memory_order_relaxed);
    pthread_mutex_lock(&t->mu);
    t->pending = t->threads - 1;
    t->generation++;
    pthread_cond_broadcast(&t->cv_start);
    pthread_mutex_unlock(&t->mu);
}

void mf_team_end(mf_team *t)
{
    if (t->size > 1) {
        t->task_fn = NULL; /* the end of the team's work */
        atomic_fetch_add_explicit(&t->task_gen, 1, memory_order_release);
    }
    pthread_mutex_lock(&t->mu);
    while (t->pending > 0) pthread_cond_wait(&t->cv_done, &t->mu);
    pthread_mutex_unlock(&t->mu);
    t->size = 1;
}
