#include "runstats.h"

#include <stdlib.h>

#include "xalloc.h"

struct runstats {
  metrics_family *started, *finished, *seconds;
  metrics_series *queued, *running, *runs;
  metrics_series *output[2]; /* stdout, stderr */
  void (*gauges)(void *arg, runstats_gauges *g);
  void *arg;
};

static const char *const module_label[] = {"module", NULL};
static const char *const module_status_labels[] = {"module", "status", NULL};
static const char *const stream_label[] = {"stream", NULL};
/* Seconds: runs last from milliseconds to days. */
static const double run_buckets[] = {0.01, 0.05, 0.1, 0.5,  1,    5,     10,   30,
                                     60,   300,  900, 1800, 3600, 14400, 86400};

static void collect(void *arg, metrics *m) {
  (void)m;
  runstats *rs = arg;
  runstats_gauges g = {0, 0, 0};
  rs->gauges(rs->arg, &g);
  metrics_set(rs->queued, (double)g.queued);
  metrics_set(rs->running, (double)g.running);
  metrics_set(rs->runs, (double)g.runs);
}

int runstats_new(runstats **out, metrics *m, void (*gauges)(void *arg, runstats_gauges *g),
                 void *arg) {
  runstats *rs = xcalloc(1, sizeof *rs);
  rs->started = metrics_family_get(m, METRICS_COUNTER, "prismq_runs_started_total",
                                   "Runs started, by module.", module_label, NULL, 0);
  rs->finished = metrics_family_get(m, METRICS_COUNTER, "prismq_runs_finished_total",
                                    "Runs that ended, by module and final status.",
                                    module_status_labels, NULL, 0);
  rs->seconds =
      metrics_family_get(m, METRICS_HISTOGRAM, "prismq_run_duration_seconds",
                         "How long runs ran, from their start to their end, by module.",
                         module_label, run_buckets, sizeof run_buckets / sizeof *run_buckets);
  rs->queued = metrics_single(m, METRICS_GAUGE, "prismq_runs_queued", "Runs waiting for a slot.");
  rs->running = metrics_single(m, METRICS_GAUGE, "prismq_runs_running", "Runs running now.");
  rs->runs =
      metrics_single(m, METRICS_GAUGE, "prismq_runs", "Runs in the run table, of any status.");
  metrics_family *out_bytes =
      metrics_family_get(m, METRICS_COUNTER, "prismq_output_bytes_total",
                         "Output bytes read from runs, by stream.", stream_label, NULL, 0);
  const char *out_v[] = {"stdout"}, *err_v[] = {"stderr"};
  rs->output[0] = metrics_series_get(out_bytes, out_v);
  rs->output[1] = metrics_series_get(out_bytes, err_v);
  rs->gauges = gauges;
  rs->arg = arg;
  metrics_on_render(m, collect, rs);
  *out = rs;
  return 0;
}

void runstats_free(runstats *rs) { free(rs); }

void runstats_started(runstats *rs, const char *module) {
  if (!rs) return;
  const char *v[] = {module};
  metrics_add(metrics_series_get(rs->started, v), 1);
}

void runstats_finished(runstats *rs, const char *module, const char *status, int64_t ran_ms) {
  if (!rs) return;
  const char *v[] = {module, status}, *m[] = {module};
  metrics_add(metrics_series_get(rs->finished, v), 1);
  if (ran_ms >= 0) metrics_observe(metrics_series_get(rs->seconds, m), (double)ran_ms / 1000.0);
}

void runstats_output(runstats *rs, int stream, size_t len) {
  if (rs && (stream == 1 || stream == 2)) metrics_add(rs->output[stream - 1], (double)len);
}
