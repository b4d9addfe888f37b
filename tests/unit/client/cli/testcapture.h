/* testcapture: what the CLI code prints on stdout and stderr, for its unit tests.
 * Include after cmocka.h.
 *
 * capture_start() points descriptors 1 and 2 at temporary files (the CLI writes both
 * through stdio and with write(2)); capture_stop() flushes stdio, puts the descriptors
 * back and reads what was written into cap.out and cap.err. memout_* catch what a
 * function prints on a FILE it is given. */
#ifndef PRISMQ_TESTCAPTURE_H
#define PRISMQ_TESTCAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../testos.h"

#define CAPTURE_MAX 65536

struct capture {
  char out[CAPTURE_MAX];
  char err[CAPTURE_MAX];
  FILE *fout, *ferr;
  int saved_out, saved_err;
};

static struct capture cap;

static inline void capture_start(void) {
  fflush(stdout);
  fflush(stderr);
  cap.fout = tmpfile();
  cap.ferr = tmpfile();
  assert_true(cap.fout && cap.ferr);
  cap.saved_out = dup(STDOUT_FILENO);
  cap.saved_err = dup(STDERR_FILENO);
  assert_true(cap.saved_out >= 0 && cap.saved_err >= 0);
  assert_true(dup2(fileno(cap.fout), STDOUT_FILENO) >= 0);
  assert_true(dup2(fileno(cap.ferr), STDERR_FILENO) >= 0);
}

static inline void capture_read(FILE *f, char *buf) {
  rewind(f);
  size_t n = fread(buf, 1, CAPTURE_MAX - 1, f);
  buf[n] = '\0';
  fclose(f);
}

static inline void capture_stop(void) {
  fflush(stdout);
  fflush(stderr);
  dup2(cap.saved_out, STDOUT_FILENO);
  dup2(cap.saved_err, STDERR_FILENO);
  close(cap.saved_out);
  close(cap.saved_err);
  capture_read(cap.fout, cap.out);
  capture_read(cap.ferr, cap.err);
}

/* A memory stream for functions that print on a FILE (testos.h's): memout_end closes it
 * and returns what was written (NUL-terminated; free it). */
struct memout {
  FILE *f;
};

static inline FILE *memout_begin(struct memout *m) { return m->f = test_memout_begin(); }

static inline char *memout_end(struct memout *m) { return test_memout_end(m->f, NULL); }

#endif
