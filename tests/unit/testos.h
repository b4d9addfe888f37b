/* testos: what the unit tests need of the system and that differs between systems, in
 * one place: environment variables, temporary directories, an in-memory stream, Ctrl-C
 * sent to ourselves, and the server's signal numbers. POSIX calls on Linux (what the
 * tests always used); their Windows counterparts where the tests of common/ and client/
 * run under Wine (docs/windows.md). Include after cmocka.h. */
#ifndef PRISMQ_TESTOS_H
#define PRISMQ_TESTOS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _WIN32
#include <direct.h>
#include <io.h>
#include <windows.h>
#else
#include <ftw.h>
#endif

/* A run's term_signal is the server's number, Linux's: what the CLI tests put there. */
#ifndef SIGKILL
#define SIGKILL 9
#endif

/* Sets the environment variable `name` to `value`, or removes it for NULL. */
static inline void test_setenv(const char *name, const char *value) {
#ifdef _WIN32
  /* "" removes it there too. */
  assert_int_equal(_putenv_s(name, value ? value : ""), 0);
#else
  assert_int_equal(value ? setenv(name, value, 1) : unsetenv(name), 0);
#endif
}

/* Makes a new directory NAME-XXXXXX in the system's temporary directory and writes its
 * path to dir (len bytes). Returns dir, or NULL. */
static inline char *test_mkdtemp(char *dir, size_t len, const char *name) {
#ifdef _WIN32
  char tmp[MAX_PATH];
  DWORD n = GetTempPathA(sizeof tmp, tmp);
  if (n == 0 || n >= sizeof tmp) return NULL;
  if ((size_t)snprintf(dir, len, "%s%s-XXXXXX", tmp, name) >= len) return NULL;
  return _mktemp_s(dir, strlen(dir) + 1) == 0 && _mkdir(dir) == 0 ? dir : NULL;
#else
  if ((size_t)snprintf(dir, len, "/tmp/%s-XXXXXX", name) >= len) return NULL;
  return mkdtemp(dir);
#endif
}

#ifndef _WIN32
static inline int test_remove_entry(const char *path, const struct stat *st, int flag,
                                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}
#endif

/* Removes the directory `dir` and everything in it. Returns 0 or -1. */
static inline int test_remove_tree(const char *dir) {
#ifdef _WIN32
  char pattern[MAX_PATH], path[MAX_PATH];
  struct _finddata_t fd;
  snprintf(pattern, sizeof pattern, "%s/*", dir);
  intptr_t h = _findfirst(pattern, &fd);
  int rc = 0;
  for (int more = h != -1; more; more = _findnext(h, &fd) == 0) {
    if (strcmp(fd.name, ".") == 0 || strcmp(fd.name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, fd.name);
    if ((fd.attrib & _A_SUBDIR) ? test_remove_tree(path) : remove(path)) rc = -1;
  }
  if (h != -1) _findclose(h);
  return _rmdir(dir) == 0 ? rc : -1;
#else
  return nftw(dir, test_remove_entry, 8, FTW_DEPTH | FTW_PHYS);
#endif
}

/* An in-memory stream for functions that print on a FILE (a temporary file: Windows has
 * no open_memstream): test_memout_end closes it and returns what was written,
 * NUL-terminated (free it), and its length in *len (may be NULL). */
static inline FILE *test_memout_begin(void) {
  FILE *f = tmpfile();
  assert_non_null(f);
  return f;
}

static inline char *test_memout_end(FILE *f, size_t *len) {
  assert_int_equal(fflush(f), 0);
  long n = ftell(f);
  assert_true(n >= 0);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  rewind(f);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  assert_int_equal(fclose(f), 0);
  if (len) *len = (size_t)n;
  return buf;
}

/* Ctrl-C to this process: SIGINT. Windows' C library has no kill(): raise() runs the
 * handler at once, in the calling thread, as a console's Ctrl-C runs it on a thread of its
 * own. */
static inline void test_interrupt_self(void) {
#ifdef _WIN32
  raise(SIGINT);
#else
  kill(getpid(), SIGINT);
#endif
}

#endif
