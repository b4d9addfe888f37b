/* ppath: where a PATH parameter's value leads (param.c), by the rules of the system's
 * paths: POSIX paths in ppath.c, Windows paths (drive letters, either separator, names
 * compared without case, junctions) in ppath_win.c. The result says where the path led
 * at the time of the call: it reads the file system for the part of the path that
 * exists, on the caller's thread, and never changes it.
 *
 * Server code: out of memory aborts. */
#ifndef PRISMQ_PPATH_H
#define PRISMQ_PPATH_H

#include <stddef.h>

/* The longest path ppath_resolve writes, with its NUL. */
#define PPATH_MAX 4096

/* Resolves `v`, taken from directory `base` unless absolute, into out (PPATH_MAX bytes):
 * absolute, lexically normal (no ".", "..", or repeated separators; ".." never above the
 * root), and with the symbolic links (on Windows also junctions) of its longest existing
 * prefix resolved; the rest stays as written. `base` is a result of ppath_resolve, or
 * NULL when v must be absolute itself.
 * On Windows an absolute path is a drive's ("C:\x", "C:/x"; the result "C:\x"); a
 * relative one has no drive and does not start with a separator, and no component may be
 * one Windows would read otherwise than it is written (ending in '.' or ' ', holding
 * ':' or a character Windows refuses in a name, or a device name such as NUL or COM1).
 * Returns 0, or:
 *   -EINVAL        v is empty, not absolute where it must be, or a form refused above;
 *   -ENAMETOOLONG  the result would not fit;
 *   -ELOOP         a component past the existing prefix is a link that points nowhere
 *                  (what it names could be made anywhere);
 *   another negative errno of resolving the existing prefix (-ENOTDIR, -EACCES...). */
int ppath_resolve(char *out, const char *base, const char *v);

/* Whether `path` is `base` or below it, both results of ppath_resolve (compared as the
 * system compares names: without case on Windows). Returns 1 or 0. */
int ppath_under(const char *path, const char *base);

#endif
