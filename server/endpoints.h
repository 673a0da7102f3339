/* endpoints.h -- the small endpoints: health, server and model metadata and
 * readiness, metrics, the page (web.h), and the model repository API
 * (Triton's extension: index, load, unload).  Each answers through reply.h;
 * route.c points at them.
 *
 * A model's metadata is built once per loaded version (mf_metadata_tail,
 * kept by the repository); only its "versions" list is filled in per request.
 */
#ifndef MF_ENDPOINTS_H
#define MF_ENDPOINTS_H

#include "mf.h"

typedef struct mf_request mf_request;

int mf_handle_live(mf_request *r);
int mf_handle_ready(mf_request *r);
int mf_handle_server_metadata(mf_request *r);
int mf_handle_metadata(mf_request *r);
int mf_handle_model_ready(mf_request *r);
int mf_handle_metrics(mf_request *r);
int mf_handle_web(mf_request *r);
int mf_handle_repo_index(mf_request *r);
int mf_handle_repo_load(mf_request *r);
int mf_handle_repo_unload(mf_request *r);

/* The begin handler of a route whose body is read whole, checks nothing. */
int mf_body_begin(mf_request *r);

/* GET /v2/models/{name} after "name" and "versions": ",\"platform\":...}" --
 * the protocol's inputs and outputs, architecture, classes, preprocessing,
 * labels, precision and kernel sets (malloc'd); NULL on out of memory. */
char *mf_metadata_tail(const mf_model *m, const char *const *labels);

#endif
