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
