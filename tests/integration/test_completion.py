"""The bash completion of prismq (client/cli/completion/prismq.bash) against a real
prismqd on the built-in config: _prismq called with COMP_WORDS, COMP_CWORD, COMP_LINE and
COMP_POINT as bash sets them (split at COMP_WORDBREAKS' "=", ":" and "@"), its COMPREPLY
checked. Commands from a prefix, every command and option `prismq --help` and
`prismq help COMMAND` list (so the script's lists cannot drift from the CLI's), file
names after --tls-ca, module ids and parameters and run ids from the server (through
$PRISMQ_TARGET or a --target on the line), and nothing, silently and quickly, when the
server is down or does not answer."""

import json
import os
import re
import socket
import subprocess
import time
import unittest

from prismq_testlib import BIN_DIR, WAIT, ServerTestCase, temp_dir

PRISMQ = os.path.join(BIN_DIR, "prismq")
SCRIPT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "client", "cli",
                                      "completion", "prismq.bash"))
BUILTIN_MODULES = {"echo", "emit", "sleep", "count", "fail", "list", "secret", "progress",
                   "stages"}
# The server queries are bounded at 2 s; a completion must end well within this.
QUERY_BOUND = 6.0

# Calls _prismq with the words, index, line and cursor given as arguments ($1 line,
# $2 point, $3 cword, the words after) and prints COMPREPLY, one a line.
DRIVER = r'''
source "$SCRIPT" || exit 99
COMP_LINE=$1 COMP_POINT=$2 COMP_CWORD=$3
shift 3
COMP_WORDS=("$@")
_prismq || exit 98
(( ${#COMPREPLY[@]} )) && printf '%s\n' "${COMPREPLY[@]}"
exit 0
'''


def bash_words(line):
    """The words bash's completion gives for `line`: split at blanks, and at runs of
    "=", ":" and "@" (COMP_WORDBREAKS), which become words of their own. A line ending
    in a blank has an empty last word."""
    words = []
    for blank_word in line.split():
        words += [w for w in re.split(r"([=:@]+)", blank_word) if w]
    if not line or line[-1].isspace():
        words.append("")
    return words


def cli_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k != "PRISMQ_TARGET" and not k.startswith("PRISMQ_TLS_")}
    env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env["SCRIPT"] = SCRIPT
    env.update(extra or {})
    return env


def free_port():
    """A TCP port of 127.0.0.1 nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def help_options(text):
    """The options an "Options:" or "Global options:" section of a help text lists."""
    m = re.search(r"^(?:Global options|Options):\n((?:  .*\n?|\n)*)", text, re.M)
    if not m:
        return set()
    section = m.group(1).split("\n\n")[0]
    found = set()
    for line in section.splitlines():
        lead = re.match(r"  (-[-\w]+(?:, -[-\w]+)*)", line)
        if lead:
            found |= set(lead.group(1).split(", "))
    return found


class CompletionTest(ServerTestCase):
    server_kwargs = {}  # the built-in config

    def complete(self, line, point=None, target=True, env=None):
        """COMPREPLY for `line` with the cursor at `point` (default: the end); with
        PRISMQ_TARGET set to the test server unless target is False. Asserts the call
        succeeded with nothing on stderr and stdout apart from COMPREPLY."""
        if point is None:
            point = len(line)
        words = bash_words(line[:point]) if point == len(line) else bash_words(line)
        cword = len(bash_words(line[:point])) - 1
        extra = {"PRISMQ_TARGET": self.server.addr} if target else {}
        extra.update(env or {})
        p = subprocess.run(["/bin/bash", "--norc", "--noprofile", "-c", DRIVER, "bash",
                            line, str(point), str(cword)] + words,
                           capture_output=True, text=True, env=cli_env(extra),
                           timeout=WAIT + QUERY_BOUND)
        self.assertEqual(p.stderr, "", "stderr completing %r" % line)
        self.assertEqual(p.returncode, 0, "completing %r" % line)
        return p.stdout.splitlines()

    def prismq(self, *args):
        p = subprocess.run([PRISMQ, "--target", self.server.addr] + list(args),
                           capture_output=True, text=True, env=cli_env(), timeout=WAIT)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    # -- what the CLI lists ----------------------------------------------------

    def cli_commands(self):
        text = self.prismq("help")
        section = text.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
        cmds = [line.split()[0] for line in section.splitlines() if line.strip()]
        self.assertIn("run", cmds)
        return cmds

    def test_commands_from_prefix(self):
        self.assertEqual(self.complete("prismq s"), ["status"])
        self.assertEqual(sorted(self.complete("prismq c")), ["cancel"])
        self.assertEqual(self.complete("prismq he"), ["health", "help"])
        self.assertEqual(self.complete("prismq x"), [])
        # after the global options, with the cursor inside a word (cur is up to it)
        self.assertEqual(self.complete("prismq --target 127.0.0.1:1 stat ls", point=31),
                         ["status"])
        self.assertEqual(self.complete("prismq help l"), ["ls", "logs"])

    def test_every_command_of_help(self):
        cmds = self.cli_commands()
        self.assertEqual(sorted(self.complete("prismq ")), sorted(cmds))
        self.assertEqual(sorted(self.complete("prismq help ")), sorted(cmds))

    def test_global_options_of_help(self):
        want = help_options(self.prismq("--help"))
        for opt in ("--target", "--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name",
                    "--version", "--help"):
            self.assertIn(opt, want)
        self.assertEqual(set(self.complete("prismq -")), want)
        self.assertEqual(self.complete("prismq --tls-k"), ["--tls-key"])
        self.assertEqual(self.complete("prismq --version "), [])

    def test_options_of_each_command(self):
        for cmd in self.cli_commands():
            with self.subTest(cmd=cmd):
                want = help_options(self.prismq("help", cmd)) | {"--help"}
                self.assertEqual(set(self.complete("prismq %s -" % cmd)), want)
        self.assertEqual(sorted(self.complete("prismq logs --st")), ["--stderr", "--stdout"])
        # options mix with arguments; after the last argument, the options are offered
        self.assertIn("--follow", self.complete("prismq run echo -p message=x --f"))
        self.assertEqual(sorted(self.complete("prismq modules ")),
                         ["--category", "--help", "--json", "--tag"])

    def test_values(self):
        self.assertEqual(sorted(self.complete("prismq ls --status c")),
                         ["cancelled", "completed"])
        self.assertEqual(sorted(self.complete("prismq ls --status=c")),
                         ["cancelled", "completed"])
        self.assertEqual(self.complete("prismq health prismq.r"), ["prismq.runner.v1.Runner"])
        self.assertEqual(self.complete("prismq run echo --timeout "), [])

    def test_files_after_tls_options(self):
        d = temp_dir()
        for name in ("ca.pem", "cert.pem", "other.txt"):
            open(os.path.join(d, name), "w").close()
        os.mkdir(os.path.join(d, "certs"))
        for opt in ("--tls-ca", "--tls-cert", "--tls-key"):
            with self.subTest(opt=opt):
                self.assertEqual(sorted(self.complete("prismq %s %s/c" % (opt, d))),
                                 [d + "/ca.pem", d + "/cert.pem", d + "/certs"])
        # --tls-ca=FILE: bash replaces what follows the "=", so that is what is offered
        self.assertEqual(self.complete("prismq --tls-ca=%s/o" % d), [d + "/other.txt"])
        # a command after them is still found
        self.assertEqual(self.complete("prismq --tls-ca %s/ca.pem st" % d), ["status"])

    # -- from the server -------------------------------------------------------

    def test_module_ids(self):
        doc = json.loads(self.prismq("modules", "--json"))
        ids = {m["id"] for m in doc["modules"]}
        self.assertEqual(ids, BUILTIN_MODULES)
        self.assertEqual(set(self.complete("prismq run ")), ids)
        self.assertEqual(sorted(self.complete("prismq run e")), ["echo", "emit"])
        self.assertEqual(self.complete("prismq run -f --label a=b sl"), ["sleep"])
        self.assertEqual(set(self.complete("prismq ls --module ")), ids)
        self.assertEqual(self.complete("prismq ls --module=co"), ["count"])
        # one argument: after the module, options
        self.assertNotIn("echo", self.complete("prismq run echo "))
        # the module's parameters after -p, as KEY=
        self.assertEqual(self.complete("prismq run echo -p "), ["message="])
        self.assertEqual(self.complete("prismq run count --param n"), ["n="])
        self.assertEqual(self.complete("prismq run sleep --param=s"), ["seconds="])

    def test_target_on_the_line(self):
        """--target given earlier on the line, in each form, wins over $PRISMQ_TARGET."""
        down = "127.0.0.1:%d" % free_port()
        env = {"PRISMQ_TARGET": down}
        addr = self.server.addr
        for line in ("prismq --target %s run " % addr, "prismq --target=%s run " % addr,
                     "prismq --tar %s run " % addr, "prismq --target '%s' run " % addr):
            with self.subTest(line=line):
                self.assertEqual(set(self.complete(line, env=env)), BUILTIN_MODULES)
        self.assertEqual(self.complete("prismq run ", env=env), [])
        self.assertEqual(self.complete("prismq --target %s run " % down), [])

    def test_run_ids(self):
        done = self.prismq("run", "echo", "-p", "message=completion").strip()
        self.assertRegex(done, r"^[0-9A-Z]{26}$")
        self.prismq("wait", done)
        active = self.prismq("run", "sleep", "-p", "seconds=60").strip()
        try:
            for cmd in ("status", "logs", "wait"):
                with self.subTest(cmd=cmd):
                    got = self.complete("prismq %s " % cmd)
                    self.assertIn(done, got)
                    self.assertIn(active, got)
                    self.assertEqual(self.complete("prismq %s %s" % (cmd, done[:20])), [done])
            self.assertEqual(self.complete("prismq logs -f --from 2 %s" % done[:20]), [done])
            self.assertEqual(self.complete("prismq --target %s status %s" % (
                self.server.addr, active[:22]), target=False), [active])
            # cancel: only the runs that can be cancelled
            got = self.complete("prismq cancel ")
            self.assertIn(active, got)
            self.assertNotIn(done, got)
            # the run id given, options
            self.assertEqual(sorted(self.complete("prismq status %s " % done)),
                             ["--help", "--json"])
        finally:
            self.prismq("cancel", "--grace", "1s", active)

    # -- no server -------------------------------------------------------------

    def test_server_down(self):
        env = {"PRISMQ_TARGET": "127.0.0.1:%d" % free_port()}
        for line in ("prismq run ", "prismq status ", "prismq cancel 01", "prismq ls --module ",
                     "prismq run echo -p "):
            with self.subTest(line=line):
                self.assertEqual(self.complete(line, target=False, env=env), [])
        # what needs no server still works
        self.assertEqual(self.complete("prismq s", target=False, env=env), ["status"])

    def test_server_silent(self):
        """A server that accepts but never answers: bounded, then nothing."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            env = {"PRISMQ_TARGET": "127.0.0.1:%d" % s.getsockname()[1]}
            t0 = time.monotonic()
            self.assertEqual(self.complete("prismq run ", target=False, env=env), [])
            self.assertLess(time.monotonic() - t0, QUERY_BOUND)

    def test_registered(self):
        p = subprocess.run(["/bin/bash", "--norc", "--noprofile", "-c",
                            'source "$SCRIPT" && complete -p prismq'],
                           capture_output=True, text=True, env=cli_env(), timeout=WAIT)
        self.assertEqual(p.stderr, "")
        self.assertEqual(p.stdout.strip(), "complete -F _prismq prismq")


if __name__ == "__main__":
    unittest.main()
