/* param: typed parameter values (param.h). */
#include "param.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "compat.h"
#include "ppath.h"
#include "xalloc.h"

static const char *const type_names[] = {
    [CONFIG_PARAM_STRING] = "string", [CONFIG_PARAM_INTEGER] = "integer",
    [CONFIG_PARAM_NUMBER] = "number", [CONFIG_PARAM_BOOLEAN] = "boolean",
    [CONFIG_PARAM_SELECT] = "select", [CONFIG_PARAM_SECRET] = "secret",
    [CONFIG_PARAM_PATH] = "path",
};
#define NTYPES (sizeof type_names / sizeof *type_names)

const char *param_type_name(config_param_type t) {
  return (size_t)t < NTYPES && type_names[t] ? type_names[t] : "?";
}

int param_type_parse(config_param_type *out, const char *name) {
  for (size_t t = 0; t < NTYPES; t++)
    if (type_names[t] && strcmp(type_names[t], name) == 0) {
      *out = (config_param_type)t;
      return 0;
    }
  return -EINVAL;
}

static int fail(char *why, size_t whylen, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static int fail(char *why, size_t whylen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

/* A bound as the configuration would write it: integers without a fraction. */
static void fmt_bound(char *buf, size_t len, double d) { snprintf(buf, len, "%.15g", d); }

/* min and max; an INTEGER's bounds are integral (config.c), so comparing as long
 * double is exact for every int64 value. */
static int check_range(const config_param *p, long double d, const char *v, char *why,
                       size_t whylen) {
  char b[32];
  if (p->has_min && d < (long double)p->min) {
    fmt_bound(b, sizeof b, p->min);
    return fail(why, whylen, "is %s, below the minimum %s", v, b);
  }
  if (p->has_max && d > (long double)p->max) {
    fmt_bound(b, sizeof b, p->max);
    return fail(why, whylen, "is %s, above the maximum %s", v, b);
  }
  return 0;
}

static int check_integer(const config_param *p, const char *v, char *why, size_t whylen) {
  const char *d = v + (*v == '-' || *v == '+');
  if (!*d || strspn(d, "0123456789") != strlen(d)) return fail(why, whylen, "must be an integer");
  errno = 0;
  long long n = strtoll(v, NULL, 10);
  if (errno == ERANGE) return fail(why, whylen, "is %s, out of the range of a 64-bit integer", v);
  return check_range(p, (long double)n, v, why, whylen);
}

static int check_number(const config_param *p, const char *v, char *why, size_t whylen) {
  /* Decimal notation only: strtod alone would also take hex floats, "inf" and "nan". */
  char *end;
  if (!*v || strspn(v, "0123456789+-.eE") != strlen(v))
    return fail(why, whylen, "must be a number");
  errno = 0;
  double d = strtod(v, &end);
  if (*end || end == v) return fail(why, whylen, "must be a number");
  if (!isfinite(d)) return fail(why, whylen, "is %s, out of the range of a number", v);
  return check_range(p, d, v, why, whylen);
}

/* Sets *out to "true" or "false" for the words a user would write. */
static int check_boolean(const char **out, const char *v, char *why, size_t whylen) {
  static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
                                                                              "off"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
    if (strcasecmp(v, yes[i]) == 0) return *out = "true", 0;
    if (strcasecmp(v, no[i]) == 0) return *out = "false", 0;
  }
  return fail(why, whylen, "must be true or false");
}

static int check_select(const config_param *p, const char *v, char *why, size_t whylen) {
  for (size_t i = 0; i < p->noptions; i++)
    if (strcmp(p->options[i], v) == 0) return 0;
  char list[256];
  size_t used = 0;
  list[0] = '\0';
  for (size_t i = 0; i < p->noptions && used < sizeof list; i++) {
    int n = snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", p->options[i]);
    if (n < 0) break;
    used += (size_t)n;
  }
  return fail(why, whylen, "must be one of %s", list);
}

int param_resolve_base(char **out, const char *base_dir) {
  char buf[PPATH_MAX];
  if (ppath_resolve(buf, NULL, base_dir) < 0) return -EINVAL;
  *out = xstrdup(buf);
  return 0;
}

static int check_path(char **resolved, const config_param *p, const char *v, char *why,
                      size_t whylen) {
  char buf[PPATH_MAX];
  if (!*v) return fail(why, whylen, "must not be empty");
  int rc = ppath_resolve(buf, p->base_resolved, v);
  if (rc == -ELOOP) return fail(why, whylen, "leads through a symbolic link that points nowhere");
  if (rc == -ENAMETOOLONG) return fail(why, whylen, "is too long a path");
  if (rc == -EINVAL) return fail(why, whylen, "is not a path this server takes");
  if (rc < 0) return fail(why, whylen, "cannot be resolved: %s", strerror(-rc));
  if (!ppath_under(buf, p->base_resolved))
    return fail(why, whylen, "leads outside %s", p->base_dir);
  *resolved = xstrdup(buf);
  return 0;
}

/* The checks of the type, after the lengths; sets *canon for a BOOLEAN, *resolved for
 * a PATH. */
static int check_type(const char **canon, char **resolved, const config_param *p, const char *v,
                      char *why, size_t whylen) {
  switch (p->type) {
  case CONFIG_PARAM_INTEGER: return check_integer(p, v, why, whylen);
  case CONFIG_PARAM_NUMBER: return check_number(p, v, why, whylen);
  case CONFIG_PARAM_BOOLEAN: return check_boolean(canon, v, why, whylen);
  case CONFIG_PARAM_SELECT: return check_select(p, v, why, whylen);
  case CONFIG_PARAM_PATH: return check_path(resolved, p, v, why, whylen);
  case CONFIG_PARAM_STRING:
  case CONFIG_PARAM_SECRET: return 0;
  }
  return fail(why, whylen, "has no known type");
}

int param_check(char **out, const config_param *p, const char *v, char *why, size_t whylen) {
  size_t len = strlen(v);
  if (len < p->min_length)
    return fail(why, whylen, "is %zu bytes long, shorter than the minimum %u", len, p->min_length);
  if (p->max_length && len > p->max_length)
    return fail(why, whylen, "is %zu bytes long, longer than the maximum %u", len, p->max_length);
  const char *canon = NULL;
  char *resolved = NULL;
  int rc = check_type(&canon, &resolved, p, v, why, whylen);
  if (rc < 0) return rc;
  if (p->pattern && regexec(&p->re, v, 0, NULL, 0) != 0) {
    free(resolved);
    return fail(why, whylen, "does not match %s", p->pattern);
  }
  *out = resolved ? resolved : xstrdup(canon ? canon : v);
  return 0;
}

void param_report_add(param_report *r, const char *name, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *msg = xmalloc(n > 0 ? (size_t)n + 1 : 1);
  vsnprintf(msg, n > 0 ? (size_t)n + 1 : 1, fmt, ap2);
  va_end(ap2);
  r->items = xrealloc(r->items, (r->n + 1) * sizeof *r->items);
  r->items[r->n].name = xstrdup(name);
  r->items[r->n].message = msg;
  r->n++;
}

void param_report_join(const param_report *r, char *buf, size_t len) {
  size_t used = 0;
  if (len == 0) return;
  buf[0] = '\0';
  for (size_t i = 0; i < r->n && used < len; i++) {
    int n = snprintf(buf + used, len - used, "%s%s", i ? "; " : "", r->items[i].message);
    if (n < 0) break;
    used += (size_t)n;
  }
}

void param_report_clear(param_report *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) {
    free(r->items[i].name);
    free(r->items[i].message);
  }
  free(r->items);
  r->items = NULL;
  r->n = 0;
}
