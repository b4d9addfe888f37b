/* Command-line parsing shared by the commands: usage errors, durations, numbers,
 * KEY=VALUE maps, status names. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

static void print_usage_line(const struct cli_cmd *cmd, FILE *f) {
  fprintf(f, "usage: prismq %s%s%s\n", cmd->name, cmd->args[0] ? " " : "", cmd->args);
}

void cli_print_help(const struct cli_cmd *cmd, FILE *f) {
  print_usage_line(cmd, f);
  fprintf(f, "\n%s.\n\n%s", cmd->summary, cmd->help);
}

int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...) {
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "prismq %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
  print_usage_line(cmd, stderr);
  fprintf(stderr, "Try 'prismq %s --help'.\n", cmd->name);
  return CLI_EXIT_USAGE;
}

int cli_opt_other(const struct cli_cmd *cmd, int opt) {
  if (opt == 'h') {
    cli_print_help(cmd, stdout);
    return CLI_EXIT_OK;
  }
  return cli_usage_error(cmd, NULL);
}

int cli_check_args(const struct cli_cmd *cmd, int argc, char **argv, int min, int max) {
  int n = argc - optind;
  if (n < min) return cli_usage_error(cmd, "missing argument");
  if (n > max) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + max]);
  return 0;
}

int cli_parse_uint(uint64_t *out, const char *s, uint64_t max) {
  uint64_t v = 0;
  if (!*s) return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -EINVAL;
    unsigned d = (unsigned)(*s - '0');
    if (v > max / 10 || (v == max / 10 && d > max % 10)) return -ERANGE;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static int parse_duration(uint32_t *out_ms, const char *s) {
  static const struct {
    const char *name;
    uint64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  if (strcmp(s, "0") == 0) {
    *out_ms = 0;
    return 0;
  }
  if (!*s) return -EINVAL;
  uint64_t total = 0;
  while (*s) {
    uint64_t v = 0;
    const char *digits = s;
    /* Digits past UINT32_MAX cannot make a valid duration: stop counting there. */
    while (*s >= '0' && *s <= '9') {
      if (v <= UINT32_MAX) v = v * 10 + (uint64_t)(*s - '0');
      s++;
    }
    if (s == digits) return -EINVAL;
    size_t u = 0;
    while (u < sizeof units / sizeof units[0] &&
           strncmp(s, units[u].name, strlen(units[u].name)) != 0)
      u++;
    if (u == sizeof units / sizeof units[0]) return -EINVAL;
    s += strlen(units[u].name);
    if (v > UINT32_MAX) return -ERANGE;
    total += v * units[u].ms;
    if (total >= UINT32_MAX) return -ERANGE;
  }
  *out_ms = (uint32_t)total;
  return 0;
}

int cli_opt_duration(uint32_t *out_ms, const struct cli_cmd *cmd, const char *name,
                     const char *arg) {
  int rc = parse_duration(out_ms, arg);
  if (rc == -ERANGE) return cli_usage_error(cmd, "--%s %s: too long (at most 49 days)", name, arg);
  if (rc < 0)
    return cli_usage_error(cmd, "--%s %s: not a duration (e.g. 500ms, 30s, 5m, 1h)", name, arg);
  return 0;
}

int cli_opt_map(cli_map *m, const ProtobufCMessageDescriptor *entry, const struct cli_cmd *cmd,
                const char *name, char *arg) {
  char *eq = strchr(arg, '=');
  if (!eq || eq == arg) return cli_usage_error(cmd, "--%s %s: want KEY=VALUE", name, arg);
  ProtobufCMessage *e = cli_xmalloc(entry->sizeof_message);
  entry->message_init(e);
  *eq = '\0';
  /* Map entries are generated with the fields key (1) and value (2), both strings
   * here: set them through the descriptor, as the three entry types differ. */
  *(char **)((char *)e + entry->fields[0].offset) = arg;
  *(char **)((char *)e + entry->fields[1].offset) = eq + 1;
  m->items = cli_xrealloc(m->items, (m->n + 1) * sizeof *m->items);
  m->items[m->n++] = e;
  return 0;
}

void cli_map_clear(cli_map *m) {
  for (size_t i = 0; i < m->n; i++) free(m->items[i]);
  free(m->items);
  m->items = NULL;
  m->n = 0;
}

int cli_parse_status(int *out, const char *s) {
  static const char prefix[] = "RUN_STATUS_";
  const ProtobufCEnumDescriptor *d = &prismq__runner__v1__run_status__descriptor;
  if (strncasecmp(s, prefix, sizeof prefix - 1) == 0) s += sizeof prefix - 1;
  for (unsigned i = 0; i < d->n_values; i++) {
    const char *name = d->values[i].name + sizeof prefix - 1;
    if (d->values[i].value != 0 && strcasecmp(s, name) == 0) {
      *out = d->values[i].value;
      return 0;
    }
  }
  return -EINVAL;
}
