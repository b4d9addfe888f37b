#include "quota.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"

struct quota_entry {
  uint32_t n;
  const char *owner; /* for an entry in the tree, the bytes right after it */
};

struct quota {
  void *root; /* tsearch tree of struct quota_entry, by owner */
};

static int entry_cmp(const void *a, const void *b) {
  return strcmp(((const struct quota_entry *)a)->owner, ((const struct quota_entry *)b)->owner);
}

static struct quota_entry *find(const quota *q, const char *owner) {
  struct quota_entry key = {0, owner};
  struct quota_entry **found = tfind(&key, &q->root, entry_cmp);
  return found ? *found : NULL;
}

quota *quota_new(void) {
  quota *q = calloc(1, sizeof *q);
  if (!q) abort();
  return q;
}

void quota_free(quota *q) {
  if (!q) return;
  compat_tdestroy(q->root, entry_cmp, free);
  free(q);
}

uint32_t quota_get(const quota *q, const char *owner) {
  const struct quota_entry *e = find(q, owner);
  return e ? e->n : 0;
}

void quota_inc(quota *q, const char *owner) {
  struct quota_entry *e = find(q, owner);
  if (e) {
    e->n++;
    return;
  }
  size_t len = strlen(owner);
  e = malloc(sizeof *e + len + 1);
  if (!e) abort();
  e->n = 1;
  e->owner = memcpy(e + 1, owner, len + 1);
  if (!tsearch(e, &q->root, entry_cmp)) abort();
}

void quota_dec(quota *q, const char *owner) {
  struct quota_entry *e = find(q, owner);
  if (!e || e->n == 0) abort(); /* a count taken that was never given */
  if (--e->n > 0) return;
  tdelete(e, &q->root, entry_cmp);
  free(e);
}
