/* Unit tests for server/runtab: the SQLite run table. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "ids.h"
#include "runtab.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define ST(x)        PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_##x

typedef Prismq__Runner__V1__Run Run;

struct kv {
  const char *k, *v;
};

/* A Run whose memory is all in this struct, so tests need no cleanup. */
#define MAX_ENTRIES 4
struct run_buf {
  Run run;
  char id[ID_RUN_LEN + 1];
  Prismq__Runner__V1__Run__LabelsEntry labels[MAX_ENTRIES];
  Prismq__Runner__V1__Run__LabelsEntry *label_ptrs[MAX_ENTRIES];
  Prismq__Runner__V1__Run__ParametersEntry params[MAX_ENTRIES];
  Prismq__Runner__V1__Run__ParametersEntry *param_ptrs[MAX_ENTRIES];
};

/* Fills b with a new run id (creation order) and the given fields; others zero. */
static void run_init(struct run_buf *b, const char *module_id, int status, const char *request_id,
                     const struct kv *labels, size_t nlabels) {
  assert_true(nlabels <= MAX_ENTRIES);
  memset(b, 0, sizeof *b);
  Run init = PRISMQ__RUNNER__V1__RUN__INIT;
  b->run = init;
  id_run_new(b->id, id_now_ms());
  b->run.run_id = b->id;
  b->run.module_id = (char *)module_id;
  b->run.status = status;
  b->run.request_id = (char *)request_id;
  for (size_t i = 0; i < nlabels; i++) {
    Prismq__Runner__V1__Run__LabelsEntry e = PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT;
    b->labels[i] = e;
    b->labels[i].key = (char *)labels[i].k;
    b->labels[i].value = (char *)labels[i].v;
    b->label_ptrs[i] = &b->labels[i];
  }
  b->run.n_labels = nlabels;
  b->run.labels = nlabels ? b->label_ptrs : NULL;
}

/* Asserts that a and b hold the same fields (same packed bytes: protobuf-c packs the
 * fields in number order and repeated entries in array order). */
static void assert_run_equal(const Run *a, const Run *b) {
  size_t na = prismq__runner__v1__run__get_packed_size(a);
  size_t nb = prismq__runner__v1__run__get_packed_size(b);
  assert_int_equal(na, nb);
  uint8_t *pa = malloc(na), *pb = malloc(nb);
  assert_non_null(pa);
  assert_non_null(pb);
  prismq__runner__v1__run__pack(a, pa);
  prismq__runner__v1__run__pack(b, pb);
  assert_memory_equal(pa, pb, na);
  free(pa);
  free(pb);
}

/* Asserts that the stored run with b's id equals b. */
static void assert_stored(runtab *t, const struct run_buf *b) {
  Run *got = NULL;
  assert_int_equal(runtab_get(t, b->id, &got), 0);
  assert_run_equal(got, &b->run);
  prismq__runner__v1__run__free_unpacked(got, NULL);
}

/* Asserts that listing (f, before, limit) returns exactly the runs want[0..nwant) in
 * that order, with the given more flag. */
static void expect_list(runtab *t, const runtab_filter *f, const char *before, size_t limit,
                        const char *const *want, size_t nwant, int want_more) {
  Run **runs = NULL;
  size_t n = 99;
  int more = 99;
  assert_int_equal(runtab_list(t, f, before, limit, &runs, &n, &more), 0);
  assert_int_equal(n, nwant);
  assert_int_equal(more, want_more);
  for (size_t i = 0; i < n; i++) assert_string_equal(runs[i]->run_id, want[i]);
  if (!n) assert_null(runs);
  runtab_list_free(runs, n);
}

static int setup_mem(void **state) {
  char err[256] = "";
  runtab *t = NULL;
  if (runtab_open(&t, ":memory:", err, sizeof err) != 0) {
    fprintf(stderr, "open: %s\n", err);
    return -1;
  }
  *state = t;
  return 0;
}

static int teardown_mem(void **state) {
  runtab_free(*state);
  return 0;
}

/* ---- insert / get ---- */

static void test_round_trip_every_field(void **state) {
  runtab *t = *state;
  static const struct kv labels[] = {{"team", "infra"}, {"env", ""}};
  struct run_buf b;
  run_init(&b, "emit", ST(COMPLETED), "req-1", labels, ARRAY_LEN(labels));
  b.run.exit_code = -1;
  b.run.term_signal = 9;
  b.run.error_message = "killed: \"x\"\n";
  Prismq__Runner__V1__Run__ParametersEntry e = PRISMQ__RUNNER__V1__RUN__PARAMETERS_ENTRY__INIT;
  for (int i = 0; i < 3; i++) {
    b.params[i] = e;
    b.param_ptrs[i] = &b.params[i];
  }
  b.params[0].key = "bytes", b.params[0].value = "1024";
  b.params[1].key = "empty", b.params[1].value = "";
  b.params[2].key = "utf8", b.params[2].value = "h\xc3\xa9";
  b.run.n_parameters = 3;
  b.run.parameters = b.param_ptrs;
  b.run.created_at_ms = 1700000000001;
  b.run.started_at_ms = 1700000000002;
  b.run.finished_at_ms = INT64_MAX;
  b.run.pid = 4242;
  b.run.stdout_bytes = UINT64_MAX;
  b.run.stderr_bytes = 7;
  b.run.user_cpu_ms = 11;
  b.run.sys_cpu_ms = 12;
  b.run.max_rss_kb = 13;
  b.run.owner = "spiffe://example.org/ci";
  assert_int_equal(runtab_insert(t, &b.run), 0);
  assert_int_equal(runtab_count(t), 1);

  Run *got = NULL;
  assert_int_equal(runtab_get(t, b.id, &got), 0);
  assert_string_equal(got->run_id, b.id);
  assert_string_equal(got->module_id, "emit");
  assert_int_equal(got->status, ST(COMPLETED));
  assert_int_equal(got->exit_code, -1);
  assert_int_equal(got->term_signal, 9);
  assert_string_equal(got->error_message, "killed: \"x\"\n");
  assert_int_equal(got->n_parameters, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_string_equal(got->parameters[i]->key, b.params[i].key);
    assert_string_equal(got->parameters[i]->value, b.params[i].value);
  }
  assert_int_equal(got->n_labels, 2);
  assert_string_equal(got->labels[0]->key, "team");
  assert_string_equal(got->labels[0]->value, "infra");
  assert_string_equal(got->labels[1]->key, "env");
  assert_string_equal(got->labels[1]->value, "");
  assert_true(got->created_at_ms == 1700000000001);
  assert_true(got->started_at_ms == 1700000000002);
  assert_true(got->finished_at_ms == INT64_MAX);
  assert_int_equal(got->pid, 4242);
  assert_true(got->stdout_bytes == UINT64_MAX);
  assert_int_equal(got->stderr_bytes, 7);
  assert_int_equal(got->user_cpu_ms, 11);
  assert_int_equal(got->sys_cpu_ms, 12);
  assert_int_equal(got->max_rss_kb, 13);
  assert_string_equal(got->request_id, "req-1");
  assert_string_equal(got->owner, "spiffe://example.org/ci");
  prismq__runner__v1__run__free_unpacked(got, NULL);
}

static void test_round_trip_zero_fields(void **state) {
  runtab *t = *state;
  struct run_buf b;
  run_init(&b, "", ST(UNSPECIFIED), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &b.run), 0);

  Run *got = NULL;
  assert_int_equal(runtab_get(t, b.id, &got), 0);
  assert_string_equal(got->run_id, b.id);
  /* Unset strings come back as "", never NULL, and maps as empty. */
  assert_string_equal(got->module_id, "");
  assert_string_equal(got->error_message, "");
  assert_string_equal(got->request_id, "");
  assert_string_equal(got->owner, "");
  assert_int_equal(got->status, ST(UNSPECIFIED));
  assert_int_equal(got->n_parameters, 0);
  assert_int_equal(got->n_labels, 0);
  assert_true(got->created_at_ms == 0 && got->finished_at_ms == 0 && got->pid == 0);
  prismq__runner__v1__run__free_unpacked(got, NULL);
  assert_stored(t, &b);

  /* A run given NULL strings is stored as if they were "". */
  struct run_buf n;
  run_init(&n, NULL, ST(QUEUED), NULL, NULL, 0);
  assert_int_equal(runtab_insert(t, &n.run), 0);
  assert_int_equal(runtab_get(t, n.id, &got), 0);
  assert_string_equal(got->module_id, "");
  assert_string_equal(got->request_id, "");
  assert_string_equal(got->owner, "");
  prismq__runner__v1__run__free_unpacked(got, NULL);
  /* Both are anonymous runs. */
  const runtab_filter anonymous = {.owner = ""};
  const char *want[] = {n.id, b.id};
  expect_list(t, &anonymous, NULL, 10, want, 2, 0);
}

static void test_get_missing(void **state) {
  runtab *t = *state;
  char id[ID_RUN_LEN + 1];
  id_run_new(id, id_now_ms());
  static Run sentinel;
  Run *got = &sentinel;
  assert_int_equal(runtab_get(t, id, &got), -ENOENT);
  assert_int_equal(runtab_get(t, "", &got), -ENOENT);
  assert_ptr_equal(got, &sentinel);
}

static void test_insert_invalid_id(void **state) {
  runtab *t = *state;
  struct run_buf b;
  run_init(&b, "m", ST(QUEUED), "", NULL, 0);
  b.run.run_id = "not-a-run-id";
  assert_int_equal(runtab_insert(t, &b.run), -EINVAL);
  b.run.run_id = "";
  assert_int_equal(runtab_insert(t, &b.run), -EINVAL);
  b.run.run_id = NULL;
  assert_int_equal(runtab_insert(t, &b.run), -EINVAL);
  assert_int_equal(runtab_count(t), 0);
}

static void test_duplicates(void **state) {
  runtab *t = *state;
  static const struct kv ghost[] = {{"ghost", "1"}};
  static const char *const gk[] = {"ghost"}, *const gv[] = {"1"};
  const runtab_filter by_ghost = {.label_keys = gk, .label_values = gv, .nlabels = 1};
  struct run_buf a, b, c, d;
  run_init(&a, "m", ST(QUEUED), "req-a", NULL, 0);
  assert_int_equal(runtab_insert(t, &a.run), 0);

  /* Same run_id, another request_id: -EBUSY, and its labels are not left behind. */
  run_init(&b, "other", ST(RUNNING), "req-b", ghost, 1);
  b.run.run_id = a.id;
  assert_int_equal(runtab_insert(t, &b.run), -EBUSY);
  expect_list(t, &by_ghost, NULL, 10, NULL, 0, 0);

  /* New run_id, same request_id: -EEXIST, nothing stored either. */
  run_init(&c, "other", ST(RUNNING), "req-a", ghost, 1);
  assert_int_equal(runtab_insert(t, &c.run), -EEXIST);
  expect_list(t, &by_ghost, NULL, 10, NULL, 0, 0);
  Run *got = NULL;
  assert_int_equal(runtab_get(t, c.id, &got), -ENOENT);
  assert_stored(t, &a);
  assert_int_equal(runtab_count(t), 1);

  /* Runs without a request_id never clash with each other. */
  run_init(&c, "m", ST(QUEUED), "", NULL, 0);
  run_init(&d, "m", ST(QUEUED), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &c.run), 0);
  assert_int_equal(runtab_insert(t, &d.run), 0);
  assert_int_equal(runtab_count(t), 3);

  /* The table still works after the failed transactions. */
  run_init(&b, "m", ST(QUEUED), "req-b", ghost, 1);
  assert_int_equal(runtab_insert(t, &b.run), 0);
  const char *want[] = {b.id};
  expect_list(t, &by_ghost, NULL, 10, want, 1, 0);
}

static void test_duplicate_label_key_last_wins(void **state) {
  runtab *t = *state;
  static const struct kv labels[] = {{"k", "first"}, {"k", "last"}};
  static const char *const k[] = {"k"}, *const first[] = {"first"}, *const last[] = {"last"};
  struct run_buf b;
  run_init(&b, "m", ST(QUEUED), "", labels, 2);
  assert_int_equal(runtab_insert(t, &b.run), 0);
  assert_stored(t, &b); /* the record keeps both entries */
  const runtab_filter f_first = {.label_keys = k, .label_values = first, .nlabels = 1};
  const runtab_filter f_last = {.label_keys = k, .label_values = last, .nlabels = 1};
  const char *want[] = {b.id};
  expect_list(t, &f_first, NULL, 10, NULL, 0, 0);
  expect_list(t, &f_last, NULL, 10, want, 1, 0);
}

static void test_update(void **state) {
  runtab *t = *state;
  static const int running[] = {ST(RUNNING)}, queued[] = {ST(QUEUED)};
  const runtab_filter f_running = {.statuses = running, .nstatuses = 1};
  const runtab_filter f_queued = {.statuses = queued, .nstatuses = 1};
  static const struct kv labels[] = {{"team", "x"}};
  struct run_buf b, other;
  run_init(&b, "m", ST(QUEUED), "req", labels, 1);
  run_init(&other, "m", ST(QUEUED), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &b.run), 0);
  assert_int_equal(runtab_insert(t, &other.run), 0);

  b.run.status = ST(RUNNING);
  b.run.pid = 77;
  b.run.started_at_ms = 5;
  assert_int_equal(runtab_update(t, &b.run), 0);
  assert_stored(t, &b);
  assert_stored(t, &other);
  const char *want_running[] = {b.id}, *want_queued[] = {other.id};
  expect_list(t, &f_running, NULL, 10, want_running, 1, 0);
  expect_list(t, &f_queued, NULL, 10, want_queued, 1, 0);

  b.run.status = ST(COMPLETED);
  b.run.finished_at_ms = 9;
  b.run.stdout_bytes = 100;
  assert_int_equal(runtab_update(t, &b.run), 0);
  assert_stored(t, &b);
  expect_list(t, &f_running, NULL, 10, NULL, 0, 0);

  struct run_buf missing;
  run_init(&missing, "m", ST(RUNNING), "", NULL, 0);
  assert_int_equal(runtab_update(t, &missing.run), -ENOENT);
  assert_int_equal(runtab_count(t), 2);
}

static void test_get_by_request_id(void **state) {
  runtab *t = *state;
  struct run_buf a, b, none;
  run_init(&a, "m", ST(QUEUED), "req-a", NULL, 0);
  run_init(&b, "m", ST(QUEUED), "req-b", NULL, 0);
  run_init(&none, "m", ST(QUEUED), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &a.run), 0);
  assert_int_equal(runtab_insert(t, &b.run), 0);
  assert_int_equal(runtab_insert(t, &none.run), 0);

  Run *got = NULL;
  assert_int_equal(runtab_get_by_request_id(t, "req-b", &got), 0);
  assert_run_equal(got, &b.run);
  prismq__runner__v1__run__free_unpacked(got, NULL);
  assert_int_equal(runtab_get_by_request_id(t, "req-a", &got), 0);
  assert_run_equal(got, &a.run);
  prismq__runner__v1__run__free_unpacked(got, NULL);

  got = NULL;
  assert_int_equal(runtab_get_by_request_id(t, "req-c", &got), -ENOENT);
  /* A run without a request_id is not found by "". */
  assert_int_equal(runtab_get_by_request_id(t, "", &got), -ENOENT);
  assert_null(got);
}

/* ---- list ---- */

/* Six runs, oldest first:
 *   0: a QUEUED    team=x          owner alice
 *   1: b RUNNING   team=x env=prod owner "" (anonymous)
 *   2: a COMPLETED env=prod        owner bob
 *   3: a FAILED    team=x env=prod owner alice
 *   4: b COMPLETED team=y env=prod owner alice
 *   5: a COMPLETED team=x env=dev  owner "" */
struct fixture {
  runtab *t;
  struct run_buf r[6];
};

static int setup_fixture(void **state) {
  static const struct kv l0[] = {{"team", "x"}};
  static const struct kv l1[] = {{"team", "x"}, {"env", "prod"}};
  static const struct kv l2[] = {{"env", "prod"}};
  static const struct kv l3[] = {{"team", "x"}, {"env", "prod"}};
  static const struct kv l4[] = {{"env", "prod"}, {"team", "y"}};
  static const struct kv l5[] = {{"team", "x"}, {"env", "dev"}};
  struct fixture *fx = calloc(1, sizeof *fx);
  if (!fx || setup_mem(state)) return -1;
  fx->t = *state;
  run_init(&fx->r[0], "a", ST(QUEUED), "", l0, ARRAY_LEN(l0));
  run_init(&fx->r[1], "b", ST(RUNNING), "", l1, ARRAY_LEN(l1));
  run_init(&fx->r[2], "a", ST(COMPLETED), "", l2, ARRAY_LEN(l2));
  run_init(&fx->r[3], "a", ST(FAILED), "", l3, ARRAY_LEN(l3));
  run_init(&fx->r[4], "b", ST(COMPLETED), "", l4, ARRAY_LEN(l4));
  run_init(&fx->r[5], "a", ST(COMPLETED), "", l5, ARRAY_LEN(l5));
  static const char *const owners[] = {"alice", "", "bob", "alice", "alice", ""};
  for (size_t i = 0; i < ARRAY_LEN(owners); i++) fx->r[i].run.owner = (char *)owners[i];
  /* Inserted out of order: the listing order must come from the ids alone. */
  static const int order[] = {3, 0, 5, 1, 4, 2};
  for (size_t i = 0; i < ARRAY_LEN(order); i++)
    if (runtab_insert(fx->t, &fx->r[order[i]].run) != 0) return -1;
  *state = fx;
  return 0;
}

static int teardown_fixture(void **state) {
  struct fixture *fx = *state;
  runtab_free(fx->t);
  free(fx);
  return 0;
}

/* Lists with f and asserts the result is runs idx[0..n) of the fixture, in order. */
static void expect_idx(struct fixture *fx, const runtab_filter *f, const int *idx, size_t n) {
  const char *want[6] = {NULL};
  for (size_t i = 0; i < n; i++) want[i] = fx->r[idx[i]].id;
  expect_list(fx->t, f, NULL, 100, want, n, 0);
}

static void test_list_newest_first(void **state) {
  struct fixture *fx = *state;
  static const int all[] = {5, 4, 3, 2, 1, 0};
  expect_idx(fx, NULL, all, 6);
  runtab_filter empty = RUNTAB_FILTER_INIT;
  expect_idx(fx, &empty, all, 6);
  empty.module_id = ""; /* "" is any module */
  expect_idx(fx, &empty, all, 6);
  assert_int_equal(runtab_count(fx->t), 6);
  for (size_t i = 0; i < 6; i++) assert_stored(fx->t, &fx->r[i]);
}

static void test_list_filter_statuses(void **state) {
  struct fixture *fx = *state;
  static const int done[] = {ST(COMPLETED), ST(FAILED)};
  const runtab_filter f_done = {.statuses = done, .nstatuses = 2};
  static const int want_done[] = {5, 4, 3, 2};
  expect_idx(fx, &f_done, want_done, 4);

  static const int active[] = {ST(RUNNING), ST(QUEUED), ST(RUNNING)};
  const runtab_filter f_active = {.statuses = active, .nstatuses = 3};
  static const int want_active[] = {1, 0};
  expect_idx(fx, &f_active, want_active, 2);

  static const int lost[] = {ST(LOST)};
  const runtab_filter f_lost = {.statuses = lost, .nstatuses = 1};
  expect_idx(fx, &f_lost, NULL, 0);
}

static void test_list_filter_module(void **state) {
  struct fixture *fx = *state;
  runtab_filter f = RUNTAB_FILTER_INIT;
  f.module_id = "a";
  static const int want_a[] = {5, 3, 2, 0};
  expect_idx(fx, &f, want_a, 4);
  f.module_id = "b";
  static const int want_b[] = {4, 1};
  expect_idx(fx, &f, want_b, 2);
  f.module_id = "nope";
  expect_idx(fx, &f, NULL, 0);
}

static void test_list_filter_labels(void **state) {
  struct fixture *fx = *state;
  static const char *const keys[] = {"team", "env"}, *const vals[] = {"x", "prod"};
  /* Both labels must match: 0 (team only), 2 (env only) and 5 (env=dev) do not. */
  const runtab_filter both = {.label_keys = keys, .label_values = vals, .nlabels = 2};
  static const int want_both[] = {3, 1};
  expect_idx(fx, &both, want_both, 2);

  const runtab_filter team = {.label_keys = keys, .label_values = vals, .nlabels = 1};
  static const int want_team[] = {5, 3, 1, 0};
  expect_idx(fx, &team, want_team, 4);

  /* The value matters, not only the key. */
  static const char *const env[] = {"env"}, *const dev[] = {"dev"}, *const y[] = {"y"};
  const runtab_filter f_dev = {.label_keys = env, .label_values = dev, .nlabels = 1};
  static const int want_dev[] = {5};
  expect_idx(fx, &f_dev, want_dev, 1);
  const runtab_filter f_env_y = {.label_keys = env, .label_values = y, .nlabels = 1};
  expect_idx(fx, &f_env_y, NULL, 0);
}

static void test_list_filter_combined(void **state) {
  struct fixture *fx = *state;
  static const char *const keys[] = {"team", "env"}, *const vals[] = {"x", "prod"};
  static const int done[] = {ST(COMPLETED), ST(FAILED)};
  runtab_filter f = {.statuses = done, .nstatuses = 2, .module_id = "a"};
  static const int want_sm[] = {5, 3, 2};
  expect_idx(fx, &f, want_sm, 3);

  f.label_keys = keys;
  f.label_values = vals;
  f.nlabels = 2;
  static const int want_all[] = {3};
  expect_idx(fx, &f, want_all, 1);

  f.module_id = "b"; /* 1 has both labels but is RUNNING; 4 has team=y */
  expect_idx(fx, &f, NULL, 0);

  runtab_filter g = {.module_id = "b", .label_keys = keys, .label_values = vals, .nlabels = 2};
  static const int want_g[] = {1};
  expect_idx(fx, &g, want_g, 1);
}

static void test_list_filter_owner(void **state) {
  struct fixture *fx = *state;
  runtab_filter f = RUNTAB_FILTER_INIT;
  f.owner = "alice";
  static const int want_alice[] = {4, 3, 0};
  expect_idx(fx, &f, want_alice, 3);
  f.owner = "bob";
  static const int want_bob[] = {2};
  expect_idx(fx, &f, want_bob, 1);
  f.owner = ""; /* unlike module_id, "" is a condition: anonymous runs only */
  static const int want_anon[] = {5, 1};
  expect_idx(fx, &f, want_anon, 2);
  f.owner = NULL;
  static const int all[] = {5, 4, 3, 2, 1, 0};
  expect_idx(fx, &f, all, 6);
  /* Equality, exactly: no case folding, no prefix. */
  f.owner = "Alice";
  expect_idx(fx, &f, NULL, 0);
  f.owner = "ali";
  expect_idx(fx, &f, NULL, 0);

  /* The listing gives whole records, owner included. */
  f.owner = "alice";
  Run **runs = NULL;
  size_t n = 0;
  int more = 99;
  assert_int_equal(runtab_list(fx->t, &f, NULL, 10, &runs, &n, &more), 0);
  assert_int_equal(n, 3);
  for (size_t i = 0; i < n; i++) assert_run_equal(runs[i], &fx->r[want_alice[i]].run);
  runtab_list_free(runs, n);
}

/* The owner with each other condition; the same filters with and without an owner
 * alternate, so a statement kept for one shape never answers the other. */
static void test_list_filter_owner_combined(void **state) {
  struct fixture *fx = *state;
  static const char *const keys[] = {"team", "env"}, *const vals[] = {"x", "prod"};
  static const int done[] = {ST(COMPLETED), ST(FAILED)};
  for (int round = 0; round < 2; round++) {
    runtab_filter f = {.statuses = done, .nstatuses = 2, .owner = "alice"};
    static const int want_s[] = {4, 3};
    expect_idx(fx, &f, want_s, 2);
    f.owner = "";
    static const int want_s_anon[] = {5};
    expect_idx(fx, &f, want_s_anon, 1);
    f.owner = NULL;
    static const int want_s_any[] = {5, 4, 3, 2};
    expect_idx(fx, &f, want_s_any, 4);

    runtab_filter g = {.module_id = "a", .owner = "alice"};
    static const int want_m[] = {3, 0};
    expect_idx(fx, &g, want_m, 2);
    g.owner = "";
    static const int want_m_anon[] = {5};
    expect_idx(fx, &g, want_m_anon, 1);
    g.module_id = "b";
    static const int want_b_anon[] = {1};
    expect_idx(fx, &g, want_b_anon, 1);

    runtab_filter h = {.owner = "alice", .label_keys = keys, .label_values = vals, .nlabels = 1};
    static const int want_l[] = {3, 0};
    expect_idx(fx, &h, want_l, 2);
    h.nlabels = 2;
    static const int want_l2[] = {3};
    expect_idx(fx, &h, want_l2, 1);
    h.owner = ""; /* 1 has both labels and no owner */
    static const int want_l2_anon[] = {1};
    expect_idx(fx, &h, want_l2_anon, 1);
    h.owner = NULL;
    static const int want_l2_any[] = {3, 1};
    expect_idx(fx, &h, want_l2_any, 2);

    /* Every condition at once. */
    runtab_filter all = {.statuses = done,
                         .nstatuses = 2,
                         .module_id = "a",
                         .owner = "alice",
                         .label_keys = keys,
                         .label_values = vals,
                         .nlabels = 2};
    static const int want_all[] = {3};
    expect_idx(fx, &all, want_all, 1);
    all.owner = "bob"; /* 2 is bob's, done and a, but has no team label */
    expect_idx(fx, &all, NULL, 0);
    all.nlabels = 0;
    static const int want_bob[] = {2};
    expect_idx(fx, &all, want_bob, 1);
  }
}

static void test_list_paging(void **state) {
  runtab *t = *state;
  struct run_buf r[5];
  for (size_t i = 0; i < 5; i++) {
    run_init(&r[i], i % 2 ? "odd" : "even", ST(COMPLETED), "", NULL, 0);
    assert_int_equal(runtab_insert(t, &r[i].run), 0);
  }
  /* limit 2: pages {4,3} {2,1} {0}, each run exactly once, more on all but the last. */
  const char *want[][2] = {{r[4].id, r[3].id}, {r[2].id, r[1].id}, {r[0].id, NULL}};
  const size_t nwant[] = {2, 2, 1};
  const char *cursor = NULL;
  for (size_t page = 0; page < 3; page++) {
    expect_list(t, NULL, cursor, 2, want[page], nwant[page], page < 2);
    cursor = want[page][nwant[page] - 1];
  }
  /* Past the last run: an empty last page. */
  expect_list(t, NULL, r[0].id, 2, NULL, 0, 0);

  /* The more flag at the edges: exactly all, one fewer. */
  const char *all[] = {r[4].id, r[3].id, r[2].id, r[1].id, r[0].id};
  expect_list(t, NULL, NULL, 5, all, 5, 0);
  expect_list(t, NULL, NULL, 4, all, 4, 1);
  expect_list(t, NULL, "", 1, all, 1, 1); /* "" = from the newest */

  /* Paging a filtered listing: "even" is 4, 2, 0. */
  const runtab_filter even = {.module_id = "even"};
  const char *p1[] = {r[4].id, r[2].id}, *p2[] = {r[0].id};
  expect_list(t, &even, NULL, 2, p1, 2, 1);
  expect_list(t, &even, r[2].id, 2, p2, 1, 0);
}

/* Paging by owner: each owner's runs exactly once, newest first, with runs of other
 * owners in between; a cursor may be a run of another owner. */
static void test_list_paging_owner(void **state) {
  runtab *t = *state;
  static const char *const owners[] = {"alice", "", "bob"};
  enum { N = 9 };
  struct run_buf r[N];
  for (size_t i = 0; i < N; i++) {
    run_init(&r[i], "m", ST(COMPLETED), "", NULL, 0);
    r[i].run.owner = (char *)owners[i % 3];
    assert_int_equal(runtab_insert(t, &r[i].run), 0);
  }
  for (size_t o = 0; o < ARRAY_LEN(owners); o++) {
    const runtab_filter f = {.owner = owners[o]};
    /* This owner's runs, newest first: o + 6, o + 3, o; pages of 2. */
    const char *p1[] = {r[o + 6].id, r[o + 3].id}, *p2[] = {r[o].id};
    expect_list(t, &f, NULL, 2, p1, 2, 1);
    expect_list(t, &f, r[o + 3].id, 2, p2, 1, 0);
    expect_list(t, &f, r[o].id, 2, NULL, 0, 0);
    /* From the newest run, whoever owns it (r[8] is bob's). */
    expect_list(t, &f, r[8].id, 1, o == 2 ? p1 + 1 : p1, 1, 1);
  }
  /* With a status too, still in order. */
  static const int completed[] = {ST(COMPLETED)};
  const runtab_filter g = {.statuses = completed, .nstatuses = 1, .owner = ""};
  const char *anon[] = {r[7].id, r[4].id, r[1].id};
  expect_list(t, &g, NULL, 3, anon, 3, 0);
  expect_list(t, &g, r[7].id, 1, anon + 1, 1, 1);

  /* An update keeps the owner column (it rewrites status and record only). */
  r[4].run.status = ST(FAILED);
  assert_int_equal(runtab_update(t, &r[4].run), 0);
  const char *anon_after[] = {r[7].id, r[1].id};
  expect_list(t, &g, NULL, 3, anon_after, 2, 0);
  const runtab_filter any_anon = {.owner = ""};
  expect_list(t, &any_anon, NULL, 3, anon, 3, 0);
}

static void test_list_cursor_gone(void **state) {
  runtab *t = *state;
  struct run_buf r[6];
  for (size_t i = 0; i < 6; i++) {
    run_init(&r[i], "m", ST(COMPLETED), "", NULL, 0);
    if (i != 3) assert_int_equal(runtab_insert(t, &r[i].run), 0);
  }
  /* Run 3 was never stored: its id still splits the runs. */
  const char *older[] = {r[2].id, r[1].id};
  expect_list(t, NULL, r[3].id, 2, older, 2, 1);
  const char *oldest[] = {r[0].id};
  expect_list(t, NULL, r[1].id, 2, oldest, 1, 0);

  /* A cursor newer than every run lists from the newest. */
  char future[ID_RUN_LEN + 1];
  id_run_new(future, id_now_ms());
  const char *newest[] = {r[5].id, r[4].id};
  expect_list(t, NULL, future, 2, newest, 2, 1);
  /* One older than every run lists nothing. */
  expect_list(t, NULL, "00000000000000000000000000", 2, NULL, 0, 0);
}

static void test_list_invalid(void **state) {
  runtab *t = *state;
  Run **runs = (Run **)state;
  size_t n = 99;
  int more = 99;
  assert_int_equal(runtab_list(t, NULL, NULL, 0, &runs, &n, &more), -EINVAL);
  runtab_filter f = {.nstatuses = 1}; /* no array */
  assert_int_equal(runtab_list(t, &f, NULL, 10, &runs, &n, &more), -EINVAL);
  static const char *const k[] = {"k"};
  runtab_filter g = {.label_keys = k, .nlabels = 1}; /* no values */
  assert_int_equal(runtab_list(t, &g, NULL, 10, &runs, &n, &more), -EINVAL);
  int many[RUNTAB_FILTER_MAX + 1] = {0};
  runtab_filter h = {.statuses = many, .nstatuses = RUNTAB_FILTER_MAX + 1};
  assert_int_equal(runtab_list(t, &h, NULL, 10, &runs, &n, &more), -EINVAL);
  assert_ptr_equal(runs, (Run **)state);
  assert_int_equal(n, 99);
  assert_int_equal(more, 99);
  /* The largest filter is accepted. */
  h.nstatuses = RUNTAB_FILTER_MAX;
  expect_list(t, &h, NULL, 10, NULL, 0, 0);
}

/* More filter shapes than statements kept: results stay right as they are replaced. */
static void test_list_many_shapes(void **state) {
  struct fixture *fx = *state;
  static const int statuses[] = {ST(COMPLETED), ST(COMPLETED), ST(COMPLETED), ST(COMPLETED),
                                 ST(COMPLETED), ST(COMPLETED), ST(COMPLETED), ST(COMPLETED),
                                 ST(COMPLETED), ST(COMPLETED), ST(COMPLETED), ST(COMPLETED)};
  static const int want[] = {5, 4, 2};
  for (int round = 0; round < 3; round++) {
    for (size_t n = 1; n <= ARRAY_LEN(statuses); n++) {
      const runtab_filter f = {.statuses = statuses, .nstatuses = n};
      expect_idx(fx, &f, want, 3);
      const char *cursor_want[] = {fx->r[2].id};
      expect_list(fx->t, &f, fx->r[4].id, 5, cursor_want, 1, 0);
    }
  }
}

/* ---- active ---- */

static void test_active(void **state) {
  runtab *t = *state;
  struct run_buf q, r, c, q2;
  run_init(&q, "m", ST(QUEUED), "", NULL, 0);
  run_init(&r, "m", ST(RUNNING), "req-r", NULL, 0);
  r.run.pid = 1234;
  run_init(&c, "m", ST(COMPLETED), "", NULL, 0);
  run_init(&q2, "m", ST(QUEUED), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &q.run), 0);
  assert_int_equal(runtab_insert(t, &r.run), 0);
  assert_int_equal(runtab_insert(t, &c.run), 0);
  assert_int_equal(runtab_insert(t, &q2.run), 0);

  /* The active runs, oldest first, whole; a terminal one is not among them. */
  Prismq__Runner__V1__Run **runs = NULL;
  size_t n = 99;
  assert_int_equal(runtab_active(t, &runs, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(runs[0]->run_id, q.id);
  assert_string_equal(runs[1]->run_id, r.id);
  assert_int_equal(runs[1]->pid, 1234);
  assert_string_equal(runs[2]->run_id, q2.id);
  runtab_list_free(runs, n);

  /* Once they are terminal, none. */
  q.run.status = r.run.status = q2.run.status = ST(LOST);
  assert_int_equal(runtab_update(t, &q.run), 0);
  assert_int_equal(runtab_update(t, &r.run), 0);
  assert_int_equal(runtab_update(t, &q2.run), 0);
  runs = NULL;
  assert_int_equal(runtab_active(t, &runs, &n), 0);
  assert_int_equal(n, 0);
  assert_null(runs);
}

/* ---- purge ---- */

/* Fills b as run_init does (a new id: creation order), created and finished at the
 * given times. */
static void run_at(struct run_buf *b, int status, int64_t created_ms, int64_t finished_ms,
                   const struct kv *labels, size_t nlabels) {
  run_init(b, "m", status, "", labels, nlabels);
  b->run.created_at_ms = created_ms;
  b->run.finished_at_ms = finished_ms;
}

/* Purges and asserts success and the ids deleted, in order. */
static void expect_purge(runtab *t, int64_t cutoff_ms, uint64_t max_runs, size_t batch,
                         const char *const *want, size_t nwant) {
  char ids[16][ID_RUN_LEN + 1];
  assert_true(batch <= ARRAY_LEN(ids));
  size_t n = 99;
  uint64_t before = runtab_count(t);
  assert_int_equal(runtab_purge(t, cutoff_ms, max_runs, batch, ids, &n), 0);
  assert_int_equal(n, nwant);
  for (size_t i = 0; i < n; i++) assert_string_equal(ids[i], want[i]);
  assert_int_equal(runtab_count(t), before - n);
  Run *got = NULL;
  for (size_t i = 0; i < n; i++) assert_int_equal(runtab_get(t, want[i], &got), -ENOENT);
}

/* By age: terminal runs created and finished before the cutoff go, oldest first; a run
 * that never recorded a finish counts as finished when created; a run created before
 * the cutoff but finished after it stays, and does not stop the runs after it from
 * going; active runs stay whatever their age; their labels go with them. */
static void test_purge_by_age(void **state) {
  runtab *t = *state;
  static const struct kv team[] = {{"team", "x"}};
  static const char *const k[] = {"team"}, *const v[] = {"x"};
  const runtab_filter by_team = {.label_keys = k, .label_values = v, .nlabels = 1};
  struct run_buf r[8];
  run_at(&r[0], ST(COMPLETED), 100, 200, team, 1);
  run_at(&r[1], ST(FAILED), 150, 900, team, 1); /* a long run: finished late */
  run_at(&r[2], ST(QUEUED), 160, 0, team, 1);
  run_at(&r[3], ST(RUNNING), 170, 0, NULL, 0);
  run_at(&r[4], ST(CANCELLED), 180, 0, team, 1); /* cancelled while queued */
  run_at(&r[5], ST(TIMED_OUT), 190, 400, NULL, 0);
  run_at(&r[6], ST(COMPLETED), 600, 700, team, 1);
  run_at(&r[7], ST(LOST), 800, 850, NULL, 0);
  for (size_t i = 0; i < ARRAY_LEN(r); i++) assert_int_equal(runtab_insert(t, &r[i].run), 0);

  const char *first[] = {r[0].id, r[4].id, r[5].id};
  expect_purge(t, 500, 0, 10, first, 3);
  const char *left[] = {r[7].id, r[6].id, r[3].id, r[2].id, r[1].id};
  expect_list(t, NULL, NULL, 10, left, 5, 0);
  const char *teams[] = {r[6].id, r[2].id, r[1].id};
  expect_list(t, &by_team, NULL, 10, teams, 3, 0);
  expect_purge(t, 500, 0, 10, NULL, 0); /* nothing more for this cutoff */

  /* Later: the long run and the newer ones are old enough too; active runs never. */
  const char *second[] = {r[1].id, r[6].id, r[7].id};
  expect_purge(t, 100000, 0, 10, second, 3);
  const char *active[] = {r[3].id, r[2].id};
  expect_list(t, NULL, NULL, 10, active, 2, 0);
  expect_list(t, &by_team, NULL, 10, active + 1, 1, 0);
  assert_stored(t, &r[2]);
  assert_stored(t, &r[3]);
  expect_purge(t, INT64_MAX, 0, 10, NULL, 0);
}

/* At most `batch` runs a call, oldest first; a full batch means "call again", a short
 * one "done". */
static void test_purge_batches(void **state) {
  runtab *t = *state;
  struct run_buf r[7];
  for (size_t i = 0; i < ARRAY_LEN(r); i++) {
    run_at(&r[i], ST(COMPLETED), 100 + (int64_t)i, 200 + (int64_t)i, NULL, 0);
    assert_int_equal(runtab_insert(t, &r[i].run), 0);
  }
  const char *ids[] = {r[0].id, r[1].id, r[2].id, r[3].id, r[4].id, r[5].id, r[6].id};
  expect_purge(t, 1000, 0, 3, ids, 3);
  expect_purge(t, 1000, 0, 3, ids + 3, 3);
  expect_purge(t, 1000, 0, 3, ids + 6, 1);
  assert_int_equal(runtab_count(t), 0);
  expect_purge(t, 1000, 0, 3, NULL, 0);

  char out[1][ID_RUN_LEN + 1];
  size_t n = 99;
  assert_int_equal(runtab_purge(t, 1000, 0, 0, out, &n), -EINVAL);
  assert_int_equal(n, 99);
}

/* By count: while the table holds more than max_runs runs, the oldest terminal runs
 * go; active runs count but stay, even the oldest. Both limits together: a run goes
 * if either says so. */
static void test_purge_max_runs(void **state) {
  runtab *t = *state;
  /* Oldest first: Q T1 T2 T3 R T4 T5 T6 (Q queued, R running). */
  struct run_buf q, r, tr[6];
  int64_t now = 1000000;
  run_at(&q, ST(QUEUED), now, 0, NULL, 0);
  assert_int_equal(runtab_insert(t, &q.run), 0);
  for (size_t i = 0; i < 6; i++) {
    if (i == 3) {
      run_at(&r, ST(RUNNING), now, 0, NULL, 0);
      assert_int_equal(runtab_insert(t, &r.run), 0);
    }
    run_at(&tr[i], i % 2 ? ST(FAILED) : ST(COMPLETED), now + (int64_t)i, now + 10 + (int64_t)i,
           NULL, 0);
    assert_int_equal(runtab_insert(t, &tr[i].run), 0);
  }
  const char *ids[] = {tr[0].id, tr[1].id, tr[2].id, tr[3].id, tr[4].id, tr[5].id};
  assert_int_equal(runtab_count(t), 8);
  expect_purge(t, 0, 8, 10, NULL, 0); /* at the limit */
  expect_purge(t, 0, 100, 10, NULL, 0);
  expect_purge(t, 0, 5, 2, ids, 2); /* 3 too many: in batches */
  expect_purge(t, 0, 5, 2, ids + 2, 1);
  expect_purge(t, 0, 5, 2, NULL, 0);
  assert_int_equal(runtab_count(t), 5);

  /* The age limit alone takes none of these (created after the cutoff); with a
   * count limit too, the count's share goes. */
  expect_purge(t, now, 0, 10, NULL, 0);
  expect_purge(t, now + 15, 4, 10, ids + 3,
               2); /* T4 by count, T5 by age (T6 finished at the cutoff) */
  /* A limit below the active runs: every terminal run goes, the active ones stay. */
  expect_purge(t, 0, 1, 10, ids + 5, 1);
  const char *active[] = {r.id, q.id};
  expect_list(t, NULL, NULL, 10, active, 2, 0);
  expect_purge(t, INT64_MAX, 1, 10, NULL, 0);
}

/* No limit: nothing to do, and nothing is touched. */
static void test_purge_no_limits(void **state) {
  runtab *t = *state;
  struct run_buf r;
  run_at(&r, ST(COMPLETED), 1, 2, NULL, 0);
  assert_int_equal(runtab_insert(t, &r.run), 0);
  expect_purge(t, 0, 0, 1, NULL, 0);
  expect_purge(t, -5, 0, 1, NULL, 0);
  assert_stored(t, &r);
}

/* ---- files ---- */

struct tmpdir {
  char dir[64];
  char db[96];
};

static void tmpdir_make(struct tmpdir *d) {
  snprintf(d->dir, sizeof d->dir, "/tmp/test_runtab.XXXXXX");
  assert_non_null(mkdtemp(d->dir));
  snprintf(d->db, sizeof d->db, "%s/runs.db", d->dir);
}

static void tmpdir_remove(struct tmpdir *d) {
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  char p[128];
  for (size_t i = 0; i < ARRAY_LEN(suffixes); i++) {
    snprintf(p, sizeof p, "%s%s", d->db, suffixes[i]);
    unlink(p);
  }
  assert_int_equal(rmdir(d->dir), 0);
}

static void test_file_reopen(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  char err[256] = "";
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);

  static const struct kv labels[] = {{"team", "x"}, {"env", "prod"}};
  struct run_buf r[3];
  for (size_t i = 0; i < 3; i++) {
    run_init(&r[i], "m", ST(QUEUED), i == 1 ? "req-1" : "", labels, i == 2 ? 2 : 1);
    assert_int_equal(runtab_insert(t, &r[i].run), 0);
  }
  r[0].run.status = ST(COMPLETED);
  r[0].run.exit_code = 3;
  assert_int_equal(runtab_update(t, &r[0].run), 0);
  /* Write-ahead logging is on: commits went to the -wal file. */
  char wal[128];
  snprintf(wal, sizeof wal, "%s-wal", d.db);
  assert_int_equal(access(wal, F_OK), 0);
  runtab_free(t);

  t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);
  assert_int_equal(runtab_count(t), 3);
  for (size_t i = 0; i < 3; i++) assert_stored(t, &r[i]);
  Run *got = NULL;
  assert_int_equal(runtab_get_by_request_id(t, "req-1", &got), 0);
  assert_string_equal(got->run_id, r[1].id);
  prismq__runner__v1__run__free_unpacked(got, NULL);
  static const char *const keys[] = {"team", "env"}, *const vals[] = {"x", "prod"};
  const runtab_filter both = {.label_keys = keys, .label_values = vals, .nlabels = 2};
  const char *want[] = {r[2].id};
  expect_list(t, &both, NULL, 10, want, 1, 0);
  /* The unique request_id survived too. */
  struct run_buf dup;
  run_init(&dup, "m", ST(QUEUED), "req-1", NULL, 0);
  assert_int_equal(runtab_insert(t, &dup.run), -EEXIST);
  runtab_free(t);
  tmpdir_remove(&d);
}

/* The table checkpoints its WAL itself (its WAL hook replaces SQLite's; the checkpoint
 * on a thread of its own): after twice as many pages as a checkpoint waits for, the WAL
 * has been rewound, so its file stays near one checkpoint's worth (its writeback started
 * in between). Every run is intact. */
static void test_file_checkpoints(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  char err[256] = "";
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);
  /* About a page per run (a long error message): 3000 inserts write over 8000 pages
   * with the indexes, past two checkpoints of 4000 (runtab.c's CKPT_PAGES). */
  char *msg = malloc(3001);
  assert_non_null(msg);
  memset(msg, 'e', 3000);
  msg[3000] = '\0';
  enum { N = 3000 };
  char(*ids)[ID_RUN_LEN + 1] = malloc(N * sizeof *ids);
  assert_non_null(ids);
  for (size_t i = 0; i < N; i++) {
    struct run_buf r;
    run_init(&r, "m", ST(FAILED), "", NULL, 0);
    r.run.error_message = msg;
    assert_int_equal(runtab_insert(t, &r.run), 0);
    memcpy(ids[i], r.id, sizeof ids[i]);
  }
  /* The last checkpoint runs on its own thread: runtab_busy says so until it is over. */
  for (int i = 0; runtab_busy(t) && i < 10000; i++) usleep(1000);
  assert_false(runtab_busy(t));
  char wal[128];
  snprintf(wal, sizeof wal, "%s-wal", d.db);
  struct stat st;
  assert_int_equal(stat(wal, &st), 0);
  /* 4000 frames of 4 KiB plus headers, and the last transaction's few pages. */
  assert_true(st.st_size < (off_t)4100 * (4096 + 24));
  runtab_free(t);

  t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);
  assert_int_equal(runtab_count(t), N);
  for (size_t i = 0; i < N; i += 97) {
    Run *got = NULL;
    assert_int_equal(runtab_get(t, ids[i], &got), 0);
    assert_string_equal(got->error_message, msg);
    prismq__runner__v1__run__free_unpacked(got, NULL);
  }
  runtab_free(t);
  free(ids);
  free(msg);
  tmpdir_remove(&d);
}

/* The file is locked while a table has it open: a second open fails with -EBUSY and
 * says why, touching nothing; once the first is closed the file opens again. */
/* Runs child(d->db, arg) in a child process, which exits with what it returns without
 * closing anything (as kill -9 would leave the table); asserts that it returned 0 (a
 * child says which of its steps failed by its code) and opens the table again. */
static runtab *reopen_after_child(const struct tmpdir *d, int (*child)(const char *db, void *arg),
                                  void *arg) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(child(d->db, arg));
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  runtab *t = NULL;
  char err[256] = "";
  assert_int_equal(runtab_open(&t, d->db, err, sizeof err), 0);
  return t;
}

/* Runs A, B, C, D of test_updates_wait_for_a_commit. */
static int write_and_die(const char *db, void *arg) {
  struct run_buf *r = arg, *a = &r[0], *b = &r[1], *c = &r[2], *dd = &r[3];
  runtab *t = NULL;
  if (runtab_open(&t, db, NULL, 0) != 0) return 10;
  if (runtab_insert(t, &a->run) != 0 || runtab_insert(t, &dd->run) != 0) return 11;
  a->run.status = ST(RUNNING);
  if (runtab_update(t, &a->run) != 0 || runtab_sync(t) != 0) return 12;
  a->run.status = ST(COMPLETED);
  if (runtab_update(t, &a->run) != 0) return 13;
  Run *now = NULL; /* this table sees its own waiting update */
  if (runtab_get(t, a->id, &now) != 0 || now->status != ST(COMPLETED)) return 14;
  prismq__runner__v1__run__free_unpacked(now, NULL);
  if (runtab_insert(t, &b->run) != 0) return 15;
  b->run.status = ST(RUNNING);
  if (runtab_update(t, &b->run) != 0) return 16;
  dd->run.status = ST(RUNNING);
  if (runtab_update(t, &dd->run) != 0) return 17;
  if (runtab_insert(t, &c->run) != -EEXIST) return 18;
  if (runtab_sync(t) != 0) return 19;
  b->run.status = ST(COMPLETED);
  if (runtab_update(t, &b->run) != 0) return 20;
  return 0; /* no runtab_free: the last update is never committed */
}

/* Group commit, seen from a crash: a child process writes and dies without closing the
 * table; what it committed is there, what only waited for a commit is not. Statuses:
 * A QUEUED -> RUNNING (synced) -> COMPLETED (committed by the insert of B); B QUEUED ->
 * RUNNING (synced) -> COMPLETED (waiting); C clashes with A's request_id and is not
 * written, without dropping the update waiting before it (D RUNNING, then synced). */
static void test_updates_wait_for_a_commit(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  struct run_buf r[4];
  run_init(&r[0], "m", ST(QUEUED), "req-a", NULL, 0);
  run_init(&r[1], "m", ST(QUEUED), "", NULL, 0);
  run_init(&r[2], "m", ST(QUEUED), "req-a", NULL, 0);
  run_init(&r[3], "m", ST(QUEUED), "", NULL, 0);
  runtab *t = reopen_after_child(&d, write_and_die, r);
  r[0].run.status = ST(COMPLETED);
  assert_stored(t, &r[0]);
  r[1].run.status = ST(RUNNING); /* its COMPLETED never committed */
  assert_stored(t, &r[1]);
  r[3].run.status = ST(RUNNING);
  assert_stored(t, &r[3]);
  Run *got = NULL;
  assert_int_equal(runtab_get(t, r[2].id, &got), -ENOENT);
  assert_int_equal(runtab_count(t), 3);
  runtab_free(t);
  tmpdir_remove(&d);
}

/* The disk is full from now on, for this process: the WAL of `db` may not grow
 * (RLIMIT_FSIZE at its size; a write past it then fails with EFBIG, not SIGXFSZ).
 * Returns 0 with the limit as it was in *was, or a child's exit code 12..14. */
static int fill_the_wal(const char *db, struct rlimit *was) {
  char wal[128];
  snprintf(wal, sizeof wal, "%s-wal", db);
  struct stat st;
  if (stat(wal, &st) != 0) return 12;
  signal(SIGXFSZ, SIG_IGN);
  if (getrlimit(RLIMIT_FSIZE, was) != 0) return 13;
  struct rlimit full = *was;
  full.rlim_cur = (rlim_t)st.st_size;
  return setrlimit(RLIMIT_FSIZE, &full) != 0 ? 14 : 0;
}

/* Runs A, B, C of test_failed_commit_keeps_updates. */
static int fill_the_disk(const char *db, void *arg) {
  struct run_buf *r = arg, *a = &r[0], *b = &r[1], *c = &r[2];
  runtab *t = NULL;
  if (runtab_open(&t, db, NULL, 0) != 0) return 10;
  if (runtab_insert(t, &a->run) != 0 || runtab_insert(t, &b->run) != 0) return 11;
  struct rlimit lim;
  int rc = fill_the_wal(db, &lim);
  if (rc) return rc;
  a->run.status = ST(COMPLETED);
  if (!runtab_writable(t) || runtab_probe(t) != 1) return 21; /* nothing failed yet */
  if (runtab_update(t, &a->run) != 0) return 15;              /* waits: nothing written yet */
  if (runtab_insert(t, &c->run) != -EIO) return 16;           /* its commit fails */
  if (runtab_writable(t)) return 22;
  b->run.status = ST(RUNNING);
  runtab_update(t, &b->run);             /* may fail now or wait: either way it is kept */
  if (runtab_sync(t) != -EIO) return 17; /* still full */
  if (runtab_probe(t) != 0) return 23;
  Run *got = NULL;
  if (runtab_get(t, c->id, &got) != -ENOENT) return 18;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 19;          /* space again */
  if (runtab_probe(t) != 1 || !runtab_writable(t)) return 24; /* the waiting updates went in */
  return runtab_sync(t) == 0 ? 0 : 20;
}

/* A failed insert leaves nothing waiting: runtab_probe then writes on its own to tell
 * when commits go through again. */
static int fill_the_disk_idle(const char *db, void *arg) {
  struct run_buf *r = arg, *a = &r[0], *c = &r[2];
  runtab *t = NULL;
  if (runtab_open(&t, db, NULL, 0) != 0) return 10;
  if (runtab_insert(t, &a->run) != 0) return 11;
  struct rlimit lim;
  int rc = fill_the_wal(db, &lim);
  if (rc) return rc;
  if (runtab_insert(t, &c->run) != -EIO) return 15;
  if (runtab_sync(t) != 0) return 16; /* nothing waits */
  if (runtab_writable(t) || runtab_probe(t) != 0) return 17;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 18;
  if (runtab_probe(t) != 1 || runtab_insert(t, &c->run) != 0) return 19;
  runtab_free(t);
  return 0;
}

/* A commit that fails (here the WAL may not grow: RLIMIT_FSIZE, as a full disk) rolls
 * the whole transaction back, and with it the updates of other runs waiting there:
 * they are kept and applied again, and the next commit that succeeds has them all. */
static void test_failed_commit_keeps_updates(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  struct run_buf r[3];
  for (size_t i = 0; i < 3; i++) run_init(&r[i], "m", ST(QUEUED), "", NULL, 0);
  runtab *t = reopen_after_child(&d, fill_the_disk, r);
  r[0].run.status = ST(COMPLETED);
  assert_stored(t, &r[0]);
  r[1].run.status = ST(RUNNING);
  assert_stored(t, &r[1]);
  Run *got = NULL;
  assert_int_equal(runtab_get(t, r[2].id, &got), -ENOENT);
  assert_int_equal(runtab_count(t), 2);
  runtab_free(t);
  tmpdir_remove(&d);
}

static void test_probe_after_failed_insert(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  struct run_buf r[3];
  for (size_t i = 0; i < 3; i++) run_init(&r[i], "m", ST(QUEUED), "", NULL, 0);
  runtab *t = reopen_after_child(&d, fill_the_disk_idle, r);
  assert_stored(t, &r[0]);
  assert_stored(t, &r[2]);
  assert_int_equal(runtab_count(t), 2);
  runtab_free(t);
  tmpdir_remove(&d);
}

/* Runs O, A, B of test_purge_commits_waiting_updates. */
static int purge_and_die(const char *db, void *arg) {
  struct run_buf *r = arg, *o = &r[0], *a = &r[1], *b = &r[2];
  runtab *t = NULL;
  char ids[4][ID_RUN_LEN + 1];
  size_t n = 0;
  if (runtab_open(&t, db, NULL, 0) != 0) return 10;
  if (runtab_insert(t, &o->run) != 0 || runtab_insert(t, &a->run) != 0 ||
      runtab_insert(t, &b->run) != 0)
    return 11;
  a->run.status = ST(RUNNING);
  if (runtab_update(t, &a->run) != 0) return 12; /* waits */
  b->run.status = ST(COMPLETED);
  b->run.finished_at_ms = 300;
  if (runtab_update(t, &b->run) != 0) return 13; /* waits: terminal and old */
  if (runtab_purge(t, 1000, 0, 4, ids, &n) != 0 || n != 2) return 14;
  if (strcmp(ids[0], o->id) != 0 || strcmp(ids[1], b->id) != 0 || runtab_count(t) != 1) return 15;
  a->run.status = ST(COMPLETED);
  if (runtab_update(t, &a->run) != 0) return 16;
  return 0; /* no runtab_free: the last update is never committed */
}

/* Rows of run_labels for run_id in the database file `path` (the table closed). */
static int label_rows(const char *path, const char *run_id) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(db, "SELECT count(*) FROM run_labels WHERE run_id = ?1", -1, &st, NULL),
      SQLITE_OK);
  sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  return n;
}

/* A purge joins the group commit: it deletes what the table holds with the updates
 * waiting applied (B, made terminal by one), and its commit makes them durable with
 * it (A RUNNING); an update after it waits as before (A COMPLETED, lost in the crash).
 * The deleted runs' labels are gone from the file; the others' are there. */
static void test_purge_commits_waiting_updates(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  static const struct kv team[] = {{"team", "x"}};
  struct run_buf r[3];
  run_at(&r[0], ST(COMPLETED), 100, 200, team, 1);
  run_at(&r[1], ST(QUEUED), 110, 0, team, 1);
  run_at(&r[2], ST(QUEUED), 120, 0, team, 1);
  runtab *t = reopen_after_child(&d, purge_and_die, r);
  Run *got = NULL;
  assert_int_equal(runtab_get(t, r[0].id, &got), -ENOENT);
  assert_int_equal(runtab_get(t, r[2].id, &got), -ENOENT);
  r[1].run.status = ST(RUNNING);
  assert_stored(t, &r[1]);
  assert_int_equal(runtab_count(t), 1);
  runtab_free(t);
  assert_int_equal(label_rows(d.db, r[0].id), 0);
  assert_int_equal(label_rows(d.db, r[2].id), 0);
  assert_int_equal(label_rows(d.db, r[1].id), 1);
  tmpdir_remove(&d);
}

/* Runs O, A of test_failed_purge_keeps_everything. */
static int purge_on_a_full_disk(const char *db, void *arg) {
  struct run_buf *r = arg, *o = &r[0], *a = &r[1];
  runtab *t = NULL;
  char ids[4][ID_RUN_LEN + 1];
  if (runtab_open(&t, db, NULL, 0) != 0) return 10;
  if (runtab_insert(t, &o->run) != 0 || runtab_insert(t, &a->run) != 0) return 11;
  struct rlimit lim;
  int rc = fill_the_wal(db, &lim);
  if (rc) return rc;
  a->run.status = ST(RUNNING);
  if (runtab_update(t, &a->run) != 0) return 15; /* waits: nothing written yet */
  size_t n = 99;
  if (runtab_purge(t, 1000, 0, 4, ids, &n) != -EIO || n != 99) return 16;
  if (runtab_count(t) != 2) return 17;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return 18; /* space again */
  return runtab_sync(t) == 0 ? 0 : 19;
}

/* A purge whose commit fails deletes nothing (the run and its count are still there)
 * and loses none of the updates that waited: the next commit has them. */
static void test_failed_purge_keeps_everything(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  static const struct kv team[] = {{"team", "x"}};
  struct run_buf r[2];
  run_at(&r[0], ST(COMPLETED), 100, 200, team, 1);
  run_at(&r[1], ST(QUEUED), 110, 0, NULL, 0);
  runtab *t = reopen_after_child(&d, purge_on_a_full_disk, r);
  assert_stored(t, &r[0]);
  r[1].run.status = ST(RUNNING);
  assert_stored(t, &r[1]);
  assert_int_equal(runtab_count(t), 2);
  static const char *const k[] = {"team"}, *const v[] = {"x"};
  const runtab_filter by_team = {.label_keys = k, .label_values = v, .nlabels = 1};
  const char *want[] = {r[0].id};
  expect_list(t, &by_team, NULL, 10, want, 1, 0);
  runtab_free(t);
  tmpdir_remove(&d);
}

static void test_file_in_use(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  char err[256] = "";
  runtab *t = NULL, *t2 = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);
  struct run_buf r;
  run_init(&r, "m", ST(RUNNING), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &r.run), 0);
  assert_int_equal(runtab_open(&t2, d.db, err, sizeof err), -EBUSY);
  assert_null(t2);
  assert_non_null(strstr(err, d.db));
  assert_non_null(strstr(err, "in use by another process"));
  /* The first table goes on as before. */
  r.run.status = ST(COMPLETED);
  assert_int_equal(runtab_update(t, &r.run), 0);
  assert_stored(t, &r);
  runtab_free(t);
  assert_int_equal(runtab_open(&t2, d.db, err, sizeof err), 0);
  assert_stored(t2, &r);
  runtab_free(t2);
  tmpdir_remove(&d);
}

static void test_open_bad_path(void **state) {
  (void)state;
  static max_align_t storage;
  runtab *sentinel = (runtab *)(void *)&storage, *t = sentinel;
  char err[256] = "";
  assert_int_equal(runtab_open(&t, "/nonexistent-prismq-dir/runs.db", err, sizeof err), -EIO);
  assert_ptr_equal(t, sentinel);
  assert_non_null(strstr(err, "/nonexistent-prismq-dir/runs.db: "));
  assert_non_null(strstr(err, "No such file or directory"));
  /* err may be left out. */
  assert_int_equal(runtab_open(&t, "/nonexistent-prismq-dir/runs.db", NULL, 0), -EIO);
  assert_ptr_equal(t, sentinel);
}

static void test_open_not_a_database(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  FILE *f = fopen(d.db, "w");
  assert_non_null(f);
  for (int i = 0; i < 200; i++) fputs("this is not an SQLite database\n", f);
  assert_int_equal(fclose(f), 0);

  char err[256] = "";
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), -EIO);
  assert_null(t);
  assert_non_null(strstr(err, d.db));
  assert_non_null(strstr(err, "not a database"));
  tmpdir_remove(&d);
}

/* ---- presets ---- */

typedef Prismq__Runner__V1__Preset Preset;

/* A preset of module_id named `name` with one parameter a=value, owned by owner. */
static Preset preset_of(const char *module_id, const char *name, const char *owner,
                        Prismq__Runner__V1__Preset__ParametersEntry *e,
                        Prismq__Runner__V1__Preset__ParametersEntry **ep, const char *value) {
  Preset p = PRISMQ__RUNNER__V1__PRESET__INIT;
  *e = (Prismq__Runner__V1__Preset__ParametersEntry)
      PRISMQ__RUNNER__V1__PRESET__PARAMETERS_ENTRY__INIT;
  e->key = "a";
  e->value = (char *)value;
  *ep = e;
  p.module_id = (char *)module_id;
  p.name = (char *)name;
  p.owner = (char *)owner;
  p.parameters = ep;
  p.n_parameters = 1;
  return p;
}

/* Saved, replaced, looked up, listed by module and all, bounded per module, deleted, and
 * kept across a reopen; runs and their waiting updates are untouched. */
static void test_presets(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, NULL, 0), 0);
  struct run_buf rb;
  run_init(&rb, "m", ST(QUEUED), "", NULL, 0);
  assert_int_equal(runtab_insert(t, &rb.run), 0);
  rb.run.status = ST(RUNNING);
  assert_int_equal(runtab_update(t, &rb.run), 0); /* waits for the next commit */

  Prismq__Runner__V1__Preset__ParametersEntry e[4], *ep[4];
  Preset p1 = preset_of("m", "one", "alice", &e[0], &ep[0], "1");
  Preset p2 = preset_of("m", "two", "", &e[1], &ep[1], "2");
  Preset p3 = preset_of("n", "one", "bob", &e[2], &ep[2], "3");
  assert_int_equal(runtab_preset_put(t, &p1, 2), 0);
  assert_int_equal(runtab_preset_put(t, &p2, 2), 0);
  assert_int_equal(runtab_preset_put(t, &p3, 2), 0);
  Preset p4 = preset_of("m", "three", "", &e[3], &ep[3], "4");
  assert_int_equal(runtab_preset_put(t, &p4, 2), -ENOSPC); /* m has 2 */
  Preset p1b = preset_of("m", "one", "alice", &e[3], &ep[3], "1b");
  assert_int_equal(runtab_preset_put(t, &p1b, 2), 0); /* a replacement is not a new one */

  Preset *got = NULL;
  assert_int_equal(runtab_preset_get(t, "m", "one", &got), 0);
  assert_string_equal(got->owner, "alice");
  assert_string_equal(got->parameters[0]->value, "1b");
  prismq__runner__v1__preset__free_unpacked(got, NULL);
  assert_int_equal(runtab_preset_get(t, "m", "nope", &got), -ENOENT);
  assert_int_equal(runtab_preset_get(t, "x", "one", NULL), -ENOENT);
  assert_int_equal(runtab_preset_get(t, "n", "one", NULL), 0);

  Preset **list = NULL;
  size_t n = 0;
  assert_int_equal(runtab_preset_list(t, "m", &list, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(list[0]->name, "one");
  assert_string_equal(list[1]->name, "two");
  runtab_preset_list_free(list, n);
  assert_int_equal(runtab_preset_list(t, NULL, &list, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(list[2]->module_id, "n");
  runtab_preset_list_free(list, n);
  assert_int_equal(runtab_preset_list(t, "empty", &list, &n), 0);
  assert_int_equal(n, 0);
  assert_null(list);
  runtab_preset_list_free(NULL, 0);

  assert_int_equal(runtab_preset_delete(t, "m", "two"), 0);
  assert_int_equal(runtab_preset_delete(t, "m", "two"), -ENOENT);
  runtab_free(t);

  t = NULL;
  assert_int_equal(runtab_open(&t, d.db, NULL, 0), 0);
  assert_int_equal(runtab_preset_list(t, "", &list, &n), 0);
  assert_int_equal(n, 2);
  runtab_preset_list_free(list, n);
  Run *r = NULL;
  assert_int_equal(runtab_get(t, rb.id, &r), 0);
  assert_int_equal(r->status, ST(RUNNING));
  prismq__runner__v1__run__free_unpacked(r, NULL);
  runtab_free(t);
  tmpdir_remove(&d);
}

/* ---- schema versions ---- */

/* The schema version of this server (runtab.c's SCHEMA_VERSION). */
#define SCHEMA_VERSION 3

/* Returns the schema of the database file `path`, read with SQLite directly (the table
 * must be closed): its user_version, then every table and index with its SQL, by name.
 * Free with sqlite3_free. */
static char *file_schema(const char *path) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_str *out = sqlite3_str_new(db);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  sqlite3_str_appendf(out, "user_version %d\n", sqlite3_column_int(st, 0));
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT type, name, sql FROM sqlite_schema ORDER BY name",
                                      -1, &st, NULL),
                   SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW)
    sqlite3_str_appendf(out, "%s %s: %s\n", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                        sqlite3_column_text(st, 2));
  assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
  char *schema = sqlite3_str_finish(out);
  assert_non_null(schema);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  return schema;
}

static void test_open_newer_schema(void **state) {
  (void)state;
  static const int versions[] = {SCHEMA_VERSION + 1, 99};
  for (size_t i = 0; i < ARRAY_LEN(versions); i++) {
    struct tmpdir d;
    tmpdir_make(&d);
    sqlite3 *db = NULL;
    char sql[64], want[16];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", versions[i]);
    assert_int_equal(sqlite3_open(d.db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    char err[256] = "";
    runtab *t = NULL;
    assert_int_equal(runtab_open(&t, d.db, err, sizeof err), -ENOTSUP);
    assert_null(t);
    snprintf(want, sizeof want, "%d", versions[i]);
    assert_non_null(strstr(err, want));
    tmpdir_remove(&d);
  }
}

/* A database made by this version carries its schema version, and opens again. */
static void test_schema_version_recorded(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, NULL, 0), 0);
  runtab_free(t);

  char *schema = file_schema(d.db);
  assert_true(strncmp(schema, "user_version 3\n", strlen("user_version 3\n")) == 0);
  assert_non_null(strstr(schema, "owner TEXT NOT NULL DEFAULT ''"));
  assert_non_null(strstr(schema, "CREATE INDEX runs_owner ON runs(owner, run_id)"));
  assert_non_null(strstr(schema, "table presets: CREATE TABLE presets("));
  sqlite3_free(schema);

  t = NULL;
  assert_int_equal(runtab_open(&t, d.db, NULL, 0), 0);
  assert_int_equal(runtab_count(t), 0);
  runtab_free(t);
  runtab_free(NULL);
  tmpdir_remove(&d);
}

/* Schema version 1 as runtab.c created it, a database file that a server before owners
 * left behind: a fixture, never to be edited. */
static const char v1_schema[] =
    "CREATE TABLE runs(run_id TEXT PRIMARY KEY, request_id TEXT,"
    " module_id TEXT NOT NULL, status INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
    " pb BLOB NOT NULL);"
    "CREATE UNIQUE INDEX runs_request ON runs(request_id) WHERE request_id IS NOT NULL;"
    "CREATE INDEX runs_status ON runs(status, run_id);"
    "CREATE INDEX runs_module ON runs(module_id, run_id);"
    "CREATE TABLE run_labels(run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (run_id, key)) WITHOUT ROWID;"
    "CREATE INDEX run_labels_kv ON run_labels(key, value);";

/* Creates the version-1 database file `path` holding runs[0..n), written as version 1
 * wrote them: the packed Run (no owner then), its index columns and its labels. */
static void make_v1_db(const char *path, const struct run_buf *runs, size_t n) {
  sqlite3 *db = NULL;
  sqlite3_stmt *ins = NULL, *lab = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 1", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "INSERT INTO runs(run_id, request_id, module_id, status,"
                                      " created_at_ms, pb) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                      -1, &ins, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "INSERT OR REPLACE INTO run_labels(run_id, key, value)"
                                      " VALUES (?1, ?2, ?3)",
                                      -1, &lab, NULL),
                   SQLITE_OK);
  for (size_t i = 0; i < n; i++) {
    const Run *r = &runs[i].run;
    assert_true(!r->owner || !*r->owner); /* version 1 knew of no owner */
    size_t len = prismq__runner__v1__run__get_packed_size(r);
    uint8_t *pb = malloc(len);
    assert_non_null(pb);
    prismq__runner__v1__run__pack(r, pb);
    sqlite3_bind_text(ins, 1, r->run_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, *r->request_id ? r->request_id : NULL, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, r->module_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 4, r->status);
    sqlite3_bind_int64(ins, 5, r->created_at_ms);
    sqlite3_bind_blob64(ins, 6, pb, len, SQLITE_TRANSIENT);
    free(pb);
    assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
    assert_int_equal(sqlite3_reset(ins), SQLITE_OK);
    for (size_t j = 0; j < r->n_labels; j++) {
      sqlite3_bind_text(lab, 1, r->run_id, -1, SQLITE_STATIC);
      sqlite3_bind_text(lab, 2, r->labels[j]->key, -1, SQLITE_STATIC);
      sqlite3_bind_text(lab, 3, r->labels[j]->value, -1, SQLITE_STATIC);
      assert_int_equal(sqlite3_step(lab), SQLITE_DONE);
      assert_int_equal(sqlite3_reset(lab), SQLITE_OK);
    }
  }
  assert_int_equal(sqlite3_finalize(ins), SQLITE_OK);
  assert_int_equal(sqlite3_finalize(lab), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A version-1 file is upgraded in place when opened: its runs are kept, are anonymous
 * (owner ""), and every lookup and filter still finds them; new runs have owners; the
 * file ends up with the same schema as a new one. */
static void test_open_upgrades_v1(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  static const struct kv labels[] = {{"team", "x"}};
  struct run_buf r[3];
  run_init(&r[0], "emit", ST(COMPLETED), "req-a", labels, ARRAY_LEN(labels));
  r[0].run.exit_code = 3;
  r[0].run.created_at_ms = 1700000000001;
  r[0].run.error_message = "exit status 3";
  run_init(&r[1], "m", ST(RUNNING), "", NULL, 0);
  make_v1_db(d.db, r, 2);

  char err[256] = "";
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);
  assert_int_equal(runtab_count(t), 2);
  assert_stored(t, &r[0]);
  assert_stored(t, &r[1]);
  Run *got = NULL;
  assert_int_equal(runtab_get_by_request_id(t, "req-a", &got), 0);
  assert_run_equal(got, &r[0].run);
  assert_string_equal(got->owner, "");
  prismq__runner__v1__run__free_unpacked(got, NULL);

  const char *both[] = {r[1].id, r[0].id};
  runtab_filter anon = {.owner = ""};
  expect_list(t, &anon, NULL, 10, both, 2, 0);
  expect_list(t, NULL, NULL, 10, both, 2, 0);
  static const char *const k[] = {"team"}, *const v[] = {"x"};
  const runtab_filter anon_team = {.owner = "", .label_keys = k, .label_values = v, .nlabels = 1};
  expect_list(t, &anon_team, NULL, 10, both + 1, 1, 0);
  static const int running[] = {ST(RUNNING)};
  const runtab_filter anon_running = {.statuses = running, .nstatuses = 1, .owner = ""};
  expect_list(t, &anon_running, NULL, 10, both, 1, 0);
  const runtab_filter alice = {.owner = "alice"};
  expect_list(t, &alice, NULL, 10, NULL, 0, 0);

  /* Old runs still update; new runs carry their owner; request ids stay unique. */
  r[1].run.status = ST(COMPLETED);
  assert_int_equal(runtab_update(t, &r[1].run), 0);
  assert_stored(t, &r[1]);
  run_init(&r[2], "m", ST(QUEUED), "req-a", NULL, 0);
  r[2].run.owner = "alice";
  assert_int_equal(runtab_insert(t, &r[2].run), -EEXIST);
  r[2].run.request_id = "req-c";
  assert_int_equal(runtab_insert(t, &r[2].run), 0);
  const char *alices[] = {r[2].id}, *all[] = {r[2].id, r[1].id, r[0].id};
  expect_list(t, &alice, NULL, 10, alices, 1, 0);
  expect_list(t, &anon, NULL, 10, both, 2, 0);
  expect_list(t, NULL, NULL, 10, all, 3, 0);
  runtab_free(t);

  /* Same schema as a new file, and it opens again as it is. */
  struct tmpdir fresh;
  tmpdir_make(&fresh);
  t = NULL;
  assert_int_equal(runtab_open(&t, fresh.db, NULL, 0), 0);
  runtab_free(t);
  char *upgraded = file_schema(d.db), *created = file_schema(fresh.db);
  assert_string_equal(upgraded, created);
  sqlite3_free(upgraded);
  sqlite3_free(created);
  tmpdir_remove(&fresh);
  t = NULL;
  assert_int_equal(runtab_open(&t, d.db, NULL, 0), 0);
  assert_int_equal(runtab_count(t), 3);
  assert_stored(t, &r[0]);
  assert_stored(t, &r[2]);
  expect_list(t, &alice, NULL, 10, alices, 1, 0);
  runtab_free(t);
  tmpdir_remove(&d);
}

/* An upgrade is all or nothing: when a step fails (here its index name is taken), the
 * open fails with the reason and the file is left exactly as it was, still version 1;
 * once the clash is gone, the upgrade goes through and the runs are all there. */
static void test_open_upgrade_fails_whole(void **state) {
  (void)state;
  struct tmpdir d;
  tmpdir_make(&d);
  struct run_buf r;
  run_init(&r, "m", ST(COMPLETED), "req-a", NULL, 0);
  make_v1_db(d.db, &r, 1);
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(d.db, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "CREATE INDEX runs_owner ON runs(module_id)", NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  char *before = file_schema(d.db);

  char err[256] = "";
  runtab *t = NULL;
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), -EIO);
  assert_null(t);
  assert_non_null(strstr(err, d.db));
  assert_non_null(strstr(err, "runs_owner"));
  char *after = file_schema(d.db); /* no owner column: the ALTER TABLE was undone too */
  assert_string_equal(after, before);
  sqlite3_free(after);
  sqlite3_free(before);

  db = NULL;
  assert_int_equal(sqlite3_open(d.db, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "DROP INDEX runs_owner", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  assert_int_equal(runtab_open(&t, d.db, err, sizeof err), 0);
  assert_stored(t, &r);
  const runtab_filter anon = {.owner = ""};
  const char *want[] = {r.id};
  expect_list(t, &anon, NULL, 10, want, 1, 0);
  runtab_free(t);
  tmpdir_remove(&d);
}

int main(void) {
#define MEM(fn) cmocka_unit_test_setup_teardown(fn, setup_mem, teardown_mem)
#define FIX(fn) cmocka_unit_test_setup_teardown(fn, setup_fixture, teardown_fixture)
  const struct CMUnitTest tests[] = {
      MEM(test_round_trip_every_field),
      MEM(test_round_trip_zero_fields),
      MEM(test_get_missing),
      MEM(test_insert_invalid_id),
      MEM(test_duplicates),
      MEM(test_duplicate_label_key_last_wins),
      MEM(test_update),
      MEM(test_get_by_request_id),
      FIX(test_list_newest_first),
      FIX(test_list_filter_statuses),
      FIX(test_list_filter_module),
      FIX(test_list_filter_labels),
      FIX(test_list_filter_combined),
      FIX(test_list_filter_owner),
      FIX(test_list_filter_owner_combined),
      MEM(test_list_paging),
      MEM(test_list_paging_owner),
      MEM(test_list_cursor_gone),
      MEM(test_list_invalid),
      FIX(test_list_many_shapes),
      MEM(test_active),
      MEM(test_purge_by_age),
      MEM(test_purge_batches),
      MEM(test_purge_max_runs),
      MEM(test_purge_no_limits),
      cmocka_unit_test(test_file_reopen),
      cmocka_unit_test(test_file_checkpoints),
      cmocka_unit_test(test_updates_wait_for_a_commit),
      cmocka_unit_test(test_failed_commit_keeps_updates),
      cmocka_unit_test(test_probe_after_failed_insert),
      cmocka_unit_test(test_purge_commits_waiting_updates),
      cmocka_unit_test(test_failed_purge_keeps_everything),
      cmocka_unit_test(test_file_in_use),
      cmocka_unit_test(test_open_bad_path),
      cmocka_unit_test(test_presets),
      cmocka_unit_test(test_open_not_a_database),
      cmocka_unit_test(test_open_newer_schema),
      cmocka_unit_test(test_schema_version_recorded),
      cmocka_unit_test(test_open_upgrades_v1),
      cmocka_unit_test(test_open_upgrade_fails_whole),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
