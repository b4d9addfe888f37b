/* compat: what differs between the systems common/ and the client library run on, in one
 * place, so that the rest reads the same everywhere:
 *
 *   Linux    the reference: every helper does here what the code did before it existed,
 *            with the same system calls (eventfd, SO_PEERCRED, getrandom, read(2)...);
 *   POSIX    other POSIX systems (macOS, the BSDs; not built by the project): a fallback
 *            where Linux has its own call (getpeereid, a pipe, getentropy, SO_NOSIGPIPE);
 *   Windows  mingw-w64 (docs/windows.md): winsock sockets, whose errors are mapped to the
 *            errno values the rest of the code tests and prints, AF_UNIX from afunix.h
 *            (Windows 10), no SIGPIPE, no user names for socket peers.
 *
 * It also includes the system's socket headers: a file that uses sockets includes this
 * instead of <sys/socket.h> and friends. The server's own Linux-only code (cgroups,
 * pidfds, inotify) does not come here: docs/portability.md says what is Linux-only. */
#ifndef PRISMQ_COMPAT_H
#define PRISMQ_COMPAT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
/* After winsock2.h: the AF_UNIX socket address of Windows 10. */
#include <afunix.h>
#else
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#endif

#include <event2/util.h>

/* Whether unix sockets in the abstract namespace (no file) exist: Linux's alone. */
#ifdef __linux__
#define COMPAT_HAVE_ABSTRACT_UNIX 1
#else
#define COMPAT_HAVE_ABSTRACT_UNIX 0
#endif

/* ---- the C library ---- */

/* The format attribute of a printf-like function. GCC's "printf" means the C library's
 * formats, on mingw-w64 Microsoft's (no %zu); our printf there is mingw-w64's own
 * (__USE_MINGW_ANSI_STDIO, which _GNU_SOURCE turns on), with C99's: gnu_printf. */
#ifdef __MINGW_PRINTF_FORMAT
#define COMPAT_PRINTF(fmt, first) __attribute__((format(__MINGW_PRINTF_FORMAT, fmt, first)))
#else
#define COMPAT_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#endif

/* stdio under one lock taken by the caller (flockfile, then the _unlocked calls: pbjson).
 * fputs_unlocked and fwrite_unlocked are glibc's; elsewhere the locked calls, whose lock
 * nests in the caller's. Windows names the lock _lock_file and has no putc_unlocked. */
#ifdef _WIN32
#define flockfile     _lock_file
#define funlockfile   _unlock_file
#define putc_unlocked putc
#endif
#ifndef __GLIBC__
#define fputs_unlocked  fputs
#define fwrite_unlocked fwrite
#endif

/* What mingw-w64's C library lacks, under the POSIX names the code uses:
 *   O_CLOEXEC  _O_NOINHERIT: a descriptor no child inherits; with _O_BINARY, as every open
 *              of ours says O_CLOEXEC and none wants text mode's CR LF translation;
 *   ESHUTDOWN  a value of its own (compat_strerror has its text);
 *   SIGKILL    the number a run killed outright reports (term_signal), as on Linux. */
#ifdef _WIN32
#include <fcntl.h>
#ifndef O_CLOEXEC
#define O_CLOEXEC (_O_NOINHERIT | _O_BINARY)
#endif
#ifndef ESHUTDOWN
#define ESHUTDOWN 1108
#endif
#ifndef SIGKILL
#define SIGKILL 9
#endif
#endif

/* Files: pread(2) and writev(2), which Windows' C library lacks (there: ReadFile at an
 * offset, and the pieces gathered into one write so that a record is one append); fsync is
 * _commit there. Same returns as the POSIX calls. */
#ifdef _WIN32
struct iovec {
  void *iov_base;
  size_t iov_len;
};
ssize_t compat_pread(int fd, void *buf, size_t len, uint64_t off);
ssize_t compat_writev(int fd, const struct iovec *v, int n);
#define fsync(fd) _commit(fd)
#else
#include <sys/uio.h>
#include <unistd.h>
static inline ssize_t compat_pread(int fd, void *buf, size_t len, uint64_t off) {
  return pread(fd, buf, len, (off_t)off);
}
static inline ssize_t compat_writev(int fd, const struct iovec *v, int n) {
  return writev(fd, v, n);
}
#endif

/* glibc's extensions the code uses, for the C libraries without them (Windows'):
 *   compat_explicit_bzero  explicit_bzero (SecureZeroMemory);
 *   compat_memrchr/memmem  memrchr, memmem;
 *   compat_strsignal       strsignal, for the signals a run can report on any system. */
void compat_explicit_bzero(void *p, size_t n);
void *compat_memrchr(const void *s, int c, size_t n);
void *compat_memmem(const void *hay, size_t hlen, const void *needle, size_t nlen);
const char *compat_strsignal(int sig);

/* twalk_r(root, fn, arg) and tdestroy(root, free_node) of <search.h>, which only glibc has:
 * elsewhere twalk with the closure in a thread-local variable, and the nodes deleted one by
 * one (tdelete needs the tree's cmp). */
#include <search.h>
void compat_twalk_r(const void *root, void (*fn)(const void *node, VISIT v, void *arg), void *arg);
void compat_tdestroy(void *root, int (*cmp)(const void *, const void *), void (*free_node)(void *));

/* A FILE that writes to memory (open_memstream). Windows has no such FILE: there it is a
 * temporary file that is deleted once closed (and short-lived, so kept in the cache),
 * read back by compat_memstream_close. Open with compat_memstream_open(&m) (NULL on
 * failure, errno set); compat_memstream_close(&m) closes it and returns 0 with m.buf
 * (malloc'd, NUL-terminated; the caller frees it) and m.len, or -1 with errno. */
typedef struct compat_memstream {
  FILE *f;
  char *buf;
  size_t len;
} compat_memstream;
FILE *compat_memstream_open(compat_memstream *m);
int compat_memstream_close(compat_memstream *m);

/* The environment variable `name` as UTF-8: getenv's pointer, or on Windows (whose C
 * library gives the ANSI code page) the variable read as UTF-16 and converted into buf
 * (len bytes). NULL when unset (or, on Windows, too long for buf or 4096 characters). */
const char *compat_getenv(const char *name, char *buf, size_t len);

#ifdef _WIN32
/* Whether UTF-8 text s means the same to a program that reads it in the ANSI code page (an
 * ANSI main(), GetCommandLineA): Windows' "best fit" conversion turns some characters into
 * ASCII ones (U+FF0E FULLWIDTH FULL STOP into '.', U+FF02 into '"', U+00A5 into '\\' in
 * code page 932...). Returns 1 if the conversion leaves the count of each byte of
 * `special` as it is in s, 0 if it adds some (or s is not UTF-8). */
int compat_ansi_safe(const char *s, const char *special);
#endif

/* The struct timeval to give libevent for a timer that must not fire before ms
 * milliseconds have passed: ms plus one tick of the coarse clock that an event loop
 * without EVENT_BASE_FLAG_PRECISE_TIMER keeps time by (up to 4 ms on Linux, about 16 ms
 * on Windows, nothing where libevent's clock is precise), since such a loop's "now" can
 * be up to a tick behind. 0 stays 0: the timer fires in the loop's next pass. prismqd's
 * loop runs on that clock, which spares it a timerfd_settime per pass of the loop
 * (docs/performance.md). */
struct timeval compat_timeout_ms(uint64_t ms);

/* mkdir(path, mode); Windows' takes no mode (a directory's access is its ACL's). Returns
 * 0 or -1 with errno, as mkdir. */
int compat_mkdir(const char *path, unsigned mode);

/* Whether s matches the shell pattern glob ('*', '?', "[...]" with '!' or '^' negation and
 * ranges, '\\' quoting the next character): fnmatch(glob, s, 0) == 0, and on Windows, which
 * has no fnmatch, the same rules here. Returns 1 or 0 (a malformed bracket matches itself,
 * as glibc's does). */
int compat_fnmatch(const char *glob, const char *s);

/* ---- sockets ---- */

/* Makes sockets usable in this process: on Windows, winsock's WSAStartup, once for the
 * process (and never undone: the process's end does); elsewhere nothing. Safe from any
 * thread. Returns 0, or a negative errno (winsock unusable). Whatever opens a socket or
 * resolves a name here calls it first; a program that makes its own sockets calls it too. */
int compat_net_init(void);

/* The errno value of the last socket call of this thread that failed (errno; on Windows
 * WSAGetLastError mapped: WSAEWOULDBLOCK is EAGAIN, WSAECONNREFUSED ECONNREFUSED...,
 * anything unknown EIO). What libevent's own socket calls (evbuffer_write) leave too. */
int compat_sock_errno(void);

/* Opens a stream socket of `family` (AF_INET, AF_INET6, AF_UNIX), non-blocking and closed
 * on exec; where the system has SO_NOSIGPIPE, writes to it never raise SIGPIPE. Returns 0
 * and sets *out (close it with evutil_closesocket), or a negative errno. */
int compat_sock_stream(evutil_socket_t *out, int family);

/* Starts connecting non-blocking socket fd to sa. Returns 0 (connected at once),
 * -EINPROGRESS (the socket turns writable once it is done: compat_sock_pending_error then
 * says how it went), or another negative errno. */
int compat_sock_connect(evutil_socket_t fd, const struct sockaddr *sa, socklen_t salen);

/* The error a non-blocking connect of fd ended with (SO_ERROR) as an errno value, 0 if
 * none. */
int compat_sock_pending_error(evutil_socket_t fd);

/* Reads up to len bytes from socket fd (read(2); recv on Windows). Returns the count, 0 at
 * the end of the stream, or a negative errno (-EAGAIN: nothing there now). */
ssize_t compat_sock_read(evutil_socket_t fd, void *buf, size_t len);

/* Ends the sending direction of socket fd (shutdown SHUT_WR / SD_SEND). */
void compat_sock_shutdown_write(evutil_socket_t fd);

/* The peer of unix socket fd: its uid into *uid and its user name into name (len bytes,
 * truncated; "" for a uid without one). SO_PEERCRED on Linux, getpeereid elsewhere.
 * Returns 0, -ENOTSUP where a peer's user cannot be known (Windows), or another negative
 * errno (*uid and name untouched). */
int compat_sock_peer_user(long *uid, char *name, size_t len, evutil_socket_t fd);

/* ---- errors ---- */

/* strerror(e), where the C library has no text for e (Windows' has none for the POSIX
 * networking values: ECONNREFUSED...) glibc's text, so that messages read the same on
 * every system. A static string. */
const char *compat_strerror(int e);

/* ---- randomness ---- */

/* Fills buf with len bytes (at most 256) from the system's random source: getrandom on
 * Linux, getentropy elsewhere, BCryptGenRandom on Windows. Returns 0 or a negative
 * errno. */
int compat_random(void *buf, size_t len);

/* ---- waking an event loop up ---- */

/* A descriptor an event loop watches (EV_READ) that becomes readable once
 * compat_wakeup_signal is called, from any thread or a signal handler (a Ctrl-C handler
 * on Windows): an eventfd on Linux, a pipe on other POSIX systems, a loopback socket
 * pair on Windows (where an event loop watches sockets only). */
typedef struct compat_wakeup compat_wakeup;

/* Returns 0 and sets *out (free with compat_wakeup_free), or a negative errno. */
int compat_wakeup_new(compat_wakeup **out);

/* Frees w and closes its descriptors. Accepts NULL. */
void compat_wakeup_free(compat_wakeup *w);

/* The descriptor to watch for EV_READ. */
evutil_socket_t compat_wakeup_fd(const compat_wakeup *w);

/* Makes w's descriptor readable until the next compat_wakeup_take. Async-signal-safe;
 * keeps errno. */
void compat_wakeup_signal(compat_wakeup *w);

/* Returns 1 if w was signalled since the last take (and makes it unreadable again), else
 * 0. Never blocks. */
int compat_wakeup_take(compat_wakeup *w);

/* ---- SIGPIPE ---- */

/* While a library call writes to sockets in the caller's thread: SIGPIPE blocked there,
 * so that a write to a connection the peer has closed fails with EPIPE instead of killing
 * the program, and a SIGPIPE that became pending meanwhile (ours) discarded unless one was
 * pending before. The libpq approach: libevent's writes cannot pass MSG_NOSIGNAL, and
 * changing the process's signal disposition is not a library's call. Nothing where there
 * is no SIGPIPE (Windows) or where sockets are made without it (SO_NOSIGPIPE). */
typedef struct compat_sigpipe {
#if defined(_WIN32) || defined(SO_NOSIGPIPE)
  char unused;
#else
  sigset_t old;
  int was_pending;
#endif
} compat_sigpipe;

/* Blocks SIGPIPE in this thread, remembering the mask in *g. */
void compat_sigpipe_block(compat_sigpipe *g);

/* Discards a SIGPIPE that came since compat_sigpipe_block(g) and restores the mask. */
void compat_sigpipe_restore(const compat_sigpipe *g);

#endif
