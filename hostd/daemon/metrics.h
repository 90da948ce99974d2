/* Metrics in the Prometheus text exposition format, written to a file that
 * the node exporter's textfile collector reads (--metrics-file). */
#pragma once
#include <stddef.h>
#include <stdio.h>

#include "evloop.h"

struct hostd;

/* Every metric of every VM, to f. 0 or -EIO. */
int metrics_format(struct hostd *h, FILE *f);
/* Write them to path atomically: a temporary file beside it (path.tmp, which
 * the collector ignores: it reads *.prom only) renamed over it, so a reader
 * never sees half a file. 0 or a negative errno (err says why). */
int metrics_write_file(struct hostd *h, const char *path, char *err, size_t errlen);

/* Rewrites the file every interval_s seconds from the event loop. */
struct metrics_writer {
    struct hostd *h;
    const char *path;
    int tfd;
    struct ev_handler eh;
    bool failing;                /* the last write failed (logged once per episode) */
};
/* Writes once now and then on a timer. 0 or a negative errno. */
int metrics_writer_start(struct metrics_writer *w, struct hostd *h, const char *path, unsigned interval_s);
/* Stops the timer and removes the file: a stopped hostd has no current metrics. */
void metrics_writer_stop(struct metrics_writer *w);
