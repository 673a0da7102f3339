/* main.c -- mobileformer-server: settings, models, pools, HTTP, signals.
 *
 * Start-up order: settings (exit 2 on a bad one), metrics, batcher, the
 * model repository (its models loaded; with one --model file, exit 1 with one
 * log line if it is missing or corrupt), the decode pool, HTTP; only then is
 * the service ready.  SIGTERM/SIGINT/SIGHUP only write their number to a pipe
 * (self-pipe: async-signal-safe, and it works whichever thread the kernel
 * picks -- OpenBLAS starts threads before main() runs, so blocking the
 * signals here could not cover every thread and signalfd would miss them);
 * this thread reads the pipe and does the work.  Shutdown:
 * readiness turns 503 and the listening socket closes, requests in flight
 * (and new ones on connections already open) get up to drain_timeout_ms to
 * finish, what is still queued then is answered 503, the decode pool and
 * then the HTTP loops stop, and the process exits 0.  A second signal skips
 * the rest of the wait.  SIGHUP rescans the model repository (model_control
 * explicit or poll; logged and ignored with none).
 */
#include "batcher.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "mf.h"
#include "repository.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static uint64_t now_ms(void) { return mf_now_ns() / 1000000u; }

/* Every connection is a file descriptor: take the hard limit. */
static void raise_fd_limit(const mf_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)cfg->max_connections + 64 > rl.rlim_cur)
        mf_log_event("warn", "max_connections is close to the open-file limit",
                     json_pack("{s:i,s:I}", "max_connections", cfg->max_connections,
                               "nofile", (json_int_t)rl.rlim_cur));
}

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(signal_pipe[1], &b, 1); /* full pipe: a signal is already pending */
    (void)w;
    errno = saved;
}

static int install_signals(void)
{
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGHUP, &sa, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Wait for a signal for up to timeout_ms (-1: forever).  Returns the
 * signal number, 0 on timeout. */
static int wait_signal(int timeout_ms)
{
    struct pollfd p = {signal_pipe[0], POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0) return 0;
    unsigned char b;
    return read(signal_pipe[0], &b, 1) == 1 ? b : 0;
}

/* A descriptor 0, 1 or 2 closed by whoever started us would be handed to
 * the next open() -- the model file, a client socket -- and log lines would
 * then go there.  Point them at /dev/null instead. */
static void open_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        /* the lowest free descriptor: fd itself, those below are open by now */
        (void)open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    }
}

int main(int argc, char **argv)
{
    open_std_fds();
#ifdef __GLIBC__
    /* Every block of 1 MiB or more its own mapping, given back when freed:
     * glibc's default threshold rises to the size of each big block freed
     * (up to 32 MiB), after which batch tensors, uploads and decoded
     * photos come from the threads' heaps, where a block freed by a worker
     * after an unload's trim stayed resident (test_repository's memory
     * test saw 4-7 MB of it appear in a cycle and stay). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
    mf_config cfg;
    char err[1024];
    switch (mf_config_init(&cfg, argc, argv, environ, stdout, err, sizeof err)) {
    case MF_CONFIG_OK: break;
    case MF_CONFIG_EXIT: return 0;
    case MF_CONFIG_ERROR:
        fprintf(stderr, "mobileformer-server: %s (see --help)\n", err);
        return 2;
    }

    if (install_signals() != 0) {
        mf_log_event("error", "cannot install signal handlers",
                     json_pack("{s:s}", "reason", strerror(errno)));
        return 1;
    }
    raise_fd_limit(&cfg);

    int rc = 1;
    mf_repo *repo = NULL;
    mf_metrics *metrics = NULL;
    mf_batcher *batcher = NULL;
    mf_decoder *decoder = NULL;
    mf_http *http = NULL;

    metrics = mf_metrics_new();
    if (!metrics) {
        mf_log_event("error", "out of memory", NULL);
        goto out;
    }
    mf_batcher_config bc = {.workers = cfg.workers, .engine_threads = cfg.engine_threads};
    if (mf_batcher_new(&bc, metrics, &batcher, err, sizeof err) != MF_BATCHER_OK) {
        mf_log_event("error", err, NULL);
        goto out;
    }
    if (mf_repo_open(&cfg, batcher, metrics, &repo, err, sizeof err) != 0) {
        mf_log_event("error", err, NULL);
        goto out;
    }
    if (!cfg.model_repository[0] && !mf_repo_any_ready(repo)) {
        /* one model file: a service without it is no service */
        char reason[1200];
        mf_repo_first_error(repo, reason, sizeof reason);
        char msg[MF_CONFIG_PATH + 1300];
        snprintf(msg, sizeof msg, "cannot load model %s: %s", cfg.model, reason);
        mf_log_event("error", msg, json_pack("{s:s}", "model", cfg.model));
        goto out;
    }
    if (mf_decoder_new(cfg.decode_threads, &decoder, err, sizeof err) != 0) {
        mf_log_event("error", err, NULL);
        goto out;
    }
    if (mf_http_start(&cfg, repo, batcher, decoder, metrics, &http, err, sizeof err) != MF_HTTP_OK) {
        mf_log_event("error", err, NULL);
        goto out;
    }
    /* the line tests and scripts wait for; port is the bound one (--port 0) */
    char names[1024];
    mf_repo_names(repo, names, sizeof names);
    mf_log_event("info", "listening",
                 json_pack("{s:s,s:i,s:s,s:s,s:s,s:i,s:i,s:i,s:s,s:s}", "bind", cfg.bind, "port", mf_http_port(http),
                           "models", names, "model_repository", cfg.model_repository, "model_control",
                           cfg.model_control, "workers", cfg.workers, "engine_threads", cfg.engine_threads,
                           "http_threads", cfg.http_threads, "kernels", mf_kernels_name(), "precision",
                           cfg.precision));

    int sig = 0;
    while (!sig) {
        sig = wait_signal(-1);
        if (sig == SIGHUP) {
            /* a reload request: rescan the repository (model_control explicit or poll) */
            if (mf_repo_rescan(repo) == 0)
                mf_log_event("info", "SIGHUP received: rescanning the model repository", NULL);
            else
                mf_log_event("info", "SIGHUP received: ignored (model_control is none: the models are fixed)", NULL);
            sig = 0;
        }
    }
    mf_log_event("info", "draining",
                 json_pack("{s:s,s:I,s:i}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM",
                           "inflight", (json_int_t)mf_http_inflight(http), "drain_timeout_ms",
                           cfg.drain_timeout_ms));
    uint64_t deadline = now_ms() + (uint64_t)cfg.drain_timeout_ms;
    mf_http_begin_drain(http, cfg.drain_timeout_ms);
    int forced = 0;
    while (mf_http_inflight(http) > 0 && now_ms() < deadline) {
        int again = wait_signal(10);
        if (again && again != SIGHUP) {
            forced = 1;
            break;
        }
    }
    uint64_t now = now_ms();
    int cancelled = mf_batcher_drain(batcher, forced || now >= deadline ? 0 : (long)(deadline - now));
    /* a load or unload still queued is answered 503 now, and one in progress
     * finishes first: none may call back into a request the loops free */
    mf_repo_stop(repo);
    /* answers of requests the drain cancelled (503) still need to go out */
    uint64_t flush = now_ms() + 1000;
    while (mf_http_inflight(http) > 0 && now_ms() < flush) wait_signal(10);
    long left = mf_http_inflight(http);
    /* the decode pool's threads reference requests: they go before the loops */
    mf_decoder_free(decoder);
    decoder = NULL;
    mf_http_stop(http);
    http = NULL;
    mf_log_event("info", "stopped",
                 json_pack("{s:i,s:I,s:b}", "cancelled", cancelled, "unfinished", (json_int_t)left,
                           "forced", forced));
    rc = 0;
out:
    mf_decoder_free(decoder);
    mf_repo_stop(repo);
    mf_http_stop(http);
    mf_batcher_drain(batcher, 0);
    mf_repo_close(repo);
    mf_batcher_free(batcher);
    mf_metrics_free(metrics);
    return rc;
}
