/* Unit tests for server/ui: the embedded files of the web page found by request path,
 * with their content types and entity tags, and If-None-Match matched against a tag. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "compat.h"
#include "ui.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A quoted tag of 32 lowercase hex digits. */
static void assert_etag_shape(const char *etag) {
  assert_int_equal(strlen(etag), 34);
  assert_int_equal(etag[0], '"');
  assert_int_equal(etag[33], '"');
  for (size_t i = 1; i < 33; i++)
    if (!strchr("0123456789abcdef", etag[i])) fail_msg("%s: not a hex digit at %zu", etag, i);
}

static void test_index_at_root(void **state) {
  (void)state;
  ui_asset root, index;
  assert_int_equal(ui_lookup(&root, "/"), 0);
  assert_int_equal(ui_lookup(&index, "/index.html"), 0);
  assert_ptr_equal(root.data, index.data);
  assert_int_equal(root.len, index.len);
  assert_string_equal(root.content_type, "text/html; charset=utf-8");
  assert_string_equal(root.etag, index.etag);
  assert_true(root.len > 0);
  assert_non_null(compat_memmem(root.data, root.len, "<!doctype html>", 15));
  /* Its script and style are files (the CSP allows no inline ones). */
  assert_non_null(compat_memmem(root.data, root.len, "src=\"/app.js\"", 13));
  assert_non_null(compat_memmem(root.data, root.len, "href=\"/style.css\"", 17));
  assert_null(compat_memmem(root.data, root.len, "<style", 6));
  assert_null(compat_memmem(root.data, root.len, "<script>", 8));
  assert_etag_shape(root.etag);
}

static void test_types(void **state) {
  (void)state;
  static const struct {
    const char *path, *type;
  } files[] = {
      {"/app.js", "text/javascript; charset=utf-8"},
      {"/style.css", "text/css; charset=utf-8"},
      {"/favicon.svg", "image/svg+xml; charset=utf-8"},
  };
  for (size_t i = 0; i < ARRAY_LEN(files); i++) {
    ui_asset a;
    if (ui_lookup(&a, files[i].path) != 0) fail_msg("%s: not found", files[i].path);
    assert_string_equal(a.content_type, files[i].type);
    assert_true(a.len > 0);
    assert_etag_shape(a.etag);
  }
}

/* The page loads nothing from elsewhere: no absolute URL in its HTML, script or style
 * (the icon's SVG namespace is a name, not a request), no CSS import or url(). */
static void test_nothing_external(void **state) {
  (void)state;
  static const char *const paths[] = {"/", "/app.js", "/style.css"};
  for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
    ui_asset a;
    assert_int_equal(ui_lookup(&a, paths[i]), 0);
    if (compat_memmem(a.data, a.len, "://", 3)) fail_msg("%s: holds an absolute URL", paths[i]);
    if (compat_memmem(a.data, a.len, "url(", 4) || compat_memmem(a.data, a.len, "@import", 7))
      fail_msg("%s: loads a CSS resource", paths[i]);
  }
}

static void test_unknown_paths(void **state) {
  (void)state;
  static const char *const paths[] = {"",           "/nope.js",  "/APP.JS",
                                      "app.js",     "/app.js/",  "//app.js",
                                      "/ui/app.js", "/./app.js", "/index.htm"};
  for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
    ui_asset a = {NULL, 7, "untouched", NULL};
    if (ui_lookup(&a, paths[i]) != -ENOENT) fail_msg("%s: found", paths[i]);
    assert_null(a.data);
    assert_int_equal(a.len, 7);
    assert_string_equal(a.content_type, "untouched");
  }
}

static void test_etag_stable_and_distinct(void **state) {
  (void)state;
  ui_asset a, b, css;
  assert_int_equal(ui_lookup(&a, "/app.js"), 0);
  assert_int_equal(ui_lookup(&b, "/app.js"), 0);
  assert_int_equal(ui_lookup(&css, "/style.css"), 0);
  assert_ptr_equal(a.etag, b.etag); /* computed once, kept */
  assert_string_equal(a.etag, b.etag);
  assert_string_not_equal(a.etag, css.etag);
}

static void test_if_none_match(void **state) {
  (void)state;
  ui_asset a;
  assert_int_equal(ui_lookup(&a, "/"), 0);
  char list[200], weak[64], other[64];
  snprintf(list, sizeof list, "\"x,y\", W/\"abc\",%s , \"z\"", a.etag);
  snprintf(weak, sizeof weak, "W/%s", a.etag);
  snprintf(other, sizeof other, "\"%.31s\"", a.etag + 1); /* one digit short */
  assert_true(ui_etag_matches(&a, a.etag));
  assert_true(ui_etag_matches(&a, weak));
  assert_true(ui_etag_matches(&a, list));
  assert_true(ui_etag_matches(&a, "*"));
  assert_false(ui_etag_matches(&a, NULL));
  assert_false(ui_etag_matches(&a, ""));
  assert_false(ui_etag_matches(&a, other));
  assert_false(ui_etag_matches(&a, "\"abc\", W/\"def\""));
  assert_false(ui_etag_matches(&a, a.etag + 1)); /* unquoted */
  assert_false(ui_etag_matches(&a, "W/"));
  assert_false(ui_etag_matches(&a, ", ,\""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_index_at_root),
      cmocka_unit_test(test_types),
      cmocka_unit_test(test_nothing_external),
      cmocka_unit_test(test_unknown_paths),
      cmocka_unit_test(test_etag_stable_and_distinct),
      cmocka_unit_test(test_if_none_match),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
