/* Logging for hostd: one line per event, with context, to stderr; under
 * systemd (stderr is the journal stream) to the journal with the fields
 * PRIORITY, SYSLOG_IDENTIFIER=mdlmap-hostd and MDLMAP_VM (the VM a line names
 * as "vm NAME"). */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern int log_threshold; /* messages above this level are dropped; default LOG_INFO */

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_threshold >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

/* Lines a peer can cause (a guest, a front-end, a host API client) go
 * through a limiter owned by that peer's state: at most LOG_LIMIT_BURST lines
 * per LOG_LIMIT_WINDOW_MS, the rest counted and reported as one "N messages
 * suppressed" line when the next window opens. */
#define LOG_LIMIT_BURST 10u
#define LOG_LIMIT_WINDOW_MS 5000
struct log_limit {
    int64_t start_ms;
    unsigned n;
    uint64_t suppressed;
};
/* May one more line go out? who names the source in the suppression line.
 * A NULL limiter always allows. */
bool log_limit_allow(struct log_limit *l, const char *who);

#define log_warn_limited(l, who, ...)                                                    \
    do {                                                                                 \
        if (log_limit_allow((l), (who)))                                                 \
            log_msg(LOG_WARN, __VA_ARGS__);                                             \
    } while (0)
/* Per-request lines a peer causes at will (audit lines of the host API). */
#define log_info_limited(l, who, ...)                                                    \
    do {                                                                                 \
        if (log_limit_allow((l), (who)))                                                 \
            log_msg(LOG_INFO, __VA_ARGS__);                                             \
    } while (0)
