/* config: the server's configuration (listen addresses, data directory, limits, the
 * modules a client may run, TLS, unix socket permissions and authorization rules),
 * loaded from YAML with libyaml, and the rendering of a run request into the argv/cwd
 * of the process to start.
 *
 * The file format (every key optional unless said otherwise; unknown keys are errors):
 *
 *   listen: ["tcp://127.0.0.1:50051", "unix:///tmp/prismq.sock"]  # non-empty list
 *   data_dir: ./var
 *   limits: {max_concurrent: 8, max_queued: 10000, max_memory_percent: 80,
 *            min_available_memory_mb: 0, max_cpu_percent: 0, max_connections: 10000,
 *            max_streams_per_connection: 100, max_header_list_bytes: 16384,
 *            max_message_bytes: 4194304, idle_timeout_ms: 300000,
 *            max_queued_per_identity: 0, output_max_bytes: 1073741824}
 *   modules:
 *     - id: emit                      # required, unique, ^[A-Za-z0-9_.-]{1,64}$
 *       name: Emit bytes              # default: the id
 *       description: Writes N zero bytes to stdout     # default: ""
 *       argv: ["head", "-c", "{bytes}", "/dev/zero"]  # required, non-empty; no shell
 *       cwd: /tmp                     # default: none (the server's own)
 *       env: {LC_ALL: C}              # added to the environment
 *       timeout_ms: 600000            # 0 (default) = no timeout
 *       max_concurrent: 4             # 0 (default) = no per-module limit
 *       pass_parameters: none         # none (default) | flags
 *       memory_max: 1073741824        # bytes; needs cgroups with the memory controller
 *       cpu_max: 150                  # percent of one CPU; needs the cpu controller
 *       category: demo                # default: ""
 *       tags: [output, bytes]         # default: none; distinct, non-empty
 *       version: "1.0"                # default: ""
 *       enabled: true                 # default true; false: listed, never started
 *       parameters:
 *         - {name: bytes, required: true, type: integer, min: 0, description: how many}
 *         - {name: label, default: "none", max_length: 64, pattern: "[a-z]+"}
 *         - {name: mode, type: select, options: [fast, slow], default: fast}
 *         - {name: dry_run, type: boolean, default: "false"}
 *         - {name: out, type: path, base_dir: /srv/out}
 *         - {name: token, type: secret, env_var: API_TOKEN}
 *         - {name: key, type: secret, fd: 4}     # read from descriptor 4
 *       progress: {pattern: '^PROGRESS (\d+)/(\d+)', fd: true}   # see Progress below
 *       presets:                      # named parameter sets (see Presets below)
 *         - {name: small, description: a kilobyte, parameters: {bytes: "1024"}}
 *       executor: local               # local (default) | slurm: a batch job (exec.h)
 *       slurm: {partition: debug, account: lab, qos: normal, cpus: 4, memory: 8G,
 *               time_limit: 2h, sbatch_args: ["--constraint=fast"], env: {OMP_NUM_THREADS: "4"}}
 *   allow_insecure_remote: false
 *   tls:                              # all of tls is optional; if given, cert and key are required
 *     cert: /etc/prismq/server.pem    # PEM certificate chain
 *     key: /etc/prismq/server.key     # PEM private key
 *     client_ca: /etc/prismq/ca.pem   # CA bundle that verifies client certificates
 *     require_client_cert: false      # true needs client_ca
 *     crl: /etc/prismq/crl.pem        # PEM CRL(s) for client certificates; needs client_ca
 *     handshake_timeout_ms: 10000
 *   unix_socket: {mode: "0660", group: prismq}   # permissions of unix:// listeners
 *   retention: {sweep_interval: 1h, max_age: 7d, max_runs: 100000}
 *   shutdown: {runs: wait, grace_ms: 30000}   # runs: wait | cancel
 *   cgroups: {root: auto}             # auto | off | /sys/fs/cgroup/some/delegated/dir
 *   http: {ui: true, metrics: true, request_timeout_ms: 30000}   # the HTTP/1.1 side
 *   slurm: {spool_dir: /shared/prismq, poll_interval: 1s, max_jobs: 1000,
 *           bin_dir: /usr/bin}        # the Slurm executor's; spool_dir needed by its modules
 *   authz:                            # who may do what (see authz.h)
 *     - identity: "spiffe://prismq/ops*"    # required, non-empty glob
 *       modules: ["*"]                # globs over the module ids it may start
 *       roles: [read, read_all, cancel_any, admin]
 *
 * Values: strings are any YAML scalar except null (`~`, `null`, empty), so `default:
 * 1024` is the string "1024"; a string may not contain a NUL byte. Numbers are plain
 * decimal scalars (no sign, no quotes). Booleans are plain true/false (True, TRUE,
 * False, FALSE too). A file holds one YAML document; an empty one gives all defaults.
 *
 * Defaults and ranges: listen ["tcp://127.0.0.1:50051"], data_dir "./var";
 * limits.max_concurrent 8 (>= 1), max_queued 10000 (0 = runs never queue: one that
 * cannot start at once is refused), max_memory_percent 0 and max_cpu_percent 0
 * (0..100, 0 = check off), min_available_memory_mb 0 (0 = check off),
 * max_connections 10000 (>= 1; client connections open at once: more are closed as
 * they are accepted), max_streams_per_connection 100 (1..10000; advertised in SETTINGS:
 * a stream over it is refused with REFUSED_STREAM before the client has acknowledged
 * them, and after that ends the connection, as HTTP/2 allows), max_header_list_bytes 16384 (1024..1048576; a request with more
 * header bytes, counted as HTTP/2 does, is reset), max_message_bytes 4194304
 * (1024..67108864; a larger request message is answered RESOURCE_EXHAUSTED unread),
 * idle_timeout_ms 300000 (0..86400000, 0 = never: a connection with no call in flight
 * for this long is closed, and a request whose headers have not all arrived by then is
 * reset), max_queued_per_identity 0 (0 = no limit: runs of one identity waiting for a
 * slot; more are answered RESOURCE_EXHAUSTED), output_max_bytes 1 GiB (0 = no limit). A configuration with no modules is valid.
 * The listen addresses are not interpreted here (the listener does that).
 *
 * Lifecycle: retention.sweep_interval and max_age are durations (milliseconds, or a
 * number with a unit ms, s, m, h or d); sweep_interval 0 turns the sweep off, max_age 0
 * and max_runs 0 turn their limit off. shutdown.grace_ms 0..86400000. cgroups.root
 * "auto" looks for a writable cgroup v2 hierarchy, "off" keeps runs in process groups
 * only. memory_max >= 4096, cpu_max 1..100000 (percent of one CPU).
 *
 * HTTP/1.1 (docs/http.md): http.ui (default true) serves the web page at /, http.metrics
 * (default true) the Prometheus metrics at /metrics; the JSON routes and /healthz are
 * always there. http.request_timeout_ms 1000..600000 (default 30000): a request must
 * have come in whole within it, and an idle keep-alive connection is closed after it.
 *
 * Transport security: allow_insecure_remote false (the authz module's rule for a
 * configuration without authz: only local peers are allowed). tls.handshake_timeout_ms
 * 10000 (1..600000). tls.cert, key, client_ca and crl are non-empty path strings that
 * are only stored here (prismqd opens them with OpenSSL); a tls section needs cert and
 * key, and require_client_cert: true or a crl needs client_ca. Whether a tls:// listen
 * address has a tls section to go with it is checked by prismqd, not here.
 *
 * unix_socket.mode: the permission bits of unix listeners' socket files, octal digits
 * only, 0..0777, default 0600; a plain 0660 and a quoted "0660" are the same and the
 * leading 0 is optional (660 is 0660 too). unix_socket.group: a group name or a numeric
 * gid (a non-empty string, resolved by prismqd), default none: the group is left as
 * created.
 *
 * authz: a list of rules, each {identity, modules, roles}. identity is an fnmatch(3)
 * glob (no flags: "*" matches "/" too, and also the anonymous identity ""); modules is
 * a list of non-empty globs over module ids (default none; [] is the same); roles a
 * list of the names read, read_all, cancel_any, admin (default none; repeats are
 * harmless). A rule with neither still marks its identities as known (AUTHZ_ANY).
 * "authz:" with an empty list, or with nothing after it, is an authz section with no
 * rules: every caller is refused. Without an authz key, authz.h's defaults apply.
 *
 * Parameters: names unique within a module, ^[A-Za-z_][A-Za-z0-9_]{0,63}$; a required
 * parameter has no default; a pattern is a POSIX extended regular expression that must
 * match the WHOLE value (it is compiled as ^(pattern)$, so it need not be anchored; a
 * pattern with an unmatched ")" is refused, since it would break out of that group).
 * type is string (the default), integer, number, boolean, select, secret or path; min
 * and max (numbers; integers for an integer) only for integer and
 * number; options (a non-empty list of distinct strings) required for select and only
 * there; base_dir (an absolute path) required for path and only there; min_length and
 * max_length (bytes, 0..2^32-1, max_length 0 = no limit) for any type. param.h says
 * how values are checked. A secret needs env_var (a variable name) or fd (a descriptor
 * number, 3..CONFIG_SECRET_FD_MAX, each secret's own and not the progress descriptor;
 * at most CONFIG_SECRET_FDS_MAX such, max_length at most, and by default,
 * CONFIG_SECRET_FD_LEN_MAX),
 * only there: the one way its value reaches the run, in the environment or as the
 * contents of a pipe on that descriptor, which the run reads to its end; it has no default, its placeholder is refused in
 * argv and cwd, pass_parameters: flags leaves it out, and the run's record shows it as
 * CONFIG_SECRET_SHOWN. A default must be a value the parameter accepts; a boolean's
 * is stored as true or false.
 *
 * Presets: each has a name (^[A-Za-z0-9_.-]{1,64}$, unique within the module), an
 * optional description and parameters, a mapping of values for some of the module's
 * parameters (config_module_check_preset: no secret, each value one the parameter
 * accepts; required ones may be left to the run). A run started from a preset gets
 * its values where the request gives none. Clients may save more presets (preset.h),
 * never under the name of one of these.
 *
 * Progress: how a module reports how far a run has come (progress.h has the details),
 * shown as Run.progress and sent to StreamOutput followers in order with the output.
 * pattern: stdout lines matching it are progress lines: a POSIX extended regular
 * expression searched in each line, whose groups (?P<done>...), (?P<total>...),
 * (?P<percent>...) and (?P<message>...) say what they hold (without names: groups 1, 2
 * and 3 are done, total and message); (?:...) and \d are understood, e.g.
 * '^PROGRESS (?P<done>\d+)/(?P<total>\d+)(?: (?P<message>.*))?$'. The line stays in the
 * output. Begin the pattern with ^ and literal text: only lines that begin with that text
 * are matched, the others cost next to nothing; without it, every line is.
 * fd: true gives the run a pipe on its descriptor 3, named by PRISMQ_PROGRESS_FD=3 in its
 * environment, for lines "DONE/TOTAL", "PERCENT%" or "DONE", each optionally followed by
 * a space and a message; what is written there is not output. A pattern that does not
 * compile, names another group, or has no done or percent group is an error.
 *
 * Templates: in argv elements and cwd, "{name}" is replaced by the value of parameter
 * `name`, "{{" is a literal "{" and "}}" a literal "}" (so "{{name}}" gives "{name}").
 * Any other "{" or "}" is an error, as is a placeholder that names no declared
 * parameter, or an optional parameter without a default (it could have no value). The
 * substituted value is one argv element whatever it holds: there is no shell and no
 * word splitting. With pass_parameters: flags, "--name" "value" (two elements) are
 * appended for each parameter that has a value, in declared order.
 *
 * Errors name the source and the line (from libyaml's marks), e.g.
 * "config.yaml:12: modules[1].argv must be a non-empty list of strings"; list indexes
 * count from 0.
 *
 * A loaded config is read-only data: any thread may read it, nothing changes it until
 * its last config_free (references: config_ref). Out of memory aborts (server code). */
#ifndef PRISMQ_CONFIG_H
#define PRISMQ_CONFIG_H

#include "ere.h" /* regex_t */
#include <stddef.h>
#include <stdint.h>

/* A parameter's type; the values are the contract's ParameterType numbers. */
typedef enum config_param_type {
  CONFIG_PARAM_STRING = 1,
  CONFIG_PARAM_INTEGER = 2,
  CONFIG_PARAM_NUMBER = 3,
  CONFIG_PARAM_BOOLEAN = 4,
  CONFIG_PARAM_SELECT = 5,
  CONFIG_PARAM_SECRET = 6,
  CONFIG_PARAM_PATH = 7,
} config_param_type;

/* One declared parameter of a module (param.h checks values against it). */
typedef struct config_param {
  char *name;          /* ^[A-Za-z_][A-Za-z0-9_]{0,63}$, unique within the module */
  int required;        /* non-zero: a run must give a value */
  char *default_value; /* used when a run gives none; NULL if none (always NULL if required);
                          a BOOLEAN's is "true" or "false" */
  char *description;   /* "" if not given */
  char *pattern;       /* the pattern as written, NULL if none */
  regex_t re;          /* ^(pattern)$ compiled REG_EXTENDED|REG_NOSUB; valid iff pattern */
  config_param_type type;
  int has_min, has_max; /* INTEGER, NUMBER: whether min, max are set */
  double min, max;      /* integral for an INTEGER */
  char **options;       /* SELECT: noptions distinct values, then a NULL; else NULL */
  size_t noptions;
  uint32_t min_length; /* bytes */
  uint32_t max_length; /* bytes; 0 = no limit */
  char *base_dir;      /* PATH: the directory as written; else NULL */
  char *base_resolved; /* PATH: base_dir resolved (param_resolve_base); else NULL */
  char *env_var;       /* SECRET: the environment variable the run gets it in, or NULL */
  uint32_t fd;         /* SECRET: else the descriptor the run reads it from; else 0 */
} config_param;

/* A preset of the configuration: values for some parameters of its module. */
typedef struct config_preset {
  char *name;        /* ^[A-Za-z0-9_.-]{1,64}$, unique within the module */
  char *description; /* "" if not given */
  char **names;      /* nparams parameter names, then a NULL */
  char **values;     /* their values as written, then a NULL */
  size_t nparams;
} config_preset;

/* Where a module's runs are carried out (modules[].executor). */
enum { CONFIG_EXEC_LOCAL = 0, CONFIG_EXEC_SLURM = 1 };

/* A module's slurm: block: how its runs are submitted as batch jobs (sbatch options).
 * Strings are NULL when not given (Slurm's default then applies). */
typedef struct config_slurm_job {
  char *partition, *account, *qos; /* --partition, --account, --qos */
  uint32_t cpus;                   /* --cpus-per-task; 0 = not given */
  char *memory;                    /* --mem: digits with an optional K, M, G or T suffix */
  uint32_t time_limit_min;         /* --time in minutes; 0 = from timeout_ms (see exec.h) */
  char **sbatch_args;              /* nsbatch_args extra arguments, then a NULL (never NULL) */
  size_t nsbatch_args;
  char **env; /* nenv "KEY=VALUE" added to the job's environment, then a NULL (never NULL) */
  size_t nenv;
} config_slurm_job;

/* One module: a command a client may run. argv and cwd are templates (see above). */
typedef struct config_module {
  char *id;          /* ^[A-Za-z0-9_.-]{1,64}$, unique */
  char *name;        /* the id if not given */
  char *description; /* "" if not given */
  char **argv;       /* argc templates, then a NULL; argc >= 1 */
  size_t argc;
  char *cwd;  /* template, or NULL: the server's working directory */
  char **env; /* nenv "KEY=VALUE" strings (literal, no templates), then a NULL */
  size_t nenv;
  uint32_t timeout_ms;     /* 0 = no timeout */
  uint32_t max_concurrent; /* 0 = no per-module limit */
  int pass_flags;          /* pass_parameters: flags */
  config_param *params;    /* nparams, in declared order */
  size_t nparams;
  uint64_t memory_max;      /* bytes, the run's cgroup memory.max; 0 = none */
  uint32_t cpu_max_percent; /* of one CPU, the run's cgroup cpu.max; 0 = none */
  char *category;           /* "" if not given */
  char **tags;              /* ntags distinct non-empty tags, then a NULL */
  size_t ntags;
  char *version;          /* "" if not given */
  int enabled;            /* default 1; a disabled module is listed but never started */
  config_preset *presets; /* npresets, in declared order */
  size_t npresets;
  /* progress: (progress.h) */
  struct progress_pattern *progress; /* the pattern compiled; NULL if none */
  int progress_fd;                   /* fd: true, runs get a progress pipe on descriptor 3 */
  int executor;                      /* CONFIG_EXEC_LOCAL (default) or CONFIG_EXEC_SLURM */
  config_slurm_job slurm;            /* the slurm: block; all unset unless executor is slurm */
} config_module;

/* Server-wide limits. For the percentages and min_available_memory_mb, 0 = check off. */
typedef struct config_limits {
  uint32_t max_concurrent;             /* runs running at once, >= 1 */
  uint32_t max_queued;                 /* runs waiting for a slot; 0 = no queue */
  uint32_t max_memory_percent;         /* 0..100: refuse starts above this memory use */
  uint32_t min_available_memory_mb;    /* refuse starts below this much available memory */
  uint32_t max_cpu_percent;            /* 0..100: refuse starts above this CPU use */
  uint32_t max_connections;            /* client connections open at once, >= 1 */
  uint32_t max_streams_per_connection; /* calls in flight on one connection, 1..10000 */
  uint32_t max_header_list_bytes;      /* one request's headers (HTTP/2 list size), 1 KiB..1 MiB */
  uint32_t max_message_bytes;          /* one request message, 1 KiB..64 MiB */
  uint32_t idle_timeout_ms;         /* a connection without a call this long is closed; 0 = never */
  uint32_t max_queued_per_identity; /* queued runs one identity may have; 0 = no limit */
  uint64_t output_max_bytes;        /* per run, stdout and stderr together; 0 = no limit */
} config_limits;

/* The tls: section. The paths are as written, not opened or checked here. */
typedef struct config_tls {
  char *cert, *key, *client_ca, *crl; /* NULL when not given; cert, key: iff !has_tls */
  int require_client_cert;            /* non-zero: a client must present a certificate */
  uint32_t handshake_timeout_ms;      /* 1..600000, default 10000 (set also without tls) */
} config_tls;

/* The retention: section: the periodic deletion of old terminal runs. */
typedef struct config_retention {
  uint64_t sweep_interval_ms; /* how often; 0 = never (default 1 h) */
  uint64_t max_age_ms; /* terminal runs finished longer ago go; 0 = no age limit (default 7 d) */
  uint64_t max_runs;   /* terminal runs beyond the newest this many go; 0 = no limit (100000) */
} config_retention;

/* The shutdown: section: what SIGTERM/SIGINT do with running runs. */
typedef struct config_shutdown {
  int cancel_runs;   /* runs: cancel (non-zero) or wait (0, default) */
  uint32_t grace_ms; /* wait: how long before the rest are cancelled (default 30000) */
} config_shutdown;

/* The http: section: what the HTTP/1.1 side serves beside the JSON routes. */
typedef struct config_http {
  int ui;                      /* the web page at / (default 1) */
  int metrics;                 /* Prometheus metrics at /metrics (default 1) */
  uint32_t request_timeout_ms; /* 1000..600000 (default 30000) */
} config_http;

/* The slurm: section: what the Slurm executor shares by all its modules. */
typedef struct config_slurm {
  char *spool_dir;           /* a directory the cluster's nodes and this server share, for the jobs'
                    * scripts and output; NULL when not given (then no module may use slurm) */
  uint32_t poll_interval_ms; /* one status query for all active jobs this often; 100..600000,
                              * default 1000 */
  uint32_t max_jobs;         /* jobs submitted and not ended at once, >= 1 (default 1000) */
  char *bin_dir; /* where sbatch, squeue, scancel and sacct are; NULL: the server's PATH */
} config_slurm;

/* One rule of the authz: list (see authz.h for how rules are applied). */
typedef struct config_authz_rule {
  char *identity; /* fnmatch(3) glob over the caller identity, non-empty */
  char **modules; /* nmodules globs over module ids, then a NULL (never NULL itself) */
  size_t nmodules;
  unsigned roles; /* AUTHZ_* bits from authz.h: READ=1, READ_ALL=2, CANCEL_ANY=4, ADMIN=8 */
} config_authz_rule;

/* A loaded configuration. */
typedef struct config {
  char **listen; /* nlisten addresses as written, then a NULL; nlisten >= 1 */
  size_t nlisten;
  char *data_dir;
  config_limits limits;
  config_module *modules; /* nmodules, in file order (NULL if none) */
  size_t nmodules;
  int allow_insecure_remote; /* non-zero: without authz, remote peers are allowed too */
  config_tls tls;            /* defaults (all NULL, 10000 ms) unless has_tls */
  int has_tls;               /* a tls: section was given (it then has cert and key) */
  uint32_t unix_mode;        /* permission bits of unix socket files, default 0600 */
  char *unix_group;          /* group name or numeric gid as written; NULL = none */
  config_authz_rule *authz;  /* nauthz rules in file order (NULL if none) */
  size_t nauthz;
  int has_authz; /* an authz: key was given (even an empty list) */
  config_retention retention;
  config_shutdown shutdown;
  config_http http;
  config_slurm slurm;
  char *cgroup_root; /* cgroups.root: "auto" (default), "off", or an absolute path */
  unsigned refs;     /* references beyond the first (config_ref) */
} config;

/* The built-in configuration (YAML text), for a server started without a file:
 * listen tcp://127.0.0.1:50051, data_dir ./var, limits.max_concurrent 8, and demo
 * modules: echo {message="hello"}, emit {bytes=1024} (head -c bytes /dev/zero),
 * sleep {seconds=1}, count {n=10} (seq 1 n), fail (ls of a path under /nonexistent,
 * which exits non-zero with a message on stderr), list (ls -l with flags), secret (a
 * secret parameter), progress {steps=10} (prints "PROGRESS i/N" lines that its progress
 * pattern reads) and stages {stages=5} (writes percentages on its progress descriptor). */
extern const char config_default_yaml[];

/* Loads the YAML configuration in file `path`; messages name the file as `path`.
 * On success returns 0 and sets *out (caller frees with config_free). Otherwise *out
 * is untouched, `err` (errlen bytes, may be NULL if errlen is 0) receives a message,
 * and the return is -EINVAL for an invalid configuration ("path:line: message"), or
 * the negative errno of opening/reading the file ("path: strerror"), -EFBIG for a file
 * of 16 MiB or more. */
int config_load_file(config **out, const char *path, char *err, size_t errlen);

/* Loads a configuration from `yaml` (len bytes, need not be NUL-terminated); `name`
 * stands for the source in messages ("config" if NULL). Returns 0 and sets *out
 * (caller frees with config_free), or -EINVAL with *out untouched and `err` filled as
 * for config_load_file. */
int config_load_string(config **out, const char *yaml, size_t len, const char *name, char *err,
                       size_t errlen);

/* Adds a reference to `c` (a loaded config has one): each config_free drops one, and
 * the last frees it. A reloaded server thus swaps its current snapshot while runs
 * started under the old one keep theirs. Single-threaded, like the server's loop.
 * Returns c. */
config *config_ref(config *c);

/* Drops a reference; the last one frees the configuration and everything it owns.
 * Accepts NULL. */
void config_free(config *c);

/* Returns the module with id `id` (owned by c), or NULL if there is none. */
const config_module *config_find_module(const config *c, const char *id);

struct param_report;

/* Renders a run request for module m: checks the request's parameters and builds the
 * command to start.
 *
 * The request is n name/value pairs: names[i] (NUL-terminated) and values[i], which
 * is lens[i] bytes long, or NUL-terminated when lens is NULL. When a name appears more
 * than once the last pair wins (like a protobuf map). Each parameter's value is the
 * one given, else its default; a required parameter must have one, and a value must
 * pass param_check (its lengths, type, range, options or base directory, pattern). The
 * run gets a value in param_check's form: a BOOLEAN's as true or false, a PATH's
 * resolved. BOOLEAN placeholders give "true" or "false". A SECRET never reaches argv or
 * cwd (the configuration refuses its placeholder, and flags leave it out).
 *
 * On success returns 0 and sets:
 *   *out_argv    the NULL-terminated argv (templates substituted, then the flags for
 *                pass_parameters: flags: "--name" "value", a BOOLEAN's "--name" alone
 *                when true and nothing when false); free with config_argv_free;
 *   *out_cwd     the substituted cwd (free with free()), or NULL if the module has none;
 *   *out_params  (if out_params is not NULL) the effective parameters, given or
 *                defaulted, as NULL-terminated "name=value" strings in declared order
 *                (a parameter with no value is left out; a SECRET's value shows as
 *                CONFIG_SECRET_SHOWN); free with config_argv_free;
 *   *out_secret_env (if not NULL) "ENV_VAR=value" for each SECRET given ("FD=value",
 *                FD the descriptor number in decimal, for one passed on a descriptor:
 *                no variable name starts with a digit), in declared
 *                order, NULL-terminated: the only place the values are; free with
 *                config_argv_free after clearing them (explicit_bzero).
 * Returns -EINVAL, outputs untouched, with every bad parameter added to `bad` (if not
 * NULL; param.h) and their messages joined by "; " in `err` (errlen bytes; may be NULL
 * if errlen is 0): unknown ones in request order, then the declared ones in order:
 *   unknown parameter "foo"
 *   parameter "x" contains a NUL byte          (only possible with lens)
 *   missing required parameter "bytes"
 *   parameter "bytes" does not match [0-9]+    (the pattern as written)
 *   parameter "count" is 12, above the maximum 10
 *   parameter "mode" must be one of "fast", "slow"
 * Nothing is kept: the result is the caller's. */
int config_module_render(char ***out_argv, char **out_cwd, char ***out_params,
                         char ***out_secret_env, const config_module *m, const char *const *names,
                         const char *const *values, const size_t *lens, size_t n,
                         struct param_report *bad, char *err, size_t errlen);

/* Checks a preset's values for module m: names[i] (NUL-terminated) with values[i], n
 * pairs. Each name must be a parameter of m that is not a SECRET (a preset is stored,
 * and a secret must not be), named once, and each value must pass param_check;
 * parameters not given, required ones too, are left to the run. Returns 0, or -EINVAL
 * with every bad pair added to `bad` (param.h), as config_module_render words them
 * (plus: parameter "token" is a secret, which a preset cannot hold). */
int config_module_check_preset(const config_module *m, const char *const *names,
                               const char *const *values, size_t n, struct param_report *bad);

/* The preset of m named `name`, or NULL. */
const config_preset *config_find_preset(const config_module *m, const char *name);

/* Whether s is a valid preset name: ^[A-Za-z0-9_.-]{1,64}$. */
int config_valid_preset_name(const char *s);

/* The descriptor of a run's progress pipe (progress: {fd: true}). */
#define CONFIG_PROGRESS_FD 3u

/* Secrets passed on descriptors: the highest descriptor, how many per module, and the
 * longest value (an fd secret's max_length: its default, and the most it may be), so
 * that proc can write each whole before the run starts (proc.h, proc_input). */
#define CONFIG_SECRET_FD_MAX     63
#define CONFIG_SECRET_FDS_MAX    8
#define CONFIG_SECRET_FD_LEN_MAX 4096

/* What a SECRET parameter's value shows as in the effective parameters (and so in Run). */
#define CONFIG_SECRET_SHOWN "***"

/* Frees a NULL-terminated string vector from config_module_render. Accepts NULL. */
void config_argv_free(char **v);

#endif
