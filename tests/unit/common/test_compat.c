/* Unit tests for common/compat: the helpers that stand in for what one C library has and
 * another lacks. On Linux they check that the helpers are glibc's calls; under Wine, the
 * same cases check compat's own code (docs/windows.md). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/event.h>
#include <event2/util.h>

#include "compat.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_fnmatch(void **state) {
  (void)state;
  static const struct {
    const char *glob, *s;
    int match;
  } cases[] = {
      {"*", "", 1},
      {"*", "anything at all", 1},
      {"", "", 1},
      {"", "a", 0},
      {"alice", "alice", 1},
      {"alice", "alicia", 0},
      {"a*", "alice", 1},
      {"*e", "alice", 1},
      {"*e", "alicia", 0},
      {"a*c*e", "abcde", 1},
      {"a*c*e", "abcdf", 0},
      {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaa", 0},
      {"a?c", "abc", 1},
      {"a?c", "ac", 0},
      {"[abc]x", "bx", 1},
      {"[abc]x", "dx", 0},
      {"[!abc]x", "dx", 1},
      {"[!abc]x", "ax", 0},
      {"[^abc]x", "dx", 1},
      {"[a-c]", "b", 1},
      {"[a-c]", "d", 0},
      {"[]a]", "]", 1},
      {"[!]a]", "]", 0},
      {"[a-]", "-", 1},
      {"\\*", "*", 1},
      {"\\*", "a", 0},
      {"a\\?", "a?", 1},
      {"[", "[", 1},
      {"a[b", "a[b", 1},
      {"CN=*,O=Example", "CN=svc-1,O=Example", 1},
      {"spiffe://example.org/*", "spiffe://example.org/ns/prod/sa/runner", 1},
      {"spiffe://example.org/*", "spiffe://evil.org/example.org/x", 0},
      /* Invalid: a lone trailing backslash matches nothing (not even itself). */
      {"a\\", "a\\", 0},
      {"a\\\\", "a\\", 1},
#ifdef _WIN32
      /* Classes are glibc's; compat's own code fails closed on them. */
      {"[[:alpha:]]", "a", 0},
#endif
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++)
    if (compat_fnmatch(cases[i].glob, cases[i].s) != cases[i].match)
      fail_msg("case %zu: \"%s\" against \"%s\": want %d", i, cases[i].glob, cases[i].s,
               cases[i].match);
}

static void test_memmem_memrchr(void **state) {
  (void)state;
  static const char hay[] = "abc\0abcab\nxyz";
  size_t n = sizeof hay - 1;
  assert_ptr_equal(compat_memmem(hay, n, "ab", 2), hay);
  assert_ptr_equal(compat_memmem(hay, n, "cab", 3), hay + 6);
  assert_ptr_equal(compat_memmem(hay, n, "\0a", 2), hay + 3);
  assert_ptr_equal(compat_memmem(hay, n, "xyz", 3), hay + 10);
  assert_null(compat_memmem(hay, n, "xyzz", 4));
  assert_null(compat_memmem(hay, 2, "abc", 3));
  assert_ptr_equal(compat_memmem(hay, n, "", 0), hay);
  assert_ptr_equal(compat_memrchr(hay, 'a', n), hay + 7);
  assert_ptr_equal(compat_memrchr(hay, '\0', n), hay + 3);
  assert_ptr_equal(compat_memrchr(hay, 'z', n), hay + 12);
  assert_null(compat_memrchr(hay, 'q', n));
  assert_null(compat_memrchr(hay, 'a', 0));
}

static void test_memstream(void **state) {
  (void)state;
  compat_memstream m;
  FILE *f = compat_memstream_open(&m);
  assert_non_null(f);
  for (int i = 0; i < 10000; i++) fprintf(f, "%d\n", i);
  fputc('\0', f); /* binary data too */
  fputs("end", f);
  assert_int_equal(compat_memstream_close(&m), 0);
  size_t want = 0;
  for (int i = 0; i < 10000; i++) want += (size_t)snprintf(NULL, 0, "%d\n", i);
  assert_int_equal(m.len, want + 4);
  assert_memory_equal(m.buf, "0\n1\n2\n", 6);
  assert_memory_equal(m.buf + want, "\0end", 5); /* NUL-terminated after len */
  free(m.buf);
  /* An empty stream is "" of length 0. */
  assert_non_null(compat_memstream_open(&m));
  assert_int_equal(compat_memstream_close(&m), 0);
  assert_int_equal(m.len, 0);
  assert_string_equal(m.buf, "");
  free(m.buf);
}

/* A timeout is ms plus at most one tick of a coarse clock (Windows' is the coarsest); 0 is
 * 0, the loop's next pass. */
static void test_timeout_value(void **state) {
  (void)state;
  struct timeval zero = compat_timeout_ms(0);
  assert_true(zero.tv_sec == 0 && zero.tv_usec == 0);
  static const uint64_t ms[] = {1, 1999, 86400000};
  for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
    struct timeval tv = compat_timeout_ms(ms[i]);
    uint64_t us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    assert_true(tv.tv_usec >= 0 && tv.tv_usec < 1000000);
    assert_true(us >= ms[i] * 1000u);
    assert_true(us <= ms[i] * 1000u + 20000u);
  }
}

struct fired {
  struct evutil_monotonic_timer *clock;
  struct timeval at;
};

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct fired *f = arg;
  assert_int_equal(evutil_gettime_monotonic(f->clock, &f->at), 0);
}

/* Keeps the CPU busy for us microseconds of `clock`. */
static void busy(struct evutil_monotonic_timer *clock, long us) {
  struct timeval start, now, d;
  assert_int_equal(evutil_gettime_monotonic(clock, &start), 0);
  do {
    assert_int_equal(evutil_gettime_monotonic(clock, &now), 0);
    evutil_timersub(&now, &start, &d);
  } while (d.tv_sec == 0 && d.tv_usec < us);
}

/* On a loop with libevent's default clock (coarse on Linux: up to a tick behind), a timer
 * added with compat_timeout_ms(ms) never fires before ms have passed on a precise clock,
 * even when the clock ticks between the add and the loop's wait (the loop busy 2.5 ms
 * there, as the rest of a pass can keep it). Without the tick, a 3 ms timer fires early
 * in most of these tries on Linux. */
static void test_timeout_never_early(void **state) {
  (void)state;
  struct event_base *base = event_base_new();
  assert_non_null(base);
  struct fired f = {evutil_monotonic_timer_new(), {0, 0}};
  assert_non_null(f.clock);
  assert_int_equal(evutil_configure_monotonic_time(f.clock, EV_MONOT_PRECISE), 0);
  struct event *ev = evtimer_new(base, on_timer, &f);
  assert_non_null(ev);
  for (int i = 0; i < 25; i++) {
    struct timeval start, tv = compat_timeout_ms(3), took;
    assert_int_equal(evutil_gettime_monotonic(f.clock, &start), 0);
    assert_int_equal(evtimer_add(ev, &tv), 0);
    busy(f.clock, 2500);
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    evutil_timersub(&f.at, &start, &took);
    assert_true(took.tv_sec > 0 || took.tv_usec >= 3000);
  }
  event_free(ev);
  evutil_monotonic_timer_free(f.clock);
  event_base_free(base);
}

static void test_strsignal(void **state) {
  (void)state;
  /* Linux's numbers on every system: the API's. */
  assert_string_equal(compat_strsignal(9), "Killed");
  assert_string_equal(compat_strsignal(15), "Terminated");
  assert_string_equal(compat_strsignal(11), "Segmentation fault");
  assert_string_equal(compat_strsignal(6), "Aborted");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fnmatch),
      cmocka_unit_test(test_memmem_memrchr),
      cmocka_unit_test(test_memstream),
      cmocka_unit_test(test_timeout_value),
      cmocka_unit_test(test_timeout_never_early),
      cmocka_unit_test(test_strsignal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
