/* log.h -- structured logging: one JSON object per line on stderr.
 *
 * Lines from different threads never interleave (written whole under a
 * mutex).  Every line has "time" (RFC 3339, UTC, milliseconds).  Logging
 * never stops the service: a line stderr cannot take (closed, /dev/full, a
 * pipe whose reader stalls for 100 ms) is dropped and counted, and the count
 * is logged once lines get through again (log.c, DESIGN).
 * Request lines carry the fields of mf_log_request; other events carry
 * "level", "msg" and optional extra fields.
 */
#ifndef MF_LOG_H
#define MF_LOG_H

#include <jansson.h>
#include <stddef.h>

typedef struct mf_log_request_entry {
    const char *method;     /* HTTP method */
    const char *path;       /* URL path, without the query */
    int status;             /* answer's status; 0 if none was sent */
    size_t bytes_in;        /* request body bytes received */
    size_t bytes_out;       /* answer body bytes */
    double latency_ms;      /* request headers to answer queued */
    int batch_size;         /* largest batch that carried one of its images; 0 if none */
    const char *remote;     /* client address, "" if unknown */
    const char *error;      /* error code of the answer, NULL if none */
    const char *request_id; /* X-Request-ID (the client's or made up), or NULL */
    const char *model;      /* the model and version it went to, or NULL */
    const char *version;
} mf_log_request_entry;

/* One request line. */
void mf_log_request(const mf_log_request_entry *e);

/* An event line: level ("info", "warn", "error"), message, and the members
 * of `fields` (a JSON object, may be NULL; the reference is stolen). */
void mf_log_event(const char *level, const char *msg, json_t *fields);

/* The current time as RFC 3339 UTC with milliseconds (buf >= 32 bytes). */
void mf_log_time(char *buf, size_t len);

#endif
