/* param: a module's typed parameters (config.h's config_param) at run time: whether a
 * request's value fits its parameter, the form the run gets it in, and a report that
 * names every bad parameter of a request at once.
 *
 * The checks, in this order, the first failing one reported:
 *   - min_length / max_length: the value's length in bytes (max_length 0: no limit);
 *   - the type: INTEGER a decimal integer (optional sign, digits only) that fits int64;
 *     NUMBER a finite decimal number (no hex, no inf or nan); BOOLEAN one of true/false,
 *     1/0, yes/no, on/off in any case; SELECT exactly one of the options; PATH a
 *     non-empty path, taken relative to base_dir unless absolute, resolved (".", "..",
 *     and symbolic links of the part that exists) and required to stay under base_dir;
 *     STRING and SECRET any text;
 *   - min / max for INTEGER and NUMBER;
 *   - the pattern, on the value as given.
 * The checks read the file system only for PATH (ppath.h: the system's path rules, the
 * links of its prefix that exists, on the caller's thread); the result says where the
 * path led at check time.
 *
 * Server code: out of memory aborts. */
#ifndef PRISMQ_PARAM_H
#define PRISMQ_PARAM_H

#include <stddef.h>

#include "compat.h"
#include "config.h"

/* Checks value v (NUL-terminated) against p. On success returns 0 and sets *out to
 * the value the run gets (malloc'd; the caller frees it): v itself, except "true" or
 * "false" for a BOOLEAN and the resolved absolute path for a PATH. Returns -EINVAL,
 * *out untouched, with `why` (whylen bytes) saying what is wrong without naming the
 * parameter, e.g. "must be an integer", "is 12, above the maximum 10". */
int param_check(char **out, const config_param *p, const char *v, char *why, size_t whylen);

/* The configuration's name of type t ("string", "integer", ...); "?" if t is none. */
const char *param_type_name(config_param_type t);

/* Sets *out to the type the configuration calls `name`; returns 0, or -EINVAL. */
int param_type_parse(config_param_type *out, const char *name);

/* The path `base_dir` resolved as a PATH parameter's values are (absolute, "." and ".."
 * and the symbolic links of the part that exists resolved): on success *out (caller
 * frees) and 0; -EINVAL if base_dir is not absolute. */
int param_resolve_base(char **out, const char *base_dir);

/* One bad parameter of a request: its name and a sentence saying what is wrong. */
typedef struct param_violation {
  char *name;    /* the parameter's name as the request or the module gave it */
  char *message; /* e.g. "parameter \"count\" must be an integer" */
} param_violation;

/* The bad parameters of one request, in the order found. Start from
 * PARAM_REPORT_INIT; param_report_clear frees the contents. */
typedef struct param_report {
  param_violation *items;
  size_t n;
} param_report;
#define PARAM_REPORT_INIT \
  { NULL, 0 }

/* Appends a violation of parameter `name` (copied) with the formatted message. */
void param_report_add(param_report *r, const char *name, const char *fmt, ...) COMPAT_PRINTF(3, 4);

/* Writes the messages joined by "; " into buf (len bytes, truncated, NUL-terminated). */
void param_report_join(const param_report *r, char *buf, size_t len);

/* Frees what r holds and empties it; r itself is the caller's. Accepts NULL. */
void param_report_clear(param_report *r);

#endif
