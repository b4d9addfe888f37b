/* Unit tests for server/outlog: records as gRPC frames, replay from any seq, stream
 * filters, live wake-ups, truncation, progress records (and output cut around them in one
 * write), bounded memory, write errors and reopening, and file segments for sending
 * without copies. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "grpcwire.h"
#include "outlog.h"
#include "prismq/runner/v1/runner.pb-c.h"

#define T0 1700000000000LL

typedef Prismq__Runner__V1__OutputChunk chunk;

static char g_dir[] = "/tmp/outlog-test-XXXXXX";

typedef struct fixture {
  struct event_base *base;
  char path[128];
} fixture;

static int group_setup(void **state) {
  (void)state;
  return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  return rmdir(g_dir);
}

static int setup(void **state) {
  static unsigned n;
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->base = event_base_new();
  assert_non_null(f->base);
  snprintf(f->path, sizeof f->path, "%s/run-%u.out", g_dir, n++);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  unlink(f->path);
  event_base_free(f->base);
  free(f);
  return 0;
}

/* What the child wrote, per stream, as the log should store it. */
typedef struct model {
  uint8_t *data[2];
  size_t len[2];
  size_t cap[2];
} model;

static void model_add(model *m, int stream, const uint8_t *p, size_t n) {
  int s = stream - 1;
  if (m->len[s] + n > m->cap[s]) {
    m->cap[s] = (m->len[s] + n) * 2;
    m->data[s] = realloc(m->data[s], m->cap[s]);
    assert_non_null(m->data[s]);
  }
  memcpy(m->data[s] + m->len[s], p, n);
  m->len[s] += n;
}

static void model_free(model *m) {
  free(m->data[0]);
  free(m->data[1]);
}

static void append_both(outlog *l, model *m, int stream, const uint8_t *p, size_t n, int64_t t) {
  assert_int_equal(outlog_append(l, stream, p, n, t), 0);
  model_add(m, stream, p, n);
}

/* Decoded records, in order, plus each one's byte position within the stream read. */
typedef struct recs {
  chunk **c;
  size_t *at;
  size_t n;
} recs;

static recs decode(struct evbuffer *b) {
  struct evbuffer *copy = evbuffer_new();
  assert_non_null(copy);
  assert_int_equal(evbuffer_add_buffer_reference(copy, b), 0);
  recs r = {NULL, NULL, 0};
  size_t cap = 0, at = 0, total = evbuffer_get_length(b);
  uint8_t *msg;
  size_t len;
  while (evbuffer_get_length(copy)) {
    assert_int_equal(gw_frame_next(copy, 1 << 20, &msg, &len), GW_FRAME_MSG);
    if (r.n == cap) {
      cap = cap ? cap * 2 : 64;
      r.c = realloc(r.c, cap * sizeof *r.c);
      r.at = realloc(r.at, cap * sizeof *r.at);
      assert_true(r.c && r.at);
    }
    r.c[r.n] = prismq__runner__v1__output_chunk__unpack(NULL, len, msg);
    assert_non_null(r.c[r.n]);
    assert_null(r.c[r.n]->run);
    r.at[r.n++] = at;
    at = total - evbuffer_get_length(copy);
    free(msg);
  }
  evbuffer_free(copy);
  return r;
}

static void recs_free(recs *r) {
  for (size_t i = 0; i < r->n; i++) prismq__runner__v1__output_chunk__free_unpacked(r->c[i], NULL);
  free(r->c);
  free(r->at);
}

/* Checks records against the model: seqs from first_seq (contiguous without a filter,
 * increasing with one), only `filter`'s stream if set, offsets contiguous per stream and
 * data byte-exact. If `whole`, they must cover each (selected) stream to its end. */
static void check_recs(const recs *r, const model *m, uint64_t first_seq, int filter, int whole) {
  uint64_t next_off[2] = {UINT64_MAX, UINT64_MAX};
  uint64_t prev_seq = 0;
  for (size_t i = 0; i < r->n; i++) {
    const chunk *c = r->c[i];
    if (i == 0)
      assert_true(filter ? c->seq >= first_seq : c->seq == first_seq);
    else if (filter)
      assert_true(c->seq > prev_seq);
    else
      assert_int_equal(c->seq, prev_seq + 1);
    prev_seq = c->seq;
    assert_true(c->stream == OUTLOG_STDOUT || c->stream == OUTLOG_STDERR);
    if (filter) assert_int_equal(c->stream, filter);
    int s = c->stream - 1;
    if (next_off[s] != UINT64_MAX) assert_int_equal(c->offset, next_off[s]);
    assert_true(c->data.len > 0 && c->data.len <= OUTLOG_CHUNK_MAX);
    assert_true(c->offset + c->data.len <= m->len[s]);
    assert_memory_equal(c->data.data, m->data[s] + c->offset, c->data.len);
    assert_true(c->time_ms >= T0);
    next_off[s] = c->offset + c->data.len;
  }
  if (!whole) return;
  for (int s = 0; s < 2; s++) {
    if (filter && filter != s + 1) continue;
    assert_int_equal(m->len[s] ? next_off[s] : 0, m->len[s]);
  }
}

/* Runs the callbacks that are due, without blocking. (1 = nothing was due.) */
static void spin(struct event_base *base) {
  assert_true(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
}

/* Reads everything available now, in calls of max_bytes. */
static void drain(outlog_reader *r, struct evbuffer *dst, size_t max_bytes) {
  ssize_t n;
  while ((n = outlog_reader_read(r, dst, max_bytes)) > 0) {
  }
  assert_int_equal(n, 0);
}

static struct evbuffer *read_all(outlog *l, uint64_t start_seq, int filter) {
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, start_seq, filter), 0);
  drain(r, b, 64 << 10);
  outlog_reader_free(r);
  return b;
}

static int buf_equal(struct evbuffer *a, struct evbuffer *b) {
  size_t n = evbuffer_get_length(a);
  return n == evbuffer_get_length(b) &&
         memcmp(evbuffer_pullup(a, -1), evbuffer_pullup(b, -1), n) == 0;
}

/* Deterministic xorshift so failures reproduce. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Appends ~n_appends chunks: first all 256 byte values on each stream, then random
 * bytes in random sizes, mostly small, some larger than OUTLOG_CHUNK_MAX. */
static void fill_random(outlog *l, model *m, int n_appends, uint64_t seed) {
  uint8_t all[256];
  for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
  append_both(l, m, OUTLOG_STDOUT, all, sizeof all, T0);
  append_both(l, m, OUTLOG_STDERR, all, sizeof all, T0);
  size_t cap = 3 * OUTLOG_CHUNK_MAX;
  uint8_t *buf = malloc(cap);
  assert_non_null(buf);
  for (int i = 0; i < n_appends; i++) {
    size_t n = rnd(&seed) % 32 == 0 ? 1 + rnd(&seed) % cap : 1 + rnd(&seed) % 4096;
    for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rnd(&seed);
    append_both(l, m, 1 + (int)(rnd(&seed) % 2), buf, n, T0 + i);
  }
  free(buf);
}

static struct evbuffer *file_bytes(const char *path) {
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  if (st.st_size)
    assert_int_equal(evbuffer_add_file(b, fd, 0, st.st_size), 0);
  else
    close(fd);
  return b;
}

static void test_roundtrip_random(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 3000, 0x9e3779b97f4a7c15ULL);
  assert_true(m.len[0] + m.len[1] > (4u << 20));
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), m.len[0]);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDERR), m.len[1]);
  assert_int_equal(outlog_bytes(l, 3), 0);

  struct evbuffer *all = read_all(l, 0, 0);
  recs r = decode(all);
  check_recs(&r, &m, 1, 0, 1);
  assert_int_equal(outlog_next_seq(l), r.n + 1);
  assert_true(r.n > 3000); /* the large appends were split */

  /* The file is exactly the records, and a reader yields the file as it is. */
  struct evbuffer *file = file_bytes(f->path);
  assert_true(buf_equal(all, file));

  /* A second reader, one record per call (max_bytes 1), sees identical bytes. */
  struct evbuffer *one = evbuffer_new();
  outlog_reader *rd;
  assert_int_equal(outlog_reader_new(&rd, l, 0, 0), 0);
  for (size_t i = 0; i < r.n; i++) {
    size_t want = (i + 1 < r.n ? r.at[i + 1] : evbuffer_get_length(all)) - r.at[i];
    assert_int_equal(outlog_reader_read(rd, one, 1), (ssize_t)want);
  }
  assert_int_equal(outlog_reader_read(rd, one, 1), 0);
  assert_true(buf_equal(all, one));
  assert_false(outlog_reader_done(rd));
  outlog_reader_free(rd);

  recs_free(&r);
  evbuffer_free(one);
  evbuffer_free(file);
  evbuffer_free(all);
  outlog_free(l);
  model_free(&m);
}

/* A reader from seq k yields exactly the records from k on: the suffix of a full read. */
static void check_suffix(outlog *l, struct evbuffer *all, const recs *r, uint64_t k) {
  struct evbuffer *b = read_all(l, k, 0);
  size_t from = k - 1 < r->n ? r->at[k - 1] : evbuffer_get_length(all);
  size_t n = evbuffer_get_length(all) - from;
  assert_int_equal(evbuffer_get_length(b), n);
  if (n) assert_memory_equal(evbuffer_pullup(b, -1), evbuffer_pullup(all, -1) + from, n);
  evbuffer_free(b);
}

static void test_start_seq_middle(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 3500, 42);
  struct evbuffer *all = read_all(l, 0, 0);
  recs r = decode(all);
  assert_true(r.n > 3 * 1024);
  const uint64_t ks[] = {1, 2, 1023, 1024, 1025, 1026, 2049, 3001, r.n - 1, r.n, r.n + 1, r.n + 50};
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) check_suffix(l, all, &r, ks[i]);
  /* Default spacing: one entry per 1024 records or 1 MiB of file at most. */
  size_t bound = r.n / 1024 + evbuffer_get_length(all) / (1u << 20) + 1;
  assert_true(outlog_index_entries(l) <= bound);
  assert_true(outlog_index_entries(l) >= evbuffer_get_length(all) / (2u << 20));
  recs_free(&r);
  evbuffer_free(all);
  outlog_free(l);
  model_free(&m);
}

/* A tiny index that thins itself many times still finds every seq. */
static void test_index_thinning(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.index_every_records = 3;
  o.index_max_entries = 8;
  assert_int_equal(outlog_new(&l, f->base, f->path, &o), 0);
  for (int i = 0; i < 700; i++) {
    uint8_t b[7];
    memset(b, i, sizeof b);
    append_both(l, &m, 1 + i % 2, b, 1 + i % 7, T0 + i);
    assert_true(outlog_index_entries(l) <= 8);
  }
  assert_true(outlog_index_entries(l) >= 4);
  struct evbuffer *all = read_all(l, 0, 0);
  recs r = decode(all);
  assert_int_equal(r.n, 700);
  check_recs(&r, &m, 1, 0, 1);
  for (uint64_t k = 1; k <= 701; k++) check_suffix(l, all, &r, k);
  recs_free(&r);
  evbuffer_free(all);
  outlog_free(l);
  model_free(&m);
}

static void test_stream_filter(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 1500, 7);
  for (int s = OUTLOG_STDOUT; s <= OUTLOG_STDERR; s++) {
    struct evbuffer *b = read_all(l, 0, s);
    recs r = decode(b);
    check_recs(&r, &m, 1, s, 1);
    /* Filter and start seq together. */
    uint64_t k = r.c[r.n / 2]->seq;
    struct evbuffer *tail = read_all(l, k, s);
    assert_int_equal(evbuffer_get_length(tail), evbuffer_get_length(b) - r.at[r.n / 2]);
    assert_memory_equal(evbuffer_pullup(tail, -1), evbuffer_pullup(b, -1) + r.at[r.n / 2],
                        evbuffer_get_length(tail));
    evbuffer_free(tail);
    recs_free(&r);
    evbuffer_free(b);
  }
  outlog_reader *rd;
  assert_int_equal(outlog_reader_new(&rd, l, 0, 3), -EINVAL);
  assert_int_equal(outlog_reader_new(&rd, l, 0, -1), -EINVAL);
  outlog_free(l);
  model_free(&m);
}

/* Megabytes of one stream before a single record of the other: a filtered read
 * yields to the loop (returns 0) instead of scanning it all at once, and its wait
 * fires at once so the follower goes on. */
static void count_cb(outlog_reader *r, void *arg) {
  (void)r;
  ++*(int *)arg;
}

static void test_filter_scan_budget(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  static uint8_t big[OUTLOG_CHUNK_MAX];
  memset(big, 'o', sizeof big);
  for (int i = 0; i < 64; i++) append_both(l, &m, OUTLOG_STDOUT, big, sizeof big, T0);
  append_both(l, &m, OUTLOG_STDERR, (const uint8_t *)"err", 3, T0);
  outlog_end(l);

  outlog_reader *rd;
  assert_int_equal(outlog_reader_new(&rd, l, 0, OUTLOG_STDERR), 0);
  struct evbuffer *b = evbuffer_new();
  int zero_reads = 0, wakes = 0;
  ssize_t n;
  while ((n = outlog_reader_read(rd, b, 64 << 10)) == 0) {
    assert_false(outlog_reader_done(rd));
    /* A 0 that only means "budget spent" is not "caught up". */
    assert_false(outlog_reader_caught_up(rd));
    zero_reads++;
    outlog_reader_wait(rd, count_cb, &wakes);
    spin(f->base);
    assert_int_equal(wakes, zero_reads);
  }
  assert_true(zero_reads >= 2); /* 4 MiB skipped in steps of about 1 MiB */
  recs r = decode(b);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.c[0]->seq, 65);
  check_recs(&r, &m, 65, OUTLOG_STDERR, 1);
  assert_int_equal(outlog_reader_read(rd, b, 64 << 10), 0);
  assert_true(outlog_reader_caught_up(rd));
  assert_true(outlog_reader_done(rd));
  recs_free(&r);
  evbuffer_free(b);
  outlog_reader_free(rd);
  outlog_free(l);
  model_free(&m);
}

static void test_live_wake(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  outlog_reader *rd;
  assert_int_equal(outlog_reader_new(&rd, l, 0, 0), 0);
  struct evbuffer *b = evbuffer_new();
  assert_int_equal(outlog_reader_read(rd, b, 1024), 0);
  int wakes = 0;
  outlog_reader_wait(rd, count_cb, &wakes);
  spin(f->base);
  assert_int_equal(wakes, 0); /* nothing to read: no wake */

  append_both(l, &m, OUTLOG_STDOUT, (const uint8_t *)"hello\n", 6, T0);
  assert_int_equal(wakes, 0); /* never inside the writer's call */
  append_both(l, &m, OUTLOG_STDERR, (const uint8_t *)"warn\n", 5, T0 + 1);
  spin(f->base);
  assert_int_equal(wakes, 1); /* one-shot */
  drain(rd, b, 1024);
  recs r = decode(b);
  assert_int_equal(r.n, 2);
  check_recs(&r, &m, 1, 0, 1);
  recs_free(&r);

  /* Caught up: the next wait fires only on the next append, or on end. */
  outlog_reader_wait(rd, count_cb, &wakes);
  spin(f->base);
  assert_int_equal(wakes, 1);
  assert_false(outlog_reader_done(rd));
  outlog_end(l);
  assert_true(outlog_ended(l));
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "x", 1, T0), -EINVAL);
  assert_int_equal(wakes, 1);
  spin(f->base);
  assert_int_equal(wakes, 2);
  assert_true(outlog_reader_done(rd));
  /* Done: a wait still fires (at once), so a follower cannot hang. */
  outlog_reader_wait(rd, count_cb, &wakes);
  spin(f->base);
  assert_int_equal(wakes, 3);
  evbuffer_free(b);
  outlog_reader_free(rd);
  outlog_free(l);
  model_free(&m);
}

/* Live followers driven by the loop while a timer writes: each reads until 0, then
 * waits; all end with the whole output. */
typedef struct follower {
  outlog_reader *r;
  struct evbuffer *b;
  size_t max_bytes;
  int finished;
  int *left;
  struct event_base *base;
} follower;

static void follower_cb(outlog_reader *r, void *arg) {
  follower *fo = arg;
  ssize_t n;
  while ((n = outlog_reader_read(r, fo->b, fo->max_bytes)) > 0) {
  }
  assert_int_equal(n, 0);
  if (outlog_reader_done(r)) {
    fo->finished = 1;
    if (--*fo->left == 0) event_base_loopbreak(fo->base);
    return;
  }
  outlog_reader_wait(r, follower_cb, fo);
}

typedef struct writer {
  outlog *l;
  model *m;
  struct event *ev;
  int i;
  uint64_t seed;
} writer;

static void writer_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  writer *w = arg;
  uint8_t buf[3000];
  for (int k = 0; k < 3; k++) {
    size_t n = 1 + rnd(&w->seed) % sizeof buf;
    for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)rnd(&w->seed);
    append_both(w->l, w->m, 1 + (int)(rnd(&w->seed) % 2), buf, n, T0 + w->i);
  }
  if (++w->i == 200) {
    outlog_end(w->l);
    return;
  }
  struct timeval zero = {0, 0};
  event_add(w->ev, &zero);
}

typedef struct watchdog {
  struct event_base *base;
  int fired;
} watchdog;

static void watchdog_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  watchdog *d = arg;
  d->fired = 1;
  event_base_loopbreak(d->base);
}

static void test_live_followers(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  int left = 3;
  follower fo[3] = {{.max_bytes = 64 << 10}, {.max_bytes = 1}, {.max_bytes = 4096}};
  const int filters[3] = {0, 0, OUTLOG_STDERR};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(outlog_reader_new(&fo[i].r, l, 0, filters[i]), 0);
    fo[i].b = evbuffer_new();
    fo[i].left = &left;
    fo[i].base = f->base;
    outlog_reader_wait(fo[i].r, follower_cb, &fo[i]);
  }
  writer w = {l, &m, NULL, 0, 99};
  w.ev = evtimer_new(f->base, writer_cb, &w);
  struct timeval zero = {0, 0}, ten = {10, 0};
  event_add(w.ev, &zero);
  watchdog d = {f->base, 0};
  struct event *dog = evtimer_new(f->base, watchdog_cb, &d);
  event_add(dog, &ten);
  assert_int_equal(event_base_dispatch(f->base), 0);
  assert_false(d.fired);
  assert_int_equal(w.i, 200);
  for (int i = 0; i < 3; i++) {
    assert_true(fo[i].finished);
    recs r = decode(fo[i].b);
    check_recs(&r, &m, 1, filters[i], 1);
    recs_free(&r);
  }
  assert_true(buf_equal(fo[0].b, fo[1].b));
  for (int i = 0; i < 3; i++) {
    outlog_reader_free(fo[i].r);
    evbuffer_free(fo[i].b);
  }
  event_free(dog);
  event_free(w.ev);
  outlog_free(l);
  model_free(&m);
}

static void test_late_reader_and_free_order(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 200, 5);
  outlog_end(l);
  outlog_end(l); /* idempotent */
  outlog_reader *rd;
  assert_int_equal(outlog_reader_new(&rd, l, 0, 0), 0);
  /* The run lets go of its log while the follower still drains it. */
  outlog_free(l);
  assert_false(outlog_reader_done(rd));
  struct evbuffer *b = evbuffer_new();
  drain(rd, b, 10000);
  assert_true(outlog_reader_done(rd));
  recs r = decode(b);
  check_recs(&r, &m, 1, 0, 1);
  recs_free(&r);
  evbuffer_free(b);
  outlog_reader_free(rd);
  model_free(&m);
}

static void test_truncation(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.max_bytes = 1000;
  assert_int_equal(outlog_new(&l, f->base, f->path, &o), 0);
  uint8_t a[300], e[300];
  memset(a, 'a', sizeof a);
  memset(e, 'e', sizeof e);
  append_both(l, &m, OUTLOG_STDOUT, a, 300, T0);
  append_both(l, &m, OUTLOG_STDERR, e, 300, T0);
  append_both(l, &m, OUTLOG_STDOUT, a, 300, T0);
  /* 100 of these 300 fit, then everything is dropped but counted. */
  assert_int_equal(outlog_append(l, OUTLOG_STDERR, e, 300, T0 + 5), 0);
  model_add(&m, OUTLOG_STDERR, e, 100);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(outlog_append(l, OUTLOG_STDOUT, a, 300, T0), 0);
    assert_int_equal(outlog_append(l, OUTLOG_STDERR, e, 300, T0), 0);
  }
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 600 + 3000);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDERR), 600 + 3000);
  assert_int_equal(outlog_next_seq(l), 6);
  outlog_end(l);

  struct evbuffer *b = read_all(l, 0, 0);
  recs r = decode(b);
  assert_int_equal(r.n, 5);
  size_t data = 0;
  for (size_t i = 0; i < 4; i++) data += r.c[i]->data.len;
  assert_int_equal(data, 1000);
  const chunk *last = r.c[4];
  const char want[] = "[prismq: output truncated after 1000 bytes]\n";
  assert_int_equal(last->stream, OUTLOG_STDERR);
  assert_int_equal(last->seq, 5);
  assert_int_equal(last->offset, 400); /* where stored stderr ends */
  assert_int_equal(last->time_ms, T0 + 5);
  assert_int_equal(last->data.len, strlen(want));
  assert_memory_equal(last->data.data, want, strlen(want));
  recs_free(&r);
  /* Everything but the notice is the child's output. */
  r = decode(b);
  r.n = 4;
  check_recs(&r, &m, 1, 0, 1);
  r.n = 5;
  recs_free(&r);
  evbuffer_free(b);
  outlog_free(l);
  model_free(&m);
}

/* Truncation on a stdout chunk: the notice goes at stderr's current end. */
static void test_truncation_on_stdout(void **state) {
  fixture *f = *state;
  outlog *l;
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.max_bytes = 10;
  assert_int_equal(outlog_new(&l, f->base, f->path, &o), 0);
  assert_int_equal(outlog_append(l, OUTLOG_STDERR, "EEE", 3, T0), 0);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "0123456789", 10, T0), 0);
  struct evbuffer *b = read_all(l, 0, 0);
  recs r = decode(b);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.c[1]->data.len, 7);
  assert_int_equal(r.c[2]->stream, OUTLOG_STDERR);
  assert_int_equal(r.c[2]->offset, 3);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 10);
  recs_free(&r);
  evbuffer_free(b);
  outlog_free(l);
}

/* The seqs of r's records, as a string ("1 2 4"), to compare. */
static const char *seqs(const recs *r) {
  static char buf[256];
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < r->n && o < sizeof buf; i++)
    o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%llu", i ? " " : "",
                          (unsigned long long)r->c[i]->seq);
  return buf;
}

static void assert_progress_rec(const chunk *c, uint64_t seq, double done, const char *message) {
  assert_int_equal(c->seq, seq);
  assert_non_null(c->progress);
  assert_int_equal(c->stream, 0);
  assert_int_equal(c->data.len, 0);
  assert_int_equal(c->offset, 0);
  assert_true(c->progress->done == done);
  assert_true(c->progress->total == 4);
  assert_string_equal(c->progress->message, message);
  assert_int_equal(c->progress->updated_at_ms, T0 + (int64_t)done);
  assert_int_equal(c->time_ms, T0 + (int64_t)done);
}

static void append_progress(outlog *l, double done, const char *message) {
  Prismq__Runner__V1__Progress p = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  p.done = done;
  p.total = 4;
  p.message = (char *)message;
  p.updated_at_ms = T0 + (int64_t)done;
  assert_int_equal(outlog_append_progress(l, &p, T0 + (int64_t)done), 0);
}

/* Progress records: seqs of their own in order with the output, no stream, no data, in
 * no stream's byte count; every stream filter yields them; they wake followers, go on
 * after the output is truncated (up to a budget of their own) and are replayed from a
 * reopened file. */
static void test_progress_records(void **state) {
  fixture *f = *state;
  outlog *l;
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.max_bytes = 300;
  assert_int_equal(outlog_new(&l, f->base, f->path, &o), 0);
  outlog_reader *rd;
  int wakes = 0;
  assert_int_equal(outlog_reader_new(&rd, l, 0, OUTLOG_STDERR), 0);
  outlog_reader_wait(rd, count_cb, &wakes);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "step 1\n", 7, T0), 0);
  append_progress(l, 1, "one");
  spin(f->base);
  assert_int_equal(wakes, 1);
  assert_int_equal(outlog_append(l, OUTLOG_STDERR, "e", 1, T0), 0);
  append_progress(l, 2, "");
  static uint8_t big[400];
  memset(big, 'x', sizeof big);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, big, sizeof big, T0), 0); /* seq 5, notice 6 */
  append_progress(l, 3, "after the cut");
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 7 + sizeof big);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDERR), 1);
  assert_int_equal(outlog_next_seq(l), 8);

  struct evbuffer *all = read_all(l, 0, 0);
  recs r = decode(all);
  assert_string_equal(seqs(&r), "1 2 3 4 5 6 7");
  assert_progress_rec(r.c[1], 2, 1, "one");
  assert_progress_rec(r.c[3], 4, 2, "");
  assert_progress_rec(r.c[6], 7, 3, "after the cut");
  assert_int_equal(r.c[4]->offset, 7); /* stdout's offsets skip the progress records */
  assert_int_equal(r.c[4]->data.len, 300 - 8);
  assert_int_equal(r.c[5]->stream, OUTLOG_STDERR); /* the notice */
  recs_free(&r);
  static const char *const filtered[] = {"1 2 4 5 7", "2 3 4 6 7"};
  for (int s = OUTLOG_STDOUT; s <= OUTLOG_STDERR; s++) {
    struct evbuffer *b = read_all(l, 0, s);
    r = decode(b);
    assert_string_equal(seqs(&r), filtered[s - 1]);
    recs_free(&r);
    evbuffer_free(b);
  }

  /* The budget of progress records is max_bytes too: past it they are dropped. */
  int rc = 0, stored = 3;
  Prismq__Runner__V1__Progress p = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  p.message = "a progress message of some length, to reach the budget in a few records";
  while (stored < 100 && (rc = outlog_append_progress(l, &p, T0)) == 0) stored++;
  assert_int_equal(rc, -EFBIG);
  assert_true(stored > 3 && stored < 10);
  assert_int_equal(outlog_next_seq(l), 8 + (uint64_t)(stored - 3));
  outlog_end(l);
  assert_int_equal(outlog_append_progress(l, &p, T0), -EINVAL);
  struct evbuffer *ended = read_all(l, 0, 0);
  outlog_reader_free(rd);
  outlog_free(l);

  assert_int_equal(outlog_open_existing(&l, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_next_seq(l), 8 + (uint64_t)(stored - 3));
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 300 - 1);
  struct evbuffer *again = read_all(l, 0, 0);
  assert_true(buf_equal(again, ended));
  struct evbuffer *tail = read_all(l, 7, OUTLOG_STDOUT);
  r = decode(tail);
  assert_progress_rec(r.c[0], 7, 3, "after the cut");
  recs_free(&r);
  evbuffer_free(tail);
  evbuffer_free(again);
  evbuffer_free(ended);
  evbuffer_free(all);
  outlog_free(l);
}

/* What one outlog_append_updates stores, appended on `seq` one call at a time: returns
 * what the calls returned, 1 for an update dropped past the budget (as the batch says). */
static int append_one_by_one(outlog *seq, int stream, const char *data, size_t len,
                             const size_t *at, const Prismq__Runner__V1__Progress *const *pp,
                             size_t n) {
  int dropped = 0;
  size_t from = 0;
  for (size_t i = 0; i <= n; i++) {
    size_t to = i < n ? at[i] : len;
    if (to > from) assert_int_equal(outlog_append(seq, stream, data + from, to - from, T0), 0);
    if (i < n) {
      int rc = outlog_append_progress(seq, pp[i], T0);
      assert_true(rc == 0 || rc == -EFBIG);
      dropped |= rc == -EFBIG;
    }
    from = to;
  }
  return dropped;
}

/* A file size limit of `bytes` on this process, SIGXFSZ ignored, so that a write past
 * it fails with EFBIG: fsize_limit sets it, fsize_unlimit puts back what was. */
struct fsize {
  struct rlimit old;
  void (*prev)(int);
};

static void fsize_limit(struct fsize *fs, off_t bytes) {
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &fs->old), 0);
  struct rlimit lim = fs->old;
  lim.rlim_cur = (rlim_t)bytes;
  fs->prev = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

static void fsize_unlimit(const struct fsize *fs) {
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &fs->old), 0);
  signal(SIGXFSZ, fs->prev);
}

/* OUTLOG_UPDATES_MAX progress updates, step i + 1 of them each, in p, pointed to from pp. */
static void make_steps(Prismq__Runner__V1__Progress *p, const Prismq__Runner__V1__Progress **pp) {
  for (int i = 0; i < OUTLOG_UPDATES_MAX; i++) {
    p[i] = (Prismq__Runner__V1__Progress)PRISMQ__RUNNER__V1__PROGRESS__INIT;
    p[i].done = i + 1;
    p[i].total = OUTLOG_UPDATES_MAX;
    p[i].message = "a step";
    pp[i] = &p[i];
  }
}

/* 250 bytes of output for the updates tests. */
static char output250[250];

/* outlog_append_updates stores what the same appends one at a time store, byte for byte:
 * output cut around the updates, a truncation inside, updates alone, the progress
 * budget. */
static void test_append_updates(void **state) {
  fixture *f = *state;
  char path[160];
  snprintf(path, sizeof path, "%s.one-by-one", f->path);
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.max_bytes = 265;
  outlog *batch, *seq;
  assert_int_equal(outlog_new(&batch, f->base, f->path, &o), 0);
  assert_int_equal(outlog_new(&seq, f->base, path, &o), 0);
  Prismq__Runner__V1__Progress p[OUTLOG_UPDATES_MAX];
  const Prismq__Runner__V1__Progress *pp[OUTLOG_UPDATES_MAX];
  make_steps(p, pp);
  memset(output250, 'x', sizeof output250);
  static const struct {
    const char *data;
    size_t len;
    size_t at[4];
    size_t n;
    int stream;
  } calls[] = {
      {"a\nPROGRESS 1\nb\nPROGRESS 2\nc\n", 27, {13, 26}, 2, OUTLOG_STDOUT},
      {"err\n", 4, {4}, 1, OUTLOG_STDERR},
      {NULL, 0, {0, 0}, 2, 0}, /* updates alone */
      {output250,
       sizeof output250,
       {100, 100, 240},
       3,
       OUTLOG_STDOUT},               /* output truncated after 265 */
      {NULL, 0, {0, 0, 0, 0}, 4, 0}, /* past the progress budget */
  };
  int rc = 0;
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
    rc = outlog_append_updates(batch, calls[i].stream, calls[i].data, calls[i].len, calls[i].at, pp,
                               calls[i].n, T0);
    assert_int_equal(rc, append_one_by_one(seq, calls[i].stream, calls[i].data, calls[i].len,
                                           calls[i].at, pp, calls[i].n));
    assert_int_equal(outlog_next_seq(batch), outlog_next_seq(seq));
  }
  assert_int_equal(rc, 1);
  struct evbuffer *a = read_all(batch, 0, 0), *b = read_all(seq, 0, 0);
  assert_true(buf_equal(a, b));
  evbuffer_free(a);
  evbuffer_free(b);
  outlog_free(batch);
  outlog_free(seq);
  unlink(path);
}

/* Bad arguments to outlog_append_updates store nothing. */
static void test_append_updates_refused(void **state) {
  fixture *f = *state;
  outlog *l;
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  Prismq__Runner__V1__Progress p[OUTLOG_UPDATES_MAX];
  const Prismq__Runner__V1__Progress *pp[OUTLOG_UPDATES_MAX];
  make_steps(p, pp);
  static const char text[] = "a\nPROGRESS 1\nb\nPROGRESS 2\nc\n";
  size_t desc[2] = {5, 4}, past[1] = {28}, none[1] = {0};
  assert_int_equal(outlog_append_updates(l, OUTLOG_STDOUT, text, 27, desc, pp, 2, T0), -EINVAL);
  assert_int_equal(outlog_append_updates(l, OUTLOG_STDOUT, text, 27, past, pp, 1, T0), -EINVAL);
  assert_int_equal(outlog_append_updates(l, 3, text, 27, past, pp, 0, T0), -EINVAL);
  size_t many[OUTLOG_UPDATES_MAX + 1] = {0};
  assert_int_equal(outlog_append_updates(l, 0, NULL, 0, many, pp, OUTLOG_UPDATES_MAX + 1, T0),
                   -EINVAL);
  static uint8_t huge[OUTLOG_CHUNK_MAX + 1];
  assert_int_equal(outlog_append_updates(l, OUTLOG_STDOUT, huge, sizeof huge, NULL, pp, 0, T0),
                   -EINVAL);
  assert_int_equal(outlog_next_seq(l), 1);
  outlog_end(l);
  assert_int_equal(outlog_append_updates(l, 0, NULL, 0, none, pp, 1, T0), -EINVAL);
  outlog_free(l);
}

/* A failed write (the file size limit) stores nothing of the call, its output's bytes
 * counted; the next call goes on after the gap. */
static void test_append_updates_write_fails(void **state) {
  fixture *f = *state;
  outlog *l;
  Prismq__Runner__V1__Progress p[OUTLOG_UPDATES_MAX];
  const Prismq__Runner__V1__Progress *pp[OUTLOG_UPDATES_MAX];
  make_steps(p, pp);
  memset(output250, 'x', sizeof output250);
  size_t line_end[1] = {2}, at[2] = {100, 100};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_append_updates(l, OUTLOG_STDOUT, "x\n", 2, line_end, pp, 1, T0), 0);
  struct stat st;
  assert_int_equal(stat(f->path, &st), 0);
  off_t good = st.st_size;
  struct fsize fs;
  fsize_limit(&fs, good + 20);
  int rc = outlog_append_updates(l, OUTLOG_STDOUT, output250, 100, at, pp, 2, T0);
  fsize_unlimit(&fs);
  assert_int_equal(rc, -EFBIG);
  assert_int_equal(stat(f->path, &st), 0);
  assert_int_equal(st.st_size, good);
  assert_int_equal(outlog_next_seq(l), 3);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 102); /* lost, but counted */
  assert_int_equal(outlog_append_updates(l, OUTLOG_STDOUT, "y\n", 2, line_end, pp, 1, T0), 0);
  outlog_end(l);
  struct evbuffer *all = read_all(l, 0, 0);
  recs r = decode(all);
  assert_string_equal(seqs(&r), "1 2 3 4");
  assert_int_equal(r.c[2]->offset, 102); /* the gap shows */
  assert_true(r.c[3]->progress && r.c[3]->progress->done == 1);
  recs_free(&r);
  evbuffer_free(all);
  outlog_free(l);
}

/* Heap in use, mmapped blocks included. */
static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/* 50 MiB go by a reader that reads nothing: the log's memory does not grow with the
 * output (no copies kept, index bounded), and the reader still gets all of it. */
static void test_memory_bounded(void **state) {
  fixture *f = *state;
  outlog *l;
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  outlog_reader *idle;
  assert_int_equal(outlog_reader_new(&idle, l, 0, 0), 0);
  int wakes = 0;
  outlog_reader_wait(idle, count_cb, &wakes);
  static uint8_t buf[16 << 10];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 31);
  size_t heap0 = heap_in_use();
  const size_t total = 50u << 20;
  for (size_t done = 0; done < total; done += sizeof buf)
    assert_int_equal(outlog_append(l, 1 + (int)(done / sizeof buf % 2), buf, sizeof buf, T0), 0);
  /* glibc's counters: meaningful in a plain build; under ASan or valgrind, whose
   * allocators bypass them, only the index bound below bites. */
  size_t heap1 = heap_in_use();
  assert_true(heap1 < heap0 + (256u << 10));
  /* One entry per MiB of file, well under the cap. */
  assert_true(outlog_index_entries(l) <= 52);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT) + outlog_bytes(l, OUTLOG_STDERR), total);
  spin(f->base);
  assert_int_equal(wakes, 1);

  struct evbuffer *b = evbuffer_new();
  size_t data = 0;
  ssize_t n;
  uint64_t seq = 0;
  while ((n = outlog_reader_read(idle, b, 1u << 20)) > 0) {
    recs r = decode(b);
    for (size_t i = 0; i < r.n; i++) {
      assert_int_equal(r.c[i]->seq, ++seq);
      assert_memory_equal(r.c[i]->data.data, buf, sizeof buf);
      data += r.c[i]->data.len;
    }
    recs_free(&r);
    evbuffer_drain(b, evbuffer_get_length(b));
  }
  assert_int_equal(n, 0);
  assert_int_equal(data, total);
  evbuffer_free(b);
  outlog_reader_free(idle);
  outlog_free(l);
}

static void must_not_fire(outlog_reader *r, void *arg) {
  (void)r;
  (void)arg;
  fail_msg("wait fired after outlog_reader_free");
}

static void test_free_with_pending_wait(void **state) {
  fixture *f = *state;
  outlog *l;
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  outlog_reader *queued, *active;
  assert_int_equal(outlog_reader_new(&queued, l, 0, 0), 0);
  assert_int_equal(outlog_reader_new(&active, l, 0, 0), 0);
  outlog_reader_wait(queued, must_not_fire, NULL); /* waits for an append */
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "x", 1, T0), 0);
  outlog_reader_wait(active, must_not_fire, NULL); /* already due */
  outlog_reader_free(queued);                      /* woken, not yet fired */
  outlog_reader_free(active);
  spin(f->base);

  /* Freed while still queued on the log: later appends must not touch it. */
  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, 2, 0), 0);
  outlog_reader_wait(r, must_not_fire, NULL);
  outlog_reader_free(r);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "y", 1, T0), 0);
  outlog_end(l);
  spin(f->base);
  outlog_free(l);
}

/* A reader may free itself from its wake callback. */
static void free_self(outlog_reader *r, void *arg) {
  outlog_reader_free(r);
  ++*(int *)arg;
}

static void test_free_in_callback(void **state) {
  fixture *f = *state;
  outlog *l;
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, 0, 0), 0);
  int fired = 0;
  outlog_reader_wait(r, free_self, &fired);
  outlog_free(l); /* ends it; the reader holds the last reference */
  spin(f->base);
  assert_int_equal(fired, 1);
}

static void test_bad_args(void **state) {
  fixture *f = *state;
  outlog *l = NULL, *l2 = (outlog *)&l;
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.index_max_entries = 1;
  assert_int_equal(outlog_new(&l2, f->base, f->path, &o), -EINVAL);
  assert_ptr_equal(l2, (outlog *)&l);
  assert_int_equal(access(f->path, F_OK), -1);
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_append(l, 0, "x", 1, T0), -EINVAL);
  assert_int_equal(outlog_append(l, 3, "x", 1, T0), -EINVAL);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "", 0, T0), 0);
  assert_int_equal(outlog_next_seq(l), 1);
  /* No output, no file: it is created by the first record. */
  assert_int_equal(access(f->path, F_OK), -1);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "x", 1, T0), 0);
  assert_int_equal(access(f->path, F_OK), 0);
  /* A file already there is never taken over. */
  assert_int_equal(outlog_new(&l2, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_append(l2, OUTLOG_STDOUT, "y", 1, T0), -EEXIST);
  outlog_free(l2);
  assert_int_equal(outlog_open_existing(&l2, f->base, "/nonexistent/x", NULL), -ENOENT);
  outlog_free(l);
  outlog_free(NULL);
  outlog_reader_free(NULL);
}

/* A write that hits a file size limit half-way is rolled back: the file keeps whole
 * records, the error is returned, and appends work again once there is room, after a
 * gap in the stream's offsets that a replay from the file shows as well. */
static void test_write_error_rollback(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  uint8_t buf[1000];
  memset(buf, 'z', sizeof buf);
  append_both(l, &m, OUTLOG_STDOUT, buf, sizeof buf, T0);
  struct stat st;
  assert_int_equal(stat(f->path, &st), 0);
  off_t good = st.st_size;

  struct fsize fs;
  fsize_limit(&fs, good + 500);
  int rc = outlog_append(l, OUTLOG_STDOUT, buf, sizeof buf, T0);
  fsize_unlimit(&fs);
  assert_int_equal(rc, -EFBIG);
  assert_int_equal(stat(f->path, &st), 0);
  assert_int_equal(st.st_size, good);
  assert_int_equal(outlog_next_seq(l), 2);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 2000); /* lost, but counted */

  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "ok", 2, T0), 0);
  struct evbuffer *b = read_all(l, 0, 0);
  recs r = decode(b);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.c[1]->seq, 2);
  assert_int_equal(r.c[1]->offset, 2000); /* the gap shows */
  assert_memory_equal(r.c[1]->data.data, "ok", 2);
  r.n = 1;
  check_recs(&r, &m, 1, 0, 0);
  r.n = 2;
  recs_free(&r);
  outlog_free(l);

  /* Replayed from the file, the log is the same: the record after the gap is taken, and
   * the stream counts up to its end. */
  assert_int_equal(outlog_open_existing(&l, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_next_seq(l), 3);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 2002);
  struct evbuffer *replay = read_all(l, 0, 0);
  assert_true(buf_equal(replay, b));
  evbuffer_free(replay);
  outlog_free(l);

  /* Resumed, max_bytes weighs what is stored (1,002 bytes), not where the stream is. */
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.max_bytes = 1010;
  assert_int_equal(outlog_resume(&l, f->base, f->path, &o), 0);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "0123456789abcdef", 16, T0), 0);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), 2018);
  replay = read_all(l, 0, 0);
  r = decode(replay);
  assert_int_equal(r.n, 4); /* the 8 bytes that fit, then the truncation notice */
  assert_int_equal(r.c[2]->offset, 2002);
  assert_int_equal(r.c[2]->data.len, 8);
  assert_memory_equal(r.c[2]->data.data, "01234567", 8);
  assert_int_equal(r.c[3]->stream, OUTLOG_STDERR);
  recs_free(&r);
  evbuffer_free(replay);
  evbuffer_free(b);
  outlog_free(l);
  model_free(&m);
}

static void append_raw(const char *path, const void *p, size_t n) {
  int fd = open(path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, p, n), (ssize_t)n);
  close(fd);
}

/* Appends a hand-made stdout record to the file, framed as the log frames them. */
static void append_stdout_record(const char *path, uint64_t seq, uint64_t offset,
                                 const char *text) {
  chunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c.seq = seq;
  c.stream = OUTLOG_STDOUT;
  c.data.data = (uint8_t *)text;
  c.data.len = strlen(text);
  c.offset = offset;
  c.time_ms = T0;
  struct evbuffer *rec = evbuffer_new();
  assert_non_null(rec);
  assert_int_equal(gw_frame_append_pb(rec, &c.base), 0);
  append_raw(path, evbuffer_pullup(rec, -1), evbuffer_get_length(rec));
  evbuffer_free(rec);
}

/* Reopening rebuilds index and counters and ignores a torn last record. */
static void test_open_existing(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.index_every_records = 16;
  assert_int_equal(outlog_new(&l, f->base, f->path, &o), 0);
  fill_random(l, &m, 400, 11);
  uint64_t next = outlog_next_seq(l);
  size_t entries = outlog_index_entries(l);
  struct evbuffer *orig = read_all(l, 0, 0);
  outlog_free(l);

  static const struct {
    uint8_t bytes[12];
    size_t n;
  } tails[] = {
      {{0}, 0},                          /* clean end */
      {{0, 0, 0}, 3},                    /* partial prefix */
      {{0, 0, 0, 0, 40, 0x08, 0x99}, 7}, /* partial body */
      {{0}, 12},                         /* zero-filled tail: empty records */
      {{7, 0, 0, 0, 1, 0}, 6},           /* not a record of ours */
  };
  for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
    append_raw(f->path, tails[t].bytes, tails[t].n);
    outlog *re;
    assert_int_equal(outlog_open_existing(&re, f->base, f->path, &o), 0);
    assert_true(outlog_ended(re));
    assert_int_equal(outlog_next_seq(re), next);
    assert_int_equal(outlog_index_entries(re), entries);
    assert_int_equal(outlog_bytes(re, OUTLOG_STDOUT), m.len[0]);
    assert_int_equal(outlog_bytes(re, OUTLOG_STDERR), m.len[1]);
    assert_int_equal(outlog_append(re, OUTLOG_STDOUT, "x", 1, T0), -EINVAL);
    struct evbuffer *b = read_all(re, 0, 0);
    assert_true(buf_equal(b, orig));
    evbuffer_free(b);
    recs r = decode(orig);
    check_suffix(re, orig, &r, r.n / 2);
    recs_free(&r);
    outlog_free(re);
    assert_int_equal(truncate(f->path, (off_t)evbuffer_get_length(orig)), 0);
  }
  /* Well-formed records that do not continue the log (wrong seq, or an offset before
   * where its stream is) end it too. */
  assert_true(m.len[0] > 0);
  const struct {
    uint64_t seq, offset;
  } stale[] = {{next + 1, m.len[0]}, {next, m.len[0] - 1}, {next, 0}, {next, UINT64_MAX - 2}};
  for (size_t t = 0; t < sizeof stale / sizeof stale[0]; t++) {
    append_stdout_record(f->path, stale[t].seq, stale[t].offset, "stale");
    outlog *re;
    assert_int_equal(outlog_open_existing(&re, f->base, f->path, &o), 0);
    assert_int_equal(outlog_next_seq(re), next);
    assert_int_equal(outlog_bytes(re, OUTLOG_STDOUT), m.len[0]);
    outlog_free(re);
    assert_int_equal(truncate(f->path, (off_t)evbuffer_get_length(orig)), 0);
  }
  /* The right next record is taken, at its stream's end or past it (after output a
   * write error dropped). */
  append_stdout_record(f->path, next, m.len[0], "more");
  append_stdout_record(f->path, next + 1, m.len[0] + 10, "gap");
  outlog *re;
  assert_int_equal(outlog_open_existing(&re, f->base, f->path, &o), 0);
  assert_int_equal(outlog_next_seq(re), next + 2);
  assert_int_equal(outlog_bytes(re, OUTLOG_STDOUT), m.len[0] + 13);
  outlog_free(re);
  evbuffer_free(orig);
  model_free(&m);
}

/* A log resumed after a crash goes on past its last whole record: the torn tail is cut
 * off, seqs and stream offsets continue, and a reader sees one well-formed log. */
static void test_resume(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  outlog_opts o = OUTLOG_OPTS_INIT;
  o.index_every_records = 16;
  assert_int_equal(outlog_new(&l, f->base, f->path, &o), 0);
  fill_random(l, &m, 300, 5);
  uint64_t next = outlog_next_seq(l);
  struct evbuffer *orig = read_all(l, 0, 0);
  outlog_free(l);
  static const uint8_t torn[] = {0, 0, 0, 0, 40, 0x08, 0x99};
  append_raw(f->path, torn, sizeof torn);

  assert_int_equal(outlog_resume(&l, f->base, f->path, &o), 0);
  assert_false(outlog_ended(l));
  assert_int_equal(outlog_next_seq(l), next);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDOUT), m.len[0]);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDERR), m.len[1]);
  assert_int_equal(outlog_append(l, OUTLOG_STDERR, "after", 5, T0), 0);
  assert_int_equal(outlog_next_seq(l), next + 1);
  assert_int_equal(outlog_bytes(l, OUTLOG_STDERR), m.len[1] + 5);
  outlog_free(l);

  /* What the file holds now opens as the old records plus the new one. */
  outlog *re;
  assert_int_equal(outlog_open_existing(&re, f->base, f->path, &o), 0);
  assert_int_equal(outlog_next_seq(re), next + 1);
  assert_int_equal(outlog_bytes(re, OUTLOG_STDERR), m.len[1] + 5);
  struct evbuffer *b = read_all(re, 0, 0);
  assert_true(evbuffer_get_length(b) > evbuffer_get_length(orig));
  assert_memory_equal(evbuffer_pullup(b, -1), evbuffer_pullup(orig, -1), evbuffer_get_length(orig));
  evbuffer_free(b);
  outlog_free(re);

  /* Without a file, a resumed log is a new one. */
  unlink(f->path);
  assert_int_equal(outlog_resume(&l, f->base, f->path, &o), 0);
  assert_int_equal(outlog_next_seq(l), 1);
  assert_int_equal(outlog_append(l, OUTLOG_STDOUT, "x", 1, T0), 0);
  outlog_free(l);
  evbuffer_free(orig);
  model_free(&m);
}

/* ---- file segments (outlog_reader_read_segment) ----------------------------------- */

/* A value read_segment must leave alone when it hands nothing over. */
static int seg_sentinel;
#define SEG_SENTINEL ((struct evbuffer_file_segment *)&seg_sentinel)

/* The bytes a segment covers, as libevent hands them to a plain buffer (it maps or
 * reads the file), copied out. The whole segment is taken, so its length shows too. */
static struct evbuffer *segment_bytes(struct evbuffer_file_segment *seg) {
  struct evbuffer *mapped = evbuffer_new(), *b = evbuffer_new();
  assert_true(mapped && b);
  assert_int_equal(evbuffer_add_file_segment(mapped, seg, 0, -1), 0);
  size_t n = evbuffer_get_length(mapped);
  if (n) assert_int_equal(evbuffer_add(b, evbuffer_pullup(mapped, -1), n), 0);
  evbuffer_free(mapped);
  return b;
}

/* Takes the reader's next segment, which must be `want_len` bytes (> 0). */
static struct evbuffer_file_segment *take_segment(outlog_reader *r, size_t want_len) {
  struct evbuffer_file_segment *seg = SEG_SENTINEL;
  assert_int_equal(outlog_reader_read_segment(r, &seg), (ssize_t)want_len);
  assert_non_null(seg);
  assert_ptr_not_equal(seg, SEG_SENTINEL);
  return seg;
}

/* Asserts that read_segment returns `want` (0 or an error) and leaves *out alone. */
static void expect_no_segment(outlog_reader *r, ssize_t want) {
  struct evbuffer_file_segment *seg = SEG_SENTINEL;
  assert_int_equal(outlog_reader_read_segment(r, &seg), want);
  assert_ptr_equal(seg, SEG_SENTINEL);
}

/* Bytes [from, end) of `all` equal `b`. */
static void expect_tail(struct evbuffer *all, size_t from, struct evbuffer *b) {
  size_t n = evbuffer_get_length(all) - from;
  assert_int_equal(evbuffer_get_length(b), n);
  if (n) assert_memory_equal(evbuffer_pullup(b, -1), evbuffer_pullup(all, -1) + from, n);
}

/* File descriptors of this process open on the file at `path`. */
static int fds_open_on(const char *path) {
  struct stat want, st;
  assert_int_equal(stat(path, &want), 0);
  DIR *dir = opendir("/proc/self/fd");
  assert_non_null(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd != dirfd(dir) && fstat(fd, &st) == 0 && st.st_dev == want.st_dev &&
        st.st_ino == want.st_ino)
      n++;
  }
  closedir(dir);
  return n;
}

static void test_segment_equals_read(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 1500, 77);
  struct evbuffer *all = read_all(l, 0, 0);
  assert_true(evbuffer_get_length(all) > (1u << 20));

  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, 0, 0), 0);
  struct evbuffer_file_segment *seg = take_segment(r, evbuffer_get_length(all));
  struct evbuffer *b = segment_bytes(seg);
  assert_true(buf_equal(b, all));
  recs rs = decode(b);
  check_recs(&rs, &m, 1, 0, 1);
  recs_free(&rs);
  /* The reader has caught up: nothing more either way. */
  assert_true(outlog_reader_caught_up(r));
  expect_no_segment(r, 0);
  struct evbuffer *more = evbuffer_new();
  assert_non_null(more);
  assert_int_equal(outlog_reader_read(r, more, 1 << 20), 0);
  assert_int_equal(evbuffer_get_length(more), 0);
  evbuffer_free(more);
  evbuffer_file_segment_free(seg);
  outlog_reader_free(r);
  evbuffer_free(b);
  outlog_free(l);

  /* A finished run's file reopened for replay (read-only descriptor): the same. */
  assert_int_equal(outlog_open_existing(&l, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_reader_new(&r, l, 1, 0), 0);
  seg = take_segment(r, evbuffer_get_length(all));
  b = segment_bytes(seg);
  assert_true(buf_equal(b, all));
  expect_no_segment(r, 0);
  assert_true(outlog_reader_done(r));
  evbuffer_file_segment_free(seg);
  outlog_reader_free(r);
  outlog_free(l);
  evbuffer_free(b);
  evbuffer_free(all);
  model_free(&m);
}

static void test_segment_then_append(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, 0, 0), 0);
  /* Nothing written yet (no file either). */
  expect_no_segment(r, 0);

  append_both(l, &m, OUTLOG_STDOUT, (const uint8_t *)"one\n", 4, T0);
  append_both(l, &m, OUTLOG_STDERR, (const uint8_t *)"two\n", 4, T0 + 1);
  struct evbuffer *all = read_all(l, 0, 0);
  struct evbuffer_file_segment *first = take_segment(r, evbuffer_get_length(all));
  size_t first_len = evbuffer_get_length(all);
  expect_no_segment(r, 0);

  /* A live follower waits, is woken by the next appends, and gets only them. */
  int wakes = 0;
  outlog_reader_wait(r, count_cb, &wakes);
  spin(f->base);
  assert_int_equal(wakes, 0);
  static uint8_t big[3 * OUTLOG_CHUNK_MAX / 2];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
  append_both(l, &m, OUTLOG_STDOUT, big, sizeof big, T0 + 2);
  append_both(l, &m, OUTLOG_STDERR, (const uint8_t *)"three\n", 6, T0 + 3);
  spin(f->base);
  assert_int_equal(wakes, 1);
  evbuffer_free(all);
  all = read_all(l, 0, 0);
  struct evbuffer_file_segment *second = take_segment(r, evbuffer_get_length(all) - first_len);
  struct evbuffer *b = segment_bytes(second);
  expect_tail(all, first_len, b);
  recs rs = decode(b);
  assert_int_equal(rs.n, 3); /* the big append is two records */
  assert_int_equal(rs.c[0]->seq, 3);
  recs_free(&rs);
  evbuffer_free(b);
  /* The first segment still covers exactly the first records. */
  b = segment_bytes(first);
  assert_int_equal(evbuffer_get_length(b), first_len);
  assert_memory_equal(evbuffer_pullup(b, -1), evbuffer_pullup(all, -1), first_len);
  rs = decode(b);
  assert_int_equal(rs.n, 2);
  recs_free(&rs);
  evbuffer_free(b);

  /* All of the log went into segments: the follower is done once it ends. */
  expect_no_segment(r, 0);
  assert_false(outlog_reader_done(r));
  outlog_end(l);
  assert_true(outlog_reader_done(r));
  evbuffer_file_segment_free(first);
  evbuffer_file_segment_free(second);
  evbuffer_free(all);
  outlog_reader_free(r);
  outlog_free(l);
  model_free(&m);
}

static void test_segment_needs_unfiltered_reader_at_start(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 120, 13);
  struct evbuffer *all = read_all(l, 0, 0);
  recs rs = decode(all);
  assert_true(rs.n > 100);

  /* A filtered reader: never, not even once it has caught up. */
  for (int s = OUTLOG_STDOUT; s <= OUTLOG_STDERR; s++) {
    outlog_reader *r;
    assert_int_equal(outlog_reader_new(&r, l, 0, s), 0);
    expect_no_segment(r, -ENOTSUP);
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    drain(r, b, 64 << 10);
    expect_no_segment(r, -ENOTSUP);
    evbuffer_free(b);
    outlog_reader_free(r);
  }

  /* A reader from seq 50: not until outlog_reader_read has got it there; then the
   * segment goes on exactly where read stopped. */
  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, 50, 0), 0);
  expect_no_segment(r, -ENOTSUP);
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  assert_int_equal(outlog_reader_read(r, b, 1), (ssize_t)(rs.at[50] - rs.at[49]));
  assert_int_equal(outlog_reader_read(r, b, 1), (ssize_t)(rs.at[51] - rs.at[50]));
  struct evbuffer_file_segment *seg = take_segment(r, evbuffer_get_length(all) - rs.at[51]);
  struct evbuffer *sb = segment_bytes(seg);
  assert_int_equal(evbuffer_add_buffer(b, sb), 0);
  expect_tail(all, rs.at[49], b);
  expect_no_segment(r, 0);
  evbuffer_file_segment_free(seg);
  evbuffer_free(sb);
  evbuffer_free(b);
  outlog_reader_free(r);

  /* A reader from a seq not written yet: reads skip up to it, and only then does a
   * segment start, with that very record. */
  uint64_t next = outlog_next_seq(l);
  assert_int_equal(outlog_reader_new(&r, l, next + 2, 0), 0);
  b = evbuffer_new();
  assert_non_null(b);
  assert_int_equal(outlog_reader_read(r, b, 64 << 10), 0);
  expect_no_segment(r, -ENOTSUP);
  append_both(l, &m, OUTLOG_STDOUT, (const uint8_t *)"a", 1, T0);
  expect_no_segment(r, -ENOTSUP);
  append_both(l, &m, OUTLOG_STDERR, (const uint8_t *)"b", 1, T0);
  assert_int_equal(outlog_reader_read(r, b, 64 << 10), 0);
  assert_int_equal(evbuffer_get_length(b), 0);
  expect_no_segment(r, 0); /* at its start seq, caught up */
  append_both(l, &m, OUTLOG_STDOUT, (const uint8_t *)"c", 1, T0);
  evbuffer_free(all);
  all = read_all(l, next + 2, 0);
  seg = take_segment(r, evbuffer_get_length(all));
  sb = segment_bytes(seg);
  recs one = decode(sb);
  assert_int_equal(one.n, 1);
  assert_int_equal(one.c[0]->seq, next + 2);
  assert_memory_equal(one.c[0]->data.data, "c", 1);
  recs_free(&one);
  evbuffer_file_segment_free(seg);
  evbuffer_free(sb);
  evbuffer_free(b);
  outlog_reader_free(r);
  recs_free(&rs);
  evbuffer_free(all);
  outlog_free(l);
  model_free(&m);
}

/* The run and the follower both let go while the segment is still queued somewhere:
 * the segment keeps the file open and readable, and its release frees the rest (ASan
 * and valgrind see any leak). */
static void test_segment_outlives_reader_and_log(void **state) {
  fixture *f = *state;
  outlog *l;
  model m = {0};
  assert_int_equal(outlog_new(&l, f->base, f->path, NULL), 0);
  fill_random(l, &m, 300, 21);
  struct evbuffer *all = read_all(l, 0, 0);
  assert_int_equal(fds_open_on(f->path), 1);

  outlog_reader *r;
  assert_int_equal(outlog_reader_new(&r, l, 0, 0), 0);
  struct evbuffer_file_segment *seg = take_segment(r, evbuffer_get_length(all));
  outlog_reader_free(r);
  outlog_free(l);
  assert_int_equal(fds_open_on(f->path), 1);
  struct evbuffer *b = segment_bytes(seg);
  assert_true(buf_equal(b, all));
  evbuffer_free(b);
  evbuffer_file_segment_free(seg);
  assert_int_equal(fds_open_on(f->path), 0);

  /* Handed to a buffer, which keeps it after the caller's reference is gone. */
  assert_int_equal(outlog_open_existing(&l, f->base, f->path, NULL), 0);
  assert_int_equal(outlog_reader_new(&r, l, 0, 0), 0);
  seg = take_segment(r, evbuffer_get_length(all));
  struct evbuffer *queued = evbuffer_new();
  assert_non_null(queued);
  assert_int_equal(evbuffer_add_file_segment(queued, seg, 0, -1), 0);
  evbuffer_file_segment_free(seg);
  outlog_free(l);
  outlog_reader_free(r);
  assert_int_equal(fds_open_on(f->path), 1);
  assert_true(buf_equal(queued, all));
  evbuffer_free(queued);
  assert_int_equal(fds_open_on(f->path), 0);
  evbuffer_free(all);
  model_free(&m);
}

static void test_path(void **state) {
  (void)state;
  char buf[64];
  assert_int_equal(outlog_path(buf, sizeof buf, "/var/lib/prismq", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                   0);
  assert_string_equal(buf, "/var/lib/prismq/output/01ARZ3NDEKTSV4RRFFQ69G5FAV.out");
  /* Exactly full (the NUL included) fits; one byte less does not. */
  size_t need = strlen(buf) + 1;
  assert_int_equal(outlog_path(buf, need, "/var/lib/prismq", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), 0);
  assert_int_equal(outlog_path(buf, need - 1, "/var/lib/prismq", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                   -ENAMETOOLONG);
  assert_int_equal(strlen(buf), need - 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_path),
      cmocka_unit_test_setup_teardown(test_roundtrip_random, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_seq_middle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_index_thinning, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_filter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_filter_scan_budget, setup, teardown),
      cmocka_unit_test_setup_teardown(test_live_wake, setup, teardown),
      cmocka_unit_test_setup_teardown(test_live_followers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_late_reader_and_free_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncation_on_stdout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_records, setup, teardown),
      cmocka_unit_test_setup_teardown(test_append_updates, setup, teardown),
      cmocka_unit_test_setup_teardown(test_append_updates_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_append_updates_write_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_with_pending_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_in_callback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_error_rollback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_existing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
      cmocka_unit_test_setup_teardown(test_segment_equals_read, setup, teardown),
      cmocka_unit_test_setup_teardown(test_segment_then_append, setup, teardown),
      cmocka_unit_test_setup_teardown(test_segment_needs_unfiltered_reader_at_start, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_segment_outlives_reader_and_log, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
