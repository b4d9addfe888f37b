/* Unit tests for common/tlsctx: server and client contexts build from good files, and
 * every bad file is refused with -EINVAL and a message an operator can act on: which
 * setting, which file, and why (missing, not matching, expired, not yet valid). The
 * certificates are made here with OpenSSL's API into a temporary directory. The
 * identity a verified peer certificate carries is tested through conn (test_conn.c). */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "testcert.h"
#include "tlsctx.h"

#define DAY (24L * 3600)

enum { CA, SERVER, EXPIRED, NOT_YET, NCERTS };

static char g_dir[256];
static struct cert g_certs[NCERTS];
static char g_missing[PATH_MAX]; /* a file that does not exist */
static char g_garbage[PATH_MAX]; /* a file that holds no PEM at all */

static int group_setup(void **state) {
  (void)state;
  if (!test_mkdtemp(g_dir, sizeof g_dir, "tlsctx-test")) return -1;
  make_cert(g_dir, &g_certs[CA], "ca", "Test CA", NULL, -DAY, 30 * DAY, NULL);
  make_cert(g_dir, &g_certs[SERVER], "server", "localhost", "DNS:localhost,IP:127.0.0.1", -DAY,
            30 * DAY, &g_certs[CA]);
  make_cert(g_dir, &g_certs[EXPIRED], "expired", "localhost", "DNS:localhost", -30 * DAY, -DAY,
            &g_certs[CA]);
  make_cert(g_dir, &g_certs[NOT_YET], "not-yet", "localhost", "DNS:localhost", DAY, 30 * DAY,
            &g_certs[CA]);
  snprintf(g_missing, sizeof g_missing, "%s/missing.pem", g_dir);
  snprintf(g_garbage, sizeof g_garbage, "%s/garbage.pem", g_dir);
  FILE *fp = fopen(g_garbage, "w");
  if (!fp || fputs("this is not a certificate\n", fp) < 0 || fclose(fp) != 0) return -1;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  for (int i = 0; i < NCERTS; i++) {
    cert_free(&g_certs[i]);
  }
  return test_remove_tree(g_dir);
}

/* ---- helpers ---------------------------------------------------------------------- */

/* `err` holds each of the NULL-terminated strings that follow. */
static void expect_msg(const char *err, ...) {
  va_list ap;
  va_start(ap, err);
  for (const char *want; (want = va_arg(ap, const char *)) != NULL;) {
    if (!strstr(err, want)) fail_msg("message \"%s\" lacks \"%s\"", err, want);
  }
  va_end(ap);
}

static char g_mark; /* stands for an *out that must stay untouched */

/* Building a server context from `o` fails with -EINVAL, leaves *out alone, and fills
 * err (errlen bytes, NUL-terminated) with the message. */
static void server_fails(const tlsctx_server_opts *o, char *err, size_t errlen) {
  SSL_CTX *ctx = (SSL_CTX *)&g_mark;
  err[0] = '\0';
  assert_int_equal(tlsctx_server_new(&ctx, o, err, errlen), -EINVAL);
  assert_ptr_equal(ctx, &g_mark);
  assert_true(strlen(err) > 0);
}

static void client_fails(const tlsctx_client_opts *o, char *err, size_t errlen) {
  SSL_CTX *ctx = (SSL_CTX *)&g_mark;
  err[0] = '\0';
  assert_int_equal(tlsctx_client_new(&ctx, o, err, errlen), -EINVAL);
  assert_ptr_equal(ctx, &g_mark);
  assert_true(strlen(err) > 0);
}

static tlsctx_server_opts server_opts(int cert) {
  tlsctx_server_opts o = TLSCTX_SERVER_OPTS_INIT;
  o.cert = g_certs[cert].pem;
  o.key = g_certs[cert].key;
  return o;
}

/* ---- tests: server ---------------------------------------------------------------- */

static void test_server_ok(void **state) {
  (void)state;
  char err[1024] = "";
  SSL_CTX *ctx = NULL;
  tlsctx_server_opts o = server_opts(SERVER);
  assert_int_equal(tlsctx_server_new(&ctx, &o, err, sizeof err), 0);
  assert_non_null(ctx);
  assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  /* Without client_ca no client certificate is asked for. */
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
  assert_true(X509_cmp(SSL_CTX_get0_certificate(ctx), g_certs[SERVER].x) == 0);
  SSL_CTX_free(ctx);

  /* client_ca asks for a certificate; require_client_cert refuses a client without. */
  o.client_ca = g_certs[CA].pem;
  assert_int_equal(tlsctx_server_new(&ctx, &o, err, sizeof err), 0);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
  SSL_CTX_free(ctx);
  o.require_client_cert = 1;
  assert_int_equal(tlsctx_server_new(&ctx, &o, err, sizeof err), 0);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  SSL_CTX_free(ctx);
}

static void test_server_missing_files(void **state) {
  (void)state;
  char err[1024];
  tlsctx_server_opts o = server_opts(SERVER);
  o.cert = g_missing;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.cert", g_missing, "No such file or directory", NULL);

  o = server_opts(SERVER);
  o.key = g_missing;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.key", g_missing, "No such file or directory", NULL);

  o = server_opts(SERVER);
  o.client_ca = g_missing;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.client_ca", g_missing, "No such file or directory", NULL);

  o = server_opts(SERVER);
  o.client_ca = g_certs[CA].pem;
  o.crl = g_missing;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.crl", g_missing, NULL);

  /* Not given at all. */
  o = server_opts(SERVER);
  o.cert = NULL;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.cert", NULL);
  o = server_opts(SERVER);
  o.key = NULL;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.key", NULL);
}

/* Files that are there but are no PEM of the kind expected. */
static void test_server_garbage_files(void **state) {
  (void)state;
  char err[1024];
  tlsctx_server_opts o = server_opts(SERVER);
  o.cert = g_garbage;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.cert", g_garbage, NULL);
  o = server_opts(SERVER);
  o.key = g_garbage;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.key", g_garbage, NULL);
  o = server_opts(SERVER);
  o.client_ca = g_garbage;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.client_ca", g_garbage, NULL);
}

static void test_server_key_mismatch(void **state) {
  (void)state;
  char err[1024];
  tlsctx_server_opts o = server_opts(SERVER);
  o.key = g_certs[CA].key;
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.key", g_certs[CA].key, "does not match", g_certs[SERVER].pem, NULL);
}

static void test_server_expired(void **state) {
  (void)state;
  char err[1024];
  tlsctx_server_opts o = server_opts(EXPIRED);
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.cert", g_certs[EXPIRED].pem, "has expired", NULL);
}

static void test_server_not_yet_valid(void **state) {
  (void)state;
  char err[1024];
  tlsctx_server_opts o = server_opts(NOT_YET);
  server_fails(&o, err, sizeof err);
  expect_msg(err, "tls.cert", g_certs[NOT_YET].pem, "not valid yet", NULL);
}

/* A message longer than the caller's buffer is cut, still NUL-terminated. */
static void test_server_short_err_buffer(void **state) {
  (void)state;
  char err[16];
  memset(err, 'x', sizeof err);
  tlsctx_server_opts o = server_opts(SERVER);
  o.cert = g_missing;
  server_fails(&o, err, sizeof err);
  assert_int_equal(strlen(err), sizeof err - 1);
}

/* ---- tests: client ---------------------------------------------------------------- */

static void test_client_ok(void **state) {
  (void)state;
  char err[1024] = "";
  SSL_CTX *ctx = NULL;
  tlsctx_client_opts o = TLSCTX_CLIENT_OPTS_INIT;
  o.ca_file = g_certs[CA].pem;
  assert_int_equal(tlsctx_client_new(&ctx, &o, err, sizeof err), 0);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
  assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  assert_null(SSL_CTX_get0_certificate(ctx));
  SSL_CTX_free(ctx);
  /* With a client certificate (any certificate with its key will do). */
  o.cert_file = g_certs[SERVER].pem;
  o.key_file = g_certs[SERVER].key;
  assert_int_equal(tlsctx_client_new(&ctx, &o, err, sizeof err), 0);
  assert_true(X509_cmp(SSL_CTX_get0_certificate(ctx), g_certs[SERVER].x) == 0);
  SSL_CTX_free(ctx);
  /* No CA file: the system's. */
  tlsctx_client_opts sys = TLSCTX_CLIENT_OPTS_INIT;
  assert_int_equal(tlsctx_client_new(&ctx, &sys, err, sizeof err), 0);
  SSL_CTX_free(ctx);
}

static void test_client_cert_key_pairing(void **state) {
  (void)state;
  char err[1024];
  tlsctx_client_opts o = TLSCTX_CLIENT_OPTS_INIT;
  o.ca_file = g_certs[CA].pem;
  o.key_file = g_certs[SERVER].key;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "client key", g_certs[SERVER].key, "without a client certificate", NULL);

  o.key_file = NULL;
  o.cert_file = g_certs[SERVER].pem;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "client certificate", g_certs[SERVER].pem, "without its key", NULL);

  o.key_file = g_certs[CA].key;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "client key", g_certs[CA].key, NULL);

  o.key_file = g_missing;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "client key", g_missing, "No such file or directory", NULL);

  o.cert_file = g_missing;
  o.key_file = g_certs[SERVER].key;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "client certificate", g_missing, "No such file or directory", NULL);
}

static void test_client_bad_ca(void **state) {
  (void)state;
  char err[1024];
  tlsctx_client_opts o = TLSCTX_CLIENT_OPTS_INIT;
  o.ca_file = g_missing;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "CA file", g_missing, "No such file or directory", NULL);
  o.ca_file = g_garbage;
  client_fails(&o, err, sizeof err);
  expect_msg(err, "CA file", g_garbage, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_ok),
      cmocka_unit_test(test_server_missing_files),
      cmocka_unit_test(test_server_garbage_files),
      cmocka_unit_test(test_server_key_mismatch),
      cmocka_unit_test(test_server_expired),
      cmocka_unit_test(test_server_not_yet_valid),
      cmocka_unit_test(test_server_short_err_buffer),
      cmocka_unit_test(test_client_ok),
      cmocka_unit_test(test_client_cert_key_pairing),
      cmocka_unit_test(test_client_bad_ca),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
