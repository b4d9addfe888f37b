/* testcert: certificates made in the test process with OpenSSL's API, for the TLS
 * unit tests (no openssl command, no files kept: test_remove_tree at teardown). Include
 * after cmocka.h. */
#ifndef PRISMQ_TESTCERT_H
#define PRISMQ_TESTCERT_H

#include <limits.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../testos.h"

/* One generated certificate with its key, and the PEM files they were written to. */
struct cert {
  X509 *x;
  EVP_PKEY *k;
  char pem[PATH_MAX], key[PATH_MAX];
};

/* Makes a P-256 certificate for subject CN `cn` (NULL: an empty subject) with the SANs
 * `san` in OpenSSL's form ("DNS:a,IP:b"; NULL: none), valid from `from` to `to` seconds
 * from now, signed by `ca` (NULL: self-signed, a CA), and writes it to DIR/NAME.pem
 * and its key to DIR/NAME.key. */
static inline void make_cert(const char *dir, struct cert *out, const char *name, const char *cn,
                             const char *san, long from, long to, const struct cert *ca) {
  static long serial;
  X509 *x = X509_new();
  EVP_PKEY *k = EVP_EC_gen("P-256");
  assert_true(x && k);
  assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
  assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial), 1);
  assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from));
  assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to));
  if (cn)
    assert_int_equal(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                                (const unsigned char *)cn, -1, -1, 0),
                     1);
  assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(ca ? ca->x : x)), 1);
  assert_int_equal(X509_set_pubkey(x, k), 1);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, ca ? ca->x : x, x, NULL, NULL, 0);
  const struct {
    int nid;
    const char *value;
  } exts[] = {{NID_basic_constraints, ca ? "CA:FALSE" : "critical,CA:TRUE"},
              {NID_subject_alt_name, san}};
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    if (!exts[i].value) continue;
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
  }
  assert_true(X509_sign(x, ca ? ca->k : k, EVP_sha256()) > 0);
  snprintf(out->pem, sizeof out->pem, "%s/%s.pem", dir, name);
  snprintf(out->key, sizeof out->key, "%s/%s.key", dir, name);
  FILE *fc = fopen(out->pem, "w"), *fk = fopen(out->key, "w");
  assert_true(fc && fk);
  assert_int_equal(PEM_write_X509(fc, x), 1);
  assert_int_equal(PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(fclose(fc) | fclose(fk), 0);
  out->x = x;
  out->k = k;
}

/* Frees a certificate made by make_cert (its files stay). */
static inline void cert_free(struct cert *c) {
  X509_free(c->x);
  EVP_PKEY_free(c->k);
}

#endif
