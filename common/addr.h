/* addr: one address syntax for clients and servers, gRPC's naming (grpc
 * doc/naming.md) plus this project's tcp:// and tls:// URLs:
 *
 *   HOST[:PORT]              a host name ("localhost" too), an IPv4 literal or "[v6]"
 *   dns:[//AUTHORITY/]HOST[:PORT]
 *                            the same; the authority (a DNS server) is ignored
 *   ipv4:IP[:PORT][,...]     an IPv4 literal; of a comma list, the first address
 *   ipv6:[IP][:PORT][,...]   an IPv6 literal, bracketed, or bare without a port
 *                            ("ipv6:::1"); of a comma list, the first address
 *   unix:PATH                a unix socket, relative or absolute path
 *   unix:///ABS/PATH         a unix socket, absolute path
 *   unix-abstract:NAME       a Linux abstract socket (no file; NAME without the NUL);
 *                            parsed everywhere, -EAFNOSUPPORT from addr_sockaddr elsewhere
 *   tcp://HOST[:PORT]        plain HTTP/2 over TCP, as HOST[:PORT]
 *   tls://HOST[:PORT]        the same, over TLS
 *
 * A PORT left out is ADDR_DEFAULT_PORT (50051, prismqd's default). A host with more
 * than one colon and no brackets is a bare IPv6 literal without a port ("::1").
 * Parsing never touches the network and never allocates; addr_sockaddr resolves host
 * names. Nothing here aborts: a resolver out of memory is -ENOMEM. */
#ifndef PRISMQ_ADDR_H
#define PRISMQ_ADDR_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"

/* The port a target that names none gets: prismqd's default. */
#define ADDR_DEFAULT_PORT 50051

/* Enough for addr_format's and addr_peer_format's longest output and its NUL
 * ("tls://[" 255 characters "]:65535"). */
#define ADDR_FORMAT_LEN 272

enum addr_kind { ADDR_TCP = 0, ADDR_UNIX = 1, ADDR_UNIX_ABSTRACT = 2 };

typedef struct addr {
  enum addr_kind kind;
  int tls;        /* written as tls://host:port */
  char host[256]; /* TCP: the host, without brackets */
  uint16_t port;  /* TCP */
  char path[108]; /* unix: the path; abstract: the name (without the leading NUL) */
} addr;

/* Parses `target` (any form above; no network access).
 * Returns 0 and fills *out (unused fields zeroed), or -EINVAL with *out untouched and
 * `err` (errlen bytes; err may be NULL) saying what is wrong with the target and
 * listing the accepted forms. Port 0 is accepted (a listener lets the kernel choose);
 * a port above 65535, a port that is not a number, an empty host or path, a unix path
 * longer than sun_path holds, and an unknown "scheme://" are -EINVAL. */
int addr_parse(addr *out, const char *target, char *err, size_t errlen);

/* Resolves a parsed address into a socket address: a unix path or abstract name
 * directly; a TCP host with getaddrinfo (a host name may block on DNS; numeric hosts do
 * not), AI_PASSIVE when `passive` is non-zero, taking the first result.
 * Returns 0 and fills *ss and *sslen (the exact length: for an abstract socket
 * offsetof(sun_path) + 1 + strlen(name)); or, with *ss and *sslen untouched and `err`
 * (may be NULL) filled with "cannot resolve host HOST: <gai_strerror>":
 * -EHOSTUNREACH (no such host, or no address for it), -EAGAIN (the resolver failed
 * for now), -ENOMEM, -EINVAL (a bad `a`), -EAFNOSUPPORT (an abstract socket on a system
 * without them: COMPAT_HAVE_ABSTRACT_UNIX), or another negative errno. */
int addr_sockaddr(struct sockaddr_storage *ss, socklen_t *sslen, const addr *a, int passive,
                  char *err, size_t errlen);

/* Writes a's canonical text into buf (len bytes, truncated to fit, always
 * NUL-terminated when len > 0): "127.0.0.1:50051", "[::1]:50051", "example.org:443",
 * "unix:/p", "unix:rel", "unix-abstract:n"; a TLS address starts with "tls://".
 * addr_parse reads it back to the same address. ADDR_FORMAT_LEN always suffices. */
void addr_format(char *buf, size_t len, const addr *a);

/* Returns non-zero when `sa` is a loopback or local address: AF_UNIX, 127.0.0.0/8,
 * ::1, and IPv4-mapped 127.0.0.0/8; zero for anything else (a wildcard such as
 * 0.0.0.0 too) and for NULL. */
int addr_is_local(const struct sockaddr *sa);

/* Formats a peer socket address (salen bytes of it are valid) for logs and identities
 * into buf (len bytes, truncated to fit): "127.0.0.1:5555", "[::1]:5555", "unix" for
 * any AF_UNIX address, "unknown" for another family or a short salen. */
void addr_peer_format(char *buf, size_t len, const struct sockaddr *sa, socklen_t salen);

#endif
