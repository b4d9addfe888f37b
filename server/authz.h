/* authz: who may do what. Given the configuration's authorization rules (config.h,
 * "authz:"), the identity of a caller and whether it is local, it answers which roles
 * the caller has and whether it may start a given module. It knows nothing of gRPC,
 * sockets or certificates: the caller layer finds out the identity (e.g. from a client
 * certificate) and whether the peer is local, and maps roles to RPCs.
 *
 * Identities are plain strings, "" for an anonymous caller. A rule's identity is an
 * fnmatch(3) glob matched with no flags, so "*" matches "/" as well, and matches the
 * anonymous "" too; module globs work the same way over module ids.
 *
 * Without an authz section (cfg->has_authz == 0) there are no rules to go by: a local
 * peer (loopback address or unix socket), or any peer when cfg->allow_insecure_remote,
 * may do everything, and any other peer nothing. With one, being local counts for
 * nothing: only the rules do (an empty list refuses everyone).
 *
 * The role bits live here, and config.c includes this header to parse role names.
 * This header includes config.h for the config type; config.h does not include this
 * one, so there is no include cycle.
 *
 * Pure functions of their arguments: any thread may call them on a loaded config. */
#ifndef PRISMQ_AUTHZ_H
#define PRISMQ_AUTHZ_H

#include "config.h"

/* Role bits. The first four are granted by rules (by name in "roles:"); the last two
 * are derived and have no name a rule could use. */
enum authz_role {
  AUTHZ_READ = 1u,       /* "read" */
  AUTHZ_READ_ALL = 2u,   /* "read_all" */
  AUTHZ_CANCEL_ANY = 4u, /* "cancel_any" */
  AUTHZ_ADMIN = 8u,      /* "admin"; implies every other bit */
  AUTHZ_START = 16u,     /* derived: some matching rule lists a module glob */
  AUTHZ_ANY = 32u,       /* derived: some rule matched at all (or no authz section and
                            the peer is allowed) */
};
#define AUTHZ_ALL 63u

/* Returns the role bits `identity` has under cfg. identity: the caller's identity,
 * "" (or NULL) when anonymous. local: non-zero for a peer on a loopback address or a
 * unix socket.
 *
 * With no authz section, AUTHZ_ALL for a local peer, or for any peer when
 * cfg->allow_insecure_remote, and 0 for others. With one: the union of the roles of
 * every rule whose identity glob matches, plus AUTHZ_START if one of those rules lists
 * a module glob, plus AUTHZ_ANY if any rule matched; AUTHZ_ALL if that includes
 * AUTHZ_ADMIN. 0 if no rule matches. AUTHZ_START says only that the caller may start
 * some module; authz_may_start decides a given one. */
unsigned authz_roles(const config *cfg, const char *identity, int local);

/* Returns non-zero if the caller may start module `module_id` (a module id; whether
 * such a module exists is not checked here). identity and local as for authz_roles.
 *
 * With no authz section the rule of authz_roles applies (allowed peers may start any
 * module). With one: some rule whose identity glob matches grants admin, or lists a
 * module glob that matches module_id. */
int authz_may_start(const config *cfg, const char *identity, int local, const char *module_id);

/* Returns the bit of the role named `name` ("read", "read_all", "cancel_any",
 * "admin"; exact, case-sensitive), or 0 if name is none of them (the derived roles
 * "start" and "any" cannot be granted, so they give 0 too). */
unsigned authz_role_parse(const char *name);

/* Returns the name of one role bit ("read", "read_all", "cancel_any", "admin",
 * "start", "any"), or "?" for anything else (0, several bits, unknown bits). The
 * string is static. */
const char *authz_role_name(unsigned bit);

#endif
