#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "authz.h"
#include "compat.h"
#include "ere.h"
#include "log.h"
#include "param.h"
#include "progress.h"
#include "xalloc.h"

#define CONFIG_MAX_FILE (16u << 20)

#define ALPHA "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#define ALNUM ALPHA "0123456789"

#ifdef _WIN32
/* Windows' own programs, as every Windows (and Wine) has them. cmd.exe parses its command
 * line itself: the only free text, echo's message, is held to characters cmd takes
 * literally. */
const char config_default_yaml[] =
    "# prismqd built-in configuration (Windows): used when no configuration file is given.\n"
    "listen: [\"tcp://127.0.0.1:50051\"]\n"
    "data_dir: ./var\n"
    "limits: {max_concurrent: 8}\n"
    "modules:\n"
    "  - id: echo\n"
    "    name: Echo\n"
    "    description: Prints a message on stdout\n"
    "    category: demo\n"
    "    tags: [text]\n"
    "    argv: [cmd.exe, /d, /c, \"echo {message}\"]\n"
    "    parameters:\n"
    "      - {name: message, default: hello, max_length: 4096, pattern: '^[A-Za-z0-9 .,:+=_-]*$',\n"
    "         description: \"the text to print (letters, digits, spaces and .,:+=_-)\"}\n"
    "  - id: sleep\n"
    "    name: Sleep\n"
    "    description: Pings this machine N times, a second apart, then exits 0 (try cancelling "
    "it)\n"
    "    category: demo\n"
    "    tags: [time]\n"
    "    argv: [ping.exe, -n, \"{count}\", 127.0.0.1]\n"
    "    timeout_ms: 600000\n"
    "    parameters:\n"
    "      - {name: count, type: integer, min: 1, max: 600, default: \"2\",\n"
    "         description: how many pings}\n"
    "  - id: count\n"
    "    name: Count\n"
    "    description: Prints the lines 1 to N\n"
    "    category: demo\n"
    "    tags: [output]\n"
    "    argv: [cmd.exe, /d, /c, \"for /l %i in (1,1,{n}) do @echo %i\"]\n"
    "    parameters:\n"
    "      - {name: n, type: integer, min: 1, max: 100000000, default: \"10\",\n"
    "         description: the last number}\n"
    "  - id: fail\n"
    "    name: Fail\n"
    "    description: Exits with the code given, after a message on stderr\n"
    "    category: demo\n"
    "    tags: [errors]\n"
    "    argv: [cmd.exe, /d, /c, \"echo failing with {code} 1>&2 & exit {code}\"]\n"
    "    parameters:\n"
    "      - {name: code, type: integer, min: 0, max: 255, default: \"3\", description: the exit "
    "code}\n"
    "  - id: progress\n"
    "    name: Progress\n"
    "    description: Works through N steps, printing a line its progress pattern reads for each\n"
    "    category: demo\n"
    "    tags: [progress]\n"
    "    argv: [cmd.exe, /d, /c, \"for /l %i in (1,1,{steps}) do @echo PROGRESS %i/{steps} step %i "
    "done\"]\n"
    "    progress: {pattern: '^PROGRESS (?P<done>[0-9]+)/(?P<total>[0-9]+)(?: "
    "(?P<message>.*))?$'}\n"
    "    parameters:\n"
    "      - {name: steps, type: integer, min: 1, max: 1000, default: \"10\",\n"
    "         description: how many steps}\n";
#else
const char config_default_yaml[] =
    "# prismqd built-in configuration: used when no configuration file is given.\n"
    "listen: [\"tcp://127.0.0.1:50051\"]\n"
    "data_dir: ./var\n"
    "limits: {max_concurrent: 8}\n"
    "modules:\n"
    "  - id: echo\n"
    "    name: Echo\n"
    "    description: Prints a message on stdout\n"
    "    category: demo\n"
    "    tags: [text]\n"
    "    argv: [\"echo\", \"{message}\"]\n"
    "    parameters:\n"
    "      - {name: message, default: hello, max_length: 4096, description: the text to print}\n"
    "  - id: emit\n"
    "    name: Emit bytes\n"
    "    description: Writes N zero bytes to stdout\n"
    "    category: demo\n"
    "    tags: [output]\n"
    "    argv: [\"head\", \"-c\", \"{bytes}\", \"/dev/zero\"]\n"
    "    parameters:\n"
    "      - {name: bytes, type: integer, min: 0, default: \"1024\", description: how many bytes}\n"
    "  - id: sleep\n"
    "    name: Sleep\n"
    "    description: Sleeps for a while, then exits 0 (try cancelling it)\n"
    "    category: demo\n"
    "    tags: [time]\n"
    "    argv: [\"sleep\", \"{seconds}\"]\n"
    "    timeout_ms: 600000\n"
    "    parameters:\n"
    "      - {name: seconds, type: number, min: 0, max: 600, default: \"1\",\n"
    "         description: how long to sleep}\n"
    "  - id: count\n"
    "    name: Count\n"
    "    description: Prints the lines 1 to N\n"
    "    category: demo\n"
    "    tags: [output]\n"
    "    argv: [\"seq\", \"1\", \"{n}\"]\n"
    "    parameters:\n"
    "      - {name: n, type: integer, min: 1, max: 100000000, default: \"10\",\n"
    "         description: the last number}\n"
    "    presets:\n"
    "      - {name: million, description: a million lines, parameters: {n: \"1000000\"}}\n"
    "  - id: fail\n"
    "    name: Fail\n"
    "    description: Lists a missing path, so exits non-zero with a message on stderr\n"
    "    category: demo\n"
    "    tags: [errors]\n"
    "    argv: [\"ls\", \"{path}\"]\n"
    "    parameters:\n"
    "      # Confined under /nonexistent so the demo cannot list the server's files.\n"
    "      - {name: path, type: path, base_dir: /nonexistent, default: /nonexistent,\n"
    "         description: a path under /nonexistent}\n"
    "  - id: list\n"
    "    name: List\n"
    "    description: Lists /usr/share/doc with ls, as its options say\n"
    "    category: demo\n"
    "    tags: [text]\n"
    "    argv: [\"ls\", \"-l\", \"/usr/share/doc\"]\n"
    "    pass_parameters: flags\n"
    "    parameters:\n"
    "      - {name: all, type: boolean, default: \"false\", description: include hidden entries}\n"
    "      - {name: sort, type: select, options: [size, time, version, extension],\n"
    "         description: \"the order (default: by name)\"}\n"
    "  - id: secret\n"
    "    name: Secret\n"
    "    description: Takes a secret, which no record, log or answer shows, and prints its length\n"
    "    category: demo\n"
    "    tags: [security]\n"
    "    argv: [\"sh\", \"-c\", \"echo \\\"the token has ${{#TOKEN}} bytes\\\"\"]\n"
    "    parameters:\n"
    "      - {name: token, type: secret, env_var: TOKEN, max_length: 4096,\n"
    "         description: reaches the run as $TOKEN only}\n"
    "  - id: progress\n"
    "    name: Progress\n"
    "    description: Works through N steps, printing a line its progress pattern reads for each\n"
    "    category: demo\n"
    "    tags: [progress]\n"
    "    argv: [sh, -c, 'i=0; while [ \"$i\" -lt \"$1\" ]; do i=$((i + 1)); sleep 0.2;\n"
    "             echo \"PROGRESS $i/$1 step $i done\"; done', progress, \"{steps}\"]\n"
    "    progress: {pattern: '^PROGRESS (?P<done>\\d+)/(?P<total>\\d+)(?: (?P<message>.*))?$'}\n"
    "    parameters:\n"
    "      - {name: steps, type: integer, min: 1, max: 1000, default: \"10\",\n"
    "         description: how many steps}\n"
    "  - id: stages\n"
    "    name: Stages\n"
    "    description: Goes through N stages, reporting a percentage on its progress descriptor\n"
    "    category: demo\n"
    "    tags: [progress]\n"
    "    argv: [sh, -c, 'i=0; while [ \"$i\" -lt \"$1\" ]; do i=$((i + 1)); echo \"stage $i\";\n"
    "             sleep 0.2; echo \"$((i * 100 / $1))% stage $i of $1\"\n"
    "             >&\"$PRISMQ_PROGRESS_FD\"; done',\n"
    "           stages, \"{stages}\"]\n"
    "    progress: {fd: true}\n"
    "    parameters:\n"
    "      - {name: stages, type: integer, min: 1, max: 1000, default: \"5\",\n"
    "         description: how many stages}\n";
#endif

static void oom(void) {
  LOG_ERROR("out of memory in config");
  abort();
}

static char *kv_new(const char *k, const char *v) {
  size_t len = strlen(k) + 1 + strlen(v) + 1;
  char *p = xcalloc(len, 1);
  snprintf(p, len, "%s=%s", k, v);
  return p;
}

void config_argv_free(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

static int set_err(char *err, size_t errlen, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static int set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;

  if (errlen) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -EINVAL;
}

/* ---- templates ---- */

static long param_index(const config_module *m, const char *name, size_t len) {
  for (size_t i = 0; i < m->nparams; i++)
    if (strlen(m->params[i].name) == len && memcmp(m->params[i].name, name, len) == 0)
      return (long)i;
  return -1;
}

/* One expander serves both load (checking a template against the declared parameters)
 * and render, so the two can never disagree on the syntax. vals[i] is the value of
 * m->params[i] or NULL. Returns the expansion, or NULL with a message in msg. */
static char *expand(const config_module *m, const char *t, char *const *vals, char *msg,
                    size_t msglen) {
  compat_memstream ms;
  FILE *f = compat_memstream_open(&ms);

  if (!f) oom();
  while (*t) {
    if ((t[0] == '{' || t[0] == '}') && t[1] == t[0]) {
      fputc(t[0], f);
      t += 2;
    } else if (t[0] == '}') {
      set_err(msg, msglen, "lone \"}\" (write \"}}\" for a literal brace)");
      goto fail;
    } else if (t[0] == '{') {
      const char *end = strchr(t + 1, '}');
      long i;

      if (!end) {
        set_err(msg, msglen, "unclosed \"{\" (write \"{{\" for a literal brace)");
        goto fail;
      }
      i = param_index(m, t + 1, (size_t)(end - t - 1));
      if (i < 0) {
        set_err(msg, msglen, "placeholder %.*s names no declared parameter", (int)(end - t + 1), t);
        goto fail;
      }
      if (m->params[i].type == CONFIG_PARAM_SECRET) {
        if (m->params[i].env_var)
          set_err(msg, msglen,
                  "placeholder {%s} names a secret parameter, which would show in the "
                  "process list: the run gets it in $%s",
                  m->params[i].name, m->params[i].env_var);
        else
          set_err(msg, msglen,
                  "placeholder {%s} names a secret parameter, which would show in the "
                  "process list: the run reads it from descriptor %u",
                  m->params[i].name, m->params[i].fd);
        goto fail;
      }
      if (!vals[i]) {
        set_err(msg, msglen,
                "placeholder {%s} may have no value: parameter \"%s\" is optional "
                "and has no default",
                m->params[i].name, m->params[i].name);
        goto fail;
      }
      fputs(vals[i], f);
      t = end + 1;
    } else {
      fputc(*t++, f);
    }
  }
  /* The stream allocates as it writes and at the final flush in the close. */
  if (ferror(f) | compat_memstream_close(&ms)) oom();
  return ms.buf;

fail:
  compat_memstream_close(&ms);
  free(ms.buf);
  return NULL;
}

/* ---- loading ---- */

typedef struct loader {
  yaml_document_t doc;
  const char *name;
  char *err;
  size_t errlen;
} loader;

static int fail_at(const loader *ld, const yaml_node_t *n, const char *fmt, ...)
    COMPAT_PRINTF(3, 4);
static int fail_at(const loader *ld, const yaml_node_t *n, const char *fmt, ...) {
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return set_err(ld->err, ld->errlen, "%s:%zu: %s", ld->name, n->start_mark.line + 1, msg);
}

static yaml_node_t *node(const loader *ld, int index) {
  return yaml_document_get_node((yaml_document_t *)&ld->doc, index);
}

/* YAML 1.1 null, which is no string: "key:" with nothing after it must not silently
 * become "". */
static int is_null(const yaml_node_t *n) {
  static const char *const words[] = {"", "~", "null", "Null", "NULL"};

  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (!strcmp((const char *)n->data.scalar.value, words[i])) return 1;
  return 0;
}

/* Collects the values of mapping n's keys into vals[i] for keys[i] (NULL-terminated
 * list; vals has as many slots, NULL for absent keys). Unknown and repeated keys are
 * errors, since a typo must not pass silently. */
static int get_fields(const loader *ld, const yaml_node_t *n, const char *what,
                      const char *const *keys, yaml_node_t **vals) {
  size_t nkeys = 0;

  while (keys[nkeys]) vals[nkeys++] = NULL;
  if (n->type != YAML_MAPPING_NODE) return fail_at(ld, n, "%s must be a mapping", what);
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(ld, p->key);
    const char *key;
    size_t i = 0;

    if (k->type != YAML_SCALAR_NODE) return fail_at(ld, k, "%s: keys must be strings", what);
    key = (const char *)k->data.scalar.value;
    while (i < nkeys && strcmp(keys[i], key) != 0) i++;
    if (i == nkeys) {
      char known[256] = "";
      size_t used = 0;

      for (size_t j = 0; j < nkeys && used < sizeof known; j++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", j ? ", " : "", keys[j]);
      return fail_at(ld, k, "%s: unknown key \"%s\" (expected one of: %s)", what, key, known);
    }
    if (vals[i]) return fail_at(ld, k, "%s: duplicate key \"%s\"", what, key);
    vals[i] = node(ld, p->value);
  }
  return 0;
}

static int get_str(const loader *ld, const yaml_node_t *n, const char *what, int nonempty,
                   char **out) {
  if (n->type != YAML_SCALAR_NODE || is_null(n) || (nonempty && !n->data.scalar.length))
    return fail_at(ld, n, "%s must be a %sstring", what, nonempty ? "non-empty " : "");
  if (memchr(n->data.scalar.value, '\0', n->data.scalar.length))
    return fail_at(ld, n, "%s must not contain a NUL byte", what);
  *out = xstrndup((const char *)n->data.scalar.value, n->data.scalar.length);
  return 0;
}

static int get_uint(const loader *ld, const yaml_node_t *n, const char *what, uint64_t lo,
                    uint64_t hi, uint64_t *out) {
  if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
      n->data.scalar.length &&
      strspn((const char *)n->data.scalar.value, "0123456789") == n->data.scalar.length) {
    unsigned long long x;

    errno = 0;
    x = strtoull((const char *)n->data.scalar.value, NULL, 10);
    if (errno == 0 && x >= lo && x <= hi) {
      *out = x;
      return 0;
    }
  }
  return fail_at(ld, n, "%s must be an integer from %llu to %llu", what, (unsigned long long)lo,
                 (unsigned long long)hi);
}

static int get_u32(const loader *ld, const yaml_node_t *n, const char *what, uint32_t lo,
                   uint32_t hi, uint32_t *out) {
  uint64_t x;
  int rc = get_uint(ld, n, what, lo, hi, &x);

  if (rc == 0) *out = (uint32_t)x;
  return rc;
}

/* A finite number in decimal notation (a sign, a fraction and an exponent allowed). */
static int get_number(const loader *ld, const yaml_node_t *n, const char *what, double *out) {
  const char *s = (const char *)n->data.scalar.value;
  char *end;

  if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
      n->data.scalar.length && strspn(s, "0123456789+-.eE") == n->data.scalar.length) {
    double d = strtod(s, &end);

    if (!*end && isfinite(d)) {
      *out = d;
      return 0;
    }
  }
  return fail_at(ld, n, "%s must be a number", what);
}

/* A duration: a plain number of milliseconds, or a number with one unit of ms, s, m,
 * h or d ("30s", "7d"), within lo..hi milliseconds. */
static int get_duration(const loader *ld, const yaml_node_t *n, const char *what, uint64_t lo,
                        uint64_t hi, uint64_t *out) {
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  const char *s = n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : "";
  size_t digits = strspn(s, "0123456789");

  if (digits && digits <= 12)
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
      if (!strcmp(s + digits, units[i].unit)) {
        uint64_t x = strtoull(s, NULL, 10) * units[i].ms;

        if (x >= lo && x <= hi) {
          *out = x;
          return 0;
        }
      }
  return fail_at(ld, n,
                 "%s must be a duration from %llu ms to %llu ms: milliseconds, or a "
                 "number with a unit ms, s, m, h or d (like 30s or 7d)",
                 what, (unsigned long long)lo, (unsigned long long)hi);
}

static int get_bool(const loader *ld, const yaml_node_t *n, const char *what, int *out) {
  static const char *const words[] = {"false", "False", "FALSE", "true", "True", "TRUE"};

  if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
      if (!strcmp((const char *)n->data.scalar.value, words[i])) {
        *out = i >= 3;
        return 0;
      }
  return fail_at(ld, n, "%s must be true or false", what);
}

/* A sequence of strings (non-empty ones if `nonempty`), as a NULL-terminated vector;
 * the sequence itself may be empty only if `empty_ok`. */
static int get_strv(const loader *ld, const yaml_node_t *n, const char *what, int nonempty,
                    int empty_ok, char ***out, size_t *count) {
  size_t len, i;
  char **v;
  int rc = 0;

  if (n->type != YAML_SEQUENCE_NODE ||
      (!empty_ok && n->data.sequence.items.top == n->data.sequence.items.start))
    return fail_at(ld, n, "%s must be a %slist of strings", what, empty_ok ? "" : "non-empty ");
  len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
  v = xcalloc(len + 1, sizeof *v);
  for (i = 0; i < len && rc == 0; i++) {
    char path[128];

    snprintf(path, sizeof path, "%s[%zu]", what, i);
    rc = get_str(ld, node(ld, n->data.sequence.items.start[i]), path, nonempty, &v[i]);
  }
  if (rc < 0) {
    config_argv_free(v);
    return rc;
  }
  *out = v;
  *count = len;
  return 0;
}

/* A mapping of variable names to strings (a module's env, or its slurm.env), as a
 * NULL-terminated vector of "NAME=value" in *env, *nenv of them. *env is set before the
 * first entry is read, so that config_free frees what a failure leaves. */
static int get_env(const loader *ld, const yaml_node_t *n, const char *what, char ***env,
                   size_t *nenv) {
  size_t len, i;

  if (n->type != YAML_MAPPING_NODE)
    return fail_at(ld, n, "%s must be a mapping of names to strings", what);
  len = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
  *env = xcalloc(len + 1, sizeof **env);
  for (i = 0; i < len; i++) {
    const yaml_node_t *kn = node(ld, n->data.mapping.pairs.start[i].key);
    const yaml_node_t *vn = node(ld, n->data.mapping.pairs.start[i].value);
    char path[192];
    char *k = NULL, *v = NULL;
    size_t klen;
    int rc;

    snprintf(path, sizeof path, "%s names", what);
    if ((rc = get_str(ld, kn, path, 1, &k)) < 0) return rc;
    klen = strlen(k);
    if (strchr(k, '=')) rc = fail_at(ld, kn, "%s: name \"%s\" contains \"=\"", what, k);
    for (size_t j = 0; rc == 0 && j < i; j++)
      if (!strncmp((*env)[j], k, klen) && (*env)[j][klen] == '=')
        rc = fail_at(ld, kn, "%s: duplicate name \"%s\"", what, k);
    snprintf(path, sizeof path, "%s.%s", what, k);
    if (rc == 0 && (rc = get_str(ld, vn, path, 0, &v)) == 0) (*env)[(*nenv)++] = kv_new(k, v);
    free(k);
    free(v);
    if (rc < 0) return rc;
  }
  return 0;
}

static int valid_param_name(const char *s) {
  size_t len = strlen(s);

  return len >= 1 && len <= 64 && strchr(ALPHA "_", s[0]) && strspn(s, ALNUM "_") == len;
}

static int valid_module_id(const char *s) {
  size_t len = strlen(s);

  return len >= 1 && len <= 64 && strspn(s, ALNUM "_.-") == len;
}

int config_valid_preset_name(const char *s) { return valid_module_id(s); }

static int compile_pattern(const loader *ld, const yaml_node_t *n, const char *what,
                           config_param *p, const char *pattern) {
  size_t len = strlen(pattern) + 5;
  char *wrapped = xcalloc(len, 1);
  char why[160];
  regex_t probe;
  int rc;

  /* The value must match as a whole, so the pattern goes inside ^(...)$; glibc takes
   * an unmatched ")" as a literal, so "(pattern" compiling means the pattern has a
   * ")" that would close our group early and leave the anchors on a branch only. */
  snprintf(wrapped, len, "(%s", pattern);
  if (ere_compile(&probe, wrapped, REG_EXTENDED | REG_NOSUB, why, sizeof why) == 0) {
    regfree(&probe);
    free(wrapped);
    return fail_at(ld, n, "%s has an unmatched \")\" (write \\) for a literal one)", what);
  }
  snprintf(wrapped, len, "^(%s)$", pattern);
  rc = ere_compile(&p->re, wrapped, REG_EXTENDED | REG_NOSUB, why, sizeof why);
  free(wrapped);
  if (rc == -E2BIG) return fail_at(ld, n, "%s %s", what, why);
  if (rc < 0) return fail_at(ld, n, "%s is not a valid extended regular expression: %s", what, why);
  p->pattern = xstrdup(pattern);
  return 0;
}

/* min and max of an INTEGER or NUMBER parameter (nodes NULL when not given). */
static int load_range(const loader *ld, const char *what, config_param *p, const yaml_node_t *min,
                      const yaml_node_t *max) {
  char path[192];
  int rc;
  const yaml_node_t *given = min ? min : max;

  if (given && p->type != CONFIG_PARAM_INTEGER && p->type != CONFIG_PARAM_NUMBER)
    return fail_at(ld, given, "%s: min and max are for integer and number parameters", what);
  snprintf(path, sizeof path, "%s.min", what);
  if (min && (rc = get_number(ld, min, path, &p->min)) < 0) return rc;
  snprintf(path, sizeof path, "%s.max", what);
  if (max && (rc = get_number(ld, max, path, &p->max)) < 0) return rc;
  p->has_min = min != NULL;
  p->has_max = max != NULL;
  /* An integer's bounds are compared exactly with int64 values (param.c). */
  if (p->type == CONFIG_PARAM_INTEGER &&
      ((min && (p->min != floor(p->min) || fabs(p->min) > 9.2e18)) ||
       (max && (p->max != floor(p->max) || fabs(p->max) > 9.2e18))))
    return fail_at(ld, given, "%s: an integer parameter's min and max must be integers", what);
  if (min && max && p->min > p->max) return fail_at(ld, max, "%s: max is below min", what);
  return 0;
}

/* A key that parameters of type `only` need and no other type takes: node `key` of it
 * (NULL if absent) given for another type is an error ("<is_for> for <type>
 * parameters"), and so is its absence for `only` ("a <type> parameter needs <need>").
 * Returns 1 when there is a key to read, 0 when p has another type, else the error. */
static int key_of_type(const loader *ld, const yaml_node_t *n, const yaml_node_t *key,
                       const char *what, const config_param *p, config_param_type only,
                       const char *is_for, const char *need) {
  if (p->type != only)
    return key ? fail_at(ld, key, "%s: %s for %s parameters", what, is_for, param_type_name(only))
               : 0;
  if (!key) return fail_at(ld, n, "%s: a %s parameter needs %s", what, param_type_name(only), need);
  return 1;
}

/* options of a SELECT parameter: required there, distinct, and nowhere else. */
static int load_options(const loader *ld, const yaml_node_t *n, const yaml_node_t *opts,
                        const char *what, config_param *p) {
  char path[192];
  int rc = key_of_type(ld, n, opts, what, p, CONFIG_PARAM_SELECT, "options are", "options");

  if (rc <= 0) return rc;
  snprintf(path, sizeof path, "%s.options", what);
  if ((rc = get_strv(ld, opts, path, 0, 0, &p->options, &p->noptions)) < 0) return rc;
  for (size_t i = 0; i < p->noptions; i++)
    for (size_t j = 0; j < i; j++)
      if (!strcmp(p->options[i], p->options[j]))
        return fail_at(ld, opts, "%s: duplicate option \"%s\"", path, p->options[i]);
  return 0;
}

/* base_dir of a PATH parameter: required there, absolute, and nowhere else. */
static int load_base_dir(const loader *ld, const yaml_node_t *n, const yaml_node_t *base,
                         const char *what, config_param *p) {
  char path[192];
  int rc = key_of_type(ld, n, base, what, p, CONFIG_PARAM_PATH, "base_dir is", "base_dir");

  if (rc <= 0) return rc;
  snprintf(path, sizeof path, "%s.base_dir", what);
  if ((rc = get_str(ld, base, path, 1, &p->base_dir)) < 0) return rc;
  if (param_resolve_base(&p->base_resolved, p->base_dir) < 0)
    return fail_at(ld, base, "%s must be an absolute path", path);
  return 0;
}

/* How a SECRET parameter's value reaches the run, required there and nowhere else:
 * env_var, an environment variable, or fd, a descriptor the run reads it from (var and
 * fdn their nodes, NULL when not given). A secret has no default. */
static int load_secret_way(const loader *ld, const yaml_node_t *n, const yaml_node_t *var,
                           const yaml_node_t *fdn, const yaml_node_t *dflt, const char *what,
                           config_param *p) {
  char path[192];
  int rc;

  if (p->type != CONFIG_PARAM_SECRET) {
    if (var || fdn)
      return fail_at(ld, var ? var : fdn, "%s: %s is for secret parameters", what,
                     var ? "env_var" : "fd");
    return 0;
  }
  if (!var == !fdn)
    return fail_at(ld, var ? var : n,
                   "%s: a secret parameter needs %s env_var (the environment variable that "
                   "takes its value) or fd (the descriptor the run reads it from)",
                   what, var ? "one of" : "either");
  if (dflt) return fail_at(ld, dflt, "%s: a secret parameter cannot have a default", what);
  if (fdn) {
    snprintf(path, sizeof path, "%s.fd", what);
    return get_u32(ld, fdn, path, 3, CONFIG_SECRET_FD_MAX, &p->fd);
  }
  snprintf(path, sizeof path, "%s.env_var", what);
  if ((rc = get_str(ld, var, path, 1, &p->env_var)) < 0) return rc;
  if (!valid_param_name(p->env_var))
    return fail_at(ld, var, "%s \"%s\" must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$", path, p->env_var);
  return 0;
}

/* The typed part of a parameter: v holds the nodes of type, min, max, options,
 * min_length, max_length, base_dir, env_var and fd, in this order (NULL when not
 * given); dflt is the default's node. */
static int load_param_type(const loader *ld, const yaml_node_t *n, const char *what,
                           config_param *p, yaml_node_t *const *v, const yaml_node_t *dflt) {
  enum { TYPE, MIN, MAX, OPTIONS, MINLEN, MAXLEN, BASEDIR, ENVVAR, FD };
  char path[192];
  char *type = NULL;
  int rc;

  p->type = CONFIG_PARAM_STRING;
  snprintf(path, sizeof path, "%s.type", what);
  if (v[TYPE]) {
    if ((rc = get_str(ld, v[TYPE], path, 1, &type)) < 0) return rc;
    rc = param_type_parse(&p->type, type);
    free(type);
    if (rc < 0)
      return fail_at(ld, v[TYPE],
                     "%s must be one of string, integer, number, boolean, select, "
                     "secret, path",
                     path);
  }
  if ((rc = load_range(ld, what, p, v[MIN], v[MAX])) < 0 ||
      (rc = load_options(ld, n, v[OPTIONS], what, p)) < 0 ||
      (rc = load_base_dir(ld, n, v[BASEDIR], what, p)) < 0 ||
      (rc = load_secret_way(ld, n, v[ENVVAR], v[FD], dflt, what, p)) < 0)
    return rc;
  snprintf(path, sizeof path, "%s.min_length", what);
  if (v[MINLEN] && (rc = get_u32(ld, v[MINLEN], path, 0, UINT32_MAX, &p->min_length)) < 0)
    return rc;
  snprintf(path, sizeof path, "%s.max_length", what);
  if (v[MAXLEN] && (rc = get_u32(ld, v[MAXLEN], path, 0, UINT32_MAX, &p->max_length)) < 0)
    return rc;
  if (p->max_length && p->min_length > p->max_length)
    return fail_at(ld, v[MAXLEN], "%s: max_length is below min_length", what);
  return 0;
}

/* A default must be a value the parameter accepts; a BOOLEAN's is kept as true/false. */
static int check_default(const loader *ld, const yaml_node_t *dn, const char *what,
                         config_param *p) {
  char why[256];
  char *value = NULL;

  if (!p->default_value) return 0;
  if (param_check(&value, p, p->default_value, why, sizeof why) < 0)
    return fail_at(ld, dn, "%s.default \"%s\" %s", what, p->default_value, why);
  if (p->type == CONFIG_PARAM_BOOLEAN) {
    free(p->default_value);
    p->default_value = value;
  } else {
    free(value);
  }
  return 0;
}

static int load_param(const loader *ld, const yaml_node_t *n, const char *what, config_module *m,
                      size_t idx) {
  static const char *const keys[] = {
      "name",    "required",   "default",    "description", "pattern", "type", "min", "max",
      "options", "min_length", "max_length", "base_dir",    "env_var", "fd",   NULL};
  enum {
    NAME,
    REQUIRED,
    DEFAULT,
    DESCRIPTION,
    PATTERN,
    TYPE,
    MIN,
    MAX,
    OPTIONS,
    MINLEN,
    MAXLEN,
    BASEDIR,
    ENVVAR,
    FD,
    NKEYS
  };
  config_param *p = &m->params[idx];
  yaml_node_t *v[NKEYS];
  char path[160];
  char *pattern = NULL;
  int rc;

  if ((rc = get_fields(ld, n, what, keys, v)) < 0) return rc;
  if (!v[NAME]) return fail_at(ld, n, "%s: missing required key \"name\"", what);
  snprintf(path, sizeof path, "%s.name", what);
  if ((rc = get_str(ld, v[NAME], path, 1, &p->name)) < 0) return rc;
  if (!valid_param_name(p->name))
    return fail_at(ld, v[NAME], "%s \"%s\" must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$", path,
                   p->name);
  for (size_t j = 0; j < idx; j++)
    if (!strcmp(m->params[j].name, p->name))
      return fail_at(ld, v[NAME], "%s: duplicate parameter name \"%s\"", what, p->name);
  snprintf(path, sizeof path, "%s.required", what);
  if (v[REQUIRED] && (rc = get_bool(ld, v[REQUIRED], path, &p->required)) < 0) return rc;
  snprintf(path, sizeof path, "%s.default", what);
  if (v[DEFAULT] && (rc = get_str(ld, v[DEFAULT], path, 0, &p->default_value)) < 0) return rc;
  if (p->required && p->default_value)
    return fail_at(ld, v[DEFAULT], "%s: a required parameter cannot have a default", what);
  snprintf(path, sizeof path, "%s.description", what);
  if (v[DESCRIPTION] && (rc = get_str(ld, v[DESCRIPTION], path, 0, &p->description)) < 0) return rc;
  if (!p->description) p->description = xstrdup("");
  if (v[PATTERN]) {
    snprintf(path, sizeof path, "%s.pattern", what);
    if ((rc = get_str(ld, v[PATTERN], path, 1, &pattern)) < 0) return rc;
    rc = compile_pattern(ld, v[PATTERN], path, p, pattern);
    free(pattern);
    if (rc < 0) return rc;
  }
  if ((rc = load_param_type(ld, n, what, p, v + TYPE, v[DEFAULT])) < 0) return rc;
  return check_default(ld, v[DEFAULT], what, p);
}

/* A preset's parameters: a mapping of parameter names to values, loaded into pr and
 * checked against m's parameters (config_module_check_preset). */
static int load_preset_params(const loader *ld, const yaml_node_t *n, const char *what,
                              const config_module *m, config_preset *pr) {
  size_t len = n->type == YAML_MAPPING_NODE
                   ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start)
                   : 0;
  param_report bad = PARAM_REPORT_INIT;
  char msg[400];
  int rc;

  if (n->type != YAML_MAPPING_NODE)
    return fail_at(ld, n, "%s must be a mapping of parameter names to values", what);
  pr->names = xcalloc(len + 1, sizeof *pr->names);
  pr->values = xcalloc(len + 1, sizeof *pr->values);
  for (size_t i = 0; i < len; i++) {
    char path[192];

    snprintf(path, sizeof path, "%s names", what);
    if ((rc = get_str(ld, node(ld, n->data.mapping.pairs.start[i].key), path, 1, &pr->names[i])) <
        0)
      return rc;
    snprintf(path, sizeof path, "%s.%s", what, pr->names[i]);
    if ((rc = get_str(ld, node(ld, n->data.mapping.pairs.start[i].value), path, 0,
                      &pr->values[i])) < 0)
      return rc;
    pr->nparams++;
  }
  if (config_module_check_preset(m, (const char *const *)pr->names, (const char *const *)pr->values,
                                 pr->nparams, &bad) == 0)
    return 0;
  param_report_join(&bad, msg, sizeof msg);
  param_report_clear(&bad);
  return fail_at(ld, n, "%s: %s", what, msg);
}

/* modules[i].presets: a list of {name, description, parameters}. */
static int load_presets(const loader *ld, const yaml_node_t *ps, const char *what,
                        config_module *m) {
  static const char *const keys[] = {"name", "description", "parameters", NULL};
  enum { NAME, DESCRIPTION, PARAMS, NKEYS };
  char path[96];
  int rc;

  snprintf(path, sizeof path, "%s.presets", what);
  if (ps->type != YAML_SEQUENCE_NODE) return fail_at(ld, ps, "%s must be a list of mappings", path);
  m->npresets = (size_t)(ps->data.sequence.items.top - ps->data.sequence.items.start);
  m->presets = xcalloc(m->npresets, sizeof *m->presets);
  for (size_t i = 0; i < m->npresets; i++) {
    const yaml_node_t *n = node(ld, ps->data.sequence.items.start[i]);
    config_preset *pr = &m->presets[i];
    yaml_node_t *v[NKEYS];
    char ppath[128], fpath[160];

    snprintf(ppath, sizeof ppath, "%s[%zu]", path, i);
    if ((rc = get_fields(ld, n, ppath, keys, v)) < 0) return rc;
    if (!v[NAME]) return fail_at(ld, n, "%s: missing required key \"name\"", ppath);
    snprintf(fpath, sizeof fpath, "%s.name", ppath);
    if ((rc = get_str(ld, v[NAME], fpath, 1, &pr->name)) < 0) return rc;
    if (!config_valid_preset_name(pr->name))
      return fail_at(ld, v[NAME], "%s \"%s\" must match ^[A-Za-z0-9_.-]{1,64}$", fpath, pr->name);
    for (size_t j = 0; j < i; j++)
      if (!strcmp(m->presets[j].name, pr->name))
        return fail_at(ld, v[NAME], "%s: duplicate preset name \"%s\"", ppath, pr->name);
    snprintf(fpath, sizeof fpath, "%s.description", ppath);
    if (v[DESCRIPTION] && (rc = get_str(ld, v[DESCRIPTION], fpath, 0, &pr->description)) < 0)
      return rc;
    if (!pr->description) pr->description = xstrdup("");
    snprintf(fpath, sizeof fpath, "%s.parameters", ppath);
    if (v[PARAMS]) {
      if ((rc = load_preset_params(ld, v[PARAMS], fpath, m, pr)) < 0) return rc;
    } else {
      pr->names = xcalloc(1, sizeof *pr->names);
      pr->values = xcalloc(1, sizeof *pr->values);
    }
  }
  return 0;
}

/* Checks template t (at node n) now, so that rendering cannot meet an unknown
 * placeholder or one without a value. */
static int check_template(const loader *ld, const yaml_node_t *n, const char *what,
                          const config_module *m, const char *t) {
  char **vals = xcalloc(m->nparams, sizeof *vals);
  char msg[256];
  char *out;

  /* Only whether a parameter can have a value matters here: any non-NULL stand-in
   * will do for a required one. */
  for (size_t i = 0; i < m->nparams; i++)
    vals[i] = m->params[i].required ? m->params[i].name : m->params[i].default_value;
  out = expand(m, t, vals, msg, sizeof msg);
  free(vals);
  if (!out) return fail_at(ld, n, "%s: %s", what, msg);
  free(out);
  return 0;
}

/* modules[i].parameters: a list of parameter mappings. */
static int load_params(const loader *ld, const yaml_node_t *ps, const char *what,
                       config_module *m) {
  char path[96];
  int rc;

  snprintf(path, sizeof path, "%s.parameters", what);
  if (ps->type != YAML_SEQUENCE_NODE) return fail_at(ld, ps, "%s must be a list of mappings", path);
  m->nparams = (size_t)(ps->data.sequence.items.top - ps->data.sequence.items.start);
  m->params = xcalloc(m->nparams, sizeof *m->params);
  for (size_t i = 0; i < m->nparams; i++) {
    char ppath[128];

    snprintf(ppath, sizeof ppath, "%s[%zu]", path, i);
    if ((rc = load_param(ld, node(ld, ps->data.sequence.items.start[i]), ppath, m, i)) < 0)
      return rc;
  }
  return 0;
}

/* What bounds one run of module m: timeout_ms, max_concurrent, memory_max, cpu_max (each
 * node NULL when not given). */
static int load_run_limits(const loader *ld, const char *what, config_module *m,
                           const yaml_node_t *timeout, const yaml_node_t *maxconc,
                           const yaml_node_t *memmax, const yaml_node_t *cpumax) {
  char path[96];
  int rc = 0;

  snprintf(path, sizeof path, "%s.timeout_ms", what);
  if (timeout && (rc = get_u32(ld, timeout, path, 0, UINT32_MAX, &m->timeout_ms)) < 0) return rc;
  snprintf(path, sizeof path, "%s.max_concurrent", what);
  if (maxconc && (rc = get_u32(ld, maxconc, path, 0, UINT32_MAX, &m->max_concurrent)) < 0)
    return rc;
  snprintf(path, sizeof path, "%s.memory_max", what);
  if (memmax && (rc = get_uint(ld, memmax, path, 4096, UINT64_MAX, &m->memory_max)) < 0) return rc;
  snprintf(path, sizeof path, "%s.cpu_max", what);
  if (cpumax && (rc = get_u32(ld, cpumax, path, 1, 100000, &m->cpu_max_percent)) < 0) return rc;
  return 0;
}

/* A module's catalogue entries: v holds the nodes of category, tags, version and
 * enabled, in this order (NULL when not given). */
static int load_module_meta(const loader *ld, const char *what, config_module *m,
                            yaml_node_t *const *v) {
  enum { CATEGORY, TAGS, VERSION, ENABLED };
  char path[96];
  int rc;

  snprintf(path, sizeof path, "%s.category", what);
  if (v[CATEGORY] && (rc = get_str(ld, v[CATEGORY], path, 0, &m->category)) < 0) return rc;
  snprintf(path, sizeof path, "%s.version", what);
  if (v[VERSION] && (rc = get_str(ld, v[VERSION], path, 0, &m->version)) < 0) return rc;
  snprintf(path, sizeof path, "%s.tags", what);
  if (v[TAGS] && (rc = get_strv(ld, v[TAGS], path, 1, 1, &m->tags, &m->ntags)) < 0) return rc;
  for (size_t i = 0; i < m->ntags; i++)
    for (size_t j = 0; j < i; j++)
      if (!strcmp(m->tags[i], m->tags[j]))
        return fail_at(ld, v[TAGS], "%s: duplicate tag \"%s\"", path, m->tags[i]);
  m->enabled = 1;
  snprintf(path, sizeof path, "%s.enabled", what);
  if (v[ENABLED] && (rc = get_bool(ld, v[ENABLED], path, &m->enabled)) < 0) return rc;
  if (!m->category) m->category = xstrdup("");
  if (!m->version) m->version = xstrdup("");
  if (!m->tags) m->tags = xcalloc(1, sizeof *m->tags);
  return 0;
}

/* A module's argv and cwd (node NULL when not given), templates checked against its
 * parameters, which are loaded by then. */
static int load_command(const loader *ld, const char *what, config_module *m,
                        const yaml_node_t *argv, const yaml_node_t *cwd) {
  char path[96];
  int rc;

  snprintf(path, sizeof path, "%s.argv", what);
  if ((rc = get_strv(ld, argv, path, 0, 0, &m->argv, &m->argc)) < 0) return rc;
  for (size_t i = 0; i < m->argc; i++) {
    snprintf(path, sizeof path, "%s.argv[%zu]", what, i);
    if ((rc = check_template(ld, node(ld, argv->data.sequence.items.start[i]), path, m,
                             m->argv[i])) < 0)
      return rc;
  }
  if (!m->argv[0][0]) return fail_at(ld, argv, "%s.argv[0] (the program) must not be empty", what);
  snprintf(path, sizeof path, "%s.cwd", what);
  if (cwd && ((rc = get_str(ld, cwd, path, 1, &m->cwd)) < 0 ||
              (rc = check_template(ld, cwd, path, m, m->cwd)) < 0))
    return rc;
  return 0;
}

/* modules[i].progress (node n): {pattern, fd}, both optional. */
static int load_progress(const loader *ld, const yaml_node_t *n, const char *what,
                         config_module *m) {
  static const char *const keys[] = {"pattern", "fd", NULL};
  enum { PATTERN, FD, NKEYS };
  yaml_node_t *v[NKEYS];
  char path[96], why[256];
  char *pattern = NULL;
  int rc;

  snprintf(path, sizeof path, "%s.progress", what);
  if ((rc = get_fields(ld, n, path, keys, v)) < 0) return rc;
  snprintf(path, sizeof path, "%s.progress.fd", what);
  if (v[FD] && (rc = get_bool(ld, v[FD], path, &m->progress_fd)) < 0) return rc;
  if (!v[PATTERN]) return 0;
  snprintf(path, sizeof path, "%s.progress.pattern", what);
  if ((rc = get_str(ld, v[PATTERN], path, 1, &pattern)) < 0) return rc;
  rc = progress_pattern_new(&m->progress, pattern, why, sizeof why);
  free(pattern);
  return rc < 0 ? fail_at(ld, v[PATTERN], "%s: %s", path, why) : 0;
}

/* The descriptors secret parameters are read from (ps: the parameters' node): each
 * its own, not the progress descriptor, a few at most, and their values short enough
 * (config.h, CONFIG_SECRET_FD_LEN_MAX: the default max_length). */
static int check_secret_fds(const loader *ld, const yaml_node_t *ps, const char *what,
                            config_module *m) {
  size_t nfds = 0;
  for (size_t i = 0; i < m->nparams; i++) {
    config_param *p = &m->params[i];
    unsigned fd = p->fd;
    if (!fd) continue;
    if (++nfds > CONFIG_SECRET_FDS_MAX)
      return fail_at(ld, ps, "%s.parameters: more than %d secrets on descriptors", what,
                     CONFIG_SECRET_FDS_MAX);
    if (!p->max_length) p->max_length = CONFIG_SECRET_FD_LEN_MAX;
    if (p->max_length > CONFIG_SECRET_FD_LEN_MAX)
      return fail_at(ld, ps,
                     "%s.parameters[%zu]: max_length of a secret on a descriptor is "
                     "at most %d",
                     what, i, CONFIG_SECRET_FD_LEN_MAX);
    if (fd == CONFIG_PROGRESS_FD && m->progress_fd)
      return fail_at(ld, ps, "%s.parameters[%zu]: fd %u is the module's progress descriptor", what,
                     i, fd);
    for (size_t j = 0; j < i; j++)
      if (m->params[j].fd == fd)
        return fail_at(ld, ps, "%s.parameters[%zu]: fd %u is also parameters[%zu]'s", what, i, fd,
                       j);
  }
  return 0;
}

/* ---- the Slurm executor ---- */

/* A non-empty absolute path (the slurm section's directories, not opened here). */
static int get_abs_path(const loader *ld, const yaml_node_t *n, const char *what, char **out) {
  int rc = get_str(ld, n, what, 1, out);

  if (rc == 0 && (*out)[0] != '/') return fail_at(ld, n, "%s must be an absolute path", what);
  return rc;
}

/* A partition, account or qos: one sbatch option's value, which must stay one word. */
static int get_slurm_name(const loader *ld, const yaml_node_t *n, const char *what, char **out) {
  int rc = get_str(ld, n, what, 1, out);

  if (rc < 0) return rc;
  for (const unsigned char *p = (const unsigned char *)*out; *p; p++)
    if (*p <= ' ' || *p == 0x7f)
      return fail_at(ld, n, "%s must not contain whitespace or control characters", what);
  return 0;
}

/* slurm.memory, as sbatch --mem takes it: digits with an optional unit K, M, G or T (no
 * unit: megabytes). A plain YAML integer is a string here too. */
static int get_slurm_memory(const loader *ld, const yaml_node_t *n, const char *what, char **out) {
  int rc = get_str(ld, n, what, 1, out);
  size_t digits;

  if (rc < 0) return rc;
  digits = strspn(*out, "0123456789");
  if (digits < 1 || digits > 15 ||
      ((*out)[digits] && (!strchr("KMGT", (*out)[digits]) || (*out)[digits + 1])))
    return fail_at(ld, n,
                   "%s must be a number of megabytes, or a number with a unit K, M, G or T "
                   "(like 512M or 4G), of 1 to 15 digits",
                   what);
  return 0;
}

/* What the Slurm executor gives sbatch itself, so sbatch_args must not: the long
 * option, its short form (0 if none), and the module key that sets it (NULL if none:
 * prismqd alone does). */
static const struct {
  const char *name;
  char letter;
  const char *key;
} reserved_sbatch[] = {
    {"output", 'o', NULL},  {"error", 'e', NULL},        {"job-name", 'J', NULL},
    {"parsable", 0, NULL},  {"wrap", 0, NULL},           {"chdir", 'D', NULL},
    {"array", 'a', NULL},   {"export", 0, "env"},        {"input", 'i', NULL},
    {"open-mode", 0, NULL}, {"time", 't', "time_limit"},
};

/* The entry of reserved_sbatch that sbatch argument a sets, or -1. getopt_long takes
 * any unambiguous abbreviation of a long option ("--out=x" is --output), and a word of
 * short options may hold a value ("-ofoo") or begin with flags that take none ("-Ho x"):
 * those count too. An abbreviation that is also another option's is ambiguous, which
 * sbatch refuses anyway. */
static long reserved_sbatch_index(const char *a) {
  const size_t n = sizeof reserved_sbatch / sizeof reserved_sbatch[0];

  if (a[0] == '-' && a[1] == '-') {
    size_t len = strcspn(a + 2, "=");

    for (size_t i = 0; len && i < n; i++)
      if (!strncmp(reserved_sbatch[i].name, a + 2, len)) return (long)i;
    return -1;
  }
  for (const char *p = a[0] == '-' ? a + 1 : ""; *p; p++) {
    for (size_t i = 0; i < n; i++)
      if (reserved_sbatch[i].letter == *p) return (long)i;
    /* sbatch's short options without a value; any other takes the rest of the word. */
    if (!strchr("HhIOQsuVvW", *p)) break;
  }
  return -1;
}

/* modules[i].slurm.sbatch_args (node n; what names the module): non-empty strings, none
 * of which sets what prismqd sets. */
static int load_sbatch_args(const loader *ld, const yaml_node_t *n, const char *what,
                            config_slurm_job *job) {
  char path[96];
  int rc;

  snprintf(path, sizeof path, "%s.slurm.sbatch_args", what);
  if ((rc = get_strv(ld, n, path, 1, 1, &job->sbatch_args, &job->nsbatch_args)) < 0) return rc;
  for (size_t i = 0; i < job->nsbatch_args; i++) {
    const yaml_node_t *an = node(ld, n->data.sequence.items.start[i]);
    const char *arg = job->sbatch_args[i];
    long r = reserved_sbatch_index(arg);

    if (r < 0) continue;
    if (reserved_sbatch[r].key)
      return fail_at(ld, an, "%s[%zu] \"%s\" sets --%s: use %s.slurm.%s", path, i, arg,
                     reserved_sbatch[r].name, what, reserved_sbatch[r].key);
    return fail_at(ld, an, "%s[%zu] \"%s\" sets --%s, which prismqd sets itself", path, i, arg,
                   reserved_sbatch[r].name);
  }
  return 0;
}

/* modules[i].slurm (node n; what names the module): the sbatch options of its jobs. */
static int load_slurm_job(const loader *ld, const yaml_node_t *n, const char *what,
                          config_slurm_job *job) {
  static const char *const keys[] = {"partition",  "account",     "qos", "cpus", "memory",
                                     "time_limit", "sbatch_args", "env", NULL};
  enum { PARTITION, ACCOUNT, QOS, CPUS, MEMORY, TIME, ARGS, ENV, NKEYS };
  /* Order as in keys, up to QOS: the names. */
  char **const names[] = {&job->partition, &job->account, &job->qos};
  yaml_node_t *v[NKEYS];
  char path[96];
  uint64_t ms;
  int rc;

  snprintf(path, sizeof path, "%s.slurm", what);
  if ((rc = get_fields(ld, n, path, keys, v)) < 0) return rc;
  for (size_t i = 0; i <= QOS; i++) {
    snprintf(path, sizeof path, "%s.slurm.%s", what, keys[i]);
    if (v[i] && (rc = get_slurm_name(ld, v[i], path, names[i])) < 0) return rc;
  }
  snprintf(path, sizeof path, "%s.slurm.cpus", what);
  if (v[CPUS] && (rc = get_u32(ld, v[CPUS], path, 1, 100000, &job->cpus)) < 0) return rc;
  snprintf(path, sizeof path, "%s.slurm.memory", what);
  if (v[MEMORY] && (rc = get_slurm_memory(ld, v[MEMORY], path, &job->memory)) < 0) return rc;
  snprintf(path, sizeof path, "%s.slurm.time_limit", what);
  if (v[TIME]) {
    if ((rc = get_duration(ld, v[TIME], path, 60000, (uint64_t)365 * 86400000, &ms)) < 0) return rc;
    /* Slurm counts whole minutes; rounding up never cuts a run short. */
    job->time_limit_min = (uint32_t)((ms + 59999) / 60000);
  }
  if (v[ARGS] && (rc = load_sbatch_args(ld, v[ARGS], what, job)) < 0) return rc;
  snprintf(path, sizeof path, "%s.slurm.env", what);
  if (v[ENV] && (rc = get_env(ld, v[ENV], path, &job->env, &job->nenv)) < 0) return rc;
  return 0;
}

/* Where module m's runs are carried out: exec and job are the nodes of its executor and
 * slurm keys (NULL when not given); c's slurm section is loaded by then. */
static int load_executor(const loader *ld, const char *what, const config *c, config_module *m,
                         const yaml_node_t *exec, const yaml_node_t *job) {
  int rc;

  if (exec) {
    const char *s = exec->type == YAML_SCALAR_NODE ? (const char *)exec->data.scalar.value : "";

    if (strcmp(s, "local") && strcmp(s, "slurm"))
      return fail_at(ld, exec, "%s.executor must be local or slurm", what);
#ifdef _WIN32
    if (!strcmp(s, "slurm"))
      return fail_at(ld, exec, "%s.executor: slurm is not available on Windows", what);
#endif
    m->executor = !strcmp(s, "slurm") ? CONFIG_EXEC_SLURM : CONFIG_EXEC_LOCAL;
  }
  if (job && (rc = load_slurm_job(ld, job, what, &m->slurm)) < 0) return rc;
  if (!m->slurm.sbatch_args) m->slurm.sbatch_args = xcalloc(1, sizeof *m->slurm.sbatch_args);
  if (!m->slurm.env) m->slurm.env = xcalloc(1, sizeof *m->slurm.env);
  if (job && m->executor != CONFIG_EXEC_SLURM)
    return fail_at(ld, job, "%s.slurm is given but %s.executor is not slurm", what, what);
  if (m->executor == CONFIG_EXEC_SLURM && !c->slurm.spool_dir)
    return fail_at(ld, exec,
                   "%s.executor is slurm, which needs slurm.spool_dir (a directory this "
                   "server and the cluster's nodes share)",
                   what);
  return 0;
}

/* What a module the Slurm executor runs cannot have (nodes NULL when not given):
 * memory_max and cpu_max, the limits of a local run's cgroup (a job's are slurm.memory
 * and slurm.cpus), and secrets on descriptors, which a job started by slurmd on another
 * machine has no way to inherit. */
static int check_slurm_module(const loader *ld, const char *what, const config_module *m,
                              const yaml_node_t *memmax, const yaml_node_t *cpumax,
                              const yaml_node_t *params) {
  if (m->executor != CONFIG_EXEC_SLURM) return 0;
  if (memmax)
    return fail_at(ld, memmax,
                   "%s.memory_max is a limit of the local executor: with executor slurm use "
                   "%s.slurm.memory",
                   what, what);
  if (cpumax)
    return fail_at(ld, cpumax,
                   "%s.cpu_max is a limit of the local executor: with executor slurm use "
                   "%s.slurm.cpus",
                   what, what);
  for (size_t i = 0; i < m->nparams; i++)
    if (m->params[i].fd)
      return fail_at(ld, node(ld, params->data.sequence.items.start[i]),
                     "%s.parameters[%zu]: secrets on descriptors are not supported by the "
                     "slurm executor (give the secret an env_var)",
                     what, i);
  return 0;
}

/* modules[idx]'s id (required, unique), name (default: the id) and description. */
static int load_module_names(const loader *ld, const char *what, config *c, size_t idx,
                             const yaml_node_t *id, const yaml_node_t *name,
                             const yaml_node_t *desc) {
  config_module *m = &c->modules[idx];
  char path[96];
  int rc;

  snprintf(path, sizeof path, "%s.id", what);
  if ((rc = get_str(ld, id, path, 1, &m->id)) < 0) return rc;
  if (!valid_module_id(m->id))
    return fail_at(ld, id, "%s \"%s\" must match ^[A-Za-z0-9_.-]{1,64}$", path, m->id);
  for (size_t j = 0; j < idx; j++)
    if (!strcmp(c->modules[j].id, m->id))
      return fail_at(ld, id, "%s: duplicate module id \"%s\" (also modules[%zu].id)", path, m->id,
                     j);
  snprintf(path, sizeof path, "%s.name", what);
  if (name && (rc = get_str(ld, name, path, 1, &m->name)) < 0) return rc;
  if (!m->name) m->name = xstrdup(m->id);
  snprintf(path, sizeof path, "%s.description", what);
  if (desc && (rc = get_str(ld, desc, path, 0, &m->description)) < 0) return rc;
  if (!m->description) m->description = xstrdup("");
  return 0;
}

/* modules[i].pass_parameters (node pn): none or flags. */
static int load_pass(const loader *ld, const yaml_node_t *pn, const char *what, config_module *m) {
  const char *s = pn->type == YAML_SCALAR_NODE ? (const char *)pn->data.scalar.value : "";

  if (strcmp(s, "none") && strcmp(s, "flags"))
    return fail_at(ld, pn, "%s.pass_parameters must be none or flags", what);
  m->pass_flags = !strcmp(s, "flags");
  return 0;
}

static int load_module(const loader *ld, const yaml_node_t *n, config *c, size_t idx) {
  static const char *const keys[] = {"id",
                                     "name",
                                     "description",
                                     "argv",
                                     "cwd",
                                     "env",
                                     "timeout_ms",
                                     "max_concurrent",
                                     "pass_parameters",
                                     "parameters",
                                     "memory_max",
                                     "cpu_max",
                                     "category",
                                     "tags",
                                     "version",
                                     "enabled",
                                     "presets",
                                     "progress",
                                     "executor",
                                     "slurm",
                                     NULL};
  enum {
    ID,
    NAME,
    DESCRIPTION,
    ARGV,
    CWD,
    ENV,
    TIMEOUT,
    MAXCONC,
    PASS,
    PARAMS,
    MEMMAX,
    CPUMAX,
    CATEGORY,
    TAGS,
    VERSION,
    ENABLED,
    PRESETS,
    PROGRESS,
    EXECUTOR,
    SLURM,
    NKEYS
  };
  config_module *m = &c->modules[idx];
  yaml_node_t *v[NKEYS];
  char what[32], path[96];
  int rc;

  snprintf(what, sizeof what, "modules[%zu]", idx);
  if ((rc = get_fields(ld, n, what, keys, v)) < 0) return rc;
  if (!v[ID]) return fail_at(ld, n, "%s: missing required key \"id\"", what);
  if (!v[ARGV]) return fail_at(ld, n, "%s: missing required key \"argv\"", what);

  if ((rc = load_module_names(ld, what, c, idx, v[ID], v[NAME], v[DESCRIPTION])) < 0) return rc;
  if ((rc = load_module_meta(ld, what, m, v + CATEGORY)) < 0) return rc;

  /* Parameters first: the argv and cwd templates are checked against them. */
  if (v[PARAMS] && (rc = load_params(ld, v[PARAMS], what, m)) < 0) return rc;

  if ((rc = load_command(ld, what, m, v[ARGV], v[CWD])) < 0) return rc;
  if (v[PRESETS] && (rc = load_presets(ld, v[PRESETS], what, m)) < 0) return rc;
  snprintf(path, sizeof path, "%s.env", what);
  if (v[ENV] && (rc = get_env(ld, v[ENV], path, &m->env, &m->nenv)) < 0) return rc;
  if (!m->env) m->env = xcalloc(1, sizeof *m->env);

  if ((rc = load_run_limits(ld, what, m, v[TIMEOUT], v[MAXCONC], v[MEMMAX], v[CPUMAX])) < 0)
    return rc;
  if (v[PROGRESS] && (rc = load_progress(ld, v[PROGRESS], what, m)) < 0) return rc;
  if (v[PARAMS] && (rc = check_secret_fds(ld, v[PARAMS], what, m)) < 0) return rc;
  if (v[PASS] && (rc = load_pass(ld, v[PASS], what, m)) < 0) return rc;
  if ((rc = load_executor(ld, what, c, m, v[EXECUTOR], v[SLURM])) < 0) return rc;
  return check_slurm_module(ld, what, m, v[MEMMAX], v[CPUMAX], v[PARAMS]);
}

static int load_limits(const loader *ld, const yaml_node_t *n, config_limits *l) {
  static const char *const keys[] = {"max_concurrent",
                                     "max_queued",
                                     "max_memory_percent",
                                     "min_available_memory_mb",
                                     "max_cpu_percent",
                                     "max_connections",
                                     "max_streams_per_connection",
                                     "max_header_list_bytes",
                                     "max_message_bytes",
                                     "idle_timeout_ms",
                                     "max_queued_per_identity",
                                     "output_max_bytes",
                                     NULL};
  enum {
    MAXCONC,
    MAXQ,
    MEMPCT,
    MINMEM,
    CPUPCT,
    MAXCONN,
    MAXSTREAMS,
    MAXHDR,
    MAXMSG,
    IDLE,
    MAXQID,
    OUTMAX,
    NKEYS
  };
  /* Order as in keys: the field, its lowest and highest value. */
  uint32_t *const u32[] = {&l->max_concurrent,
                           &l->max_queued,
                           &l->max_memory_percent,
                           &l->min_available_memory_mb,
                           &l->max_cpu_percent,
                           &l->max_connections,
                           &l->max_streams_per_connection,
                           &l->max_header_list_bytes,
                           &l->max_message_bytes,
                           &l->idle_timeout_ms,
                           &l->max_queued_per_identity};
  static const uint32_t lo[] = {1, 0, 0, 0, 0, 1, 1, 1024, 1024, 0, 0};
  static const uint32_t hi[] = {UINT32_MAX, UINT32_MAX, 100,       UINT32_MAX,
                                100,        UINT32_MAX, 10000,     1u << 20,
                                64u << 20,  86400000,   UINT32_MAX};
  yaml_node_t *v[NKEYS];
  char path[64];
  int rc;

  if ((rc = get_fields(ld, n, "limits", keys, v)) < 0) return rc;
  for (size_t i = 0; i < OUTMAX; i++) {
    snprintf(path, sizeof path, "limits.%s", keys[i]);
    if (v[i] && (rc = get_u32(ld, v[i], path, lo[i], hi[i], u32[i])) < 0) return rc;
  }
  if (v[OUTMAX] && (rc = get_uint(ld, v[OUTMAX], "limits.output_max_bytes", 0, UINT64_MAX,
                                  &l->output_max_bytes)) < 0)
    return rc;
  return 0;
}

/* Every field's own check first, then the ones between fields, so that each message
 * points at the value to fix. The files are not opened here: prismqd loads them. */
static int load_tls(const loader *ld, const yaml_node_t *n, config *c) {
  static const char *const keys[] = {
      "cert", "key", "client_ca", "crl", "require_client_cert", "handshake_timeout_ms", NULL};
  enum { CERT, KEY, CLIENT_CA, CRL, REQUIRE, TIMEOUT, NKEYS };
  config_tls *t = &c->tls;
  /* Order as in keys, up to CRL: the path strings. */
  char **const paths[] = {&t->cert, &t->key, &t->client_ca, &t->crl};
  yaml_node_t *v[NKEYS];
  char what[48];
  int rc;

  c->has_tls = 1;
  if ((rc = get_fields(ld, n, "tls", keys, v)) < 0) return rc;
  for (size_t i = 0; i <= CRL; i++) {
    snprintf(what, sizeof what, "tls.%s", keys[i]);
    if (v[i] && (rc = get_str(ld, v[i], what, 1, paths[i])) < 0) return rc;
  }
  if (v[REQUIRE] &&
      (rc = get_bool(ld, v[REQUIRE], "tls.require_client_cert", &t->require_client_cert)) < 0)
    return rc;
  if (v[TIMEOUT] && (rc = get_u32(ld, v[TIMEOUT], "tls.handshake_timeout_ms", 1, 600000,
                                  &t->handshake_timeout_ms)) < 0)
    return rc;

  if (!v[CERT] && !v[KEY]) return fail_at(ld, n, "tls needs cert and key");
  if (!v[KEY])
    return fail_at(ld, v[CERT], "tls.cert is given without tls.key (tls needs cert and key)");
  if (!v[CERT])
    return fail_at(ld, v[KEY], "tls.key is given without tls.cert (tls needs cert and key)");
  if (t->require_client_cert && !t->client_ca)
    return fail_at(ld, v[REQUIRE], "tls.require_client_cert: true needs tls.client_ca");
  if (t->crl && !t->client_ca)
    return fail_at(ld, v[CRL], "tls.crl needs tls.client_ca (it checks client certificates)");
  return 0;
}

/* Permission bits are octal whatever the YAML style: a plain 0660 must not be read as
 * decimal (or, YAML 1.1, as the integer 432). */
static int get_mode(const loader *ld, const yaml_node_t *n, const char *what, uint32_t *out) {
  if (n->type == YAML_SCALAR_NODE && n->data.scalar.length &&
      strspn((const char *)n->data.scalar.value, "01234567") == n->data.scalar.length) {
    unsigned long x;

    errno = 0;
    x = strtoul((const char *)n->data.scalar.value, NULL, 8);
    if (errno == 0 && x <= 0777) {
      *out = (uint32_t)x;
      return 0;
    }
  }
  return fail_at(ld, n, "%s must be octal permission bits from 0 to 0777, like \"0660\"", what);
}

static int load_unix_socket(const loader *ld, const yaml_node_t *n, config *c) {
  static const char *const keys[] = {"mode", "group", NULL};
  enum { MODE, GROUP, NKEYS };
  yaml_node_t *v[NKEYS];
  int rc;

  if ((rc = get_fields(ld, n, "unix_socket", keys, v)) < 0) return rc;
  if (v[MODE] && (rc = get_mode(ld, v[MODE], "unix_socket.mode", &c->unix_mode)) < 0) return rc;
  if (v[GROUP] && (rc = get_str(ld, v[GROUP], "unix_socket.group", 1, &c->unix_group)) < 0)
    return rc;
  return 0;
}

/* Role names as role bits; an unknown name is an error, since a typo would silently
 * grant less (or, read as another role, more) than meant. */
static int get_roles(const loader *ld, const yaml_node_t *n, const char *what, unsigned *out) {
  if (n->type != YAML_SEQUENCE_NODE) return fail_at(ld, n, "%s must be a list of role names", what);
  for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
    const yaml_node_t *item = node(ld, *it);
    char path[128];
    char *name = NULL;
    unsigned bit;
    int rc;

    snprintf(path, sizeof path, "%s[%zu]", what, (size_t)(it - n->data.sequence.items.start));
    if ((rc = get_str(ld, item, path, 1, &name)) < 0) return rc;
    bit = authz_role_parse(name);
    if (!bit)
      rc = fail_at(ld, item,
                   "%s: unknown role \"%s\" (expected one of: read, read_all, cancel_any, "
                   "admin)",
                   path, name);
    free(name);
    if (rc < 0) return rc;
    *out |= bit;
  }
  return 0;
}

static int load_authz_rule(const loader *ld, const yaml_node_t *n, config_authz_rule *r,
                           size_t idx) {
  static const char *const keys[] = {"identity", "modules", "roles", NULL};
  enum { IDENTITY, MODULES, ROLES, NKEYS };
  yaml_node_t *v[NKEYS];
  char what[32], path[64];
  int rc;

  snprintf(what, sizeof what, "authz[%zu]", idx);
  if ((rc = get_fields(ld, n, what, keys, v)) < 0) return rc;
  if (!v[IDENTITY]) return fail_at(ld, n, "%s: missing required key \"identity\"", what);
  snprintf(path, sizeof path, "%s.identity", what);
  if ((rc = get_str(ld, v[IDENTITY], path, 1, &r->identity)) < 0) return rc;
  snprintf(path, sizeof path, "%s.modules", what);
  if (v[MODULES] && (rc = get_strv(ld, v[MODULES], path, 1, 1, &r->modules, &r->nmodules)) < 0)
    return rc;
  if (!r->modules) r->modules = xcalloc(1, sizeof *r->modules);
  snprintf(path, sizeof path, "%s.roles", what);
  if (v[ROLES] && (rc = get_roles(ld, v[ROLES], path, &r->roles)) < 0) return rc;
  return 0;
}

/* "authz:" with nothing after it is an empty list, as for modules: a section with no
 * rules, which refuses everyone (fails closed) rather than falling back to the
 * no-authz defaults. */
static int load_authz(const loader *ld, const yaml_node_t *n, config *c) {
  int rc;

  c->has_authz = 1;
  if (is_null(n)) return 0;
  if (n->type != YAML_SEQUENCE_NODE) return fail_at(ld, n, "authz must be a list of mappings");
  c->nauthz = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
  c->authz = xcalloc(c->nauthz, sizeof *c->authz);
  for (size_t i = 0; i < c->nauthz; i++)
    if ((rc = load_authz_rule(ld, node(ld, n->data.sequence.items.start[i]), &c->authz[i], i)) < 0)
      return rc;
  return 0;
}

static int load_retention(const loader *ld, const yaml_node_t *n, config_retention *r) {
  static const char *const keys[] = {"sweep_interval", "max_age", "max_runs", NULL};
  enum { INTERVAL, AGE, RUNS, NKEYS };
  yaml_node_t *v[NKEYS];
  int rc;

  if ((rc = get_fields(ld, n, "retention", keys, v)) < 0) return rc;
  if (v[INTERVAL] && (rc = get_duration(ld, v[INTERVAL], "retention.sweep_interval", 0,
                                        (uint64_t)30 * 86400000, &r->sweep_interval_ms)) < 0)
    return rc;
  if (v[AGE] && (rc = get_duration(ld, v[AGE], "retention.max_age", 0,
                                   (uint64_t)100 * 365 * 86400000, &r->max_age_ms)) < 0)
    return rc;
  if (v[RUNS] &&
      (rc = get_uint(ld, v[RUNS], "retention.max_runs", 0, UINT64_MAX, &r->max_runs)) < 0)
    return rc;
  return 0;
}

static int load_shutdown(const loader *ld, const yaml_node_t *n, config_shutdown *sd) {
  static const char *const keys[] = {"runs", "grace_ms", NULL};
  enum { RUNS, GRACE, NKEYS };
  yaml_node_t *v[NKEYS];
  int rc;

  if ((rc = get_fields(ld, n, "shutdown", keys, v)) < 0) return rc;
  if (v[RUNS]) {
    const char *s =
        v[RUNS]->type == YAML_SCALAR_NODE ? (const char *)v[RUNS]->data.scalar.value : "";

    if (strcmp(s, "wait") && strcmp(s, "cancel"))
      return fail_at(ld, v[RUNS], "shutdown.runs must be wait or cancel");
    sd->cancel_runs = !strcmp(s, "cancel");
  }
  if (v[GRACE] && (rc = get_u32(ld, v[GRACE], "shutdown.grace_ms", 0, 86400000, &sd->grace_ms)) < 0)
    return rc;
  return 0;
}

static int load_cgroups(const loader *ld, const yaml_node_t *n, config *c) {
  static const char *const keys[] = {"root", NULL};
  enum { ROOT, NKEYS };
  yaml_node_t *v[NKEYS];
  int rc;

  if ((rc = get_fields(ld, n, "cgroups", keys, v)) < 0) return rc;
  if (v[ROOT]) {
    free(c->cgroup_root);
    c->cgroup_root = NULL;
    if ((rc = get_str(ld, v[ROOT], "cgroups.root", 1, &c->cgroup_root)) < 0) return rc;
    if (strcmp(c->cgroup_root, "auto") && strcmp(c->cgroup_root, "off") && c->cgroup_root[0] != '/')
      return fail_at(ld, v[ROOT], "cgroups.root must be auto, off or an absolute path");
  }
  return 0;
}

static int load_http(const loader *ld, const yaml_node_t *n, config_http *h) {
  static const char *const keys[] = {"ui", "metrics", "request_timeout_ms", NULL};
  enum { UI, METRICS, TIMEOUT, NKEYS };
  yaml_node_t *v[NKEYS];
  int rc;

  if ((rc = get_fields(ld, n, "http", keys, v)) < 0) return rc;
  if (v[UI] && (rc = get_bool(ld, v[UI], "http.ui", &h->ui)) < 0) return rc;
  if (v[METRICS] && (rc = get_bool(ld, v[METRICS], "http.metrics", &h->metrics)) < 0) return rc;
  if (v[TIMEOUT] && (rc = get_u32(ld, v[TIMEOUT], "http.request_timeout_ms", 1000, 600000,
                                  &h->request_timeout_ms)) < 0)
    return rc;
  return 0;
}

/* The slurm: section, what the Slurm executor's modules share; its defaults are set
 * also without it (config_load_string). */
static int load_slurm(const loader *ld, const yaml_node_t *n, config_slurm *s) {
  static const char *const keys[] = {"spool_dir", "poll_interval", "max_jobs", "bin_dir", NULL};
  enum { SPOOL, POLL, MAXJOBS, BIN, NKEYS };
  yaml_node_t *v[NKEYS];
  uint64_t ms;
  int rc;

  if ((rc = get_fields(ld, n, "slurm", keys, v)) < 0) return rc;
  if (v[SPOOL] && (rc = get_abs_path(ld, v[SPOOL], "slurm.spool_dir", &s->spool_dir)) < 0)
    return rc;
  if (v[POLL]) {
    if ((rc = get_duration(ld, v[POLL], "slurm.poll_interval", 100, 600000, &ms)) < 0) return rc;
    s->poll_interval_ms = (uint32_t)ms;
  }
  if (v[MAXJOBS] && (rc = get_u32(ld, v[MAXJOBS], "slurm.max_jobs", 1, 1000000, &s->max_jobs)) < 0)
    return rc;
  if (v[BIN] && (rc = get_abs_path(ld, v[BIN], "slurm.bin_dir", &s->bin_dir)) < 0) return rc;
  return 0;
}

static int load_root(const loader *ld, config *c) {
  static const char *const keys[] = {
      "listen",  "data_dir",    "limits", "modules",   "allow_insecure_remote",
      "tls",     "unix_socket", "authz",  "retention", "shutdown",
      "cgroups", "http",        "slurm",  NULL};
  enum {
    LISTEN,
    DATA_DIR,
    LIMITS,
    MODULES,
    INSECURE,
    TLS,
    UNIX,
    AUTHZ,
    RETENTION,
    SHUTDOWN,
    CGROUPS,
    HTTP,
    SLURM,
    NKEYS
  };
  yaml_node_t *root = yaml_document_get_root_node((yaml_document_t *)&ld->doc);
  yaml_node_t *v[NKEYS];
  int rc;

  /* An empty file, or one holding only "---", means all defaults. */
  if (!root || is_null(root)) return 0;
  if ((rc = get_fields(ld, root, "top level", keys, v)) < 0) return rc;
  if (v[LISTEN] && (rc = get_strv(ld, v[LISTEN], "listen", 1, 0, &c->listen, &c->nlisten)) < 0)
    return rc;
  if (v[DATA_DIR] && (rc = get_str(ld, v[DATA_DIR], "data_dir", 1, &c->data_dir)) < 0) return rc;
  if (v[LIMITS] && (rc = load_limits(ld, v[LIMITS], &c->limits)) < 0) return rc;
  if (v[INSECURE] &&
      (rc = get_bool(ld, v[INSECURE], "allow_insecure_remote", &c->allow_insecure_remote)) < 0)
    return rc;
  if (v[TLS] && (rc = load_tls(ld, v[TLS], c)) < 0) return rc;
  if (v[UNIX] && (rc = load_unix_socket(ld, v[UNIX], c)) < 0) return rc;
  if (v[AUTHZ] && (rc = load_authz(ld, v[AUTHZ], c)) < 0) return rc;
  if (v[RETENTION] && (rc = load_retention(ld, v[RETENTION], &c->retention)) < 0) return rc;
  if (v[SHUTDOWN] && (rc = load_shutdown(ld, v[SHUTDOWN], &c->shutdown)) < 0) return rc;
  if (v[CGROUPS] && (rc = load_cgroups(ld, v[CGROUPS], c)) < 0) return rc;
  if (v[HTTP] && (rc = load_http(ld, v[HTTP], &c->http)) < 0) return rc;
  /* Before the modules: one whose executor is slurm needs slurm.spool_dir. */
  if (v[SLURM] && (rc = load_slurm(ld, v[SLURM], &c->slurm)) < 0) return rc;
  if (v[MODULES]) {
    const yaml_node_t *ms = v[MODULES];

    if (ms->type != YAML_SEQUENCE_NODE && !is_null(ms))
      return fail_at(ld, ms, "modules must be a list of mappings");
    if (ms->type == YAML_SEQUENCE_NODE) {
      c->nmodules = (size_t)(ms->data.sequence.items.top - ms->data.sequence.items.start);
      c->modules = xcalloc(c->nmodules, sizeof *c->modules);
      for (size_t i = 0; i < c->nmodules; i++)
        if ((rc = load_module(ld, node(ld, ms->data.sequence.items.start[i]), c, i)) < 0) return rc;
    }
  }
  return 0;
}

/* libyaml reports reader errors (bad UTF-8, control characters) by byte offset only. */
static size_t line_of_offset(const char *yaml, size_t len, size_t off) {
  size_t line = 1;

  for (size_t i = 0; i < off && i < len; i++) line += yaml[i] == '\n';
  return line;
}

static int syntax_error(const loader *ld, const yaml_parser_t *ps, const char *yaml, size_t len) {
  size_t line = ps->error == YAML_READER_ERROR ? line_of_offset(yaml, len, ps->problem_offset)
                                               : ps->problem_mark.line + 1;

  if (ps->error == YAML_MEMORY_ERROR) oom();
  if (ps->context)
    return set_err(ld->err, ld->errlen, "%s:%zu: invalid YAML: %s (%s at line %zu)", ld->name, line,
                   ps->problem, ps->context, ps->context_mark.line + 1);
  return set_err(ld->err, ld->errlen, "%s:%zu: invalid YAML: %s", ld->name, line, ps->problem);
}

config *config_ref(config *c) {
  c->refs++;
  return c;
}

void config_free(config *c) {
  if (!c || c->refs-- > 0) return;
  for (size_t i = 0; i < c->nmodules; i++) {
    config_module *m = &c->modules[i];

    for (size_t j = 0; j < m->nparams; j++) {
      config_param *p = &m->params[j];

      if (p->pattern) regfree(&p->re);
      free(p->env_var);
      free(p->base_resolved);
      free(p->base_dir);
      config_argv_free(p->options);
      free(p->pattern);
      free(p->description);
      free(p->default_value);
      free(p->name);
    }
    free(m->params);
    progress_pattern_free(m->progress);
    for (size_t j = 0; j < m->npresets; j++) {
      config_argv_free(m->presets[j].values);
      config_argv_free(m->presets[j].names);
      free(m->presets[j].description);
      free(m->presets[j].name);
    }
    free(m->presets);
    config_argv_free(m->slurm.env);
    config_argv_free(m->slurm.sbatch_args);
    free(m->slurm.memory);
    free(m->slurm.qos);
    free(m->slurm.account);
    free(m->slurm.partition);
    config_argv_free(m->tags);
    free(m->version);
    free(m->category);
    config_argv_free(m->env);
    free(m->cwd);
    config_argv_free(m->argv);
    free(m->description);
    free(m->name);
    free(m->id);
  }
  free(c->modules);
  for (size_t i = 0; i < c->nauthz; i++) {
    config_argv_free(c->authz[i].modules);
    free(c->authz[i].identity);
  }
  free(c->authz);
  free(c->slurm.bin_dir);
  free(c->slurm.spool_dir);
  free(c->cgroup_root);
  free(c->unix_group);
  free(c->tls.crl);
  free(c->tls.client_ca);
  free(c->tls.key);
  free(c->tls.cert);
  free(c->data_dir);
  config_argv_free(c->listen);
  free(c);
}

int config_load_string(config **out, const char *yaml, size_t len, const char *name, char *err,
                       size_t errlen) {
  static const config_limits default_limits = {.max_concurrent = 8,
                                               .max_queued = 10000,
                                               .max_connections = 10000,
                                               .max_streams_per_connection = 100,
                                               .max_header_list_bytes = 16u << 10,
                                               .max_message_bytes = 4u << 20,
                                               .idle_timeout_ms = 300000,
                                               .output_max_bytes = (uint64_t)1 << 30};
  yaml_parser_t parser;
  loader ld = {.name = name ? name : "config", .err = err, .errlen = errlen};
  config *c = NULL;
  int rc;

  if (!yaml_parser_initialize(&parser)) oom();
  yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
  if (!yaml_parser_load(&parser, &ld.doc)) {
    rc = syntax_error(&ld, &parser, yaml, len);
    goto fail_parser;
  }
  c = xcalloc(1, sizeof *c);
  c->limits = default_limits;
  c->tls.handshake_timeout_ms = 10000;
  c->unix_mode = 0600;
  c->retention = (config_retention){
      .sweep_interval_ms = 3600000, .max_age_ms = (uint64_t)7 * 86400000, .max_runs = 100000};
  c->shutdown.grace_ms = 30000;
  c->http = (config_http){.ui = 1, .metrics = 1, .request_timeout_ms = 30000};
  c->slurm = (config_slurm){.poll_interval_ms = 1000, .max_jobs = 1000};
  rc = load_root(&ld, c);
  yaml_document_delete(&ld.doc);
  if (rc < 0) goto fail_config;

  /* A second document would be ignored silently otherwise. */
  if (!yaml_parser_load(&parser, &ld.doc)) {
    rc = syntax_error(&ld, &parser, yaml, len);
    goto fail_config;
  }
  if (yaml_document_get_root_node(&ld.doc))
    rc = fail_at(&ld, yaml_document_get_root_node(&ld.doc),
                 "a configuration is a single YAML document");
  yaml_document_delete(&ld.doc);
  if (rc < 0) goto fail_config;

  if (!c->listen) {
    c->listen = xcalloc(2, sizeof *c->listen);
    c->listen[0] = xstrdup("tcp://127.0.0.1:50051");
    c->nlisten = 1;
  }
  if (!c->data_dir) c->data_dir = xstrdup("./var");
  if (!c->cgroup_root) c->cgroup_root = xstrdup("auto");
  yaml_parser_delete(&parser);
  *out = c;
  return 0;

fail_config:
  config_free(c);
fail_parser:
  yaml_parser_delete(&parser);
  return rc;
}

/* Reads the whole file: errors keep their errno, which stdio behind libyaml's file
 * input would blur into a reader error. */
static int read_file(char **out, size_t *outlen, const char *path) {
  size_t cap = 4096, len = 0;
  char *buf = NULL;
  int fd = -1, rc;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  buf = xcalloc(cap, 1);
  for (;;) {
    ssize_t r;

    if (len == cap) {
      if (cap >= CONFIG_MAX_FILE) {
        rc = -EFBIG;
        goto fail;
      }
      cap *= 2;
      buf = xrealloc(buf, cap);
    }
    r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = -errno;
      goto fail;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  close(fd);
  *out = buf;
  *outlen = len;
  return 0;

fail:
  free(buf);
  close(fd);
  return rc;
}

int config_load_file(config **out, const char *path, char *err, size_t errlen) {
  char *yaml = NULL;
  size_t len = 0;
  int rc = read_file(&yaml, &len, path);

  if (rc < 0) {
    set_err(err, errlen, "%s: %s", path, strerror(-rc));
    return rc;
  }
  rc = config_load_string(out, yaml, len, path, err, errlen);
  free(yaml);
  return rc;
}

const config_module *config_find_module(const config *c, const char *id) {
  for (size_t i = 0; i < c->nmodules; i++)
    if (!strcmp(c->modules[i].id, id)) return &c->modules[i];
  return NULL;
}

/* ---- rendering ---- */

const config_preset *config_find_preset(const config_module *m, const char *name) {
  for (size_t i = 0; i < m->npresets; i++)
    if (!strcmp(m->presets[i].name, name)) return &m->presets[i];
  return NULL;
}

int config_module_check_preset(const config_module *m, const char *const *names,
                               const char *const *values, size_t n, param_report *bad) {
  size_t before = bad->n;

  for (size_t i = 0; i < n; i++) {
    long k = param_index(m, names[i], strlen(names[i]));
    char why[320];
    char *checked = NULL;
    size_t j = 0;

    while (j < i && strcmp(names[j], names[i]) != 0) j++;
    if (k < 0)
      param_report_add(bad, names[i], "unknown parameter \"%s\"", names[i]);
    else if (j < i)
      param_report_add(bad, names[i], "parameter \"%s\" is given twice", names[i]);
    else if (m->params[k].type == CONFIG_PARAM_SECRET)
      param_report_add(bad, names[i], "parameter \"%s\" is a secret, which a preset cannot hold",
                       names[i]);
    else if (param_check(&checked, &m->params[k], values[i], why, sizeof why) < 0)
      param_report_add(bad, names[i], "parameter \"%s\" %s", names[i], why);
    free(checked);
  }
  return bad->n > before ? -EINVAL : 0;
}

/* Fills vals[i] (malloc'd, or NULL) with the effective value of m->params[i]. */
/* Fills vals[i] (malloc'd, or NULL) with the value module m's parameter i gets: the
 * request's, else the default, checked and in its run form (param_check). Every bad
 * parameter goes into `bad`; returns -EINVAL if there is any, else 0. */
static int resolve(char **vals, const config_module *m, const char *const *names,
                   const char *const *values, const size_t *lens, size_t n, param_report *bad) {
  size_t *given = xcalloc(m->nparams, sizeof *given); /* request index + 1; 0 = not given */
  size_t before = bad->n;

  for (size_t i = 0; i < n; i++) {
    long k = param_index(m, names[i], strlen(names[i]));

    if (k < 0)
      param_report_add(bad, names[i], "unknown parameter \"%s\"", names[i]);
    else
      given[k] = i + 1;
  }
  for (size_t k = 0; k < m->nparams; k++) {
    const config_param *p = &m->params[k];
    char why[320];
    char *raw = NULL;

    if (given[k]) {
      const char *v = values[given[k] - 1];
      size_t len = lens ? lens[given[k] - 1] : strlen(v);

      if (memchr(v, '\0', len)) {
        param_report_add(bad, p->name, "parameter \"%s\" contains a NUL byte", p->name);
        continue;
      }
      raw = xstrndup(v, len);
    } else if (p->default_value) {
      raw = xstrdup(p->default_value);
    } else if (p->required) {
      param_report_add(bad, p->name, "missing required parameter \"%s\"", p->name);
      continue;
    }
    if (raw && param_check(&vals[k], p, raw, why, sizeof why) < 0)
      param_report_add(bad, p->name, "parameter \"%s\" %s", p->name, why);
    free(raw);
  }
  free(given);
  return bad->n > before ? -EINVAL : 0;
}

/* The argv of module m for parameter values vals: its templates, then with
 * pass_parameters: flags "--name" "value" per parameter with a value, a BOOLEAN's as
 * "--name" alone when true and nothing when false, a SECRET's never. NULL with msg on a
 * template error. */
static char **render_argv(const config_module *m, char *const *vals, char *msg, size_t msglen) {
  size_t nvals = 0, argc = 0;
  char **argv;

  for (size_t k = 0; k < m->nparams; k++) nvals += vals[k] != NULL;
  argv = xcalloc(m->argc + (m->pass_flags ? 2 * nvals : 0) + 1, sizeof *argv);
  for (size_t i = 0; i < m->argc; i++)
    if (!(argv[argc++] = expand(m, m->argv[i], vals, msg, msglen))) {
      config_argv_free(argv);
      return NULL;
    }
  for (size_t k = 0; m->pass_flags && k < m->nparams; k++) {
    int boolean = m->params[k].type == CONFIG_PARAM_BOOLEAN;

    if (!vals[k] || (boolean && strcmp(vals[k], "true") != 0) ||
        m->params[k].type == CONFIG_PARAM_SECRET)
      continue;
    argv[argc] = xcalloc(strlen(m->params[k].name) + 3, 1);
    sprintf(argv[argc++], "--%s", m->params[k].name);
    if (!boolean) argv[argc++] = xstrdup(vals[k]);
  }
  return argv;
}

/* The "NAME=value" vector (NULL-terminated) of what m's parameters give: the value, or
 * SECRET_SHOWN for a SECRET (as_env 0); or the "ENV_VAR=value" of its SECRETs only
 * (as_env 1). */
static char **param_vector(const config_module *m, char *const *vals, int as_env) {
  char **v = xcalloc(m->nparams + 1, sizeof *v);
  size_t n = 0;

  for (size_t k = 0; k < m->nparams; k++) {
    const config_param *p = &m->params[k];
    int secret = p->type == CONFIG_PARAM_SECRET;

    if (!vals[k] || (as_env && !secret)) continue;
    if (as_env && !p->env_var) {
      char fd[16];
      snprintf(fd, sizeof fd, "%u", p->fd);
      v[n++] = kv_new(fd, vals[k]);
      continue;
    }
    v[n++] = as_env ? kv_new(p->env_var, vals[k])
                    : kv_new(p->name, secret ? CONFIG_SECRET_SHOWN : vals[k]);
  }
  return v;
}

int config_module_render(char ***out_argv, char **out_cwd, char ***out_params,
                         char ***out_secret_env, const config_module *m, const char *const *names,
                         const char *const *values, const size_t *lens, size_t n, param_report *bad,
                         char *err, size_t errlen) {
  param_report own = PARAM_REPORT_INIT;
  param_report *report = bad ? bad : &own;
  char **vals = xcalloc(m->nparams, sizeof *vals);
  char **argv = NULL, *cwd = NULL;
  int rc = -EINVAL;

  if (resolve(vals, m, names, values, lens, n, report) < 0) {
    param_report_join(report, err, errlen);
    goto out;
  }
  if (!(argv = render_argv(m, vals, err, errlen))) goto out;
  if (m->cwd && !(cwd = expand(m, m->cwd, vals, err, errlen))) goto out;
  if (out_params) *out_params = param_vector(m, vals, 0);
  if (out_secret_env) *out_secret_env = param_vector(m, vals, 1);
  *out_argv = argv;
  *out_cwd = cwd;
  argv = NULL;
  cwd = NULL;
  rc = 0;

out:
  free(cwd);
  config_argv_free(argv);
  for (size_t k = 0; k < m->nparams; k++) {
    /* A secret's value leaves no copy behind in freed memory. */
    if (vals[k] && m->params[k].type == CONFIG_PARAM_SECRET)
      compat_explicit_bzero(vals[k], strlen(vals[k]));
    free(vals[k]);
  }
  free(vals);
  param_report_clear(&own);
  return rc;
}
