#include "ere.h"

#include <errno.h>
#include <stdio.h>

/* Whether a repetition operator directly follows another outside a bracket expression
 * (an escaped character is a literal; an interval "{...}" counts as one operator). */
static int stacked_repetition(const char *s) {
  int in_bracket = 0, prev_rep = 0;
  for (; *s; s++) {
    if (in_bracket) {
      if (*s == ']') in_bracket = 0;
      continue;
    }
    int rep = *s == '*' || *s == '+' || *s == '?' || *s == '{';
    if (rep && prev_rep) return 1;
    if (*s == '\\' && s[1])
      s++;
    else if (*s == '[') {
      /* A "]" first in the list (after a "^") is a member, not the end. */
      in_bracket = 1;
      if (s[1] == '^') s++;
      if (s[1] == ']') s++;
    }
    if (*s == '{')
      while (s[1] && *s != '}') s++;
    prev_rep = rep;
  }
  return 0;
}

int ere_compile(regex_t *re, const char *ere, int cflags, char *why, size_t whylen) {
  if (stacked_repetition(ere)) {
    snprintf(why, whylen, "repeats a repetition (as in \"a++\"), which is refused");
    return -E2BIG;
  }
  int rc = regcomp(re, ere, cflags);
  if (rc == 0) return 0;
  regerror(rc, re, why, whylen);
  return -EINVAL;
}
