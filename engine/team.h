/* team.h -- the helper threads of one workspace (engine-private).
 *
 * A workspace made for `threads` > 1 owns threads-1 helper threads; the
 * caller of mf_forward is thread 0.  Each forward pass uses them one of two
 * ways (forward.c decides):
 *   - shares: every thread runs share(ctx, t) once, its own run of images,
 *     and the pass ends when all have returned;
 *   - together: thread 0 walks the network and hands each layer's work to
 *     the team with mf_team_par(); every thread runs its slice of it.
 * Between passes helpers sleep on a condition variable; between the tasks
 * of a team pass (microseconds apart) they spin briefly, then yield, so an
 * oversubscribed machine still makes progress.
 *
 * Ownership: the team lives inside its workspace; only thread 0 (the
 * workspace's caller) calls begin/par/end, one pass at a time.
 */
#ifndef MF_TEAM_H
#define MF_TEAM_H

#include "mf.h"

#include <pthread.h>
#include <stdatomic.h>

typedef void (*mf_team_task)(void *arg, int t, int nt);

typedef struct mf_team {
    int threads;                       /* including thread 0 */
    void (*share)(void *ctx, int t);   /* a shares pass: thread t's work */
    void *ctx;                         /* its argument */
    pthread_t *tids;                   /* [threads]; [0] unused */
    int started;                       /* helpers started (1 .. threads-1) */
    pthread_mutex_t mu;                /* guards generation, pending, quit */
    pthread_cond_t cv_start, cv_done;  /* a pass begins; the last helper finished */
    unsigned generation;               /* bumped per pass */
    int pending;                       /* helpers still in the pass */
    int quit;                          /* helpers must exit */
    int size;                          /* threads taking part in par() (1: run inline) */
    mf_team_task task_fn;              /* the published task; NULL ends a team pass */
    void *task_arg;                    /* its argument */
    _Atomic unsigned task_gen;         /* bumped per task */
    unsigned gen0;                     /* task_gen when the team pass began */
    _Atomic int task_done;             /* helpers finished with the current task */
} mf_team;

/* Start threads-1 helpers (threads >= 1). */
mf_status mf_team_init(mf_team *t, int threads, void (*share)(void *ctx, int t), void *ctx);

/* Stop and join the helpers. */
void mf_team_destroy(mf_team *t);

/* Begin a pass: together = 1 for a team pass, 0 for shares. */
void mf_team_begin(mf_team *t, int together);

/* End the pass begun last and wait for every helper. */
void mf_team_end(mf_team *t);

/* Run fn(arg, i, n) on every thread i of a team pass (the caller is i = 0)
 * and wait; outside a team pass, fn(arg, 0, 1) inline. */
void mf_team_par(mf_team *t, mf_team_task fn, void *arg);

/* [*lo, *hi) of n items for thread i of nt, in whole units of `unit`. */
void mf_split(int n, int unit, int i, int nt, int *lo, int *hi);

#endif
