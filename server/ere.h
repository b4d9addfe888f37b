/* ere: POSIX extended regular expressions as the configuration takes them (parameter
 * patterns, progress patterns): glibc's regcomp with the one guard it lacks. A
 * repetition operator right after another ("a++", "a*{3}") makes glibc nest automata
 * that grow without bound (a pattern of a few hundred "+" takes gigabytes), so such
 * patterns are refused before regcomp sees them. */
#ifndef PRISMQ_ERE_H
#define PRISMQ_ERE_H

#include <stddef.h>
#ifdef _WIN32
/* TRE's, as mingw-w64's C library has none (scripts/deps-windows.sh). */
#include <tre/regex.h>
#else
#include <regex.h>
#endif

/* Compiles `ere` into *re with regcomp(re, ere, cflags). Returns 0 (free *re with
 * regfree); -E2BIG for stacked repetitions, with `why` (whylen bytes) saying so
 * without naming the pattern ("repeats a repetition (as in \"a++\"), which is
 * refused"); -EINVAL when regcomp refuses it, with regerror's text in `why`. *re is
 * not compiled on failure. */
int ere_compile(regex_t *re, const char *ere, int cflags, char *why, size_t whylen);

#endif
