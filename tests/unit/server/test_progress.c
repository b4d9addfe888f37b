/* Unit tests for server/progress: patterns (named, numbered and percent groups, the
 * Python-style syntax translated to POSIX, errors), the descriptor's line format, lines
 * split anywhere across chunks, over-long lines, messages cut and made valid UTF-8. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "progress.h"
#include "utf8.h"

/* The example. */
#define EXAMPLE "^PROGRESS (?P<done>\\d+)/(?P<total>\\d+)(?: (?P<message>.*))?$"

#define MAX_UPDATES 16

typedef struct update {
  double done, total;
  char message[PROGRESS_MESSAGE_MAX + 1];
  size_t end; /* where its line ends in the whole text */
} update;

typedef struct result {
  update u[MAX_UPDATES];
  size_t n;
  uint64_t rejected;
} result;

static progress_pattern *compile(const char *pattern) {
  progress_pattern *p = NULL;
  char err[256] = "";
  if (progress_pattern_new(&p, pattern, err, sizeof err) != 0)
    fail_msg("\"%s\" does not compile: %s", pattern, err);
  return p;
}

static void add(result *r, const Prismq__Runner__V1__Progress *pg, size_t end) {
  assert_true(r->n < MAX_UPDATES);
  update *u = &r->u[r->n++];
  u->done = pg->done;
  u->total = pg->total;
  snprintf(u->message, sizeof u->message, "%s", pg->message);
  u->end = end;
}

/* Scans text[0, len) with pattern pat (NULL: the descriptor's format), cut into chunks at
 * the offsets in cuts (ascending, ncuts of them), then ends the stream. */
static result scan_cut(const progress_pattern *pat, const char *text, size_t len,
                       const size_t *cuts, size_t ncuts) {
  result r = {.n = 0};
  progress_scan *s = progress_scan_new(pat);
  size_t from = 0;
  for (size_t c = 0; c <= ncuts; c++) {
    size_t to = c < ncuts ? cuts[c] : len, pos = 0;
    Prismq__Runner__V1__Progress pg = PRISMQ__RUNNER__V1__PROGRESS__INIT;
    /* A copy of its own, so that reading past the chunk shows up under ASan. */
    uint8_t *chunk = malloc(to - from + 1);
    assert_non_null(chunk);
    memcpy(chunk, text + from, to - from);
    while (progress_scan_next(s, chunk, to - from, &pos, &pg)) {
      assert_true(pos > 0 && pos <= to - from);
      add(&r, &pg, from + pos);
    }
    assert_int_equal(pos, to - from);
    free(chunk);
    from = to;
  }
  Prismq__Runner__V1__Progress pg = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  if (progress_scan_end(s, &pg)) add(&r, &pg, len);
  r.rejected = progress_scan_rejected(s);
  progress_scan_free(s);
  return r;
}

static result scan(const progress_pattern *pat, const char *text) {
  return scan_cut(pat, text, strlen(text), NULL, 0);
}

static void assert_update(const update *u, double done, double total, const char *message,
                          size_t end) {
  assert_true(u->done == done);
  assert_true(u->total == total);
  assert_string_equal(u->message, message);
  assert_int_equal(u->end, end);
}

static void assert_same(const result *a, const result *b) {
  assert_int_equal(a->n, b->n);
  assert_int_equal(a->rejected, b->rejected);
  for (size_t i = 0; i < a->n; i++)
    assert_update(&b->u[i], a->u[i].done, a->u[i].total, a->u[i].message, a->u[i].end);
}

/* The pattern: each update with the position where its line ends; other lines,
 * and lines that only look alike, give none. */
static void test_example_pattern(void **state) {
  (void)state;
  progress_pattern *p = compile(EXAMPLE);
  const char *text =
      "starting\n"
      "PROGRESS 1/10 first step\n" /* ends at 34 */
      "PROGRESS x/10\n"
      " PROGRESS 2/10\n"
      "PROGRESS 2/10\n"   /* ends at 77 */
      "PROGRESS 3/10\r\n" /* a carriage return before the newline is no part of the line */
      "done\n";
  result r = scan(p, text);
  assert_int_equal(r.n, 3);
  assert_update(&r.u[0], 1, 10, "first step", 34);
  assert_update(&r.u[1], 2, 10, "", 77);
  assert_update(&r.u[2], 3, 10, "", 92);
  assert_int_equal(r.rejected, 0);
  progress_pattern_free(p);
  progress_pattern_free(NULL);
}

/* Wherever the reads split the text, in two or byte by byte, the updates and their
 * positions are the same. */
static void test_any_split(void **state) {
  (void)state;
  progress_pattern *p = compile(EXAMPLE);
  const char *text =
      "PROG\nPROGRESS 1/4 a\nxPROGRESS 9/9\nPROGRESS 2/4\n\nPROGRESS 3/4 c\nPRO\nPROGRESS 4/4";
  size_t len = strlen(text);
  result whole = scan(p, text);
  assert_int_equal(whole.n, 4);
  assert_update(&whole.u[3], 4, 4, "", len); /* the last line, without a newline */
  for (size_t cut = 0; cut <= len; cut++) {
    result r = scan_cut(p, text, len, &cut, 1);
    assert_same(&whole, &r);
  }
  size_t bytes[128];
  for (size_t i = 0; i < len; i++) bytes[i] = i + 1;
  result r = scan_cut(p, text, len, bytes, len - 1);
  assert_same(&whole, &r);
  progress_pattern_free(p);
}

/* A line longer than PROGRESS_LINE_MAX is no progress line, whole in one chunk or
 * spread over many; the next line is read as usual. */
static void test_long_line(void **state) {
  (void)state;
  progress_pattern *p = compile(EXAMPLE);
  size_t len = PROGRESS_LINE_MAX + 100;
  char *text = malloc(len + 64);
  assert_non_null(text);
  int n = snprintf(text, len + 64, "PROGRESS 1/2 ");
  memset(text + n, 'm', len - (size_t)n);
  snprintf(text + len, 64, "\nPROGRESS 2/2 ok\n");
  size_t total = strlen(text);
  result r = scan(p, text);
  assert_int_equal(r.n, 1);
  assert_update(&r.u[0], 2, 2, "ok", total);
  size_t cuts[] = {10, 1000, 3000, 4095, 4097, 4150};
  result split = scan_cut(p, text, total, cuts, sizeof cuts / sizeof *cuts);
  assert_same(&r, &split);
  /* Exactly PROGRESS_LINE_MAX bytes is still a line. */
  memset(text + n, 'm', PROGRESS_LINE_MAX - (size_t)n);
  snprintf(text + PROGRESS_LINE_MAX, 64, "\n");
  r = scan(p, text);
  assert_int_equal(r.n, 1);
  assert_int_equal(strlen(r.u[0].message), PROGRESS_MESSAGE_MAX);
  free(text);
  progress_pattern_free(p);
}

/* Without names: groups 1, 2, 3 are done, total, message, and (?:...) is no group. */
static void test_numbered_groups(void **state) {
  (void)state;
  progress_pattern *p = compile("^(?:step|item) (\\d+) of (\\d+)(?:: (.*))?$");
  result r = scan(p, "step 3 of 7: copying\nitem 4 of 7\n");
  assert_int_equal(r.n, 2);
  assert_update(&r.u[0], 3, 7, "copying", 21);
  assert_update(&r.u[1], 4, 7, "", 33);
  progress_pattern_free(p);
  /* One group: done alone, total unknown (0). Unanchored, so searched anywhere. */
  p = compile("(\\d+) files");
  r = scan(p, "copied 12 files so far\nnothing\n");
  assert_int_equal(r.n, 1);
  assert_update(&r.u[0], 12, 0, "", 23);
  progress_pattern_free(p);
}

static void test_percent(void **state) {
  (void)state;
  progress_pattern *p = compile("^(?P<message>[a-z]+): (?P<percent>[0-9.]+)%$");
  result r = scan(p, "download: 12.5%\nunpack: 100%\nbad: 1.2.3%\n");
  assert_int_equal(r.n, 2);
  assert_update(&r.u[0], 12.5, 100, "download", 16);
  assert_update(&r.u[1], 100, 100, "unpack", 29);
  assert_int_equal(r.rejected, 1); /* matched, but 1.2.3 is no number */
  progress_pattern_free(p);
}

/* What the literal prefix must not miss: an optional last letter, alternatives, brackets
 * with parentheses and classes (which open no group). */
static void test_prefix_and_syntax(void **state) {
  (void)state;
  progress_pattern *p = compile("^ab?c (\\d+)");
  result r = scan(p, "ac 1\nabc 2\nabbc 3\n");
  assert_int_equal(r.n, 2);
  assert_update(&r.u[1], 2, 0, "", 11);
  progress_pattern_free(p);
  p = compile("^x (\\d+)$|^y (?:\\d+)$");
  r = scan(p, "y 5\nx 6\n");
  assert_int_equal(r.n, 1); /* y has no group 1: nothing done, no update */
  assert_update(&r.u[0], 6, 0, "", 8);
  progress_pattern_free(p);
  p = compile("^[(x] n=(?P<done>[[:digit:]]+)\\D*(?P<total>\\d+)");
  r = scan(p, "( n=5 of 9\nx n=6/10\n");
  assert_int_equal(r.n, 2);
  assert_update(&r.u[0], 5, 9, "", 11);
  assert_update(&r.u[1], 6, 10, "", 20);
  progress_pattern_free(p);
}

static void assert_refused(const char *pattern, const char *why) {
  progress_pattern *p = (progress_pattern *)&p;
  char err[256] = "";
  assert_int_equal(progress_pattern_new(&p, pattern, err, sizeof err), -EINVAL);
  assert_ptr_equal(p, (progress_pattern *)&p); /* *out untouched */
  if (!strstr(err, why)) fail_msg("\"%s\": \"%s\" does not say \"%s\"", pattern, err, why);
}

static void test_bad_patterns(void **state) {
  (void)state;
  assert_refused("^(?P<count>\\d+)", "unknown group name \"count\"");
  assert_refused("^(?P<done>\\d+) (?P<done>\\d+)", "named twice");
  assert_refused("^(?=x)(\\d+)", "is not supported");
  assert_refused("^(?P<done\\d+)", "is not supported");
  assert_refused("^PROGRESS", "no group");
  assert_refused("^(?P<done>\\d+) (?P<percent>\\d+)", "not both");
  assert_refused("^(?P<message>.*)", "done or one named percent");
  assert_refused("^(?P<percent>\\d+) (?P<total>\\d+)", "total needs a done");
  assert_refused("^(\\d+", "not a valid extended regular expression");
}

/* The descriptor's lines: DONE/TOTAL, PERCENT%, DONE, each with an optional message;
 * anything else is counted and ignored. */
static void test_fd_format(void **state) {
  (void)state;
  const char *text =
      "3/10 copying files\n" /* 19 */
      "50%\n"                /* 23 */
      "7\n"                  /* 25 */
      "2.5e1 items\r\n"      /* 38 */
      "\nx\n5/\n5/x\n-1\n5%x\ninf\n1e999\n1 2/3\n0x10\n"
      "0/0 done\n"; /* 81 */
  result r = scan(NULL, text);
  assert_int_equal(r.n, 6);
  assert_update(&r.u[0], 3, 10, "copying files", 19);
  assert_update(&r.u[1], 50, 100, "", 23);
  assert_update(&r.u[2], 7, 0, "", 25);
  assert_update(&r.u[3], 25, 0, "items", 38);
  assert_update(&r.u[4], 1, 0, "2/3", 71); /* DONE, then the message */
  assert_update(&r.u[5], 0, 0, "done", strlen(text));
  assert_int_equal(r.rejected, 9);
  /* A too long line is counted once, however it was split. */
  char *big = malloc(PROGRESS_LINE_MAX + 16);
  assert_non_null(big);
  memset(big, '1', PROGRESS_LINE_MAX + 10);
  snprintf(big + PROGRESS_LINE_MAX + 10, 6, "\n4/5\n");
  size_t cuts[] = {100, PROGRESS_LINE_MAX + 12}; /* in the long line; between "4" and "/5" */
  r = scan_cut(NULL, big, strlen(big), cuts, 1);
  assert_int_equal(r.n, 1);
  assert_update(&r.u[0], 4, 5, "", strlen(big));
  assert_int_equal(r.rejected, 1);
  r = scan_cut(NULL, big, strlen(big), cuts + 1, 1);
  assert_int_equal(r.rejected, 1);
  free(big);
}

/* Messages are cut to PROGRESS_MESSAGE_MAX bytes, never inside a UTF-8 sequence, and
 * bytes that are not UTF-8 (NUL included) become '?'. */
static void test_messages(void **state) {
  (void)state;
  char line[1024];
  int n = snprintf(line, sizeof line, "1/2 ");
  for (int i = 0; i < 200; i++) n += snprintf(line + n, sizeof line - (size_t)n, "\xc3\xa9");
  line[n++] = '\n';
  result r = scan_cut(NULL, line, (size_t)n, NULL, 0);
  assert_int_equal(r.n, 1);
  assert_int_equal(strlen(r.u[0].message), PROGRESS_MESSAGE_MAX);
  assert_true(utf8_valid(r.u[0].message, PROGRESS_MESSAGE_MAX));
  static const char bad[] =
      "1/2 a\0b\xff"
      "c\n";
  r = scan_cut(NULL, bad, sizeof bad - 1, NULL, 0);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.u[0].message, "a?b?c");
  /* A pattern sees the whole line, NUL bytes too (where "." matches none, as glibc's
   * POSIX syntax says; TRE's, on Windows, matches them: docs/windows.md). */
  progress_pattern *p = compile(EXAMPLE);
  static const char out[] = "PROGRESS 1/2 x\0y\n";
  r = scan_cut(p, out, sizeof out - 1, NULL, 0);
#ifdef _WIN32
  assert_int_equal(r.n, 1);
#else
  assert_int_equal(r.n, 0);
#endif
  progress_pattern_free(p);
  p = compile("^PROGRESS (\\d+)/(\\d+) ([^z]*)$");
  r = scan_cut(p, out, sizeof out - 1, NULL, 0);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.u[0].message, "x?y");
  progress_pattern_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_example_pattern), cmocka_unit_test(test_any_split),
      cmocka_unit_test(test_long_line),       cmocka_unit_test(test_numbered_groups),
      cmocka_unit_test(test_percent),         cmocka_unit_test(test_prefix_and_syntax),
      cmocka_unit_test(test_bad_patterns),    cmocka_unit_test(test_fd_format),
      cmocka_unit_test(test_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
