/* runstats (prefix runstats_): the scheduler's figures in the metrics registry
 * (metrics.h): runs started and finished by module (and status), how long they ran,
 * output bytes by stream, and, read at each rendering, the runs queued, running and in
 * the run table. Kept apart from the scheduler so that it only says what happened.
 * Every function but runstats_new accepts a NULL runstats (no registry: nothing is
 * counted). Single-threaded. */
#ifndef PRISMQ_RUNSTATS_H
#define PRISMQ_RUNSTATS_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

typedef struct runstats runstats;

/* The live figures, asked for at each rendering. */
typedef struct runstats_gauges {
  size_t queued, running;
  uint64_t runs; /* in the run table */
} runstats_gauges;

/* Registers the families in m (which must outlive the runstats) and a collector that
 * calls gauges(arg, &g) before each rendering. Returns 0 and sets *out (free with
 * runstats_free; the collector must not fire after that, so free m first or together). */
int runstats_new(runstats **out, metrics *m, void (*gauges)(void *arg, runstats_gauges *g),
                 void *arg);

/* Frees it. Accepts NULL. */
void runstats_free(runstats *rs);

/* A run of module `module` started (its process did, or a dry run's record). */
void runstats_started(runstats *rs, const char *module);

/* A run of `module` ended with `status` (a RunStatus name, "COMPLETED"...); it ran for
 * ran_ms milliseconds, or never started (ran_ms < 0: not counted in the durations). */
void runstats_finished(runstats *rs, const char *module, const char *status, int64_t ran_ms);

/* `len` bytes of output of `stream` (1 stdout, 2 stderr) were read from a run. */
void runstats_output(runstats *rs, int stream, size_t len);

#endif
