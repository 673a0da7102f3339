/* log.c -- JSON lines on stderr; see log.h. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void mf_log_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char date[24];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03ldZ", date, ts.tv_nsec / 1000000);
}

/* A JSON string of s; bytes that are not valid UTF-8 (a URL may hold
 * anything once unescaped) become '?'. */
static json_t *safe_string(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (!copy) return json_string("");
    for (size_t i = 0; i <= n; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    j = json_string(copy);
    free(copy);
    return j;
}

/* Serialize o (consumed) and write it with a newline in one write(2). */
static void emit(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!text) return;
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps's NUL becomes the newline; length is kept in n */
    pthread_mutex_lock(&log_mu);
    const char *p = text;
    size_t left = n + 1;
    while (left) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* nowhere to log to: drop the line, keep serving */
        p += w;
        left -= (size_t)w;
    }
    pthread_mutex_unlock(&log_mu);
    free(text);
}

void mf_log_request(const mf_log_request_entry *e)
{
    char t[40];
    mf_log_time(t, sizeof t);
    json_t *o = json_object();
    if (!o) return;
    json_object_set_new(o, "time", json_string(t));
    json_object_set_new(o, "method", safe_string(e->method));
    json_object_set_new(o, "path", safe_string(e->path));
    json_object_set_new(o, "status", json_integer(e->status));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t)e->bytes_in));
    json_object_set_new(o, "bytes_out", json_integer((json_int_t)e->bytes_out));
    json_object_set_new(o, "latency_ms", json_real(e->latency_ms));
    json_object_set_new(o, "batch_size", json_integer(e->batch_size));
    json_object_set_new(o, "remote", safe_string(e->remote));
    if (e->error) json_object_set_new(o, "error", safe_string(e->error));
    emit(o);
}

void mf_log_event(const char *level, const char *msg, json_t *fields)
{
    char t[40];
    mf_log_time(t, sizeof t);
    json_t *o = json_object();
    if (!o) {
        json_decref(fields);
        return;
    }
    json_object_set_new(o, "time", json_string(t));
    json_object_set_new(o, "level", json_string(level));
    json_object_set_new(o, "msg", safe_string(msg));
    if (fields) {
        json_object_update(o, fields);
        json_decref(fields);
    }
    emit(o);
}
