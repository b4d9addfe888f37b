/* Unit tests for server/param: typed parameter values at their edges, paths that try
 * to leave their base directory, and the report of bad parameters. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "param.h"

static config_param typed(config_param_type t) {
  config_param p;
  memset(&p, 0, sizeof p);
  p.name = "p";
  p.type = t;
  return p;
}

/* param_check's result for v: the run's value (caller frees) or NULL, with why. */
static char *check(const config_param *p, const char *v, char *why, size_t whylen) {
  char *out = (char *)"untouched";
  why[0] = '\0';
  if (param_check(&out, p, v, why, whylen) < 0) {
    assert_string_equal(out, "untouched");
    assert_true(why[0] != '\0');
    return NULL;
  }
  return out;
}

static void expect_ok(const config_param *p, const char *v, const char *want) {
  char why[256];
  char *out = check(p, v, why, sizeof why);
  if (!out) fail_msg("\"%s\" refused: %s", v, why);
  assert_string_equal(out, want);
  free(out);
}

static void expect_bad(const config_param *p, const char *v, const char *want_why) {
  char why[256];
  char *out = check(p, v, why, sizeof why);
  if (out) fail_msg("\"%s\" accepted as \"%s\"", v, out);
  assert_string_equal(why, want_why);
}

static void test_integer(void **state) {
  (void)state;
  config_param p = typed(CONFIG_PARAM_INTEGER);
  expect_ok(&p, "0", "0");
  expect_ok(&p, "-17", "-17");
  expect_ok(&p, "+5", "+5");
  expect_ok(&p, "9223372036854775807", "9223372036854775807");
  expect_ok(&p, "-9223372036854775808", "-9223372036854775808");
  expect_bad(&p, "9223372036854775808",
             "is 9223372036854775808, out of the range of a 64-bit integer");
  expect_bad(&p, "", "must be an integer");
  expect_bad(&p, "-", "must be an integer");
  expect_bad(&p, "1.0", "must be an integer");
  expect_bad(&p, " 1", "must be an integer");
  expect_bad(&p, "0x10", "must be an integer");
  expect_bad(&p, "1e3", "must be an integer");
  p.has_min = p.has_max = 1;
  p.min = -2;
  p.max = 10;
  expect_ok(&p, "-2", "-2");
  expect_ok(&p, "10", "10");
  expect_bad(&p, "-3", "is -3, below the minimum -2");
  expect_bad(&p, "11", "is 11, above the maximum 10");
  /* Exact at the edge of int64, where a double loses the last digits. */
  p.min = -9223372036854775807.0 - 1;
  p.max = 9007199254740992.0; /* 2^53 */
  expect_ok(&p, "9007199254740992", "9007199254740992");
  expect_bad(&p, "9007199254740993", "is 9007199254740993, above the maximum 9.00719925474099e+15");
}

static void test_number(void **state) {
  (void)state;
  config_param p = typed(CONFIG_PARAM_NUMBER);
  expect_ok(&p, "0.5", "0.5");
  expect_ok(&p, "-1e-3", "-1e-3");
  expect_ok(&p, "7", "7");
  expect_bad(&p, "", "must be a number");
  expect_bad(&p, "nan", "must be a number");
  expect_bad(&p, "inf", "must be a number");
  expect_bad(&p, "0x1p3", "must be a number");
  expect_bad(&p, "1.2.3", "must be a number");
  expect_bad(&p, "1e999", "is 1e999, out of the range of a number");
  p.has_min = p.has_max = 1;
  p.min = 0;
  p.max = 0.75;
  expect_ok(&p, "0", "0");
  expect_ok(&p, "0.75", "0.75");
  expect_bad(&p, "-0.001", "is -0.001, below the minimum 0");
  expect_bad(&p, "0.7500001", "is 0.7500001, above the maximum 0.75");
}

static void test_boolean(void **state) {
  (void)state;
  config_param p = typed(CONFIG_PARAM_BOOLEAN);
  const char *yes[] = {"true", "TRUE", "True", "1", "yes", "on", "ON"};
  const char *no[] = {"false", "FALSE", "0", "no", "off", "Off"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) expect_ok(&p, yes[i], "true");
  for (size_t i = 0; i < sizeof no / sizeof *no; i++) expect_ok(&p, no[i], "false");
  expect_bad(&p, "", "must be true or false");
  expect_bad(&p, "2", "must be true or false");
  expect_bad(&p, "truee", "must be true or false");
}

static void test_select(void **state) {
  (void)state;
  config_param p = typed(CONFIG_PARAM_SELECT);
  char *options[] = {"fast", "slow", NULL};
  p.options = options;
  p.noptions = 2;
  expect_ok(&p, "fast", "fast");
  expect_ok(&p, "slow", "slow");
  expect_bad(&p, "Fast", "must be one of \"fast\", \"slow\"");
  expect_bad(&p, "", "must be one of \"fast\", \"slow\"");
  expect_bad(&p, "fastslow", "must be one of \"fast\", \"slow\"");
}

static void test_lengths(void **state) {
  (void)state;
  config_param p = typed(CONFIG_PARAM_STRING);
  p.min_length = 2;
  p.max_length = 4;
  expect_ok(&p, "ab", "ab");
  expect_ok(&p, "abcd", "abcd");
  expect_bad(&p, "a", "is 1 bytes long, shorter than the minimum 2");
  expect_bad(&p, "abcde", "is 5 bytes long, longer than the maximum 4");
  /* Bytes, not characters: "é" is two. */
  expect_bad(&p, "\xc3\xa9\xc3\xa9\xc3\xa9", "is 6 bytes long, longer than the maximum 4");
  /* Lengths apply to every type, before the type's own check. */
  p.type = CONFIG_PARAM_INTEGER;
  expect_bad(&p, "12345", "is 5 bytes long, longer than the maximum 4");
  p.max_length = 0; /* no limit */
  expect_ok(&p, "123456789", "123456789");
}

static void test_pattern_with_type(void **state) {
  (void)state;
  config_param p = typed(CONFIG_PARAM_INTEGER);
  p.pattern = "[0-9]+";
  assert_int_equal(regcomp(&p.re, "^([0-9]+)$", REG_EXTENDED | REG_NOSUB), 0);
  expect_ok(&p, "42", "42");
  expect_bad(&p, "-42", "does not match [0-9]+");
  expect_bad(&p, "x", "must be an integer"); /* the type is checked first */
  regfree(&p.re);
}

/* A temporary tree: base/, base/sub/, base/in -> sub, base/out -> /, base/dangling ->
 * base/nowhere, and outside/ next to base. */
struct tree {
  char root[64], base[96], resolved[PATH_MAX];
};

static void make_tree(struct tree *t) {
  char path[PATH_MAX];
  strcpy(t->root, "/tmp/prismq-param-XXXXXX");
  assert_non_null(mkdtemp(t->root));
  snprintf(t->base, sizeof t->base, "%s/base", t->root);
  assert_int_equal(mkdir(t->base, 0700), 0);
  snprintf(path, sizeof path, "%s/sub", t->base);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(path, sizeof path, "%s/outside", t->root);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(path, sizeof path, "%s/in", t->base);
  assert_int_equal(symlink("sub", path), 0);
  snprintf(path, sizeof path, "%s/out", t->base);
  assert_int_equal(symlink("../outside", path), 0);
  snprintf(path, sizeof path, "%s/dangling", t->base);
  assert_int_equal(symlink("/nonexistent-prismq-target/x", path), 0);
  assert_non_null(realpath(t->base, t->resolved));
}

static void remove_tree(const struct tree *t) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->root);
  assert_int_equal(system(cmd), 0);
}

static void test_path(void **state) {
  (void)state;
  struct tree t;
  char want[PATH_MAX + 64], why[256];
  make_tree(&t);
  config_param p = typed(CONFIG_PARAM_PATH);
  p.base_dir = t.base;
  assert_int_equal(param_resolve_base(&p.base_resolved, t.base), 0);
  assert_string_equal(p.base_resolved, t.resolved);

  snprintf(want, sizeof want, "%s/sub/file", t.resolved);
  expect_ok(&p, "sub/file", want);
  expect_ok(&p, "./sub//file", want);
  expect_ok(&p, "in/file", want);       /* through a link that stays inside */
  expect_ok(&p, "x/../sub/file", want); /* lexically, before links */
  snprintf(want, sizeof want, "%s/new/deeper/file", t.resolved);
  expect_ok(&p, "new/deeper/file", want); /* need not exist yet */
  expect_ok(&p, ".", t.resolved);
  char abs[PATH_MAX + 8];
  snprintf(abs, sizeof abs, "%s/sub", t.base); /* absolute, as written */
  snprintf(want, sizeof want, "%s/sub", t.resolved);
  expect_ok(&p, abs, want);

  snprintf(want, sizeof want, "leads outside %s", t.base);
  expect_bad(&p, "..", want);
  expect_bad(&p, "../outside/file", want);
  expect_bad(&p, "out/file", want); /* a link that leads out */
  expect_bad(&p, "/etc/passwd", want);
  expect_bad(&p, "sub/../../base2", want); /* a sibling that shares the prefix */
  expect_bad(&p, "", "must not be empty");
  expect_bad(&p, "dangling", "leads through a symbolic link that points nowhere");
  expect_bad(&p, "dangling/x", "leads through a symbolic link that points nowhere");

  /* A file where a directory should be. */
  snprintf(want, sizeof want, "%s/sub/f", t.base);
  FILE *f = fopen(want, "w");
  assert_non_null(f);
  fclose(f);
  assert_null(check(&p, "sub/f/x", why, sizeof why));
  assert_string_equal(why, "cannot be resolved: Not a directory");

  free(p.base_resolved);
  assert_int_equal(param_resolve_base(&p.base_resolved, "relative/dir"), -EINVAL);
  remove_tree(&t);
}

static void test_types_by_name(void **state) {
  (void)state;
  config_param_type t;
  const char *names[] = {"string", "integer", "number", "boolean", "select", "secret", "path"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    assert_int_equal(param_type_parse(&t, names[i]), 0);
    assert_int_equal((int)t, (int)i + 1); /* the contract's ParameterType numbers */
    assert_string_equal(param_type_name(t), names[i]);
  }
  t = CONFIG_PARAM_STRING;
  assert_int_equal(param_type_parse(&t, "String"), -EINVAL);
  assert_int_equal(param_type_parse(&t, ""), -EINVAL);
  assert_int_equal((int)t, CONFIG_PARAM_STRING);
  assert_string_equal(param_type_name((config_param_type)0), "?");
  assert_string_equal(param_type_name((config_param_type)99), "?");
}

static void test_report(void **state) {
  (void)state;
  param_report r = PARAM_REPORT_INIT;
  char buf[64];
  param_report_join(&r, buf, sizeof buf);
  assert_string_equal(buf, "");
  param_report_add(&r, "a", "parameter \"%s\" is bad", "a");
  param_report_add(&r, "b", "second %d", 2);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.items[1].name, "b");
  param_report_join(&r, buf, sizeof buf);
  assert_string_equal(buf, "parameter \"a\" is bad; second 2");
  param_report_join(&r, buf, 10); /* truncated, terminated */
  assert_string_equal(buf, "parameter");
  param_report_clear(&r);
  assert_int_equal(r.n, 0);
  assert_null(r.items);
  param_report_clear(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_integer), cmocka_unit_test(test_number),
      cmocka_unit_test(test_boolean), cmocka_unit_test(test_select),
      cmocka_unit_test(test_lengths), cmocka_unit_test(test_pattern_with_type),
      cmocka_unit_test(test_path),    cmocka_unit_test(test_types_by_name),
      cmocka_unit_test(test_report),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
