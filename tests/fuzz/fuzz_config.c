/* fuzz_config: the server's configuration parser (config_load_string) on any bytes.
 *
 * What must hold beyond "no crash, no leak": a refusal says why, naming the source; a
 * configuration that loads keeps config.h's promises: every module is found by its
 * id, and its templates and defaults are checked at load time, so rendering a run
 * with no parameters fails only for a missing required parameter. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzzkit.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
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
  for (size_t i = 0; i < c->nmodules; i++) check_module(c, &c->modules[i]);
  config_free(c);
  return 0;
}
