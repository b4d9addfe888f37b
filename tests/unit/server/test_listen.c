/* Unit tests for server/listen: listeners on every kind of address accept a real
 * connection (made to the URL the listener reports, read back through addr), say
 * whether they are local and TLS, give unix socket files the mode and group asked for
 * before anyone can connect, clean up after themselves, and refuse bad URLs with a
 * reason. Loopback only, except one wildcard bind that is never connected to. Every
 * loop run is bounded by a guard timer. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "addr.h"
#include "listen.h"

#define GUARD_SECONDS 10

struct fx {
  struct event_base *base;
  struct event *guard;
  char dir[PATH_MAX]; /* a fresh directory for socket files, its real path */
  int accepted;
  listen_sock *from; /* the listener the last connection came through */
  int fd_nonblock, fd_cloexec;
  int timed_out;
};

static void on_accept(int fd, listen_sock *l, void *arg) {
  struct fx *f = arg;
  f->accepted++;
  f->from = l;
  f->fd_nonblock = (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
  f->fd_cloexec = (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
  close(fd);
  event_base_loopbreak(f->base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct fx *f = arg;
  f->timed_out = 1;
  event_base_loopbreak(f->base);
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  char tmpl[] = "/tmp/prismq-listen-XXXXXX";
  if (!f || !mkdtemp(tmpl) || !realpath(tmpl, f->dir)) return -1;
  f->base = event_base_new();
  f->guard = f->base ? evtimer_new(f->base, on_guard, f) : NULL;
  if (!f->guard) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  /* Fails if a listener left its socket file behind. */
  int rc = rmdir(f->dir);
  event_free(f->guard);
  event_base_free(f->base);
  free(f);
  return rc;
}

static listen_sock *listen_ok(struct fx *f, const char *url, const listen_opts *opts) {
  listen_sock *l = NULL;
  char err[512] = "";
  int rc = listen_new(&l, f->base, url, opts, on_accept, f, err, sizeof err);
  if (rc != 0) fail_msg("%s: %d %s", url, rc, err);
  return l;
}

/* Connects to the URL the listener reports and runs the loop until it accepts. */
static void connect_and_accept(struct fx *f, listen_sock *l) {
  addr a;
  struct sockaddr_storage ss;
  socklen_t len;
  char err[512];
  if (addr_parse(&a, listen_url(l), err, sizeof err) < 0) fail_msg("%s", err);
  assert_int_equal(addr_sockaddr(&ss, &len, &a, 0, err, sizeof err), 0);
  int c = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(c >= 0);
  if (connect(c, (struct sockaddr *)&ss, len) < 0) assert_int_equal(errno, EINPROGRESS);
  f->accepted = 0;
  f->from = NULL;
  f->timed_out = 0;
  struct timeval tv = {GUARD_SECONDS, 0};
  evtimer_add(f->guard, &tv);
  event_base_dispatch(f->base);
  evtimer_del(f->guard);
  close(c);
  assert_false(f->timed_out);
  assert_int_equal(f->accepted, 1);
  assert_ptr_equal(f->from, l);
  assert_true(f->fd_nonblock);
  assert_true(f->fd_cloexec);
}

static void assert_prefix(const char *s, const char *prefix) {
  if (strncmp(s, prefix, strlen(prefix)) != 0)
    fail_msg("\"%s\" does not start with \"%s\"", s, prefix);
}

/* The URL of a TCP listener names the port the kernel chose. */
static void assert_tcp_url(const listen_sock *l, const char *prefix) {
  assert_prefix(listen_url(l), prefix);
  const char *port = listen_url(l) + strlen(prefix);
  char *end;
  long v = strtol(port, &end, 10);
  assert_true(*end == '\0' && v > 0 && v <= 65535);
}

static void test_tcp_accepts(void **state) {
  struct fx *f = *state;
  listen_sock *l = listen_ok(f, "tcp://127.0.0.1:0", NULL);
  assert_tcp_url(l, "tcp://127.0.0.1:");
  assert_true(listen_is_local(l));
  assert_false(listen_is_tls(l));
  connect_and_accept(f, l);
  connect_and_accept(f, l);
  listen_free(l);
  listen_free(NULL);
}

static void test_tls_url(void **state) {
  struct fx *f = *state;
  listen_sock *l = listen_ok(f, "tls://127.0.0.1:0", &(listen_opts)LISTEN_OPTS_INIT);
  assert_tcp_url(l, "tls://127.0.0.1:");
  assert_true(listen_is_tls(l));
  assert_true(listen_is_local(l));
  connect_and_accept(f, l); /* the socket is plain: TLS is the caller's */
  listen_free(l);
}

static void test_other_tcp_forms(void **state) {
  struct fx *f = *state;
  const char *urls[] = {"127.0.0.1:0", "ipv4:127.0.0.1:0", "dns:///127.0.0.1:0", "127.0.0.2:0"};
  for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
    listen_sock *l = listen_ok(f, urls[i], NULL);
    assert_prefix(listen_url(l), "tcp://127.0.0.");
    assert_true(listen_is_local(l));
    assert_false(listen_is_tls(l));
    connect_and_accept(f, l);
    listen_free(l);
  }
  /* localhost is a name: whichever loopback address it resolves to first. */
  listen_sock *l = listen_ok(f, "localhost:0", NULL);
  assert_true(listen_is_local(l));
  connect_and_accept(f, l);
  listen_free(l);
}

static void test_ipv6_loopback(void **state) {
  struct fx *f = *state;
  listen_sock *l = NULL;
  char err[512];
  int rc = listen_new(&l, f->base, "ipv6:[::1]:0", NULL, on_accept, f, err, sizeof err);
  if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) skip(); /* no IPv6 here */
  if (rc != 0) fail_msg("%s", err);
  assert_tcp_url(l, "tcp://[::1]:");
  assert_true(listen_is_local(l));
  connect_and_accept(f, l);
  listen_free(l);
}

/* A wildcard is not local. Bound, never connected to, closed at once. */
static void test_wildcard_is_not_local(void **state) {
  struct fx *f = *state;
  listen_sock *l = listen_ok(f, "tcp://0.0.0.0:0", NULL);
  assert_tcp_url(l, "tcp://0.0.0.0:");
  assert_false(listen_is_local(l));
  listen_free(l);
}

static void test_unix_default_mode(void **state) {
  struct fx *f = *state;
  char path[PATH_MAX + 16], url[PATH_MAX + 32];
  struct stat st;
  snprintf(path, sizeof path, "%s/s.sock", f->dir);
  snprintf(url, sizeof url, "unix://%s", path);
  /* With no umask, bind alone would leave the file 0777. */
  mode_t old = umask(0);
  listen_sock *l = listen_ok(f, url, NULL);
  umask(old);
  assert_string_equal(listen_url(l), url);
  assert_true(listen_is_local(l));
  assert_false(listen_is_tls(l));
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  connect_and_accept(f, l);
  listen_free(l);
  assert_int_equal(lstat(path, &st), -1);
  assert_int_equal(errno, ENOENT);
}

static void test_unix_mode_and_group(void **state) {
  struct fx *f = *state;
  char url[PATH_MAX + 32], gid_text[32];
  struct stat st;
  snprintf(url, sizeof url, "unix:%s/g.sock", f->dir);
  /* root may give the file any group; anyone else only one of their own. */
  gid_t gid = geteuid() == 0 ? 1 : getgid();
  snprintf(gid_text, sizeof gid_text, "%u", (unsigned)gid);
  listen_opts opts = {0660, gid_text};
  listen_sock *l = listen_ok(f, url, &opts);
  assert_int_equal(lstat(url + strlen("unix:"), &st), 0);
  assert_int_equal(st.st_mode & 07777, 0660);
  assert_int_equal(st.st_gid, gid);
  connect_and_accept(f, l);
  listen_free(l);

  struct group *gr = getgrgid(gid);
  if (gr) { /* by name */
    opts.unix_group = gr->gr_name;
    opts.unix_mode = 0666;
    l = listen_ok(f, url, &opts);
    assert_int_equal(lstat(url + strlen("unix:"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0666);
    assert_int_equal(st.st_gid, gid);
    listen_free(l);
  }

  /* An unknown group is refused before any file is made. */
  char err[512];
  l = NULL;
  opts.unix_group = "prismq-no-such-group";
  assert_int_equal(listen_new(&l, f->base, url, &opts, on_accept, f, err, sizeof err), -EINVAL);
  assert_null(l);
  assert_non_null(strstr(err, "unknown group prismq-no-such-group"));
  assert_int_equal(lstat(url + strlen("unix:"), &st), -1);
}

/* unix:relative is made absolute for the URL and for the unlink at free, which here
 * comes after a change of directory. */
static void test_unix_relative_path(void **state) {
  struct fx *f = *state;
  char old[PATH_MAX], want[PATH_MAX + 32];
  struct stat st;
  assert_non_null(getcwd(old, sizeof old));
  assert_int_equal(chdir(f->dir), 0);
  listen_sock *l = listen_ok(f, "unix:rel.sock", NULL);
  assert_int_equal(chdir(old), 0);
  snprintf(want, sizeof want, "unix://%s/rel.sock", f->dir);
  assert_string_equal(listen_url(l), want);
  connect_and_accept(f, l);
  listen_free(l);
  assert_int_equal(lstat(want + strlen("unix://"), &st), -1);
}

static void test_unix_stale_socket_and_other_file(void **state) {
  struct fx *f = *state;
  char url[PATH_MAX + 32], err[512];
  const char *path = url + strlen("unix://");
  snprintf(url, sizeof url, "unix://%s/stale.sock", f->dir);

  /* A socket file left by a process that did not clean up is replaced. */
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  strcpy(sun.sun_path, path);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_int_equal(bind(s, (struct sockaddr *)&sun, sizeof sun), 0);
  close(s);
  listen_sock *l = listen_ok(f, url, NULL);
  connect_and_accept(f, l);
  listen_free(l);

  /* Any other file is left alone. */
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fclose(fp);
  l = NULL;
  assert_int_equal(listen_new(&l, f->base, url, NULL, on_accept, f, err, sizeof err), -EEXIST);
  assert_null(l);
  assert_non_null(strstr(err, "exists and is not a socket"));
  assert_int_equal(unlink(path), 0);
}

static void test_abstract(void **state) {
  struct fx *f = *state;
  char url[64], err[512];
  snprintf(url, sizeof url, "unix-abstract:prismq-test-listen-%d", (int)getpid());
  listen_sock *l = listen_ok(f, url, NULL);
  assert_string_equal(listen_url(l), url);
  assert_true(listen_is_local(l));
  assert_false(listen_is_tls(l));
  connect_and_accept(f, l);

  /* One listener per name. */
  listen_sock *l2 = NULL;
  assert_int_equal(listen_new(&l2, f->base, url, NULL, on_accept, f, err, sizeof err), -EADDRINUSE);
  assert_null(l2);
  assert_non_null(strstr(err, "cannot listen on unix-abstract:prismq-test-listen-"));
  listen_free(l);
  l = listen_ok(f, url, NULL); /* the name is free again */
  listen_free(l);
}

static void assert_refused(struct fx *f, const char *url, const listen_opts *opts, int want,
                           const char *why) {
  listen_sock *l = (listen_sock *)&l; /* untouched on failure */
  char err[512] = "";
  assert_int_equal(listen_new(&l, f->base, url, opts, on_accept, f, err, sizeof err), want);
  assert_ptr_equal(l, (listen_sock *)&l);
  if (!strstr(err, why)) fail_msg("%s: want \"%s\" in: %s", url, why, err);
  assert_int_equal(listen_new(&l, f->base, url, opts, on_accept, f, NULL, 0), want);
}

static void test_bad_urls(void **state) {
  struct fx *f = *state;
  assert_refused(f, "", NULL, -EINVAL, "empty address");
  assert_refused(f, "http://127.0.0.1:80", NULL, -EINVAL, "unknown scheme \"http\"");
  assert_refused(f, "tcp://127.0.0.1:99999", NULL, -EINVAL, "port out of range");
  assert_refused(f, "tcp://127.0.0.1:", NULL, -EINVAL, "missing port number");
  assert_refused(f, "unix:", NULL, -EINVAL, "empty unix socket path");
  assert_refused(f, "unix://relative", NULL, -EINVAL, "wants an absolute path");
  char url[PATH_MAX + 32];
  snprintf(url, sizeof url, "unix://%s/m.sock", f->dir);
  assert_refused(f, url, &(listen_opts){010000, NULL}, -EINVAL, "bad unix socket mode 10000");
  snprintf(url, sizeof url, "unix://%s/no/such/dir.sock", f->dir);
  assert_refused(f, url, NULL, -ENOENT, "cannot listen on unix://");

  /* A port in use. */
  listen_sock *l = listen_ok(f, "tcp://127.0.0.1:0", NULL);
  assert_refused(f, listen_url(l), NULL, -EADDRINUSE, "cannot listen on tcp://127.0.0.1:");
  listen_free(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_tcp_accepts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_url, setup, teardown),
      cmocka_unit_test_setup_teardown(test_other_tcp_forms, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ipv6_loopback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wildcard_is_not_local, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unix_default_mode, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unix_mode_and_group, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unix_relative_path, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unix_stale_socket_and_other_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_abstract, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
