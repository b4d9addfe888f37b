/* Unit tests for server/slurmjob: the text of Slurm's command-line tools. The scripts
 * are also run by /bin/sh, to check that every word reaches the command as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#include <cmocka.h>

#include "slurmjob.h"

/* --- slurmjob_script ------------------------------------------------------------ */

static void test_script_plain(void **state) {
  (void)state;
  const char *argv[] = {"/bin/echo", "hello", NULL};
  char *s = slurmjob_script("01J0RUNID", argv, NULL);
  assert_string_equal(s, "#!/bin/sh\n# prismq run 01J0RUNID\nexec '/bin/echo' 'hello'\n");
  free(s);
}

static void test_script_quoting(void **state) {
  (void)state;
  const char *argv[] = {"prog", "two words", "it's", "$HOME", "back\\slash",
                        "",     "a\nb",      "'",    "*",     NULL};
  char *s = slurmjob_script("R", argv, NULL);
  assert_string_equal(s,
                      "#!/bin/sh\n# prismq run R\n"
                      "exec 'prog' 'two words' 'it'\\''s' '$HOME' 'back\\slash' '' 'a\nb' "
                      "''\\''' '*'\n");
  free(s);
}

static void test_script_progress_line(void **state) {
  (void)state;
  const char *argv[] = {"x", NULL};
  char *s = slurmjob_script("R", argv, "/spool/r/it's progress");
  assert_string_equal(s,
                      "#!/bin/sh\n# prismq run R\n"
                      "exec 3>>'/spool/r/it'\\''s progress'\n"
                      "exec 'x'\n");
  free(s);
}

static void test_script_no_dos_line_break(void **state) {
  (void)state;
  /* sbatch refuses a script with "\r\n" in it: the CR is closed off from the LF. A
   * newline in the run id would end its comment line: it becomes '?'. */
  const char *argv[] = {"x", "a\r\nb", "c\r", NULL};
  char *s = slurmjob_script("R\n#SBATCH --x\r", argv, "p\r\n");
  assert_null(strstr(s, "\r\n"));
  assert_string_equal(s,
                      "#!/bin/sh\n# prismq run R?#SBATCH --x?\n"
                      "exec 3>>'p\r''\n'\n"
                      "exec 'x' 'a\r''\nb' 'c\r'\n");
  free(s);
}

/* Runs script s with /bin/sh, the command's argv[0] replaced by printf, and returns
 * what it printed (each argument then a NUL). */
static char *run_script(const char *s, size_t *outlen) {
  char path[] = "/tmp/test_slurmjob_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
  close(fd);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "/bin/sh %s", path);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  static char buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  assert_int_equal(pclose(f), 0);
  unlink(path);
  *outlen = n;
  return buf;
}

static void test_script_words_reach_the_command(void **state) {
  (void)state;
  const char *argv[] = {"printf", "%s\\0",     "two words", "it's",    "$HOME", "back\\slash",
                        "",       "a\nb\r\nc", "`id`",      "$(id)",   "*",     "\"q\"",
                        "~",      ";|&",       "'",         "a'b'\\c", NULL};
  char *s = slurmjob_script("R", argv, NULL);
  size_t n;
  const char *out = run_script(s, &n);
  size_t off = 0;
  for (size_t i = 2; argv[i]; i++) {
    size_t l = strlen(argv[i]);
    assert_true(off + l < n);
    assert_memory_equal(out + off, argv[i], l);
    assert_int_equal(out[off + l], '\0');
    off += l + 1;
  }
  assert_int_equal(off, n);
  free(s);
}

static void test_script_progress_descriptor(void **state) {
  (void)state;
  char path[] = "/tmp/test_slurmjob_p_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "old\n", 4), 4);
  close(fd);
  const char *argv[] = {"sh", "-c", "echo 50% >&3", NULL};
  char *s = slurmjob_script("R", argv, path);
  size_t n;
  run_script(s, &n);
  assert_int_equal(n, 0);
  FILE *f = fopen(path, "r");
  char buf[64] = {0};
  assert_int_equal(fread(buf, 1, sizeof buf - 1, f), 8);
  fclose(f);
  assert_string_equal(buf, "old\n50%\n"); /* appended */
  unlink(path);
  free(s);
}

/* --- slurmjob_sbatch_argv, slurmjob_name ----------------------------------------- */

static void assert_argv(char **got, const char *const *want) {
  size_t i = 0;
  for (; want[i]; i++) {
    assert_non_null(got[i]);
    assert_string_equal(got[i], want[i]);
  }
  assert_null(got[i]);
}

static void test_sbatch_argv_all_options(void **state) {
  (void)state;
  char *extra[] = {"--gres=gpu:1", "--exclusive", NULL};
  config_slurm_job job = {0};
  job.partition = "batch";
  job.account = "acct";
  job.qos = "high";
  job.cpus = 4;
  job.memory = "2G";
  job.time_limit_min = 99; /* not used: the submit's own counts */
  job.sbatch_args = extra;
  job.nsbatch_args = 2;
  slurmjob_submit s = {.sbatch = "/usr/bin/sbatch",
                       .run_id = "01J0RUN",
                       .script_path = "/spool/01J0RUN.sh",
                       .out_path = "/spool/100%.out",
                       .err_path = "/spool/01J0RUN.err",
                       .cwd = "/work dir",
                       .job = &job,
                       .time_limit_min = 30};
  char **argv = slurmjob_sbatch_argv(&s);
  const char *want[] = {"/usr/bin/sbatch",
                        "--parsable",
                        "--job-name=prismq-01J0RUN",
                        "--output=/spool/100%%.out",
                        "--error=/spool/01J0RUN.err",
                        "--open-mode=append",
                        "--chdir=/work dir",
                        "--partition=batch",
                        "--account=acct",
                        "--qos=high",
                        "--cpus-per-task=4",
                        "--mem=2G",
                        "--time=30",
                        "--gres=gpu:1",
                        "--exclusive",
                        "/spool/01J0RUN.sh",
                        NULL};
  assert_argv(argv, want);
  slurmjob_argv_free(argv);
}

static void test_sbatch_argv_no_options(void **state) {
  (void)state;
  char *none[] = {NULL};
  config_slurm_job job = {0};
  job.sbatch_args = none;
  job.time_limit_min = 5; /* not used */
  slurmjob_submit s = {.sbatch = "sbatch",
                       .run_id = "R",
                       .script_path = "/s/R.sh",
                       .out_path = "/s/R.out",
                       .err_path = "/s/R.err",
                       .job = &job};
  char **argv = slurmjob_sbatch_argv(&s);
  const char *want[] = {"sbatch",
                        "--parsable",
                        "--job-name=prismq-R",
                        "--output=/s/R.out",
                        "--error=/s/R.err",
                        "--open-mode=append",
                        "/s/R.sh",
                        NULL};
  assert_argv(argv, want);
  slurmjob_argv_free(argv);

  s.job = NULL; /* the same */
  argv = slurmjob_sbatch_argv(&s);
  assert_argv(argv, want);
  slurmjob_argv_free(argv);
  slurmjob_argv_free(NULL);
}

static void test_name(void **state) {
  (void)state;
  char buf[64];
  slurmjob_name(buf, sizeof buf, "01J0ABCDEFGHJKMNPQRSTVWXYZ");
  assert_string_equal(buf, "prismq-01J0ABCDEFGHJKMNPQRSTVWXYZ");
  char small[10];
  slurmjob_name(small, sizeof small, "01J0ABCDEF");
  assert_string_equal(small, "prismq-01");
}

/* --- slurmjob_parse_submit -------------------------------------------------------- */

static int submit(char *out, size_t cap, const char *text) {
  return slurmjob_parse_submit(out, cap, text, strlen(text));
}

static void test_parse_submit(void **state) {
  (void)state;
  char id[24];
  assert_int_equal(submit(id, sizeof id, "12\n"), 0);
  assert_string_equal(id, "12");
  assert_int_equal(submit(id, sizeof id, "345;clus\n"), 0);
  assert_string_equal(id, "345");
  assert_int_equal(submit(id, sizeof id, "678"), 0); /* no newline */
  assert_string_equal(id, "678");

  strcpy(id, "keep");
  const char *bad[] = {"",        "\n",   "abc",   " 12",   "12 \n",   "12;\n", "12\n\n",
                       "12;c\nx", "-1\n", "12x\n", "1.5\n", "12\n3\n", ";c\n"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(submit(id, sizeof id, bad[i]), -EINVAL);
  assert_int_equal(slurmjob_parse_submit(id, sizeof id, "12\0\n", 4), -EINVAL);
  assert_int_equal(slurmjob_parse_submit(id, sizeof id, "12;a\0b", 6), -EINVAL);
  assert_int_equal(submit(id, 3, "1234\n"), -ERANGE);
  assert_string_equal(id, "keep"); /* untouched on failure */
  assert_int_equal(submit(id, 3, "12\n"), 0);
  assert_string_equal(id, "12");
}

/* --- slurmjob_parse_squeue --------------------------------------------------------- */

#define MAXSEEN 8
struct seen {
  size_t n;
  slurmjob_state st[MAXSEEN];
};

static void on_state(void *arg, const slurmjob_state *st) {
  struct seen *s = arg;
  assert_true(s->n < MAXSEEN);
  s->st[s->n++] = *st;
}

static size_t squeue(struct seen *s, const char *text) {
  memset(s, 0, sizeof *s);
  return slurmjob_parse_squeue(text, strlen(text), on_state, s);
}

static void assert_state(const slurmjob_state *st, const char *id, const char *name,
                         const char *state, int phase, int ws, const char *nodes,
                         const char *reason) {
  assert_string_equal(st->job_id, id);
  assert_string_equal(st->name, name);
  assert_string_equal(st->state, state);
  assert_int_equal(st->phase, phase);
  assert_int_equal(st->wait_status, ws);
  assert_string_equal(st->nodes, nodes);
  assert_string_equal(st->reason, reason);
}

static void test_squeue_lines(void **state) {
  (void)state;
  struct seen s;
  /* Slurm 22.05's lines, in our field order. */
  assert_int_equal(squeue(&s,
                          "2|k.sh|CANCELLED|15|pq32137n0|None\n"
                          "1|a.sh|FAILED|768|pq32137n0|NonZeroExitCode\n"
                          "1|prismq-A|PENDING|||None\n"
                          "2|prismq-B|PENDING|0||Priority\n"
                          "7|prismq-C|PENDING||"
                          "|(ReqNodeNotAvail, UnavailableNodes:n[1-3])\n"
                          "8|prismq-D|RUNNING|0|n[1-2],m4|None\n"),
                   0);
  assert_int_equal(s.n, 6);
  assert_state(&s.st[0], "2", "k.sh", "CANCELLED", SLURMJOB_ENDED, 15, "pq32137n0", "");
  assert_state(&s.st[1], "1", "a.sh", "FAILED", SLURMJOB_ENDED, 768, "pq32137n0",
               "NonZeroExitCode");
  assert_state(&s.st[2], "1", "prismq-A", "PENDING", SLURMJOB_PENDING, -1, "", "");
  assert_state(&s.st[3], "2", "prismq-B", "PENDING", SLURMJOB_PENDING, 0, "", "Priority");
  assert_state(&s.st[4], "7", "prismq-C", "PENDING", SLURMJOB_PENDING, -1, "",
               "(ReqNodeNotAvail, UnavailableNodes:n[1-3])");
  assert_state(&s.st[5], "8", "prismq-D", "RUNNING", SLURMJOB_RUNNING, 0, "n[1-2],m4", "");
}

static void test_squeue_reason_takes_the_rest(void **state) {
  (void)state;
  struct seen s;
  /* The reason is last: whatever it holds, '|' too, is its own. */
  assert_int_equal(squeue(&s, "9|n|PENDING|||a | b, c\n"), 0);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.st[0].reason, "a | b, c");
}

static void test_squeue_skips_malformed(void **state) {
  (void)state;
  struct seen s;
  assert_int_equal(squeue(&s,
                          "garbage\n"
                          "1|n|PENDING||\n"                             /* five fields */
                          "x1|n|PENDING|||None\n"                       /* JobID */
                          "1 2|n|PENDING|||None\n"                      /* JobID with a blank */
                          "3|n|pending|||None\n"                        /* state */
                          "4|n||||None\n"                               /* empty state */
                          "5|n|FAILED|3x||None\n"                       /* exit_code */
                          "123456789012345678901234|n|RUNNING|||None\n" /* long JobID */
                          "6|n|COMPLETED|0|n1|None\n"),
                   8);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.st[0].job_id, "6");
}

static void test_squeue_edges(void **state) {
  (void)state;
  struct seen s;
  assert_int_equal(squeue(&s, ""), 0);
  assert_int_equal(s.n, 0);
  assert_int_equal(squeue(&s, "\n\n  \n"), 0); /* blank lines: nothing, not skipped */
  assert_int_equal(s.n, 0);

  /* No final newline; a CR LF line end; padding; array task; NO_VAL exit code. */
  assert_int_equal(squeue(&s,
                          "10_3|prismq-E|RUNNING|-2|n1|None\r\n"
                          "11   |prismq-F   |COMPLETING |0 |n2 |None   \n"
                          "12|prismq-G|COMPLETED|0|n3|None"),
                   0);
  assert_int_equal(s.n, 3);
  assert_state(&s.st[0], "10_3", "prismq-E", "RUNNING", SLURMJOB_RUNNING, -1, "n1", "");
  assert_state(&s.st[1], "11", "prismq-F", "COMPLETING", SLURMJOB_RUNNING, 0, "n2", "");
  assert_state(&s.st[2], "12", "prismq-G", "COMPLETED", SLURMJOB_ENDED, 0, "n3", "");

  /* A state we do not know is still reported, with phase -1. */
  assert_int_equal(squeue(&s, "13|n|NEW_STATE|||None"), 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.st[0].phase, -1);

  /* Over-long fields are cut, never inside a UTF-8 sequence. */
  char line[1024], name[200];
  memset(name, 'a', sizeof name);
  memcpy(name + 78, "\xc3\xa9", 2); /* é across the 80th byte */
  name[sizeof name - 1] = '\0';
  snprintf(line, sizeof line, "14|%s|RUNNING|0|n1|None\n", name);
  assert_int_equal(squeue(&s, line), 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(strlen(s.st[0].name), 78);
}

/* --- slurmjob_phase ------------------------------------------------------------------ */

static void test_phase(void **state) {
  (void)state;
  const char *pending[] = {"PENDING",      "REQUEUED",      "REQUEUE_FED",
                           "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING"};
  const char *running[] = {"RUNNING",   "COMPLETING", "SUSPENDED", "STOPPED",
                           "SIGNALING", "STAGE_OUT",  "RESIZING"};
  const char *ended[] = {"COMPLETED", "FAILED",        "CANCELLED", "TIMEOUT",
                         "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                         "DEADLINE",  "SPECIAL_EXIT",  "REVOKED"};
  for (size_t i = 0; i < sizeof pending / sizeof *pending; i++)
    assert_int_equal(slurmjob_phase(pending[i]), SLURMJOB_PENDING);
  for (size_t i = 0; i < sizeof running / sizeof *running; i++)
    assert_int_equal(slurmjob_phase(running[i]), SLURMJOB_RUNNING);
  for (size_t i = 0; i < sizeof ended / sizeof *ended; i++)
    assert_int_equal(slurmjob_phase(ended[i]), SLURMJOB_ENDED);
  assert_int_equal(slurmjob_phase(""), -1);
  assert_int_equal(slurmjob_phase("running"), -1);
  assert_int_equal(slurmjob_phase("PD"), -1);
  assert_int_equal(slurmjob_phase("CANCELLED by 0"), -1);
}

/* --- slurmjob_parse_sacct ------------------------------------------------------------ */

struct accts {
  size_t n;
  slurmjob_acct a[MAXSEEN];
};

static void on_acct(void *arg, const slurmjob_acct *a) {
  struct accts *s = arg;
  assert_true(s->n < MAXSEEN);
  s->a[s->n++] = *a;
}

static size_t sacct(struct accts *s, const char *text) {
  memset(s, 0, sizeof *s);
  return slurmjob_parse_sacct(text, strlen(text), on_acct, s);
}

static void assert_acct(const slurmjob_acct *a, const char *id, const char *state, int code,
                        int sig, uint64_t cpu_ms, uint64_t rss_kb) {
  assert_string_equal(a->job_id, id);
  assert_string_equal(a->state, state);
  assert_int_equal(a->exit_code, code);
  assert_int_equal(a->term_signal, sig);
  assert_int_equal(a->cpu_ms, cpu_ms);
  assert_int_equal(a->max_rss_kb, rss_kb);
}

static void test_sacct_merges_steps(void **state) {
  (void)state;
  struct accts s;
  assert_int_equal(sacct(&s,
                         "123|COMPLETED|0:0|00:01.234|\n"
                         "123.batch|COMPLETED|0:0|00:01.230|1234K\n"
                         "123.extern|COMPLETED|0:0|00:00:00|0\n"
                         "124|CANCELLED by 0|0:15|01:02:03|\n"
                         "124.batch|CANCELLED|0:15|01:02:03|12M\n"
                         "124.0|CANCELLED|0:15|00:10.000|1.5G\n"
                         "124.extern|COMPLETED|0:0|00:00:00|0"),
                   0);
  assert_int_equal(s.n, 2);
  assert_acct(&s.a[0], "123", "COMPLETED", 0, 0, 1234, 1234);
  assert_acct(&s.a[1], "124", "CANCELLED", 0, 15, 3723000, 1572864);
}

static void test_sacct_any_order(void **state) {
  (void)state;
  struct accts s;
  /* Steps before their job, jobs interleaved; a step whose job never shows is skipped
   * (counted), as is a line that does not parse. */
  assert_int_equal(sacct(&s,
                         "20.batch|FAILED|3:0|00:02.500|2048K\n"
                         "21.batch|COMPLETED|0:0|00:00:01|100K\n"
                         "99.batch|COMPLETED|0:0|00:00:01|100K\n"
                         "20|FAILED|3:0|00:02.500|\n"
                         "not|a|line\n"
                         "21|COMPLETED|0:0|00:00:01|\n"
                         "20.extern|COMPLETED|0:0|00:00:00|4096K\n"),
                   2);
  assert_int_equal(s.n, 2);
  assert_acct(&s.a[0], "20", "FAILED", 3, 0, 2500, 4096);
  assert_acct(&s.a[1], "21", "COMPLETED", 0, 0, 1000, 100);
}

static void test_sacct_cpu_formats(void **state) {
  (void)state;
  static const struct {
    const char *cpu;
    uint64_t ms;
  } cases[] = {
      {"01:02:03", 3723000},       {"1-02:03:04", 93784000}, {"00:01.500", 1500},
      {"02:03.004", 123004},       {"00:00:00", 0},          {"", 0},
      {"12-00:00:00", 1036800000}, {"00:07", 7000},          {"00:01.5", 1500},
      {"00:01.0123", 1012},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char line[128];
    struct accts s;
    snprintf(line, sizeof line, "5|COMPLETED|0:0|%s|", cases[i].cpu);
    assert_int_equal(sacct(&s, line), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.a[0].cpu_ms, cases[i].ms);
  }
  const char *bad[] = {"1", "1-02:03", "a:b", "01:02:03:04", "00:01.", "01:-2", "1-", "00:01x"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char line[128];
    struct accts s;
    snprintf(line, sizeof line, "5|COMPLETED|0:0|%s|", bad[i]);
    assert_int_equal(sacct(&s, line), 1);
    assert_int_equal(s.n, 0);
  }
}

static void test_sacct_rss_units(void **state) {
  (void)state;
  static const struct {
    const char *rss;
    uint64_t kb;
  } cases[] = {
      {"1234K", 1234}, {"12M", 12288}, {"1.5G", 1572864},     {"1.50G", 1572864},
      {"0", 0},        {"", 0},        {"2T", 2147483648ULL}, {"1P", 1099511627776ULL},
      {"2048", 2}, /* bytes */
      {"0.25M", 256},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char line[128];
    struct accts s;
    snprintf(line, sizeof line, "6|COMPLETED|0:0|00:00:00|\n6.batch|COMPLETED|0:0|00:00:00|%s",
             cases[i].rss);
    assert_int_equal(sacct(&s, line), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.a[0].max_rss_kb, cases[i].kb);
  }
  const char *bad[] = {"12X", "K", "1.G", "12KK", "-1K", "1 K", "999999999999P", "9999999999999K"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char line[128];
    struct accts s;
    snprintf(line, sizeof line, "6|COMPLETED|0:0|00:00:00|%s", bad[i]);
    assert_int_equal(sacct(&s, line), 1);
    assert_int_equal(s.n, 0);
  }
}

static void test_sacct_malformed(void **state) {
  (void)state;
  struct accts s;
  assert_int_equal(sacct(&s,
                         "7|COMPLETED|0:0|00:00:00\n"   /* four fields */
                         "7|COMPLETED|0:0|00:00:00||\n" /* six */
                         "7x|COMPLETED|0:0|00:00:00|\n" /* JobIDRaw */
                         "7.|COMPLETED|0:0|00:00:00|\n" /* empty step */
                         "|COMPLETED|0:0|00:00:00|\n"   /* no id */
                         "7|completed|0:0|00:00:00|\n"  /* state */
                         "7|COMPLETED|0|00:00:00|\n"    /* exit code */
                         "7|COMPLETED|0:x|00:00:00|\n"  /* exit code */
                         "\n"                           /* blank: ignored */
                         "8|TIMEOUT|0:1|1-00:00:00|\n"),
                   8);
  assert_int_equal(s.n, 1);
  assert_acct(&s.a[0], "8", "TIMEOUT", 0, 1, 86400000, 0);
  assert_int_equal(sacct(&s, ""), 0);
  assert_int_equal(s.n, 0);
}

/* --- slurmjob_wait_status ------------------------------------------------------------ */

static void test_wait_status(void **state) {
  (void)state;
  static const struct {
    int ws, exit_status, term_signal;
  } cases[] = {
      {768, 3, 0},      {9, -1, 9},         {0, 0, 0},
      {15, -1, 15},     {137 << 8, 137, 0}, {0x8b, -1, 11}, /* SIGSEGV, core dumped */
      {-1, -1, 0},      {0x7f, -1, 0},                      /* stopped: neither */
      {1 << 16, -1, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int es = 42, sig = 42;
    slurmjob_wait_status(cases[i].ws, &es, &sig);
    assert_int_equal(es, cases[i].exit_status);
    assert_int_equal(sig, cases[i].term_signal);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_script_plain),
      cmocka_unit_test(test_script_quoting),
      cmocka_unit_test(test_script_progress_line),
      cmocka_unit_test(test_script_no_dos_line_break),
      cmocka_unit_test(test_script_words_reach_the_command),
      cmocka_unit_test(test_script_progress_descriptor),
      cmocka_unit_test(test_sbatch_argv_all_options),
      cmocka_unit_test(test_sbatch_argv_no_options),
      cmocka_unit_test(test_name),
      cmocka_unit_test(test_parse_submit),
      cmocka_unit_test(test_squeue_lines),
      cmocka_unit_test(test_squeue_reason_takes_the_rest),
      cmocka_unit_test(test_squeue_skips_malformed),
      cmocka_unit_test(test_squeue_edges),
      cmocka_unit_test(test_phase),
      cmocka_unit_test(test_sacct_merges_steps),
      cmocka_unit_test(test_sacct_any_order),
      cmocka_unit_test(test_sacct_cpu_formats),
      cmocka_unit_test(test_sacct_rss_units),
      cmocka_unit_test(test_sacct_malformed),
      cmocka_unit_test(test_wait_status),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
