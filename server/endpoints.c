/* endpoints.c -- health, metadata, metrics and the page; see endpoints.h. */
#include "endpoints.h"

#include "reply.h"
#include "request.h"
#include "web.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))

int mf_handle_live(mf_request *r)
{
    return mf_reply_json(r, 200, json_pack("{s:s}", "status", "live"));
}

int mf_handle_ready(mf_request *r)
{
    if (atomic_load(&r->srv->draining)) return mf_reply_error(r, MF_E_NOT_READY, "the server is shutting down");
    return mf_reply_json(r, 200, json_pack("{s:s,s:s}", "status", "ready", "model", r->srv->cfg->model_name));
}

int mf_handle_model_ready(mf_request *r)
{
    if (atomic_load(&r->srv->draining)) return mf_reply_error(r, MF_E_NOT_READY, "the server is shutting down");
    return mf_reply_json(r, 200, json_pack("{s:s,s:b}", "name", r->srv->cfg->model_name, "ready", 1));
}

int mf_handle_metadata(mf_request *r)
{
    return mf_reply(r, 200, MF_JSON_TYPE, r->srv->metadata, r->srv->metadata_len, 0,
                    NULL);
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
    if (inm && strstr(inm, a->etag))
        return mf_reply(r, 304, NULL, NULL, 0, 0, NULL);
    return mf_reply(r, 200, a->content_type, (char *)a->data, a->len, 0, NULL);
}

char *mf_metadata_build(const mf_config *cfg, const mf_model *m, size_t *len)
{
    const mf_arch *a = mf_model_arch(m);
    const mf_preprocess *p = mf_model_preprocess(m);
    int classes = mf_model_num_classes(m);
    char *arch_text = mf_arch_to_json(a);
    json_t *arch = arch_text ? json_loads(arch_text, 0, NULL) : NULL;
    free(arch_text);
    json_t *labels = json_array();
    for (int i = 0; labels && i < classes; i++) json_array_append_new(labels, json_string(mf_model_label(m, i)));
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:o*,s:i,s:[i,i],s:{s:[i,i],s:i,s:s,s:[f,f,f],s:[f,f,f],s:i},s:I,s:i,"
        "s:o*,s:[{s:s,s:s,s:[i],s:[s,s,s,s]}],s:[{s:s,s:s,s:[i,i]}]}",
        "name", cfg->model_name, "platform", "mobileformer_c", "arch_name", a->name, "architecture", arch,
        "num_classes", classes, "input_size", p->input_h, p->input_w, "preprocess", "input_size", p->input_h,
        p->input_w, "resize", p->resize, "interpolation", p->interpolation, "mean", (double)p->mean[0],
        (double)p->mean[1], (double)p->mean[2], "std", (double)p->std[0], (double)p->std[1], (double)p->std[2],
        "channels", p->channels, "parameters", (json_int_t)mf_arch_param_count(a, classes), "labels_count", classes,
        "labels", labels, "inputs", "name", "image", "datatype", "BYTES", "shape", -1, "content_types",
        "image/jpeg", "image/png", "application/octet-stream", "multipart/form-data", "outputs", "name",
        "probabilities", "datatype", "FP32", "shape", -1, classes);
    char *text = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    if (text) *len = strlen(text);
    return text;
}
