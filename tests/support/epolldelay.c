/* epolldelay.c -- LD_PRELOAD shim of the connection-reset race test
 * (tests/py/test_reliability.py, ResetRaceTest): every epoll_wait first
 * sleeps MF_EPOLL_DELAY_US microseconds, so what happens meanwhile -- a
 * finished job's wake-up, then a client's reset -- comes back to the HTTP
 * loop in one batch, in the order it happened, as it does now and then on a
 * loaded machine.  Without the variable (or with 0) nothing changes.  It
 * goes to the kernel directly (epoll_pwait with no signal mask is
 * epoll_wait), so it needs no dlsym; under AddressSanitizer it is preloaded
 * after the sanitizer's runtime. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long delay_us; /* set once, before main */

static void __attribute__((constructor)) read_delay(void)
{
    const char *v = getenv("MF_EPOLL_DELAY_US");
    long n = 0;
    for (; v && *v >= '0' && *v <= '9' && n < 10000000; v++) n = n * 10 + (*v - '0');
    delay_us = n;
}

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    if (delay_us > 0) {
        struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0) {}
    }
    return (int)syscall(SYS_epoll_pwait, epfd, events, maxevents, timeout, NULL, (size_t)(_NSIG / 8));
}
