/* retention_bench: one retention sweep of a large run table, through the server's own
 * core (server/retention.h over server/runtab.h), timed.
 *
 *   retention_bench DIR [N]
 *       For each limit, age (max_age 7 d) and count (max_runs), makes a data directory
 *       under DIR (which must exist; put it on the disk the server would use, not a
 *       tmpfs: checkpoints fsync) holding a run table of N old terminal runs (default
 *       100000; created 8 to 30 days ago, with labels, a parameter and some request
 *       ids) plus KEEP_ACTIVE old QUEUED runs and KEEP_RECENT recent terminal runs, and
 *       an output file for every run that started (SMALL_OUT bytes, BIG_OUT for one in
 *       BIG_EVERY); syncs, so that the sweep finds old files on disk as a server would;
 *       then runs one sweep on an event loop with the server's defaults (batch),
 *       and checks that exactly the N old terminal runs and their files are gone.
 *       Figures, from retention's timing hook: the sweep's wall and busy time, runs per
 *       second, batches, passes of the loop, and the passes' times (mean, p50, p99,
 *       p99.9, longest, and how many took RETENTION_LONG_PASS_US or more): a pass is
 *       how long the sweep holds the loop at once, target under TARGET_PASS_MS. Also the
 *       gaps between two passes (p50, p99, longest), when the loop is free while a
 *       batch's files are unlinked on retention's worker thread. One JSON
 *       line per limit on stdout; progress and the sweep's log on stderr. The
 *       directories are removed afterwards.
 *
 * Exits 0 when both sweeps deleted what they should (a missed time target is
 * reported in the JSON, not an error), 1 when a check fails, 2 on usage or set-up
 * errors. Built by scripts/bench/run.sh against the build directory's libraries. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ids.h"
#include "retention.h"
#include "runtab.h"

#define DAY_MS         (86400 * INT64_C(1000))
#define KEEP_ACTIVE    100
#define KEEP_RECENT    1000
#define TARGET_PASS_MS 5.0
/* Output file sizes: most runs print a little, one in BIG_EVERY a lot. */
#define SMALL_OUT 512
#define BIG_OUT   (64 * 1024)
#define BIG_EVERY 100

typedef Prismq__Runner__V1__Run pb_run;
typedef Prismq__Runner__V1__Run__LabelsEntry pb_label;
typedef Prismq__Runner__V1__Run__ParametersEntry pb_param;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_output(const char *dir, const char *run_id, size_t len) {
  static char data[BIG_OUT];
  char path[2048];
  snprintf(path, sizeof path, "%s/output/%s.out", dir, run_id);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  ssize_t w = write(fd, data, len);
  close(fd);
  return w == (ssize_t)len ? 0 : -EIO;
}

/* Inserts one run created at created_ms with `status`, and its output file if it
 * started. Returns 0 or a negative errno (said on stderr). */
static int add_run(runtab *t, const char *dir, int64_t created_ms, int status, uint64_t seq) {
  char id[ID_RUN_LEN + 1], req[32], team[16], bytes[16];
  pb_run r = PRISMQ__RUNNER__V1__RUN__INIT;
  pb_label labels[2] = {PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT,
                        PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT};
  pb_label *lp[2] = {&labels[0], &labels[1]};
  pb_param param = PRISMQ__RUNNER__V1__RUN__PARAMETERS_ENTRY__INIT, *pp[1] = {&param};
  id_run_new(id, created_ms);
  snprintf(team, sizeof team, "team-%02u", (unsigned)(seq % 20));
  snprintf(bytes, sizeof bytes, "%u", 1u << (seq % 20));
  labels[0].key = "team";
  labels[0].value = team;
  labels[1].key = "env";
  labels[1].value = seq % 3 ? "prod" : "dev";
  param.key = "bytes";
  param.value = bytes;
  r.run_id = id;
  r.module_id = "emit";
  r.owner = seq % 2 ? "spiffe://prismq/ci" : "";
  r.request_id = "";
  if (seq % 4 == 0) {
    snprintf(req, sizeof req, "req-%016" PRIx64, seq * UINT64_C(0x9e3779b97f4a7c15));
    r.request_id = req;
  }
  r.labels = lp;
  r.n_labels = 2;
  r.parameters = pp;
  r.n_parameters = 1;
  r.status = status;
  r.created_at_ms = created_ms;
  int started = status != PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED;
  if (started) {
    r.started_at_ms = created_ms + 5;
    r.finished_at_ms = created_ms + 1000;
    r.exit_code = status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED ? 0 : 1;
    r.stdout_bytes = seq % BIG_EVERY ? SMALL_OUT : BIG_OUT;
  }
  int rc = runtab_insert(t, &r);
  if (rc < 0) {
    fprintf(stderr, "retention_bench: runtab_insert: %s\n", strerror(-rc));
    return rc;
  }
  if (started && (rc = write_output(dir, id, (size_t)r.stdout_bytes)) < 0)
    fprintf(stderr, "retention_bench: output of %s: %s\n", id, strerror(-rc));
  return rc;
}

/* Files in dir/output. */
static long count_outputs(const char *dir) {
  char path[2048];
  snprintf(path, sizeof path, "%s/output", dir);
  DIR *d = opendir(path);
  if (!d) return -1;
  long n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Removes dir/output/ and its files, runs.db and its WAL, then dir. */
static void remove_data_dir(const char *dir) {
  char path[2048];
  snprintf(path, sizeof path, "%s/output", dir);
  DIR *d = opendir(path);
  if (d) {
    for (struct dirent *e; (e = readdir(d));) {
      if (e->d_name[0] == '.') continue;
      snprintf(path, sizeof path, "%s/output/%s", dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  snprintf(path, sizeof path, "%s/output", dir);
  rmdir(path);
  static const char *const files[] = {"runs.db", "runs.db-wal", "runs.db-shm"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

struct result {
  struct event_base *base;
  retention_sweep sweep;
  int done;
  double *passes; /* each pass's time, ms */
  double *gaps;   /* from the end of a pass to the start of the next, ms */
  size_t npasses, ngaps, cap;
  double last_end; /* of the previous pass, s; 0 before the first */
};

static void on_pass(void *arg, uint64_t us, const retention_sweep *so_far) {
  (void)so_far;
  struct result *p = arg;
  double end = now_s();
  if (p->npasses == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 4096;
    p->passes = realloc(p->passes, p->cap * sizeof *p->passes);
    p->gaps = realloc(p->gaps, p->cap * sizeof *p->gaps);
    if (!p->passes || !p->gaps) abort();
  }
  if (p->last_end > 0) p->gaps[p->ngaps++] = (end - (double)us / 1e6 - p->last_end) * 1000;
  p->last_end = end;
  p->passes[p->npasses++] = (double)us / 1000;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The q-quantile (0..1) of the sorted v[0..n). */
static double quantile(const double *v, size_t n, double q) {
  return n ? v[(size_t)(q * (double)(n - 1) + 0.5)] : 0;
}

static void on_sweep(void *arg, const retention_sweep *s) {
  struct result *p = arg;
  p->sweep = *s;
  p->done = 1;
  event_base_loopbreak(p->base);
}

/* Fills a data directory under root and sweeps it with `limits`. Returns 0, 1 when a
 * check fails, 2 on set-up errors. */
/* The table of one measurement, oldest first as a server makes them: n old runs over
 * days 30..8 before now with KEEP_ACTIVE queued ones among them, then KEEP_RECENT recent
 * ones over the last hour (their files kept: *files_kept). Returns 0 or -1 (said). */
static int fill(runtab *t, const char *dir, uint64_t n, uint64_t *files_kept) {
  const int64_t now = id_now_ms(), old_from = now - 30 * DAY_MS, old_span = 22 * DAY_MS;
  for (uint64_t i = 0; i < n; i++) {
    int64_t created = old_from + (int64_t)((double)old_span * (double)i / (double)n);
    int st = i % 10 == 9 ? PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED
                         : PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED;
    if (add_run(t, dir, created, st, i) < 0) return -1;
    if ((i + 1) * KEEP_ACTIVE / n != i * KEEP_ACTIVE / n && /* KEEP_ACTIVE of them, spread */
        add_run(t, dir, created, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED, i) < 0)
      return -1;
  }
  for (uint64_t i = 0; i < KEEP_RECENT; i++) {
    int64_t created = now - 3600 * 1000 + (int64_t)i;
    if (add_run(t, dir, created, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED, n + i) < 0)
      return -1;
    (*files_kept)++;
  }
  return 0;
}

/* Checks what the sweep left and prints the measurement's JSON line. Returns whether
 * the sweep deleted exactly the old runs and their files. */
static int report(const char *name, uint64_t n, struct result *p, runtab *t, const char *dir,
                  uint64_t before, long files_before, uint64_t files_kept) {
  const retention_sweep *s = &p->sweep;
  uint64_t after = runtab_count(t);
  long files_after = count_outputs(dir);
  int ok = p->done && !s->failed && !s->file_errors && s->runs == n && after == before - n &&
           after == KEEP_RECENT + KEEP_ACTIVE && files_after == (long)files_kept &&
           s->files == (uint64_t)files_before - files_kept;
  double max_ms = (double)s->max_pass_us / 1000;
  qsort(p->passes, p->npasses, sizeof *p->passes, cmp_double);
  qsort(p->gaps, p->ngaps, sizeof *p->gaps, cmp_double);
  printf("{\"limit\":\"%s\",\"runs\":%" PRIu64 ",\"deleted\":%" PRIu64 ",\"files\":%" PRIu64
         ",\"seconds\":%.3f,\"busy_seconds\":%.3f,\"runs_per_s\":%.0f,\"batches\":%" PRIu64
         ",\"passes\":%" PRIu64
         ",\"max_pass_ms\":%.3f,\"mean_pass_ms\":%.3f,\"p50_pass_ms\":%.3f,\"p99_pass_ms\":%.3f,"
         "\"p999_pass_ms\":%.3f,\"long_passes\":%" PRIu64
         ",\"p50_gap_ms\":%.3f,\"p99_gap_ms\":%.3f,\"max_gap_ms\":%.3f,\"file_errors\":%" PRIu64
         ",\"target_ms\":%.1f,\"target_met\":%s,\"ok\":%s}\n",
         name, before, s->runs, s->files, (double)s->duration_us / 1e6, (double)s->busy_us / 1e6,
         s->duration_us ? (double)s->runs * 1e6 / (double)s->duration_us : 0.0, s->batches,
         s->passes, max_ms, s->passes ? (double)s->busy_us / 1000 / (double)s->passes : 0.0,
         quantile(p->passes, p->npasses, 0.5), quantile(p->passes, p->npasses, 0.99),
         quantile(p->passes, p->npasses, 0.999), s->long_passes, quantile(p->gaps, p->ngaps, 0.5),
         quantile(p->gaps, p->ngaps, 0.99), p->ngaps ? p->gaps[p->ngaps - 1] : 0.0, s->file_errors,
         TARGET_PASS_MS, max_ms < TARGET_PASS_MS ? "true" : "false", ok ? "true" : "false");
  fflush(stdout);
  free(p->passes);
  free(p->gaps);
  if (!ok)
    fprintf(stderr,
            "retention_bench: %s: expected %" PRIu64 " deleted, %d runs and %" PRIu64
            " files left; got %" PRIu64 " deleted, %" PRIu64 " runs and %ld files left\n",
            name, n, KEEP_RECENT + KEEP_ACTIVE, files_kept, s->runs, after, files_after);
  return ok;
}

static int bench(const char *root, const char *name, uint64_t n, config_retention limits) {
  char dir[1024], err[512];
  if ((size_t)snprintf(dir, sizeof dir, "%s/retention-%s.XXXXXX", root, name) >= sizeof dir) {
    fprintf(stderr, "retention_bench: %s: path too long\n", root);
    return 2;
  }
  if (!mkdtemp(dir)) {
    fprintf(stderr, "retention_bench: mkdtemp under %s: %s\n", root, strerror(errno));
    return 2;
  }
  char path[2048];
  snprintf(path, sizeof path, "%s/output", dir);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/runs.db", dir);
  runtab *t = NULL;
  struct event_base *base = NULL;
  retention *ret = NULL;
  int status = 2;
  if (runtab_open(&t, path, err, sizeof err) < 0) {
    fprintf(stderr, "retention_bench: %s\n", err);
    goto out;
  }
  double t0 = now_s();
  uint64_t files_kept = 0;
  if (fill(t, dir, n, &files_kept) < 0) goto out;
  /* Start from a settled WAL and disk, as a server whose old runs' output was written
   * long ago: nothing of the set-up is left for the sweep's syncs to write. */
  sync();
  runtab_free(t);
  t = NULL;
  if (runtab_open(&t, path, err, sizeof err) < 0) {
    fprintf(stderr, "retention_bench: %s\n", err);
    goto out;
  }
  uint64_t before = runtab_count(t);
  long files_before = count_outputs(dir);
  fprintf(stderr, "retention_bench: %s: %" PRIu64 " runs and %ld output files written in %.1f s\n",
          name, before, files_before, now_s() - t0);

  struct result p = {0};
  base = p.base = event_base_new();
  if (!base) {
    fprintf(stderr, "retention_bench: libevent set-up failed\n");
    goto out;
  }
  retention_opts ro = RETENTION_OPTS_INIT;
  ro.rt = t;
  ro.data_dir = dir;
  ro.limits = limits;
  ro.first_delay_ms = 0;
  ro.on_sweep = on_sweep;
  ro.on_pass = on_pass;
  ro.arg = &p;
  if (retention_new(&ret, base, &ro, err, sizeof err) < 0) {
    fprintf(stderr, "retention_bench: %s\n", err);
    goto out;
  }
  event_base_dispatch(base);

  int ok = report(name, n, &p, t, dir, before, files_before, files_kept);
  status = ok ? 0 : 1;
out:
  retention_free(ret);
  if (base) event_base_free(base);
  runtab_free(t);
  remove_data_dir(dir);
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: retention_bench DIR [N]\n");
    return 2;
  }
  uint64_t n = 100000;
  if (argc == 3) {
    char *end;
    errno = 0;
    n = strtoull(argv[2], &end, 10);
    if (errno || end == argv[2] || *end || n < KEEP_ACTIVE) {
      fprintf(stderr, "retention_bench: bad count %s (at least %d)\n", argv[2], KEEP_ACTIVE);
      return 2;
    }
  }
  /* The sweep runs once here: the interval only has to be long. */
  const config_retention age = {
      .sweep_interval_ms = 3600 * 1000, .max_age_ms = 7 * DAY_MS, .max_runs = 0};
  const config_retention count = {
      .sweep_interval_ms = 3600 * 1000, .max_age_ms = 0, .max_runs = KEEP_RECENT + KEEP_ACTIVE};
  int a = bench(argv[1], "age", n, age);
  if (a == 2) return 2;
  int c = bench(argv[1], "count", n, count);
  return a > c ? a : c;
}
