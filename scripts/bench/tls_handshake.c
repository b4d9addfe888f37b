/* tls_handshake: new TLS connections per second against one server, for the tls phase of
 * scripts/bench (prismqd's TLS listener against `openssl s_server -www` on the same
 * certificate).
 *
 *   tls_handshake HOST:PORT SECONDS [--resume] [--ca FILE]
 *
 * HOST is an IPv4 literal. For SECONDS, one connection at a time on a blocking socket:
 * connect, TLS handshake offering ALPN "h2" (which must be selected), wait until the
 * server has finished its side (below), close_notify, close. One warm-up connection
 * comes first and is not counted. With --resume every connection offers the newest
 * session the server gave (a TLS 1.3 ticket, or the TLS 1.2 session), starting with the
 * warm-up connection's, so each is a resumption if the server accepts it; without it
 * every connection is a full handshake. With --ca, the server's certificate must verify
 * against FILE and match HOST as an IP address; without it nothing is verified.
 *
 * Waiting for the server: SSL_connect returns once the client has sent its Finished; in
 * TLS 1.3 the server still has to read it, and its handshake ends by sending its session
 * tickets. So each connection reads until the first record after the handshake: a
 * NewSessionTicket, application data, or the end of the connection. That is the same for
 * both servers and sends them nothing. (Tested against `openssl s_server -www -alpn h2`,
 * OpenSSL 3.0.19: it answers only a request line starting "GET ", with a 5.4 KB status
 * page that would add work on its side alone, and never answers the HTTP/2 preface
 * "PRI * HTTP/2.0..."; prismqd sends SETTINGS right after the handshake; both servers
 * send tickets before anything else, after full handshakes and resumptions alike, so
 * every connection ends its wait on a ticket.) In TLS 1.2 the server sends its Finished
 * last (full handshake) or has nothing left to do but read the client's (resumption), so
 * SSL_connect is the end.
 *
 * kTLS: before connecting, tries setsockopt(TCP_ULP, "tls") on a loopback TCP connection
 * of its own (the server does not see it), and requests SSL_OP_ENABLE_KTLS on the client
 * side, then reports whether OpenSSL wrote the last connection's records with kTLS.
 *
 * Prints one JSON line:
 *   {"connections":N,"seconds":S,"connections_per_s":R,"resumed":K,"version":"TLSv1.3",
 *    "cipher":"...","alpn":"h2","waited_for":{"ticket":T,"data":D,"eof":E,"none":X},
 *    "ktls_ulp":"ok"|"<errno text>","ktls_client_send":0|1}
 * Exits 0, 1 if a connection failed (after printing why on stderr), 2 on usage errors.
 * Built by scripts/bench/run.sh with OpenSSL 3. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define IO_TIMEOUT_S 10
#define USAGE        "usage: tls_handshake HOST:PORT SECONDS [--resume] [--ca FILE]"

static struct sockaddr_in g_addr;
static SSL_SESSION *g_newest; /* the newest resumable session the server gave (owned) */
static long g_new_sessions;   /* sessions (tickets) received so far */

static void die(const char *what) {
  fprintf(stderr, "tls_handshake: %s\n", what);
  exit(2);
}

static void fail(const char *what) {
  fprintf(stderr, "tls_handshake: %s (errno: %s)\n", what, strerror(errno));
  ERR_print_errors_fp(stderr);
  exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* OpenSSL hands us each new session (every TLS 1.3 ticket, or the TLS 1.2 session at the
 * end of the handshake); returning 1 takes the reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
  (void)ssl;
  g_new_sessions++;
  if (!SSL_SESSION_is_resumable(sess)) return 0;
  SSL_SESSION_free(g_newest);
  g_newest = sess;
  return 1;
}

/* The errno text of setsockopt(TCP_ULP, "tls") on an established loopback TCP
 * connection, or "ok". */
static const char *ktls_ulp_probe(void) {
  static char res[128];
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int l = socket(AF_INET, SOCK_STREAM, 0), c = -1, s = -1;
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
      getsockname(l, (struct sockaddr *)&a, &alen) < 0 ||
      (c = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
      connect(c, (struct sockaddr *)&a, sizeof a) < 0 || (s = accept(l, NULL, NULL)) < 0)
    snprintf(res, sizeof res, "probe failed: %s", strerror(errno));
  else if (setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", 3) < 0)
    snprintf(res, sizeof res, "%s", strerror(errno));
  else
    snprintf(res, sizeof res, "ok");
  if (s >= 0) close(s);
  if (c >= 0) close(c);
  if (l >= 0) close(l);
  return res;
}

enum { W_TICKET, W_DATA, W_EOF, W_NONE, W_COUNT };

/* Reads until the server's first record after the handshake (see the header); returns
 * what came (W_*). */
static int wait_server(SSL *ssl, long sessions_before) {
  if (SSL_version(ssl) < TLS1_3_VERSION) return W_NONE;
  double deadline = now_s() + IO_TIMEOUT_S;
  for (;;) {
    char buf[16384];
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n > 0) return W_DATA;
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_READ: /* a post-handshake message (no auto-retry), or SO_RCVTIMEO */
      if (g_new_sessions > sessions_before) return W_TICKET;
      if (now_s() > deadline) fail("nothing from the server after the handshake");
      break;
    case SSL_ERROR_ZERO_RETURN: return W_EOF;
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0 && (n == 0 || errno == ECONNRESET)) return W_EOF;
      fail("reading the server's first record");
      break;
    default: fail("reading the server's first record");
    }
  }
}

/* What one connection saw. */
struct conn_info {
  int waited; /* W_* */
  int resumed;
  const char *version; /* static strings of OpenSSL's */
  const char *cipher;
  int ktls_send; /* OpenSSL wrote this connection's records with kTLS */
};

/* One connection, from connect to close; offers g_newest if resume. */
static void one(struct conn_info *out, SSL_CTX *ctx, int resume) {
  struct timeval tv = {IO_TIMEOUT_S, 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0), on = 1;
  if (fd < 0) fail("socket");
  /* The timeouts turn a server that never answers into a failure, not a hang. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0)
    fail("setsockopt");
  if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0) fail("connect");
  SSL *ssl = SSL_new(ctx);
  if (!ssl || !SSL_set_fd(ssl, fd)) fail("SSL_new");
  if (resume && g_newest && !SSL_set_session(ssl, g_newest)) fail("SSL_set_session");
  long before = g_new_sessions;
  if (SSL_connect(ssl) != 1) fail("handshake");
  const unsigned char *alpn;
  unsigned alpn_len;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
    fprintf(stderr, "tls_handshake: the server did not select ALPN h2\n");
    exit(1);
  }
  out->waited = wait_server(ssl, before);
  out->resumed = SSL_session_reused(ssl);
  out->version = SSL_get_version(ssl);
  out->cipher = SSL_get_cipher_name(ssl);
  out->ktls_send = BIO_get_ktls_send(SSL_get_wbio(ssl)) > 0;
  SSL_shutdown(ssl); /* close_notify, so that the session stays resumable */
  SSL_free(ssl);
  close(fd);
}

int main(int argc, char **argv) {
  if (argc < 3) die(USAGE);
  char host[64];
  const char *colon = strrchr(argv[1], ':');
  if (!colon || (size_t)(colon - argv[1]) >= sizeof host) die("the target is HOST:PORT");
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = '\0';
  g_addr.sin_family = AF_INET;
  g_addr.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) die("HOST must be an IPv4 literal");
  double seconds = atof(argv[2]);
  if (seconds <= 0) die("SECONDS must be positive");
  int resume = 0;
  const char *ca = NULL;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--resume") == 0)
      resume = 1;
    else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
      ca = argv[++i];
    else
      die(USAGE);
  }

  const char *ulp = ktls_ulp_probe();
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) fail("SSL_CTX_new");
  static const unsigned char alpn[] = {2, 'h', '2'};
  if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn) != 0) fail("ALPN");
  SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
  /* Without auto-retry, SSL_read returns after a post-handshake message (a ticket). */
  SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  if (ca) {
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) fail("loading the CA file");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), host) != 1)
      fail("X509_VERIFY_PARAM_set1_ip_asc");
  }

  struct conn_info ci;
  one(&ci, ctx, resume); /* warm-up, not counted; gives the first session */
  long n = 0, resumed = 0, waited[W_COUNT] = {0};
  double t0 = now_s(), t;
  do {
    one(&ci, ctx, resume);
    waited[ci.waited]++;
    resumed += ci.resumed;
    n++;
  } while ((t = now_s() - t0) < seconds);

  printf(
      "{\"connections\":%ld,\"seconds\":%.6f,\"connections_per_s\":%.1f,\"resumed\":%ld,"
      "\"version\":\"%s\","
      "\"cipher\":\"%s\",\"alpn\":\"h2\",\"waited_for\":{\"ticket\":%ld,\"data\":%ld,\"eof\":%ld,"
      "\"none\":%ld},"
      "\"ktls_ulp\":\"%s\",\"ktls_client_send\":%d}\n",
      n, t, (double)n / t, resumed, ci.version, ci.cipher, waited[W_TICKET], waited[W_DATA],
      waited[W_EOF], waited[W_NONE], ulp, ci.ktls_send);
  SSL_SESSION_free(g_newest);
  SSL_CTX_free(ctx);
  return 0;
}
