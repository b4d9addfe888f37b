#include "tlsctx.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* What one read(2) of a TLS socket may take (several records). */
#define TLS_READ_BUFFER (64u << 10)

/* ALPN wire form: length-prefixed protocol names. A server's, in its order of preference. */
static const unsigned char alpn_h2[] = {2, 'h', '2'};
static const unsigned char alpn_server[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

/* Fills err with `what` and why (a system error such as a missing file, else the
 * reason of OpenSSL's most recent error), then clears OpenSSL's queue. */
static int ssl_fail(char *err, size_t errlen, const char *what) {
  char detail[256] = "";
  unsigned long e, last = 0;
  int sys = 0;
  while ((e = ERR_get_error()) != 0) {
    if (ERR_SYSTEM_ERROR(e) && !sys) sys = ERR_GET_REASON(e);
    last = e;
  }
  if (sys)
    snprintf(detail, sizeof detail, "%s", strerror(sys));
  else if (last && ERR_reason_error_string(last))
    snprintf(detail, sizeof detail, "%s", ERR_reason_error_string(last));
  else if (last)
    ERR_error_string_n(last, detail, sizeof detail);
  if (err && errlen) snprintf(err, errlen, "%s%s%s", what, detail[0] ? ": " : "", detail);
  return -EINVAL;
}

static void ctx_common(SSL_CTX *ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* A peer closing the socket without close_notify is an ordinary end of stream for
   * HTTP/2 (gRPC clients do it), not an error. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  /* conn_write hands SSL_write the front of an evbuffer, which may move between a
   * write that would block and its retry. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_RELEASE_BUFFERS);
  /* Without read-ahead OpenSSL reads each record with two read(2) calls, its header
   * and then its body; with it, one read takes what the socket has, up to the buffer
   * (conn.c wakes its reader again for what stays buffered there). */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER);
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  unsigned char *sel;
  unsigned char sel_len;
  /* The server's list first: its order wins (h2 for a client offering both). */
  if (SSL_select_next_proto(&sel, &sel_len, alpn_server, sizeof alpn_server, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  *outlen = sel_len;
  return SSL_TLSEXT_ERR_OK;
}

/* The certificate must be valid now: an expired one would fail every client. */
static int check_validity(SSL_CTX *ctx, const char *path, char *err, size_t errlen) {
  X509 *cert = SSL_CTX_get0_certificate(ctx);
  if (!cert) return 0;
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
    if (err && errlen) snprintf(err, errlen, "tls.cert %s has expired", path);
    return -EINVAL;
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0) {
    if (err && errlen) snprintf(err, errlen, "tls.cert %s is not valid yet", path);
    return -EINVAL;
  }
  return 0;
}

static int load_crl(SSL_CTX *ctx, const char *path, char *err, size_t errlen) {
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  X509_LOOKUP *lk = X509_STORE_add_lookup(store, X509_LOOKUP_file());
  char what[600];
  snprintf(what, sizeof what, "cannot load tls.crl %s", path);
  if (!lk || X509_load_crl_file(lk, path, X509_FILETYPE_PEM) <= 0)
    return ssl_fail(err, errlen, what);
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  return 0;
}

static int load_client_ca(SSL_CTX *ctx, const tlsctx_server_opts *o, char *err, size_t errlen) {
  char what[600];
  snprintf(what, sizeof what, "cannot load tls.client_ca %s", o->client_ca);
  if (SSL_CTX_load_verify_locations(ctx, o->client_ca, NULL) != 1)
    return ssl_fail(err, errlen, what);
  STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca);
  if (!names) return ssl_fail(err, errlen, what);
  SSL_CTX_set_client_CA_list(ctx, names);
  SSL_CTX_set_verify(
      ctx, SSL_VERIFY_PEER | (o->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
  /* Resuming a session whose client was verified needs a session id context. */
  static const unsigned char sid_ctx[] = "prismqd";
  SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
  return o->crl ? load_crl(ctx, o->crl, err, errlen) : 0;
}

/* The server's key, which must be the certificate's: OpenSSL checks that as it loads
 * the key, and says so in its own words. */
static int load_key(SSL_CTX *ctx, const tlsctx_server_opts *o, char *err, size_t errlen) {
  char what[600];
  snprintf(what, sizeof what, "cannot load tls.key %s", o->key ? o->key : "(none)");
  if (o->key && SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) == 1 &&
      SSL_CTX_check_private_key(ctx) == 1)
    return 0;
  unsigned long e = ERR_peek_last_error();
  if (o->key && (!e || ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)) {
    ERR_clear_error();
    if (err && errlen)
      snprintf(err, errlen, "tls.key %s does not match tls.cert %s", o->key, o->cert);
    return -EINVAL;
  }
  return ssl_fail(err, errlen, what);
}

int tlsctx_server_new(SSL_CTX **out, const tlsctx_server_opts *o, char *err, size_t errlen) {
  char what[600];
  int rc;
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return ssl_fail(err, errlen, "cannot create a TLS context");
  ctx_common(ctx);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
  /* One ticket per connection is enough to resume it; OpenSSL sends two by default. */
  SSL_CTX_set_num_tickets(ctx, 1);
  /* The chain sent is tls.cert's, not completed from the client CAs' store. */
  SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
  snprintf(what, sizeof what, "cannot load tls.cert %s", o->cert ? o->cert : "(none)");
  if (!o->cert || SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
    rc = ssl_fail(err, errlen, what);
    goto fail;
  }
  if ((rc = load_key(ctx, o, err, errlen)) < 0) goto fail;
  if ((rc = check_validity(ctx, o->cert, err, errlen)) < 0) goto fail;
  if (o->client_ca && (rc = load_client_ca(ctx, o, err, errlen)) < 0) goto fail;
  *out = ctx;
  return 0;

fail:
  SSL_CTX_free(ctx);
  return rc;
}

int tlsctx_client_new(SSL_CTX **out, const tlsctx_client_opts *o, char *err, size_t errlen) {
  char what[600];
  int rc;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return ssl_fail(err, errlen, "cannot create a TLS context");
  ctx_common(ctx);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof alpn_h2) != 0) {
    rc = ssl_fail(err, errlen, "cannot set ALPN");
    goto fail;
  }
  snprintf(what, sizeof what, "cannot load the CA file %s", o->ca_file ? o->ca_file : "(system)");
  if ((o->ca_file ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)
                  : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
    rc = ssl_fail(err, errlen, what);
    goto fail;
  }
  if (!o->cert_file != !o->key_file) {
    if (err && errlen)
      snprintf(err, errlen, "%s %s given without %s",
               o->cert_file ? "client certificate" : "client key",
               o->cert_file ? o->cert_file : o->key_file,
               o->cert_file ? "its key" : "a client certificate");
    rc = -EINVAL;
    goto fail;
  }
  if (o->cert_file) {
    snprintf(what, sizeof what, "cannot load the client certificate %s", o->cert_file);
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
      rc = ssl_fail(err, errlen, what);
      goto fail;
    }
    snprintf(what, sizeof what, "cannot load the client key %s", o->key_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      rc = ssl_fail(err, errlen, what);
      goto fail;
    }
  }
  *out = ctx;
  return 0;

fail:
  SSL_CTX_free(ctx);
  return rc;
}

/* Copies an ASN1 string if it is printable ASCII and not a unix-peer name. */
static int take_name(char *buf, size_t len, const ASN1_STRING *s) {
  int n = ASN1_STRING_length(s);
  const unsigned char *p = ASN1_STRING_get0_data(s);
  if (n <= 0 || (size_t)n >= len) return 0;
  for (int i = 0; i < n; i++)
    if (p[i] < 0x21 || p[i] > 0x7e) return 0;
  if (n >= 5 && memcmp(p, "unix:", 5) == 0) return 0;
  memcpy(buf, p, (size_t)n);
  buf[n] = '\0';
  return 1;
}

static int san_name(char *buf, size_t len, X509 *cert, int type) {
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  int found = 0;
  for (int i = 0; names && !found && i < sk_GENERAL_NAME_num(names); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
    if (g->type == type)
      found = take_name(buf, len, type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName);
  }
  GENERAL_NAMES_free(names);
  return found;
}

void tlsctx_peer_identity(char *buf, size_t len, SSL *ssl) {
  buf[0] = '\0';
  X509 *cert = SSL_get0_peer_certificate(ssl);
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return;
  if (san_name(buf, len, cert, GEN_URI) || san_name(buf, len, cert, GEN_DNS)) return;
  const X509_NAME *subj = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
  if (i >= 0 && !take_name(buf, len, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i))))
    buf[0] = '\0';
}
