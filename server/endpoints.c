/* endpoints.c -- health, server and model metadata, metrics, the page, and
 * the repository API; see endpoints.h. */
#include "endpoints.h"

#include "reply.h"
#include "repository.h"
#include "request.h"
#include "web.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))

#ifndef MF_VERSION
#define MF_VERSION "0.3.0"
#endif

int mf_handle_live(mf_request *r)
{
    return mf_reply_json(r, 200, json_pack("{s:s}", "status", "live"));
}

int mf_handle_ready(mf_request *r)
{
    if (atomic_load(&r->srv->draining)) return mf_reply_error(r, MF_E_NOT_READY, "the server is shutting down");
    if (!mf_repo_any_ready(r->srv->repo)) return mf_reply_error(r, MF_E_NOT_READY, "no model is ready");
    char msg[400];
    const char *def = mf_repo_default_model(r->srv->repo, msg, sizeof msg);
    return mf_reply_json(r, 200, json_pack("{s:s,s:s?}", "status", "ready", "model", def));
}

int mf_handle_server_metadata(mf_request *r)
{
    return mf_reply_json(r, 200,
                         json_pack("{s:s,s:s,s:[s,s,s,s]}", "name", "mobileformer", "version", MF_VERSION,
                                   "extensions", "binary_tensor_data", "classification", "model_repository",
                                   "schedule_policy"));
}

int mf_handle_metadata(mf_request *r)
{
    const mf_version *v = r->mv;
    json_t *versions = mf_repo_versions(r->srv->repo, v->name, strlen(v->name));
    json_t *name = json_string(v->name);
    char *vt = versions ? json_dumps(versions, JSON_FLAGS) : NULL, *nt = name ? json_dumps(name, JSON_ENCODE_ANY) : NULL;
    json_decref(versions);
    json_decref(name);
    /* with /versions/{v}: that version alone */
    char one[40];
    if (r->match.version) snprintf(one, sizeof one, "[\"%s\"]", v->version);
    const char *vs = r->match.version ? one : vt;
    size_t n = (nt ? strlen(nt) : 0) + (vs ? strlen(vs) : 0) + strlen(v->meta_tail) + 32;
    char *body = nt && vs ? malloc(n) : NULL;
    if (body) snprintf(body, n, "{\"name\":%s,\"versions\":%s%s", nt, vs, v->meta_tail);
    free(vt);
    free(nt);
    if (!body) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot build the metadata");
    return mf_reply(r, 200, MF_JSON_TYPE, body, strlen(body), 1, NULL);
}

int mf_handle_model_ready(mf_request *r)
{
    if (atomic_load(&r->srv->draining)) return mf_reply_error(r, MF_E_NOT_READY, "the server is shutting down");
    return mf_reply_json(r, 200,
                         json_pack("{s:s,s:s,s:b}", "name", r->mv->name, "version", r->mv->version, "ready", 1));
}

int mf_handle_metrics(mf_request *r)
{
    size_t len = 0;
    char *text = mf_metrics_render(r->srv->metrics, &len);
    if (!text) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "cannot render the metrics");
    return mf_reply(r, 200, MF_METRICS_CONTENT_TYPE, text, len, 1, NULL);
}

/* The embedded page, open without the API key: the page asks for the key
 * and sends it with its own requests.  Only the table's exact paths are
 * routed here, so no path can reach the file system. */
int mf_handle_web(mf_request *r)
{
    const mf_web_asset *a = r->srv->cfg->web_ui ? mf_web_find(r->path) : NULL;
    if (!a) return mf_reply_error(r, MF_E_NOT_FOUND, "no endpoint at %s", r->path);
    r->headers = a->headers;
    const char *inm = mf_request_header(r, "If-None-Match");
    if (inm && strstr(inm, a->etag)) return mf_reply(r, 304, NULL, NULL, 0, 0, NULL);
    return mf_reply(r, 200, a->content_type, (char *)a->data, a->len, 0, NULL);
}

/* ---- the repository API (Triton's model repository extension) ------------ */

/* A JSON body that may be empty; NULL and an answer sent when it is not JSON. */
static json_t *optional_body(mf_request *r, int *answered)
{
    *answered = 0;
    if (!r->body_len) return json_object();
    json_error_t je;
    json_t *o = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        *answered = 1;
        mf_reply_error(r, MF_E_BAD_REQUEST, "the body must be a JSON object (%s)", o ? "not an object" : je.text);
        return NULL;
    }
    return o;
}

int mf_handle_repo_index(mf_request *r)
{
    int answered;
    json_t *o = optional_body(r, &answered);
    if (!o) return 0;
    json_t *ready = json_object_get(o, "ready");
    if (ready && !json_is_boolean(ready)) {
        json_decref(o);
        return mf_reply_error(r, MF_E_BAD_REQUEST, "'ready' must be a boolean");
    }
    int only_ready = ready && json_is_true(ready);
    json_decref(o);
    return mf_reply_json(r, 200, mf_repo_index(r->srv->repo, only_ready));
}

typedef struct control_wait {
    int ok;
    char msg[600];
} control_wait;

/* The loader thread: the load or unload is done. */
static void control_done(void *user, int ok, const char *message)
{
    mf_request *r = user;
    control_wait *w = r->control;
    w->ok = ok;
    snprintf(w->msg, sizeof w->msg, "%s", message ? message : "");
    mf_request_job_done(r);
}

static int control_answer(mf_request *r)
{
    control_wait *w = r->control;
    if (w->ok < 0) return mf_reply_error(r, MF_E_SHUTTING_DOWN, "%s", w->msg); /* never ran */
    if (!w->ok) return mf_reply_error(r, MF_E_LOAD_FAILED, "%s", w->msg[0] ? w->msg : "the load failed");
    return mf_reply(r, 200, MF_JSON_TYPE, (char *)"{}", 2, 0, NULL);
}

static int control(mf_request *r, int load)
{
    int answered;
    json_t *o = optional_body(r, &answered);
    if (!o) return 0;
    json_t *params = json_object_get(o, "parameters");
    if (params && !json_is_object(params)) {
        json_decref(o);
        return mf_reply_error(r, MF_E_BAD_REQUEST, "'parameters' must be an object");
    }
    if (load && params && json_object_get(params, "config")) {
        json_decref(o);
        return mf_reply_error(r, MF_E_BAD_REQUEST,
                              "loading with a 'config' override is not supported: edit <model>/config.json");
    }
    json_decref(o);
    char name[200];
    snprintf(name, sizeof name, "%.*s", (int)(r->match.model_len < 199 ? r->match.model_len : 199), r->match.model);
    r->control = calloc(1, sizeof(control_wait));
    if (!r->control) return mf_reply_error(r, MF_E_OUT_OF_MEMORY, "out of memory");
    char err[600];
    mf_request_jobs_begin(r, 1);
    int rc = load ? mf_repo_load(r->srv->repo, name, control_done, r, err, sizeof err)
                  : mf_repo_unload(r->srv->repo, name, control_done, r, err, sizeof err);
    if (rc != 0) {
        mf_request_jobs_cancel(r);
        mf_err e = rc == -2 ? MF_E_SHUTTING_DOWN
                   : !mf_repo_api_enabled(r->srv->repo) ? MF_E_BAD_REQUEST
                                                        : MF_E_MODEL_NOT_FOUND;
        return mf_reply_error(r, e, "%s", err);
    }
    return mf_request_wait(r, control_answer);
}

int mf_handle_repo_load(mf_request *r) { return control(r, 1); }
int mf_handle_repo_unload(mf_request *r) { return control(r, 0); }

int mf_body_begin(mf_request *r)
{
    (void)r;
    return 0;
}

/* ---- metadata ----------------------------------------------------------------- */

char *mf_metadata_tail(const mf_model *m, const char *const *labels)
{
    const mf_arch *a = mf_model_arch(m);
    const mf_preprocess *p = mf_model_preprocess(m);
    int classes = mf_model_num_classes(m);
    char *arch_text = mf_arch_to_json(a);
    json_t *arch = arch_text ? json_loads(arch_text, 0, NULL) : NULL;
    free(arch_text);
    json_t *lab = json_array();
    for (int i = 0; lab && i < classes; i++) json_array_append_new(lab, json_string(labels[i]));
    json_t *o = json_pack(
        "{s:s,"
        "s:[{s:s,s:s,s:[i,i,i,i]},{s:s,s:s,s:[i],s:[s,s,s,s]}],"
        "s:[{s:s,s:s,s:[i,i]},{s:s,s:s,s:[i,i]}],"
        "s:s,s:o*,s:i,s:[i,i],s:{s:[i,i],s:i,s:s,s:[f,f,f],s:[f,f,f],s:i},s:I,s:i,s:o*,s:s,s:s,s:s}",
        "platform", "mobileformer_c",
        "inputs", "name", "input", "datatype", "FP32", "shape", -1, 3, -1, -1, "name", "image", "datatype", "BYTES",
        "shape", -1, "content_types", "image/jpeg", "image/png", "image/webp", "image/gif",
        "outputs", "name", "logits", "datatype", "FP32", "shape", -1, classes, "name", "probabilities", "datatype",
        "FP32", "shape", -1, classes,
        "arch_name", a->name, "architecture", arch, "num_classes", classes, "input_size", p->input_h, p->input_w,
        "preprocess", "input_size", p->input_h, p->input_w, "resize", p->resize, "interpolation", p->interpolation,
        "mean", (double)p->mean[0], (double)p->mean[1], (double)p->mean[2], "std", (double)p->std[0],
        (double)p->std[1], (double)p->std[2], "channels", p->channels, "parameters",
        (json_int_t)mf_arch_param_count(a, classes), "labels_count", classes, "labels", lab, "precision",
        mf_precision_name(mf_model_precision(m)), "kernels", mf_model_kernels(m), "kernels_fp32",
        mf_model_kernels_fp32(m));
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (!text) return NULL;
    /* "{...}" -> ",...}" to follow "name" and "versions" */
    text[0] = ',';
    return text;
}
