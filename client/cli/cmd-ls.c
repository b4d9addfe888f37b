/* prismq ls: runs, newest first (Runner/ListRuns, page after page up to --limit). */
#include <stdlib.h>

#include "cli.h"

#define DEFAULT_LIMIT 100
/* Runs asked for per call: the server's maximum is 1000, but big labels could make
 * such a page pass the client's 4 MiB message limit. */
#define PAGE_SIZE 200

static void print_table(cli_run *const *runs, size_t n) {
  cli_table *t = cli_table_new(
      6, (const char *[]){"RUN ID", "MODULE", "STATUS", "EXIT", "STARTED", "DURATION"});
  int64_t now = cli_now_ms(CLOCK_REALTIME);
  for (size_t i = 0; i < n; i++) {
    const cli_run *r = runs[i];
    char exit_s[32], started[32], duration[32] = "-";
    cli_format_exit(exit_s, sizeof exit_s, r);
    cli_format_time(started, sizeof started, r->started_at_ms);
    if (r->started_at_ms > 0) {
      int64_t end = r->finished_at_ms > 0 ? r->finished_at_ms : now;
      cli_format_duration(duration, sizeof duration,
                          end > r->started_at_ms ? (uint64_t)(end - r->started_at_ms) : 0);
    }
    cli_table_add(t, (const char *[]){r->run_id, r->module_id, cli_status_name(r->status), exit_s,
                                      started, duration});
  }
  cli_table_print(t, stdout);
  cli_table_free(t);
}

/* What the command line asked for. req points into argv and into the other fields. */
struct ls_args {
  Prismq__Runner__V1__ListRunsRequest req;
  cli_map labels;
  uint64_t limit;
  int json;
};

static void ls_args_clear(struct ls_args *a) {
  cli_map_clear(&a->labels);
  free(a->req.statuses);
}

/* Fills *a from the options. Returns 0 to go on, or -1 when the command is over (its
 * help printed, or a usage error) with its exit code in *exit_code. */
static int parse_args(struct ls_args *a, int *exit_code, int argc, char **argv) {
  static const struct option longopts[] = {
      {"status", required_argument, NULL, 's'},
      {"module", required_argument, NULL, 'm'},
      {"label", required_argument, NULL, 'l'},
      {"limit", required_argument, NULL, 'n'},
      CLI_OPT_JSON,
      CLI_OPT_HELP,
      {NULL, 0, NULL, 0},
  };
  const struct cli_cmd *cmd = &cli_cmd_ls;
  int opt, status, code = 0;
  while (code == 0 && (opt = cli_os_getopt(argc, argv, "h", longopts)) != -1) {
    switch (opt) {
    case 's':
      if (cli_parse_status(&status, optarg) < 0) {
        code = cli_usage_error(cmd, "--status %s: not a run status (e.g. running, failed)", optarg);
        break;
      }
      a->req.statuses =
          cli_xrealloc(a->req.statuses, (a->req.n_statuses + 1) * sizeof *a->req.statuses);
      a->req.statuses[a->req.n_statuses++] = (Prismq__Runner__V1__RunStatus)status;
      break;
    case 'm': a->req.module_id = optarg; break;
    case 'l':
      code =
          cli_opt_map(&a->labels, &prismq__runner__v1__list_runs_request__labels_entry__descriptor,
                      cmd, "label", optarg);
      break;
    case 'n':
      if (cli_parse_uint(&a->limit, optarg, SIZE_MAX / sizeof(cli_run *)) < 0)
        code = cli_usage_error(cmd, "--limit %s: not a number", optarg);
      break;
    case 'j': a->json = 1; break;
    default: *exit_code = cli_opt_other(cmd, opt); return -1;
    }
  }
  if (code != 0 || (code = cli_check_args(cmd, argc, argv, 0, 0)) != 0) {
    *exit_code = code;
    return -1;
  }
  a->req.n_labels = a->labels.n;
  a->req.labels = (Prismq__Runner__V1__ListRunsRequest__LabelsEntry **)a->labels.items;
  return 0;
}

/* Asks for pages until a->limit runs (0: all) or the last page. On success *runs_out
 * (caller frees each with prismq_run_free, then the array) holds *n_out runs and
 * *token_out (caller frees) the token after the last one, "" at the end. Returns 0 or
 * the exit code of an RPC error (already printed). */
static int fetch_runs(cli_run ***runs_out, size_t *n_out, char **token_out, prismq_client *c,
                      struct ls_args *a) {
  cli_run **runs = NULL;
  size_t nruns = 0;
  char *token = NULL;
  /* A page with no runs ends the listing even with a token: a server that kept
   * answering so would otherwise hold us forever. */
  size_t got;
  do {
    uint64_t want = a->limit ? a->limit - nruns : PAGE_SIZE;
    a->req.page_size = want < PAGE_SIZE ? (uint32_t)want : PAGE_SIZE;
    a->req.page_token = token ? token : "";
    Prismq__Runner__V1__ListRunsResponse *page = NULL;
    prismq_status st = prismq_list_runs(&page, c, &a->req, 0);
    if (st.code != PRISMQ_CODE_OK) {
      for (size_t i = 0; i < nruns; i++) prismq_run_free(runs[i]);
      free(runs);
      free(token);
      return cli_rpc_error(&st);
    }
    /* Take the runs out of the page, which is then freed without them. */
    got = page->n_runs;
    runs = cli_xrealloc(runs, (nruns + page->n_runs) * sizeof *runs);
    for (size_t i = 0; i < page->n_runs; i++) {
      if (!a->limit || nruns < a->limit)
        runs[nruns++] = page->runs[i];
      else
        prismq_run_free(page->runs[i]);
    }
    page->n_runs = 0;
    free(token);
    token = cli_xstrdup(page->next_page_token);
    prismq__runner__v1__list_runs_response__free_unpacked(page, NULL);
  } while (got && token[0] && (!a->limit || nruns < a->limit));
  *runs_out = runs;
  *n_out = nruns;
  *token_out = token;
  return 0;
}

static int ls_exec(cli_ctx *ctx, int argc, char **argv) {
  struct ls_args a = {PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT, {0, NULL}, DEFAULT_LIMIT, 0};
  cli_run **runs = NULL;
  size_t nruns = 0;
  char *token = NULL;
  prismq_client *c;
  int code = 0;
  if (parse_args(&a, &code, argc, argv) < 0) goto out;
  if (!(c = cli_client(ctx))) {
    code = CLI_EXIT_ERROR;
    goto out;
  }
  if ((code = fetch_runs(&runs, &nruns, &token, c, &a)) != 0) goto out;
  if (a.json) {
    /* One document for all pages; nextPageToken continues after the last run shown. */
    Prismq__Runner__V1__ListRunsResponse all = PRISMQ__RUNNER__V1__LIST_RUNS_RESPONSE__INIT;
    all.n_runs = nruns;
    all.runs = runs;
    all.next_page_token = token;
    cli_json_message(stdout, &all.base);
  } else {
    print_table(runs, nruns);
  }
  for (size_t i = 0; i < nruns; i++) prismq_run_free(runs[i]);
  free(runs);
  free(token);
out:
  ls_args_clear(&a);
  return code;
}

const struct cli_cmd cli_cmd_ls = {
    "ls",
    "[--status STATUS]... [--module MODULE] [--label KEY=VALUE]... [--limit N] [--json]",
    "List runs, newest first",
    "Prints a table: RUN ID, MODULE, STATUS, EXIT (the exit code, or SIGNAME; \"-\" when no\n"
    "process exited), STARTED (local time), DURATION (so far, for a running run).\n"
    "\n"
    "Options:\n"
    "  --status STATUS    only runs in this status: queued, running, completed, failed,\n"
    "                     cancelled, timed_out, lost (repeatable: any of them)\n"
    "  --module MODULE    only runs of this module\n"
    "  --label KEY=VALUE  only runs with this label (repeatable: all of them)\n"
    "  --limit N          at most N runs (default 100; 0: all), fetched page by page\n"
    "  --json             print {\"runs\": [...], \"nextPageToken\": \"...\"} instead (a\n"
    "                     ListRunsResponse; the token is \"\" once there are no more)\n",
    ls_exec,
};
