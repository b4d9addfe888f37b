/* preset: named sets of parameter values of a module, which a run can start from
 * (StartRunRequest.preset). Two kinds share one name space per module:
 *   - the configuration's (config.h, "presets:"), read-only: from_config is set;
 *   - the ones clients save, kept in the run table's database (runtab_preset_*), each
 *     with the identity that saved it as owner: only that identity, or a caller
 *     allowed to change anyone's (an admin), may replace or delete it.
 * A preset never holds a secret (config_module_check_preset), since it is stored and
 * shown. Its values are checked when saved and again by every run that uses it, as the
 * module may have changed meanwhile.
 *
 * Presets are the contract's Preset messages (Prismq__Runner__V1__Preset): like the
 * scheduler, this is core code that knows the .proto's messages, not gRPC. Errors are
 * negative errno values with a message. Single-threaded (the run table's thread). */
#ifndef PRISMQ_PRESET_H
#define PRISMQ_PRESET_H

#include <stddef.h>

#include "config.h"
#include "param.h"
#include "prismq/runner/v1/runner.pb-c.h"
#include "runtab.h"

typedef Prismq__Runner__V1__Preset preset_pb;

/* Saved presets one module may have: a bound on what clients can make the server keep. */
#define PRESET_MAX_PER_MODULE 256
/* Longest description of a saved preset, in bytes. */
#define PRESET_DESCRIPTION_MAX 1024

/* Looks up module m's preset `name`: the configuration's, else a saved one.
 * Returns 0 and sets *out to a new copy (free with
 * prismq__runner__v1__preset__free_unpacked(*out, NULL)); -ENOENT if m has none of
 * that name; -EIO if the run table fails. */
int preset_get(preset_pb **out, runtab *rt, const config_module *m, const char *name);

/* Saves req's preset (name, parameters, description) of module m for `owner` (the
 * caller's identity, "" anonymous), replacing a saved preset of the same name that
 * `owner` saved, or anyone's if `any_owner`. On success returns 0 and sets *out to the
 * preset as saved (free as above). Errors, with err (errlen bytes) saying why:
 *   -EINVAL  a bad name or description, or bad parameters (each added to `bad`, if not
 *            NULL, and their messages joined in err);
 *   -EROFS   the configuration has a preset of that name;
 *   -EPERM   another identity saved the preset of that name (and !any_owner);
 *   -ENOSPC  m has PRESET_MAX_PER_MODULE saved presets already;
 *   -EIO     the run table failed. */
int preset_save(preset_pb **out, runtab *rt, const config_module *m,
                const Prismq__Runner__V1__SavePresetRequest *req, const char *owner, int any_owner,
                param_report *bad, char *err, size_t errlen);

/* The presets of module_id (NULL or "" = of every module in cfg): for each module in
 * the configuration's order, its configuration presets in declared order, then its
 * saved ones by name. Saved presets of a module the configuration no longer has are
 * listed when that module is asked for by id (so they can be seen and deleted).
 * Returns 0 and sets *out to an array of *n_out presets (NULL when 0; free with
 * runtab_preset_list_free), or -EIO. */
int preset_list(preset_pb ***out, size_t *n_out, runtab *rt, const config *cfg,
                const char *module_id);

/* Deletes the saved preset `name` of module_id (the module need not exist any more),
 * if `owner` saved it or `any_owner`. Returns 0; -ENOENT if there is no such preset;
 * -EROFS for a preset of the configuration; -EPERM for another identity's; -EIO. err
 * says why. */
int preset_delete(runtab *rt, const config *cfg, const char *module_id, const char *name,
                  const char *owner, int any_owner, char *err, size_t errlen);

#endif
