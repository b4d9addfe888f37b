/* prismq presets: a module's saved parameter sets (Runner/ListPresets, SavePreset,
 * DeletePreset), which `prismq run --preset NAME` starts from. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The parameters of a preset as "k=v k2=v2", which the caller frees. */
static char *param_list(const Prismq__Runner__V1__Preset *p) {
  char *s = cli_xstrdup("");
  for (size_t i = 0; i < p->n_parameters; i++)
    cli_append(&s, "%s%s=%s", i ? " " : "", p->parameters[i]->key, p->parameters[i]->value);
  return s;
}

static void add_rows(cli_table *t, const Prismq__Runner__V1__ListPresetsResponse *page) {
  for (size_t i = 0; i < page->n_presets; i++) {
    const Prismq__Runner__V1__Preset *p = page->presets[i];
    const char *owner = p->from_config ? "(config)" : p->owner[0] ? p->owner : "(anonymous)";
    char *params = param_list(p);
    cli_table_add(t, (const char *[]){p->module_id, p->name, owner, params, p->description});
    free(params);
  }
}

/* Lists every page of the presets of module_id ("" = all): a table, or with json one
 * ListPresetsResponse per page. */
static int list_presets(prismq_client *c, const char *module_id, int json) {
  Prismq__Runner__V1__ListPresetsRequest req = PRISMQ__RUNNER__V1__LIST_PRESETS_REQUEST__INIT;
  cli_table *t = json ? NULL
                      : cli_table_new(5, (const char *[]){"MODULE", "NAME", "OWNER", "PARAMETERS",
                                                          "DESCRIPTION"});
  char *token = NULL;
  int code = CLI_EXIT_OK;
  req.module_id = (char *)module_id;
  for (;;) {
    Prismq__Runner__V1__ListPresetsResponse *page = NULL;
    req.page_token = token ? token : "";
    prismq_status st = prismq_list_presets(&page, c, &req, 0);
    free(token);
    token = NULL;
    if (st.code != PRISMQ_CODE_OK) {
      code = cli_rpc_error(&st);
      break;
    }
    if (json)
      cli_json_message(stdout, &page->base);
    else
      add_rows(t, page);
    if (page->next_page_token[0] && page->n_presets) token = cli_xstrdup(page->next_page_token);
    prismq__runner__v1__list_presets_response__free_unpacked(page, NULL);
    if (!token) break;
  }
  if (t && code == CLI_EXIT_OK) cli_table_print(t, stdout);
  cli_table_free(t);
  return code;
}

/* presets save MODULE NAME: the options from optind on are parsed here. */
static int save_preset(cli_ctx *ctx, int argc, char **argv, const char *module_id,
                       const char *name) {
  static const struct option longopts[] = {{"param", required_argument, NULL, 'p'},
                                           {"description", required_argument, NULL, 'd'},
                                           CLI_OPT_JSON,
                                           CLI_OPT_HELP,
                                           {NULL, 0, NULL, 0}};
  const struct cli_cmd *cmd = &cli_cmd_presets;
  Prismq__Runner__V1__SavePresetRequest req = PRISMQ__RUNNER__V1__SAVE_PRESET_REQUEST__INIT;
  cli_map params = {0, NULL};
  int json = 0, opt, code = 0;
  while (code == 0 && (opt = cli_os_getopt(argc, argv, "p:h", longopts)) != -1) {
    switch (opt) {
    case 'p':
      code = cli_opt_map(&params,
                         &prismq__runner__v1__save_preset_request__parameters_entry__descriptor,
                         cmd, "param", optarg);
      break;
    case 'd': req.description = optarg; break;
    case 'j': json = 1; break;
    default: code = cli_opt_other(cmd, opt); break;
    }
  }
  if (code == 0 && optind != argc)
    code = cli_usage_error(cmd, "unexpected argument \"%s\"", argv[optind]);
  prismq_client *c = code == 0 ? cli_client(ctx) : NULL;
  if (code == 0 && !c) code = CLI_EXIT_ERROR;
  if (code == 0) {
    Prismq__Runner__V1__Preset *saved = NULL;
    req.module_id = (char *)module_id;
    req.name = (char *)name;
    req.n_parameters = params.n;
    req.parameters = (Prismq__Runner__V1__SavePresetRequest__ParametersEntry **)params.items;
    prismq_status st = prismq_save_preset(&saved, c, &req, 0);
    if (st.code != PRISMQ_CODE_OK)
      code = cli_rpc_error(&st);
    else if (json)
      cli_json_message(stdout, &saved->base);
    if (saved) prismq__runner__v1__preset__free_unpacked(saved, NULL);
  }
  cli_map_clear(&params);
  return code;
}

static int delete_preset(cli_ctx *ctx, const char *module_id, const char *name) {
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  Prismq__Runner__V1__DeletePresetRequest req = PRISMQ__RUNNER__V1__DELETE_PRESET_REQUEST__INIT;
  req.module_id = (char *)module_id;
  req.name = (char *)name;
  prismq_status st = prismq_delete_preset(c, &req, 0);
  return st.code == PRISMQ_CODE_OK ? CLI_EXIT_OK : cli_rpc_error(&st);
}

static int presets_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {CLI_OPT_JSON, CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  const struct cli_cmd *cmd = &cli_cmd_presets;
  int json = 0, opt;
  /* "+": options stop at the first argument, so save's own options reach save. */
  while ((opt = cli_os_getopt(argc, argv, "+h", longopts)) != -1) {
    if (opt == 'j')
      json = 1;
    else
      return cli_opt_other(cmd, opt);
  }
  const char *what = optind < argc ? argv[optind] : "";
  if (!strcmp(what, "save") || !strcmp(what, "delete")) {
    if (argc - optind < 3) return cli_usage_error(cmd, "%s needs MODULE and NAME", what);
    const char *module_id = argv[optind + 1], *name = argv[optind + 2];
    if (what[0] == 'd') {
      int rc = cli_check_args(cmd, argc, argv, 3, 3);
      return rc ? rc : delete_preset(ctx, module_id, name);
    }
    /* getopt goes on over the arguments after NAME. */
    char **rest = argv + optind + 2;
    int nrest = argc - optind - 2;
    optind = 0;
    return save_preset(ctx, nrest, rest, module_id, name);
  }
  int rc = cli_check_args(cmd, argc, argv, 0, 1);
  if (rc) return rc;
  prismq_client *c = cli_client(ctx);
  return c ? list_presets(c, what, json) : CLI_EXIT_ERROR;
}

const struct cli_cmd cli_cmd_presets = {
    "presets",
    "[MODULE] [--json]\n"
    "       prismq presets save MODULE NAME [-p KEY=VALUE]... [--description TEXT] [--json]\n"
    "       prismq presets delete MODULE NAME",
    "List, save or delete presets: named parameter sets of a module",
    "A run can start from a preset (prismq help run): it takes the preset's values, its\n"
    "own parameters override them, and the module's defaults fill in the rest.\n"
    "\n"
    "prismq presets [MODULE] prints a table of the presets of MODULE (or of every module):\n"
    "MODULE, NAME, OWNER (who saved it; \"(config)\" for the server configuration's, which\n"
    "cannot be changed), PARAMETERS and DESCRIPTION.\n"
    "prismq presets save MODULE NAME saves the values given with -p as preset NAME, replacing\n"
    "your own preset of that name (secret parameters cannot be saved).\n"
    "prismq presets delete MODULE NAME deletes a saved preset (yours, or any as an admin).\n"
    "\n"
    "Options:\n"
    "  -p, --param KEY=VALUE   save: a parameter value (repeatable)\n"
    "  --description TEXT      save: what the preset is for\n"
    "  --json                  print each ListPresetsResponse, or the saved Preset, as JSON\n",
    presets_exec,
};
