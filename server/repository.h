/* repository.h -- the models the service serves: names, versions, their
 * states, loading, unloading and replacing them while requests run.
 *
 * Layout (Triton's): DIR/<name>/<version>/model.safetensors, versions
 * positive integers, and an optional DIR/<name>/config.json of per-model
 * settings (mf_model_config).  Without a repository (--model FILE) the
 * repository is that one file as version 1 of model `model_name`.
 *
 * Life of a version: LOADING (the loader thread reads the file, builds the
 * model, its queue with one engine workspace per worker, its metadata and
 * its metrics series) -> READY (published: new requests may take it) ->
 * UNLOADING (retired by an unload, a reload or the version policy: no new
 * request takes it, requests that hold it finish on it) -> freed when the
 * last holder lets go (model, workspaces and series go back; the loader
 * calls malloc_trim so the pages go back to the system).  A load that fails
 * leaves the version UNAVAILABLE with the reason, and whatever served before
 * keeps serving.
 *
 * Ownership and threads: requests hold a version with mf_repo_acquire /
 * mf_version_release (a count, under the repository's mutex); everything a
 * request reads of a version it holds is immutable.  Loads and unloads run on
 * the repository's loader thread, in order; the HTTP API waits for them
 * without holding an HTTP thread (mf_repo_request_*: the request's job count,
 * as for inference).
 */
#ifndef MF_REPOSITORY_H
#define MF_REPOSITORY_H

#include "batcher.h"
#include "config.h"
#include "metrics.h"
#include "mf.h"
#include "reply.h"

#include <jansson.h>
#include <stddef.h>

typedef struct mf_repo mf_repo;

/* Settings of one model (config.json; defaults from the server's settings). */
typedef struct mf_model_config {
    int max_batch;           /* most images in one forward pass */
    int max_delay_us;        /* longest wait for a batch to fill */
    int max_queue;           /* most images waiting */
    int request_timeout_ms;  /* queued longer -> 504 */
    int policy;              /* MF_POLICY_* */
    int latest_n;            /* MF_POLICY_LATEST: how many of the newest versions */
    int n_specific;          /* MF_POLICY_SPECIFIC: how many in `specific` */
    long specific[16];       /* MF_POLICY_SPECIFIC: the versions */
    int precision;           /* mf_precision (the server's `precision` setting when none is given) */
    char **labels;           /* label override (owned, NULL-terminated), or NULL */
    int n_labels;            /* entries in labels */
} mf_model_config;

#define MF_POLICY_LATEST 0   /* {"latest": N} (default N = 1) */
#define MF_POLICY_ALL 1      /* {"all": true} */
#define MF_POLICY_SPECIFIC 2 /* {"specific": [1, 3]} */

/* Parse a config.json text (origin names it in messages) over defaults; 0 or
 * -1 with the message in err.  Unknown keys and bad values are refused. */
int mf_model_config_parse(const char *text, size_t len, const char *origin, const mf_config *defaults,
                          mf_model_config *out, char *err, size_t errlen);
void mf_model_config_defaults(const mf_config *cfg, mf_model_config *out);
void mf_model_config_free(mf_model_config *c);

/* One version of one model, as requests see it (immutable while held). */
typedef struct mf_version {
    const char *name;          /* the model's name */
    long number;               /* its version */
    char version[24];          /* the same as text */
    const mf_model *model;     /* the engine model */
    mf_queue *queue;           /* its queue on the batcher */
    mf_series *series;         /* its metrics */
    const mf_preprocess *pre;  /* preprocessing (the model's) */
    int classes;               /* number of classes */
    const char *const *labels; /* [classes] labels (override or the model's) */
    const char *meta_tail;     /* GET /v2/models/{m}: the JSON after "name" and "versions" (",...}") */
    int precision;             /* mf_precision */
} mf_version;

/* Open the repository and load what model_control says (synchronously: the
 * service is ready once this returns).  Fails only when the settings or the
 * directory itself are unusable; models that fail to load are UNAVAILABLE. */
int mf_repo_open(const mf_config *cfg, mf_batcher *b, mf_metrics *m, mf_repo **out, char *err, size_t errlen);

/* Stop the loader: the task it runs finishes, the queued ones fail ("the
 * server is shutting down": their done callbacks run here, on the caller's
 * thread), and later loads and unloads are refused.  Before the HTTP loops
 * stop, since a control request waits for its task's callback.  NULL is fine;
 * idempotent. */
void mf_repo_stop(mf_repo *r);

/* Stop the loader (if not yet) and free every version (after the batcher has
 * drained). */
void mf_repo_close(mf_repo *r);

/* A READY version of model name (len bytes): `version` (vlen bytes, NULL =
 * the newest READY one).  NULL if none, with the error entry and message. */
const mf_version *mf_repo_acquire(mf_repo *r, const char *name, size_t len, const char *version, size_t vlen,
                                  mf_err *e, char *msg, size_t msglen);
void mf_version_release(mf_repo *r, const mf_version *v);

/* The model /v1/predict goes to: default_model, or the only model; NULL
 * (message in msg) when neither applies. */
const char *mf_repo_default_model(mf_repo *r, char *msg, size_t msglen);

/* Any model READY (readiness of the whole service). */
int mf_repo_any_ready(mf_repo *r);

/* The reason of the first version that failed to load, or of a model's
 * problem ("" if none), into buf. */
void mf_repo_first_error(mf_repo *r, char *buf, size_t n);

/* The versions of model name that are READY, as a JSON array of strings
 * (new reference), or NULL if the model is unknown. */
json_t *mf_repo_versions(mf_repo *r, const char *name, size_t len);

/* POST /v2/repository/index: [{"name","version","state","reason"}, ...];
 * only_ready keeps the READY ones.  New reference. */
json_t *mf_repo_index(mf_repo *r, int only_ready);

/* Model names known (for messages): "a, b, c" into buf. */
void mf_repo_names(mf_repo *r, char *buf, size_t n);

/* Load (or reload) / unload a model, on the loader thread; done(user, ok,
 * message) runs there when it is finished (ok 1 done, 0 failed), or in
 * mf_repo_stop for a task that never ran (ok -1).  Returns 0 if queued; -1
 * (message in err) if the request is refused at once (model_control none,
 * unknown model, bad name, out of memory); -2 (message in err) once
 * mf_repo_stop has begun. */
typedef void (*mf_repo_done_fn)(void *user, int ok, const char *message);
int mf_repo_load(mf_repo *r, const char *name, mf_repo_done_fn done, void *user, char *err, size_t errlen);
int mf_repo_unload(mf_repo *r, const char *name, mf_repo_done_fn done, void *user, char *err, size_t errlen);

/* Rescan the repository now (SIGHUP; poll mode does it every
 * repository_poll_s): in poll mode new and changed models and versions are
 * loaded and removed ones unloaded; in explicit mode only the models loaded
 * now follow their directory.  Returns 0, or -1 in mode none. */
int mf_repo_rescan(mf_repo *r);

/* The control mode allows the load/unload API. */
int mf_repo_api_enabled(const mf_repo *r);

#endif
