#include "metrics.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "xalloc.h"

struct metrics_series {
  char *values[METRICS_MAX_LABELS];
  double value; /* counters and gauges */
  /* Histograms: counts per bucket (not cumulative: cumulated when rendered, so an
   * observation touches one), the last one +Inf. */
  uint64_t *counts;
  uint64_t count;
  double sum;
  const struct metrics_family *family;
  struct metrics_series *next; /* in creation order */
};

struct metrics_family {
  enum metrics_type type;
  const char *name, *help;
  const char *labels[METRICS_MAX_LABELS];
  size_t nlabels;
  const double *buckets;
  size_t nbuckets;
  metrics_series *first, *last;
  /* Lookup by label values: open addressing over the series, a power of two long. */
  metrics_series **slots;
  size_t nslots, nseries;
  struct metrics_family *next;
};

struct collector {
  void (*fn)(void *arg, metrics *m);
  void *arg;
};

struct metrics {
  metrics_family *first, *last;
  struct collector *collectors;
  size_t ncollectors;
};

int metrics_new(metrics **out) {
  *out = xcalloc(1, sizeof **out);
  return 0;
}

static void series_free(metrics_series *s) {
  for (size_t i = 0; i < METRICS_MAX_LABELS; i++) free(s->values[i]);
  free(s->counts);
  free(s);
}

void metrics_free(metrics *m) {
  if (!m) return;
  for (metrics_family *f = m->first, *fn; f; f = fn) {
    fn = f->next;
    for (metrics_series *s = f->first, *sn; s; s = sn) {
      sn = s->next;
      series_free(s);
    }
    free(f->slots);
    free(f);
  }
  free(m->collectors);
  free(m);
}

/* ---- series lookup ---- */

/* FNV-1a over the values, each followed by a 0 byte (so "a","bc" and "ab","c" differ). */
static uint64_t hash_values(const char *const *values, size_t n) {
  uint64_t h = 1469598103934665603u;
  for (size_t i = 0; i < n; i++) {
    for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
      h = (h ^ *p) * 1099511628211u;
    h *= 1099511628211u;
  }
  return h;
}

static int series_is(const metrics_series *s, const char *const *values, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->values[i], values[i]) != 0) return 0;
  return 1;
}

/* The slot of values in f: the series holding them, or the empty slot they would take. */
static metrics_series **slot_of(metrics_family *f, const char *const *values) {
  size_t mask = f->nslots - 1;
  for (size_t i = (size_t)hash_values(values, f->nlabels) & mask;; i = (i + 1) & mask)
    if (!f->slots[i] || series_is(f->slots[i], values, f->nlabels)) return &f->slots[i];
}

/* Keeps the table at most half full. */
static void grow_slots(metrics_family *f) {
  metrics_series **old = f->slots;
  size_t nold = f->nslots;
  f->nslots = nold ? nold * 2 : 16;
  f->slots = xcalloc(f->nslots, sizeof *f->slots);
  for (size_t i = 0; i < nold; i++)
    if (old[i]) *slot_of(f, (const char *const *)old[i]->values) = old[i];
  free(old);
}

static metrics_series *series_new(metrics_family *f, const char *const *values) {
  metrics_series *s = xcalloc(1, sizeof *s);
  s->family = f;
  for (size_t i = 0; i < f->nlabels; i++) s->values[i] = xstrdup(values[i]);
  if (f->type == METRICS_HISTOGRAM) s->counts = xcalloc(f->nbuckets + 1, sizeof *s->counts);
  if (f->last)
    f->last->next = s;
  else
    f->first = s;
  f->last = s;
  return s;
}

metrics_series *metrics_series_get(metrics_family *f, const char *const *values) {
  if (2 * (f->nseries + 1) > f->nslots) grow_slots(f);
  metrics_series **slot = slot_of(f, values);
  if (!*slot) {
    *slot = series_new(f, values);
    f->nseries++;
  }
  return *slot;
}

metrics_series *metrics_single(metrics *m, enum metrics_type type, const char *name,
                               const char *help) {
  return metrics_series_only(metrics_family_get(m, type, name, help, NULL, NULL, 0));
}

metrics_series *metrics_series_only(metrics_family *f) {
  assert(f->nlabels == 0);
  return f->first;
}

/* ---- families ---- */

metrics_family *metrics_family_get(metrics *m, enum metrics_type type, const char *name,
                                   const char *help, const char *const *labels,
                                   const double *buckets, size_t nbuckets) {
  for (metrics_family *f = m->first; f; f = f->next)
    if (strcmp(f->name, name) == 0) return f;
  metrics_family *f = xcalloc(1, sizeof *f);
  f->type = type;
  f->name = name;
  f->help = help;
  while (labels && labels[f->nlabels]) {
    assert(f->nlabels < METRICS_MAX_LABELS);
    f->labels[f->nlabels] = labels[f->nlabels];
    f->nlabels++;
  }
  if (type == METRICS_HISTOGRAM) {
    assert(nbuckets <= METRICS_MAX_BUCKETS);
    f->buckets = buckets;
    f->nbuckets = nbuckets;
  }
  if (m->last)
    m->last->next = f;
  else
    m->first = f;
  m->last = f;
  if (f->nlabels == 0) metrics_series_get(f, NULL);
  return f;
}

/* ---- updates ---- */

void metrics_add(metrics_series *s, double v) { s->value += v; }

void metrics_set(metrics_series *s, double v) { s->value = v; }

void metrics_observe(metrics_series *s, double v) {
  const metrics_family *f = s->family;
  size_t i = 0;
  while (i < f->nbuckets && v > f->buckets[i]) i++;
  s->counts[i]++;
  s->count++;
  s->sum += v;
}

void metrics_observe_since(metrics_series *s, const struct timespec *since) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  metrics_observe(
      s, (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) * 1e-9);
}

void metrics_on_render(metrics *m, void (*fn)(void *arg, metrics *m), void *arg) {
  m->collectors = xrealloc(m->collectors, (m->ncollectors + 1) * sizeof *m->collectors);
  m->collectors[m->ncollectors++] = (struct collector){fn, arg};
}

/* ---- rendering ---- */

/* A value as Prometheus reads it: integers exactly, others in the fewest digits that
 * read back as the same double (0.1, not 0.10000000000000001). */
static void format_value(char *buf, size_t len, double v) {
  if (isnan(v)) {
    snprintf(buf, len, "NaN");
  } else if (isinf(v)) {
    snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
  } else if (v == floor(v) && fabs(v) < 9007199254740992.0) {
    snprintf(buf, len, "%" PRId64, (int64_t)v);
  } else {
    for (int prec = 6; prec <= 17; prec++) {
      snprintf(buf, len, "%.*g", prec, v);
      if (strtod(buf, NULL) == v) break;
    }
  }
}

static void put_value(struct evbuffer *out, double v) {
  char buf[64];
  format_value(buf, sizeof buf, v);
  evbuffer_add(out, buf, strlen(buf));
}

/* Text with `\`, newline and (in label values) `"` escaped as the format wants. */
static void put_escaped(struct evbuffer *out, const char *s, int quote) {
  for (; *s; s++) {
    if (*s == '\\')
      evbuffer_add(out, "\\\\", 2);
    else if (*s == '\n')
      evbuffer_add(out, "\\n", 2);
    else if (*s == '"' && quote)
      evbuffer_add(out, "\\\"", 2);
    else
      evbuffer_add(out, s, 1);
  }
}

/* name{l1="v1",...[,le="bound"]} */
static void put_name(struct evbuffer *out, const metrics_family *f, const metrics_series *s,
                     const char *suffix, const char *le) {
  evbuffer_add_printf(out, "%s%s", f->name, suffix);
  if (f->nlabels == 0 && !le) return;
  evbuffer_add(out, "{", 1);
  for (size_t i = 0; i < f->nlabels; i++) {
    evbuffer_add_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
    put_escaped(out, s->values[i], 1);
    evbuffer_add(out, "\"", 1);
  }
  if (le) evbuffer_add_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
  evbuffer_add(out, "}", 1);
}

static void put_histogram(struct evbuffer *out, const metrics_family *f, const metrics_series *s) {
  uint64_t cum = 0;
  char le[64];
  for (size_t i = 0; i <= f->nbuckets; i++) {
    cum += s->counts[i];
    format_value(le, sizeof le, i < f->nbuckets ? f->buckets[i] : INFINITY);
    put_name(out, f, s, "_bucket", le);
    evbuffer_add_printf(out, " %" PRIu64 "\n", cum);
  }
  put_name(out, f, s, "_sum", NULL);
  evbuffer_add(out, " ", 1);
  put_value(out, s->sum);
  evbuffer_add(out, "\n", 1);
  put_name(out, f, s, "_count", NULL);
  evbuffer_add_printf(out, " %" PRIu64 "\n", s->count);
}

void metrics_render(metrics *m, struct evbuffer *out) {
  static const char *const types[] = {"counter", "gauge", "histogram"};
  for (size_t i = 0; i < m->ncollectors; i++) m->collectors[i].fn(m->collectors[i].arg, m);
  for (const metrics_family *f = m->first; f; f = f->next) {
    evbuffer_add_printf(out, "# HELP %s ", f->name);
    put_escaped(out, f->help, 0);
    evbuffer_add_printf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
    for (const metrics_series *s = f->first; s; s = s->next) {
      if (f->type == METRICS_HISTOGRAM) {
        put_histogram(out, f, s);
        continue;
      }
      put_name(out, f, s, "", NULL);
      evbuffer_add(out, " ", 1);
      put_value(out, s->value);
      evbuffer_add(out, "\n", 1);
    }
  }
}
