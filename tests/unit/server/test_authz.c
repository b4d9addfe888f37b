/* Unit tests for server/authz: the rule for a configuration without an authz section
 * (local, remote, allow_insecure_remote), glob matching of identities and modules, the
 * union of several rules, admin implying everything, the anonymous identity, and role
 * names. Configurations are loaded from YAML, as prismqd gets them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "authz.h"
#include "config.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static config *load_ok(const char *yaml) {
  config *c = NULL;
  char err[512] = "";
  int rc = config_load_string(&c, yaml, strlen(yaml), "t.yaml", err, sizeof err);

  if (rc != 0) fail_msg("load failed (%d): %s", rc, err);
  return c;
}

static void test_no_authz_section(void **state) {
  (void)state;
  static const char *const identities[] = {"", "spiffe://prismq/ops/alice", "CN=x"};
  config *c = load_ok("listen: [\"tcp://0.0.0.0:1\"]\n");

  /* Local peers may do everything, whoever they say they are; remote ones nothing. */
  for (size_t i = 0; i < ARRAY_LEN(identities); i++) {
    assert_int_equal(authz_roles(c, identities[i], 1), AUTHZ_ALL);
    assert_true(authz_may_start(c, identities[i], 1, "emit"));
    assert_int_equal(authz_roles(c, identities[i], 0), 0);
    assert_false(authz_may_start(c, identities[i], 0, "emit"));
  }
  assert_int_equal(authz_roles(c, NULL, 1), AUTHZ_ALL);
  assert_int_equal(authz_roles(c, NULL, 0), 0);
  config_free(c);

  /* allow_insecure_remote opens it to remote peers as well. */
  c = load_ok("allow_insecure_remote: true\n");
  for (size_t i = 0; i < ARRAY_LEN(identities); i++) {
    assert_int_equal(authz_roles(c, identities[i], 0), AUTHZ_ALL);
    assert_true(authz_may_start(c, identities[i], 0, "anything"));
    assert_int_equal(authz_roles(c, identities[i], 1), AUTHZ_ALL);
  }
  config_free(c);
}

/* With an authz section, only rules count: not being local, nor
 * allow_insecure_remote. */
static void test_rules_override_locality(void **state) {
  (void)state;
  static const char *const docs[] = {"authz: []\n", "authz:\n",
                                     "allow_insecure_remote: true\nauthz: []\n",
                                     "authz:\n  - {identity: ops, roles: [admin]}\n"};

  for (size_t i = 0; i < ARRAY_LEN(docs); i++) {
    config *c = load_ok(docs[i]);

    for (int local = 0; local <= 1; local++) {
      assert_int_equal(authz_roles(c, "", local), 0);
      assert_int_equal(authz_roles(c, "alice", local), 0);
      assert_false(authz_may_start(c, "", local, "emit"));
      assert_false(authz_may_start(c, "alice", local, "emit"));
    }
    config_free(c);
  }
}

static void test_identity_globs(void **state) {
  (void)state;
  config *c = load_ok(
      "authz:\n"
      "  - identity: \"spiffe://prismq/ops/*\"\n"
      "    roles: [read_all]\n"
      "  - identity: \"CN=build-?\"\n"
      "    roles: [cancel_any]\n"
      "  - identity: \"CN=[ab]ob\"\n"
      "    roles: [read]\n");
  static const struct {
    const char *identity;
    unsigned roles;
  } cases[] = {
      {"spiffe://prismq/ops/alice", AUTHZ_READ_ALL | AUTHZ_ANY},
      /* No FNM_PATHNAME: "*" crosses "/". */
      {"spiffe://prismq/ops/team/bob", AUTHZ_READ_ALL | AUTHZ_ANY},
      {"spiffe://prismq/ops/", AUTHZ_READ_ALL | AUTHZ_ANY},
      {"spiffe://prismq/ops", 0},
      {"spiffe://prismq/dev/alice", 0},
      {"SPIFFE://prismq/ops/alice", 0},
      {"CN=build-1", AUTHZ_CANCEL_ANY | AUTHZ_ANY},
      {"CN=build-12", 0},
      {"CN=build-", 0},
      {"CN=bob", AUTHZ_READ | AUTHZ_ANY},
      {"CN=aob", AUTHZ_READ | AUTHZ_ANY},
      {"CN=cob", 0},
      /* The whole identity must match, not a prefix or a part. */
      {"xCN=bob", 0},
      {"CN=bobx", 0},
      {"", 0},
  };

  for (size_t i = 0; i < ARRAY_LEN(cases); i++)
    for (int local = 0; local <= 1; local++) {
      unsigned got = authz_roles(c, cases[i].identity, local);

      if (got != cases[i].roles)
        fail_msg("%s (local %d): roles %#x, want %#x", cases[i].identity, local, got,
                 cases[i].roles);
    }
  config_free(c);
}

static void test_union_of_rules(void **state) {
  (void)state;
  config *c = load_ok(
      "authz:\n"
      "  - identity: \"team/*\"\n"
      "    roles: [read]\n"
      "  - identity: \"*/alice\"\n"
      "    roles: [cancel_any]\n"
      "    modules: [\"report-*\"]\n"
      "  - identity: \"team/alice\"\n"
      "    modules: [emit]\n"
      "  - identity: \"*/carol\"\n");

  assert_int_equal(authz_roles(c, "team/alice", 0),
                   AUTHZ_READ | AUTHZ_CANCEL_ANY | AUTHZ_START | AUTHZ_ANY);
  assert_true(authz_may_start(c, "team/alice", 0, "emit"));
  assert_true(authz_may_start(c, "team/alice", 0, "report-daily"));
  assert_false(authz_may_start(c, "team/alice", 0, "report"));
  assert_false(authz_may_start(c, "team/alice", 0, "sleep"));

  assert_int_equal(authz_roles(c, "other/alice", 0), AUTHZ_CANCEL_ANY | AUTHZ_START | AUTHZ_ANY);
  assert_true(authz_may_start(c, "other/alice", 0, "report-x"));
  assert_false(authz_may_start(c, "other/alice", 0, "emit"));

  assert_int_equal(authz_roles(c, "team/bob", 0), AUTHZ_READ | AUTHZ_ANY);
  assert_false(authz_may_start(c, "team/bob", 0, "emit"));

  /* A rule with no roles and no modules still says "known" (AUTHZ_ANY), no more. */
  assert_int_equal(authz_roles(c, "x/carol", 0), AUTHZ_ANY);
  assert_false(authz_may_start(c, "x/carol", 0, "emit"));
  assert_int_equal(authz_roles(c, "team/carol", 0), AUTHZ_READ | AUTHZ_ANY);

  assert_int_equal(authz_roles(c, "nobody", 1), 0);
  config_free(c);
}

static void test_module_globs(void **state) {
  (void)state;
  config *c = load_ok(
      "authz:\n"
      "  - identity: all\n"
      "    modules: [\"*\"]\n"
      "  - identity: some\n"
      "    modules: [\"build.?\", \"[ac]*\", exact]\n"
      "  - identity: empty\n"
      "    modules: []\n"
      "    roles: [read]\n");
  static const struct {
    const char *identity, *module;
    int may;
  } cases[] = {
      {"all", "emit", 1},      {"all", "a.b-C_9", 1}, {"some", "build.1", 1},
      {"some", "build.12", 0}, {"some", "build1", 0}, {"some", "apple", 1},
      {"some", "cat", 1},      {"some", "bat", 0},    {"some", "exact", 1},
      {"some", "exactly", 0},  {"some", "xexact", 0}, {"empty", "emit", 0},
      {"nobody", "emit", 0},
  };

  for (size_t i = 0; i < ARRAY_LEN(cases); i++)
    if (authz_may_start(c, cases[i].identity, 0, cases[i].module) != cases[i].may)
      fail_msg("%s may start %s: want %d", cases[i].identity, cases[i].module, cases[i].may);
  /* AUTHZ_START comes from listing a module glob, even one that matches little; an
   * empty list gives none. */
  assert_int_equal(authz_roles(c, "all", 0), AUTHZ_START | AUTHZ_ANY);
  assert_int_equal(authz_roles(c, "some", 0), AUTHZ_START | AUTHZ_ANY);
  assert_int_equal(authz_roles(c, "empty", 0), AUTHZ_READ | AUTHZ_ANY);
  config_free(c);
}

static void test_admin_implies_all(void **state) {
  (void)state;
  config *c = load_ok(
      "authz:\n"
      "  - identity: root\n"
      "    roles: [admin]\n"
      "  - identity: \"r*\"\n"
      "    roles: [read]\n"
      "    modules: [emit]\n");

  assert_int_equal(authz_roles(c, "root", 0), AUTHZ_ALL);
  /* Any module, listed anywhere or not. */
  assert_true(authz_may_start(c, "root", 0, "emit"));
  assert_true(authz_may_start(c, "root", 0, "sleep"));
  assert_int_equal(authz_roles(c, "rob", 0), AUTHZ_READ | AUTHZ_START | AUTHZ_ANY);
  assert_false(authz_may_start(c, "rob", 0, "sleep"));
  config_free(c);
}

/* "" is the anonymous caller: matched only by globs that match the empty string. */
static void test_anonymous(void **state) {
  (void)state;
  config *c = load_ok(
      "authz:\n"
      "  - identity: \"?*\"\n"
      "    roles: [read_all]\n"
      "  - identity: \"*\"\n"
      "    roles: [read]\n"
      "    modules: [echo]\n");

  assert_int_equal(authz_roles(c, "", 0), AUTHZ_READ | AUTHZ_START | AUTHZ_ANY);
  assert_int_equal(authz_roles(c, NULL, 1), AUTHZ_READ | AUTHZ_START | AUTHZ_ANY);
  assert_true(authz_may_start(c, "", 0, "echo"));
  assert_true(authz_may_start(c, NULL, 0, "echo"));
  assert_false(authz_may_start(c, "", 0, "emit"));
  assert_int_equal(authz_roles(c, "alice", 0),
                   AUTHZ_READ | AUTHZ_READ_ALL | AUTHZ_START | AUTHZ_ANY);
  config_free(c);

  /* Rules for named callers only: the anonymous one gets nothing, local or not. */
  c = load_ok("authz:\n  - {identity: \"?*\", roles: [admin]}\n");
  assert_int_equal(authz_roles(c, "", 1), 0);
  assert_false(authz_may_start(c, "", 1, "echo"));
  assert_int_equal(authz_roles(c, "a", 0), AUTHZ_ALL);
  config_free(c);
}

static void test_role_names(void **state) {
  (void)state;
  static const struct {
    const char *name;
    unsigned bit;
  } roles[] = {
      {"read", AUTHZ_READ},   {"read_all", AUTHZ_READ_ALL}, {"cancel_any", AUTHZ_CANCEL_ANY},
      {"admin", AUTHZ_ADMIN}, {"start", AUTHZ_START},       {"any", AUTHZ_ANY},
  };
  unsigned all = 0;

  for (size_t i = 0; i < ARRAY_LEN(roles); i++) {
    assert_string_equal(authz_role_name(roles[i].bit), roles[i].name);
    /* Only the first four can be granted by name. */
    assert_int_equal(authz_role_parse(roles[i].name),
                     roles[i].bit <= AUTHZ_ADMIN ? roles[i].bit : 0);
    all |= roles[i].bit;
  }
  assert_int_equal(all, AUTHZ_ALL);
  assert_int_equal(authz_role_parse(""), 0);
  assert_int_equal(authz_role_parse("Read"), 0);
  assert_int_equal(authz_role_parse("read "), 0);
  assert_int_equal(authz_role_parse("readall"), 0);
  assert_string_equal(authz_role_name(0), "?");
  assert_string_equal(authz_role_name(AUTHZ_READ | AUTHZ_ADMIN), "?");
  assert_string_equal(authz_role_name(64), "?");
  assert_string_equal(authz_role_name(AUTHZ_ALL), "?");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_authz_section), cmocka_unit_test(test_rules_override_locality),
      cmocka_unit_test(test_identity_globs),   cmocka_unit_test(test_union_of_rules),
      cmocka_unit_test(test_module_globs),     cmocka_unit_test(test_admin_implies_all),
      cmocka_unit_test(test_anonymous),        cmocka_unit_test(test_role_names),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
