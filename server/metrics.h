/* metrics (prefix metrics_): counters, gauges and histograms with labels, in memory,
 * rendered in Prometheus' text exposition format (version 0.0.4) for GET /metrics.
 *
 * A family is a metric name with its help text, type and label names; a series is one
 * combination of label values in a family. Modules that have figures to show register
 * their families once and keep the series they update (a series stays valid, at the
 * same address, as long as the registry), so that an update on a hot path is an
 * addition, never a lookup. Figures kept elsewhere (queue length, live connections,
 * the process's memory) are set just before each rendering by a collector
 * (metrics_on_render).
 *
 * Memory grows with the series only: callers give label values from bounded sets
 * (module ids of the configuration, registered methods, status codes), never from
 * requests. Single-threaded; the server aborts on out-of-memory. */
#ifndef PRISMQ_METRICS_H
#define PRISMQ_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct evbuffer;

typedef struct metrics metrics;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

/* Label names a family may have, at most. */
#define METRICS_MAX_LABELS 3
/* Buckets a histogram may have, at most (not counting +Inf). */
#define METRICS_MAX_BUCKETS 24

/* Creates an empty registry. Returns 0 and sets *out (free with metrics_free). */
int metrics_new(metrics **out);

/* Frees the registry with its families and series. Accepts NULL. */
void metrics_free(metrics *m);

/* Returns the family `name` of m, registering it first if it is new: `type`, `help`
 * (one line), label names `labels` (NULL-terminated, at most METRICS_MAX_LABELS; NULL
 * for none) and, for a histogram, the upper bounds of its buckets (`nbuckets`
 * increasing values, at most METRICS_MAX_BUCKETS; +Inf is implied). name, help, the
 * label names and the bounds must outlive m (string literals, static arrays). A name
 * registered again returns the same family (its first registration's type, labels and
 * buckets). A family without labels has its one series from the start, so it shows 0
 * before any update. Names and label names must be valid Prometheus names (not checked
 * beyond an assert). */
metrics_family *metrics_family_get(metrics *m, enum metrics_type type, const char *name,
                                   const char *help, const char *const *labels,
                                   const double *buckets, size_t nbuckets);

/* Returns the series of f with label values `values` (as many as f has label names;
 * copied), creating it at zero if it is new. Valid while the registry lives. */
metrics_series *metrics_series_get(metrics_family *f, const char *const *values);

/* The series of a family without labels. */
metrics_series *metrics_series_only(metrics_family *f);

/* The one series of the family `name` without labels, registered as metrics_family_get
 * does (type, help) if it is new. */
metrics_series *metrics_single(metrics *m, enum metrics_type type, const char *name,
                               const char *help);

/* Adds v (>= 0 for a counter) to a counter's or gauge's value. */
void metrics_add(metrics_series *s, double v);

/* Sets a gauge's value, or a counter's from a count kept elsewhere (which only grows). */
void metrics_set(metrics_series *s, double v);

/* Counts the observation v in a histogram: its bucket, the sum and the count. */
void metrics_observe(metrics_series *s, double v);

/* Observes the seconds from `since` (CLOCK_MONOTONIC) to now in a histogram. */
void metrics_observe_since(metrics_series *s, const struct timespec *since);

/* Called at the start of every metrics_render, in the order added, to set gauges (and
 * counters kept elsewhere) from the live state: fn(arg, m). */
void metrics_on_render(metrics *m, void (*fn)(void *arg, metrics *m), void *arg);

/* Runs the collectors, then appends every family to out in the text format, in the
 * order they were registered, their series in the order they were created. */
void metrics_render(metrics *m, struct evbuffer *out);

/* The Content-Type of metrics_render's text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
