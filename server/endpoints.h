/* endpoints.h -- the small GET endpoints: health, model metadata and
 * readiness, metrics, and the page (web.h).  Each answers at once through
 * reply.h; route.c points at them.
 *
 * The metadata body is built once at start (mf_metadata_build) and kept by
 * the server, since the model does not change while it serves.
 */
#ifndef MF_ENDPOINTS_H
#define MF_ENDPOINTS_H

#include "config.h"
#include "mf.h"

#include <stddef.h>

typedef struct mf_request mf_request;

int mf_handle_live(mf_request *r);
int mf_handle_ready(mf_request *r);
int mf_handle_metadata(mf_request *r);
int mf_handle_model_ready(mf_request *r);
int mf_handle_metrics(mf_request *r);
int mf_handle_web(mf_request *r);

/* GET /v2/models/{name}: the model's name, architecture, classes,
 * preprocessing, labels, inputs and outputs (malloc'd JSON, *len its
 * length); NULL on out of memory. */
char *mf_metadata_build(const mf_config *cfg, const mf_model *m, size_t *len);

#endif
