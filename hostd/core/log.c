/* Logging to stderr; see log.h. */
#include "log.h"

#include <stdio.h>
#include <time.h>

int log_threshold = LOG_INFO;

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    if ((int)lvl > log_threshold)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "[%5ld.%03ld] hostd %s: %s\n", (long)ts.tv_sec, ts.tv_nsec / 1000000L, names[lvl], line);
}

bool log_limit_allow(struct log_limit *l, const char *who)
{
    if (!l)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now - l->start_ms >= LOG_LIMIT_WINDOW_MS) {
        if (l->suppressed)
            log_msg(LOG_WARN, "%s: %llu messages suppressed", who ? who : "?", (unsigned long long)l->suppressed);
        l->start_ms = now;
        l->n = 0;
        l->suppressed = 0;
    }
    if (l->n < LOG_LIMIT_BURST) {
        l->n++;
        return true;
    }
    l->suppressed++;
    return false;
}
