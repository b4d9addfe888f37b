/* tlsctx: OpenSSL contexts for gRPC over TLS, server and client side, and the identity
 * a verified peer certificate carries.
 *
 * Both sides: TLS 1.2 at least (1.3 preferred, as OpenSSL does), no renegotiation.
 * ALPN: a client offers "h2" only (gRPC requires h2 over TLS); a server selects "h2"
 * when offered, else "http/1.1" (its HTTP/1.1 side, for browsers and curl), and refuses
 * a client that offers neither with the no_application_protocol alert (a client that
 * offers no ALPN at all gets none: HTTP/1.1). Session resumption with tickets is on.
 *
 * Library code: failures are returned with a message, never aborted on. */
#ifndef PRISMQ_TLSCTX_H
#define PRISMQ_TLSCTX_H

#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

typedef struct tlsctx_server_opts {
  const char *cert;        /* PEM certificate chain, leaf first (required) */
  const char *key;         /* PEM private key of the leaf (required) */
  const char *client_ca;   /* PEM CAs to verify client certificates; NULL: none asked for */
  const char *crl;         /* PEM CRLs of those CAs (needs client_ca); NULL: none */
  int require_client_cert; /* refuse a client without a valid certificate (needs client_ca) */
} tlsctx_server_opts;

#define TLSCTX_SERVER_OPTS_INIT \
  { NULL, NULL, NULL, NULL, 0 }

/* Builds a server context. Fails when a file cannot be read or parsed, the key does
 * not match the certificate, or the certificate has expired or is not yet valid.
 * Returns 0 and sets *out (caller frees with SSL_CTX_free), or -EINVAL with `err`
 * (errlen bytes) saying which file and why, e.g. "tls.key /x.key does not match
 * tls.cert /x.pem". */
int tlsctx_server_new(SSL_CTX **out, const tlsctx_server_opts *o, char *err, size_t errlen);

typedef struct tlsctx_client_opts {
  const char *ca_file;   /* PEM CAs to verify the server with; NULL: the system's */
  const char *cert_file; /* PEM client certificate chain; NULL: none */
  const char *key_file;  /* its private key (required with cert_file) */
} tlsctx_client_opts;

#define TLSCTX_CLIENT_OPTS_INIT \
  { NULL, NULL, NULL }

/* Builds a client context that verifies the server (the name is checked per
 * connection, see conn_tls_opts). Returns 0 and sets *out (caller frees with
 * SSL_CTX_free), or -EINVAL / -ENOMEM with `err` filled. */
int tlsctx_client_new(SSL_CTX **out, const tlsctx_client_opts *o, char *err, size_t errlen);

/* Writes the identity of the peer's certificate into buf (len bytes): its first usable
 * URI SAN, else its first usable DNS SAN, else its subject CN if usable; "" when the
 * peer sent no certificate, it was not verified, or no name is usable. A name is
 * usable when it is printable ASCII without spaces, fits, and does not start with
 * "unix:" (names of that form belong to unix-socket peers). */
void tlsctx_peer_identity(char *buf, size_t len, SSL *ssl);

#endif
