/* fuzz_http.c -- libFuzzer target: raw bytes on a TCP connection to the real
 * HTTP front end (server/http.c, with the batcher and a model behind it), the
 * whole path of a request: request line and headers (server/httpparse.c),
 * routing, query, body (Content-Length, chunked, pipelined), multipart,
 * decoding, preprocessing, queueing, waiting for the batch, the answer.
 *
 * Started once: a server on 127.0.0.1 (ephemeral port), one HTTP thread, one
 * worker, the micro model of tests/fuzz/seeds/model/micro_gray_labels (or
 * $MF_FUZZ_MODEL), small limits (1 MiB body, 1 Mpixel, 2 s head deadline).
 * Per input: connect, send the input, half-close, read the answer(s) until
 * the server closes or, nothing being in flight, stays quiet for 5 ms; then
 * wait until no request is in flight, so every input is finished before the
 * next starts.  Checked: anything the server sends
 * starts with an HTTP/1.x status line, and no request stays in flight.
 * Sanitizer reports in the server's threads count as crashes too.
 */
#include "fuzz.h"

#include "batcher.h"
#include "config.h"
#include "http.h"
#include "metrics.h"
#include "mf.h"
#include "repository.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static mf_config cfg;
static mf_repo *repo;
static mf_metrics *metrics;
static mf_batcher *batcher;
static mf_decoder *decoder;
static mf_http *http;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void start_server(void)
{
    char err[1024];
    signal(SIGPIPE, SIG_IGN);
    const char *path = getenv("MF_FUZZ_MODEL");
    if (!path) path = "tests/fuzz/seeds/model/micro_gray_labels";
    mf_config_defaults(&cfg);
    cfg.port = 0;
    snprintf(cfg.bind, sizeof cfg.bind, "127.0.0.1");
    snprintf(cfg.model, sizeof cfg.model, "%s", path);
    snprintf(cfg.model_name, sizeof cfg.model_name, "micro");
    cfg.http_threads = 1;
    cfg.workers = 1;
    cfg.max_batch = 4;
    cfg.max_delay_us = 0;
    cfg.max_queue = 64;
    cfg.request_timeout_ms = 2000;
    cfg.max_body_bytes = 1 << 20;
    cfg.max_pixels = 1 << 20;
    cfg.connection_timeout_s = 2;
    cfg.log_requests = false;
    metrics = mf_metrics_new();
    mf_batcher_config bc = {.workers = 1, .engine_threads = 1};
    FUZZ_CHECK(metrics != NULL);
    FUZZ_CHECK(mf_batcher_new(&bc, metrics, &batcher, err, sizeof err) == MF_BATCHER_OK);
    FUZZ_CHECK(mf_repo_open(&cfg, batcher, metrics, &repo, err, sizeof err) == 0);
    if (!mf_repo_any_ready(repo)) {
        mf_repo_first_error(repo, err, sizeof err);
        fprintf(stderr, "fuzz_http: %s: %s (run from the repository root or set MF_FUZZ_MODEL)\n", path, err);
        abort();
    }
    FUZZ_CHECK(mf_decoder_new(1, &decoder, err, sizeof err) == 0);
    FUZZ_CHECK(mf_http_start(&cfg, repo, batcher, decoder, metrics, &http, err, sizeof err) == MF_HTTP_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!http) start_server();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    /* Thousands of connections a second leave their ports in TIME_WAIT for
     * a minute: one source address would run out of ephemeral ports within
     * a smoke run.  Rotate the source over 127.0.0.2 .. 127.0.0.251. */
    static unsigned n_conn;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + n_conn++ % 250);
    int one = 1; /* the port is chosen at connect(), per destination, not at bind() */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    FUZZ_CHECK(bind(fd, (struct sockaddr *)&src, sizeof src) == 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mf_http_port(http))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        /* libFuzzer's timers interrupt a connect() that waits on a full
         * backlog; the connection goes on and completes asynchronously */
        int e = errno, soerr = 0;
        socklen_t len = sizeof soerr;
        struct pollfd w = {fd, POLLOUT, 0};
        while (e == EINTR && poll(&w, 1, 10000) < 0 && errno == EINTR) {}
        if (e == EINTR && (w.revents & (POLLOUT | POLLERR | POLLHUP)) &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0)
            e = soerr;
        if (e != 0) {
            fprintf(stderr, "connect from 127.0.0.%u: %s\n", 2 + (n_conn - 1) % 250, strerror(e));
            FUZZ_CHECK(!"connect to the server");
        }
    }

    /* send and read at once: a large input must not deadlock against a
     * server that answers before reading all of it */
    size_t sent = 0, got = 0;
    char head[16];
    int write_open = 1;
    double deadline = now_s() + 8, last_data = now_s();
    while (now_s() < deadline) {
        /* done when the server closes, or when everything is sent, nothing is
         * in flight and the server has been quiet for 5 ms (it may keep an
         * idle keep-alive connection open until its timeout), or when it has
         * been quiet for 100 ms with a request still open: a body shorter
         * than its Content-Length.  libmicrohttpd 0.9.75 misses the
         * half-close that follows such a body and would wait for
         * connection_timeout_s; a reset ends it at once. */
        double quiet = now_s() - last_data;
        if (!write_open && mf_http_inflight(http) == 0 && quiet > 0.005) break;
        if (!write_open && quiet > 0.1) {
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            break;
        }
        struct pollfd p = {fd, (short)(POLLIN | (write_open ? POLLOUT : 0)), 0};
        if (poll(&p, 1, 5) < 0 && errno != EINTR) break;
        if (write_open && (p.revents & POLLOUT)) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) sent += (size_t)w;
            if (w < 0 && errno != EAGAIN && errno != EINTR) write_open = 0;
            if (sent == size) {
                shutdown(fd, SHUT_WR);
                write_open = 0;
                last_data = now_s(); /* quiet is counted from here */
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[65536];
            ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break; /* closed */
            if (r > 0) {
                for (ssize_t i = 0; i < r && got + (size_t)i < sizeof head; i++) head[got + i] = buf[i];
                got += (size_t)r;
                last_data = now_s();
            }
        }
    }
    close(fd);
    if (got >= 9) FUZZ_CHECK(memcmp(head, "HTTP/1.", 7) == 0);
    /* the next input starts on an idle server */
    deadline = now_s() + 8;
    while (mf_http_inflight(http) > 0 && now_s() < deadline) usleep(200);
    FUZZ_CHECK(mf_http_inflight(http) == 0);
    return 0;
}
