#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

/* log_msg formats the line in a stack buffer: saying why we abort takes no heap. */
static void *checked(void *p) {
  if (!p) {
    LOG_ERROR("out of memory");
    abort();
  }
  return p;
}

void *xmalloc(size_t n) { return checked(malloc(n ? n : 1)); }

void *xcalloc(size_t n, size_t size) { return checked(calloc(n ? n : 1, size ? size : 1)); }

void *xrealloc(void *p, size_t n) { return checked(realloc(p, n ? n : 1)); }

char *xstrdup(const char *s) { return checked(strdup(s)); }

/* strnlen and a copy: strndup is POSIX's, not in every C library (Windows'). */
char *xstrndup(const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *p = xmalloc(len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}
