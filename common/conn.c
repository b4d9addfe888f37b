#include "conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "addr.h"
#include "compat.h"
#include "tlsctx.h"

/* Plaintext handed to one SSL_write: one full TLS record. */
#define TLS_RECORD (16u << 10)
/* Ciphertext encrypted ahead of the socket, sent with one writev: records are 16 KiB,
 * and a write(2) per record would cost a system call and a wake-up of the peer each. */
#define TLS_ENC_HIGH_WATER (256u << 10)
/* Bytes an adapted bufferevent may hold in its output before conn_write leaves the
 * rest with the caller. */
#define BEV_HIGH_WATER (64u << 10)

enum conn_state {
  ST_CONNECTING, /* connect(2) in progress */
  ST_HANDSHAKE,  /* TLS handshake in progress */
  ST_UP,
  ST_FAILED,
};

struct conn_ops {
  ssize_t (*read)(conn *c, void *buf, size_t len);
  int (*write)(conn *c, struct evbuffer *out);
  void (*arm)(conn *c); /* brings the transport's events in line with what is wanted */
};

struct conn {
  const struct conn_ops *ops;
  enum conn_kind kind;
  enum conn_state state;
  struct event_base *base;
  evutil_socket_t fd;      /* socket kinds; -1 for bev */
  SSL *ssl;                /* tls: reads the socket, writes records into enc */
  struct evbuffer *enc;    /* tls: ciphertext not yet taken by the socket */
  struct bufferevent *bev; /* bev */
  struct event *rev, *wev; /* socket kinds: readable, writable */
  struct event *timer;     /* connect or handshake deadline */
  struct event *kick; /* runs handlers from the loop: input buffered above the socket, failures */
  conn_fn on_read, on_write;
  void *arg;
  unsigned want_read : 1;
  unsigned want_write : 1;
  unsigned write_needs_read : 1; /* tls: the last SSL_write wants the socket readable */
  unsigned write_kick : 1;       /* bev: on_write is due from the kick (output empty) */
  unsigned rev_on : 1, wev_on : 1;
  unsigned eof : 1;         /* bev: the peer has ended the stream */
  unsigned peer_closed : 1; /* socket: failed on a write to a peer that closed (EPIPE) */
  int err_no;               /* ST_FAILED: the errno conn_read/conn_write return */
  uint32_t hs_timeout_ms;
  char *name; /* connect: the target, for messages */
  conn_peer peer;
  char err[256];
};

/* ---- common ------------------------------------------------------------------- */

/* Adds or deletes ev to match `want`; returns the new state. */
static unsigned set_event(struct event *ev, unsigned on, int want) {
  if (want && !on)
    event_add(ev, NULL);
  else if (!want && on)
    event_del(ev);
  return want != 0;
}

/* The transport failed: remember why, stop its events, and let a waiting handler
 * hear of it from the loop (its next read or write returns the error). */
static void fail(conn *c, int err_no, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static void fail(conn *c, int err_no, const char *fmt, ...) {
  if (c->state == ST_FAILED) return;
  c->state = ST_FAILED;
  c->err_no = err_no;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  if (c->timer) event_del(c->timer);
  c->ops->arm(c);
  event_active(c->kick, EV_TIMEOUT, 0);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  conn *c = arg;
  if ((c->state == ST_FAILED || c->write_kick) && c->want_write) {
    c->want_write = 0;
    c->write_kick = 0;
    c->on_write(c, c->arg);
  }
  if (c->want_read) c->on_read(c, c->arg);
}

/* Calls the handlers that wait: the transport has come up (or failed) from an event. */
static void run_waiting(conn *c) {
  if (c->want_write) {
    c->want_write = 0;
    c->on_write(c, c->arg);
  }
  if (c->want_read) c->on_read(c, c->arg);
}

static conn *conn_alloc(struct event_base *base, const struct conn_ops *ops, enum conn_kind kind) {
  conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->ops = ops;
  c->kind = kind;
  c->base = base;
  c->fd = -1;
  c->peer.uid = -1;
  c->kick = event_new(base, -1, 0, kick_cb, c);
  if (!c->kick) {
    free(c);
    return NULL;
  }
  return c;
}

/* ---- sockets ------------------------------------------------------------------ */

/* Fills c->peer for its connected socket: its address, local-ness, and on a unix socket
 * the peer's uid and "unix:USER" identity. */
static void peer_of_socket(conn *c) {
  conn_peer *out = &c->peer;
  evutil_socket_t fd = c->fd;
  memset(out, 0, sizeof *out);
  out->uid = -1;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
    snprintf(out->addr, sizeof out->addr, "unknown");
    return;
  }
  addr_peer_format(out->addr, sizeof out->addr, (struct sockaddr *)&ss, len);
  out->local = addr_is_local((struct sockaddr *)&ss);
  if (ss.ss_family != AF_UNIX) return;
  char name[sizeof out->identity - 5];
  if (compat_sock_peer_user(&out->uid, name, sizeof name, fd) != 0) return;
  if (name[0])
    snprintf(out->identity, sizeof out->identity, "unix:%s", name);
  else
    snprintf(out->identity, sizeof out->identity, "unix:uid:%ld", out->uid);
}

static void sock_arm(conn *c) {
  int r = 0, w = 0;
  switch (c->state) {
  case ST_CONNECTING: w = 1; break;
  case ST_HANDSHAKE:
    r = 1;
    w = evbuffer_get_length(c->enc) > 0;
    break;
  case ST_UP:
    if (c->ssl) {
      /* Ciphertext left over is sent whatever the user wants. */
      r = c->want_read || (c->want_write && c->write_needs_read);
      w = (c->want_write && !c->write_needs_read) || evbuffer_get_length(c->enc) > 0;
    } else {
      r = c->want_read;
      w = c->want_write;
    }
    break;
  case ST_FAILED: break;
  }
  c->rev_on = set_event(c->rev, c->rev_on, r);
  c->wev_on = set_event(c->wev, c->wev_on, w);
}

static ssize_t sock_read(conn *c, void *buf, size_t len) {
  /* A peer that closed may have said something first (an answer, then close): that is
   * still read, up to the end of the stream. */
  if (c->state == ST_FAILED && !c->peer_closed) return -c->err_no;
  if (c->state != ST_UP && c->state != ST_FAILED) return -EAGAIN;
  ssize_t r = compat_sock_read(c->fd, buf, len);
  if (r >= 0) return r;
  if (r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR) return -EAGAIN;
  fail(c, (int)-r, "read from %s: %s", c->peer.addr, compat_strerror((int)-r));
  return r;
}

/* One evbuffer_write is one writev(2) or, for a file chain first, one sendfile(2): go
 * on until the socket is full or the output is gone. */
static int sock_write(conn *c, struct evbuffer *out) {
  if (c->state == ST_FAILED) return -c->err_no;
  if (c->state != ST_UP || evbuffer_get_length(out) == 0) return 0; /* libevent: -1 for 0 */
  int w;
  do {
    EVUTIL_SET_SOCKET_ERROR(0);
    w = evbuffer_write(out, c->fd);
  } while (w > 0 && evbuffer_get_length(out) > 0);
  int e = compat_sock_errno();
  if (w >= 0 && !(w == 0 && e == 0 && evbuffer_get_length(out) > 0)) return 0;
  if (w < 0 && (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)) return 0;
  /* libevent gives 0 for a sendfile that met a full socket (errno EAGAIN) and also for
   * one that met the end of its file (errno 0: the file was cut under us), which no
   * wait would mend. */
  if (w == 0 && (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)) return 0;
  if (w == 0) {
    fail(c, EIO, "a file being sent to %s ended before its segment did", c->peer.addr);
    return -EIO;
  }
  c->peer_closed = e == EPIPE;
  fail(c, e, "write to %s: %s", c->peer.addr, compat_strerror(e));
  return -e;
}

static void io_cb(evutil_socket_t fd, short what, void *arg);

static const struct conn_ops sock_ops = {sock_read, sock_write, sock_arm};

/* ---- TLS ---------------------------------------------------------------------- */

/* Fills the message of a failed TLS operation from OpenSSL's queue (which it clears). */
static void tls_fail(conn *c, int ssl_err, const char *what) {
  char detail[200] = "";
  unsigned long e, last = 0;
  while ((e = ERR_get_error()) != 0) last = e;
  if (last) {
    ERR_error_string_n(last, detail, sizeof detail);
    const char *reason = ERR_reason_error_string(last);
    if (reason) snprintf(detail, sizeof detail, "%s", reason);
  } else if (ssl_err == SSL_ERROR_SYSCALL) {
    int se = compat_sock_errno();
    snprintf(detail, sizeof detail, "%s", se ? compat_strerror(se) : "connection closed");
  }
  long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
  if (vr != X509_V_OK && c->state == ST_HANDSHAKE)
    snprintf(detail, sizeof detail, "%s", X509_verify_cert_error_string(vr));
  fail(c, EPROTO, "%s %s failed: %s", what, c->name ? c->name : c->peer.addr,
       detail[0] ? detail : "unknown error");
}

/* Sends the ciphertext waiting in enc until the socket is full. Returns 0 (what is left
 * waits for EV_WRITE), or a negative errno once the transport has failed. */
static int enc_flush(conn *c) {
  while (evbuffer_get_length(c->enc) > 0) {
    int w = evbuffer_write(c->enc, c->fd);
    if (w > 0) continue;
    int e = compat_sock_errno();
    if (w == 0 || e == EAGAIN || e == EWOULDBLOCK || e == EINTR) return 0;
    fail(c, e, "write to %s: %s", c->peer.addr, compat_strerror(e));
    return -e;
  }
  return 0;
}

/* The write side of an SSL: records go into the conn's enc buffer (one copy, as a
 * socket write would make), and enc_flush sends many in one writev. */
static int enc_bio_write(BIO *b, const char *data, int len) {
  conn *c = BIO_get_data(b);
  return evbuffer_add(c->enc, data, (size_t)len) == 0 ? len : -1;
}

static long enc_bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH; /* nothing is held in the BIO itself */
}

static BIO_METHOD *enc_bio_method;

static void enc_bio_init(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "prismq evbuffer");
  if (m && BIO_meth_set_write(m, enc_bio_write) == 1 && BIO_meth_set_ctrl(m, enc_bio_ctrl) == 1)
    enc_bio_method = m;
  else
    BIO_meth_free(m);
}

static void tls_up(conn *c) {
  if (c->timer) event_del(c->timer);
  c->state = ST_UP;
  if (SSL_is_server(c->ssl)) {
    /* A verified certificate names the peer (over a unix socket too). */
    char id[sizeof c->peer.identity];
    tlsctx_peer_identity(id, sizeof id, c->ssl);
    if (id[0]) memcpy(c->peer.identity, id, sizeof id);
  }
  sock_arm(c);
  run_waiting(c);
}

static void handshake_step(conn *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  /* What the handshake wrote goes out first, an alert that refuses the peer too. */
  if (enc_flush(c) < 0) return;
  if (e == SSL_ERROR_NONE)
    tls_up(c);
  else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    sock_arm(c);
  else
    tls_fail(c, e, "TLS handshake with");
}

/* Reads records until `len` bytes or the socket is dry. Input OpenSSL has already
 * taken from the socket would wake no one: a kick runs on_read again for it. */
static ssize_t tls_read(conn *c, void *buf, size_t len) {
  if (c->state == ST_FAILED) return -c->err_no;
  if (c->state != ST_UP) return -EAGAIN;
  size_t got = 0;
  while (got < len) {
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_read_ex(c->ssl, (char *)buf + got, len - got, &n);
    if (r == 1) {
      got += n;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      if (got == 0) return 0;
      break;
    }
    if (got > 0) break; /* the error comes again with the next read */
    tls_fail(c, e, "TLS read from");
    return -EPROTO;
  }
  /* Reading may have written (a key update's answer). */
  if (evbuffer_get_length(c->enc) > 0) {
    if (enc_flush(c) < 0 && got == 0) return -c->err_no;
    sock_arm(c);
  }
  if (got == len && SSL_has_pending(c->ssl)) event_active(c->kick, EV_TIMEOUT, 0);
  return got > 0 ? (ssize_t)got : -EAGAIN;
}

/* Encrypts a record at a time from the front of `out` (pulled up to TLS_RECORD bytes so
 * that small frames share a record) while the ciphertext ahead is under its mark, then
 * sends it. */
static int tls_write(conn *c, struct evbuffer *out) {
  if (c->state == ST_FAILED) return -c->err_no;
  if (c->state != ST_UP) return 0;
  if (enc_flush(c) < 0) return -c->err_no;
  c->write_needs_read = 0;
  size_t left;
  while ((left = evbuffer_get_length(out)) > 0 &&
         evbuffer_get_length(c->enc) < TLS_ENC_HIGH_WATER) {
    size_t want = left < TLS_RECORD ? left : TLS_RECORD;
    unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)want);
    if (!p) {
      fail(c, ENOMEM, "out of memory writing to %s", c->peer.addr);
      return -ENOMEM;
    }
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_write_ex(c->ssl, p, want, &n);
    if (r == 1) {
      evbuffer_drain(out, n);
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
      c->write_needs_read = 1;
      break;
    }
    tls_fail(c, e, "TLS write to");
    return -EPROTO;
  }
  if (enc_flush(c) < 0) return -c->err_no;
  sock_arm(c);
  return 0;
}

static const struct conn_ops tls_ops = {tls_read, tls_write, sock_arm};

static int tls_start(conn *c, const conn_tls_opts *t) {
  static CRYPTO_ONCE once = CRYPTO_ONCE_STATIC_INIT;
  CRYPTO_THREAD_run_once(&once, enc_bio_init);
  c->ssl = SSL_new(t->ctx);
  c->enc = evbuffer_new();
  if (!c->ssl || !c->enc || !enc_bio_method) return -ENOMEM;
  BIO *rb = BIO_new_socket(c->fd, BIO_NOCLOSE);
  BIO *wb = BIO_new(enc_bio_method);
  if (!rb || !wb) {
    BIO_free(rb);
    BIO_free(wb);
    return -ENOMEM;
  }
  BIO_set_data(wb, c);
  BIO_set_init(wb, 1);
  SSL_set_bio(c->ssl, rb, wb);
  c->hs_timeout_ms = t->handshake_timeout_ms;
  if (t->server) {
    SSL_set_accept_state(c->ssl);
    return 0;
  }
  SSL_set_connect_state(c->ssl);
  if (!t->server_name) return 0;
  /* An IP literal is checked against the certificate's IP SANs and sent as no SNI. */
  unsigned char ip[16];
  int is_ip =
      inet_pton(AF_INET, t->server_name, ip) == 1 || inet_pton(AF_INET6, t->server_name, ip) == 1;
  if (is_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), t->server_name) != 1) return -EINVAL;
  } else if (SSL_set_tlsext_host_name(c->ssl, t->server_name) != 1 ||
             SSL_set1_host(c->ssl, t->server_name) != 1) {
    return -EINVAL;
  }
  return 0;
}

/* ---- socket and TLS events ---------------------------------------------------- */

static void timer_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  conn *c = arg;
  if (c->state == ST_CONNECTING)
    fail(c, ETIMEDOUT, "connect to %s: %s", c->name, compat_strerror(ETIMEDOUT));
  else if (c->state == ST_HANDSHAKE)
    fail(c, ETIMEDOUT, "TLS handshake with %s timed out after %u ms",
         c->name ? c->name : c->peer.addr, (unsigned)c->hs_timeout_ms);
}

static void arm_timer(conn *c, uint32_t ms) {
  if (!ms || !c->timer) return;
  struct timeval tv = compat_timeout_ms(ms);
  event_add(c->timer, &tv);
}

/* The socket is up: TLS starts its handshake, plain sockets are ready. */
static void socket_up(conn *c) {
  if (!c->ssl) {
    if (c->timer) event_del(c->timer);
    c->state = ST_UP;
    sock_arm(c);
    run_waiting(c);
    return;
  }
  c->state = ST_HANDSHAKE;
  if (c->timer) event_del(c->timer);
  arm_timer(c, c->hs_timeout_ms);
  handshake_step(c);
}

static void connect_done(conn *c) {
  int err = compat_sock_pending_error(c->fd);
  if (err) {
    fail(c, err, "connect to %s: %s", c->name, compat_strerror(err));
    return;
  }
  peer_of_socket(c);
  socket_up(c);
}

static void io_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  conn *c = arg;
  switch (c->state) {
  case ST_CONNECTING: connect_done(c); return;
  case ST_HANDSHAKE: handshake_step(c); return;
  case ST_FAILED: return;
  case ST_UP: break;
  }
  int rd = 0, wr = 0;
  if (what & EV_READ) {
    if (c->write_needs_read)
      wr = 1;
    else
      rd = 1;
  }
  if (what & EV_WRITE) {
    /* TLS: the user may write again once the ciphertext ahead is gone. */
    if (c->ssl && enc_flush(c) < 0) return;
    wr = !c->ssl || evbuffer_get_length(c->enc) == 0;
  }
  if (wr && c->want_write) {
    c->want_write = 0;
    sock_arm(c);
    c->on_write(c, c->arg);
  } else if (what & EV_WRITE) {
    sock_arm(c); /* the ciphertext may be gone: no more EV_WRITE for it */
  }
  if (rd && c->want_read) c->on_read(c, c->arg);
}

static int socket_events(conn *c) {
  c->rev = event_new(c->base, c->fd, EV_READ | EV_PERSIST, io_cb, c);
  c->wev = event_new(c->base, c->fd, EV_WRITE | EV_PERSIST, io_cb, c);
  c->timer = evtimer_new(c->base, timer_cb, c);
  return c->rev && c->wev && c->timer ? 0 : -ENOMEM;
}

int conn_new_socket(conn **out, struct event_base *base, evutil_socket_t fd,
                    const conn_tls_opts *tls) {
  conn *c = conn_alloc(base, tls ? &tls_ops : &sock_ops, tls ? CONN_TLS : CONN_SOCKET);
  if (!c) {
    evutil_closesocket(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  int rc = evutil_make_socket_nonblocking(fd) == 0 ? socket_events(c) : -compat_sock_errno();
  if (rc == 0 && tls) rc = tls_start(c, tls);
  if (rc < 0) {
    conn_free(c);
    return rc;
  }
  peer_of_socket(c);
  c->state = ST_CONNECTING; /* socket_up moves it on */
  socket_up(c);
  *out = c;
  return 0;
}

int conn_connect(conn **out, struct event_base *base, const struct sockaddr *sa, socklen_t salen,
                 const char *name, uint32_t connect_timeout_ms, const conn_tls_opts *tls) {
  evutil_socket_t fd;
  int rc = compat_sock_stream(&fd, sa->sa_family);
  if (rc < 0) return rc;
  if (sa->sa_family != AF_UNIX) {
    /* gRPC messages are small and latency-bound: no Nagle. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const void *)&one, sizeof one);
  }
  conn *c = conn_alloc(base, tls ? &tls_ops : &sock_ops, tls ? CONN_TLS : CONN_SOCKET);
  if (!c) {
    evutil_closesocket(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  c->state = ST_CONNECTING;
  c->name = strdup(name);
  rc = c->name ? socket_events(c) : -ENOMEM;
  if (rc == 0 && tls) rc = tls_start(c, tls);
  if (rc < 0) {
    conn_free(c);
    return rc;
  }
  rc = compat_sock_connect(fd, sa, salen);
  if (rc == 0) {
    peer_of_socket(c);
    socket_up(c);
  } else if (rc == -EINPROGRESS) {
    arm_timer(c, connect_timeout_ms);
    sock_arm(c);
  } else {
    fail(c, -rc, "connect to %s: %s", name, compat_strerror(-rc));
  }
  *out = c;
  return 0;
}

/* ---- bufferevent adapter ------------------------------------------------------ */

static void bev_arm(conn *c) {
  if (c->state == ST_UP && c->want_read)
    bufferevent_enable(c->bev, EV_READ);
  else
    bufferevent_disable(c->bev, EV_READ);
}

static ssize_t bev_read(conn *c, void *buf, size_t len) {
  if (c->state == ST_FAILED) return -c->err_no;
  struct evbuffer *in = bufferevent_get_input(c->bev);
  int n = evbuffer_remove(in, buf, len);
  if (n < 0) return -EIO;
  /* The bufferevent calls back only for new input: what is left needs a kick. */
  if (evbuffer_get_length(in) > 0) event_active(c->kick, EV_TIMEOUT, 0);
  if (n > 0) return n;
  return c->eof ? 0 : -EAGAIN;
}

/* Output moves whole chains (no copy), and only while the bufferevent's output is
 * empty: what it holds stays under its high-water mark plus one batch. */
static int bev_write(conn *c, struct evbuffer *out) {
  if (c->state == ST_FAILED) return -c->err_no;
  struct evbuffer *o = bufferevent_get_output(c->bev);
  if (evbuffer_get_length(o) < BEV_HIGH_WATER && evbuffer_add_buffer(o, out) != 0) {
    fail(c, ENOMEM, "out of memory writing to %s", c->peer.addr);
    return -ENOMEM;
  }
  return 0;
}

static const struct conn_ops bev_ops = {bev_read, bev_write, bev_arm};

static void bev_read_cb(struct bufferevent *bev, void *arg) {
  (void)bev;
  conn *c = arg;
  if (c->want_read) c->on_read(c, c->arg);
}

static void bev_write_cb(struct bufferevent *bev, void *arg) {
  (void)bev;
  conn *c = arg;
  if (!c->want_write) return;
  c->want_write = 0;
  c->write_kick = 0;
  c->on_write(c, c->arg);
}

static void bev_event_cb(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  conn *c = arg;
  if (what & BEV_EVENT_EOF) {
    c->eof = 1;
    event_active(c->kick, EV_TIMEOUT, 0);
  } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    int e = compat_sock_errno();
    fail(c, e ? e : EIO, "connection to %s failed: %s", c->peer.addr, compat_strerror(e));
  }
}

int conn_new_bufferevent(conn **out, struct bufferevent *bev) {
  conn *c = conn_alloc(bufferevent_get_base(bev), &bev_ops, CONN_BEV);
  if (!c) {
    bufferevent_free(bev);
    return -ENOMEM;
  }
  c->bev = bev;
  c->state = ST_UP;
  snprintf(c->peer.addr, sizeof c->peer.addr, "memory");
  c->peer.local = 1;
  bufferevent_setcb(bev, bev_read_cb, bev_write_cb, bev_event_cb, c);
  /* on_write once the output has drained: conn_pending counts what it holds. */
  bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
  bufferevent_enable(bev, EV_WRITE);
  bufferevent_disable(bev, EV_READ);
  *out = c;
  return 0;
}

/* ---- public ------------------------------------------------------------------- */

void conn_free(conn *c) {
  if (!c) return;
  if (c->rev) event_free(c->rev);
  if (c->wev) event_free(c->wev);
  if (c->timer) event_free(c->timer);
  event_free(c->kick);
  if (c->ssl) SSL_free(c->ssl);
  if (c->enc) evbuffer_free(c->enc);
  if (c->fd >= 0) evutil_closesocket(c->fd);
  if (c->bev) bufferevent_free(c->bev);
  free(c->name);
  free(c);
}

void conn_set_handlers(conn *c, conn_fn on_read, conn_fn on_write, void *arg) {
  c->on_read = on_read;
  c->on_write = on_write;
  c->arg = arg;
}

void conn_want_read(conn *c, int on) {
  if (c->want_read == (on != 0)) return;
  c->want_read = on != 0;
  c->ops->arm(c);
  /* Input may already wait above the socket (TLS records, a bufferevent's input, a
   * failure): have it looked at. */
  if (on) event_active(c->kick, EV_TIMEOUT, 0);
}

void conn_want_write(conn *c) {
  if (c->want_write) return;
  c->want_write = 1;
  if (c->state == ST_FAILED) {
    event_active(c->kick, EV_TIMEOUT, 0);
  } else if (c->kind == CONN_BEV) {
    /* The bufferevent calls back only once output it holds has drained. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
      c->write_kick = 1;
      event_active(c->kick, EV_TIMEOUT, 0);
    }
    bufferevent_enable(c->bev, EV_WRITE);
  } else {
    c->ops->arm(c);
  }
}

void conn_shutdown_write(conn *c) {
  if (c->kind == CONN_SOCKET && c->state == ST_UP) compat_sock_shutdown_write(c->fd);
}

ssize_t conn_read(conn *c, void *buf, size_t len) { return c->ops->read(c, buf, len); }

int conn_write(conn *c, struct evbuffer *out) { return c->ops->write(c, out); }

int conn_can_sendfile(const conn *c) { return c->kind == CONN_SOCKET; }

size_t conn_pending(const conn *c) {
  if (c->enc) return evbuffer_get_length(c->enc);
  if (c->bev) return evbuffer_get_length(bufferevent_get_output(c->bev));
  return 0;
}

struct event_base *conn_base(const conn *c) {
  return c->base;
}

enum conn_kind conn_kind(const conn *c) { return c->kind; }

const conn_peer *conn_get_peer(const conn *c) { return &c->peer; }

const char *conn_error(const conn *c) { return c->err; }

const char *conn_alpn(const conn *c) {
  if (!c->ssl || c->state != ST_UP) return "";
  const unsigned char *p = NULL;
  unsigned int len = 0;
  SSL_get0_alpn_selected(c->ssl, &p, &len);
  if (len == 2 && memcmp(p, "h2", 2) == 0) return "h2";
  if (len == 8 && memcmp(p, "http/1.1", 8) == 0) return "http/1.1";
  return "";
}

const char *conn_tls_version(const conn *c, int *resumed) {
  if (!c->ssl || c->state != ST_UP) {
    if (resumed) *resumed = 0;
    return NULL;
  }
  if (resumed) *resumed = SSL_session_reused(c->ssl);
  return SSL_get_version(c->ssl);
}
