#include "slurmjob.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "utf8.h"
#include "xalloc.h"

/* A string that grows; p is NULL until the first byte is added. */
struct sb {
  char *p;
  size_t len, cap;
};

static void sb_add(struct sb *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s) { sb_add(b, s, strlen(s)); }

/* w as one shell word: inside single quotes nothing is special but the quote itself,
 * which is closed, escaped and reopened. A CR right before a LF is closed off from it
 * (the two halves still make one word) because sbatch refuses a script holding
 * "\r\n", taking it for a file with DOS line breaks. */
static void sb_quoted(struct sb *b, const char *w) {
  sb_add(b, "'", 1);
  for (;;) {
    size_t n = strcspn(w, "'\r");
    sb_add(b, w, n);
    w += n;
    if (!*w) break;
    if (*w == '\'') {
      sb_str(b, "'\\''");
    } else {
      sb_add(b, "\r", 1);
      if (w[1] == '\n') sb_str(b, "''");
    }
    w++;
  }
  sb_add(b, "'", 1);
}

char *slurmjob_script(const char *run_id, const char *const *argv, const char *progress_path) {
  struct sb b = {NULL, 0, 0};

  sb_str(&b, "#!/bin/sh\n# prismq run ");
  for (const char *p = run_id; *p; p++) {
    unsigned char c = (unsigned char)*p;
    sb_add(&b, c < 0x20 || c == 0x7f ? "?" : p, 1);
  }
  sb_str(&b, "\n");
  if (progress_path) {
    sb_str(&b, "exec 3>>");
    sb_quoted(&b, progress_path);
    sb_str(&b, "\n");
  }
  sb_str(&b, "exec");
  for (size_t i = 0; argv[i]; i++) {
    sb_str(&b, " ");
    sb_quoted(&b, argv[i]);
  }
  sb_str(&b, "\n");
  return b.p;
}

/* PREFIX VALUE, with each '%' of VALUE doubled if escape_pct (Slurm's file name
 * patterns take "%%" for a '%'). */
static char *opt(const char *prefix, const char *value, int escape_pct) {
  struct sb b = {NULL, 0, 0};

  sb_str(&b, prefix);
  for (;;) {
    size_t n = escape_pct ? strcspn(value, "%") : strlen(value);
    sb_add(&b, value, n);
    value += n;
    if (!*value) break;
    sb_str(&b, "%%");
    value++;
  }
  return b.p;
}

static char *opt_u32(const char *prefix, uint32_t v) {
  char num[16];
  snprintf(num, sizeof num, "%u", (unsigned)v);
  return opt(prefix, num, 0);
}

char **slurmjob_sbatch_argv(const slurmjob_submit *s) {
  const config_slurm_job *job = s->job;
  size_t nextra = job ? job->nsbatch_args : 0;
  /* sbatch, 5 fixed options, 7 optional ones, the extra arguments, the script, NULL */
  char **argv = xcalloc(1 + 5 + 7 + nextra + 2, sizeof *argv);
  size_t n = 0;

  argv[n++] = xstrdup(s->sbatch);
  argv[n++] = xstrdup("--parsable");
  argv[n++] = opt("--job-name=" SLURMJOB_NAME_PREFIX, s->run_id, 0);
  argv[n++] = opt("--output=", s->out_path, 1);
  argv[n++] = opt("--error=", s->err_path, 1);
  argv[n++] = xstrdup("--open-mode=append");
  if (s->cwd) argv[n++] = opt("--chdir=", s->cwd, 0);
  if (job && job->partition) argv[n++] = opt("--partition=", job->partition, 0);
  if (job && job->account) argv[n++] = opt("--account=", job->account, 0);
  if (job && job->qos) argv[n++] = opt("--qos=", job->qos, 0);
  if (job && job->cpus) argv[n++] = opt_u32("--cpus-per-task=", job->cpus);
  if (job && job->memory) argv[n++] = opt("--mem=", job->memory, 0);
  if (s->time_limit_min) argv[n++] = opt_u32("--time=", s->time_limit_min);
  for (size_t i = 0; i < nextra; i++) argv[n++] = xstrdup(job->sbatch_args[i]);
  argv[n++] = xstrdup(s->script_path);
  argv[n] = NULL;
  return argv;
}

void slurmjob_argv_free(char **argv) {
  if (!argv) return;
  for (char **p = argv; *p; p++) free(*p);
  free(argv);
}

void slurmjob_name(char *out, size_t cap, const char *run_id) {
  snprintf(out, cap, SLURMJOB_NAME_PREFIX "%s", run_id);
}

/* How many decimal digits [s, e) begins with. */
static size_t span_digits(const char *s, const char *e) {
  const char *p = s;
  while (p < e && *p >= '0' && *p <= '9') p++;
  return (size_t)(p - s);
}

int slurmjob_parse_submit(char *out, size_t cap, const char *text, size_t len) {
  if (len > 0 && text[len - 1] == '\n') len--;
  size_t n = span_digits(text, text + len);
  if (n == 0) return -EINVAL;
  if (n < len) { /* ";CLUSTER" */
    if (text[n] != ';' || n + 1 == len) return -EINVAL;
    if (memchr(text + n + 1, '\n', len - n - 1) || memchr(text + n + 1, '\0', len - n - 1))
      return -EINVAL;
  }
  if (n >= cap) return -ERANGE;
  memcpy(out, text, n);
  out[n] = '\0';
  return 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* [s, s + n) without its trailing blanks (squeue pads fields given a width, and a
 * line may end in CR LF). */
static size_t trimmed(const char *s, size_t n) {
  while (n > 0 && is_blank(s[n - 1])) n--;
  return n;
}

static int is_state_name(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_')) return 0;
  return 1;
}

/* Reads 1..maxdig decimal digits at *p (before e) into *v and moves *p past them.
 * Returns 0, or -1 if there is no digit there or too many. */
static int digits(const char **p, const char *e, int maxdig, uint64_t *v) {
  size_t k = span_digits(*p, e);
  uint64_t x = 0;

  if (k == 0 || k > (size_t)maxdig) return -1;
  for (size_t i = 0; i < k; i++) x = x * 10 + (uint64_t)((*p)[i] - '0');
  *p += k;
  *v = x;
  return 0;
}

/* The first 3 digits of a fraction at *p (".5" -> 500, ".0123" -> 12), the rest
 * dropped; moves *p past all of them. Returns 0, or -1 without any digit. */
static int fraction_milli(const char **p, const char *e, uint64_t *milli) {
  size_t k = span_digits(*p, e);
  uint64_t x = 0;

  if (k == 0) return -1;
  for (size_t i = 0; i < 3; i++) x = x * 10 + (i < k ? (uint64_t)((*p)[i] - '0') : 0);
  *p += k;
  *milli = x;
  return 0;
}

/* squeue's exit_code: "", a negative number (Slurm's NO_VAL printed with %d) or one
 * above what a wait status can be is unknown (-1), else a wait status. Returns 0, or
 * -1 if s is not a number. */
static int parse_wait_status(const char *s, size_t n, int *out) {
  const char *p = s, *e = s + n;
  int neg = 0;
  uint64_t v;

  if (n == 0) {
    *out = -1;
    return 0;
  }
  if (*p == '-') {
    neg = 1;
    p++;
  }
  if (digits(&p, e, 10, &v) < 0 || p != e) return -1;
  *out = neg || v > 0xffff ? -1 : (int)v;
  return 0;
}

/* One line of squeue's output, [s, e), into *st. Returns 0, or -1 if it does not
 * parse. */
static int parse_squeue_line(const char *s, const char *e, slurmjob_state *st) {
  const char *f[6];
  size_t flen[6];
  const char *p = s;

  /* Five separators; the reason, last, is the rest of the line, '|' or not. */
  for (int i = 0; i < 5; i++) {
    const char *bar = memchr(p, '|', (size_t)(e - p));
    if (!bar) return -1;
    f[i] = p;
    flen[i] = trimmed(p, (size_t)(bar - p));
    p = bar + 1;
  }
  f[5] = p;
  flen[5] = trimmed(p, (size_t)(e - p));

  /* JobID: "123", "123_4", "123+0"; never cut: a cut one would name another job. */
  if (flen[0] == 0 || flen[0] >= sizeof st->job_id || f[0][0] < '0' || f[0][0] > '9') return -1;
  for (size_t i = 0; i < flen[0]; i++)
    if ((unsigned char)f[0][i] <= ' ' || f[0][i] == 0x7f) return -1;
  if (!is_state_name(f[2], flen[2])) return -1;
  if (parse_wait_status(f[3], flen[3], &st->wait_status) < 0) return -1;

  memcpy(st->job_id, f[0], flen[0]);
  st->job_id[flen[0]] = '\0';
  utf8_sanitize(st->name, sizeof st->name, f[1], flen[1]);
  utf8_sanitize(st->state, sizeof st->state, f[2], flen[2]);
  st->phase = slurmjob_phase(st->state);
  utf8_sanitize(st->nodes, sizeof st->nodes, f[4], flen[4]);
  if (flen[5] == 4 && memcmp(f[5], "None", 4) == 0)
    st->reason[0] = '\0';
  else
    utf8_sanitize(st->reason, sizeof st->reason, f[5], flen[5]);
  return 0;
}

/* Calls line(ctx, s, e) for each non-blank line of text[0..len), its newline left
 * out; returns how many of those calls returned < 0. */
static size_t each_line(const char *text, size_t len,
                        int (*line)(void *ctx, const char *s, const char *e), void *ctx) {
  const char *p = text, *end = text + len;
  size_t bad = 0;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    if (trimmed(p, (size_t)(e - p)) > 0 && line(ctx, p, e) < 0) bad++;
    p = nl ? nl + 1 : end;
  }
  return bad;
}

struct squeue_ctx {
  void (*fn)(void *arg, const slurmjob_state *st);
  void *arg;
};

static int squeue_line(void *ctx, const char *s, const char *e) {
  struct squeue_ctx *c = ctx;
  slurmjob_state st;

  if (parse_squeue_line(s, e, &st) < 0) return -1;
  c->fn(c->arg, &st);
  return 0;
}

size_t slurmjob_parse_squeue(const char *text, size_t len,
                             void (*fn)(void *arg, const slurmjob_state *st), void *arg) {
  struct squeue_ctx c = {fn, arg};
  return each_line(text, len, squeue_line, &c);
}

int slurmjob_phase(const char *state) {
  static const char *const pending[] = {"PENDING",      "REQUEUED",      "REQUEUE_FED",
                                        "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING"};
  static const char *const running[] = {"RUNNING",   "COMPLETING", "SUSPENDED", "STOPPED",
                                        "SIGNALING", "STAGE_OUT",  "RESIZING"};
  static const char *const ended[] = {"COMPLETED", "FAILED",        "CANCELLED", "TIMEOUT",
                                      "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                                      "DEADLINE",  "SPECIAL_EXIT",  "REVOKED"};
  static const struct {
    const char *const *names;
    size_t n;
    int phase;
  } classes[] = {
      {pending, sizeof pending / sizeof *pending, SLURMJOB_PENDING},
      {running, sizeof running / sizeof *running, SLURMJOB_RUNNING},
      {ended, sizeof ended / sizeof *ended, SLURMJOB_ENDED},
  };

  for (size_t c = 0; c < sizeof classes / sizeof *classes; c++)
    for (size_t i = 0; i < classes[c].n; i++)
      if (strcmp(state, classes[c].names[i]) == 0) return classes[c].phase;
  return -1;
}

/* sacct's TotalCPU, [s, e): "D-HH:MM:SS", "HH:MM:SS", "MM:SS.mmm", "MM:SS" (a fraction
 * allowed after the seconds of any), or "" for none, in milliseconds. Returns 0, or
 * -1 if it is none of these. */
static int parse_cpu_ms(const char *s, const char *e, uint64_t *ms) {
  const char *p = s;
  uint64_t days = 0, f[3], milli = 0;
  int nf = 0, had_days = 0;

  if (p == e) {
    *ms = 0;
    return 0;
  }
  if (memchr(p, '-', (size_t)(e - p))) {
    if (digits(&p, e, 9, &days) < 0 || p == e || *p++ != '-') return -1;
    had_days = 1;
  }
  for (;;) {
    if (digits(&p, e, 9, &f[nf++]) < 0) return -1;
    if (p == e || *p != ':' || nf == 3) break;
    p++;
  }
  if (p < e && *p == '.') {
    p++;
    if (fraction_milli(&p, e, &milli) < 0) return -1;
  }
  if (p != e || nf < 2 || (had_days && nf != 3)) return -1;
  uint64_t secs = nf == 3 ? f[0] * 3600 + f[1] * 60 + f[2] : f[0] * 60 + f[1];
  *ms = (days * 86400 + secs) * 1000 + milli;
  return 0;
}

/* sacct's MaxRSS, [s, e): a number with an optional fraction and an optional unit (K,
 * M, G, T, P: powers of 1024; none: bytes), or "" for none, in KiB rounded to the
 * nearest. Returns 0, or -1 if it is not that (or too large). */
static int parse_rss_kb(const char *s, const char *e, uint64_t *kb) {
  static const char units[] = "KMGTP";
  const char *p = s;
  uint64_t whole, milli = 0, per_kib = 1; /* KiB per unit */

  if (p == e) {
    *kb = 0;
    return 0;
  }
  if (digits(&p, e, 12, &whole) < 0) return -1;
  if (p < e && *p == '.') {
    p++;
    if (fraction_milli(&p, e, &milli) < 0) return -1;
  }
  uint64_t thousandths = whole * 1000 + milli;
  if (p == e) { /* bytes */
    *kb = (thousandths + 512000) / 1024000;
    return 0;
  }
  const char *u = memchr(units, *p, sizeof units - 1);
  if (!u || p + 1 != e) return -1;
  for (const char *k = units; k < u; k++) per_kib *= 1024;
  if (thousandths > (UINT64_MAX - 500) / per_kib) return -1;
  *kb = (thousandths * per_kib + 500) / 1000;
  return 0;
}

/* sacct's ExitCode, [s, e): "CODE:SIGNAL". Returns 0, or -1 if it is not that. */
static int parse_exit_code(const char *s, const char *e, int *code, int *sig) {
  const char *p = s;
  uint64_t c, g;

  if (digits(&p, e, 9, &c) < 0 || p == e || *p++ != ':') return -1;
  if (digits(&p, e, 9, &g) < 0 || p != e) return -1;
  *code = (int)c;
  *sig = (int)g;
  return 0;
}

/* A job being gathered from sacct's lines. */
struct acct_job {
  slurmjob_acct a;
  int have_job_line;
  size_t step_lines; /* counted as skipped if the job line never comes */
};

struct sacct_ctx {
  struct acct_job *jobs;
  size_t n, cap;
  size_t last; /* the job of the last line: steps follow their job in practice */
};

static struct acct_job *acct_job_get(struct sacct_ctx *c, const char *id, size_t idlen) {
  if (c->n > 0) {
    const char *last = c->jobs[c->last].a.job_id;
    if (strlen(last) == idlen && memcmp(last, id, idlen) == 0) return &c->jobs[c->last];
  }
  for (size_t i = 0; i < c->n; i++) {
    const char *jid = c->jobs[i].a.job_id;
    if (strlen(jid) == idlen && memcmp(jid, id, idlen) == 0) {
      c->last = i;
      return &c->jobs[i];
    }
  }
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 16;
    c->jobs = xrealloc(c->jobs, c->cap * sizeof *c->jobs);
  }
  struct acct_job *j = &c->jobs[c->n];
  memset(j, 0, sizeof *j);
  memcpy(j->a.job_id, id, idlen);
  j->a.job_id[idlen] = '\0';
  c->last = c->n++;
  return j;
}

static int sacct_line(void *ctx, const char *s, const char *e) {
  struct sacct_ctx *c = ctx;
  const char *f[5], *fe[5];
  const char *p = s;

  for (int i = 0; i < 4; i++) {
    const char *bar = memchr(p, '|', (size_t)(e - p));
    if (!bar) return -1;
    f[i] = p;
    fe[i] = bar;
    p = bar + 1;
  }
  if (memchr(p, '|', (size_t)(e - p))) return -1; /* more than five fields */
  f[4] = p;
  fe[4] = p + trimmed(p, (size_t)(e - p));

  /* JobIDRaw: DIGITS for the job, DIGITS.STEP for a step. */
  size_t idlen = span_digits(f[0], fe[0]);
  const char *q = f[0] + idlen;
  int is_step = q < fe[0];
  if (idlen == 0 || idlen >= sizeof c->jobs->a.job_id) return -1;
  if (is_step && (*q != '.' || q + 1 == fe[0])) return -1;

  /* State: its first word ("CANCELLED by 0"). */
  const char *sp = memchr(f[1], ' ', (size_t)(fe[1] - f[1]));
  size_t slen = (size_t)((sp ? sp : fe[1]) - f[1]);
  if (!is_state_name(f[1], slen)) return -1;

  int code, sig;
  uint64_t cpu_ms, rss_kb;
  if (parse_exit_code(f[2], fe[2], &code, &sig) < 0 || parse_cpu_ms(f[3], fe[3], &cpu_ms) < 0 ||
      parse_rss_kb(f[4], fe[4], &rss_kb) < 0)
    return -1;

  struct acct_job *j = acct_job_get(c, f[0], idlen);
  if (rss_kb > j->a.max_rss_kb) j->a.max_rss_kb = rss_kb;
  if (is_step) {
    j->step_lines++;
    return 0;
  }
  j->have_job_line = 1;
  utf8_sanitize(j->a.state, sizeof j->a.state, f[1], slen);
  j->a.exit_code = code;
  j->a.term_signal = sig;
  j->a.cpu_ms = cpu_ms;
  return 0;
}

size_t slurmjob_parse_sacct(const char *text, size_t len,
                            void (*fn)(void *arg, const slurmjob_acct *a), void *arg) {
  struct sacct_ctx c = {NULL, 0, 0, 0};
  size_t skipped = each_line(text, len, sacct_line, &c);

  for (size_t i = 0; i < c.n; i++) {
    if (c.jobs[i].have_job_line)
      fn(arg, &c.jobs[i].a);
    else
      skipped += c.jobs[i].step_lines;
  }
  free(c.jobs);
  return skipped;
}

void slurmjob_wait_status(int wait_status, int *exit_status, int *term_signal) {
  *exit_status = -1;
  *term_signal = 0;
  if (wait_status < 0 || wait_status > 0xffff) return;
  if (WIFEXITED(wait_status))
    *exit_status = WEXITSTATUS(wait_status);
  else if (WIFSIGNALED(wait_status))
    *term_signal = WTERMSIG(wait_status);
}
