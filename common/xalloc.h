/* xalloc: allocation that cannot fail, for code whose answer to out-of-memory is to
 * abort: the server (DEVELOPERS.md), and common/h2conn, which the client library links
 * too (client.h names that exception). The client library's own code must return
 * -ENOMEM instead and does not use these. */
#ifndef PRISMQ_XALLOC_H
#define PRISMQ_XALLOC_H

#include <stddef.h>

/* As malloc(n), but a size of 0 still gets an allocation. Never returns NULL: logs
 * an ERROR line and aborts if memory runs out. The caller frees with free(). */
void *xmalloc(size_t n);

/* As calloc(n, size) (zeroed), but zero items still get an allocation. Never returns
 * NULL: logs and aborts as xmalloc. The caller frees with free(). */
void *xcalloc(size_t n, size_t size);

/* As realloc(p, n), but a size of 0 still gets an allocation (p is never freed
 * without a replacement). Never returns NULL: logs and aborts as xmalloc; p is then
 * still the caller's (never freed here). The caller frees the result with free(). */
void *xrealloc(void *p, size_t n);

/* A copy of the NUL-terminated string s. Never returns NULL: logs and aborts as
 * xmalloc. The caller frees with free(). */
char *xstrdup(const char *s);

/* A copy of at most n bytes of s, NUL-terminated (as strndup). Never returns NULL:
 * logs and aborts as xmalloc. The caller frees with free(). */
char *xstrndup(const char *s, size_t n);

#endif
