/* Unit tests for addr: every form of gRPC's naming and ours parses to the address it
 * names, bad targets are refused with a reason and leave the output alone, the
 * canonical text reads back to the same address, socket addresses come out exact, and
 * loopback peers are told apart. No test resolves a name through DNS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>

#include "addr.h"
#include "compat.h"

static addr parse_ok(const char *target) {
  addr a;
  char err[512] = "";
  int rc = addr_parse(&a, target, err, sizeof err);
  if (rc != 0) fail_msg("%s: %s", target, err);
  return a;
}

static void assert_tcp(const char *target, const char *host, unsigned port, int tls) {
  addr a = parse_ok(target);
  assert_int_equal(a.kind, ADDR_TCP);
  assert_string_equal(a.host, host);
  assert_int_equal(a.port, port);
  assert_int_equal(a.tls, tls);
  assert_string_equal(a.path, "");
}

static void assert_path(const char *target, enum addr_kind kind, const char *path) {
  addr a = parse_ok(target);
  assert_int_equal(a.kind, kind);
  assert_string_equal(a.path, path);
  assert_string_equal(a.host, "");
  assert_int_equal(a.tls, 0);
}

static void test_host_port_forms(void **state) {
  (void)state;
  assert_tcp("localhost:1234", "localhost", 1234, 0);
  assert_tcp("localhost", "localhost", ADDR_DEFAULT_PORT, 0);
  assert_tcp("127.0.0.1:50051", "127.0.0.1", 50051, 0);
  assert_tcp("example.org:443", "example.org", 443, 0);
  assert_tcp("a_b-c.d:65535", "a_b-c.d", 65535, 0);
  assert_tcp("host:0", "host", 0, 0); /* a listener's "any port" */
  assert_tcp("[::1]:5555", "::1", 5555, 0);
  assert_tcp("[::1]", "::1", ADDR_DEFAULT_PORT, 0);
  assert_tcp("::1", "::1", ADDR_DEFAULT_PORT, 0); /* bare IPv6: no port */
  assert_tcp("[fe80::1%eth0]:7", "fe80::1%eth0", 7, 0);
}

static void test_dns_ipv4_ipv6_schemes(void **state) {
  (void)state;
  assert_tcp("dns:host:80", "host", 80, 0);
  assert_tcp("dns:host", "host", ADDR_DEFAULT_PORT, 0);
  assert_tcp("dns:///host:80", "host", 80, 0);
  assert_tcp("dns://8.8.8.8:53/host:80", "host", 80, 0); /* the authority is ignored */
  assert_tcp("dns:///[::1]:80", "::1", 80, 0);
  assert_tcp("ipv4:1.2.3.4:80", "1.2.3.4", 80, 0);
  assert_tcp("ipv4:1.2.3.4", "1.2.3.4", ADDR_DEFAULT_PORT, 0);
  assert_tcp("ipv4:1.2.3.4:80,5.6.7.8:90", "1.2.3.4", 80, 0);
  assert_tcp("ipv6:[::1]:80", "::1", 80, 0);
  assert_tcp("ipv6:::1", "::1", ADDR_DEFAULT_PORT, 0);
  assert_tcp("ipv6:[fe80::1]:80,[::1]:81", "fe80::1", 80, 0);
}

static void test_tcp_and_tls_urls(void **state) {
  (void)state;
  assert_tcp("tcp://127.0.0.1:0", "127.0.0.1", 0, 0);
  assert_tcp("tcp://[::1]:1", "::1", 1, 0);
  assert_tcp("tcp://localhost", "localhost", ADDR_DEFAULT_PORT, 0);
  assert_tcp("tls://example.org:443", "example.org", 443, 1);
  assert_tcp("tls://[::1]", "::1", ADDR_DEFAULT_PORT, 1);
}

static void test_unix_forms(void **state) {
  (void)state;
  assert_path("unix:relative/sock", ADDR_UNIX, "relative/sock");
  assert_path("unix:/abs/sock", ADDR_UNIX, "/abs/sock");
  assert_path("unix:///abs/sock", ADDR_UNIX, "/abs/sock");
  assert_path("unix-abstract:name", ADDR_UNIX_ABSTRACT, "name");
  assert_path("unix-abstract:with/slash:and colon", ADDR_UNIX_ABSTRACT, "with/slash:and colon");

  /* sun_path holds 107 bytes and a NUL. */
  char t[160], longest[108];
  memset(longest, 'p', 107);
  longest[107] = '\0';
  snprintf(t, sizeof t, "unix:%s", longest);
  assert_path(t, ADDR_UNIX, longest);
  snprintf(t, sizeof t, "unix-abstract:%s", longest);
  assert_path(t, ADDR_UNIX_ABSTRACT, longest);
}

/* Refused with -EINVAL, *out as it was, and err naming the problem and the forms. */
static void assert_bad(const char *target, const char *why) {
  addr a, before;
  char err[512] = "";
  memset(&a, 0xab, sizeof a);
  memcpy(&before, &a, sizeof a);
  assert_int_equal(addr_parse(&a, target, err, sizeof err), -EINVAL);
  assert_memory_equal(&a, &before, sizeof a);
  if (!strstr(err, why)) fail_msg("%s: want \"%s\" in: %s", target, why, err);
  assert_non_null(strstr(err, "accepted: HOST[:PORT]"));
  assert_int_equal(addr_parse(&a, target, NULL, 0), -EINVAL);
}

static void test_bad_targets(void **state) {
  (void)state;
  assert_bad("", "empty address");
  assert_bad("host:", "missing port number");
  assert_bad("host:12ab", "port is not a number");
  assert_bad("host:-1", "port is not a number");
  assert_bad("host:65536", "port out of range");
  assert_bad("host:99999999999999999999999", "port out of range");
  assert_bad(":80", "missing host");
  assert_bad("tcp://", "missing host");
  assert_bad("tcp://host:80/", "port is not a number");
  assert_bad("host name:80", "bad character in host");
  assert_bad("user@host:80", "bad character in host");
  assert_bad("[::1", "'[' without ']'");
  assert_bad("[::1]x", "junk after ']'");
  assert_bad("[host]:80", "not an IPv6 address between");
  assert_bad("[]:80", "missing host");
  assert_bad("unix:", "empty unix socket path");
  assert_bad("unix://", "empty unix socket path");
  assert_bad("unix://relative", "wants an absolute path");
  assert_bad("unix-abstract:", "empty abstract socket name");
  assert_bad("http://host:80", "unknown scheme \"http\"");
  assert_bad("grpc+tls://host:80", "unknown scheme \"grpc+tls\"");
  assert_bad("dns://8.8.8.8", "wants a '/' before the host");
  assert_bad("ipv4:::1", "not an IPv4 address");
  assert_bad("ipv4:example.org:80", "not an IPv4 address");
  assert_bad("ipv6:1.2.3.4", "not an IPv6 address");
  assert_bad("ipv6:[::1]:99999", "port out of range");

  char t[160], toolong[109];
  memset(toolong, 'p', 108);
  toolong[108] = '\0';
  snprintf(t, sizeof t, "unix:%s", toolong);
  assert_bad(t, "too long");
  snprintf(t, sizeof t, "unix-abstract:%s", toolong);
  assert_bad(t, "too long");
  char longhost[300];
  memset(longhost, 'h', 256);
  strcpy(longhost + 256, ":80");
  assert_bad(longhost, "host name too long");

  /* A short buffer keeps the reason and stays terminated. */
  char err[40];
  addr a;
  assert_int_equal(addr_parse(&a, "host:65536", err, sizeof err), -EINVAL);
  assert_int_equal(strlen(err), sizeof err - 1);
  assert_string_equal(err, "bad address \"host:65536\": port out of r");
}

/* target formats as `canon`, which parses back to the same address. */
static void assert_format(const char *target, const char *canon) {
  char buf[ADDR_FORMAT_LEN];
  addr a = parse_ok(target);
  addr_format(buf, sizeof buf, &a);
  assert_string_equal(buf, canon);
  addr b = parse_ok(buf);
  assert_int_equal(b.kind, a.kind);
  assert_int_equal(b.tls, a.tls);
  assert_string_equal(b.host, a.host);
  assert_int_equal(b.port, a.port);
  assert_string_equal(b.path, a.path);
}

static void test_format_round_trips(void **state) {
  (void)state;
  assert_format("127.0.0.1:50051", "127.0.0.1:50051");
  assert_format("localhost", "localhost:50051");
  assert_format("tcp://h:1", "h:1");
  assert_format("dns:///127.0.0.1:80", "127.0.0.1:80");
  assert_format("ipv4:10.0.0.1,10.0.0.2", "10.0.0.1:50051");
  assert_format("ipv6:::1", "[::1]:50051");
  assert_format("[::1]:0", "[::1]:0");
  assert_format("tls://[::1]:443", "tls://[::1]:443");
  assert_format("tls://example.org", "tls://example.org:50051");
  assert_format("unix:///tmp/s", "unix:/tmp/s");
  assert_format("unix:rel", "unix:rel");
  assert_format("unix:////x", "unix:////x"); /* "unix://x" would be a relative path */
  assert_format("unix-abstract:n", "unix-abstract:n");

  /* The longest host fits ADDR_FORMAT_LEN; a short buffer truncates and terminates. */
  char buf[ADDR_FORMAT_LEN];
  addr a;
  memset(&a, 0, sizeof a);
  a.kind = ADDR_TCP;
  a.tls = 1;
  a.port = 65535;
  memset(a.host, 'a', 254);
  a.host[254] = ':'; /* bracketed */
  addr_format(buf, sizeof buf, &a);
  assert_int_equal(strlen(buf), strlen("tls://[") + 255 + strlen("]:65535"));
  a = parse_ok("127.0.0.1:50051");
  addr_format(buf, 5, &a);
  assert_string_equal(buf, "127.");
}

static void test_sockaddr(void **state) {
  (void)state;
  struct sockaddr_storage ss;
  socklen_t len;
  char err[256];
  addr a = parse_ok("127.0.0.1:80");
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 0, err, sizeof err), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  assert_int_equal(len, sizeof(struct sockaddr_in));
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  assert_int_equal(ntohs(in->sin_port), 80);
  assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);

  a = parse_ok("ipv6:[::1]:81");
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 1, err, sizeof err), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  assert_int_equal(len, sizeof(struct sockaddr_in6));
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  assert_int_equal(ntohs(in6->sin6_port), 81);
  assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));

  /* localhost is a name (/etc/hosts), and local. */
  a = parse_ok("localhost:5");
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 0, err, sizeof err), 0);
  assert_true(addr_is_local((struct sockaddr *)&ss));

  struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
  a = parse_ok("unix:///tmp/x.sock");
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 1, err, sizeof err), 0);
  assert_int_equal(sun->sun_family, AF_UNIX);
  assert_string_equal(sun->sun_path, "/tmp/x.sock");
  assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + strlen("/tmp/x.sock") + 1);

  a = parse_ok("unix-abstract:abc");
  memset(&ss, 0x55, sizeof ss);
  if (!COMPAT_HAVE_ABSTRACT_UNIX) {
    /* Parsed everywhere, a socket address only where the abstract namespace exists. */
    len = 3;
    assert_int_equal(addr_sockaddr(&ss, &len, &a, 1, err, sizeof err), -EAFNOSUPPORT);
    assert_string_equal(err, "unix-abstract:abc: abstract unix sockets are Linux's alone");
    assert_int_equal(len, 3);
  } else {
    assert_int_equal(addr_sockaddr(&ss, &len, &a, 1, err, sizeof err), 0);
    assert_int_equal(sun->sun_family, AF_UNIX);
    assert_int_equal(sun->sun_path[0], 0);
    assert_memory_equal(sun->sun_path + 1, "abc", 3);
    assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 1 + 3);

    /* The longest name fills sun_path. */
    memset(a.path, 'n', 107);
    a.path[107] = '\0';
    assert_int_equal(addr_sockaddr(&ss, &len, &a, 1, err, sizeof err), 0);
    assert_int_equal(len, sizeof(struct sockaddr_un));
    assert_int_equal(sun->sun_path[107], 'n');
  }

  /* A bad address: -EINVAL, outputs untouched. */
  struct sockaddr_storage before;
  memset(&ss, 0x77, sizeof ss);
  memcpy(&before, &ss, sizeof ss);
  len = 3;
  memset(&a, 0, sizeof a); /* TCP without a host */
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 0, err, sizeof err), -EINVAL);
  assert_memory_equal(&ss, &before, sizeof ss);
  assert_int_equal(len, 3);
  a.kind = ADDR_UNIX; /* empty path */
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 0, NULL, 0), -EINVAL);
  assert_int_equal(len, 3);
}

static void test_is_local(void **state) {
  (void)state;
  struct sockaddr_in in = {.sin_family = AF_INET};
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  const struct {
    const char *ip;
    int local;
  } v4[] = {{"127.0.0.1", 1},
            {"127.255.0.9", 1},
            {"10.0.0.1", 0},
            {"0.0.0.0", 0},
            {"128.0.0.1", 0}},
    v6[] = {{"::1", 1}, {"::ffff:127.0.0.1", 1}, {"::ffff:127.9.9.9", 1}, {"::", 0},
            {"::2", 0}, {"::ffff:10.0.0.1", 0},  {"fe80::1", 0},          {"::127.0.0.1", 0}};
  for (size_t i = 0; i < sizeof v4 / sizeof v4[0]; i++) {
    assert_int_equal(inet_pton(AF_INET, v4[i].ip, &in.sin_addr), 1);
    if (!addr_is_local((struct sockaddr *)&in) != !v4[i].local) fail_msg("%s", v4[i].ip);
  }
  for (size_t i = 0; i < sizeof v6 / sizeof v6[0]; i++) {
    assert_int_equal(inet_pton(AF_INET6, v6[i].ip, &in6.sin6_addr), 1);
    if (!addr_is_local((struct sockaddr *)&in6) != !v6[i].local) fail_msg("%s", v6[i].ip);
  }
  assert_true(addr_is_local((struct sockaddr *)&un));
  assert_false(addr_is_local(NULL));
}

static void test_peer_format(void **state) {
  (void)state;
  char buf[ADDR_FORMAT_LEN];
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(5555)};
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(5555)};
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
  inet_pton(AF_INET6, "::1", &in6.sin6_addr);
  addr_peer_format(buf, sizeof buf, (struct sockaddr *)&in, sizeof in);
  assert_string_equal(buf, "127.0.0.1:5555");
  addr_peer_format(buf, sizeof buf, (struct sockaddr *)&in6, sizeof in6);
  assert_string_equal(buf, "[::1]:5555");
  /* An unnamed unix peer comes back from accept(2) with just the family. */
  addr_peer_format(buf, sizeof buf, (struct sockaddr *)&un, sizeof un.sun_family);
  assert_string_equal(buf, "unix");
  addr_peer_format(buf, sizeof buf, (struct sockaddr *)&in6, sizeof in);
  assert_string_equal(buf, "unknown");
  addr_peer_format(buf, sizeof buf, NULL, 0);
  assert_string_equal(buf, "unknown");
  addr_peer_format(buf, 4, (struct sockaddr *)&in, sizeof in);
  assert_string_equal(buf, "127");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_host_port_forms),  cmocka_unit_test(test_dns_ipv4_ipv6_schemes),
      cmocka_unit_test(test_tcp_and_tls_urls), cmocka_unit_test(test_unix_forms),
      cmocka_unit_test(test_bad_targets),      cmocka_unit_test(test_format_round_trips),
      cmocka_unit_test(test_sockaddr),         cmocka_unit_test(test_is_local),
      cmocka_unit_test(test_peer_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
