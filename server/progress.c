#include "progress.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "ere.h"
#include "utf8.h"
#include "xalloc.h"

/* What the groups of a pattern may hold, in the order of their names. */
enum { G_DONE, G_TOTAL, G_PERCENT, G_MESSAGE, G_N };
static const char *const group_names[G_N] = {"done", "total", "percent", "message"};

/* Longest number accepted, in characters. */
#define NUMBER_MAX 63

struct progress_pattern {
  regex_t re;
  size_t group[G_N]; /* the regex group holding each; 0 = none */
  size_t nmatch;     /* regmatch_t slots needed: the highest group used, plus one */
  char *needle;      /* "\n" then the literal prefix: where a candidate line starts */
  size_t needle_len; /* 1 + the prefix's length */
};

/* Where a scanner stands at the end of a chunk. */
enum { AT_START, KEEP, SKIP };

struct progress_scan {
  const progress_pattern *pat; /* NULL: the descriptor's format */
  const char *needle;
  size_t needle_len;
  regmatch_t *m; /* pat->nmatch slots */
  int state;     /* AT_START: the next byte starts a line; KEEP: line[0, len) is the
                    start of a candidate line; SKIP: the current line is no progress line */
  size_t len;
  uint64_t rejected;
  char msg[PROGRESS_MESSAGE_MAX + 1];
  char line[PROGRESS_LINE_MAX + 1]; /* + 1: a NUL after a line given to regexec */
};

static int fail(char *err, size_t errlen, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

/* ---- compiling ------------------------------------------------------------------ */

/* Copies the bracket expression at p (p[0] == '['), whose "]" closes it unless it comes
 * first or ends a [:class:], [=equivalence=] or [.collating.] element, to *o. Returns
 * the position after it: an unterminated one is copied whole, for regcomp to refuse. */
static const char *copy_bracket(const char *p, char **o) {
  const char *q = p + 1;
  if (*q == '^') q++;
  if (*q == ']') q++;
  while (*q && *q != ']') {
    if (*q == '[' && (q[1] == ':' || q[1] == '=' || q[1] == '.')) {
      char close[3] = {q[1], ']', '\0'};
      const char *e = strstr(q + 2, close);
      q = e ? e + 2 : q + strlen(q);
    } else {
      q++;
    }
  }
  if (*q == ']') q++;
  memcpy(*o, p, (size_t)(q - p));
  *o += q - p;
  return q;
}

/* The (?...) group syntax at p (just after its "("): records a named group as regex
 * group `num`. Returns the position after "?:" or "?P<name>", or NULL with err. */
static const char *group_syntax(progress_pattern *pp, const char *p, size_t num, char *err,
                                size_t errlen) {
  if (p[1] == ':') return p + 2;
  const char *name = p + 3, *gt = p[1] == 'P' && p[2] == '<' ? strchr(name, '>') : NULL;
  if (!gt) {
    fail(err, errlen, "(?%.8s...) is not supported: only (?:...) and (?P<name>...)", p + 1);
    return NULL;
  }
  size_t len = (size_t)(gt - name);
  for (int g = 0; g < G_N; g++) {
    if (strlen(group_names[g]) != len || memcmp(group_names[g], name, len) != 0) continue;
    if (pp->group[g]) {
      fail(err, errlen, "group \"%s\" is named twice", group_names[g]);
      return NULL;
    }
    pp->group[g] = num;
    return gt + 1;
  }
  fail(err, errlen, "unknown group name \"%.*s\" (expected done, total, percent or message)",
       (int)(len < 64 ? len : 64), name);
  return NULL;
}

/* Writes the POSIX form of src to dst (3 * strlen(src) + 1 bytes: \D, 2 bytes, grows the
 * most, into [^0-9]) and sets pp->group. Returns 0 or -EINVAL with err. */
static int translate(progress_pattern *pp, const char *src, char *dst, char *err, size_t errlen) {
  size_t ngroups = 0, ncapture = 0, capture[3] = {0, 0, 0};
  int named = 0;
  char *o = dst;
  for (const char *p = src; *p;) {
    if (*p == '[') {
      p = copy_bracket(p, &o);
    } else if (p[0] == '\\' && (p[1] == 'd' || p[1] == 'D')) {
      o += sprintf(o, p[1] == 'd' ? "[0-9]" : "[^0-9]");
      p += 2;
    } else if (p[0] == '\\' && p[1]) {
      *o++ = *p++;
      *o++ = *p++;
    } else if (*p == '(') {
      *o++ = *p++;
      ngroups++;
      if (*p != '?') {
        if (ncapture < 3) capture[ncapture] = ngroups;
        ncapture++;
        continue;
      }
      named |= p[1] == 'P';
      if (!(p = group_syntax(pp, p, ngroups, err, errlen))) return -EINVAL;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  if (!named) {
    if (!ncapture) return fail(err, errlen, "the pattern has no group for the done count");
    pp->group[G_DONE] = capture[0];
    pp->group[G_TOTAL] = capture[1];
    pp->group[G_MESSAGE] = capture[2];
  }
  if (!pp->group[G_DONE] == !pp->group[G_PERCENT])
    return fail(err, errlen, "the pattern needs a group named done or one named percent, not both");
  if (pp->group[G_TOTAL] && !pp->group[G_DONE])
    return fail(err, errlen, "a total needs a done group");
  return 0;
}

/* The text after a leading ^ up to the first special character, which every matching
 * line starts with; none when the pattern has an alternative (a "|" anywhere) or is not
 * anchored. The last character goes when a quantifier follows it. */
static void set_needle(progress_pattern *pp, const char *src) {
  size_t n = 0;
  if (src[0] == '^' && !strchr(src, '|')) {
    n = strcspn(src + 1, ".[]()*+?{}|^$\\\n");
    if (n && src[1 + n] && strchr("*+?{", src[1 + n])) n--;
  }
  pp->needle = xmalloc(n + 2);
  pp->needle[0] = '\n';
  memcpy(pp->needle + 1, src + 1, n);
  pp->needle[n + 1] = '\0';
  pp->needle_len = n + 1;
}

int progress_pattern_new(progress_pattern **out, const char *pattern, char *err, size_t errlen) {
  progress_pattern *pp = xcalloc(1, sizeof *pp);
  char *ere = xmalloc(3 * strlen(pattern) + 1);
  int rc = translate(pp, pattern, ere, err, errlen);
  char why[160];
  if (rc == 0 && (rc = ere_compile(&pp->re, ere, REG_EXTENDED, why, sizeof why)) < 0)
    rc = rc == -E2BIG ? fail(err, errlen, "%s", why)
                      : fail(err, errlen, "not a valid extended regular expression: %s", why);
  free(ere);
  if (rc < 0) {
    free(pp);
    return rc;
  }
  for (int g = 0; g < G_N; g++)
    if (pp->group[g] + 1 > pp->nmatch) pp->nmatch = pp->group[g] + 1;
  set_needle(pp, pattern);
  *out = pp;
  return 0;
}

void progress_pattern_free(progress_pattern *p) {
  if (!p) return;
  regfree(&p->re);
  free(p->needle);
  free(p);
}

/* ---- reading lines -------------------------------------------------------------- */

progress_scan *progress_scan_new(const progress_pattern *pat) {
  progress_scan *s = xcalloc(1, sizeof *s);
  s->pat = pat;
  s->needle = pat ? pat->needle : "\n";
  s->needle_len = pat ? pat->needle_len : 1;
  if (pat) s->m = xcalloc(pat->nmatch, sizeof *s->m);
  return s;
}

void progress_scan_free(progress_scan *s) {
  if (!s) return;
  free(s->m);
  free(s);
}

uint64_t progress_scan_rejected(const progress_scan *s) { return s->rejected; }

/* Characters a number may hold (number() checks the form). */
#define NUMBER_CHARS "0123456789.eE+-"

/* A decimal number that is all of s[0, n): finite and >= 0. Returns 0 or -1. */
static int number(const char *s, size_t n, double *out) {
  char buf[NUMBER_MAX + 1], *end;
  if (n == 0 || n > NUMBER_MAX) return -1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (!strchr("0123456789.", buf[0]) || strspn(buf, NUMBER_CHARS) != n) return -1;
  double v = strtod(buf, &end);
  if (end != buf + n || !isfinite(v) || v < 0) return -1;
  *out = v;
  return 0;
}

/* The end of the run of NUMBER_CHARS in s[i, n). */
static size_t number_end(const char *s, size_t i, size_t n) {
  while (i < n && s[i] && strchr(NUMBER_CHARS, s[i])) i++;
  return i;
}

static void set_message(progress_scan *s, const char *text, size_t n,
                        Prismq__Runner__V1__Progress *out) {
  utf8_sanitize(s->msg, sizeof s->msg, text, n);
  out->message = s->msg;
}

/* A line written to the progress descriptor: DONE, DONE/TOTAL or PERCENT%, then
 * optionally a space and the message. Returns 1 with *out set, or 0. */
static int parse_fd_line(progress_scan *s, const char *line, size_t n,
                         Prismq__Runner__V1__Progress *out) {
  double done, total = 0;
  size_t i = number_end(line, 0, n);
  if (number(line, i, &done) < 0) return 0;
  if (i < n && line[i] == '%') {
    total = 100;
    i++;
  } else if (i < n && line[i] == '/') {
    size_t from = i + 1;
    i = number_end(line, from, n);
    if (number(line + from, i - from, &total) < 0) return 0;
  }
  if (i < n && line[i] != ' ') return 0;
  out->done = done;
  out->total = total;
  set_message(s, line + i + (i < n), n - i - (i < n), out);
  return 1;
}

/* The groups of a line that matched s->pat. Returns 1 with *out set; 0 if the done or
 * percent group took no part in the match; -1 for a number that is not valid. */
static int from_match(progress_scan *s, const char *line, Prismq__Runner__V1__Progress *out) {
  const size_t *group = s->pat->group;
  double v[G_MESSAGE] = {0, 0, 0};
  for (int g = 0; g < G_MESSAGE; g++) {
    const regmatch_t *m = &s->m[group[g]];
    if (!group[g] || m->rm_so < 0) continue;
    if (number(line + m->rm_so, (size_t)(m->rm_eo - m->rm_so), &v[g]) < 0) return -1;
  }
  int pct = group[G_PERCENT] != 0;
  if (s->m[group[pct ? G_PERCENT : G_DONE]].rm_so < 0) return 0;
  out->done = pct ? v[G_PERCENT] : v[G_DONE];
  out->total = pct ? 100 : v[G_TOTAL];
  const regmatch_t *m = &s->m[group[G_MESSAGE]];
  if (group[G_MESSAGE] && m->rm_so >= 0)
    set_message(s, line + m->rm_so, (size_t)(m->rm_eo - m->rm_so), out);
  else
    set_message(s, "", 0, out);
  return 1;
}

/* One whole line (its newline left out). Returns 1 with *out set if it is an update. */
static int take_line(progress_scan *s, const char *line, size_t n,
                     Prismq__Runner__V1__Progress *out) {
  if (n && line[n - 1] == '\r') n--;
  int rc;
  if (!s->pat) {
    rc = parse_fd_line(s, line, n, out) ? 1 : -1;
  } else {
    /* REG_STARTEND matches the line whole, NUL bytes and all. Sanitizers' regexec
     * still reads the string up to a NUL, so the line gets one, in a copy of its own:
     * the lines copied are those that begin with the prefix only. */
    if (line != s->line) memcpy(s->line, line, n);
    s->line[n] = '\0';
#ifdef REG_STARTEND
    s->m[0].rm_so = 0;
    s->m[0].rm_eo = (regoff_t)n;
    if (regexec(&s->pat->re, s->line, s->pat->nmatch, s->m, REG_STARTEND) != 0) return 0;
#else /* TRE (Windows): its regnexec takes the length, as REG_STARTEND does */
    if (regnexec(&s->pat->re, s->line, n, s->pat->nmatch, s->m, 0) != 0) return 0;
#endif
    rc = from_match(s, s->line, out);
  }
  if (rc < 0) s->rejected++;
  return rc > 0;
}

/* Carries the start of a line, data[0, n), over to the next chunk. */
static void keep(progress_scan *s, const char *data, size_t n) {
  if (s->len + n > PROGRESS_LINE_MAX) {
    s->state = SKIP;
    s->rejected += !s->pat;
    return;
  }
  memcpy(s->line + s->len, data, n);
  s->len += n;
}

/* The chunk's end from d[p] on holds no line start that begins with the prefix: which
 * state its last line (the one begun after the last newline) leaves. */
static void note_tail(progress_scan *s, const char *d, size_t p, size_t len) {
  const char *nl = compat_memrchr(d + p, '\n', len - p);
  size_t from = nl ? (size_t)(nl - d) + 1 : p, k = s->needle_len - 1;
  s->state = SKIP;
  if (nl && from == len) {
    s->state = AT_START;
  } else if (nl && len - from < k && memcmp(d + from, s->needle + 1, len - from) == 0) {
    /* The line may still begin with the prefix: the rest comes with the next chunk. */
    s->state = KEEP;
    s->len = 0;
    keep(s, d + from, len - from);
  }
}

/* Where the first line after d[p] that begins with the prefix (k >= 1 bytes) starts in
 * d[p, len), as memmem for "\n" and the prefix would say; NULL if none does. memchr for
 * the prefix's first byte goes at memory speed where that byte is rare, as in most
 * output; where it is not, memmem takes over after a few false starts. */
static const char *next_candidate(const progress_scan *s, const char *d, size_t p, size_t len) {
  const char *q = d + p + 1, *end = d + len, *prefix = s->needle + 1;
  size_t k = s->needle_len - 1;
  for (int misses = 0; misses < 8; misses++, q++) {
    if (q >= end || !(q = memchr(q, prefix[0], (size_t)(end - q))) || (size_t)(end - q) < k)
      return NULL;
    if (q[-1] == '\n' && memcmp(q, prefix, k) == 0) return q;
  }
  const char *hit =
      q < end ? compat_memmem(q - 1, (size_t)(end - q + 1), s->needle, s->needle_len) : NULL;
  return hit ? hit + 1 : NULL;
}

/* Ends the line begun in an earlier chunk: returns where the next one starts in d
 * (len if it goes on past this chunk too) and sets *ready if it is a whole line now in
 * s->line to take. */
static size_t finish_carried(progress_scan *s, const char *d, size_t len, int *ready) {
  const char *nl = memchr(d, '\n', len);
  size_t end = nl ? (size_t)(nl - d) : len;
  *ready = 0;
  if (s->state == KEEP) keep(s, d, end);
  if (!nl) return len;
  *ready = s->state == KEEP;
  s->state = AT_START;
  return end + 1;
}

int progress_scan_next(progress_scan *s, const uint8_t *data, size_t len, size_t *pos,
                       Prismq__Runner__V1__Progress *out) {
  const char *d = (const char *)data;
  size_t p = *pos, k = s->needle_len - 1;
  int ready;
  if (s->state != AT_START) {
    p = finish_carried(s, d, len, &ready);
    if (ready && take_line(s, s->line, s->len, out)) {
      *pos = p;
      return 1;
    }
  }
  while (p < len) {
    /* p starts a line. The first one that begins with the prefix, if not this one: */
    size_t avail = len - p < k ? len - p : k;
    if (memcmp(d + p, s->needle + 1, avail) != 0) {
      const char *hit = next_candidate(s, d, p, len);
      if (!hit) {
        note_tail(s, d, p, len);
        break;
      }
      p = (size_t)(hit - d);
    }
    const char *nl = memchr(d + p, '\n', len - p);
    if (!nl) {
      s->state = KEEP;
      s->len = 0;
      keep(s, d + p, len - p);
      break;
    }
    size_t start = p, n = (size_t)(nl - d) - start;
    p += n + 1;
    if (n > PROGRESS_LINE_MAX) {
      s->rejected += !s->pat;
    } else if (take_line(s, d + start, n, out)) {
      *pos = p;
      return 1;
    }
  }
  *pos = len;
  return 0;
}

int progress_scan_end(progress_scan *s, Prismq__Runner__V1__Progress *out) {
  int keep_line = s->state == KEEP;
  s->state = AT_START;
  return keep_line && take_line(s, s->line, s->len, out);
}
