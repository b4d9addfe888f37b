/* fuzz_request: a request message through the server's checks, as a handler takes it
 * (server/runner.c UNPACK_OR_FAIL, health.c and admin.c alike): pbcheck_message on
 * the encoded bytes, then protobuf-c's unpack. Then, for a StartRunRequest, its
 * parameters rendered into a command (config_module_render, as sched_start calls it)
 * for the module it names, from a small configuration made for this (templates,
 * patterns, flags, a cwd) or else the built-in one.
 *
 * What must hold: a message that passes pbcheck and unpacks has every string valid
 * UTF-8; rendering succeeds exactly when no parameter is unknown, every required one
 * has a value and every value matches its pattern, and then gives the values a run
 * records: for each declared parameter the last value given, else its default.
 *
 * Input: byte 0 picks the message type (modulo the table below), the rest is the
 * encoded message. */
#include <errno.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "config.h"
#include "param.h"
#include "fuzzkit.h"
#include "grpc/health/v1/health.pb-c.h"
#include "pbcheck.h"
#include "prismq/admin/v1/admin.pb-c.h"
#include "prismq/runner/v1/runner.pb-c.h"
#include "utf8.h"

static const ProtobufCMessageDescriptor *const types[] = {
    &prismq__runner__v1__start_run_request__descriptor,
    &prismq__runner__v1__get_run_request__descriptor,
    &prismq__runner__v1__list_runs_request__descriptor,
    &prismq__runner__v1__cancel_run_request__descriptor,
    &prismq__runner__v1__wait_run_request__descriptor,
    &prismq__runner__v1__stream_output_request__descriptor,
    &prismq__runner__v1__list_modules_request__descriptor,
    &grpc__health__v1__health_check_request__descriptor,
    &prismq__admin__v1__get_stats_request__descriptor,
};
#define NTYPES (sizeof types / sizeof types[0])

/* Modules whose rendering has something to get wrong. */
static const char fuzz_yaml[] =
    "modules:\n"
    "  - id: tpl\n"
    "    argv: [\"/bin/echo\", \"{a}\", \"x{b}y{a}\", \"{{a}}\", \"}}{{\", \"{c}{c}{c}\"]\n"
    "    cwd: \"/tmp/{b}/{{literal}}\"\n"
    "    parameters:\n"
    "      - {name: a, required: true}\n"
    "      - {name: b, default: \"bee\", pattern: \"[a-z]*\"}\n"
    "      - {name: c, default: \"\"}\n"
    "  - id: flags\n"
    "    argv: [\"/bin/true\"]\n"
    "    pass_parameters: flags\n"
    "    env: {LC_ALL: C}\n"
    "    parameters:\n"
    "      - {name: n, pattern: \"[0-9]{1,4}\"}\n"
    "      - {name: mode, default: fast, pattern: \"fast|slow|x+\"}\n"
    "      - {name: _opt}\n"
    "      - {name: Req, required: true, pattern: \"[^/]*\"}\n"
    "  - id: none\n"
    "    argv: [\"/bin/true\", \"{{}}\"]\n";

static config *cfg_fuzz, *cfg_builtin;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  char err[512];
  if (config_load_string(&cfg_fuzz, fuzz_yaml, strlen(fuzz_yaml), "fuzz.yaml", err, sizeof err) !=
          0 ||
      config_load_string(&cfg_builtin, config_default_yaml, strlen(config_default_yaml), "built-in",
                         err, sizeof err) != 0)
    fz_fail("configuration: %s", err);
  return 0;
}

/* Every string of a decoded message, sub-messages (map entries) included. */
static void check_strings(const ProtobufCMessage *msg) {
  const ProtobufCMessageDescriptor *d = msg->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *member = (const char *)msg + f->offset;
    size_t count = 1;
    const void *const *elems = (const void *const *)member;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      count = *(const size_t *)((const char *)msg + f->quantifier_offset);
      elems = *(const void *const *const *)member;
    }
    for (size_t k = 0; k < count; k++) {
      if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = elems[k];
        FZ_CHECK(s && utf8_valid(s, strlen(s)), "%s.%s passed pbcheck but is not valid UTF-8",
                 d->name, f->name);
      } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && elems[k]) {
        check_strings(elems[k]);
      }
    }
  }
}

/* What the run gets for value v of p (param_check's form, CONFIG_SECRET_SHOWN for a
 * secret), malloc'd, or NULL if p refuses it; *nflags the argv elements it adds with
 * pass_parameters: flags. */
static char *run_value(const config_param *p, const char *v, size_t *nflags) {
  char *canon = NULL, why[320];
  if (param_check(&canon, p, v, why, sizeof why) < 0) return NULL;
  *nflags = p->type == CONFIG_PARAM_SECRET    ? 0
            : p->type == CONFIG_PARAM_BOOLEAN ? (strcmp(canon, "true") == 0)
                                              : 2;
  if (p->type == CONFIG_PARAM_SECRET) {
    free(canon);
    canon = strdup(CONFIG_SECRET_SHOWN);
    FZ_CHECK(canon, "strdup");
  }
  return canon;
}

/* Renders the request's parameters for its module the way sched_start does, and
 * checks the outcome against what config.h promises. */
static void render(const Prismq__Runner__V1__StartRunRequest *r) {
  const config_module *m = config_find_module(cfg_fuzz, r->module_id);
  if (!m) m = config_find_module(cfg_builtin, r->module_id);
  if (!m) return;
  size_t np = r->n_parameters;
  const char **names = malloc((np ? np : 1) * sizeof *names);
  const char **values = malloc((np ? np : 1) * sizeof *values);
  FZ_CHECK(names && values, "malloc");
  int expect_ok = 1;
  for (size_t i = 0; i < np; i++) {
    names[i] = r->parameters[i]->key;
    values[i] = r->parameters[i]->value;
    int known = 0;
    for (size_t k = 0; k < m->nparams; k++) known |= strcmp(m->params[k].name, names[i]) == 0;
    expect_ok &= known;
  }
  /* The effective values: the last one given, else the default; and what the run
   * records for each. */
  const char **eff = calloc(m->nparams ? m->nparams : 1, sizeof *eff);
  char **rec = calloc(m->nparams ? m->nparams : 1, sizeof *rec);
  FZ_CHECK(eff && rec, "calloc");
  size_t nflags = 0;
  for (size_t k = 0; k < m->nparams; k++) {
    const config_param *p = &m->params[k];
    eff[k] = p->default_value;
    for (size_t i = 0; i < np; i++)
      if (strcmp(names[i], p->name) == 0) eff[k] = values[i];
    if (eff[k]) {
      size_t n = 0;
      rec[k] = run_value(p, eff[k], &n);
      expect_ok &= rec[k] != NULL;
      nflags += n;
    } else {
      expect_ok &= !p->required;
    }
  }

  char **argv = NULL, *cwd = NULL, **params = NULL, err[512] = "";
  int rc = config_module_render(&argv, &cwd, &params, NULL, m, names, values, NULL, np, NULL, err,
                                sizeof err);
  FZ_CHECK((rc == 0) == expect_ok, "module %s: render returned %d (%s), expected %s", m->id, rc,
           err, expect_ok ? "success" : "a refusal");
  if (rc == 0) {
    size_t argc = m->argc + (m->pass_flags ? nflags : 0);
    for (size_t i = 0; i < argc; i++) FZ_CHECK(argv[i], "module %s: argv[%zu] is NULL", m->id, i);
    FZ_CHECK(!argv[argc], "module %s: argv has more than %zu elements", m->id, argc);
    FZ_CHECK((cwd != NULL) == (m->cwd != NULL), "module %s: cwd rendered wrong", m->id);
    size_t j = 0;
    for (size_t k = 0; k < m->nparams; k++) {
      if (!eff[k]) continue;
      const char *kv = params[j++];
      size_t nl = strlen(m->params[k].name);
      FZ_CHECK(kv && strncmp(kv, m->params[k].name, nl) == 0 && kv[nl] == '=' &&
                   strcmp(kv + nl + 1, rec[k]) == 0,
               "module %s: parameter %s recorded as \"%s\"", m->id, m->params[k].name,
               kv ? kv : "(none)");
    }
    FZ_CHECK(!params[j], "module %s: more parameters recorded than have values", m->id);
  } else {
    FZ_CHECK(err[0] && !argv && !cwd && !params,
             "module %s: a refusal without a message, or with outputs", m->id);
  }
  config_argv_free(argv);
  config_argv_free(params);
  free(cwd);
  for (size_t k = 0; k < m->nparams; k++) free(rec[k]);
  free(rec);
  free(eff);
  free(names);
  free(values);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const ProtobufCMessageDescriptor *desc = types[data[0] % NTYPES];
  /* An empty message reaches a handler as the call layer has it: NULL, 0 (gw_frame_next
   * gives no body for an empty one). */
  const uint8_t *req = size > 1 ? data + 1 : NULL;
  size--;
  char err[256] = "";
  int rc = pbcheck_message(desc, req, size, err, sizeof err);
  FZ_CHECK(rc == 0 || ((rc == -EINVAL || rc == -E2BIG) && err[0]),
           "pbcheck_message returned %d (%s)", rc, err);
  if (rc < 0) return 0;
  ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, size, req);
  if (!msg) return 0;
  check_strings(msg);
  if (desc == &prismq__runner__v1__start_run_request__descriptor)
    render((const Prismq__Runner__V1__StartRunRequest *)msg);
  protobuf_c_message_free_unpacked(msg, NULL);
  return 0;
}
