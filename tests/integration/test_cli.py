"""The prismq command line (client/cli, docs/cli.md) driven as a program against a real
prismqd: output byte for byte, exit statuses for each way a run ends, --json documents,
the ls table, logs filters, wait --timeout, Ctrl-C detaching, usage and connection
errors. grpcio (runner_common.Client) is the independent view of the server's state."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

from prismq_testlib import BIN_DIR, WAIT, Server, ServerTestCase, read_until, temp_dir
from runner_common import (CANCELLED, RUNNING, STDERR, STDOUT, Client, RunnerMixin,
                           child_module, config_yaml, mode_env)

PRISMQ = os.path.join(BIN_DIR, "prismq")
CONFIG = config_yaml([child_module("child"),
                      {"id": "missing", "argv": ["/nonexistent/prismq-test-program"]}])
ALL256 = bytes(range(256))
COMMANDS = ("modules", "presets", "run", "ls", "status", "logs", "wait", "cancel", "health",
            "help")
LS_COLUMNS = ["RUN ID", "MODULE", "STATUS", "EXIT", "STARTED", "DURATION"]
VALGRIND = shutil.which("valgrind")

# Exit statuses (docs/cli.md).
EXIT_ERROR, EXIT_USAGE = 1, 2
EXIT_LOST, EXIT_CANCELLED, EXIT_ACTIVE, EXIT_TIMED_OUT, EXIT_NOT_STARTED = 69, 75, 99, 124, 127
EXIT_DETACHED = 128 + signal.SIGINT


def cli_env(extra=None):
    """Our environment without PRISMQ_TARGET and PRISMQ_TLS_*, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k != "PRISMQ_TARGET" and not k.startswith("PRISMQ_TLS_")}
    env.update(extra or {})
    return env


# Children that get Ctrl-C must not inherit SIGINT ignored (as a test runner started in
# the background would hand it down; prismq keeps an ignored SIGINT ignored). A handler
# here becomes SIG_DFL across exec. (Not preexec_fn: with the servers' log threads
# running, a child could deadlock between fork and exec.)
signal.signal(signal.SIGINT, signal.default_int_handler)


def refused_target():
    """A socket bound to a loopback port and not listening (connecting is refused), and
    its "127.0.0.1:PORT"; close the socket when done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, "127.0.0.1:%d" % sock.getsockname()[1]


class CliCase(RunnerMixin, ServerTestCase):
    server_kwargs = {"config_yaml": CONFIG, "env": mode_env("async")}

    def prismq(self, *args, target=True, env=None, wrapper=()):
        """Runs prismq [--target ADDR] args; returns the CompletedProcess (bytes)."""
        argv = list(wrapper) + [PRISMQ]
        argv += ["--target", self.server.addr] if target else []
        return subprocess.run(argv + [str(a) for a in args], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=WAIT * 3, env=cli_env(env))

    def expect(self, code, *args, **kw):
        """prismq args must exit `code`; returns the CompletedProcess."""
        p = self.prismq(*args, **kw)
        self.assertEqual(p.returncode, code, "prismq %s: exit %d\nstdout: %r\nstderr: %r"
                         % (" ".join(map(str, args)), p.returncode, p.stdout[:2000],
                            p.stderr[:2000]))
        return p

    def ok(self, *args, **kw):
        return self.expect(0, *args, **kw)

    def json_of(self, code, *args):
        """prismq args --json must exit `code` with one JSON document; returns it."""
        return json.loads(self.expect(code, *args, "--json").stdout)

    def start(self, action, arg="-", *more):
        """`prismq run child -p action=... -p arg=...` (without -f): the run id."""
        p = self.ok("run", "child", "-p", "action=" + action, "-p", "arg=%s" % arg, *more)
        self.assertRegex(p.stdout, rb"^[0-9A-Z]{26}\n$")
        run_id = p.stdout.decode().strip()
        self.c.started.append(run_id)  # cancelled at the end if still active
        return run_id

    def popen(self, *args):
        p = subprocess.Popen([PRISMQ, "--target", self.server.addr] + [str(a) for a in args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=cli_env())

        def reap():
            if p.poll() is None:
                p.kill()
            p.communicate()
        self.addCleanup(reap)
        return p

    def running(self, run_id):
        """Waits until the `sleep` run `run_id` has printed its line (it is RUNNING)."""
        self.c.read_until(self.c.stream(run_id, follow=True), b"sleeping ")


class RunFollow(CliCase):
    def test_output_is_byte_exact(self):
        for n in (1, 3000):  # 768000 bytes a stream: many 64 KiB chunks
            p = self.ok("run", "child", "-p", "action=all256", "-p", "arg=%d" % n, "-f")
            self.assertEqual(p.stdout, ALL256 * n)
            self.assertEqual(p.stderr, ALL256 * n)

    def test_exit_status_is_the_runs(self):
        p = self.expect(3, "run", "child", "-p", "action=exit", "-p", "arg=3", "-f")
        lines = ["stderr line %d\n" % i for i in range(100)]
        self.assertEqual(p.stdout, b"")
        self.assertTrue(p.stderr.startswith("".join(lines).encode()), p.stderr)
        self.assertRegex(p.stderr, rb"\nprismq: run [0-9A-Z]{26} FAILED: exit code 3\n$")

        p = self.expect(128 + 9, "run", "child", "-p", "action=signal", "-p", "arg=KILL", "-f")
        self.assertEqual(p.stdout, b"signalling\n")
        self.assertRegex(p.stderr, rb"FAILED: killed by signal 9 \(SIGKILL\)\n$")

        p = self.expect(EXIT_NOT_STARTED, "run", "missing", "-f")
        self.assertRegex(p.stderr, rb"^prismq: run [0-9A-Z]{26} FAILED: cannot start .*\n$")

        p = self.expect(EXIT_TIMED_OUT, "run", "child", "-p", "action=sleep", "-p", "arg=30",
                        "--timeout", "300ms", "-f")
        self.assertRegex(p.stderr, rb"TIMED_OUT: timed out after 300 ms\n$")

        self.assertEqual(self.ok("run", "child", "-p", "action=ok", "-f").stdout, b"ok\n")

    def test_cancel_ends_followers_with_75(self):
        run_id = self.start("sleep", 60)
        follower = self.popen("logs", run_id, "-f")
        read_until(follower.stdout, b"sleeping ")
        p = self.ok("cancel", run_id, "--grace", "1s")
        self.assertTrue(p.stdout.startswith(run_id.encode() + b" CANCELLED"), p.stdout)
        self.assertEqual(follower.wait(WAIT), EXIT_CANCELLED)
        self.assertIn(b"CANCELLED", follower.stderr.read())
        self.expect(EXIT_CANCELLED, "wait", run_id)
        p = self.expect(EXIT_ERROR, "cancel", run_id)
        self.assertTrue(p.stderr.startswith(b"prismq: FAILED_PRECONDITION: "), p.stderr)

    def test_ctrl_c_detaches_and_logs_reattaches(self):
        p = self.popen("run", "child", "-p", "action=sleep", "-p", "arg=60", "-f")
        read_until(p.stdout, b"\n")  # "sleeping PID": it runs, and is silent from now on
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(WAIT), EXIT_DETACHED)
        err = p.stderr.read()
        m = re.search(rb"reattach with: prismq --target \S+ logs ([0-9A-Z]{26}) -f", err)
        self.assertIsNotNone(m, err)
        run_id = m.group(1).decode()
        self.c.started.append(run_id)
        self.assertIn(b"cancel " + m.group(1), err)
        self.assertEqual(self.c.get(run_id).status, RUNNING)
        self.assertEqual(self.json_of(0, "status", run_id)["status"], "RUN_STATUS_RUNNING")

        again = self.popen("logs", run_id, "-f")
        self.assertTrue(read_until(again.stdout, b"\n").startswith(b"sleeping "))
        again.send_signal(signal.SIGINT)
        self.assertEqual(again.wait(WAIT), EXIT_DETACHED)
        m = re.search(rb"logs %s -f  \(add --from (\d+) " % run_id.encode(), again.stderr.read())
        self.assertIsNotNone(m)
        self.assertEqual(self.c.get(run_id).status, RUNNING)
        # Resuming there shows no line twice: the run has printed nothing since.
        p = self.ok("logs", run_id, "--from", m.group(1).decode())
        self.assertEqual(p.stdout, b"")

    def test_run_prints_its_id_and_request_ids_are_idempotent(self):
        a = self.start("ok", "-", "--request-id", "cli-req-1", "--label", "team=ops")
        self.assertEqual(self.start("ok", "-", "--request-id", "cli-req-1"), a)
        self.assertEqual(dict(self.c.get(a).labels), {"team": "ops"})

    def test_a_lost_run_exits_69(self):
        data_dir = os.path.join(temp_dir(), "var")
        first = self.own_server(CONFIG, ("--data-dir", data_dir), check_exit=False)
        c = self.client(first)
        run = c.start("child", "sleep", 60)
        c.read_until(c.stream(run.run_id, follow=True), b"sleeping ")
        pid = c.get(run.run_id).pid
        self.assertEqual(first.stop(signal.SIGKILL), -signal.SIGKILL)  # a crash
        try:
            os.kill(pid, signal.SIGKILL)  # its orphan
        except ProcessLookupError:
            pass
        second = self.own_server(CONFIG, ("--data-dir", data_dir))
        p = subprocess.run([PRISMQ, "--target", second.addr, "wait", run.run_id],
                           capture_output=True, timeout=WAIT, env=cli_env())
        self.assertEqual(p.returncode, EXIT_LOST, p.stderr)
        self.assertTrue(p.stdout.startswith(run.run_id.encode() + b" LOST"), p.stdout)


class ReadCommands(CliCase):
    def test_json_of_every_read_command(self):
        mods = self.json_of(0, "modules")
        child = [m for m in mods["modules"] if m["id"] == "child"][0]
        self.assertEqual([(p["name"], p["required"]) for p in child["parameters"]],
                         [("action", True), ("arg", False)])
        self.assertEqual(child["timeoutMs"], 0)

        run = self.json_of(0, "run", "child", "-p", "action=exit", "-p", "arg=3",
                           "--label", "j=1")
        self.c.started.append(run["runId"])
        self.assertEqual(run["moduleId"], "child")
        self.assertIn(run["status"], ("RUN_STATUS_QUEUED", "RUN_STATUS_RUNNING"))
        self.assertEqual(run["parameters"], {"action": "exit", "arg": "3"})
        self.assertEqual(run["labels"], {"j": "1"})
        self.assertIsInstance(run["createdAtMs"], str)  # int64: a string in proto3 JSON
        self.assertGreater(int(run["createdAtMs"]), 0)

        done = self.json_of(3, "wait", run["runId"])
        self.assertEqual((done["status"], done["exitCode"]), ("RUN_STATUS_FAILED", 3))
        self.assertEqual(done["stderrBytes"], str(sum(len("stderr line %d\n" % i)
                                                      for i in range(100))))
        st = self.json_of(0, "status", run["runId"])
        self.assertEqual(st, done)
        self.assertEqual(st["errorMessage"], self.c.get(run["runId"]).error_message)

        runs = self.json_of(0, "ls", "--label", "j=1")
        self.assertEqual(runs, {"runs": [done], "nextPageToken": ""})

        sleeper = self.start("sleep", 60)
        self.running(sleeper)
        cancelled = self.json_of(0, "cancel", sleeper, "--grace", "500ms")
        self.assertEqual(cancelled["status"], "RUN_STATUS_CANCELLED")
        self.assertEqual(self.c.get(sleeper).status, CANCELLED)

        self.assertEqual(self.json_of(0, "health"), {"status": "SERVING"})

    def test_json_escapes_strings(self):
        # Every control character, quotes, backslashes, UTF-8 text.
        value = "".join(chr(i) for i in range(1, 32)) + "\x7f \"q\" back\\slash \u00e9\u20ac"
        run_id = self.start("exit_raw", 2, "--label", "k=" + value)
        self.expect(2, "wait", run_id)
        p = self.ok("status", run_id, "--json")
        self.assertFalse(re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", p.stdout), p.stdout)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["labels"], {"k": value})
        # The end of the run's stderr: non-ASCII text, after the server's UTF-8 repair.
        self.assertEqual(doc["errorMessage"], self.c.get(run_id).error_message)
        self.assertIn("\u00e9" * 10, doc["errorMessage"])

    def test_ls_table(self):
        ok = self.start("ok", "-", "--label", "t=ls")
        self.expect(0, "wait", ok)
        failed = self.start("exit", 3, "--label", "t=ls")
        self.expect(3, "wait", failed)
        lines = self.ok("ls", "--label", "t=ls").stdout.decode().splitlines()
        self.assertEqual(re.split(r"  +", lines[0]), LS_COLUMNS)
        starts = [lines[0].index(c) for c in LS_COLUMNS]
        rows = []
        for line in lines[1:]:
            cells = [line[a:b].rstrip() for a, b in zip(starts, starts[1:] + [None])]
            for a in starts[1:]:  # aligned: each column starts after two spaces
                self.assertEqual(line[a - 2:a], "  ", line)
            rows.append(cells)
        self.assertEqual([r[:4] for r in rows], [[failed, "child", "FAILED", "3"],
                                                 [ok, "child", "COMPLETED", "0"]])
        for r in rows:
            self.assertRegex(r[4], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
            self.assertRegex(r[5], r"^\d+(ms|\.\ds)$")

        one = self.ok("ls", "--label", "t=ls", "--limit", "1").stdout.decode().splitlines()
        self.assertEqual([l.split()[0] for l in one[1:]], [failed])
        done = self.ok("ls", "--label", "t=ls", "--status", "completed").stdout.decode()
        self.assertEqual([l.split()[0] for l in done.splitlines()[1:]], [ok])
        both = self.ok("ls", "--label", "t=ls", "--status", "RUN_STATUS_COMPLETED",
                       "--status", "Failed", "--module", "child").stdout.decode()
        self.assertEqual(len(both.splitlines()), 3)
        none = self.ok("ls", "--label", "t=ls", "--module", "missing").stdout.decode()
        self.assertEqual([re.split(r"  +", l) for l in none.splitlines()], [LS_COLUMNS])

    def test_status_for_people(self):
        run_id = self.start("exit", 3)
        self.expect(3, "wait", run_id)
        out = self.ok("status", run_id).stdout.decode()
        self.assertIn("\nstatus      FAILED\n", out)
        self.assertIn("\nexit        3\n", out)
        # The stderr tail, one line under another.
        self.assertIn("stderr line 98\n            stderr line 99\n", out)
        self.assertIn("\nparameter   action=exit\n", out)

    def test_logs_streams_and_from(self):
        run_id = self.start("interleave", 20)
        self.expect(0, "wait", run_id)
        chunks, _ = self.c.chunks(run_id)

        def joined(stream, start=0):
            return b"".join(c.data for c in chunks if c.stream == stream and c.seq >= start)

        p = self.ok("logs", run_id)
        self.assertEqual((p.stdout, p.stderr), (joined(STDOUT), joined(STDERR)))
        self.assertEqual(p.stdout, b"".join(b"out %d\n" % i for i in range(20)))
        p = self.ok("logs", run_id, "--stderr")
        self.assertEqual((p.stdout, p.stderr), (b"", joined(STDERR)))
        p = self.ok("logs", run_id, "--stdout")
        self.assertEqual((p.stdout, p.stderr), (joined(STDOUT), b""))
        mid = chunks[len(chunks) // 2].seq
        p = self.ok("logs", run_id, "--from", mid)
        self.assertEqual((p.stdout, p.stderr), (joined(STDOUT, mid), joined(STDERR, mid)))
        p = self.ok("logs", run_id, "--stderr", "--from", mid)
        self.assertEqual((p.stdout, p.stderr), (b"", joined(STDERR, mid)))
        p = self.ok("logs", run_id, "-f")  # a run already over: its output, exit 0
        self.assertEqual((p.stdout, p.stderr), (joined(STDOUT), joined(STDERR)))

    def test_wait_timeout_returns_the_current_state(self):
        run_id = self.start("sleep", 60)
        self.running(run_id)
        t0 = time.monotonic()
        p = self.expect(EXIT_ACTIVE, "wait", run_id, "--timeout", "300ms")
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assertEqual(p.stdout, run_id.encode() + b" RUNNING\n")
        doc = self.json_of(EXIT_ACTIVE, "wait", run_id, "--timeout", "200ms")
        self.assertEqual(doc["status"], "RUN_STATUS_RUNNING")
        self.assertEqual(self.c.get(run_id).status, RUNNING)

    def test_modules_table(self):
        lines = self.ok("modules").stdout.decode().splitlines()
        self.assertEqual(lines[0].split(),
                         ["ID", "NAME", "CATEGORY", "PARAMETERS", "TIMEOUT", "DESCRIPTION"])
        self.assertRegex(lines[1], r"^child +child +- +action \[arg=-\] +- *$")
        self.assertRegex(lines[2], r"^missing +missing +- +- *$")


class Presets(CliCase):
    def test_save_list_run_delete(self):
        p = self.ok("presets", "save", "child", "three", "-p", "action=exit", "-p", "arg=3",
                    "--description", "exits 3", "--json")
        saved = json.loads(p.stdout)
        self.assertEqual((saved["moduleId"], saved["name"], saved["parameters"]),
                         ("child", "three", {"action": "exit", "arg": "3"}))
        lines = self.ok("presets", "child").stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["MODULE", "NAME", "OWNER", "PARAMETERS",
                                            "DESCRIPTION"])
        self.assertRegex(lines[1], r"^child +three +\(anonymous\) +action=exit arg=3 +exits 3$")
        self.assertEqual(len(lines), 2)
        # The preset's values, one of them overridden.
        self.expect(3, "run", "child", "--preset", "three", "-f")
        self.expect(4, "run", "child", "--preset", "three", "-p", "arg=4", "-f")
        doc = json.loads(self.ok("presets", "--json").stdout)
        self.assertIn("three", [x["name"] for x in doc["presets"]])
        # What the server refuses, it says.
        p = self.expect(EXIT_ERROR, "run", "child", "--preset", "nope")
        self.assertEqual(p.stderr, b'prismq: NOT_FOUND: module "child" has no preset "nope"\n')
        p = self.expect(EXIT_ERROR, "presets", "save", "child", "bad", "-p", "zz=1")
        self.assertEqual(p.stderr, b'prismq: INVALID_ARGUMENT: unknown parameter "zz"\n')
        self.expect(EXIT_USAGE, "presets", "save", "child")
        self.expect(EXIT_USAGE, "presets", "delete", "child", "three", "extra")
        self.ok("presets", "delete", "child", "three")
        p = self.expect(EXIT_ERROR, "presets", "delete", "child", "three")
        self.assertIn(b"NOT_FOUND", p.stderr)
        self.assertEqual(self.ok("presets", "child").stdout.decode().splitlines()[1:], [])


class Paging(unittest.TestCase):
    def test_ls_follows_pages_up_to_the_limit(self):
        with Server(config_yaml=CONFIG, env=mode_env("dry-run")) as s:  # runs end at once
            c = Client(s)
            try:
                for _ in range(450):
                    c.start("child", "ok", labels={"batch": "p"})
                want = [r.run_id for r in c.list(labels={"batch": "p"}, page_size=1000).runs]
            finally:
                c.close()
            self.assertEqual(len(want), 450)

            def ls(*args):
                p = subprocess.run([PRISMQ, "--target", s.addr, "ls", "--label", "batch=p"]
                                   + list(args), capture_output=True, timeout=WAIT,
                                   env=cli_env())
                self.assertEqual(p.returncode, 0, p.stderr)
                return p.stdout
            doc = json.loads(ls("--limit", "0", "--json"))
            self.assertEqual([r["runId"] for r in doc["runs"]], want)
            self.assertEqual(doc["nextPageToken"], "")
            doc = json.loads(ls("--limit", "430", "--json"))
            self.assertEqual([r["runId"] for r in doc["runs"]], want[:430])
            self.assertNotEqual(doc["nextPageToken"], "")
            rows = ls().decode().splitlines()[1:]  # the default limit
            self.assertEqual([r.split()[0] for r in rows], want[:100])


class Installed(CliCase):
    def test_installed_prismq_finds_its_library(self):
        prefix = temp_dir("prismq-cli-install-")
        r = subprocess.run(["cmake", "--install", os.path.dirname(BIN_DIR), "--prefix", prefix],
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        # No LD_LIBRARY_PATH: the prefix is nowhere the loader looks but the binary's
        # own run path, $ORIGIN/../lib.
        p = subprocess.run([os.path.join(prefix, "bin", "prismq"), "--target", self.server.addr,
                            "health"], capture_output=True, timeout=WAIT,
                           env=cli_env({"LD_LIBRARY_PATH": ""}))
        self.assertEqual((p.returncode, p.stdout), (0, b"SERVING\n"), p.stderr)


class Errors(CliCase):
    def test_usage_errors_exit_2(self):
        cases = [(), ("bogus",), ("--bogus", "ls"), ("run",), ("run", "child", "extra"),
                 ("run", "child", "-p", "novalue"), ("run", "child", "-p", "=v"),
                 ("run", "child", "--label", "x"), ("run", "child", "--timeout", "30"),
                 ("run", "child", "--timeout", "5x"), ("run", "child", "--timeout", "50000h"),
                 ("run", "child", "--timeout", "ms"), ("run", "child", "-f", "--json"),
                 ("ls", "--status", "sleepy"), ("ls", "--limit", "-1"), ("ls", "--limit", "x"),
                 ("ls", "--bogus"), ("ls", "extra"), ("status",), ("status", "a", "b"),
                 ("wait", "X", "--timeout"), ("cancel", "X", "--grace", "soon"),
                 ("logs", "X", "--from", "x"), ("logs",), ("help", "bogus"),
                 ("modules", "extra"), ("health", "a", "b"), ("logs", "X", "--json")]
        for args in cases:
            with self.subTest(args=args):
                p = self.expect(EXIT_USAGE, *args)
                self.assertEqual(p.stdout, b"")
                self.assertRegex(p.stderr, rb"(usage: prismq|Try 'prismq)")

    def test_help_for_every_command(self):
        top = self.ok("--help", target=False).stdout.decode()
        self.assertEqual(self.ok("help", target=False).stdout.decode(), top)
        for cmd in COMMANDS:
            with self.subTest(cmd=cmd):
                self.assertRegex(top, r"\n  %s +\S" % cmd)
                text = self.ok(cmd, "--help", target=False).stdout
                self.assertTrue(text.startswith(b"usage: prismq " + cmd.encode()), text)
                self.assertEqual(self.ok("help", cmd, target=False).stdout, text)

    def test_version(self):
        out = self.ok("--version", target=False).stdout.decode()
        m = re.fullmatch(r"prismq (\d+\.\d+\.\d+ \(commit ([0-9a-f]{7,}(-dirty)?|unknown)\))\n",
                         out)
        self.assertTrue(m, out)
        # Built from the same tree as prismqd, they say the same.
        d = subprocess.run([os.path.join(BIN_DIR, "prismqd"), "--version"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
        self.assertEqual(d.stdout.decode(), "prismqd %s\n" % m.group(1))
        self.assertIn("\n  --version ", self.ok("--help", target=False).stdout.decode())

    def test_rpc_errors_name_the_status(self):
        p = self.expect(EXIT_ERROR, "status", "01NOSUCHRUN")
        self.assertTrue(p.stderr.startswith(b"prismq: NOT_FOUND: "), p.stderr)
        self.assertIn(b"01NOSUCHRUN", p.stderr)
        p = self.expect(EXIT_ERROR, "run", "nosuchmodule")
        self.assertTrue(p.stderr.startswith(b"prismq: NOT_FOUND: "), p.stderr)
        p = self.expect(EXIT_ERROR, "health", "no.such.Service")
        self.assertTrue(p.stderr.startswith(b"prismq: NOT_FOUND: "), p.stderr)
        self.assertEqual(self.ok("health", "prismq.runner.v1.Runner").stdout, b"SERVING\n")

    def test_bad_parameters_one_a_line(self):
        """Several bad parameters (the server's field violations): their count, then one
        line each, for run and presets save alike; one is the plain message."""
        for cmd in (("run", "child"), ("presets", "save", "child", "bad")):
            with self.subTest(cmd=cmd[0]):
                p = self.expect(EXIT_ERROR, *cmd, "-p", "zz=1", "-p", "yy=2", "-p", "action=NO!")
                self.assertEqual(p.stdout, b"")
                self.assertEqual(p.stderr.decode(),
                                 'prismq: INVALID_ARGUMENT: 3 bad parameters\n'
                                 'prismq:   zz: unknown parameter "zz"\n'
                                 'prismq:   yy: unknown parameter "yy"\n'
                                 'prismq:   action: parameter "action" does not match '
                                 '[a-z0-9_]+\n')
                p = self.expect(EXIT_ERROR, *cmd, "-p", "action=NO!")
                self.assertEqual(p.stderr, b'prismq: INVALID_ARGUMENT: parameter "action" does '
                                           b'not match [a-z0-9_]+\n')

    def test_connection_refused_is_unavailable(self):
        sock, target = refused_target()
        try:
            p = self.expect(EXIT_ERROR, "--target", target, "ls", target=False)
        finally:
            sock.close()
        self.assertRegex(p.stderr, rb"^prismq: UNAVAILABLE: .*Connection refused\n$")

    def test_environment(self):
        p = self.ok("health", target=False, env={"PRISMQ_TARGET": self.server.addr})
        self.assertEqual(p.stdout, b"SERVING\n")
        for var in ("PRISMQ_TLS_CA", "PRISMQ_TLS_CERT", "PRISMQ_TLS_KEY"):
            with self.subTest(var=var):
                p = self.expect(EXIT_ERROR, "health", env={var: "/nonexistent.pem"})
                self.assertRegex(p.stderr, rb"^prismq: cannot connect: (cannot load .*/nonexistent\.pem: No such file or directory"
                                 rb"|client (key|certificate) /nonexistent\.pem given without .*)\n$")
        p = self.expect(EXIT_ERROR, "--tls-ca", "/nonexistent.pem", "health")
        self.assertIn(b"cannot load the CA file /nonexistent.pem", p.stderr)

    def test_durations(self):
        run_id = self.start("ok")
        for d in ("1h", "5m", "30s", "1500ms", "1m30s", "0"):
            with self.subTest(duration=d):
                self.ok("wait", run_id, "--timeout", d)

    @unittest.skipUnless(VALGRIND, "valgrind is not installed")
    def test_valgrind_clean(self):
        with open(PRISMQ, "rb") as f:
            if b"__asan_init" in f.read():
                self.skipTest("an ASan build")
        vg = (VALGRIND, "-q", "--error-exitcode=99", "--leak-check=full",
              "--errors-for-leak-kinds=definite,indirect,possible")
        run_id = self.start("interleave", 5, "--label", "v=g")
        for args, code in ((("run", "child", "-p", "action=exit", "-p", "arg=3", "-f"), 3),
                           (("wait", run_id, "--json"), 0), (("ls", "--label", "v=g"), 0),
                           (("status", run_id), 0), (("logs", run_id, "--from", "3"), 0),
                           (("modules", "--json"), 0), (("run", "child", "--timeout", "x"), 2)):
            with self.subTest(args=args):
                self.expect(code, *args, wrapper=vg)


if __name__ == "__main__":
    unittest.main()
