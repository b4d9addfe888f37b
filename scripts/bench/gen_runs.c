/* gen_runs: fills a run table with generated runs for the bench's bigtable phase,
 * through the server's own runtab (server/runtab.h), so the schema is the server's and
 * nothing here knows it.
 *
 *   gen_runs DB N IDS_FILE
 *       Creates the run table DB (which must not exist yet) and inserts N runs, oldest
 *       first, created over the RANGE_DAYS days before now: run ids from id_run_new
 *       (common/ids.h) at increasing times, a few modules with their parameters, mostly
 *       terminal statuses (COMPLETED, FAILED, CANCELLED, some TIMED_OUT and LOST), the
 *       labels team=team-00..team-19 and env=prod|staging|dev, exit codes, signals,
 *       timestamps, resource figures, a request_id on a quarter of them and a few
 *       owners. The record contents come from a fixed seed; only the random part of
 *       the run ids differs between two runs of the program. One run in SAMPLE_EVERY
 *       (at random) has its id written to IDS_FILE, one per line, for GetRun.
 *       Progress goes to stderr; the result to stdout as one JSON line:
 *       {"runs":N,"seconds":S,"inserts_per_s":R,"sampled":K,"status_counts":{...}}
 *       With N = 0 it only creates the (empty) table.
 *
 * Exits 0, 1 when an insert fails, 2 on usage or set-up errors. Built by
 * scripts/bench/run.sh against the build directory's libraries. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ids.h"
#include "runtab.h"

#define RANGE_DAYS     30
#define SAMPLE_EVERY   500
#define PROGRESS_EVERY 100000
#define NTEAMS         20

typedef Prismq__Runner__V1__Run pb_run;
typedef Prismq__Runner__V1__Run__ParametersEntry pb_param;
typedef Prismq__Runner__V1__Run__LabelsEntry pb_label;

/* splitmix64: a fixed sequence, so two tables of the same size hold the same runs. */
static uint64_t g_rng = 0x5052495351424e43ull;

static uint64_t rnd(void) {
  uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* A number in [0, n). */
static uint64_t below(uint64_t n) { return rnd() % n; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The modules of the bench's configuration (bench.py, BENCH_MODULES), in the shares a
 * busy server might see; `param` is the name of the one parameter, or NULL. */
static const struct module {
  const char *id;
  unsigned percent;
  const char *param;
} modules[] = {
    {"true", 40, NULL},       {"echo", 20, NULL}, {"emit", 20, "bytes"},
    {"sleep", 15, "seconds"}, {"fan", 5, NULL},
};
#define NMODULES (sizeof modules / sizeof modules[0])

static const char *const owners[] = {"", "spiffe://prismq/ci", "spiffe://prismq/batch",
                                     "spiffe://prismq/alice"};
static const char *const envs[] = {"prod",    "prod",    "prod",    "prod", "prod",
                                   "staging", "staging", "staging", "dev",  "dev"};

/* Terminal statuses, per thousand runs. */
static const struct share {
  int status;
  unsigned permille;
} statuses[] = {
    {PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED, 840},
    {PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, 100},
    {PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED, 40},
    {PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT, 15},
    {PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST, 5},
};
#define NSTATUSES (sizeof statuses / sizeof statuses[0])

static const struct module *pick_module(void) {
  unsigned x = (unsigned)below(100);
  for (size_t i = 0; i < NMODULES; i++) {
    if (x < modules[i].percent) return &modules[i];
    x -= modules[i].percent;
  }
  return &modules[0];
}

static int pick_status(void) {
  unsigned x = (unsigned)below(1000);
  for (size_t i = 0; i < NSTATUSES; i++) {
    if (x < statuses[i].permille) return statuses[i].status;
    x -= statuses[i].permille;
  }
  return statuses[0].status;
}

/* Strings of one run, kept together so that the Run can point into them. */
struct run_buf {
  char run_id[ID_RUN_LEN + 1];
  char request_id[32];
  char param_value[24];
  char team[16];
  char error[64];
};

/* Fills *r (with its entries in the caller's storage) as the run created at created_ms. */
static void fill_run(pb_run *r, struct run_buf *b, pb_param *param, pb_param **params,
                     pb_label *labels, pb_label **label_ptrs, int64_t created_ms, uint64_t seq) {
  const struct module *m = pick_module();
  id_run_new(b->run_id, created_ms);
  r->run_id = b->run_id;
  r->module_id = (char *)m->id;
  r->owner = (char *)owners[below(sizeof owners / sizeof owners[0])];
  r->created_at_ms = created_ms;
  r->request_id = "";
  if (below(4) == 0) {
    snprintf(b->request_id, sizeof b->request_id, "req-%016" PRIx64,
             seq * UINT64_C(0x9e3779b97f4a7c15));
    r->request_id = b->request_id;
  }
  r->n_parameters = 0;
  if (m->param) {
    if (strcmp(m->param, "bytes") == 0)
      snprintf(b->param_value, sizeof b->param_value, "%" PRIu64, (uint64_t)1 << below(27));
    else
      snprintf(b->param_value, sizeof b->param_value, "%" PRIu64, 1 + below(600));
    param->key = (char *)m->param;
    param->value = b->param_value;
    params[0] = param;
    r->parameters = params;
    r->n_parameters = 1;
  }
  snprintf(b->team, sizeof b->team, "team-%02u", (unsigned)below(NTEAMS));
  labels[0].key = "team";
  labels[0].value = b->team;
  labels[1].key = "env";
  labels[1].value = (char *)envs[below(sizeof envs / sizeof envs[0])];
  label_ptrs[0] = &labels[0];
  label_ptrs[1] = &labels[1];
  r->labels = label_ptrs;
  r->n_labels = 2;

  int status = pick_status();
  r->status = status;
  r->started_at_ms = created_ms + (int64_t)below(50);
  r->finished_at_ms = r->started_at_ms +
                      (int64_t)below(m->param && strcmp(m->param, "seconds") == 0 ? 600000 : 5000);
  r->pid = 1000 + (int32_t)below(4000000);
  r->stdout_bytes =
      m->param && strcmp(m->param, "bytes") == 0 ? strtoull(b->param_value, NULL, 10) : below(4096);
  r->stderr_bytes =
      status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED ? 0 : below(2048);
  r->user_cpu_ms = below(2000);
  r->sys_cpu_ms = below(500);
  r->max_rss_kb = 1024 + below(200000);
  r->exit_code = 0;
  r->term_signal = 0;
  r->error_message = "";
  switch (status) {
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED:
    r->exit_code = 1 + (int32_t)below(3);
    break;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED:
    r->exit_code = -1;
    r->term_signal = 15;
    r->error_message = "cancelled";
    break;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT:
    r->exit_code = -1;
    r->term_signal = 9;
    snprintf(b->error, sizeof b->error, "timed out after %" PRId64 " ms",
             r->finished_at_ms - r->started_at_ms);
    r->error_message = b->error;
    break;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST:
    r->exit_code = 0;
    r->pid = 0;
    r->error_message = "the server stopped while the run was running";
    break;
  default: break;
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: gen_runs DB N IDS_FILE\n");
    return 2;
  }
  const char *path = argv[1];
  char *end;
  errno = 0;
  unsigned long long n = strtoull(argv[2], &end, 10);
  if (errno || end == argv[2] || *end) {
    fprintf(stderr, "gen_runs: bad count %s\n", argv[2]);
    return 2;
  }
  if (access(path, F_OK) == 0) {
    fprintf(stderr, "gen_runs: %s exists\n", path);
    return 2;
  }
  FILE *ids = fopen(argv[3], "w");
  if (!ids) {
    fprintf(stderr, "gen_runs: cannot write %s: %s\n", argv[3], strerror(errno));
    return 2;
  }
  runtab *t = NULL;
  char err[512];
  if (runtab_open(&t, path, err, sizeof err) < 0) {
    fprintf(stderr, "gen_runs: %s\n", err);
    fclose(ids);
    return 2;
  }

  const int64_t span_ms = (int64_t)RANGE_DAYS * 86400 * 1000;
  const int64_t first_ms = id_now_ms() - span_ms;
  uint64_t counts[8] = {0}, sampled = 0;
  int ret = 0;
  double t0 = now_s(), tlast = t0;
  for (uint64_t i = 0; i < n; i++) {
    pb_run r = PRISMQ__RUNNER__V1__RUN__INIT;
    struct run_buf b;
    pb_param param = PRISMQ__RUNNER__V1__RUN__PARAMETERS_ENTRY__INIT, *params[1];
    pb_label labels[2] = {PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT,
                          PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT};
    pb_label *label_ptrs[2];
    /* Evenly spread over the range, so ids (and creation times) increase. */
    fill_run(&r, &b, &param, params, labels, label_ptrs,
             first_ms + (int64_t)((double)span_ms * (double)i / (double)n), i);
    int rc = runtab_insert(t, &r);
    if (rc < 0) {
      fprintf(stderr, "gen_runs: runtab_insert of run %" PRIu64 " (%s): %s\n", i, r.run_id,
              strerror(-rc));
      ret = 1;
      break;
    }
    counts[r.status & 7]++;
    if (below(SAMPLE_EVERY) == 0) {
      fprintf(ids, "%s\n", r.run_id);
      sampled++;
    }
    if ((i + 1) % PROGRESS_EVERY == 0) {
      double now = now_s();
      fprintf(stderr, "gen_runs: %" PRIu64 " runs, %.1f s, %.0f inserts/s over the last %d\n",
              i + 1, now - t0, PROGRESS_EVERY / (now - tlast), PROGRESS_EVERY);
      tlast = now;
    }
  }
  runtab_free(t); /* commits, checkpoints and removes the WAL */
  double s = now_s() - t0;
  if (fclose(ids) != 0) {
    fprintf(stderr, "gen_runs: cannot write %s\n", argv[3]);
    ret = 2;
  }
  printf("{\"runs\":%llu,\"seconds\":%.3f,\"inserts_per_s\":%.0f,\"sampled\":%" PRIu64
         ",\"status_counts\":{",
         n, s, s > 0 ? (double)n / s : 0.0, sampled);
  for (int st = 1, first = 1; st < 8; st++)
    if (counts[st]) {
      printf("%s\"%d\":%" PRIu64, first ? "" : ",", st, counts[st]);
      first = 0;
    }
  printf("}}\n");
  return ret;
}
