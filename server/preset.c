#include "preset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "log.h"
#include "xalloc.h"

typedef Prismq__Runner__V1__Preset__ParametersEntry param_entry;

/* A heap copy of p, freed as an unpacked message: packing and unpacking copies every
 * field, whoever owned them (p may point into the configuration). */
static preset_pb *copy_of(const preset_pb *p) {
  size_t n = prismq__runner__v1__preset__get_packed_size(p);
  uint8_t *buf = xmalloc(n + 1);
  prismq__runner__v1__preset__pack(p, buf);
  preset_pb *c = prismq__runner__v1__preset__unpack(NULL, n, buf);
  free(buf);
  if (!c) abort(); /* only out of memory can fail on our own encoding */
  return c;
}

/* The Preset message of configuration preset pr of module m. */
static preset_pb *from_config(const config_module *m, const config_preset *pr) {
  preset_pb p = PRISMQ__RUNNER__V1__PRESET__INIT;
  param_entry *e = xcalloc(pr->nparams + 1, sizeof *e);
  param_entry **ep = xcalloc(pr->nparams + 1, sizeof *ep);
  for (size_t i = 0; i < pr->nparams; i++) {
    e[i] = (param_entry)PRISMQ__RUNNER__V1__PRESET__PARAMETERS_ENTRY__INIT;
    e[i].key = pr->names[i];
    e[i].value = pr->values[i];
    ep[i] = &e[i];
  }
  p.module_id = m->id;
  p.name = pr->name;
  p.description = pr->description;
  p.parameters = ep;
  p.n_parameters = pr->nparams;
  p.from_config = 1;
  preset_pb *c = copy_of(&p);
  free(ep);
  free(e);
  return c;
}

int preset_get(preset_pb **out, runtab *rt, const config_module *m, const char *name) {
  const config_preset *pr = config_find_preset(m, name);
  if (pr) {
    *out = from_config(m, pr);
    return 0;
  }
  return runtab_preset_get(rt, m->id, name, out);
}

/* Whether a saved preset of that module and name may be replaced or deleted by `owner`:
 * 0 if there is none or it may, else -EPERM or -EIO with err. */
static int check_owner(runtab *rt, const char *module_id, const char *name, const char *owner,
                       int any_owner, char *err, size_t errlen) {
  preset_pb *old = NULL;
  int rc = runtab_preset_get(rt, module_id, name, &old);
  if (rc == -ENOENT) return 0;
  if (rc < 0) {
    snprintf(err, errlen, "cannot read the presets: %s", strerror(-rc));
    return rc;
  }
  if (!any_owner && strcmp(old->owner, owner) != 0) {
    snprintf(err, errlen, "preset \"%s\" of module \"%s\" belongs to %.256s", name, module_id,
             old->owner[0] ? old->owner : "anonymous callers");
    rc = -EPERM;
  }
  prismq__runner__v1__preset__free_unpacked(old, NULL);
  return rc;
}

/* Checks req's name, description and parameters for module m. Returns 0, or -EINVAL
 * with err (and `bad` for parameters). */
static int check_request(const config_module *m, const Prismq__Runner__V1__SavePresetRequest *req,
                         param_report *bad, char *err, size_t errlen) {
  if (!config_valid_preset_name(req->name)) {
    snprintf(err, errlen, "preset name \"%.64s\" must match ^[A-Za-z0-9_.-]{1,64}$", req->name);
    return -EINVAL;
  }
  size_t dlen = strlen(req->description);
  if (dlen > PRESET_DESCRIPTION_MAX) {
    snprintf(err, errlen, "description is too long (%zu bytes, at most %d)", dlen,
             PRESET_DESCRIPTION_MAX);
    return -EINVAL;
  }
  size_t n = req->n_parameters;
  const char **names = xcalloc(n + 1, sizeof *names), **values = xcalloc(n + 1, sizeof *values);
  for (size_t i = 0; i < n; i++) {
    names[i] = req->parameters[i]->key;
    values[i] = req->parameters[i]->value;
  }
  param_report own = PARAM_REPORT_INIT;
  param_report *report = bad ? bad : &own;
  int rc = config_module_check_preset(m, names, values, n, report);
  if (rc < 0) param_report_join(report, err, errlen);
  param_report_clear(&own);
  free(names);
  free(values);
  return rc;
}

int preset_save(preset_pb **out, runtab *rt, const config_module *m,
                const Prismq__Runner__V1__SavePresetRequest *req, const char *owner, int any_owner,
                param_report *bad, char *err, size_t errlen) {
  int rc = check_request(m, req, bad, err, errlen);
  if (rc < 0) return rc;
  if (config_find_preset(m, req->name)) {
    snprintf(err, errlen, "preset \"%s\" of module \"%s\" is part of the server's configuration",
             req->name, m->id);
    return -EROFS;
  }
  if ((rc = check_owner(rt, m->id, req->name, owner, any_owner, err, errlen)) < 0) return rc;
  size_t np = req->n_parameters;
  param_entry *e = xcalloc(np + 1, sizeof *e);
  param_entry **ep = xcalloc(np + 1, sizeof *ep);
  for (size_t i = 0; i < np; i++) {
    e[i] = (param_entry)PRISMQ__RUNNER__V1__PRESET__PARAMETERS_ENTRY__INIT;
    e[i].key = req->parameters[i]->key;
    e[i].value = req->parameters[i]->value;
    ep[i] = &e[i];
  }
  preset_pb p = PRISMQ__RUNNER__V1__PRESET__INIT;
  p.module_id = m->id;
  p.name = req->name;
  p.description = req->description;
  p.parameters = ep;
  p.n_parameters = np;
  p.owner = (char *)owner;
  p.updated_at_ms = id_now_ms();
  rc = runtab_preset_put(rt, &p, PRESET_MAX_PER_MODULE);
  if (rc == 0) *out = copy_of(&p);
  free(ep);
  free(e);
  if (rc == -ENOSPC) {
    snprintf(err, errlen, "module \"%s\" has %d saved presets, the most it may have", m->id,
             PRESET_MAX_PER_MODULE);
    return rc;
  }
  if (rc < 0) {
    snprintf(err, errlen, "cannot save the preset: %s", strerror(-rc));
    return rc;
  }
  LOG_INFO("preset saved module_id=%s name=%s owner=%s", m->id, req->name,
           owner[0] ? owner : "anonymous");
  return 0;
}

/* Appends module m's presets to *arr (*n so far): the configuration's, then the saved
 * ones. Returns 0 or -EIO. */
static int add_module(preset_pb ***arr, size_t *n, runtab *rt, const config_module *m,
                      const char *module_id) {
  preset_pb **saved = NULL;
  size_t nsaved = 0;
  int rc = runtab_preset_list(rt, module_id, &saved, &nsaved);
  if (rc < 0) return rc;
  size_t nconf = m ? m->npresets : 0;
  *arr = xrealloc(*arr, (*n + nconf + nsaved + 1) * sizeof **arr);
  for (size_t i = 0; i < nconf; i++) (*arr)[(*n)++] = from_config(m, &m->presets[i]);
  for (size_t i = 0; i < nsaved; i++) (*arr)[(*n)++] = saved[i];
  free(saved);
  return 0;
}

int preset_list(preset_pb ***out, size_t *n_out, runtab *rt, const config *cfg,
                const char *module_id) {
  preset_pb **arr = NULL;
  size_t n = 0;
  int rc = 0;
  if (module_id && *module_id) {
    rc = add_module(&arr, &n, rt, config_find_module(cfg, module_id), module_id);
  } else {
    for (size_t i = 0; rc == 0 && i < cfg->nmodules; i++)
      rc = add_module(&arr, &n, rt, &cfg->modules[i], cfg->modules[i].id);
  }
  if (rc < 0) {
    runtab_preset_list_free(arr, n);
    return rc;
  }
  *out = arr;
  *n_out = n;
  return 0;
}

int preset_delete(runtab *rt, const config *cfg, const char *module_id, const char *name,
                  const char *owner, int any_owner, char *err, size_t errlen) {
  const config_module *m = config_find_module(cfg, module_id);
  if (m && config_find_preset(m, name)) {
    snprintf(err, errlen, "preset \"%s\" of module \"%s\" is part of the server's configuration",
             name, module_id);
    return -EROFS;
  }
  int rc = check_owner(rt, module_id, name, owner, any_owner, err, errlen);
  if (rc == 0) rc = runtab_preset_delete(rt, module_id, name);
  if (rc == -ENOENT)
    snprintf(err, errlen, "module \"%.64s\" has no saved preset \"%.64s\"", module_id, name);
  else if (rc == -EIO)
    snprintf(err, errlen, "cannot delete the preset: %s", strerror(EIO));
  else if (rc == 0)
    LOG_INFO("preset deleted module_id=%s name=%s owner=%s", module_id, name,
             owner[0] ? owner : "anonymous");
  return rc;
}
