/* Unit tests for server/metrics: what the registry renders is checked as text, line by
 * line, against the exposition format (promtool checks the live server's in
 * test_metrics.py). What matters: counters and gauges by label values, histogram
 * buckets cumulative with +Inf, _sum and _count, escaping of label values and help,
 * values Prometheus reads back exactly, series found again rather than duplicated, and
 * collectors run before each rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"

/* What metrics_render writes, as a string the caller frees. */
static char *render(metrics *m) {
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  metrics_render(m, b);
  size_t n = evbuffer_get_length(b);
  char *s = malloc(n + 1);
  assert_non_null(s);
  evbuffer_remove(b, s, n);
  s[n] = '\0';
  evbuffer_free(b);
  return s;
}

static void test_counter_and_gauge(void **state) {
  (void)state;
  metrics *m;
  assert_int_equal(metrics_new(&m), 0);
  static const char *const labels[] = {"module", "status", NULL};
  metrics_family *runs =
      metrics_family_get(m, METRICS_COUNTER, "t_runs_total", "Runs.", labels, NULL, 0);
  metrics_family *q = metrics_family_get(m, METRICS_GAUGE, "t_queued", "Queued.", NULL, NULL, 0);
  const char *a[] = {"echo", "COMPLETED"}, *b[] = {"echo", "FAILED"}, *c[] = {"ech", "oFAILED"};
  metrics_series *sa = metrics_series_get(runs, a);
  metrics_add(sa, 1);
  metrics_add(metrics_series_get(runs, b), 2);
  metrics_add(metrics_series_get(runs, c), 1);
  /* Found again, not made twice. */
  assert_ptr_equal(metrics_series_get(runs, a), sa);
  metrics_add(sa, 1);
  metrics_set(metrics_series_only(q), 0.25);
  /* Registering a name again gives the same family. */
  assert_ptr_equal(metrics_family_get(m, METRICS_COUNTER, "t_runs_total", "x", labels, NULL, 0),
                   runs);
  char *s = render(m);
  assert_string_equal(s,
                      "# HELP t_runs_total Runs.\n"
                      "# TYPE t_runs_total counter\n"
                      "t_runs_total{module=\"echo\",status=\"COMPLETED\"} 2\n"
                      "t_runs_total{module=\"echo\",status=\"FAILED\"} 2\n"
                      "t_runs_total{module=\"ech\",status=\"oFAILED\"} 1\n"
                      "# HELP t_queued Queued.\n"
                      "# TYPE t_queued gauge\n"
                      "t_queued 0.25\n");
  free(s);
  metrics_free(m);
}

static void test_histogram(void **state) {
  (void)state;
  metrics *m;
  assert_int_equal(metrics_new(&m), 0);
  static const double bounds[] = {0.001, 0.1, 1};
  static const char *const labels[] = {"method", NULL};
  metrics_family *f =
      metrics_family_get(m, METRICS_HISTOGRAM, "t_seconds", "Latency.", labels, bounds, 3);
  const char *v[] = {"Get"};
  metrics_series *s = metrics_series_get(f, v);
  /* Sums exact in binary, so that the text is known. */
  metrics_observe(s, 0.0009765625);
  metrics_observe(s, 0.001); /* a bound belongs to its own bucket (le) */
  metrics_observe(s, 0.0625);
  metrics_observe(s, 30);
  char *out = render(m);
  assert_string_equal(out,
                      "# HELP t_seconds Latency.\n"
                      "# TYPE t_seconds histogram\n"
                      "t_seconds_bucket{method=\"Get\",le=\"0.001\"} 2\n"
                      "t_seconds_bucket{method=\"Get\",le=\"0.1\"} 3\n"
                      "t_seconds_bucket{method=\"Get\",le=\"1\"} 3\n"
                      "t_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4\n"
                      "t_seconds_sum{method=\"Get\"} 30.0644765625\n"
                      "t_seconds_count{method=\"Get\"} 4\n");
  free(out);
  metrics_free(m);
}

static void test_escaping(void **state) {
  (void)state;
  metrics *m;
  assert_int_equal(metrics_new(&m), 0);
  static const char *const labels[] = {"v", NULL};
  metrics_family *f =
      metrics_family_get(m, METRICS_GAUGE, "t_g", "A \\ and a\nnewline.", labels, NULL, 0);
  const char *v[] = {"q\"b\\n\nx"};
  metrics_set(metrics_series_get(f, v), 1e21);
  char *out = render(m);
  assert_string_equal(out,
                      "# HELP t_g A \\\\ and a\\nnewline.\n"
                      "# TYPE t_g gauge\n"
                      "t_g{v=\"q\\\"b\\\\n\\nx\"} 1e+21\n");
  free(out);
  metrics_free(m);
}

static void count_renders(void *arg, metrics *m) {
  (void)m;
  metrics_series *s = arg;
  metrics_add(s, 1);
}

static void test_collectors_and_many_series(void **state) {
  (void)state;
  metrics *m;
  assert_int_equal(metrics_new(&m), 0);
  metrics_family *f =
      metrics_family_get(m, METRICS_COUNTER, "t_renders_total", "Renders.", NULL, NULL, 0);
  metrics_on_render(m, count_renders, metrics_series_only(f));
  free(render(m));
  char *out = render(m);
  assert_non_null(strstr(out, "\nt_renders_total 2\n"));
  free(out);

  /* Enough series to grow the lookup table several times; each is found again. */
  static const char *const labels[] = {"k", NULL};
  metrics_family *g = metrics_family_get(m, METRICS_GAUGE, "t_many", "Many.", labels, NULL, 0);
  metrics_series *made[500];
  char name[16];
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof name, "m%d", i);
    const char *v[] = {name};
    made[i] = metrics_series_get(g, v);
    metrics_set(made[i], i);
  }
  for (int i = 0; i < 500; i++) {
    snprintf(name, sizeof name, "m%d", i);
    const char *v[] = {name};
    assert_ptr_equal(metrics_series_get(g, v), made[i]);
  }
  out = render(m);
  assert_non_null(strstr(out, "\nt_many{k=\"m0\"} 0\nt_many{k=\"m1\"} 1\n"));
  assert_non_null(strstr(out, "\nt_many{k=\"m499\"} 499\n"));
  free(out);
  metrics_free(m);
  metrics_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge),
      cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_collectors_and_many_series),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
