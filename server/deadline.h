/* deadline.h -- the request-head deadline against slow clients (slowloris).
 *
 * A client gets `timeout_s` seconds to send a request's headers, counted from
 * the moment its connection is accepted or its previous answer completed,
 * however it spreads the bytes.  libmicrohttpd's own timeout
 * (MHD_OPTION_CONNECTION_TIMEOUT) closes only connections that stay silent:
 * a client sending one header byte every few seconds would keep its
 * connection forever, and a few hundred of them would fill max_connections.
 *
 * The server opens one entry per connection (MHD_CONNECTION_NOTIFY_STARTED),
 * disarms it when the headers are complete, re-arms it when the answer has
 * gone out (keep-alive) and closes it when the connection closes
 * (MHD_CONNECTION_NOTIFY_CLOSED).  A reaper thread shuts down -- shutdown(2),
 * not close(2): the descriptor stays libmicrohttpd's -- every armed
 * connection past its deadline; libmicrohttpd then reads the end of the
 * stream and closes the connection as if the client had gone.
 *
 * Threads: open/disarm/rearm/close come from libmicrohttpd's threads, the
 * reaper runs on its own, and one mutex guards the list.  libmicrohttpd sends
 * NOTIFY_CLOSED before it closes the descriptor, and the reaper touches only
 * descriptors of listed entries while holding the mutex, so it never shuts
 * down a descriptor number that was reused by another connection.
 *
 * A NULL mf_deadline (timeout 0 = never) and a NULL entry (open ran out of
 * memory: that connection is simply not timed) are accepted everywhere.
 */
#ifndef MF_DEADLINE_H
#define MF_DEADLINE_H

typedef struct mf_deadline mf_deadline;           /* opaque: the list and its reaper */
typedef struct mf_deadline_conn mf_deadline_conn; /* opaque: one connection's entry */

/* Start the reaper.  timeout_s 0 gives NULL (no deadline); NULL is also
 * returned if memory or a thread cannot be had (then nothing is timed). */
mf_deadline *mf_deadline_new(int timeout_s);

/* Stop the reaper and free the list; entries still open are freed too.
 * Call after the daemon has stopped.  NULL is fine. */
void mf_deadline_free(mf_deadline *d);

/* A new connection on descriptor fd, armed.  NULL on out of memory. */
mf_deadline_conn *mf_deadline_open(mf_deadline *d, int fd);

/* Its request headers are complete: no deadline until re-armed. */
void mf_deadline_disarm(mf_deadline *d, mf_deadline_conn *c);

/* Its answer has gone out: the next request's headers are due in timeout_s. */
void mf_deadline_rearm(mf_deadline *d, mf_deadline_conn *c);

/* The connection is closing: forget and free the entry. */
void mf_deadline_close(mf_deadline *d, mf_deadline_conn *c);

/* Connections shut down for missing their deadline so far. */
unsigned long mf_deadline_expired(mf_deadline *d);

#endif
