/* Unit tests for server/config: loading (every field, defaults, each class of error
 * with its line; TLS, unix socket permissions and authz rules too), the built-in
 * configuration, and rendering a run request. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "authz.h"
#include "config.h"
#include "param.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The example from the product issue. */
static const char example_yaml[] =
    "listen: [\"tcp://127.0.0.1:50051\", \"unix:///tmp/prismq.sock\"]\n"
    "data_dir: ./var\n"
    "limits: {max_concurrent: 8, max_queued: 10000, max_memory_percent: 80, "
    "min_available_memory_mb: 0,\n"
    "         max_cpu_percent: 0, max_connections: 500, output_max_bytes: 1073741824}  # 0 = check "
    "off\n"
    "modules:\n"
    "  - id: emit\n"
    "    name: Emit bytes\n"
    "    description: Writes N zero bytes to stdout\n"
    "    argv: [\"head\", \"-c\", \"{bytes}\", \"/dev/zero\"]\n"
    "    cwd: /tmp\n"
    "    env: {LC_ALL: C}\n"
    "    timeout_ms: 600000\n"
    "    max_concurrent: 4\n"
    "    parameters:\n"
    "      - {name: bytes, required: true, pattern: \"^[0-9]+$\", description: how many bytes}\n"
    "      - {name: label, default: \"none\"}\n"
    "  - id: report\n"
    "    name: Python report script\n"
    "    argv: [\"python3\", \"scripts/report.py\"]\n"
    "    pass_parameters: flags        # appends --name value per parameter, in declared order\n"
    "    parameters:\n"
    "      - {name: since, required: true}\n";

/* Sentinel: failing calls must leave their outputs alone. */
static char sentinel_byte;
#define SENTINEL ((void *)&sentinel_byte)

static config *load_ok(const char *yaml) {
  config *c = NULL;
  char err[512] = "";
  int rc = config_load_string(&c, yaml, strlen(yaml), "t.yaml", err, sizeof err);

  if (rc != 0) fail_msg("load failed (%d): %s", rc, err);
  assert_non_null(c);
  return c;
}

static void assert_strv(char **got, const char *const *want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    assert_non_null(got[i]);
    assert_string_equal(got[i], want[i]);
  }
  assert_null(got[n]);
}

static void test_example_loads_all_fields(void **state) {
  (void)state;
  config *c = load_ok(example_yaml);
  const config_module *m;

  assert_int_equal(c->nlisten, 2);
  assert_strv(c->listen, (const char *[]){"tcp://127.0.0.1:50051", "unix:///tmp/prismq.sock"}, 2);
  assert_string_equal(c->data_dir, "./var");
  assert_int_equal(c->limits.max_concurrent, 8);
  assert_int_equal(c->limits.max_queued, 10000);
  assert_int_equal(c->limits.max_memory_percent, 80);
  assert_int_equal(c->limits.min_available_memory_mb, 0);
  assert_int_equal(c->limits.max_cpu_percent, 0);
  assert_int_equal(c->limits.max_connections, 500);
  assert_true(c->limits.output_max_bytes == 1073741824u);
  assert_int_equal(c->nmodules, 2);

  m = &c->modules[0];
  assert_string_equal(m->id, "emit");
  assert_string_equal(m->name, "Emit bytes");
  assert_string_equal(m->description, "Writes N zero bytes to stdout");
  assert_int_equal(m->argc, 4);
  assert_strv(m->argv, (const char *[]){"head", "-c", "{bytes}", "/dev/zero"}, 4);
  assert_string_equal(m->cwd, "/tmp");
  assert_int_equal(m->nenv, 1);
  assert_strv(m->env, (const char *[]){"LC_ALL=C"}, 1);
  assert_int_equal(m->timeout_ms, 600000);
  assert_int_equal(m->max_concurrent, 4);
  assert_false(m->pass_flags);
  assert_int_equal(m->nparams, 2);
  assert_string_equal(m->params[0].name, "bytes");
  assert_true(m->params[0].required);
  assert_null(m->params[0].default_value);
  assert_string_equal(m->params[0].description, "how many bytes");
  assert_string_equal(m->params[0].pattern, "^[0-9]+$");
  assert_string_equal(m->params[1].name, "label");
  assert_false(m->params[1].required);
  assert_string_equal(m->params[1].default_value, "none");
  assert_string_equal(m->params[1].description, "");
  assert_null(m->params[1].pattern);

  m = &c->modules[1];
  assert_string_equal(m->id, "report");
  assert_string_equal(m->name, "Python report script");
  assert_string_equal(m->description, "");
  assert_strv(m->argv, (const char *[]){"python3", "scripts/report.py"}, 2);
  assert_null(m->cwd);
  assert_int_equal(m->nenv, 0);
  assert_null(m->env[0]);
  assert_int_equal(m->timeout_ms, 0);
  assert_int_equal(m->max_concurrent, 0);
  assert_true(m->pass_flags);
  assert_int_equal(m->nparams, 1);
  assert_string_equal(m->params[0].name, "since");
  assert_true(m->params[0].required);

  assert_ptr_equal(config_find_module(c, "report"), &c->modules[1]);
  assert_ptr_equal(config_find_module(c, "emit"), &c->modules[0]);
  assert_null(config_find_module(c, "emi"));
  assert_null(config_find_module(c, ""));
  config_free(c);
}

/* No tls, unix_socket, authz or allow_insecure_remote given. */
static void assert_security_defaults(const config *c) {
  assert_false(c->allow_insecure_remote);
  assert_false(c->has_tls);
  assert_null(c->tls.cert);
  assert_null(c->tls.key);
  assert_null(c->tls.client_ca);
  assert_null(c->tls.crl);
  assert_false(c->tls.require_client_cert);
  assert_int_equal(c->tls.handshake_timeout_ms, 10000);
  assert_int_equal(c->unix_mode, 0600);
  assert_null(c->unix_group);
  assert_false(c->has_authz);
  assert_null(c->authz);
  assert_int_equal(c->nauthz, 0);
}

static void test_defaults(void **state) {
  (void)state;
  static const char *const docs[] = {"",           "---\n",       "# nothing\n", "modules: []\n",
                                     "modules:\n", "limits: {}\n"};

  for (size_t i = 0; i < ARRAY_LEN(docs); i++) {
    config *c = load_ok(docs[i]);

    assert_int_equal(c->nlisten, 1);
    assert_strv(c->listen, (const char *[]){"tcp://127.0.0.1:50051"}, 1);
    assert_string_equal(c->data_dir, "./var");
    assert_int_equal(c->limits.max_concurrent, 8);
    assert_int_equal(c->limits.max_queued, 10000);
    assert_int_equal(c->limits.max_memory_percent, 0);
    assert_int_equal(c->limits.min_available_memory_mb, 0);
    assert_int_equal(c->limits.max_cpu_percent, 0);
    assert_int_equal(c->limits.max_connections, 10000);
    assert_int_equal(c->limits.max_streams_per_connection, 100);
    assert_int_equal(c->limits.max_header_list_bytes, 16384);
    assert_int_equal(c->limits.max_message_bytes, 4194304);
    assert_int_equal(c->limits.idle_timeout_ms, 300000);
    assert_int_equal(c->limits.max_queued_per_identity, 0);
    assert_true(c->limits.output_max_bytes == (uint64_t)1 << 30);
    assert_int_equal(c->nmodules, 0);
    assert_security_defaults(c);
    config_free(c);
  }
}

static void test_scalars(void **state) {
  (void)state;
  /* Numbers and booleans written as strings elsewhere stay strings; limits at their
   * extremes; a partial limits mapping keeps the other defaults. */
  config *c = load_ok(
      "limits: {max_queued: 0, output_max_bytes: 18446744073709551615,\n"
      "         max_cpu_percent: 100}\n"
      "modules:\n"
      "  - id: a.b-C_9\n"
      "    argv: [prog, '', 1024, true]\n"
      "    env: {N: 5, EMPTY: ''}\n"
      "    pass_parameters: none\n"
      "    parameters:\n"
      "      - {name: _x9, required: false, default: 12}\n"
      "      - {name: y, required: FALSE}\n");
  const config_module *m = &c->modules[0];

  assert_int_equal(c->limits.max_queued, 0);
  assert_true(c->limits.output_max_bytes == UINT64_MAX);
  assert_int_equal(c->limits.max_cpu_percent, 100);
  assert_int_equal(c->limits.max_concurrent, 8);
  assert_string_equal(m->id, "a.b-C_9");
  assert_string_equal(m->name, "a.b-C_9");
  assert_strv(m->argv, (const char *[]){"prog", "", "1024", "true"}, 4);
  assert_strv(m->env, (const char *[]){"N=5", "EMPTY="}, 2);
  assert_false(m->pass_flags);
  assert_string_equal(m->params[0].default_value, "12");
  assert_false(m->params[0].required);
  assert_false(m->params[1].required);
  config_free(c);
}

static void test_tls(void **state) {
  (void)state;
  config *c = load_ok(
      "allow_insecure_remote: true\n"
      "tls:\n"
      "  cert: /etc/prismq/server.pem\n"
      "  key: /etc/prismq/server.key\n"
      "  client_ca: /etc/prismq/ca.pem\n"
      "  require_client_cert: true\n"
      "  crl: /etc/prismq/crl.pem\n"
      "  handshake_timeout_ms: 600000\n");

  assert_true(c->allow_insecure_remote);
  assert_true(c->has_tls);
  assert_string_equal(c->tls.cert, "/etc/prismq/server.pem");
  assert_string_equal(c->tls.key, "/etc/prismq/server.key");
  assert_string_equal(c->tls.client_ca, "/etc/prismq/ca.pem");
  assert_string_equal(c->tls.crl, "/etc/prismq/crl.pem");
  assert_true(c->tls.require_client_cert);
  assert_int_equal(c->tls.handshake_timeout_ms, 600000);
  assert_false(c->has_authz);
  config_free(c);

  /* The least a tls section needs; the files are not opened at load. */
  c = load_ok(
      "allow_insecure_remote: False\n"
      "tls: {cert: /nonexistent/c.pem, key: k.pem, handshake_timeout_ms: 1,\n"
      "      require_client_cert: false}\n");
  assert_false(c->allow_insecure_remote);
  assert_true(c->has_tls);
  assert_string_equal(c->tls.cert, "/nonexistent/c.pem");
  assert_string_equal(c->tls.key, "k.pem");
  assert_null(c->tls.client_ca);
  assert_null(c->tls.crl);
  assert_false(c->tls.require_client_cert);
  assert_int_equal(c->tls.handshake_timeout_ms, 1);
  config_free(c);

  /* A client_ca alone verifies certificates that are offered without requiring one. */
  c = load_ok("tls: {cert: c, key: k, client_ca: ca}\n");
  assert_string_equal(c->tls.client_ca, "ca");
  assert_false(c->tls.require_client_cert);
  assert_int_equal(c->tls.handshake_timeout_ms, 10000);
  config_free(c);
}

static void test_unix_socket(void **state) {
  (void)state;
  /* Octal whatever the style; the leading 0 is optional. */
  static const struct {
    const char *yaml;
    uint32_t mode;
  } modes[] = {
      {"unix_socket: {mode: 0660}\n", 0660},
      {"unix_socket: {mode: \"0660\"}\n", 0660},
      {"unix_socket: {mode: '0750'}\n", 0750},
      {"unix_socket: {mode: 660}\n", 0660},
      {"unix_socket: {mode: 0}\n", 0},
      {"unix_socket: {mode: 0000}\n", 0},
      {"unix_socket: {mode: 0777}\n", 0777},
      {"unix_socket: {mode: 00600}\n", 0600},
      {"unix_socket: {}\n", 0600},
      {"unix_socket: {group: g}\n", 0600},
  };

  for (size_t i = 0; i < ARRAY_LEN(modes); i++) {
    config *c = load_ok(modes[i].yaml);

    if (c->unix_mode != modes[i].mode)
      fail_msg("case %zu: mode %o, want %o", i, c->unix_mode, modes[i].mode);
    config_free(c);
  }

  config *c = load_ok("unix_socket:\n  mode: \"0660\"\n  group: prismq\n");

  assert_int_equal(c->unix_mode, 0660);
  assert_string_equal(c->unix_group, "prismq");
  config_free(c);
  /* A numeric gid stays a string: prismqd tells the two apart. */
  c = load_ok("unix_socket: {group: 1000}\n");
  assert_string_equal(c->unix_group, "1000");
  assert_int_equal(c->unix_mode, 0600);
  config_free(c);
}

static void test_lifecycle(void **state) {
  (void)state;
  config *c = load_ok("");

  /* Defaults: sweep hourly, keep 7 days and 100000 runs; wait 30 s; cgroups where possible. */
  assert_int_equal(c->retention.sweep_interval_ms, 3600000);
  assert_int_equal(c->retention.max_age_ms, 7ull * 86400000);
  assert_int_equal(c->retention.max_runs, 100000);
  assert_int_equal(c->shutdown.cancel_runs, 0);
  assert_int_equal(c->shutdown.grace_ms, 30000);
  assert_string_equal(c->cgroup_root, "auto");
  assert_int_equal(c->http.ui, 1);
  assert_int_equal(c->http.metrics, 1);
  assert_int_equal(c->http.request_timeout_ms, 30000);
  config_free(c);

  c = load_ok("http: {ui: false, metrics: false, request_timeout_ms: 5000}\n");
  assert_int_equal(c->http.ui, 0);
  assert_int_equal(c->http.metrics, 0);
  assert_int_equal(c->http.request_timeout_ms, 5000);
  config_free(c);

  c = load_ok(
      "retention: {sweep_interval: 30s, max_age: 2d, max_runs: 0}\n"
      "shutdown: {runs: cancel, grace_ms: 0}\n"
      "cgroups: {root: /sys/fs/cgroup/x}\n"
      "modules:\n  - {id: a, argv: [x], memory_max: 1048576, cpu_max: 150}\n");
  assert_int_equal(c->retention.sweep_interval_ms, 30000);
  assert_int_equal(c->retention.max_age_ms, 2ull * 86400000);
  assert_int_equal(c->retention.max_runs, 0);
  assert_int_equal(c->shutdown.cancel_runs, 1);
  assert_int_equal(c->shutdown.grace_ms, 0);
  assert_string_equal(c->cgroup_root, "/sys/fs/cgroup/x");
  assert_int_equal(c->modules[0].memory_max, 1048576);
  assert_int_equal(c->modules[0].cpu_max_percent, 150);
  config_free(c);

  /* Every unit, and a plain number of milliseconds. */
  static const struct {
    const char *v;
    uint64_t ms;
  } durations[] = {{"0", 0},       {"250", 250},    {"250ms", 250},  {"5s", 5000},
                   {"2m", 120000}, {"1h", 3600000}, {"1d", 86400000}};
  for (size_t i = 0; i < ARRAY_LEN(durations); i++) {
    char yaml[64];

    snprintf(yaml, sizeof yaml, "retention: {max_age: %s}\n", durations[i].v);
    c = load_ok(yaml);
    if (c->retention.max_age_ms != durations[i].ms)
      fail_msg("case %s: %llu ms", durations[i].v, (unsigned long long)c->retention.max_age_ms);
    config_free(c);
  }
}

static void test_authz_rules(void **state) {
  (void)state;
  config *c = load_ok(
      "authz:\n"
      "  - identity: \"spiffe://prismq/ops/*\"\n"
      "    modules: [\"*\"]\n"
      "    roles: [read, read_all, cancel_any, admin]\n"
      "  - identity: CN=ci\n"
      "    modules: [emit, \"build-*\"]\n"
      "    roles: [read, read]\n"
      "  - identity: \"*\"\n"
      "  - identity: x\n"
      "    modules: []\n"
      "    roles: []\n");
  const config_authz_rule *r = c->authz;

  assert_true(c->has_authz);
  assert_int_equal(c->nauthz, 4);
  assert_string_equal(r[0].identity, "spiffe://prismq/ops/*");
  assert_int_equal(r[0].nmodules, 1);
  assert_strv(r[0].modules, (const char *[]){"*"}, 1);
  assert_int_equal(r[0].roles, AUTHZ_READ | AUTHZ_READ_ALL | AUTHZ_CANCEL_ANY | AUTHZ_ADMIN);
  assert_string_equal(r[1].identity, "CN=ci");
  assert_int_equal(r[1].nmodules, 2);
  assert_strv(r[1].modules, (const char *[]){"emit", "build-*"}, 2);
  assert_int_equal(r[1].roles, AUTHZ_READ);
  /* Neither modules nor roles: an empty (but NULL-terminated) list and no roles. */
  for (size_t i = 2; i < 4; i++) {
    assert_int_equal(r[i].nmodules, 0);
    assert_non_null(r[i].modules);
    assert_null(r[i].modules[0]);
    assert_int_equal(r[i].roles, 0);
  }
  assert_false(c->has_tls);
  config_free(c);

  /* An authz key with no rules is still an authz section. */
  static const char *const empty[] = {"authz: []\n", "authz:\n", "authz: ~\n"};

  for (size_t i = 0; i < ARRAY_LEN(empty); i++) {
    c = load_ok(empty[i]);
    assert_true(c->has_authz);
    assert_int_equal(c->nauthz, 0);
    config_free(c);
  }
}

/* The built-in configuration: its settings, and every demo module runs without
 * parameters. */
static void test_default_config(void **state) {
  (void)state;
  static const struct {
    const char *id;
    const char *argv[6];
  } want[] = {
      {"echo", {"echo", "hello"}},
      {"emit", {"head", "-c", "1024", "/dev/zero"}},
      {"sleep", {"sleep", "1"}},
      {"count", {"seq", "1", "10"}},
      {"fail", {"ls", "/nonexistent"}},
      {"list", {"ls", "-l", "/usr/share/doc"}},
      {"secret", {"sh", "-c", "echo \"the token has ${#TOKEN} bytes\""}},
      {"progress",
       {"sh", "-c",
        "i=0; while [ \"$i\" -lt \"$1\" ]; do i=$((i + 1)); sleep 0.2; echo \"PROGRESS $i/$1 "
        "step $i done\"; done",
        "progress", "10"}},
      {"stages",
       {"sh", "-c",
        "i=0; while [ \"$i\" -lt \"$1\" ]; do i=$((i + 1)); echo \"stage $i\"; sleep 0.2; echo "
        "\"$((i * 100 / $1))% stage $i of $1\" >&\"$PRISMQ_PROGRESS_FD\"; done",
        "stages", "5"}},
  };
  config *c = load_ok(config_default_yaml);

  assert_int_equal(c->nlisten, 1);
  assert_string_equal(c->listen[0], "tcp://127.0.0.1:50051");
  assert_string_equal(c->data_dir, "./var");
  assert_int_equal(c->limits.max_concurrent, 8);
  assert_int_equal(c->nmodules, ARRAY_LEN(want));
  assert_security_defaults(c);
  for (size_t i = 0; i < ARRAY_LEN(want); i++) {
    const config_module *m = config_find_module(c, want[i].id);
    char **argv = NULL, *cwd = SENTINEL;
    char err[256];
    size_t n = 0;

    assert_non_null(m);
    /* Every demo module runs with no parameters at all. */
    assert_int_equal(config_module_render(&argv, &cwd, NULL, NULL, m, NULL, NULL, NULL, 0, NULL,
                                          err, sizeof err),
                     0);
    while (want[i].argv[n]) n++;
    assert_strv(argv, want[i].argv, n);
    assert_null(cwd);
    config_argv_free(argv);
  }
  /* One reports progress with a pattern, one on its descriptor. */
  assert_non_null(config_find_module(c, "progress")->progress);
  assert_int_equal(config_find_module(c, "progress")->progress_fd, 0);
  assert_null(config_find_module(c, "stages")->progress);
  assert_int_equal(config_find_module(c, "stages")->progress_fd, 1);
  config_free(c);
}

/* The demo types hold: numbers in range, fail stays under /nonexistent, list's flags. */
static void test_default_config_values(void **state) {
  (void)state;
  config *c = load_ok(config_default_yaml);
  static const struct {
    const char *id, *name, *value;
    size_t pos;       /* where the value lands in argv; 0 = refused */
    const char *want; /* what lands there */
  } vals[] = {
      {"sleep", "seconds", "0.5", 1, "0.5"},
      {"sleep", "seconds", "1e3", 0, NULL},
      {"sleep", "seconds", "-1", 0, NULL},
      {"sleep", "seconds", "2.", 1, "2."},
      {"count", "n", "3", 2, "3"},
      {"count", "n", "-3", 0, NULL},
      {"count", "n", "0", 0, NULL},
      {"emit", "bytes", "7", 2, "7"},
      {"emit", "bytes", "10x", 0, NULL},
      {"fail", "path", "/nonexistent/x", 1, "/nonexistent/x"},
      {"fail", "path", "x/y", 1, "/nonexistent/x/y"},
      {"fail", "path", "-la", 1, "/nonexistent/-la"},
      {"fail", "path", "/nonexistent/../etc", 0, NULL},
      {"fail", "path", "/etc", 0, NULL},
      {"echo", "message", "a b; $(id)", 1, "a b; $(id)"},
      {"list", "all", "yes", 3, "--all"},
      {"list", "sort", "size", 4, "size"},
      {"list", "sort", "name", 0, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(vals); i++) {
    char **argv = NULL, *cwd = NULL;
    char err[256];
    int rc = config_module_render(&argv, &cwd, NULL, NULL, config_find_module(c, vals[i].id),
                                  &vals[i].name, &vals[i].value, NULL, 1, NULL, err, sizeof err);

    assert_int_equal(rc, vals[i].pos ? 0 : -EINVAL);
    if (rc == 0) assert_string_equal(argv[vals[i].pos], vals[i].want);
    config_argv_free(argv);
  }
  config_free(c);
}

/* A module with executor slurm (line 5) and line 6 as given. */
#define SLURM_MOD(line6)                                                                      \
  "slurm: {spool_dir: /srv/spool}\nmodules:\n  - id: m\n    argv: [x]\n    executor: slurm\n" \
  "    " line6 "\n"

/* A module's slurm block as it is when none is given: nothing set, empty vectors. */
static void assert_no_slurm_job(const config_module *m) {
  assert_null(m->slurm.partition);
  assert_null(m->slurm.account);
  assert_null(m->slurm.qos);
  assert_int_equal(m->slurm.cpus, 0);
  assert_null(m->slurm.memory);
  assert_int_equal(m->slurm.time_limit_min, 0);
  assert_int_equal(m->slurm.nsbatch_args, 0);
  assert_non_null(m->slurm.sbatch_args);
  assert_null(m->slurm.sbatch_args[0]);
  assert_int_equal(m->slurm.nenv, 0);
  assert_non_null(m->slurm.env);
  assert_null(m->slurm.env[0]);
}

/* The slurm section and the modules' executor and slurm keys (their errors are in
 * errors[]). */
/* Defaults, also without a slurm section; a module runs locally. */
static void test_slurm_defaults(void **state) {
  (void)state;
  config *c = load_ok("modules:\n  - {id: a, argv: [x]}\n");
  const config_module *m = &c->modules[0];

  assert_null(c->slurm.spool_dir);
  assert_int_equal(c->slurm.poll_interval_ms, 1000);
  assert_int_equal(c->slurm.max_jobs, 1000);
  assert_null(c->slurm.bin_dir);
  assert_int_equal(m->executor, CONFIG_EXEC_LOCAL);
  assert_no_slurm_job(m);
  config_free(c);
  c = load_ok("slurm: {}\n");
  assert_null(c->slurm.spool_dir);
  assert_int_equal(c->slurm.poll_interval_ms, 1000);
  assert_int_equal(c->slurm.max_jobs, 1000);
  assert_null(c->slurm.bin_dir);
  config_free(c);
}

/* A whole slurm section and modules of either executor. */
static void test_slurm_full(void **state) {
  (void)state;
  config *c = load_ok(
      "slurm:\n"
      "  spool_dir: /srv/prismq/spool\n"
      "  poll_interval: 2s\n"
      "  max_jobs: 50\n"
      "  bin_dir: /opt/slurm/bin\n"
      "modules:\n"
      "  - id: sim\n"
      "    argv: [sim, \"{n}\"]\n"
      "    executor: slurm\n"
      "    env: {LC_ALL: C}\n"
      "    parameters:\n"
      "      - {name: n, default: \"1\"}\n"
      "      - {name: token, type: secret, env_var: TOKEN}\n"
      "    slurm:\n"
      "      partition: gpu\n"
      "      account: physics\n"
      "      qos: high\n"
      "      cpus: 4\n"
      "      memory: 4G\n"
      "      time_limit: 90s\n"
      "      sbatch_args: [\"--constraint=fast\", \"--gres=gpu:1\"]\n"
      "      env: {OMP_NUM_THREADS: 4, EMPTY: ''}\n"
      "  - {id: here, argv: [x], executor: local, memory_max: 1048576}\n"
      "  - id: small\n"
      "    argv: [x]\n"
      "    executor: slurm\n"
      "    slurm: {memory: 1000}\n"
      "  - {id: bare, argv: [x], executor: slurm}\n");
  assert_string_equal(c->slurm.spool_dir, "/srv/prismq/spool");
  assert_int_equal(c->slurm.poll_interval_ms, 2000);
  assert_int_equal(c->slurm.max_jobs, 50);
  assert_string_equal(c->slurm.bin_dir, "/opt/slurm/bin");
  const config_module *m = &c->modules[0];
  assert_int_equal(m->executor, CONFIG_EXEC_SLURM);
  assert_string_equal(m->slurm.partition, "gpu");
  assert_string_equal(m->slurm.account, "physics");
  assert_string_equal(m->slurm.qos, "high");
  assert_int_equal(m->slurm.cpus, 4);
  assert_string_equal(m->slurm.memory, "4G");
  assert_int_equal(m->slurm.time_limit_min, 2); /* 90 s, rounded up */
  assert_int_equal(m->slurm.nsbatch_args, 2);
  assert_strv(m->slurm.sbatch_args, (const char *[]){"--constraint=fast", "--gres=gpu:1"}, 2);
  assert_int_equal(m->slurm.nenv, 2);
  assert_strv(m->slurm.env, (const char *[]){"OMP_NUM_THREADS=4", "EMPTY="}, 2);
  assert_strv(m->env, (const char *[]){"LC_ALL=C"}, 1);
  m = &c->modules[1];
  assert_int_equal(m->executor, CONFIG_EXEC_LOCAL);
  assert_int_equal(m->memory_max, 1048576);
  assert_no_slurm_job(m);
  m = &c->modules[2];
  assert_int_equal(m->executor, CONFIG_EXEC_SLURM);
  assert_string_equal(m->slurm.memory, "1000");
  assert_int_equal(m->slurm.nsbatch_args, 0);
  assert_non_null(m->slurm.sbatch_args);
  assert_non_null(m->slurm.env);
  m = &c->modules[3];
  assert_int_equal(m->executor, CONFIG_EXEC_SLURM);
  assert_no_slurm_job(m);
  config_free(c);
}

/* Each value at and near its bounds. */
static void test_slurm_bounds(void **state) {
  (void)state;
  static const struct {
    const char *fmt, *v;
    uint32_t want; /* the value loaded; for memory, its length */
    int field;     /* 0 time_limit_min, 1 memory, 2 poll_interval_ms */
  } values[] = {
      {SLURM_MOD("slurm: {time_limit: %s}"), "1m", 1, 0},
      {SLURM_MOD("slurm: {time_limit: %s}"), "60000", 1, 0},
      {SLURM_MOD("slurm: {time_limit: %s}"), "60001", 2, 0},
      {SLURM_MOD("slurm: {time_limit: %s}"), "90s", 2, 0},
      {SLURM_MOD("slurm: {time_limit: %s}"), "1h", 60, 0},
      {SLURM_MOD("slurm: {time_limit: %s}"), "365d", 525600, 0},
      {SLURM_MOD("slurm: {memory: %s}"), "512M", 4, 1},
      {SLURM_MOD("slurm: {memory: %s}"), "\"1T\"", 2, 1},
      {SLURM_MOD("slurm: {memory: %s}"), "16K", 3, 1},
      {SLURM_MOD("slurm: {memory: %s}"), "123456789012345", 15, 1},
      {"slurm: {poll_interval: %s}\n", "100", 100, 2},
      {"slurm: {poll_interval: %s}\n", "250ms", 250, 2},
      {"slurm: {poll_interval: %s}\n", "10m", 600000, 2},
  };
  for (size_t i = 0; i < ARRAY_LEN(values); i++) {
    char yaml[256];
    uint32_t got;

    snprintf(yaml, sizeof yaml, values[i].fmt, values[i].v);
    config *c = load_ok(yaml);
    got = values[i].field == 0   ? c->modules[0].slurm.time_limit_min
          : values[i].field == 1 ? (uint32_t)strlen(c->modules[0].slurm.memory)
                                 : c->slurm.poll_interval_ms;
    if (got != values[i].want) fail_msg("case %s: %u, want %u", values[i].v, got, values[i].want);
    config_free(c);
  }
}

/* sbatch arguments that leave alone what prismqd sets (the refused ones: errors[]). */
static void test_slurm_sbatch_args(void **state) {
  (void)state;
  static const char *const fine[] = {
      "--constraint=fast", "--gres=gpu:1", "--time-min=5", "--exclusive", "--exclude=n1",
      "--partition=debug", "-c4",          "-pdebug",      "-H",          "-N1",
      "--mail-type=END",   "-vc2"};
  for (size_t i = 0; i < ARRAY_LEN(fine); i++) {
    char yaml[256];

    snprintf(yaml, sizeof yaml, SLURM_MOD("slurm: {sbatch_args: [\"%s\"]}"), fine[i]);
    config *c = load_ok(yaml);
    assert_int_equal(c->modules[0].slurm.nsbatch_args, 1);
    assert_string_equal(c->modules[0].slurm.sbatch_args[0], fine[i]);
    config_free(c);
  }
}

/* Each error: the YAML, then the exact message; a message ending in "..." gives only
 * its start (libc's regerror text follows). */

/* A module with an integer n (1..9) and a secret s, and the given presets value. */
#define PRESETS(v)                                        \
  "modules:\n  - id: m\n    argv: [x]\n    parameters:\n" \
  "      - {name: n, type: integer, min: 1, max: 9}\n"    \
  "      - {name: s, type: secret, env_var: S}\n    presets: " v "\n"

static const struct {
  const char *yaml;
  const char *msg;
} errors[] = {
    /* Unknown keys, at each level. */
    {"listen: [\"tcp://127.0.0.1:1\"]\nlisen: [x]\n",
     "t.yaml:2: top level: unknown key \"lisen\" (expected one of: listen, data_dir, limits, "
     "modules, allow_insecure_remote, tls, unix_socket, authz, retention, shutdown, cgroups, "
     "http, slurm)"},
    {"limits:\n  max_concurent: 3\n",
     "t.yaml:2: limits: unknown key \"max_concurent\" (expected one of: max_concurrent, "
     "max_queued, max_memory_percent, min_available_memory_mb, max_cpu_percent, "
     "max_connections, max_streams_per_connection, max_header_list_bytes, max_message_bytes, "
     "idle_timeout_ms, max_queued_per_identity, output_max_bytes)"},
    {"modules:\n  - id: a\n    argv: [x]\n    agrv: [y]\n",
     "t.yaml:4: modules[0]: unknown key \"agrv\" (expected one of: id, name, description, "
     "argv, cwd, env, timeout_ms, max_concurrent, pass_parameters, parameters, memory_max, "
     "cpu_max, category, tags, version, enabled, presets, progress, executor, slurm)"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n"
     "      - name: p\n        requird: true\n",
     "t.yaml:6: modules[0].parameters[0]: unknown key \"requird\" (expected one of: name, "
     "required, default, description, pattern, type, min, max, options, min_length, max_length, "
     "base_dir, env_var, fd)"},
    {"data_dir: a\ndata_dir: b\n", "t.yaml:2: top level: duplicate key \"data_dir\""},
    /* Presets. */
    {PRESETS("[{name: a}, {name: a}]"),
     "t.yaml:7: modules[0].presets[1]: duplicate preset "
     "name \"a\""},
    {PRESETS("[{name: \"a b\"}]"),
     "t.yaml:7: modules[0].presets[0].name \"a b\" must match ^[A-Za-z0-9_.-]{1,64}$"},
    {PRESETS("[{description: x}]"),
     "t.yaml:7: modules[0].presets[0]: missing required key "
     "\"name\""},
    {PRESETS("{a: {}}"), "t.yaml:7: modules[0].presets must be a list of mappings"},
    {PRESETS("[{name: a, parameters: [n]}]"),
     "t.yaml:7: modules[0].presets[0].parameters must be a mapping of parameter names to values"},
    {PRESETS("[{name: a, parameters: {n: \"0\", s: x, zz: y, n: \"2\"}}]"),
     "t.yaml:7: modules[0].presets[0].parameters: parameter \"n\" is 0, below the minimum 1; "
     "parameter \"s\" is a secret, which a preset cannot hold; unknown parameter \"zz\"; "
     "parameter \"n\" is given twice"},
    {PRESETS("[{name: a, parametres: {}}]"),
     "t.yaml:7: modules[0].presets[0]: unknown key \"parametres\" (expected one of: name, "
     "description, parameters)"},
    {"[a, b]\n", "t.yaml:1: top level must be a mapping"},
    {"? [a]\n: b\n", "t.yaml:1: top level: keys must be strings"},
    {"data_dir: a\n---\ndata_dir: b\n", "t.yaml:3: a configuration is a single YAML document"},

    /* Lifecycle sections. */
    {"retention: {max_age: 7 days}\n",
     "t.yaml:1: retention.max_age must be a duration from 0 ms to 3153600000000 ms: milliseconds, "
     "or a "
     "number with a unit ms, s, m, h or d (like 30s or 7d)"},
    {"retention: {sweep_interval: 31d}\n",
     "t.yaml:1: retention.sweep_interval must be a duration from 0 ms to 2592000000 ms: "
     "milliseconds, "
     "or a number with a unit ms, s, m, h or d (like 30s or 7d)"},
    {"shutdown: {runs: later}\n", "t.yaml:1: shutdown.runs must be wait or cancel"},
    {"http: {ui: maybe}\n", "t.yaml:1: http.ui must be true or false"},
    {"http: {request_timeout_ms: 10}\n",
     "t.yaml:1: http.request_timeout_ms must be an integer from 1000 to 600000"},
    {"http: {uii: false}\n",
     "t.yaml:1: http: unknown key \"uii\" (expected one of: ui, metrics, request_timeout_ms)"},
    {"cgroups: {root: relative/dir}\n",
     "t.yaml:1: cgroups.root must be auto, off or an absolute path"},
    {"modules:\n  - {id: a, argv: [x], cpu_max: 0}\n",
     "t.yaml:2: modules[0].cpu_max must be an integer from 1 to 100000"},

    /* Wrong types. */
    {"modules:\n  - id: a\n    argv: \"echo hi\"\n",
     "t.yaml:3: modules[0].argv must be a non-empty list of strings"},
    {"modules:\n  - id: a\n    argv: []\n",
     "t.yaml:3: modules[0].argv must be a non-empty list of strings"},
    {"modules:\n  - id: a\n    argv:\n      - echo\n      - {x: y}\n",
     "t.yaml:5: modules[0].argv[1] must be a string"},
    {"modules:\n  - id: a\n    argv: ['']\n",
     "t.yaml:3: modules[0].argv[0] (the program) must not be empty"},
    {"listen: []\n", "t.yaml:1: listen must be a non-empty list of strings"},
    {"listen: [\"\"]\n", "t.yaml:1: listen[0] must be a non-empty string"},
    {"listen: tcp://127.0.0.1:1\n", "t.yaml:1: listen must be a non-empty list of strings"},
    {"data_dir:\n", "t.yaml:1: data_dir must be a non-empty string"},
    {"data_dir: ~\n", "t.yaml:1: data_dir must be a non-empty string"},
    {"data_dir: \"\"\n", "t.yaml:1: data_dir must be a non-empty string"},
    {"data_dir: [a]\n", "t.yaml:1: data_dir must be a non-empty string"},
    {"\n\ndata_dir: \"a\\0b\"\n", "t.yaml:3: data_dir must not contain a NUL byte"},
    {"limits: [1]\n", "t.yaml:1: limits must be a mapping"},
    {"modules: {id: a}\n", "t.yaml:1: modules must be a list of mappings"},
    {"modules:\n  - a\n", "t.yaml:2: modules[0] must be a mapping"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters: {name: p}\n",
     "t.yaml:4: modules[0].parameters must be a list of mappings"},
    {"modules:\n  - id: a\n    argv: [x]\n    env: [A=1]\n",
     "t.yaml:4: modules[0].env must be a mapping of names to strings"},
    {"modules:\n  - id: a\n    argv: [x]\n    env:\n      A: [1]\n",
     "t.yaml:5: modules[0].env.A must be a string"},
    {"modules:\n  - id: a\n    argv: [x]\n    env: {[A]: 1}\n",
     "t.yaml:4: modules[0].env names must be a non-empty string"},
    {"modules:\n  - id: a\n    argv: [x]\n    env: {A=B: 1}\n",
     "t.yaml:4: modules[0].env: name \"A=B\" contains \"=\""},
    {"modules:\n  - id: a\n    argv: [x]\n    env:\n      A: 1\n      A: 2\n",
     "t.yaml:6: modules[0].env: duplicate name \"A\""},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: p, required: yes}\n",
     "t.yaml:5: modules[0].parameters[0].required must be true or false"},
    {"modules:\n  - id: a\n    argv: [x]\n    pass_parameters: flag\n",
     "t.yaml:4: modules[0].pass_parameters must be none or flags"},
    {"modules:\n  - id: a\n    argv: [x]\n    pass_parameters: [flags]\n",
     "t.yaml:4: modules[0].pass_parameters must be none or flags"},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: {pattern: '^(?P<n>\\d+)'}\n",
     "t.yaml:4: modules[0].progress.pattern: unknown group name \"n\" (expected done, total, "
     "percent or message)"},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: {pattern: '^P'}\n",
     "t.yaml:4: modules[0].progress.pattern: the pattern has no group for the done count"},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: {pattern: '^(\\d+'}\n",
     "t.yaml:4: modules[0].progress.pattern: not a valid extended regular expression: ..."},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: {pattern: \"\"}\n",
     "t.yaml:4: modules[0].progress.pattern must be a non-empty string"},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: {fd: 3}\n",
     "t.yaml:4: modules[0].progress.fd must be true or false"},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: {file: x}\n",
     "t.yaml:4: modules[0].progress: unknown key \"file\" (expected one of: pattern, fd)"},
    {"modules:\n  - id: m\n    argv: [x]\n    progress: '^P (\\d+)'\n",
     "t.yaml:4: modules[0].progress must be a mapping"},

    /* Numbers. */
    {"limits:\n  max_memory_percent: 101\n",
     "t.yaml:2: limits.max_memory_percent must be an integer from 0 to 100"},
    {"limits: {max_cpu_percent: 200}\n",
     "t.yaml:1: limits.max_cpu_percent must be an integer from 0 to 100"},
    {"limits: {max_streams_per_connection: 0}\n",
     "t.yaml:1: limits.max_streams_per_connection must be an integer from 1 to 10000"},
    {"limits: {max_header_list_bytes: 100}\n",
     "t.yaml:1: limits.max_header_list_bytes must be an integer from 1024 to 1048576"},
    {"limits: {max_message_bytes: 67108865}\n",
     "t.yaml:1: limits.max_message_bytes must be an integer from 1024 to 67108864"},
    {"limits: {idle_timeout_ms: 86400001}\n",
     "t.yaml:1: limits.idle_timeout_ms must be an integer from 0 to 86400000"},
    {"limits: {max_concurrent: 0}\n",
     "t.yaml:1: limits.max_concurrent must be an integer from 1 to 4294967295"},
    {"limits: {max_connections: 0}\n",
     "t.yaml:1: limits.max_connections must be an integer from 1 to 4294967295"},
    {"limits: {max_queued: -1}\n",
     "t.yaml:1: limits.max_queued must be an integer from 0 to 4294967295"},
    {"limits: {max_queued: 4294967296}\n",
     "t.yaml:1: limits.max_queued must be an integer from 0 to 4294967295"},
    {"limits: {max_concurrent: \"8\"}\n",
     "t.yaml:1: limits.max_concurrent must be an integer from 1 to 4294967295"},
    {"limits: {max_concurrent: 8.0}\n",
     "t.yaml:1: limits.max_concurrent must be an integer from 1 to 4294967295"},
    {"limits: {output_max_bytes: 18446744073709551616}\n",
     "t.yaml:1: limits.output_max_bytes must be an integer from 0 to 18446744073709551615"},
    {"modules:\n  - id: a\n    argv: [x]\n    timeout_ms: 10s\n",
     "t.yaml:4: modules[0].timeout_ms must be an integer from 0 to 4294967295"},
    {"modules:\n  - id: a\n    argv: [x]\n    max_concurrent: -2\n",
     "t.yaml:4: modules[0].max_concurrent must be an integer from 0 to 4294967295"},

    /* Module ids and parameter names. */
    {"modules:\n  - argv: [x]\n", "t.yaml:2: modules[0]: missing required key \"id\""},
    {"modules:\n  - id: a\n", "t.yaml:2: modules[0]: missing required key \"argv\""},
    {"modules:\n  - {id: a, argv: [x]}\n  - {id: b, argv: [x]}\n  - {id: a, argv: [y]}\n",
     "t.yaml:4: modules[2].id: duplicate module id \"a\" (also modules[0].id)"},
    {"modules:\n  - {id: \"a b\", argv: [x]}\n",
     "t.yaml:2: modules[0].id \"a b\" must match ^[A-Za-z0-9_.-]{1,64}$"},
    {"modules:\n  - {id: "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, argv: [x]}\n",
     "t.yaml:2: modules[0].id "
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" must match "
     "^[A-Za-z0-9_.-]{1,64}$"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {required: true}\n",
     "t.yaml:5: modules[0].parameters[0]: missing required key \"name\""},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: 1x}\n",
     "t.yaml:5: modules[0].parameters[0].name \"1x\" must match "
     "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: a-b}\n",
     "t.yaml:5: modules[0].parameters[0].name \"a-b\" must match "
     "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: p}\n"
     "      - {name: q}\n      - {name: p}\n",
     "t.yaml:7: modules[0].parameters[2]: duplicate parameter name \"p\""},

    /* Patterns and defaults. */
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - name: p\n"
     "        pattern: \"[0-9\"\n",
     "t.yaml:6: modules[0].parameters[0].pattern is not a valid extended regular expression: ..."},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: p, pattern: \"a(\"}\n",
     "t.yaml:5: modules[0].parameters[0].pattern is not a valid extended regular expression: ..."},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: p, pattern: \"x)|.*\"}\n",
     "t.yaml:5: modules[0].parameters[0].pattern has an unmatched \")\" (write \\) for a "
     "literal one)"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - {name: p, pattern: \"\"}\n",
     "t.yaml:5: modules[0].parameters[0].pattern must be a non-empty string"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n"
     "      - {name: p, required: true, default: x}\n",
     "t.yaml:5: modules[0].parameters[0]: a required parameter cannot have a default"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n"
     "      - {name: p, default: 12a, pattern: \"[0-9]+\"}\n",
     "t.yaml:5: modules[0].parameters[0].default \"12a\" does not match [0-9]+"},

/* Typed parameters. */
#define TYPED(spec) "modules:\n  - id: a\n    argv: [x]\n    parameters:\n      - " spec "\n"
    {TYPED("{name: p, type: int}"),
     "t.yaml:5: modules[0].parameters[0].type must be one of string, integer, number, boolean, "
     "select, secret, path"},
    {TYPED("{name: p, min: 1}"),
     "t.yaml:5: modules[0].parameters[0]: min and max are for integer and number parameters"},
    {TYPED("{name: p, type: integer, min: 1.5}"),
     "t.yaml:5: modules[0].parameters[0]: an integer parameter's min and max must be integers"},
    {TYPED("{name: p, type: number, min: 2, max: 1}"),
     "t.yaml:5: modules[0].parameters[0]: max is below min"},
    {TYPED("{name: p, type: number, max: x}"),
     "t.yaml:5: modules[0].parameters[0].max must be a number"},
    {TYPED("{name: p, type: number, max: .inf}"),
     "t.yaml:5: modules[0].parameters[0].max must be a number"},
    {TYPED("{name: p, type: select}"),
     "t.yaml:5: modules[0].parameters[0]: a select parameter needs options"},
    {TYPED("{name: p, type: select, options: [a, b, a]}"),
     "t.yaml:5: modules[0].parameters[0].options: duplicate option \"a\""},
    {TYPED("{name: p, options: [a]}"),
     "t.yaml:5: modules[0].parameters[0]: options are for select parameters"},
    {TYPED("{name: p, type: path}"),
     "t.yaml:5: modules[0].parameters[0]: a path parameter needs base_dir"},
    {TYPED("{name: p, type: path, base_dir: srv}"),
     "t.yaml:5: modules[0].parameters[0].base_dir must be an absolute path"},
    {TYPED("{name: p, base_dir: /srv}"),
     "t.yaml:5: modules[0].parameters[0]: base_dir is for path parameters"},
    {TYPED("{name: p, min_length: 3, max_length: 2}"),
     "t.yaml:5: modules[0].parameters[0]: max_length is below min_length"},
    {TYPED("{name: p, type: integer, max: 10, default: 11}"),
     "t.yaml:5: modules[0].parameters[0].default \"11\" is 11, above the maximum 10"},
    {TYPED("{name: p, type: boolean, default: maybe}"),
     "t.yaml:5: modules[0].parameters[0].default \"maybe\" must be true or false"},
    {TYPED("{name: p, type: secret}"),
     "t.yaml:5: modules[0].parameters[0]: a secret parameter needs either env_var (the "
     "environment variable that takes its value) or fd (the descriptor the run reads it from)"},
    {TYPED("{name: p, type: secret, env_var: T, fd: 4}"),
     "t.yaml:5: modules[0].parameters[0]: a secret parameter needs one of env_var (the "
     "environment variable that takes its value) or fd (the descriptor the run reads it from)"},
    {TYPED("{name: p, type: secret, fd: 2}"),
     "t.yaml:5: modules[0].parameters[0].fd must be an integer from 3 to 63"},
    {TYPED("{name: p, fd: 4}"), "t.yaml:5: modules[0].parameters[0]: fd is for secret parameters"},
    {TYPED("{name: p, type: secret, fd: 4, max_length: 5000}"),
     "t.yaml:5: modules[0].parameters[0]: max_length of a secret on a descriptor is at most "
     "4096"},
    {"modules:\n  - id: a\n    argv: [x]\n    parameters:\n"
     "      - {name: p, type: secret, fd: 4}\n      - {name: q, type: secret, fd: 4}\n",
     "t.yaml:5: modules[0].parameters[1]: fd 4 is also parameters[0]'s"},
    {"modules:\n  - id: a\n    argv: [x]\n    progress: {fd: true}\n    parameters:\n"
     "      - {name: p, type: secret, fd: 3}\n",
     "t.yaml:6: modules[0].parameters[0]: fd 3 is the module's progress descriptor"},
    {"modules:\n  - id: a\n    argv: [x, \"{p}\"]\n    parameters:\n"
     "      - {name: p, type: secret, fd: 5}\n",
     "t.yaml:3: modules[0].argv[1]: placeholder {p} names a secret parameter, which would show "
     "in the process list: the run reads it from descriptor 5"},
    {TYPED("{name: p, type: secret, env_var: T, default: x}"),
     "t.yaml:5: modules[0].parameters[0]: a secret parameter cannot have a default"},
    {TYPED("{name: p, type: secret, env_var: \"A-B\"}"),
     "t.yaml:5: modules[0].parameters[0].env_var \"A-B\" must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
    {TYPED("{name: p, env_var: T}"),
     "t.yaml:5: modules[0].parameters[0]: env_var is for secret parameters"},
    {"modules:\n  - id: a\n    argv: [x, \"{p}\"]\n    parameters:\n"
     "      - {name: p, type: secret, env_var: TOKEN}\n",
     "t.yaml:3: modules[0].argv[1]: placeholder {p} names a secret parameter, which would show "
     "in the process list: the run gets it in $TOKEN"},
#undef TYPED

    /* Module metadata. */
    {"modules:\n  - id: a\n    argv: [x]\n    tags: [x, \"\"]\n",
     "t.yaml:4: modules[0].tags[1] must be a non-empty string"},
    {"modules:\n  - id: a\n    argv: [x]\n    tags: [x, y, x]\n",
     "t.yaml:4: modules[0].tags: duplicate tag \"x\""},
    {"modules:\n  - id: a\n    argv: [x]\n    enabled: no\n",
     "t.yaml:4: modules[0].enabled must be true or false"},

    /* Templates. */
    {"modules:\n  - id: a\n    argv: [echo, \"{foo}\"]\n",
     "t.yaml:3: modules[0].argv[1]: placeholder {foo} names no declared parameter"},
    {"modules:\n  - id: a\n    argv:\n      - echo\n      - \"x={p}{q}\"\n    parameters:\n"
     "      - {name: p, required: true}\n",
     "t.yaml:5: modules[0].argv[1]: placeholder {q} names no declared parameter"},
    {"modules:\n  - id: a\n    argv: [echo]\n    cwd: /tmp/{dir}\n",
     "t.yaml:4: modules[0].cwd: placeholder {dir} names no declared parameter"},
    {"modules:\n  - id: a\n    argv: [echo, \"{}\"]\n",
     "t.yaml:3: modules[0].argv[1]: placeholder {} names no declared parameter"},
    {"modules:\n  - id: a\n    argv: [echo, \"{p\"]\n    parameters: [{name: p, default: x}]\n",
     "t.yaml:3: modules[0].argv[1]: unclosed \"{\" (write \"{{\" for a literal brace)"},
    {"modules:\n  - id: a\n    argv: [awk, \"{print}\", \"x}\"]\n",
     "t.yaml:3: modules[0].argv[1]: placeholder {print} names no declared parameter"},
    {"modules:\n  - id: a\n    argv: [echo, \"x}\"]\n",
     "t.yaml:3: modules[0].argv[1]: lone \"}\" (write \"}}\" for a literal brace)"},
    {"modules:\n  - id: a\n    argv: [echo, \"{p}\"]\n    parameters: [{name: p}]\n",
     "t.yaml:3: modules[0].argv[1]: placeholder {p} may have no value: parameter \"p\" is "
     "optional and has no default"},

    /* TLS. */
    {"tls:\n  cert: c.pem\n  key: k.pem\n  ca: ca.pem\n",
     "t.yaml:4: tls: unknown key \"ca\" (expected one of: cert, key, client_ca, crl, "
     "require_client_cert, handshake_timeout_ms)"},
    {"tls: /etc/prismq\n", "t.yaml:1: tls must be a mapping"},
    {"tls:\n", "t.yaml:1: tls must be a mapping"},
    {"tls: {}\n", "t.yaml:1: tls needs cert and key"},
    {"data_dir: x\ntls:\n  client_ca: ca.pem\n", "t.yaml:3: tls needs cert and key"},
    {"tls:\n  client_ca: ca.pem\n  cert: c.pem\n",
     "t.yaml:3: tls.cert is given without tls.key (tls needs cert and key)"},
    {"tls:\n  key: k.pem\n",
     "t.yaml:2: tls.key is given without tls.cert (tls needs cert and key)"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  require_client_cert: true\n",
     "t.yaml:4: tls.require_client_cert: true needs tls.client_ca"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  crl: crl.pem\n",
     "t.yaml:4: tls.crl needs tls.client_ca (it checks client certificates)"},
    {"tls:\n  cert: c.pem\n  key: \"\"\n", "t.yaml:3: tls.key must be a non-empty string"},
    {"tls:\n  cert: [c.pem]\n  key: k.pem\n", "t.yaml:2: tls.cert must be a non-empty string"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  client_ca:\n",
     "t.yaml:4: tls.client_ca must be a non-empty string"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  require_client_cert: yes\n",
     "t.yaml:4: tls.require_client_cert must be true or false"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  handshake_timeout_ms: 0\n",
     "t.yaml:4: tls.handshake_timeout_ms must be an integer from 1 to 600000"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  handshake_timeout_ms: 600001\n",
     "t.yaml:4: tls.handshake_timeout_ms must be an integer from 1 to 600000"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  handshake_timeout_ms: 10s\n",
     "t.yaml:4: tls.handshake_timeout_ms must be an integer from 1 to 600000"},
    {"tls:\n  cert: c.pem\n  key: k.pem\n  handshake_timeout_ms: -1\n",
     "t.yaml:4: tls.handshake_timeout_ms must be an integer from 1 to 600000"},
    {"allow_insecure_remote: 1\n", "t.yaml:1: allow_insecure_remote must be true or false"},
    {"allow_insecure_remote: \"true\"\n", "t.yaml:1: allow_insecure_remote must be true or false"},

    /* unix_socket. */
    {"unix_socket:\n  mode: \"0600\"\n  perms: 0600\n",
     "t.yaml:3: unix_socket: unknown key \"perms\" (expected one of: mode, group)"},
    {"unix_socket: 0600\n", "t.yaml:1: unix_socket must be a mapping"},
    {"unix_socket: {mode: \"0800\"}\n",
     "t.yaml:1: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: 01000\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: 0x1ff\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: -0600\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: rw-rw----\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: \"\"\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: [0600]\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: 00000000000000000000001000\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  mode: 7777777777777777777777777\n",
     "t.yaml:2: unix_socket.mode must be octal permission bits from 0 to 0777, like \"0660\""},
    {"unix_socket:\n  group: \"\"\n", "t.yaml:2: unix_socket.group must be a non-empty string"},
    {"unix_socket:\n  group: ~\n", "t.yaml:2: unix_socket.group must be a non-empty string"},

    /* authz. */
    {"authz: {identity: a}\n", "t.yaml:1: authz must be a list of mappings"},
    {"authz: a\n", "t.yaml:1: authz must be a list of mappings"},
    {"authz:\n  - a\n", "t.yaml:2: authz[0] must be a mapping"},
    {"authz:\n  - identity: a\n    role: [read]\n",
     "t.yaml:3: authz[0]: unknown key \"role\" (expected one of: identity, modules, roles)"},
    {"authz:\n  - identity: a\n  - roles: [read]\n",
     "t.yaml:3: authz[1]: missing required key \"identity\""},
    {"authz:\n  - identity: \"\"\n", "t.yaml:2: authz[0].identity must be a non-empty string"},
    {"authz:\n  - identity:\n    roles: [read]\n",
     "t.yaml:2: authz[0].identity must be a non-empty string"},
    {"authz:\n  - identity: [a]\n", "t.yaml:2: authz[0].identity must be a non-empty string"},
    {"authz:\n  - identity: a\n    roles: [read, Admin]\n",
     "t.yaml:3: authz[0].roles[1]: unknown role \"Admin\" (expected one of: read, read_all, "
     "cancel_any, admin)"},
    {"authz:\n  - identity: a\n    roles:\n      - read\n      - start\n",
     "t.yaml:5: authz[0].roles[1]: unknown role \"start\" (expected one of: read, read_all, "
     "cancel_any, admin)"},
    {"authz:\n  - identity: a\n    roles: [any]\n",
     "t.yaml:3: authz[0].roles[0]: unknown role \"any\" (expected one of: read, read_all, "
     "cancel_any, admin)"},
    {"authz:\n  - identity: a\n    roles: read\n",
     "t.yaml:3: authz[0].roles must be a list of role names"},
    {"authz:\n  - identity: a\n    roles: [\"\"]\n",
     "t.yaml:3: authz[0].roles[0] must be a non-empty string"},
    {"authz:\n  - identity: a\n    modules: \"*\"\n",
     "t.yaml:3: authz[0].modules must be a list of strings"},
    {"authz:\n  - identity: a\n    modules: [emit, \"\"]\n",
     "t.yaml:3: authz[0].modules[1] must be a non-empty string"},
    {"authz:\n  - identity: a\n    identity: b\n",
     "t.yaml:3: authz[0]: duplicate key \"identity\""},

/* The Slurm executor (SLURM_MOD: above test_slurm). */
#define SBATCH_ARG(a) SLURM_MOD("slurm: {sbatch_args: [\"--constraint=fast\", \"" a "\"]}")
    {"slurm: {spool: /s}\n",
     "t.yaml:1: slurm: unknown key \"spool\" (expected one of: spool_dir, poll_interval, "
     "max_jobs, bin_dir)"},
    {"slurm: /srv/spool\n", "t.yaml:1: slurm must be a mapping"},
    {"slurm:\n", "t.yaml:1: slurm must be a mapping"},
    {"slurm:\n  spool_dir: spool\n", "t.yaml:2: slurm.spool_dir must be an absolute path"},
    {"slurm:\n  spool_dir: \"\"\n", "t.yaml:2: slurm.spool_dir must be a non-empty string"},
    {"slurm:\n  bin_dir: opt/slurm/bin\n", "t.yaml:2: slurm.bin_dir must be an absolute path"},
    {"slurm:\n  poll_interval: 99\n",
     "t.yaml:2: slurm.poll_interval must be a duration from 100 ms to 600000 ms: milliseconds, "
     "or a number with a unit ms, s, m, h or d (like 30s or 7d)"},
    {"slurm:\n  poll_interval: 11m\n",
     "t.yaml:2: slurm.poll_interval must be a duration from 100 ms to 600000 ms: milliseconds, "
     "or a number with a unit ms, s, m, h or d (like 30s or 7d)"},
    {"slurm:\n  max_jobs: 0\n", "t.yaml:2: slurm.max_jobs must be an integer from 1 to 1000000"},
    {"slurm:\n  max_jobs: 1000001\n",
     "t.yaml:2: slurm.max_jobs must be an integer from 1 to 1000000"},
    {"modules:\n  - id: m\n    argv: [x]\n    executor: remote\n",
     "t.yaml:4: modules[0].executor must be local or slurm"},
    {"modules:\n  - id: m\n    argv: [x]\n    executor: [slurm]\n",
     "t.yaml:4: modules[0].executor must be local or slurm"},
    {"slurm: {spool_dir: /s}\nmodules:\n  - {id: a, argv: [x]}\n  - id: m\n    argv: [x]\n"
     "    slurm: {partition: p}\n",
     "t.yaml:6: modules[1].slurm is given but modules[1].executor is not slurm"},
    {"slurm: {spool_dir: /s}\nmodules:\n  - id: m\n    argv: [x]\n    executor: local\n"
     "    slurm: {}\n",
     "t.yaml:6: modules[0].slurm is given but modules[0].executor is not slurm"},
    {"modules:\n  - id: m\n    argv: [x]\n    executor: slurm\n",
     "t.yaml:4: modules[0].executor is slurm, which needs slurm.spool_dir (a directory this "
     "server and the cluster's nodes share)"},
    {"slurm: {max_jobs: 5}\nmodules:\n  - id: m\n    argv: [x]\n    executor: slurm\n",
     "t.yaml:5: modules[0].executor is slurm, which needs slurm.spool_dir (a directory this "
     "server and the cluster's nodes share)"},
    {SLURM_MOD("memory_max: 1048576"),
     "t.yaml:6: modules[0].memory_max is a limit of the local executor: with executor slurm "
     "use modules[0].slurm.memory"},
    {SLURM_MOD("cpu_max: 200"),
     "t.yaml:6: modules[0].cpu_max is a limit of the local executor: with executor slurm use "
     "modules[0].slurm.cpus"},
    {SLURM_MOD("parameters:\n      - {name: a, type: secret, env_var: A}\n"
               "      - {name: b, type: secret, fd: 4}"),
     "t.yaml:8: modules[0].parameters[1]: secrets on descriptors are not supported by the "
     "slurm executor (give the secret an env_var)"},
    {SLURM_MOD("slurm:\n      partition: p\n      partiton: q"),
     "t.yaml:8: modules[0].slurm: unknown key \"partiton\" (expected one of: partition, "
     "account, qos, cpus, memory, time_limit, sbatch_args, env)"},
    {SLURM_MOD("slurm: [partition]"), "t.yaml:6: modules[0].slurm must be a mapping"},
    {SLURM_MOD("slurm: {partition: \"gpu fast\"}"),
     "t.yaml:6: modules[0].slurm.partition must not contain whitespace or control characters"},
    {SLURM_MOD("slurm: {account: \"a\\tb\"}"),
     "t.yaml:6: modules[0].slurm.account must not contain whitespace or control characters"},
    {SLURM_MOD("slurm: {qos: \"q\\x01\"}"),
     "t.yaml:6: modules[0].slurm.qos must not contain whitespace or control characters"},
    {SLURM_MOD("slurm: {qos: \"\"}"), "t.yaml:6: modules[0].slurm.qos must be a non-empty string"},
    {SLURM_MOD("slurm: {cpus: 0}"),
     "t.yaml:6: modules[0].slurm.cpus must be an integer from 1 to 100000"},
    {SLURM_MOD("slurm: {cpus: 100001}"),
     "t.yaml:6: modules[0].slurm.cpus must be an integer from 1 to 100000"},
#define BAD_MEMORY(v)                                                                          \
  {                                                                                            \
    SLURM_MOD("slurm: {memory: " v "}"),                                                       \
        "t.yaml:6: modules[0].slurm.memory must be a number of megabytes, or a number with a " \
        "unit "                                                                                \
        "K, M, G or T (like 512M or 4G), of 1 to 15 digits"                                    \
  }
    BAD_MEMORY("4GB"),
    BAD_MEMORY("4g"),
    BAD_MEMORY("G"),
    BAD_MEMORY("4.5G"),
    BAD_MEMORY("-1"),
    BAD_MEMORY("\" 4G\""),
    BAD_MEMORY("1234567890123456"),
#undef BAD_MEMORY
    {SLURM_MOD("slurm: {memory: ~}"),
     "t.yaml:6: modules[0].slurm.memory must be a non-empty string"},
    {SLURM_MOD("slurm: {time_limit: 59s}"),
     "t.yaml:6: modules[0].slurm.time_limit must be a duration from 60000 ms to 31536000000 ms: "
     "milliseconds, or a number with a unit ms, s, m, h or d (like 30s or 7d)"},
    {SLURM_MOD("slurm: {time_limit: 366d}"),
     "t.yaml:6: modules[0].slurm.time_limit must be a duration from 60000 ms to 31536000000 ms: "
     "milliseconds, or a number with a unit ms, s, m, h or d (like 30s or 7d)"},
    {SLURM_MOD("slurm: {sbatch_args: --exclusive}"),
     "t.yaml:6: modules[0].slurm.sbatch_args must be a list of strings"},
    {SBATCH_ARG(""), "t.yaml:6: modules[0].slurm.sbatch_args[1] must be a non-empty string"},
    {SBATCH_ARG("--output=x"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"--output=x\" sets --output, which prismqd "
     "sets itself"},
    {SBATCH_ARG("-o"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"-o\" sets --output, which prismqd sets "
     "itself"},
    {SBATCH_ARG("-ofoo"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"-ofoo\" sets --output, which prismqd sets "
     "itself"},
    {SBATCH_ARG("--time=5"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"--time=5\" sets --time: use "
     "modules[0].slurm.time_limit"},
    {SBATCH_ARG("-t10"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"-t10\" sets --time: use "
     "modules[0].slurm.time_limit"},
    {SBATCH_ARG("--export=ALL"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"--export=ALL\" sets --export: use "
     "modules[0].slurm.env"},
    {SBATCH_ARG("--out=x"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"--out=x\" sets --output, which prismqd sets "
     "itself"},
    {SBATCH_ARG("-Ho"),
     "t.yaml:6: modules[0].slurm.sbatch_args[1] \"-Ho\" sets --output, which prismqd sets "
     "itself"},
    {SLURM_MOD("slurm:\n      sbatch_args:\n        - --exclusive\n        - -J\n        - x"),
     "t.yaml:9: modules[0].slurm.sbatch_args[1] \"-J\" sets --job-name, which prismqd sets "
     "itself"},
    {SLURM_MOD("slurm: {env: [A=1]}"),
     "t.yaml:6: modules[0].slurm.env must be a mapping of names to strings"},
    {SLURM_MOD("slurm: {env: {A=B: 1}}"),
     "t.yaml:6: modules[0].slurm.env: name \"A=B\" contains \"=\""},
    {SLURM_MOD("slurm:\n      env:\n        A: 1\n        A: 2"),
     "t.yaml:9: modules[0].slurm.env: duplicate name \"A\""},
    {SLURM_MOD("slurm: {env: {A: [1]}}"), "t.yaml:6: modules[0].slurm.env.A must be a string"},
#undef SBATCH_ARG

    /* YAML itself. */
    {"listen: [a,\ndata_dir: x\n",
     "t.yaml:3: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence "
     "at line 1)"},
    {"a: *nope\n", "t.yaml:1: invalid YAML: found undefined alias"},
    {"listen: [a]\n\n\ndata_dir: \"\xff\"\n",
     "t.yaml:4: invalid YAML: invalid leading UTF-8 octet"},
};

static void test_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(errors); i++) {
    config *c = SENTINEL;
    char err[512] = "";
    int rc =
        config_load_string(&c, errors[i].yaml, strlen(errors[i].yaml), "t.yaml", err, sizeof err);

    if (rc != -EINVAL) fail_msg("case %zu: rc %d, want -EINVAL (err \"%s\")", i, rc, err);
    assert_ptr_equal(c, SENTINEL);
    const char *want = errors[i].msg;
    size_t len = strlen(want);
    int prefix = len > 3 && !strcmp(want + len - 3, "...");

    if (prefix ? strncmp(err, want, len - 3) != 0 || strlen(err) <= len - 3
               : strcmp(err, want) != 0)
      fail_msg("case %zu:\n got: %s\nwant: %s", i, err, want);
  }
}

static void test_error_buffer(void **state) {
  (void)state;
  config *c = SENTINEL;
  char err[12];
  static const char yaml[] = "lisen: x\n";

  /* Truncated, still terminated; no buffer at all is allowed too. */
  assert_int_equal(config_load_string(&c, yaml, strlen(yaml), NULL, err, sizeof err), -EINVAL);
  assert_string_equal(err, "config:1: t");
  assert_int_equal(config_load_string(&c, yaml, strlen(yaml), "x", NULL, 0), -EINVAL);
  assert_ptr_equal(c, SENTINEL);
  /* len, not a terminator, bounds the input. */
  assert_int_equal(config_load_string(&c, "data_dir: abcdef", 13, "x", err, sizeof err), 0);
  assert_string_equal(c->data_dir, "abc");
  config_free(c);
  config_free(NULL);
  config_argv_free(NULL);
}

static void test_load_file(void **state) {
  (void)state;
  char path[] = "/tmp/prismq-test-config-XXXXXX";
  char err[512] = "";
  int fd = mkstemp(path);
  config *c = SENTINEL;

  assert_true(fd >= 0);
  assert_int_equal(write(fd, example_yaml, strlen(example_yaml)), (ssize_t)strlen(example_yaml));
  assert_int_equal(write(fd, "bogus: 1\n", 9), 9);
  close(fd);

  /* Messages name the file as given, with the line of the fault. */
  assert_int_equal(config_load_file(&c, path, err, sizeof err), -EINVAL);
  assert_ptr_equal(c, SENTINEL);
  assert_true(strncmp(err, path, strlen(path)) == 0);
  assert_true(strncmp(err + strlen(path), ":23: top level: unknown key \"bogus\"", 35) == 0);

  assert_int_equal(truncate(path, (off_t)strlen(example_yaml)), 0);
  assert_int_equal(config_load_file(&c, path, err, sizeof err), 0);
  assert_int_equal(c->nmodules, 2);
  config_free(c);
  unlink(path);

  c = SENTINEL;
  assert_int_equal(config_load_file(&c, path, err, sizeof err), -ENOENT);
  assert_ptr_equal(c, SENTINEL);
  assert_true(strncmp(err, path, strlen(path)) == 0);
  assert_string_equal(err + strlen(path), ": No such file or directory");
  assert_int_equal(config_load_file(&c, "/tmp", err, sizeof err), -EISDIR);
  assert_ptr_equal(c, SENTINEL);
}

/* Renders module `id` of c with the pairs given; returns the result code. */
static int render(char ***argv, char **cwd, char ***params, const config *c, const char *id,
                  const char *const *names, const char *const *values, size_t n, char *err,
                  size_t errlen) {
  const config_module *m = config_find_module(c, id);

  assert_non_null(m);
  return config_module_render(argv, cwd, params, NULL, m, names, values, NULL, n, NULL, err,
                              errlen);
}

static void test_render_substitution_and_defaults(void **state) {
  (void)state;
  config *c = load_ok(example_yaml);
  char **argv = NULL, **params = NULL, *cwd = NULL;
  char err[256];

  assert_int_equal(render(&argv, &cwd, &params, c, "emit", (const char *[]){"bytes"},
                          (const char *[]){"5"}, 1, err, sizeof err),
                   0);
  assert_strv(argv, (const char *[]){"head", "-c", "5", "/dev/zero"}, 4);
  assert_string_equal(cwd, "/tmp");
  /* The effective set: what was given plus the defaults, in declared order. */
  assert_strv(params, (const char *[]){"bytes=5", "label=none"}, 2);
  config_argv_free(argv);
  config_argv_free(params);
  free(cwd);

  /* Same name twice: the last wins; an explicit value beats the default. */
  assert_int_equal(
      render(&argv, &cwd, &params, c, "emit", (const char *[]){"label", "bytes", "bytes"},
             (const char *[]){"x=y", "1", "22"}, 3, err, sizeof err),
      0);
  assert_strv(argv, (const char *[]){"head", "-c", "22", "/dev/zero"}, 4);
  assert_strv(params, (const char *[]){"bytes=22", "label=x=y"}, 2);
  config_argv_free(argv);
  config_argv_free(params);
  free(cwd);
  config_free(c);

  /* Placeholders in cwd and inside longer elements, several per element, literal
   * braces, and values that a shell would mangle staying one element each. */
  c = load_ok(
      "modules:\n"
      "  - id: t\n"
      "    argv: [\"{prog}\", \"--out={dir}/{name}.txt\", \"{{{name}}}\", \"}}{{\", \"\","
      " \"{v}\"]\n"
      "    cwd: \"/srv/{dir}\"\n"
      "    parameters:\n"
      "      - {name: prog, default: tool}\n"
      "      - {name: dir, required: true}\n"
      "      - {name: name, default: out}\n"
      "      - {name: v, default: \"\"}\n"
      "      - {name: unused}\n");
  assert_int_equal(render(&argv, &cwd, &params, c, "t", (const char *[]){"dir", "v"},
                          (const char *[]){"a b", "$(id); `x` '\"*"}, 2, err, sizeof err),
                   0);
  assert_strv(
      argv, (const char *[]){"tool", "--out=a b/out.txt", "{out}", "}{", "", "$(id); `x` '\"*"}, 6);
  assert_string_equal(cwd, "/srv/a b");
  assert_strv(params, (const char *[]){"prog=tool", "dir=a b", "name=out", "v=$(id); `x` '\"*"}, 4);
  config_argv_free(argv);
  config_argv_free(params);
  free(cwd);
  config_free(c);
}

static void test_render_flags_order(void **state) {
  (void)state;
  config *c = load_ok(example_yaml);
  char **argv = NULL, *cwd = SENTINEL;
  char err[256];

  assert_int_equal(render(&argv, &cwd, NULL, c, "report", (const char *[]){"since"},
                          (const char *[]){"2024-01-01"}, 1, err, sizeof err),
                   0);
  assert_strv(argv, (const char *[]){"python3", "scripts/report.py", "--since", "2024-01-01"}, 4);
  assert_null(cwd);
  config_argv_free(argv);
  config_free(c);

  /* Declared order, whatever the request's order; defaults included; an optional
   * parameter with neither value nor default left out; placeholders still work. */
  c = load_ok(
      "modules:\n"
      "  - id: f\n"
      "    argv: [run, \"{b}\"]\n"
      "    pass_parameters: flags\n"
      "    parameters:\n"
      "      - {name: c}\n"
      "      - {name: b, default: B}\n"
      "      - {name: a, required: true}\n"
      "      - {name: d}\n"
      "      - {name: e, default: \"\"}\n");
  assert_int_equal(render(&argv, &cwd, NULL, c, "f", (const char *[]){"a", "c"},
                          (const char *[]){"1", "-x"}, 2, err, sizeof err),
                   0);
  assert_strv(argv, (const char *[]){"run", "B", "--c", "-x", "--b", "B", "--a", "1", "--e", ""},
              10);
  config_argv_free(argv);
  config_free(c);
}

/* Presets load with their values as written, in declared order, found by name;
 * config_module_check_preset takes a partial set and refuses what a preset cannot hold. */
static void test_presets(void **state) {
  (void)state;
  config *c =
      load_ok(PRESETS("[{name: quick, description: fast one, parameters: {n: \"3\"}},"
                      " {name: bare}]"));
  const config_module *m = config_find_module(c, "m");
  assert_int_equal(m->npresets, 2);
  const config_preset *p = config_find_preset(m, "quick");
  assert_ptr_equal(p, &m->presets[0]);
  assert_string_equal(p->description, "fast one");
  assert_int_equal(p->nparams, 1);
  assert_string_equal(p->names[0], "n");
  assert_string_equal(p->values[0], "3");
  assert_null(p->names[1]);
  p = config_find_preset(m, "bare");
  assert_string_equal(p->description, "");
  assert_int_equal(p->nparams, 0);
  assert_null(p->names[0]);
  assert_null(config_find_preset(m, "nope"));
  assert_true(config_valid_preset_name("a.b-c_9"));
  assert_false(config_valid_preset_name(""));
  assert_false(config_valid_preset_name("a/b"));

  const char *names[] = {"n", "s"}, *values[] = {"2", "x"};
  param_report bad = PARAM_REPORT_INIT;
  assert_int_equal(config_module_check_preset(m, names, values, 1, &bad), 0);
  assert_int_equal(bad.n, 0);
  assert_int_equal(config_module_check_preset(m, names, values, 2, &bad), -EINVAL);
  assert_int_equal(bad.n, 1);
  assert_string_equal(bad.items[0].name, "s");
  param_report_clear(&bad);
  config_free(c);
}

/* A secret: shown as *** among the parameters, never in argv (not even as a flag), given
 * only in the secret environment. */
static void test_secret(void **state) {
  (void)state;
  config *c = load_ok(
      "modules:\n"
      "  - id: s\n"
      "    argv: [run]\n"
      "    pass_parameters: flags\n"
      "    parameters:\n"
      "      - {name: user, default: u}\n"
      "      - {name: token, type: secret, env_var: API_TOKEN, min_length: 4}\n"
      "      - {name: other, type: secret, env_var: OTHER}\n");
  const config_module *m = config_find_module(c, "s");
  char **argv = NULL, **params = NULL, **env = NULL, *cwd = SENTINEL;
  char err[256];

  assert_int_equal(config_module_render(&argv, &cwd, &params, &env, m, (const char *[]){"token"},
                                        (const char *[]){"s3cr3t"}, NULL, 1, NULL, err, sizeof err),
                   0);
  assert_strv(argv, (const char *[]){"run", "--user", "u"}, 3);
  assert_strv(params, (const char *[]){"user=u", "token=***"}, 2);
  assert_strv(env, (const char *[]){"API_TOKEN=s3cr3t"}, 1);
  config_argv_free(argv);
  config_argv_free(params);
  config_argv_free(env);
  free(cwd);

  /* Checked like any value, and the message does not repeat it. */
  argv = SENTINEL;
  assert_int_equal(config_module_render(&argv, &cwd, &params, &env, m, (const char *[]){"token"},
                                        (const char *[]){"abc"}, NULL, 1, NULL, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "parameter \"token\" is 3 bytes long, shorter than the minimum 4");
  assert_ptr_equal(argv, SENTINEL);
  config_free(c);
}

/* Typed parameters: values in their run form (booleans as true/false, paths resolved),
 * booleans as bare flags, metadata with its defaults. */
static void test_typed(void **state) {
  (void)state;
  config *c = load_ok(
      "modules:\n"
      "  - id: t\n"
      "    argv: [run, \"{dry}\"]\n"
      "    pass_parameters: flags\n"
      "    category: demo\n"
      "    tags: [a, b]\n"
      "    version: \"1.2\"\n"
      "    enabled: false\n"
      "    parameters:\n"
      "      - {name: n, type: integer, min: 1, max: 5, default: 3}\n"
      "      - {name: dry, type: boolean, default: \"yes\"}\n"
      "      - {name: verbose, type: boolean, default: off}\n"
      "      - {name: mode, type: select, options: [fast, slow]}\n"
      "      - {name: out, type: path, base_dir: /}\n"
      "  - id: plain\n"
      "    argv: [x]\n");
  const config_module *m = config_find_module(c, "t");
  char **argv = NULL, **params = NULL, *cwd = SENTINEL;
  char err[256];

  assert_string_equal(m->params[1].default_value, "true"); /* kept as the run gets it */
  assert_string_equal(m->params[2].default_value, "false");
  assert_int_equal(m->params[0].has_min && m->params[0].has_max, 1);
  assert_int_equal(m->params[3].noptions, 2);
  assert_string_equal(m->category, "demo");
  assert_int_equal(m->ntags, 2);
  assert_string_equal(m->tags[1], "b");
  assert_null(m->tags[2]);
  assert_string_equal(m->version, "1.2");
  assert_int_equal(m->enabled, 0);
  m = config_find_module(c, "plain");
  assert_string_equal(m->category, "");
  assert_int_equal(m->ntags, 0);
  assert_non_null(m->tags);
  assert_string_equal(m->version, "");
  assert_int_equal(m->enabled, 1);

  assert_int_equal(render(&argv, &cwd, &params, c, "t", (const char *[]){"verbose", "mode", "out"},
                          (const char *[]){"ON", "slow", "/tmp/../x"}, 3, err, sizeof err),
                   0);
  assert_strv(argv,
              (const char *[]){"run", "true", "--n", "3", "--dry", "--verbose", "--mode", "slow",
                               "--out", "/x"},
              10);
  assert_strv(params, (const char *[]){"n=3", "dry=true", "verbose=true", "mode=slow", "out=/x"},
              5);
  config_argv_free(argv);
  config_argv_free(params);
  free(cwd);

  /* A false boolean is no flag at all; the placeholder says false. */
  assert_int_equal(render(&argv, &cwd, NULL, c, "t", (const char *[]){"dry"}, (const char *[]){"0"},
                          1, err, sizeof err),
                   0);
  assert_strv(argv, (const char *[]){"run", "false", "--n", "3"}, 4);
  config_argv_free(argv);
  free(cwd);

  /* Every bad one is named, with a report of each. */
  param_report bad = PARAM_REPORT_INIT;
  argv = SENTINEL;
  assert_int_equal(
      config_module_render(&argv, &cwd, NULL, NULL, config_find_module(c, "t"),
                           (const char *[]){"n", "mode", "zz"},
                           (const char *[]){"9", "medium", "1"}, NULL, 3, &bad, err, sizeof err),
      -EINVAL);
  assert_ptr_equal(argv, SENTINEL);
  assert_string_equal(err,
                      "unknown parameter \"zz\"; parameter \"n\" is 9, above the maximum 5; "
                      "parameter \"mode\" must be one of \"fast\", \"slow\"");
  assert_int_equal(bad.n, 3);
  assert_string_equal(bad.items[0].name, "zz");
  assert_string_equal(bad.items[1].name, "n");
  assert_string_equal(bad.items[2].name, "mode");
  assert_string_equal(bad.items[2].message, "parameter \"mode\" must be one of \"fast\", \"slow\"");
  param_report_clear(&bad);
  config_free(c);
}

static void test_render_errors(void **state) {
  (void)state;
  config *c = load_ok(example_yaml);
  static const struct {
    const char *id;
    const char *names[3];
    const char *values[3];
    size_t n;
    const char *msg;
  } cases[] = {
      {"emit", {"bytes", "foo"}, {"1", "x"}, 2, "unknown parameter \"foo\""},
      /* Every bad parameter is named: unknown ones first, then declared ones in order. */
      {"emit",
       {"bogus"},
       {"1"},
       1,
       "unknown parameter \"bogus\"; missing required parameter \"bytes\""},
      {"emit",
       {"bytes", "x", "y"},
       {"1a", "1", "2"},
       3,
       "unknown parameter \"x\"; unknown parameter \"y\"; parameter \"bytes\" does not match "
       "^[0-9]+$"},
      {"emit", {"label"}, {"x"}, 1, "missing required parameter \"bytes\""},
      {"emit", {0}, {0}, 0, "missing required parameter \"bytes\""},
      {"emit", {"bytes"}, {"12a"}, 1, "parameter \"bytes\" does not match ^[0-9]+$"},
      {"emit", {"bytes"}, {""}, 1, "parameter \"bytes\" does not match ^[0-9]+$"},
      /* The last of a repeated name counts. */
      {"emit", {"bytes", "bytes"}, {"1", "x"}, 2, "parameter \"bytes\" does not match ^[0-9]+$"},
      {"report", {"since", "Since"}, {"1", "2"}, 2, "unknown parameter \"Since\""},
  };

  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char **argv = SENTINEL, **params = SENTINEL, *cwd = SENTINEL;
    char err[256] = "";

    assert_int_equal(render(&argv, &cwd, &params, c, cases[i].id, cases[i].names, cases[i].values,
                            cases[i].n, err, sizeof err),
                     -EINVAL);
    assert_string_equal(err, cases[i].msg);
    assert_ptr_equal(argv, SENTINEL);
    assert_ptr_equal(params, SENTINEL);
    assert_ptr_equal(cwd, SENTINEL);
  }

  /* With lengths, values need no terminator, and an embedded NUL is refused. */
  {
    const config_module *m = config_find_module(c, "emit");
    const char *names[] = {"bytes", "label"};
    const char *values[] = {"123456", "a\0b"};
    size_t lens[] = {3, 1};
    char **argv = SENTINEL, *cwd = SENTINEL;
    char err[256] = "";

    assert_int_equal(config_module_render(&argv, &cwd, NULL, NULL, m, names, values, lens, 2, NULL,
                                          err, sizeof err),
                     0);
    assert_string_equal(argv[2], "123");
    config_argv_free(argv);
    free(cwd);
    argv = SENTINEL;
    cwd = SENTINEL;
    lens[1] = 3;
    assert_int_equal(config_module_render(&argv, &cwd, NULL, NULL, m, names, values, lens, 2, NULL,
                                          err, sizeof err),
                     -EINVAL);
    assert_string_equal(err, "parameter \"label\" contains a NUL byte");
    assert_ptr_equal(argv, SENTINEL);
    assert_ptr_equal(cwd, SENTINEL);
  }
  config_free(c);
}

/* A pattern written without anchors must still match the whole value, also when it
 * has alternatives (the classic ^a|b$ mistake). */
static void test_render_pattern_whole_value(void **state) {
  (void)state;
  config *c = load_ok(
      "modules:\n"
      "  - id: p\n"
      "    argv: [x, \"{n}\", \"{w}\"]\n"
      "    parameters:\n"
      "      - {name: n, required: true, pattern: \"[0-9]+\"}\n"
      "      - {name: w, default: cat, pattern: \"cat|dog\"}\n");
  static const struct {
    const char *n, *w;
    const char *msg; /* NULL = accepted */
  } cases[] = {
      {"12", "cat", NULL},
      {"12", "dog", NULL},
      {"12a", "cat", "parameter \"n\" does not match [0-9]+"},
      {"a12", "cat", "parameter \"n\" does not match [0-9]+"},
      {"1 2", "cat", "parameter \"n\" does not match [0-9]+"},
      {"12\n", "cat", "parameter \"n\" does not match [0-9]+"},
      {"12", "cats", "parameter \"w\" does not match cat|dog"},
      {"12", "hotdog", "parameter \"w\" does not match cat|dog"},
      {"12", "catdog", "parameter \"w\" does not match cat|dog"},
  };

  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char **argv = NULL, *cwd = NULL;
    char err[256] = "";
    int rc = render(&argv, &cwd, NULL, c, "p", (const char *[]){"n", "w"},
                    (const char *[]){cases[i].n, cases[i].w}, 2, err, sizeof err);

    if (!cases[i].msg) {
      assert_int_equal(rc, 0);
      assert_strv(argv, (const char *[]){"x", cases[i].n, cases[i].w}, 3);
      config_argv_free(argv);
    } else {
      assert_int_equal(rc, -EINVAL);
      assert_string_equal(err, cases[i].msg);
    }
  }
  config_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_example_loads_all_fields),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_scalars),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_unix_socket),
      cmocka_unit_test(test_lifecycle),
      cmocka_unit_test(test_authz_rules),
      cmocka_unit_test(test_default_config),
      cmocka_unit_test(test_default_config_values),
      cmocka_unit_test(test_slurm_defaults),
      cmocka_unit_test(test_slurm_full),
      cmocka_unit_test(test_slurm_bounds),
      cmocka_unit_test(test_slurm_sbatch_args),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_error_buffer),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_render_substitution_and_defaults),
      cmocka_unit_test(test_render_flags_order),
      cmocka_unit_test(test_typed),
      cmocka_unit_test(test_presets),
      cmocka_unit_test(test_secret),
      cmocka_unit_test(test_render_errors),
      cmocka_unit_test(test_render_pattern_whole_value),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
