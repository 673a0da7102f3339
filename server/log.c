/* log.c -- JSON lines on stderr; see log.h. */
#include "log.h"
#include "mf_util.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* DESIGN: logging must never stop the service.  A regular file, a terminal or
 * /dev/null takes a line at once or fails (full disk, /dev/full, a closed
 * stderr): the line is dropped.  A pipe or a socket (docker, systemd, a log
 * shipper) fills up when its reader stalls, and a blocking write(2) there
 * would hold log_mu and, behind it, every HTTP thread.  So on a pipe or
 * socket a line waits at most LOG_WAIT_MS for room while the log is healthy;
 * once a line has been dropped, later lines do not wait at all until one gets
 * through, and that one is preceded by a line counting the dropped ones.
 * Pipe writes go in pieces of at most PIPE_BUF bytes, each after poll(2)
 * reported room (a free page), so none blocks; sockets use MSG_DONTWAIT.
 * Nothing here changes the flags of stderr, which the parent shares. */
#define LOG_WAIT_MS 100

enum { OUT_PLAIN = 0, OUT_PIPE, OUT_SOCKET };

static int out_kind = -1;        /* kind of stderr, looked at once (guarded by log_mu) */
static unsigned long dropped;    /* lines dropped since the last one written (log_mu) */
static int broken_line;          /* a dropped line was partly written (log_mu) */

static uint64_t now_ms(void) { return mf_now_ns() / 1000000u; }

/* Write [p, p + left) to stderr, waiting at most wait_ms in all for room on a
 * pipe or socket.  Returns the bytes written (all of them on success). */
static size_t write_out(const char *p, size_t left, int wait_ms)
{
    size_t done = 0;
    uint64_t deadline = now_ms() + (uint64_t)wait_ms;
    while (left) {
        ssize_t w;
        if (out_kind == OUT_PLAIN) {
            w = write(STDERR_FILENO, p, left);
        } else {
            uint64_t now = now_ms();
            struct pollfd pf = {STDERR_FILENO, POLLOUT, 0};
            int r = poll(&pf, 1, now >= deadline ? 0 : (int)(deadline - now));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0 || (pf.revents & (POLLERR | POLLHUP | POLLNVAL))) break;
            size_t piece = left > PIPE_BUF ? PIPE_BUF : left;
            if (out_kind == OUT_SOCKET)
                w = send(STDERR_FILENO, p, piece, MSG_DONTWAIT | MSG_NOSIGNAL);
            else
                w = write(STDERR_FILENO, p, piece);
        }
        if (w < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (out_kind == OUT_PLAIN) break; /* someone made stderr non-blocking: no waiting */
            continue;
        }
        if (w <= 0) break; /* nowhere to log to: drop the line, keep serving */
        p += w;
        left -= (size_t)w;
        done += (size_t)w;
    }
    return done;
}

/* Serialize o (consumed) and write it, with its newline, in one piece. */
static void emit(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!text) return;
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps's NUL becomes the newline; length is kept in n */
    pthread_mutex_lock(&log_mu);
    if (out_kind < 0) {
        struct stat st;
        out_kind = OUT_PLAIN;
        if (fstat(STDERR_FILENO, &st) == 0 && S_ISFIFO(st.st_mode)) out_kind = OUT_PIPE;
        if (fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode)) out_kind = OUT_SOCKET;
    }
    int wait_ms = dropped ? 0 : LOG_WAIT_MS;
    if (dropped) {
        char t[40], note[256];
        mf_log_time(t, sizeof t);
        int len = snprintf(note, sizeof note,
                           "%s{\"time\":\"%s\",\"level\":\"warn\",\"msg\":\"log lines dropped: "
                           "stderr did not take them\",\"dropped\":%lu}\n",
                           broken_line ? "\n" : "", t, dropped);
        size_t w = write_out(note, (size_t)len, 0);
        if (w == (size_t)len) {
            dropped = 0;
            broken_line = 0;
        } else if (w > 0) {
            broken_line = 1;
        }
    }
    if (!dropped) {
        size_t w = write_out(text, n + 1, wait_ms);
        if (w != n + 1) {
            dropped++;
            broken_line = w > 0;
        }
    } else {
        dropped++;
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
    if (e->model) json_object_set_new(o, "model", safe_string(e->model));
    if (e->version) json_object_set_new(o, "version", safe_string(e->version));
    if (e->request_id && e->request_id[0]) json_object_set_new(o, "request_id", safe_string(e->request_id));
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
