/* fuzz_config: the server's configuration parser (config_load_string) on any bytes.
 *
 * What must hold beyond "no crash, no leak": a refusal says why, naming the source; a
 * configuration that loads keeps config.h's promises: every module is found by its
 * id, and its templates and defaults are checked at load time, so rendering a run
 * with no parameters fails only for a missing required parameter. The input is also
 * the output of a run whose progress is read (with each loaded module's pattern, and in
 * the descriptor's format): updates come in order within their reads, with numbers and
 * messages as progress.h promises. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzzkit.h"
#include "progress.h"
#include "utf8.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  return 0;
}

static void check_module(const config *c, const config_module *m) {
  FZ_CHECK(config_find_module(c, m->id) == m, "module %s is not found by its id", m->id);
  FZ_CHECK(m->argc >= 1 && m->argv[0][0] && !m->argv[m->argc], "module %s: bad argv", m->id);
  int required = 0;
  for (size_t k = 0; k < m->nparams; k++) {
    const config_param *p = &m->params[k];
    FZ_CHECK(!(p->required && p->default_value), "module %s: required parameter %s has a default",
             m->id, p->name);
    required |= p->required;
  }
  char **argv = NULL, *cwd = NULL, **params = NULL, err[512] = "";
  int rc = config_module_render(&argv, &cwd, &params, NULL, m, NULL, NULL, NULL, 0, NULL, err,
                                sizeof err);
  if (required)
    FZ_CHECK(rc < 0 && strstr(err, "missing required parameter"),
             "module %s: no parameters gave %d (%s)", m->id, rc, err);
  else
    FZ_CHECK(rc == 0, "module %s loaded, but its defaults do not render: %s", m->id, err);
  config_argv_free(argv);
  config_argv_free(params);
  free(cwd);
}

/* data as the output of a run, in two reads, through a scanner of pattern pat (NULL:
 * the descriptor's format). */
static void check_progress(const progress_pattern *pat, const uint8_t *data, size_t size) {
  progress_scan *s = progress_scan_new(pat);
  Prismq__Runner__V1__Progress pg = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  size_t half = size / 2, len[2] = {half, size - half};
  const uint8_t *part[2] = {data, data + half};
  for (int i = 0; i < 2; i++) {
    size_t pos = 0, last = 0;
    while (progress_scan_next(s, part[i], len[i], &pos, &pg)) {
      FZ_CHECK(pos > last && pos <= len[i], "an update at %zu after %zu, in %zu bytes", pos, last,
               len[i]);
      FZ_CHECK(isfinite(pg.done) && pg.done >= 0 && isfinite(pg.total) && pg.total >= 0,
               "an update of %g/%g", pg.done, pg.total);
      size_t n = strlen(pg.message);
      FZ_CHECK(n <= PROGRESS_MESSAGE_MAX && utf8_valid(pg.message, n), "a bad message");
      last = pos;
    }
  }
  progress_scan_end(s, &pg);
  progress_scan_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_progress(NULL, data, size);
  config *c = NULL;
  char err[1024] = "";
  int rc = config_load_string(&c, (const char *)data, size, "fuzz.yaml", err, sizeof err);
  if (rc != 0) {
    FZ_CHECK(rc == -EINVAL && !c, "config_load_string returned %d", rc);
    FZ_CHECK(strncmp(err, "fuzz.yaml", 9) == 0, "a refusal that does not name its source: \"%s\"",
             err);
    return 0;
  }
  FZ_CHECK(c && c->nlisten >= 1 && c->listen[0] && !c->listen[c->nlisten] && c->data_dir,
           "a loaded configuration without listen or data_dir");
  FZ_CHECK(c->limits.max_concurrent >= 1 && c->limits.max_connections >= 1, "limits out of range");
  for (size_t i = 0; i < c->nmodules; i++) {
    check_module(c, &c->modules[i]);
    if (c->modules[i].progress) check_progress(c->modules[i].progress, data, size);
  }
  config_free(c);
  return 0;
}
