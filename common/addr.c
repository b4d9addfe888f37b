#include "addr.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* addr.path is copied into sun_path as it is, so they hold the same. */
_Static_assert(sizeof(((addr *)0)->path) == sizeof(((struct sockaddr_un *)0)->sun_path),
               "addr.path matches sun_path");

#define FORMS                                                                                    \
  "accepted: HOST[:PORT], dns:[//AUTHORITY/]HOST[:PORT], ipv4:IP[:PORT], ipv6:[IP]:PORT, "       \
  "unix:PATH, unix:///ABS/PATH, unix-abstract:NAME, tcp://HOST[:PORT], tls://HOST[:PORT]; PORT " \
  "defaults to 50051"

static int bad(char *err, size_t errlen, const char *target, const char *why) {
  /* The reason first: a short buffer loses the list of forms, not the reason. */
  if (err && errlen) snprintf(err, errlen, "bad address \"%s\": %s; " FORMS, target, why);
  return -EINVAL;
}

/* An IPv6 literal, with an optional non-empty zone ("fe80::1%eth0", which
 * getaddrinfo understands and inet_pton does not). */
static int is_ipv6_literal(const char *host) {
  char buf[sizeof((addr *)0)->host];
  struct in6_addr a6;
  size_t n = strcspn(host, "%");
  if (n >= sizeof buf || (host[n] == '%' && host[n + 1] == '\0')) return 0;
  memcpy(buf, host, n);
  buf[n] = '\0';
  return inet_pton(AF_INET6, buf, &a6) == 1;
}

/* Characters of a host name or IPv4 literal (an IPv6 literal is checked whole). */
static int is_name(const char *host) {
  for (const char *p = host; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') return 0;
  return 1;
}

/* Which hosts a form allows. */
enum fam { FAM_ANY, FAM_V4, FAM_V6 };

/* Parses HOST[:PORT] from the n bytes at s into a->host and a->port. Returns NULL, or
 * why s is not one. */
static const char *parse_hostport(addr *a, const char *s, size_t n, enum fam fam) {
  const char *host = s, *port = NULL;
  size_t hlen, plen = 0;
  if (n == 0) return "missing host";
  int bracketed = s[0] == '[';
  if (bracketed) {
    const char *rb = memchr(s, ']', n);
    if (!rb) return "'[' without ']'";
    host = s + 1;
    hlen = (size_t)(rb - host);
    if (rb + 1 < s + n) {
      if (rb[1] != ':') return "junk after ']' (want [IPV6]:PORT)";
      port = rb + 2;
      plen = (size_t)(s + n - port);
    }
  } else {
    const char *colon = memchr(s, ':', n);
    /* Two colons or more without brackets: a bare IPv6 literal, which names no port. */
    if (colon && !memchr(colon + 1, ':', (size_t)(s + n - colon - 1))) {
      hlen = (size_t)(colon - s);
      port = colon + 1;
      plen = (size_t)(s + n - port);
    } else {
      hlen = n;
    }
  }
  if (hlen == 0) return "missing host";
  if (hlen >= sizeof a->host) return "host name too long (at most 255 bytes)";
  memcpy(a->host, host, hlen);
  a->host[hlen] = '\0';

  int v6 = is_ipv6_literal(a->host);
  if (bracketed && !v6) return "not an IPv6 address between '[' and ']'";
  if (!v6 && (strchr(a->host, ':') || !is_name(a->host))) return "bad character in host";
  if (fam == FAM_V6 && !v6) return "not an IPv6 address";
  if (fam == FAM_V4) {
    struct in_addr a4;
    if (v6 || inet_pton(AF_INET, a->host, &a4) != 1) return "not an IPv4 address";
  }

  if (!port) {
    a->port = ADDR_DEFAULT_PORT;
    return NULL;
  }
  if (plen == 0) return "missing port number after ':'";
  unsigned long v = 0;
  for (size_t i = 0; i < plen; i++) {
    if (!isdigit((unsigned char)port[i])) return "port is not a number";
    v = v * 10 + (unsigned long)(port[i] - '0');
    if (v > 65535) return "port out of range (0-65535)";
  }
  a->port = (uint16_t)v;
  return NULL;
}

/* Copies a unix path or abstract name. Returns NULL, or why it cannot be one. */
static const char *parse_path(addr *a, const char *p, const char *what_empty) {
  size_t n = strlen(p);
  if (n == 0) return what_empty;
  if (n >= sizeof a->path) return "unix socket path or name too long (at most 107 bytes)";
  memcpy(a->path, p, n + 1);
  return NULL;
}

/* "scheme://" with a URI scheme ([A-Za-z][A-Za-z0-9+.-]*) before it. */
static int has_scheme(const char *t, size_t *len) {
  const char *sep = strstr(t, "://");
  if (!sep || sep == t || !isalpha((unsigned char)t[0])) return 0;
  for (const char *p = t; p < sep; p++)
    if (!isalnum((unsigned char)*p) && *p != '+' && *p != '.' && *p != '-') return 0;
  *len = (size_t)(sep - t);
  return 1;
}

static int starts(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

int addr_parse(addr *out, const char *target, char *err, size_t errlen) {
  addr a;
  const char *why, *rest;
  size_t slen;
  char msg[64];
  memset(&a, 0, sizeof a);
  if (!target || !*target) return bad(err, errlen, target ? target : "", "empty address");

  if (starts(target, "unix-abstract:")) {
    a.kind = ADDR_UNIX_ABSTRACT;
    why = parse_path(&a, target + strlen("unix-abstract:"), "empty abstract socket name");
  } else if (starts(target, "unix://")) {
    a.kind = ADDR_UNIX;
    rest = target + strlen("unix://");
    why = rest[0] == '/' || rest[0] == '\0'
              ? parse_path(&a, rest, "empty unix socket path")
              : "unix:// wants an absolute path (unix:///abs/path, or unix:relative/path)";
  } else if (starts(target, "unix:")) {
    a.kind = ADDR_UNIX;
    why = parse_path(&a, target + strlen("unix:"), "empty unix socket path");
  } else if (starts(target, "tcp://") || starts(target, "tls://")) {
    a.tls = starts(target, "tls://");
    rest = target + strlen("tcp://");
    why = parse_hostport(&a, rest, strlen(rest), FAM_ANY);
  } else if (starts(target, "dns:")) {
    rest = target + strlen("dns:");
    if (starts(rest, "//")) {
      /* dns://AUTHORITY/HOST: the authority (which DNS server to ask) is ignored. */
      const char *slash = strchr(rest + 2, '/');
      rest = slash ? slash + 1 : NULL;
    }
    why = rest ? parse_hostport(&a, rest, strlen(rest), FAM_ANY)
               : "dns://AUTHORITY wants a '/' before the host";
  } else if (starts(target, "ipv4:") || starts(target, "ipv6:")) {
    enum fam fam = starts(target, "ipv6:") ? FAM_V6 : FAM_V4;
    rest = target + strlen("ipv4:");
    /* A comma list of addresses: the first one. */
    why = parse_hostport(&a, rest, strcspn(rest, ","), fam);
  } else if (has_scheme(target, &slen)) {
    snprintf(msg, sizeof msg, "unknown scheme \"%.*s\"", (int)(slen > 32 ? 32 : slen), target);
    why = msg;
  } else {
    why = parse_hostport(&a, target, strlen(target), FAM_ANY);
  }
  if (why) return bad(err, errlen, target, why);
  *out = a;
  return 0;
}

int addr_sockaddr(struct sockaddr_storage *ss, socklen_t *sslen, const addr *a, int passive,
                  char *err, size_t errlen) {
  struct sockaddr_storage tmp;
  socklen_t len;
  memset(&tmp, 0, sizeof tmp);

  if (a->kind == ADDR_UNIX_ABSTRACT && !COMPAT_HAVE_ABSTRACT_UNIX) {
    if (err && errlen)
      snprintf(err, errlen, "unix-abstract:%s: abstract unix sockets are Linux's alone", a->path);
    return -EAFNOSUPPORT;
  }
  if (a->kind == ADDR_UNIX || a->kind == ADDR_UNIX_ABSTRACT) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&tmp;
    int abstract = a->kind == ADDR_UNIX_ABSTRACT;
    size_t n = strnlen(a->path, sizeof a->path);
    /* An abstract name starts after sun_path's leading NUL and has no NUL of its own. */
    if (n == 0 || n + 1 > sizeof sun->sun_path) {
      if (err && errlen) snprintf(err, errlen, "bad unix socket %s", abstract ? "name" : "path");
      return -EINVAL;
    }
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path + abstract, a->path, n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  } else if (a->kind == ADDR_TCP && a->host[0]) {
    struct addrinfo hints = {.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
                             .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)a->port);
    int rc = compat_net_init();
    if (rc < 0) {
      if (err && errlen)
        snprintf(err, errlen, "cannot resolve host %s: %s", a->host, compat_strerror(-rc));
      return rc;
    }
    rc = getaddrinfo(a->host, port, &hints, &ai);
    if (rc != 0 || !ai) {
      int e;
      switch (rc) {
      case EAI_AGAIN: e = EAGAIN; break;
      case EAI_MEMORY: e = ENOMEM; break;
      case EVUTIL_EAI_SYSTEM: e = errno ? errno : EIO; break; /* EAI_SYSTEM where there is one */
      case EAI_FAMILY:
      case EAI_SOCKTYPE:
      case EAI_SERVICE:
      case EAI_BADFLAGS: e = EINVAL; break;
      default: e = EHOSTUNREACH; break; /* EAI_NONAME, EAI_NODATA, EAI_FAIL... */
      }
      if (err && errlen)
        snprintf(err, errlen, "cannot resolve host %s: %s", a->host,
                 rc == EVUTIL_EAI_SYSTEM ? strerror(e)
                 : rc                    ? gai_strerror(rc)
                                         : "no address");
      if (ai) freeaddrinfo(ai);
      return -e;
    }
    len = ai->ai_addrlen;
    memcpy(&tmp, ai->ai_addr, len);
    freeaddrinfo(ai);
  } else {
    if (err && errlen) snprintf(err, errlen, "bad address (no host)");
    return -EINVAL;
  }
  *ss = tmp;
  *sslen = len;
  return 0;
}

void addr_format(char *buf, size_t len, const addr *a) {
  if (!len) return;
  switch (a->kind) {
  case ADDR_TCP:
    snprintf(buf, len, strchr(a->host, ':') ? "%s[%s]:%u" : "%s%s:%u", a->tls ? "tls://" : "",
             a->host, (unsigned)a->port);
    break;
  case ADDR_UNIX:
    /* "unix:" + "//x" would read back as unix://x, a relative path after "//". */
    snprintf(buf, len, "%s%s", starts(a->path, "//") ? "unix://" : "unix:", a->path);
    break;
  case ADDR_UNIX_ABSTRACT: snprintf(buf, len, "unix-abstract:%s", a->path); break;
  default: snprintf(buf, len, "unknown");
  }
}

int addr_is_local(const struct sockaddr *sa) {
  if (!sa) return 0;
  switch (sa->sa_family) {
  case AF_UNIX: return 1;
  case AF_INET: return ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24 == 127;
  case AF_INET6: {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
  }
  default: return 0;
  }
}

void addr_peer_format(char *buf, size_t len, const struct sockaddr *sa, socklen_t salen) {
  char ip[INET6_ADDRSTRLEN];
  if (!len) return;
  if (sa && sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
    snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
  } else if (sa && sa->sa_family == AF_INET6 && salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
    snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
  } else if (sa && sa->sa_family == AF_UNIX && salen >= (socklen_t)sizeof sa->sa_family) {
    snprintf(buf, len, "unix");
  } else {
    snprintf(buf, len, "unknown");
  }
}
