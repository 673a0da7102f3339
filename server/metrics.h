/* metrics.h -- Prometheus metrics of the service (text exposition 0.0.4).
 *
 * One mf_metrics object per process, created before any thread that records
 * into it and freed after they have stopped.  What concerns HTTP (requests
 * by endpoint and status, connections, limits) is counted on it; what
 * concerns a model is counted on that model version's series (mf_series),
 * rendered with model="..." and version="..." labels: the stage histograms,
 * the queue depth, the requests by status, the model's state.  A series is
 * created when its version is first loaded and removed when it is unloaded.
 * Every recording function is thread-safe (counters and gauges are atomics,
 * each histogram has its own mutex) and allocation-free; mf_metrics_render()
 * allocates the text.
 */
#ifndef MF_METRICS_H
#define MF_METRICS_H

#include "route.h"

#include <stddef.h>

/* Requests are counted by endpoint: the labels are the route table's
 * (route.h, mf_endpoint and mf_endpoint_labels), so a route and its
 * metrics label are written in one place. */

/* Per model version (mf_series), labels model, version. */
typedef enum mf_histogram {
    MF_HIST_DECODE = 0,   /* mobileformer_decode_seconds, per image */
    MF_HIST_PREPROCESS,   /* mobileformer_preprocess_seconds, per image */
    MF_HIST_QUEUE,        /* mobileformer_queue_seconds, per image */
    MF_HIST_INFERENCE,    /* mobileformer_inference_seconds, per batch */
    MF_HIST_BATCH_SIZE,   /* mobileformer_batch_size, per batch */
    MF_HIST_REQUEST,      /* mobileformer_model_request_duration_seconds, per request */
    MF_HIST_DECODE_WAIT,  /* mobileformer_decode_wait_seconds, per image sent to the decode pool */
    MF_HIST_COUNT
} mf_histogram;

/* A model version's state, mobileformer_model_state{state} (1 for the current one). */
typedef enum mf_model_state {
    MF_STATE_LOADING = 0,
    MF_STATE_READY,
    MF_STATE_UNLOADING,
    MF_STATE_UNAVAILABLE,
    MF_STATE_COUNT
} mf_model_state;

const char *mf_model_state_name(mf_model_state s); /* "LOADING", "READY", ... */

typedef enum mf_gauge {
    MF_GAUGE_INFLIGHT = 0,    /* mobileformer_inflight_requests */
    MF_GAUGE_CONNECTIONS,     /* mobileformer_open_connections */
    MF_GAUGE_BODY_BYTES,      /* mobileformer_inflight_body_bytes: reserved by bodies being read */
    MF_GAUGE_COUNT
} mf_gauge;

/* Counters: enum suffix, family, labels, help.  A family may span rows
 * (one row per label value); its HELP is taken from its first row. */
#define MF_COUNTERS(X)                                                                                  \
    X(REJECT_MAX_CONN, "mobileformer_connections_rejected_total", "reason=\"max_connections\"",        \
      "Connections refused at once, by the limit they hit.")                                          \
    X(REJECT_PER_CLIENT, "mobileformer_connections_rejected_total", "reason=\"max_connections_per_client\"", "") \
    X(REJECT_RESERVE, "mobileformer_connections_rejected_total", "reason=\"reserve_only\"", "")         \
    X(TIMEOUT_HEAD, "mobileformer_request_timeouts_total", "phase=\"headers\"",                       \
      "Connections closed for sending their request too slowly, by phase.")                            \
    X(TIMEOUT_BODY, "mobileformer_request_timeouts_total", "phase=\"body\"", "")                         \
    X(TIMEOUT_WRITE, "mobileformer_request_timeouts_total", "phase=\"answer\"", "")                      \
    X(BODY_BUDGET, "mobileformer_body_budget_rejections_total", "",                                    \
      "Requests refused because max_inflight_body_bytes was reached.")                                 \
    X(MALFORMED, "mobileformer_malformed_requests_total", "",                                          \
      "Request heads or bodies refused by the HTTP parser.")                                           \
    X(ABORT_HEAD, "mobileformer_client_aborts_total", "stage=\"headers\"",                              \
      "Requests whose client went away before the answer, by stage.")                                  \
    X(ABORT_BODY, "mobileformer_client_aborts_total", "stage=\"body\"", "")                              \
    X(ABORT_WAIT, "mobileformer_client_aborts_total", "stage=\"waiting\"", "")                           \
    X(ABORT_ANSWER, "mobileformer_client_aborts_total", "stage=\"answer\"", "")                        \
    X(CANCEL_DECODE, "mobileformer_cancelled_total", "stage=\"decode\"",                               \
      "Images dropped before inference because their client went away.")                               \
    X(CANCEL_QUEUE, "mobileformer_cancelled_total", "stage=\"queue\"", "")

typedef enum mf_counter {
#define MF_COUNTER_ENUM(name, family, labels, help) MF_COUNTER_##name,
    MF_COUNTERS(MF_COUNTER_ENUM)
#undef MF_COUNTER_ENUM
    MF_COUNTER_COUNT
} mf_counter;


typedef struct mf_metrics mf_metrics; /* opaque */
typedef struct mf_series mf_series;   /* opaque: one model version's series */

void mf_metrics_count(mf_metrics *m, mf_counter c, unsigned long long n);
unsigned long long mf_metrics_counter(mf_metrics *m, mf_counter c);

/* NULL on out of memory. */
mf_metrics *mf_metrics_new(void);
void mf_metrics_free(mf_metrics *m);

/* A model version's series (labels copied; model_info from arch and the
 * input size); NULL on out of memory.  The version is created LOADING.  A
 * series' recording functions accept NULL (nothing recorded). */
mf_series *mf_series_new(mf_metrics *m, const char *model, const char *version, const char *arch, int num_classes,
                         int input_h, int input_w);
/* Removes it from the text; the caller makes sure no thread records into it. */
void mf_series_free(mf_metrics *m, mf_series *s);

void mf_series_observe(mf_series *s, mf_histogram h, double value);
void mf_series_request(mf_series *s, int status, double seconds);
void mf_series_depth(mf_series *s, long delta);     /* mobileformer_queue_depth */
void mf_series_state(mf_series *s, mf_model_state st);
unsigned long long mf_series_request_count(mf_series *s, int status);

/* Loads and unloads of a model, mobileformer_model_loads_total{model,result}
 * and mobileformer_model_load_seconds{model}, mobileformer_model_unloads_total. */
void mf_metrics_model_load(mf_metrics *m, const char *model, int ok, double seconds);
void mf_metrics_model_unload(mf_metrics *m, const char *model);

/* One finished request: counts it by endpoint and status and observes its
 * total duration. */
void mf_metrics_request(mf_metrics *m, mf_endpoint e, int status, double seconds);

void mf_metrics_gauge_add(mf_metrics *m, mf_gauge g, long delta);
void mf_metrics_gauge_set(mf_metrics *m, mf_gauge g, long value);
long mf_metrics_gauge_get(mf_metrics *m, mf_gauge g);

/* Number of requests counted for an endpoint and status (tests). */
unsigned long long mf_metrics_request_count(mf_metrics *m, mf_endpoint e, int status);

/* The exposition text (malloc'd, caller frees), *len its length.
 * NULL on out of memory. */
char *mf_metrics_render(mf_metrics *m, size_t *len);

/* Content-Type of the exposition text. */
#define MF_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
