/* A run's progress for people: the status line drawn on a terminal, the plain lines
 * written elsewhere, and the display that keeps them out of the run's output.
 *
 * The display redraws from a thread of its own: a blocking libprismq call hands us
 * control only when a chunk or an answer comes, and the line must still catch up with a
 * report the redraw limit held back, and count the elapsed time, while a run is silent.
 * Every write to stdout and stderr goes through the display's mutex while it runs. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "utf8.h"

#define TICK_MS       100  /* the redraw limit: 10 a second */
#define PLAIN_GAP_MS  1000 /* at most one plain line a second */
#define DEFAULT_WIDTH 80   /* a terminal that does not say */
#define BAR_MIN       10
#define BAR_MAX       30
#define SPIN_MS       250  /* a quarter turn of the spinner */
#define RATE_SPAN_MS  1000 /* reports closer in time give a rate that is only noise */

/* ---- the lines ---- */

/* A bounded string being built: appends stop at cap - 1 bytes, and buf stays
 * NUL-terminated. */
struct line {
  char *buf;
  size_t cap, len;
};

static void put(struct line *l, const char *s) {
  size_t n = strlen(s);
  if (n > l->cap - 1 - l->len) n = l->cap - 1 - l->len;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
  l->buf[l->len] = '\0';
}

/* The character at s (len bytes left): its length in bytes, and in *shown whether it
 * is written as is; a control character or a byte that is not UTF-8 shows as '?', so
 * that text from the server cannot drive the terminal. */
static size_t next_char(const char *s, size_t len, int *shown) {
  unsigned char ch = (unsigned char)*s;
  if (ch < 0x80) {
    *shown = ch >= 0x20 && ch != 0x7f;
    return 1;
  }
  size_t n = utf8_seq_len(s, len);
  *shown = n > 0;
  return n ? n : 1;
}

/* Columns of a character of n bytes. A character beyond ASCII counts two: wide (CJK)
 * ones take two, and a line that wrapped could no longer be erased; accented text is
 * only cut a little early. */
static size_t char_cols(size_t n) { return n == 1 ? 1 : 2; }

static size_t text_cols(const char *s) {
  size_t cols = 0, len = strlen(s);
  int shown;
  for (size_t i = 0, n; i < len; i += n) {
    n = next_char(s + i, len - i, &shown);
    cols += char_cols(n);
  }
  return cols;
}

/* Appends the characters of s that fit in `cols` columns (and in the buffer, never
 * splitting one), made harmless as next_char says. */
static void put_text(struct line *l, const char *s, size_t cols) {
  size_t len = strlen(s);
  int shown;
  for (size_t i = 0, n; i < len; i += n) {
    n = next_char(s + i, len - i, &shown);
    size_t bytes = shown ? n : 1;
    if (char_cols(n) > cols || bytes > l->cap - 1 - l->len) break;
    memcpy(l->buf + l->len, shown ? s + i : "?", bytes);
    l->len += bytes;
    cols -= char_cols(n);
  }
  l->buf[l->len] = '\0';
}

/* A count or total: whole numbers without decimals (as they usually are), else one. */
static void format_number(char *buf, size_t cap, double v) {
  if (!isfinite(v))
    snprintf(buf, cap, "?");
  else if (fabs(v) >= 1e15)
    snprintf(buf, cap, "%.3g", v);
  else
    snprintf(buf, cap, v == floor(v) ? "%.0f" : "%.1f", v);
}

/* The whole percentage done, 0..100 (a done beyond the total counts as 100). */
static int percent(const Prismq__Runner__V1__Progress *p) {
  double f = p->done / p->total;
  if (!(f > 0)) return 0; /* NaN too */
  return f >= 1 ? 100 : (int)(f * 100);
}

/* "DONE/TOTAL", or "DONE" when the total is unknown. */
static void format_count(char *buf, size_t cap, const Prismq__Runner__V1__Progress *p) {
  char done[32], total[32];
  format_number(done, sizeof done, p->done);
  format_number(total, sizeof total, p->total);
  snprintf(buf, cap, p->total > 0 ? "%s/%s" : "%s", done, total);
}

/* " M:SS" or " H:MM:SS", then " RATE/s" if the rate is known. */
static void format_times(char *buf, size_t cap, uint64_t elapsed_ms, double rate) {
  uint64_t s = elapsed_ms / 1000;
  int n = s < 3600 ? snprintf(buf, cap, " %" PRIu64 ":%02" PRIu64, s / 60, s % 60)
                   : snprintf(buf, cap, " %" PRIu64 ":%02" PRIu64 ":%02" PRIu64, s / 3600,
                              s / 60 % 60, s % 60);
  if (n < 0 || (size_t)n >= cap || !(rate >= 0) || !isfinite(rate)) return;
  if (rate < 10)
    snprintf(buf + n, cap - (size_t)n, " %.1f/s", rate);
  else
    snprintf(buf + n, cap - (size_t)n, rate < 1e15 ? " %.0f/s" : " %.3g/s", rate);
}

size_t cli_progress_render(char *buf, size_t cap, const Prismq__Runner__V1__Progress *p,
                           uint64_t elapsed_ms, double rate, unsigned width) {
  size_t cols = (width ? width : DEFAULT_WIDTH) - 1;
  if (cols > (cap - 1) / 2) cols = (cap - 1) / 2; /* a column of the message takes <= 2 bytes */
  struct line l = {buf, cap, 0};
  char head[8], count[72], times[96];
  int known = p->total > 0;
  if (known)
    snprintf(head, sizeof head, "%3d%%", percent(p));
  else
    snprintf(head, sizeof head, "%c", "|/-\\"[elapsed_ms / SPIN_MS % 4]);
  format_count(count, sizeof count, p);
  format_times(times, sizeof times, elapsed_ms, rate);
  size_t fixed = strlen(head) + 1 + strlen(count) + strlen(times);
  size_t msg = p->message[0] ? text_cols(p->message) + 1 : 0;
  /* The bar (" [" BAR "]") gives the message room down to BAR_MIN, and goes when even
   * that does not fit. */
  long bar = (long)cols - (long)fixed - 3;
  if (!known || bar < BAR_MIN) {
    bar = 0;
  } else {
    bar -= (long)msg;
    bar = bar < BAR_MIN ? BAR_MIN : bar > BAR_MAX ? BAR_MAX : bar;
  }

  put(&l, head);
  if (bar > 0) {
    long fill = (long)(percent(p) * bar / 100);
    put(&l, " [");
    for (long i = 0; i < bar; i++) put(&l, i < fill ? "#" : ".");
    put(&l, "]");
  }
  put(&l, " ");
  put(&l, count);
  put(&l, times);
  if (l.len > cols) buf[l.len = cols] = '\0';            /* a tiny terminal; all ASCII so far */
  size_t room = cols > l.len + 1 ? cols - l.len - 1 : 0; /* after a space */
  if (msg && msg - 1 <= room) {
    put(&l, " ");
    put_text(&l, p->message, room);
  } else if (msg && room > 3) {
    put(&l, " ");
    size_t from = l.len;
    put_text(&l, p->message, room - 3);
    while (l.len > from && buf[l.len - 1] == ' ') l.len--; /* "what..." */
    put(&l, "...");
  }
  return l.len;
}

size_t cli_progress_plain(char *buf, size_t cap, const Prismq__Runner__V1__Progress *p) {
  struct line l = {buf, cap, 0};
  char count[72], pct[8];
  format_count(count, sizeof count, p);
  put(&l, "progress ");
  put(&l, count);
  if (p->total > 0) {
    snprintf(pct, sizeof pct, " %d%%", percent(p));
    put(&l, pct);
  }
  if (p->message[0]) {
    put(&l, " ");
    put_text(&l, p->message, SIZE_MAX);
  }
  return l.len;
}

/* ---- the display ---- */

struct cli_progress {
  int mode;            /* enum cli_progress_mode */
  int out_shared;      /* stdout is the file stderr is: its output passes the line too */
  int64_t started_ms;  /* Unix time, for the elapsed time */
  pthread_mutex_t mu;  /* all below, and every write while the ticker runs */
  pthread_cond_t wake; /* stop was set */
  pthread_t ticker;    /* redraws every TICK_MS */
  int ticking, stop;   /* the ticker runs; it is to end */
  int have;            /* a report came: last holds it */
  int at_line_start;   /* where our lines go, the last byte written was a newline */
  int shown;           /* BAR: the line is on the screen, the cursor at its end */
  int printed;         /* PLAIN: a line was printed, telling what `told` holds */
  int64_t printed_ms;  /* PLAIN: when (monotonic) */
  double rate;         /* units a second since the base report, -1 unknown */
  double base_done;    /* the base report of the rate: its done */
  int64_t base_ms;     /* and its time */
  /* The latest report, and PLAIN: the one the last line told (messages ours, or NULL). */
  Prismq__Runner__V1__Progress last, told;
  char drawn[CLI_PROGRESS_LINE_MAX]; /* BAR: the line on the screen */
};

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue; /* our SIGINT handler */
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Writes our own text on stderr. It is decoration: a failure is the run output's
 * writes to report, not ours. */
static void put_stderr(const char *s) { (void)write_all(STDERR_FILENO, s, strlen(s)); }

int cli_progress_mode(void) {
  return cli_os_ansi_terminal(STDERR_FILENO) ? CLI_PROGRESS_BAR : CLI_PROGRESS_PLAIN;
}

cli_progress *cli_progress_new(int mode, int64_t started_at_ms) {
  cli_progress *p = cli_xcalloc(1, sizeof *p);
  p->mode = mode;
  p->out_shared = cli_os_same_file(STDOUT_FILENO, STDERR_FILENO);
  p->started_ms = started_at_ms > 0 ? started_at_ms : cli_now_ms(CLOCK_REALTIME);
  p->at_line_start = 1;
  p->rate = -1;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&p->mu, NULL);
  return p;
}

static void set_report(Prismq__Runner__V1__Progress *dst, const Prismq__Runner__V1__Progress *src) {
  free(dst->message);
  *dst = *src;
  dst->message = cli_xstrdup(src->message);
}

/* BAR: draws the line where it changed; `final` leaves it as a line of its own. It
 * waits for output that ended mid-line to end its line (or, at the end, ends it). */
static void show_bar(cli_progress *p, int final) {
  if (!p->shown && !p->at_line_start) {
    if (!final) return;
    put_stderr("\n");
  }
  char line[CLI_PROGRESS_LINE_MAX], out[CLI_PROGRESS_LINE_MAX + 16];
  int64_t elapsed = cli_now_ms(CLOCK_REALTIME) - p->started_ms;
  cli_progress_render(line, sizeof line, &p->last, elapsed > 0 ? (uint64_t)elapsed : 0, p->rate,
                      cli_os_term_width(STDERR_FILENO));
  if (p->shown && !final && strcmp(line, p->drawn) == 0) return;
  /* ESC[K: what a longer line before left after this one. */
  snprintf(out, sizeof out, "\r%s\033[K%s", line, final ? "\n" : "");
  put_stderr(out);
  memcpy(p->drawn, line, sizeof line);
  p->shown = !final;
  p->at_line_start = final;
}

/* 1 if b's plain line tells what a's did not: another whole percentage, total or
 * message; for an unknown total, another count. */
static int news(const Prismq__Runner__V1__Progress *a, const Prismq__Runner__V1__Progress *b) {
  if (a->total != b->total || strcmp(a->message, b->message) != 0) return 1;
  return b->total > 0 ? percent(a) != percent(b) : a->done != b->done;
}

/* PLAIN: a line when there is news, PLAIN_GAP_MS after the last one and at the start
 * of a line; at the end, the news not told yet whatever the time. */
static void show_plain(cli_progress *p, int final) {
  int64_t now = cli_now_ms(CLOCK_MONOTONIC);
  if (p->printed && !news(&p->told, &p->last)) return;
  if (!final && (!p->at_line_start || (p->printed && now - p->printed_ms < PLAIN_GAP_MS))) return;
  char line[CLI_PROGRESS_LINE_MAX];
  size_t n = cli_progress_plain(line, sizeof line - 1, &p->last);
  line[n] = '\n';
  if (!p->at_line_start) put_stderr("\n");
  (void)write_all(STDERR_FILENO, line, n + 1);
  set_report(&p->told, &p->last);
  p->printed = 1;
  p->printed_ms = now;
  p->at_line_start = 1;
}

static void show(cli_progress *p, int final) {
  if (p->mode == CLI_PROGRESS_BAR)
    show_bar(p, final);
  else
    show_plain(p, final);
}

static void *tick(void *arg) {
  cli_progress *p = arg;
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    show(p, 0);
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_nsec += TICK_MS * 1000000L;
    at.tv_sec += at.tv_nsec / 1000000000L;
    at.tv_nsec %= 1000000000L;
    while (!p->stop && pthread_cond_timedwait(&p->wake, &p->mu, &at) != ETIMEDOUT) continue;
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* The rate since the base report: the first one, or the last whose done went back or
 * whose total changed; known once the reports span RATE_SPAN_MS. Times are the
 * reports' own (the server's clock) where set. */
static void update_rate(cli_progress *p, const Prismq__Runner__V1__Progress *r) {
  int64_t t = r->updated_at_ms ? r->updated_at_ms : cli_now_ms(CLOCK_REALTIME);
  if (!p->have || r->done < p->last.done || r->total != p->last.total) {
    p->base_done = r->done;
    p->base_ms = t;
    p->rate = -1;
  } else if (t - p->base_ms >= RATE_SPAN_MS) {
    p->rate = (r->done - p->base_done) * 1000.0 / (double)(t - p->base_ms);
  }
}

void cli_progress_update(cli_progress *p, const Prismq__Runner__V1__Progress *report) {
  pthread_mutex_lock(&p->mu);
  if (!p->have || report->done != p->last.done || report->total != p->last.total ||
      report->updated_at_ms != p->last.updated_at_ms ||
      strcmp(report->message, p->last.message) != 0) {
    update_rate(p, report);
    set_report(&p->last, report);
    p->have = 1;
  }
  if (!p->ticking) p->ticking = cli_os_thread_start(&p->ticker, tick, p) == 0;
  pthread_mutex_unlock(&p->mu);
}

int cli_progress_write(cli_progress *p, int fd, const uint8_t *data, size_t len) {
  if (!p || len == 0) return write_all(fd, data, len);
  int passes = fd == STDERR_FILENO || p->out_shared;
  pthread_mutex_lock(&p->mu);
  if (passes && p->shown) {
    put_stderr("\r\033[K");
    p->shown = 0;
  }
  int rc = write_all(fd, data, len);
  if (passes) p->at_line_start = data[len - 1] == '\n';
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void cli_progress_end(cli_progress *p) {
  if (!p) return;
  if (p->ticking) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->ticker, NULL);
  }
  if (p->have) show(p, 1);
  free(p->last.message);
  free(p->told.message);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->mu);
  free(p);
}
