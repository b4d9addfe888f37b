/* Unit tests for how the prismq CLI shows a run's progress (client/cli/cli-progress.c):
 * the status line for a terminal (percentage and bar, or a spinner and the count when
 * the total is unknown; elapsed time, rate, the message cut to fit whole characters),
 * fitted to the terminal's width and to the buffer; text from the server made harmless;
 * the plain lines; and the display's plain mode on a file: the last report left at the
 * end, once, on a line of its own, and output passed through byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "testcapture.h"
#include "utf8.h"

typedef Prismq__Runner__V1__Progress Progress;

static Progress mk(double done, double total, const char *message) {
  Progress p = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  p.done = done;
  p.total = total;
  p.message = (char *)message;
  return p;
}

static const char *render(const Progress *p, uint64_t elapsed_ms, double rate, unsigned width) {
  static char buf[CLI_PROGRESS_LINE_MAX];
  size_t n = cli_progress_render(buf, sizeof buf, p, elapsed_ms, rate, width);
  assert_int_equal(n, strlen(buf));
  return buf;
}

/* Columns as the renderer counts them: two for a character beyond ASCII. */
static size_t cols(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xc0) != 0x80) n += (unsigned char)*s < 0x80 ? 1 : 2;
  return n;
}

/* A known total: the whole percentage (rounded down), a bar filled as far, DONE/TOTAL,
 * the elapsed time, the rate, the message. */
static void test_known_total(void **state) {
  (void)state;
  Progress p = mk(3, 10, "copying files");
  assert_string_equal(render(&p, 7000, 0.5, 80),
                      " 30% [#########.....................] 3/10 0:07 0.5/s copying files");
  p = mk(10, 10, "done");
  assert_string_equal(render(&p, 61000, 12.34, 80),
                      "100% [##############################] 10/10 1:01 12/s done");
  p = mk(999, 1000, ""); /* 99.9 %: not yet 100 */
  assert_string_equal(render(&p, 3723000, -1, 80),
                      " 99% [#############################.] 999/1000 1:02:03");
  p = mk(2.5, 100, "x"); /* a percentage with a fraction */
  assert_string_equal(render(&p, 0, -1, 80),
                      "  2% [..............................] 2.5/100 0:00 x");
  p = mk(12, 10, ""); /* beyond the total: 100 % */
  assert_non_null(strstr(render(&p, 0, -1, 80), "100% [###"));
  p = mk(-4, 10, "");
  assert_non_null(strstr(render(&p, 0, -1, 80), "  0% [..."));
  p = mk(NAN, 10, "");
  assert_non_null(strstr(render(&p, 0, -1, 80), "] ?/10 0:00"));
}

/* Total 0: no percentage, no bar; a spinner that turns with the time, and the count. */
static void test_unknown_total(void **state) {
  (void)state;
  Progress p = mk(42, 0, "files");
  assert_string_equal(render(&p, 0, -1, 80), "| 42 0:00 files");
  assert_string_equal(render(&p, 250, -1, 80), "/ 42 0:00 files");
  assert_string_equal(render(&p, 1300, 3.25, 80), "/ 42 0:01 3.2/s files");
  assert_string_equal(render(&p, 750, -1, 80), "\\ 42 0:00 files");
  p = mk(0, 0, "");
  assert_string_equal(render(&p, 1500, -1, 80), "- 0 0:01");
}

/* The width: never the last column; the bar gives the message room down to 10 columns,
 * then the message is cut ("...") until it goes; where 10 columns of bar no longer fit,
 * the bar goes and the message has what is left; a terminal too narrow for the rest
 * gets the line's beginning. 0 means 80. */
static void test_width(void **state) {
  (void)state;
  Progress p = mk(45, 100, "a long message about what the run is doing right now");
  assert_string_equal(render(&p, 5000, -1, 100),
                      " 45% [############...............] 45/100 0:05 a long message about what "
                      "the run is doing right now");
  const char *got = render(&p, 5000, -1, 0);
  assert_int_equal(strlen(got), 79);
  assert_string_equal(got,
                      " 45% [####......] 45/100 0:05 a long message about what the run is doing "
                      "rig...");
  assert_string_equal(render(&p, 5000, -1, 60),
                      " 45% [####......] 45/100 0:05 a long message about what...");
  assert_string_equal(render(&p, 5000, -1, 40), " 45% [####......] 45/100 0:05 a long...");
  assert_string_equal(render(&p, 5000, -1, 36), " 45% [####......] 45/100 0:05 a...");
  assert_string_equal(render(&p, 5000, -1, 33), " 45% [####......] 45/100 0:05");
  assert_string_equal(render(&p, 5000, -1, 30), " 45% [####......] 45/100 0:05");
  assert_string_equal(render(&p, 5000, -1, 28), " 45% 45/100 0:05 a long...");
  assert_string_equal(render(&p, 5000, -1, 8), " 45% 45");
  assert_string_equal(render(&p, 5000, -1, 1), "");
  for (unsigned w = 1; w < 120; w++) {
    got = render(&p, 5000, 7.5, w);
    if (strlen(got) > w - 1) fail_msg("width %u: %zu columns: \"%s\"", w, strlen(got), got);
  }
}

/* The message: control characters and bytes that are not UTF-8 show as '?', so that
 * the server cannot drive the terminal; a character beyond ASCII counts two columns
 * and is never cut in half, by the width or by the buffer. */
static void test_message_is_harmless(void **state) {
  (void)state;
  Progress p = mk(1, 0, "a\x1b[2Jb\tc\xff\x7f\xc3");
  assert_string_equal(render(&p, 0, -1, 80), "| 1 0:00 a?[2Jb?c???");
  p = mk(1, 0, "h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac");
  assert_string_equal(render(&p, 0, -1, 80), "| 1 0:00 h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac");
  char many[400] = "";
  for (int i = 0; i < 100; i++) strcat(many, "\xc3\xa9");
  p = mk(1, 0, many);
  for (unsigned w = 14; w < 100; w++) {
    const char *got = render(&p, 0, -1, w);
    assert_true(utf8_valid(got, strlen(got)));
    if (cols(got) > w - 1) fail_msg("width %u: %zu columns", w, cols(got));
    assert_non_null(strstr(got, "..."));
  }
  /* A small buffer: whole characters within it, NUL-terminated. */
  char small[16];
  memset(small, 'Z', sizeof small);
  size_t n = cli_progress_render(small, sizeof small, &p, 0, -1, 200);
  assert_true(n < sizeof small);
  assert_int_equal(strlen(small), n);
  assert_true(utf8_valid(small, n));
}

static const char *plain(const Progress *p) {
  static char buf[CLI_PROGRESS_LINE_MAX];
  size_t n = cli_progress_plain(buf, sizeof buf, p);
  assert_int_equal(n, strlen(buf));
  return buf;
}

/* The plain line: the count, the percentage when the total is known, the whole
 * message, made harmless; cut only by the buffer, between characters. */
static void test_plain(void **state) {
  (void)state;
  Progress p = mk(3, 10, "copying files");
  assert_string_equal(plain(&p), "progress 3/10 30% copying files");
  p = mk(42, 0, "files");
  assert_string_equal(plain(&p), "progress 42 files");
  p = mk(1, 3, "");
  assert_string_equal(plain(&p), "progress 1/3 33%");
  p = mk(1, 0, "x\ny\x1b");
  assert_string_equal(plain(&p), "progress 1 x?y?");
  char longer[600];
  memset(longer, 'm', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  p = mk(1, 2, longer);
  assert_int_equal(strlen(plain(&p)), strlen("progress 1/2 50% ") + sizeof longer - 1);
  char small[12];
  p = mk(1, 2, "\xc3\xa9\xc3\xa9\xc3\xa9");
  assert_int_equal(cli_progress_plain(small, sizeof small, &p), 11);
  assert_string_equal(small, "progress 1/");
}

/* The display where stderr is a file: the last report shown once, as a plain line of
 * its own after the run's stderr line that was not ended; the run's output byte for
 * byte; nothing at all without a report. */
static void test_display_plain(void **state) {
  (void)state;
  capture_start();
  cli_progress *p = cli_progress_new(CLI_PROGRESS_PLAIN, 0);
  assert_int_equal(cli_progress_write(p, STDOUT_FILENO, (const uint8_t *)"out\n", 4), 0);
  assert_int_equal(cli_progress_write(p, STDERR_FILENO, (const uint8_t *)"err, no newline", 15), 0);
  Progress r = mk(1, 4, "one");
  cli_progress_update(p, &r);
  cli_progress_update(p, &r); /* the same again: nothing new */
  cli_progress_end(p);
  capture_stop();
  assert_string_equal(cap.out, "out\n");
  assert_string_equal(cap.err, "err, no newline\nprogress 1/4 25% one\n");

  capture_start();
  p = cli_progress_new(CLI_PROGRESS_PLAIN, 0);
  assert_int_equal(cli_progress_write(p, STDERR_FILENO, (const uint8_t *)"e\n", 2), 0);
  cli_progress_end(p);
  assert_int_equal(cli_progress_write(NULL, STDOUT_FILENO, (const uint8_t *)"o", 1), 0);
  cli_progress_end(NULL);
  capture_stop();
  assert_string_equal(cap.out, "o");
  assert_string_equal(cap.err, "e\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_total), cmocka_unit_test(test_unknown_total),
      cmocka_unit_test(test_width),       cmocka_unit_test(test_message_is_harmless),
      cmocka_unit_test(test_plain),       cmocka_unit_test(test_display_plain),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
