#include "authz.h"

#include <stddef.h>
#include <string.h>

#include "compat.h"

/* Role names in bit order: names[i] is the name of bit 1u << i. Only the first
 * NGRANTABLE can be written in a rule. */
static const char *const names[] = {"read", "read_all", "cancel_any", "admin", "start", "any"};
#define NGRANTABLE 4
_Static_assert(sizeof names / sizeof names[0] == 6 && AUTHZ_ALL == (1u << 6) - 1 &&
                   AUTHZ_ADMIN == 1u << (NGRANTABLE - 1),
               "names[] must follow enum authz_role");

/* Without rules to go by, being local is what counts (or the operator's explicit
 * allow_insecure_remote). */
static int allowed_without_rules(const config *cfg, int local) {
  return local || cfg->allow_insecure_remote;
}

/* fnmatch's rules (compat_fnmatch): an error, which glibc never reports for flags 0,
 * counts as no match, so a bad glob fails closed. */
static int glob_matches(const char *glob, const char *s) { return compat_fnmatch(glob, s); }

/* The next rule, from cfg->authz[*i] on, whose identity glob matches `identity` (NULL
 * is matched as ""), with *i moved past it; NULL when there is none. */
static const config_authz_rule *next_match(const config *cfg, const char *identity, size_t *i) {
  while (*i < cfg->nauthz) {
    const config_authz_rule *r = &cfg->authz[(*i)++];

    if (glob_matches(r->identity, identity ? identity : "")) return r;
  }
  return NULL;
}

unsigned authz_roles(const config *cfg, const char *identity, int local) {
  unsigned roles = 0;
  const config_authz_rule *r;
  size_t i = 0;

  if (!cfg->has_authz) return allowed_without_rules(cfg, local) ? AUTHZ_ALL : 0;
  while ((r = next_match(cfg, identity, &i))) {
    roles |= r->roles | AUTHZ_ANY;
    if (r->nmodules) roles |= AUTHZ_START;
  }
  return roles & AUTHZ_ADMIN ? AUTHZ_ALL : roles;
}

int authz_may_start(const config *cfg, const char *identity, int local, const char *module_id) {
  const config_authz_rule *r;
  size_t i = 0;

  if (!cfg->has_authz) return allowed_without_rules(cfg, local);
  while ((r = next_match(cfg, identity, &i))) {
    if (r->roles & AUTHZ_ADMIN) return 1;
    for (size_t j = 0; j < r->nmodules; j++)
      if (glob_matches(r->modules[j], module_id)) return 1;
  }
  return 0;
}

unsigned authz_role_parse(const char *name) {
  for (unsigned i = 0; i < NGRANTABLE; i++)
    if (!strcmp(name, names[i])) return 1u << i;
  return 0;
}

const char *authz_role_name(unsigned bit) {
  for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
    if (bit == 1u << i) return names[i];
  return "?";
}
