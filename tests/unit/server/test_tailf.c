/* Unit tests for server/tailf: files of a temporary directory followed as they grow, on a
 * real event loop: content there before the add (from the start, from a middle offset,
 * from past the end), files that appear later (created, renamed in), many small appends,
 * a large file in bounded rounds without starving another file or growing memory, two
 * files at once, tailf_poll without the loop (and from another file's callback), freeing
 * a file from another's callback, an inotify queue overflow, truncation, a file replaced
 * under its name, files that must not be read, and bad arguments. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "log.h"
#include "tailf.h"
#include "../testloop.h"

typedef struct fixture {
  char dir[64];
  struct event_base *base;
  struct testloop tl;
  tailf *t;
} fixture;

/* Loop iterations run by RUN_UNTIL, and whether one is under way: a callback from the loop
 * checks its bytes per iteration against TAILF_ROUND_MAX. */
static unsigned long g_iter;
static int g_in_loop;

/* Files follow() has added and unfollow() not yet freed. */
static int g_following;

static int setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  assert_non_null(fx);
  strcpy(fx->dir, "/tmp/tailf-test-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  fx->base = testloop_base_new();
  assert_non_null(fx->base);
  testloop_init(&fx->tl, fx->base);
  assert_int_equal(tailf_new(&fx->t, fx->base, fx->dir), 0);
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture *fx = *state;
  if (g_following == 0) {
    tailf_free(fx->t);
    testloop_fini(&fx->tl);
    event_base_free(fx->base);
  }
  /* Else the test failed with files still followed, perhaps from inside a callback:
   * freeing them, or the tailf, would abort before cmocka reports the failure. Leaked. */
  g_following = 0;
  DIR *d = opendir(fx->dir);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (unlinkat(dirfd(d), e->d_name, 0) != 0)
      assert_int_equal(unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR), 0);
  }
  closedir(d);
  assert_int_equal(rmdir(fx->dir), 0);
  free(fx);
  return 0;
}

/* Runs the loop one iteration at a time until `cond` holds, failing the test after
 * TESTLOOP_GUARD_SECONDS. */
#define RUN_UNTIL(fx, cond)                                                          \
  do {                                                                               \
    testloop_arm(&(fx)->tl);                                                         \
    while (!(cond)) {                                                                \
      if ((fx)->tl.timed_out)                                                        \
        fail_msg("still waiting after %d s for: %s", TESTLOOP_GUARD_SECONDS, #cond); \
      g_iter++;                                                                      \
      g_in_loop = 1;                                                                 \
      assert_true(event_base_loop((fx)->base, EVLOOP_ONCE) >= 0);                    \
      g_in_loop = 0;                                                                 \
    }                                                                                \
    evtimer_del((fx)->tl.guard);                                                     \
  } while (0)

/* Runs whatever is due, a few iterations without blocking: anything a write made due is
 * then done (inotify queues its event before write(2) returns). */
static void settle(fixture *fx) {
  for (int i = 0; i < 8; i++) {
    g_iter++;
    g_in_loop = 1;
    assert_true(event_base_loop(fx->base, EVLOOP_NONBLOCK) >= 0);
    g_in_loop = 0;
  }
}

static const char *path_of(const fixture *fx, const char *name) {
  static char p[2][PATH_MAX];
  static int i;
  i ^= 1;
  snprintf(p[i], sizeof p[i], "%s/%s", fx->dir, name);
  return p[i];
}

static void write_all(int fd, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len) {
    ssize_t n = write(fd, p, len);
    assert_true(n > 0);
    p += n;
    len -= (size_t)n;
  }
}

/* Appends to `name` (created if missing). */
static void append(const fixture *fx, const char *name, const void *data, size_t len) {
  int fd = open(path_of(fx, name), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  write_all(fd, data, len);
  assert_int_equal(close(fd), 0);
}

static void append_str(const fixture *fx, const char *name, const char *s) {
  append(fx, name, s, strlen(s));
}

/* The byte at `off` of the generated files. */
static uint8_t pattern(uint64_t off) { return (uint8_t)((off * 2654435761u) >> 13); }

/* Heap in use, mmapped blocks included (glibc's counters: under valgrind, whose allocator
 * bypasses them, this stays 0). */
static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

typedef struct sink sink;

/* What one followed file delivered, and checks on every call. */
struct sink {
  tailf_file *f;
  uint64_t start; /* the offset given to tailf_add */
  int by_pattern; /* check the bytes against pattern() instead of keeping them */
  uint8_t *data;  /* the bytes delivered, unless by_pattern */
  size_t len, cap;
  size_t calls;
  unsigned long iter; /* the last loop iteration that delivered, and its bytes */
  size_t round;
  size_t rounds; /* iterations with a delivery */
  size_t heap_max;
  int freed; /* tailf_file_free'd: must not hear from it again */
  void (*hook)(sink *s, const uint8_t *data, size_t len);
  sink *other; /* for hooks */
  ssize_t polled;
};

static void sink_fn(tailf_file *f, const uint8_t *data, size_t len, void *arg) {
  sink *s = arg;
  assert_false(s->freed);
  assert_ptr_equal(f, s->f);
  assert_true(len > 0);
  /* In order, each byte once: the offset says so, and already counts this call. */
  uint64_t at = s->start + s->len;
  assert_int_equal(tailf_offset(f), at + len);
  if (g_in_loop) {
    if (s->iter != g_iter) {
      s->iter = g_iter;
      s->round = 0;
      s->rounds++;
    }
    s->round += len;
    assert_true(s->round <= TAILF_ROUND_MAX);
  }
  if (s->by_pattern) {
    for (size_t i = 0; i < len; i++)
      if (data[i] != pattern(at + i)) fail_msg("byte %llu differs", (unsigned long long)(at + i));
    size_t h = heap_in_use();
    if (h > s->heap_max) s->heap_max = h;
  } else {
    if (s->len + len > s->cap) {
      s->cap = (s->len + len) * 2;
      s->data = realloc(s->data, s->cap);
      assert_non_null(s->data);
    }
    memcpy(s->data + s->len, data, len);
  }
  s->len += len;
  s->calls++;
  if (s->hook) s->hook(s, data, len);
}

static void follow(fixture *fx, sink *s, const char *name, uint64_t offset) {
  assert_int_equal(tailf_add(&s->f, fx->t, name, offset, sink_fn, s), 0);
  s->start = offset;
  g_following++;
}

static void unfollow(sink *s) {
  tailf_file_free(s->f);
  g_following--;
  s->f = NULL;
  s->freed = 1;
  free(s->data);
  s->data = NULL;
}

static void expect_str(const sink *s, const char *want) {
  assert_int_equal(s->len, strlen(want));
  if (s->len) assert_memory_equal(s->data, want, s->len);
}

/* ---- content there before the add ------------------------------------------------- */

static void test_existing_from_start(void **state) {
  fixture *fx = *state;
  append_str(fx, "a.out", "hello, world\n");
  /* The write's events gone first: the add alone must find what is there. */
  settle(fx);
  sink s = {0};
  follow(fx, &s, "a.out", 0);
  /* Never from inside the add. */
  assert_int_equal(s.calls, 0);
  assert_int_equal(tailf_offset(s.f), 0);
  RUN_UNTIL(fx, s.len == 13);
  expect_str(&s, "hello, world\n");
  assert_int_equal(tailf_offset(s.f), 13);

  append_str(fx, "a.out", "more\n");
  RUN_UNTIL(fx, s.len == 18);
  expect_str(&s, "hello, world\nmore\n");
  settle(fx);
  assert_int_equal(s.len, 18);
  unfollow(&s);
}

static void test_existing_mid_offset(void **state) {
  fixture *fx = *state;
  append_str(fx, "a.out", "0123456789");
  append_str(fx, "b.out", "0123456789");
  append_str(fx, "c.out", "0123456789");
  settle(fx);
  sink a = {0}, b = {0}, c = {0};
  follow(fx, &a, "a.out", 4);  /* in the middle */
  follow(fx, &b, "b.out", 10); /* at the end */
  follow(fx, &c, "c.out", 15); /* past the end: waits for the file to get there */
  RUN_UNTIL(fx, a.len == 6);
  settle(fx);
  expect_str(&a, "456789");
  assert_int_equal(b.calls + c.calls, 0);
  assert_int_equal(tailf_offset(c.f), 15);

  append_str(fx, "b.out", "abcdefghij");
  append_str(fx, "c.out", "abcdefghij");
  RUN_UNTIL(fx, b.len == 10 && c.len == 5);
  expect_str(&b, "abcdefghij");
  expect_str(&c, "fghij");
  assert_int_equal(tailf_offset(c.f), 20);
  settle(fx);
  assert_int_equal(a.len + b.len + c.len, 21);
  unfollow(&a);
  unfollow(&b);
  unfollow(&c);
}

/* ---- files that appear later ------------------------------------------------------ */

static void test_created_after_add(void **state) {
  fixture *fx = *state;
  sink n = {0}, m = {0};
  follow(fx, &n, "new.out", 0);
  follow(fx, &m, "moved.out", 0);
  settle(fx);
  assert_int_equal(n.calls + m.calls, 0);

  /* Created while followed, written in two parts before it is closed. */
  int fd = open(path_of(fx, "new.out"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  write_all(fd, "created", 7);
  RUN_UNTIL(fx, n.len == 7);
  write_all(fd, "+more", 5);
  assert_int_equal(close(fd), 0);
  RUN_UNTIL(fx, n.len == 12);
  expect_str(&n, "created+more");

  /* Written under another name, then renamed to the followed one. */
  append_str(fx, "moved.tmp", "renamed in");
  settle(fx);
  assert_int_equal(m.calls, 0);
  assert_int_equal(rename(path_of(fx, "moved.tmp"), path_of(fx, "moved.out")), 0);
  RUN_UNTIL(fx, m.len == 10);
  expect_str(&m, "renamed in");
  settle(fx);
  assert_int_equal(n.len + m.len, 22);
  unfollow(&n);
  unfollow(&m);
}

/* ---- many small appends ----------------------------------------------------------- */

static void test_many_small_appends(void **state) {
  fixture *fx = *state;
  sink s = {0};
  follow(fx, &s, "small.out", 0);
  int fd = open(path_of(fx, "small.out"), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  enum { WRITES = 3000 };
  uint8_t *want = malloc(WRITES * 64);
  assert_non_null(want);
  size_t total = 0;
  unsigned seed = 7;
  for (int i = 0; i < WRITES; i++) {
    size_t n = 1 + (size_t)rand_r(&seed) % 64;
    for (size_t k = 0; k < n; k++) want[total + k] = (uint8_t)rand_r(&seed);
    write_all(fd, want + total, n);
    total += n;
    /* Let the loop read now and then, so that reads and writes interleave. */
    if (i % 97 == 0) settle(fx);
  }
  assert_int_equal(close(fd), 0);
  RUN_UNTIL(fx, s.len == total);
  assert_memory_equal(s.data, want, total);
  assert_true(s.calls > 1);
  settle(fx);
  assert_int_equal(s.len, total);
  free(want);
  unfollow(&s);
}

/* ---- a large file ----------------------------------------------------------------- */

/* 5 MiB there before the add: delivered whole, each iteration at most TAILF_ROUND_MAX of
 * it (sink_fn), memory not growing with it, and a small file written meanwhile served
 * long before the large one is done. */
static void test_large_file(void **state) {
  fixture *fx = *state;
  const size_t total = 5u << 20;
  {
    int fd = open(path_of(fx, "big.out"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    static uint8_t chunk[64 << 10];
    for (size_t off = 0; off < total; off += sizeof chunk) {
      for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = pattern(off + i);
      write_all(fd, chunk, sizeof chunk);
    }
    assert_int_equal(close(fd), 0);
  }
  settle(fx);
  sink small = {0};
  follow(fx, &small, "small.out", 0);
  sink big = {.by_pattern = 1};
  size_t heap0 = heap_in_use();
  follow(fx, &big, "big.out", 0);
  RUN_UNTIL(fx, big.len > 0);
  assert_true(big.len <= TAILF_ROUND_MAX);
  append_str(fx, "small.out", "ping");
  RUN_UNTIL(fx, small.len == 4);
  expect_str(&small, "ping");
  assert_true(big.len < total / 2);

  RUN_UNTIL(fx, big.len == total);
  assert_int_equal(tailf_offset(big.f), total);
  assert_true(big.rounds >= total / TAILF_ROUND_MAX);
  assert_true(big.heap_max < heap0 + (256u << 10));
  settle(fx);
  assert_int_equal(big.len, total);
  unfollow(&big);
  unfollow(&small);
}

/* ---- two files at once ------------------------------------------------------------ */

static void test_two_files_interleaved(void **state) {
  fixture *fx = *state;
  sink a = {0}, b = {0};
  follow(fx, &a, "a.out", 0);
  follow(fx, &b, "b.out", 0);
  int fa = open(path_of(fx, "a.out"), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  int fb = open(path_of(fx, "b.out"), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fa >= 0 && fb >= 0);
  char want_a[8192] = "", want_b[8192] = "";
  size_t la = 0, lb = 0;
  for (int i = 0; i < 500; i++) {
    char line[32];
    int n = snprintf(line, sizeof line, "a%d|", i);
    write_all(fa, line, (size_t)n);
    memcpy(want_a + la, line, (size_t)n);
    la += (size_t)n;
    n = snprintf(line, sizeof line, "b%d;", i * 7);
    write_all(fb, line, (size_t)n);
    memcpy(want_b + lb, line, (size_t)n);
    lb += (size_t)n;
    if (i % 50 == 0) settle(fx);
  }
  assert_int_equal(close(fa), 0);
  assert_int_equal(close(fb), 0);
  RUN_UNTIL(fx, a.len == la && b.len == lb);
  assert_memory_equal(a.data, want_a, la);
  assert_memory_equal(b.data, want_b, lb);
  settle(fx);
  assert_int_equal(a.len + b.len, la + lb);
  unfollow(&a);
  unfollow(&b);
}

/* ---- tailf_poll ------------------------------------------------------------------- */

static void test_poll_without_loop(void **state) {
  fixture *fx = *state;
  /* More than one round's worth: a poll takes all there is. */
  const size_t first = TAILF_ROUND_MAX + 1000;
  uint8_t *buf = malloc(first);
  assert_non_null(buf);
  for (size_t i = 0; i < first; i++) buf[i] = pattern(i);
  append(fx, "p.out", buf, first);
  free(buf);
  sink s = {.by_pattern = 1};
  follow(fx, &s, "p.out", 0);
  assert_int_equal(tailf_poll(s.f), (ssize_t)first);
  assert_int_equal(s.len, first);
  assert_int_equal(tailf_poll(s.f), 0);

  /* The writer keeps its descriptor; the file is removed: what it writes still comes. */
  int fd = open(path_of(fx, "p.out"), O_WRONLY | O_APPEND | O_CLOEXEC);
  assert_true(fd >= 0);
  uint8_t more[10];
  for (size_t i = 0; i < sizeof more; i++) more[i] = pattern(first + i);
  write_all(fd, more, sizeof more);
  assert_int_equal(tailf_poll(s.f), 10);
  assert_int_equal(unlink(path_of(fx, "p.out")), 0);
  for (size_t i = 0; i < sizeof more; i++) more[i] = pattern(first + 10 + i);
  write_all(fd, more, sizeof more);
  assert_int_equal(close(fd), 0);
  assert_int_equal(tailf_poll(s.f), 10);
  assert_int_equal(tailf_poll(s.f), 0);
  assert_int_equal(tailf_offset(s.f), first + 20);
  /* The loop, woken by all of the above, finds nothing left. */
  settle(fx);
  assert_int_equal(s.len, first + 20);

  /* A file not there yet. */
  sink n = {0};
  follow(fx, &n, "absent.out", 0);
  assert_int_equal(tailf_poll(n.f), -ENOENT);
  append_str(fx, "absent.out", "x");
  assert_int_equal(tailf_poll(n.f), 1);
  expect_str(&n, "x");
  unfollow(&n);
  unfollow(&s);
}

/* a's callback polls b: b's bytes come inside it, and a's bytes stay intact meanwhile
 * (its buffer is not reused). Polling a from its own callback is refused. */
static void poll_other_hook(sink *s, const uint8_t *data, size_t len) {
  if (s->polled) return;
  uint8_t copy[64];
  assert_true(len <= sizeof copy);
  memcpy(copy, data, len);
  assert_int_equal(tailf_poll(s->f), -EBUSY);
  s->polled = tailf_poll(s->other->f);
  assert_memory_equal(data, copy, len);
}

static void test_poll_from_callback(void **state) {
  fixture *fx = *state;
  append_str(fx, "a.out", "AAAAAAAA");
  append_str(fx, "b.out", "bbbbbbbbbbbb");
  sink a = {0}, b = {0};
  a.hook = poll_other_hook;
  a.other = &b;
  follow(fx, &a, "a.out", 0);
  follow(fx, &b, "b.out", 0);
  assert_int_equal(tailf_poll(a.f), 8);
  assert_int_equal(a.polled, 12);
  expect_str(&a, "AAAAAAAA");
  expect_str(&b, "bbbbbbbbbbbb");
  settle(fx);
  assert_int_equal(a.len + b.len, 20);
  unfollow(&a);
  unfollow(&b);
}

/* ---- freeing from callbacks ------------------------------------------------------- */

/* Frees the other file, once, from inside this one's callback. */
static void free_other_hook(sink *s, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (s->other && !s->other->freed) unfollow(s->other);
}

enum { MANY = 20 };
static sink g_many[MANY];
static sink *g_many_first;

/* The first of g_many called frees all the others. */
static void free_all_hook(sink *s, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (g_many_first) return;
  g_many_first = s;
  for (int i = 0; i < MANY; i++)
    if (&g_many[i] != s) unfollow(&g_many[i]);
}

static void test_free_from_other_callback(void **state) {
  fixture *fx = *state;
  /* Both due in the same iteration: whichever comes first frees the other, whose read is
   * already scheduled. */
  append_str(fx, "a.out", "aaaa");
  append_str(fx, "b.out", "bbbb");
  sink a = {.hook = free_other_hook}, b = {.hook = free_other_hook};
  a.other = &b;
  b.other = &a;
  follow(fx, &a, "a.out", 0);
  follow(fx, &b, "b.out", 0);
  RUN_UNTIL(fx, a.calls + b.calls > 0);
  settle(fx);
  assert_int_equal(a.calls + b.calls, 1);
  sink *alive = a.calls ? &a : &b, *gone = a.calls ? &b : &a;
  assert_true(gone->freed);
  assert_false(alive->freed);
  /* The freed file's later writes reach nobody. */
  append_str(fx, a.calls ? "b.out" : "a.out", "more");
  append_str(fx, a.calls ? "a.out" : "b.out", "more");
  RUN_UNTIL(fx, alive->len == 8);
  settle(fx);
  assert_int_equal(alive->calls, 2);
  alive->other = NULL;
  unfollow(alive);

  /* Many files with data due in the same iteration, and the first to be called frees
   * all the others: none of them hears anything. */
  sink *m = g_many;
  memset(g_many, 0, sizeof g_many);
  for (int i = 0; i < MANY; i++) {
    char name[16];
    snprintf(name, sizeof name, "m%d.out", i);
    append_str(fx, name, "data");
    m[i].hook = free_all_hook;
    follow(fx, &m[i], name, 0);
  }
  RUN_UNTIL(fx, g_many_first != NULL);
  settle(fx);
  for (int i = 0; i < MANY; i++) {
    assert_int_equal(m[i].calls, &m[i] == g_many_first ? 1 : 0);
    if (&m[i] != g_many_first) assert_true(m[i].freed);
  }
  unfollow(g_many_first);
  g_many_first = NULL;
}

/* ---- an inotify queue overflow ---------------------------------------------------- */

static long max_queued_events(void) {
  FILE *fp = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
  long n = -1;
  if (fp) {
    if (fscanf(fp, "%ld", &n) != 1) n = -1;
    fclose(fp);
  }
  return n;
}

/* Writes to other files fill the inotify queue before the followed file is written: its
 * event is lost, and only the overflow tells that it may have grown. */
static void test_queue_overflow(void **state) {
  fixture *fx = *state;
  long max = max_queued_events();
  if (max <= 0 || max > (1L << 20)) skip();
  append_str(fx, "a.out", "x");
  sink s = {0};
  follow(fx, &s, "a.out", 0);
  RUN_UNTIL(fx, s.len == 1);
  int f1 = open(path_of(fx, "flood1"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int f2 = open(path_of(fx, "flood2"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  assert_true(f1 >= 0 && f2 >= 0);
  /* Alternating, so that the kernel merges no two events. */
  for (long i = 0; i < max + 64; i++) write_all(i % 2 ? f2 : f1, "z", 1);
  assert_int_equal(close(f1), 0);
  assert_int_equal(close(f2), 0);
  append_str(fx, "a.out", "y");
  RUN_UNTIL(fx, s.len == 2);
  expect_str(&s, "xy");
  unfollow(&s);
}

/* ---- truncation and replacement --------------------------------------------------- */

static void test_truncated_keeps_offset(void **state) {
  fixture *fx = *state;
  append_str(fx, "t.out", "abcdef");
  sink s = {0};
  follow(fx, &s, "t.out", 0);
  RUN_UNTIL(fx, s.len == 6);
  assert_int_equal(truncate(path_of(fx, "t.out"), 2), 0);
  append_str(fx, "t.out", "XY"); /* "abXY": still short of the offset */
  settle(fx);
  assert_int_equal(tailf_poll(s.f), 0);
  assert_int_equal(s.len, 6);
  append_str(fx, "t.out", "1234"); /* "abXY1234": bytes 6 and 7 are new */
  RUN_UNTIL(fx, s.len == 8);
  expect_str(&s, "abcdef34");
  assert_int_equal(tailf_offset(s.f), 8);
  unfollow(&s);
}

/* Another file renamed over the followed one: the first one opened is still followed,
 * through its descriptor, writes to it still wake the loop, and the newcomer is not read. */
static void test_replaced_keeps_first(void **state) {
  fixture *fx = *state;
  int fd = open(path_of(fx, "r.out"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  write_all(fd, "one", 3);
  sink s = {0};
  follow(fx, &s, "r.out", 0);
  RUN_UNTIL(fx, s.len == 3);
  append_str(fx, "r.tmp", "replacement");
  assert_int_equal(rename(path_of(fx, "r.tmp"), path_of(fx, "r.out")), 0);
  settle(fx);
  assert_int_equal(s.len, 3);
  write_all(fd, "!", 1);
  RUN_UNTIL(fx, s.len == 4);
  assert_int_equal(close(fd), 0);
  settle(fx);
  assert_int_equal(tailf_poll(s.f), 0);
  expect_str(&s, "one!");
  unfollow(&s);
}

/* ---- what must not be read -------------------------------------------------------- */

static void test_not_regular(void **state) {
  fixture *fx = *state;
  /* A link to a file outside the directory, and a directory. */
  char secret[PATH_MAX];
  snprintf(secret, sizeof secret, "%s.secret", fx->dir);
  int fd = open(secret, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  write_all(fd, "secret", 6);
  assert_int_equal(close(fd), 0);
  assert_int_equal(symlink(secret, path_of(fx, "link.out")), 0);
  assert_int_equal(mkdir(path_of(fx, "dir.out"), 0700), 0);
  sink l = {0}, d = {0};
  follow(fx, &l, "link.out", 0);
  follow(fx, &d, "dir.out", 0);
  settle(fx);
  assert_int_equal(tailf_poll(l.f), -ELOOP);
  assert_int_equal(tailf_poll(d.f), -EINVAL);
  append_str(fx, "dir.out.x", "x"); /* another name: no effect on them */
  fd = open(secret, O_WRONLY | O_APPEND | O_CLOEXEC);
  assert_true(fd >= 0);
  write_all(fd, "more", 4);
  assert_int_equal(close(fd), 0);
  settle(fx);
  assert_int_equal(l.calls + d.calls, 0);
  unfollow(&l);
  unfollow(&d);
  assert_int_equal(unlink(secret), 0);
}

/* ---- arguments -------------------------------------------------------------------- */

static void never_fn(tailf_file *f, const uint8_t *data, size_t len, void *arg) {
  (void)f;
  (void)data;
  (void)len;
  (void)arg;
  fail_msg("no callback expected");
}

static int sentinel;
#define SENTINEL ((tailf_file *)&sentinel)

static void test_bad_args(void **state) {
  fixture *fx = *state;
  char longname[NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  const char *bad[] = {"", ".", "..", "a/b", "/abs", "dir/", longname};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tailf_file *f = SENTINEL;
    assert_int_equal(tailf_add(&f, fx->t, bad[i], 0, never_fn, NULL), -EINVAL);
    assert_ptr_equal(f, SENTINEL);
  }
  tailf_file *f = SENTINEL;
  assert_int_equal(tailf_add(&f, fx->t, "ok.out", (uint64_t)INT64_MAX + 1, never_fn, NULL),
                   -EINVAL);
  assert_int_equal(tailf_add(&f, fx->t, "ok.out", 0, NULL, NULL), -EINVAL);
  assert_ptr_equal(f, SENTINEL);
  /* NAME_MAX itself, ".x" and "..." are plain names. */
  longname[NAME_MAX] = '\0';
  const char *good[] = {longname, ".x", "..."};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    assert_int_equal(tailf_add(&f, fx->t, good[i], 0, never_fn, NULL), 0);
    tailf_file_free(f);
  }
  settle(fx);
  tailf_file_free(NULL);
  tailf_free(NULL);
}

static void test_eexist(void **state) {
  fixture *fx = *state;
  append_str(fx, "x.out", "12345");
  sink s = {0};
  follow(fx, &s, "x.out", 0);
  tailf_file *f = SENTINEL;
  assert_int_equal(tailf_add(&f, fx->t, "x.out", 0, never_fn, NULL), -EEXIST);
  assert_ptr_equal(f, SENTINEL);
  RUN_UNTIL(fx, s.len == 5);
  unfollow(&s);
  /* Free again once the first is gone: a new follower from its own offset. */
  sink t = {0};
  follow(fx, &t, "x.out", 3);
  RUN_UNTIL(fx, t.len == 2);
  expect_str(&t, "45");
  unfollow(&t);
}

static void test_new_errors(void **state) {
  fixture *fx = *state;
  tailf *t = (tailf *)&sentinel;
  assert_int_equal(tailf_new(&t, fx->base, path_of(fx, "missing")), -ENOENT);
  append_str(fx, "file", "x");
  assert_int_equal(tailf_new(&t, fx->base, path_of(fx, "file")), -ENOTDIR);
  assert_ptr_equal(t, (tailf *)&sentinel);
}

int main(void) {
  /* Unreadable files are logged as warnings: expected here. */
  log_set_level(LOG_LVL_ERROR);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_existing_from_start),
      T(test_existing_mid_offset),
      T(test_created_after_add),
      T(test_many_small_appends),
      T(test_large_file),
      T(test_two_files_interleaved),
      T(test_poll_without_loop),
      T(test_poll_from_callback),
      T(test_free_from_other_callback),
      T(test_queue_overflow),
      T(test_truncated_keeps_offset),
      T(test_replaced_keeps_first),
      T(test_not_regular),
      T(test_bad_args),
      T(test_eexist),
      T(test_new_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
