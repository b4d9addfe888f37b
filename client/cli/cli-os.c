/* What the command line needs of the system and that differs between systems: the
 * terminal, Ctrl-C, threads that take no signals, the standard descriptors' mode. On
 * POSIX systems the calls the CLI always made (isatty, TIOCGWINSZ, sigaction, fstat); on
 * Windows the console's (GetConsoleMode, GetConsoleScreenBufferInfo) and the C library's
 * SIGINT. The library's own differences are in common/compat.c, which the CLI does not link
 * (libprismq keeps it hidden). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <windows.h>
/* After windows.h, which it needs. */
#include <shellapi.h>
#else
#include <sys/ioctl.h>
#include <sys/stat.h>
#endif

#include "cli.h"

/* The exit statuses of a Ctrl-C and of a reader gone away are 128 + the signal's number
 * on Linux; Windows' C library has the same SIGINT, and no SIGPIPE (the status stays). */
#ifdef SIGPIPE
_Static_assert(CLI_EXIT_BROKEN_PIPE == 128 + SIGPIPE, "SIGPIPE is 13");
#endif
_Static_assert(CLI_EXIT_INTERRUPTED == 128 + SIGINT, "SIGINT is 2");

#ifdef _WIN32
static UINT saved_output_cp;

static void restore_output_cp(void) { SetConsoleOutputCP(saved_output_cp); }

/* The console behind descriptor fd, or NULL if fd is not one. */
static HANDLE console_of(int fd) {
  HANDLE h = (HANDLE)_get_osfhandle(fd);
  DWORD mode;
  return h != INVALID_HANDLE_VALUE && GetConsoleMode(h, &mode) ? h : NULL;
}

/* The arguments as UTF-8, from the command line Windows keeps in UTF-16 (the C library's
 * argv is in the ANSI code page, which loses what it cannot hold). Left as they are if
 * that fails. Kept for the program's life, as argv is. */
static void utf8_args(int *argc, char ***argv) {
  int n;
  wchar_t **w = CommandLineToArgvW(GetCommandLineW(), &n);
  if (!w) return;
  char **v = calloc((size_t)n + 1, sizeof *v);
  for (int i = 0; v && i < n; i++) {
    int len = WideCharToMultiByte(CP_UTF8, 0, w[i], -1, NULL, 0, NULL, NULL);
    v[i] = len > 0 ? malloc((size_t)len) : NULL;
    if (!v[i] || WideCharToMultiByte(CP_UTF8, 0, w[i], -1, v[i], len, NULL, NULL) != len) {
      LocalFree(w);
      return; /* out of memory: a few bytes lost on the way out of a program that goes on */
    }
  }
  LocalFree(w);
  if (!v) return;
  *argc = n;
  *argv = v;
}
#endif

void cli_os_init(int *argc, char ***argv) {
#ifdef _WIN32
  utf8_args(argc, argv);
  /* The run's output is copied byte for byte, and what we print ends lines with "\n" as
   * on Linux: no "\r\n" put in by text mode. */
  _setmode(STDIN_FILENO, _O_BINARY);
  _setmode(STDOUT_FILENO, _O_BINARY);
  _setmode(STDERR_FILENO, _O_BINARY);
  /* Text from the server is UTF-8: so is what a console shows while we run (the console
   * is the shell's too, so its code page is put back at exit). */
  if ((console_of(STDOUT_FILENO) || console_of(STDERR_FILENO)) && GetConsoleOutputCP() != CP_UTF8) {
    saved_output_cp = GetConsoleOutputCP();
    if (SetConsoleOutputCP(CP_UTF8)) atexit(restore_output_cp);
  }
#else
  (void)argc;
  (void)argv;
#endif
}

static void (*interrupt_fn)(void);

static void on_sigint(int sig) {
#ifdef _WIN32
  /* Windows' C library puts SIGINT back to its default before calling the handler. */
  signal(sig, on_sigint);
#else
  (void)sig;
#endif
  interrupt_fn();
}

void cli_os_on_interrupt(void (*fn)(void)) {
  interrupt_fn = fn;
#ifdef _WIN32
  /* The C library's SIGINT: Windows' raises it for the console's Ctrl-C, on a thread the
   * console starts for it. A process started with Ctrl-C off (a new process group) never
   * gets it, as a background job ignores it. */
  signal(SIGINT, on_sigint);
#else
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  /* A shell starts background jobs with SIGINT ignored: Ctrl-C is not for them. */
  if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, NULL);
#endif
}

int cli_os_thread_start(pthread_t *out, void *(*fn)(void *), void *arg) {
#ifdef _WIN32
  /* No signals to keep from it: a console's Ctrl-C runs on a thread of its own. */
  return pthread_create(out, NULL, fn, arg);
#else
  /* Signals stay with the main thread: SIGINT's handler, and SIGPIPE, which the blocking
   * calls block only in their own thread. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(out, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
#endif
}

int cli_os_ansi_terminal(int fd) {
  const char *term = getenv("TERM");
  if (term && strcmp(term, "dumb") == 0) return 0;
#ifdef _WIN32
  /* A console takes the cursor controls once asked to (Windows 10 and later); Windows
   * sets no TERM. */
  HANDLE h = console_of(fd);
  DWORD mode;
  return h && GetConsoleMode(h, &mode) &&
         ((mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING) ||
          SetConsoleMode(h, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING));
#else
  return isatty(fd) && term && term[0];
#endif
}

unsigned cli_os_term_width(int fd) {
#ifdef _WIN32
  CONSOLE_SCREEN_BUFFER_INFO info;
  HANDLE h = console_of(fd);
  return h && GetConsoleScreenBufferInfo(h, &info)
             ? (unsigned)(info.srWindow.Right - info.srWindow.Left + 1)
             : 0;
#else
  struct winsize ws;
  return ioctl(fd, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
#endif
}

int cli_os_same_file(int a, int b) {
#ifdef _WIN32
  /* Windows' fstat has no inode numbers: the handles say. Two consoles are one screen. */
  HANDLE ha = (HANDLE)_get_osfhandle(a), hb = (HANDLE)_get_osfhandle(b);
  BY_HANDLE_FILE_INFORMATION ia, ib;
  if (ha == INVALID_HANDLE_VALUE || hb == INVALID_HANDLE_VALUE) return 0;
  if (ha == hb || (console_of(a) && console_of(b))) return 1;
  return GetFileInformationByHandle(ha, &ia) && GetFileInformationByHandle(hb, &ib) &&
         ia.dwVolumeSerialNumber == ib.dwVolumeSerialNumber &&
         ia.nFileIndexHigh == ib.nFileIndexHigh && ia.nFileIndexLow == ib.nFileIndexLow;
#else
  struct stat sa, sb;
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
#endif
}

#ifndef __GLIBC__
/* Says on stderr why getopt_long refused an option, in glibc's words; optind and optopt
 * as getopt_long left them (a long option's argument is argv[optind - 1], the BSD
 * getopt_long of mingw-w64 and the BSDs having stepped past it). */
static void bad_option(char **argv, const char *shortopts, const struct option *longopts) {
  const char *arg = optind > 0 ? argv[optind - 1] : "";
  const struct option *o = NULL;
  int matches = 0;
  size_t n = 0;
  if (strncmp(arg, "--", 2) == 0) {
    n = strcspn(arg + 2, "=");
    for (const struct option *l = longopts; l->name; l++) {
      if (strncmp(l->name, arg + 2, n) != 0) continue;
      if (strlen(l->name) == n) {
        o = l;
        matches = 1;
        break;
      }
      o = o ? o : l;
      matches++;
    }
  }
  if (optopt == 0 && matches > 1) {
    fprintf(stderr, "%s: option '%.*s' is ambiguous; possibilities:", argv[0], (int)n + 2, arg);
    for (const struct option *l = longopts; l->name; l++)
      if (strncmp(l->name, arg + 2, n) == 0) fprintf(stderr, " '--%s'", l->name);
    fputc('\n', stderr);
  } else if (optopt == 0) {
    fprintf(stderr, "%s: unrecognized option '%s'\n", argv[0], arg);
  } else if (o && o->val == optopt) {
    fprintf(stderr,
            o->has_arg == no_argument ? "%s: option '--%s' doesn't allow an argument\n"
                                      : "%s: option '--%s' requires an argument\n",
            argv[0], o->name);
  } else {
    const char *at =
        optopt != ':' && optopt != '+' && optopt != '-' ? strchr(shortopts, optopt) : NULL;
    fprintf(stderr,
            at && at[1] == ':' ? "%s: option requires an argument -- '%c'\n"
                               : "%s: invalid option -- '%c'\n",
            argv[0], optopt);
  }
}
#endif

int cli_os_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts) {
#ifdef __GLIBC__
  return getopt_long(argc, argv, shortopts, longopts, NULL);
#else
  /* Other getopts say it their own way ("unknown option -- bogus"), and mingw-w64's names
   * the program by its path, not by argv[0] ("prismq run"). */
  opterr = 0;
  int opt = getopt_long(argc, argv, shortopts, longopts, NULL);
  if (opt == '?') bad_option(argv, shortopts, longopts);
  return opt;
#endif
}
