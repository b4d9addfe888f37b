#include "compat.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <windows.h>
/* After windows.h, which it needs. */
#include <bcrypt.h>
#include <direct.h>
#include <io.h>
#include <signal.h>
#include <sys/stat.h>
#else
#include <fnmatch.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#ifdef __linux__
#include <sys/eventfd.h>
#include <sys/random.h>
#endif

/* ---- the C library ---- */

/* One tick of the clock a loop without EVENT_BASE_FLAG_PRECISE_TIMER keeps time by, in
 * microseconds: libevent reads CLOCK_MONOTONIC_COARSE on Linux and GetTickCount64 on
 * Windows, both up to a tick behind the true time; elsewhere a precise clock. */
static uint64_t read_coarse_tick_us(void) {
#ifdef _WIN32
  DWORD adjustment, increment; /* 100 ns units */
  BOOL disabled;
  if (GetSystemTimeAdjustment(&adjustment, &increment, &disabled)) return (increment + 9) / 10;
  return 15625; /* the default clock interrupt */
#elif defined(CLOCK_MONOTONIC_COARSE)
  struct timespec res;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
    return (uint64_t)res.tv_sec * 1000000u + ((uint64_t)res.tv_nsec + 999) / 1000;
  return 10000; /* the coarsest tick Linux has (HZ=100) */
#else
  return 0;
#endif
}

/* The tick, read once: it is the system's constant, and a timeout is added on every
 * call's path. Any thread may be first; all read the same value. */
static uint64_t coarse_tick_us(void) {
  static _Atomic uint64_t tick = UINT64_MAX;
  uint64_t t = atomic_load_explicit(&tick, memory_order_relaxed);
  if (t == UINT64_MAX) {
    t = read_coarse_tick_us();
    atomic_store_explicit(&tick, t, memory_order_relaxed);
  }
  return t;
}

struct timeval compat_timeout_ms(uint64_t ms) {
  uint64_t us = ms ? ms * 1000u + coarse_tick_us() : 0; /* 0: the next pass, at once */
  struct timeval tv;
  tv.tv_sec = (long)(us / 1000000u);
  tv.tv_usec = (long)(us % 1000000u);
  return tv;
}

#ifdef _WIN32
ssize_t compat_pread(int fd, void *buf, size_t len, uint64_t off) {
  HANDLE h = (HANDLE)_get_osfhandle(fd);
  OVERLAPPED o = {0};
  o.Offset = (DWORD)off;
  o.OffsetHigh = (DWORD)(off >> 32);
  DWORD got = 0, want = len > 0x40000000u ? 0x40000000u : (DWORD)len;
  if (h == INVALID_HANDLE_VALUE) {
    errno = EBADF;
    return -1;
  }
  if (!ReadFile(h, buf, want, &got, &o)) {
    if (GetLastError() == ERROR_HANDLE_EOF) return 0;
    errno = EIO;
    return -1;
  }
  return (ssize_t)got;
}

ssize_t compat_writev(int fd, const struct iovec *v, int n) {
  size_t total = 0;
  for (int i = 0; i < n; i++) total += v[i].iov_len;
  char *buf = malloc(total ? total : 1);
  if (!buf) {
    errno = ENOMEM;
    return -1;
  }
  size_t o = 0;
  for (int i = 0; i < n; i++) {
    memcpy(buf + o, v[i].iov_base, v[i].iov_len);
    o += v[i].iov_len;
  }
  int w = _write(fd, buf, (unsigned)total);
  free(buf);
  return w;
}
#endif

int compat_mkdir(const char *path, unsigned mode) {
#ifdef _WIN32
  (void)mode;
  return _mkdir(path);
#else
  return mkdir(path, (mode_t)mode);
#endif
}

#ifdef _WIN32
/* The bracket expression at p (just after its '['), against c. Returns the position after
 * its ']' and sets *hit, or NULL when it has no ']' (then '[' is an ordinary character). */
static const char *bracket(const char *p, unsigned char c, int *hit) {
  int neg = *p == '!' || *p == '^', in = 0;
  if (neg) p++;
  const char *start = p;
  while (*p && (*p != ']' || p == start)) {
    unsigned char lo = (unsigned char)*p++, hi = lo;
    if (lo == '\\' && *p) lo = hi = (unsigned char)*p++;
    if (*p == '-' && p[1] && p[1] != ']') {
      hi = (unsigned char)p[1];
      p += 2;
      if (hi == '\\' && *p) hi = (unsigned char)*p++;
    }
    if (c >= lo && c <= hi) in = 1;
  }
  if (*p != ']') return NULL;
  *hit = in != neg;
  return p + 1;
}

/* Backtracking over the last '*' only: each '*' takes the shortest run that lets the rest
 * match, which is linear per '*' (the classic glob match). What this does not take as
 * glibc does fails closed, as the identity globs of authz want: a pattern with a
 * character class or its kin ("[:", "[.", "[=", not supported here) or ending in a lone
 * '\\' (invalid) matches nothing. */
int compat_fnmatch(const char *glob, const char *s) {
  const char *star = NULL, *star_s = NULL;
  if (strstr(glob, "[:") || strstr(glob, "[.") || strstr(glob, "[=")) return 0;
  size_t n = strlen(glob), bs = 0;
  while (bs < n && glob[n - 1 - bs] == '\\') bs++;
  if (bs % 2) return 0;
  while (*s) {
    int hit = 0;
    const char *next = NULL;
    if (*glob == '*') {
      star = ++glob;
      star_s = s;
      continue;
    }
    if (*glob == '?') {
      next = glob + 1;
    } else if (*glob == '[' && (next = bracket(glob + 1, (unsigned char)*s, &hit)) != NULL) {
      if (!hit) next = NULL;
    } else {
      const char *g = glob;
      if (*g == '\\' && g[1]) g++;
      if (*g && *g == *s) next = g + 1;
    }
    if (next) {
      glob = next;
      s++;
    } else if (star) {
      glob = star;
      s = ++star_s;
    } else {
      return 0;
    }
  }
  while (*glob == '*') glob++;
  return *glob == '\0';
}
#else
int compat_fnmatch(const char *glob, const char *s) { return fnmatch(glob, s, 0) == 0; }
#endif

#ifdef __GLIBC__
void compat_explicit_bzero(void *p, size_t n) { explicit_bzero(p, n); }

void *compat_memrchr(const void *s, int c, size_t n) { return memrchr(s, c, n); }

void *compat_memmem(const void *hay, size_t hlen, const void *needle, size_t nlen) {
  return memmem(hay, hlen, needle, nlen);
}

const char *compat_strsignal(int sig) { return strsignal(sig); }

void compat_twalk_r(const void *root, void (*fn)(const void *node, VISIT v, void *arg), void *arg) {
  twalk_r(root, fn, arg);
}

void compat_tdestroy(void *root, int (*cmp)(const void *, const void *),
                     void (*free_node)(void *)) {
  (void)cmp;
  tdestroy(root, free_node);
}
#else
void compat_explicit_bzero(void *p, size_t n) {
#ifdef _WIN32
  SecureZeroMemory(p, n);
#else
  explicit_bzero(p, n); /* the BSDs' (macOS would want memset_s) */
#endif
}

void *compat_memrchr(const void *s, int c, size_t n) {
  const unsigned char *p = s;
  while (n--)
    if (p[n] == (unsigned char)c) return (void *)(p + n);
  return NULL;
}

/* First-byte scan with memchr, then a compare: fine for the short needles used here. */
void *compat_memmem(const void *hay, size_t hlen, const void *needle, size_t nlen) {
  const char *h = hay, *end = h + hlen;
  if (nlen == 0) return (void *)h;
  while (hlen >= nlen) {
    const char *p = memchr(h, *(const char *)needle, hlen - nlen + 1);
    if (!p) return NULL;
    if (memcmp(p, needle, nlen) == 0) return (void *)p;
    h = p + 1;
    hlen = (size_t)(end - h);
  }
  return NULL;
}

#ifndef _WIN32
const char *compat_strsignal(int sig) { return strsignal(sig); }
#else
/* glibc's texts for the signals a run can report there, by Linux's numbers, which
 * proc_win.c maps Windows' ends to (mingw's own SIGABRT is 22). */
const char *compat_strsignal(int sig) {
  switch (sig) {
  case 2: return "Interrupt";
  case 4: return "Illegal instruction";
  case 5: return "Trace/breakpoint trap";
  case 6: return "Aborted";
  case 7: return "Bus error";
  case 8: return "Floating point exception";
  case 9: return "Killed";
  case 11: return "Segmentation fault";
  case 13: return "Broken pipe";
  case 15: return "Terminated";
  default: return "Unknown signal";
  }
}
#endif

static _Thread_local void (*walk_fn)(const void *, VISIT, void *);
static _Thread_local void *walk_arg;

static void walk_visit(const void *node, VISIT v, int depth) {
  (void)depth;
  walk_fn(node, v, walk_arg);
}

void compat_twalk_r(const void *root, void (*fn)(const void *node, VISIT v, void *arg), void *arg) {
  void (*saved_fn)(const void *, VISIT, void *) = walk_fn;
  void *saved_arg = walk_arg;
  walk_fn = fn;
  walk_arg = arg;
  twalk(root, walk_visit);
  walk_fn = saved_fn;
  walk_arg = saved_arg;
}

void compat_tdestroy(void *root, int (*cmp)(const void *, const void *),
                     void (*free_node)(void *)) {
  while (root) {
    void *key = *(void **)root;
    tdelete(key, &root, cmp);
    free_node(key);
  }
}
#endif

#ifdef _WIN32
FILE *compat_memstream_open(compat_memstream *m) {
  char dir[MAX_PATH + 1], path[MAX_PATH + 1];
  m->f = NULL;
  m->buf = NULL;
  m->len = 0;
  if (!GetTempPathA(sizeof dir, dir) || !GetTempFileNameA(dir, "pq", 0, path)) {
    errno = EIO;
    return NULL;
  }
  int fd = _open(
      path,
      _O_RDWR | _O_CREAT | _O_TRUNC | _O_BINARY | _O_NOINHERIT | _O_TEMPORARY | _O_SHORT_LIVED,
      _S_IREAD | _S_IWRITE);
  if (fd < 0) {
    int e = errno;
    DeleteFileA(path); /* GetTempFileNameA made it */
    errno = e;
    return NULL;
  }
  if (!(m->f = _fdopen(fd, "w+b"))) _close(fd); /* _O_TEMPORARY: the close deletes it */
  return m->f;
}

/* How many bytes of s (n of them) are in set. */
static size_t count_in(const char *s, size_t n, const char *set) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += s[i] && strchr(set, s[i]) != NULL;
  return k;
}

int compat_ansi_safe(const char *s, const char *special) {
  int wn = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
  if (wn <= 0) return 0;
  wchar_t *w = malloc((size_t)wn * sizeof *w);
  int an = w ? MultiByteToWideChar(CP_UTF8, 0, s, -1, w, wn) : 0;
  an = an > 0 ? WideCharToMultiByte(CP_ACP, 0, w, -1, NULL, 0, NULL, NULL) : 0;
  char *a = an > 0 ? malloc((size_t)an) : NULL;
  int ok = a && WideCharToMultiByte(CP_ACP, 0, w, -1, a, an, NULL, NULL) > 0 &&
           count_in(a, (size_t)an, special) == count_in(s, strlen(s), special);
  free(a);
  free(w);
  return ok;
}

const char *compat_getenv(const char *name, char *buf, size_t len) {
  wchar_t wname[64], wval[4096];
  if (MultiByteToWideChar(CP_UTF8, 0, name, -1, wname, 64) <= 0) return NULL;
  DWORD n = GetEnvironmentVariableW(wname, wval, 4096);
  if (n == 0 || n >= 4096) return NULL;
  return WideCharToMultiByte(CP_UTF8, 0, wval, -1, buf, (int)len, NULL, NULL) > 0 ? buf : NULL;
}

int compat_memstream_close(compat_memstream *m) {
  long n = fflush(m->f) == 0 ? ftell(m->f) : -1;
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  int ok = buf && fseek(m->f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)n, m->f) == (size_t)n;
  fclose(m->f);
  m->f = NULL;
  if (!ok) {
    free(buf);
    errno = EIO;
    return -1;
  }
  buf[n] = '\0';
  m->buf = buf;
  m->len = (size_t)n;
  return 0;
}
#else
FILE *compat_memstream_open(compat_memstream *m) {
  m->buf = NULL;
  m->len = 0;
  return m->f = open_memstream(&m->buf, &m->len);
}

const char *compat_getenv(const char *name, char *buf, size_t len) {
  (void)buf;
  (void)len;
  return getenv(name);
}

int compat_memstream_close(compat_memstream *m) {
  int rc = fclose(m->f);
  m->f = NULL;
  return rc == 0 ? 0 : -1;
}
#endif

/* ---- errors ---- */

#ifdef _WIN32
/* winsock's error codes as the errno values POSIX gives for the same failures. */
static int errno_of_wsa(int w) {
  switch (w) {
  case 0: return 0;
  case WSAEWOULDBLOCK: return EAGAIN;
  case WSAEINTR: return EINTR;
  case WSAEBADF:
  case WSAENOTSOCK: return ENOTSOCK;
  case WSAEACCES: return EACCES;
  case WSAEFAULT: return EFAULT;
  case WSAEINVAL:
  case WSANOTINITIALISED: return EINVAL;
  case WSAEMFILE: return EMFILE;
  case WSAEINPROGRESS: return EINPROGRESS;
  case WSAEALREADY: return EALREADY;
  case WSAEDESTADDRREQ: return EDESTADDRREQ;
  case WSAEMSGSIZE: return EMSGSIZE;
  case WSAEPROTOTYPE: return EPROTOTYPE;
  case WSAENOPROTOOPT: return ENOPROTOOPT;
  case WSAEPROTONOSUPPORT:
  case WSAESOCKTNOSUPPORT: return EPROTONOSUPPORT;
  case WSAEOPNOTSUPP: return EOPNOTSUPP;
  case WSAEPFNOSUPPORT:
  case WSAEAFNOSUPPORT: return EAFNOSUPPORT;
  case WSAEADDRINUSE: return EADDRINUSE;
  case WSAEADDRNOTAVAIL: return EADDRNOTAVAIL;
  case WSAENETDOWN: return ENETDOWN;
  case WSAENETUNREACH: return ENETUNREACH;
  case WSAENETRESET: return ENETRESET;
  case WSAECONNABORTED: return ECONNABORTED;
  case WSAECONNRESET: return ECONNRESET;
  case WSAENOBUFS: return ENOBUFS;
  case WSAEISCONN: return EISCONN;
  case WSAENOTCONN: return ENOTCONN;
  case WSAESHUTDOWN: return EPIPE; /* a send after shutdown, as POSIX says it */
  case WSAETIMEDOUT: return ETIMEDOUT;
  case WSAECONNREFUSED: return ECONNREFUSED;
  case WSAEHOSTDOWN:
  case WSAEHOSTUNREACH: return EHOSTUNREACH;
  case WSA_NOT_ENOUGH_MEMORY: return ENOMEM;
  default: return EIO;
  }
}

/* glibc's texts of the errno values Windows' C library has none for (its POSIX
 * supplement, 100 and up: "Unknown error" there). */
static const struct {
  int e;
  const char *text;
} posix_texts[] = {
    {EADDRINUSE, "Address already in use"},
    {EADDRNOTAVAIL, "Cannot assign requested address"},
    {EAFNOSUPPORT, "Address family not supported by protocol"},
    {EALREADY, "Operation already in progress"},
    {EBADMSG, "Bad message"},
    {ECANCELED, "Operation canceled"},
    {ECONNABORTED, "Software caused connection abort"},
    {ECONNREFUSED, "Connection refused"},
    {ECONNRESET, "Connection reset by peer"},
    {EDESTADDRREQ, "Destination address required"},
    {EHOSTUNREACH, "No route to host"},
    {EIDRM, "Identifier removed"},
    {EINPROGRESS, "Operation now in progress"},
    {EISCONN, "Transport endpoint is already connected"},
    {ELOOP, "Too many levels of symbolic links"},
    {EMSGSIZE, "Message too long"},
    {ENETDOWN, "Network is down"},
    {ENETRESET, "Network dropped connection on reset"},
    {ENETUNREACH, "Network is unreachable"},
    {ENOBUFS, "No buffer space available"},
    {ENODATA, "No data available"},
    {ENOLINK, "Link has been severed"},
    {ENOMSG, "No message of desired type"},
    {ENOPROTOOPT, "Protocol not available"},
    {ENOSR, "Out of streams resources"},
    {ENOSTR, "Device not a stream"},
    {ENOTCONN, "Transport endpoint is not connected"},
    {ENOTRECOVERABLE, "State not recoverable"},
    {ENOTSOCK, "Socket operation on non-socket"},
    {ENOTSUP, "Operation not supported"},
    {ESHUTDOWN, "Cannot send after transport endpoint shutdown"},
    {EOPNOTSUPP, "Operation not supported"},
    {EOVERFLOW, "Value too large for defined data type"},
    {EOWNERDEAD, "Owner died"},
    {EPROTO, "Protocol error"},
    {EPROTONOSUPPORT, "Protocol not supported"},
    {EPROTOTYPE, "Protocol wrong type for socket"},
    {ETIME, "Timer expired"},
    {ETIMEDOUT, "Connection timed out"},
    {ETXTBSY, "Text file busy"},
    {EWOULDBLOCK, "Resource temporarily unavailable"},
};
#endif

const char *compat_strerror(int e) {
#ifdef _WIN32
  for (size_t i = 0; i < sizeof posix_texts / sizeof posix_texts[0]; i++)
    if (posix_texts[i].e == e) return posix_texts[i].text;
#endif
  return strerror(e);
}

int compat_sock_errno(void) {
#ifdef _WIN32
  return errno_of_wsa(WSAGetLastError());
#else
  return errno;
#endif
}

/* ---- sockets ---- */

#ifdef _WIN32
static INIT_ONCE net_once = INIT_ONCE_STATIC_INIT;
static int net_rc;

static BOOL CALLBACK net_start(PINIT_ONCE once, PVOID param, PVOID *ctx) {
  (void)once;
  (void)param;
  (void)ctx;
  WSADATA d;
  /* WSAStartup returns its error rather than setting WSAGetLastError's. */
  int rc = WSAStartup(MAKEWORD(2, 2), &d);
  net_rc = rc ? -errno_of_wsa(rc) : 0;
  return TRUE;
}
#endif

int compat_net_init(void) {
#ifdef _WIN32
  InitOnceExecuteOnce(&net_once, net_start, NULL, NULL);
  return net_rc;
#else
  return 0;
#endif
}

int compat_sock_stream(evutil_socket_t *out, int family) {
  int rc = compat_net_init();
  if (rc < 0) return rc;
#if defined(_WIN32)
  /* Not inherited by the processes this one starts (sockets are, by default). */
  SOCKET s =
      WSASocketW(family, SOCK_STREAM, 0, NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) return -compat_sock_errno();
  evutil_socket_t fd = (evutil_socket_t)s;
  if (evutil_make_socket_nonblocking(fd) < 0) {
    rc = -compat_sock_errno();
    evutil_closesocket(fd);
    return rc;
  }
#elif defined(SOCK_NONBLOCK)
  /* Linux and the BSDs: one call. */
  evutil_socket_t fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
#else
  evutil_socket_t fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) return -errno;
  if (evutil_make_socket_nonblocking(fd) < 0 || evutil_make_socket_closeonexec(fd) < 0) {
    rc = -errno;
    evutil_closesocket(fd);
    return rc;
  }
#endif
#ifdef SO_NOSIGPIPE
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  *out = fd;
  return 0;
}

int compat_sock_connect(evutil_socket_t fd, const struct sockaddr *sa, socklen_t salen) {
  if (connect(fd, sa, salen) == 0) return 0;
  int e = compat_sock_errno();
#ifdef _WIN32
  /* What winsock says of a non-blocking connect under way. */
  if (e == EAGAIN) e = EINPROGRESS;
#endif
  return -e;
}

int compat_sock_pending_error(evutil_socket_t fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, (void *)&err, &len) < 0) return compat_sock_errno();
#ifdef _WIN32
  return errno_of_wsa(err);
#else
  return err;
#endif
}

ssize_t compat_sock_read(evutil_socket_t fd, void *buf, size_t len) {
#ifdef _WIN32
  int n = recv(fd, buf, len > INT_MAX ? INT_MAX : (int)len, 0);
#else
  ssize_t n = read(fd, buf, len);
#endif
  return n >= 0 ? n : -compat_sock_errno();
}

void compat_sock_shutdown_write(evutil_socket_t fd) {
#ifdef _WIN32
  shutdown(fd, SD_SEND);
#else
  shutdown(fd, SHUT_WR);
#endif
}

int compat_sock_peer_user(long *uid, char *name, size_t len, evutil_socket_t fd) {
#ifdef _WIN32
  (void)uid;
  (void)name;
  (void)len;
  (void)fd;
  return -ENOTSUP;
#else
#ifdef __linux__
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) return -errno;
  uid_t id = cred.uid;
#else
  uid_t id;
  gid_t gid;
  if (getpeereid(fd, &id, &gid) != 0) return -errno;
#endif
  struct passwd pw, *found = NULL;
  char buf[1024];
  if (getpwuid_r(id, &pw, buf, sizeof buf, &found) == 0 && found)
    snprintf(name, len, "%s", pw.pw_name);
  else if (len)
    name[0] = '\0';
  *uid = (long)id;
  return 0;
#endif
}

/* ---- randomness ---- */

int compat_random(void *buf, size_t len) {
  if (len > 256) return -EINVAL;
#if defined(__linux__)
  ssize_t n = getrandom(buf, len, 0);
  return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
#elif defined(_WIN32)
  return BCRYPT_SUCCESS(BCryptGenRandom(NULL, buf, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG))
             ? 0
             : -EIO;
#else
  return getentropy(buf, len) == 0 ? 0 : -errno;
#endif
}

/* ---- waking an event loop up ---- */

struct compat_wakeup {
  /* The end watched and the end written to: one eventfd on Linux, so both the same. */
  evutil_socket_t rd, wr;
};

int compat_wakeup_new(compat_wakeup **out) {
  compat_wakeup *w = malloc(sizeof *w);
  if (!w) return -ENOMEM;
  int rc = 0;
#if defined(__linux__)
  w->rd = w->wr = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->rd < 0) rc = -errno;
#else
  evutil_socket_t fds[2];
#ifdef _WIN32
  rc = compat_net_init();
  if (rc == 0 && evutil_socketpair(AF_INET, SOCK_STREAM, 0, fds) < 0) rc = -compat_sock_errno();
#else
  if (pipe(fds) < 0) rc = -errno;
#endif
  if (rc == 0) {
    w->rd = fds[0];
    w->wr = fds[1];
    if (evutil_make_socket_nonblocking(w->rd) < 0 || evutil_make_socket_nonblocking(w->wr) < 0 ||
        evutil_make_socket_closeonexec(w->rd) < 0 || evutil_make_socket_closeonexec(w->wr) < 0) {
      rc = -compat_sock_errno();
      compat_wakeup_free(w);
      return rc;
    }
  }
#endif
  if (rc < 0) {
    free(w);
    return rc;
  }
  *out = w;
  return 0;
}

void compat_wakeup_free(compat_wakeup *w) {
  if (!w) return;
#ifdef __linux__
  close(w->rd);
#else
  evutil_closesocket(w->rd);
  evutil_closesocket(w->wr);
#endif
  free(w);
}

evutil_socket_t compat_wakeup_fd(const compat_wakeup *w) { return w->rd; }

void compat_wakeup_signal(compat_wakeup *w) {
  /* A signal handler's errno must survive it. A full counter or buffer (EAGAIN) is moot:
   * the wakeup is pending anyway. */
  int saved = errno;
#if defined(__linux__)
  static const uint64_t one = 1;
  ssize_t n = write(w->wr, &one, sizeof one);
#elif defined(_WIN32)
  int saved_wsa = WSAGetLastError();
  int n = send(w->wr, "", 1, 0);
  WSASetLastError(saved_wsa);
#else
  ssize_t n = write(w->wr, "", 1);
#endif
  (void)n;
  errno = saved;
}

int compat_wakeup_take(compat_wakeup *w) {
#ifdef __linux__
  eventfd_t n;
  return eventfd_read(w->rd, &n) == 0;
#else
  char buf[64];
  int got = 0;
  while (compat_sock_read(w->rd, buf, sizeof buf) > 0) got = 1;
  return got;
#endif
}

/* ---- SIGPIPE ---- */

#if !defined(_WIN32) && !defined(SO_NOSIGPIPE)
static void sigpipe_only(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGPIPE);
}

/* Whether a SIGPIPE is pending for this thread. */
static int sigpipe_pending(void) {
  sigset_t pending;
  return sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
}
#endif

void compat_sigpipe_block(compat_sigpipe *g) {
#if defined(_WIN32) || defined(SO_NOSIGPIPE)
  (void)g;
#else
  sigset_t pipe_set;
  sigpipe_only(&pipe_set);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &g->old);
  g->was_pending = sigpipe_pending();
#endif
}

void compat_sigpipe_restore(const compat_sigpipe *g) {
#if defined(_WIN32) || defined(SO_NOSIGPIPE)
  (void)g;
#else
  sigset_t pipe_set;
  sigpipe_only(&pipe_set);
  if (!g->was_pending && sigpipe_pending()) {
    const struct timespec zero = {0, 0};
    sigtimedwait(&pipe_set, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
#endif
}
