"""prismqd.exe under Wine, driven by Debian's grpcio like the Linux server
(tests/integration): what docs/windows.md promises of the Windows build. ctest of a
Windows build tree runs it (tests/windows/CMakeLists.txt) with PRISMQ_BIN pointing at
prismqd.exe and PRISMQ_WINEPREFIX at the tree's Wine prefix; the program the runs run
is wchild.exe (wchild.c beside this file).

Covered: start and exit codes (0, 3, a program that does not exist), live output and
replay from any seq, cancel of a tree (a child that started a grandchild: none of it
is left), cancel of a child that ignores Ctrl-Break (killed after the grace), the
run's timeout, and a restart after a crash (kill -9): the running run is LOST with its
processes gone (its Job Object died with the server), the queued one starts and
completes. Also the built-in configuration (Windows' own programs), a data directory
given as a Windows path, prismqd.exe as a Windows service (sc.exe), PATH parameters by Windows' rules (links and junctions resolved,
names Win32 would rewrite refused), and what a Windows server refuses to load (the Slurm
executor, a relative base_dir). Processes are looked for in the process list, where Wine shows a Windows
program with its command line.
"""

import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from prismq_testlib import BIN_DIR, WAIT, Server, ServerTestCase, temp_dir  # noqa: E402
from runner_common import (CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, STDERR,  # noqa: E402
                           STDOUT, TIMED_OUT, Client, R, config_yaml, poll_until,
                           split_final, status_name)

WCHILD = os.path.join(os.environ.get("PRISMQ_TESTBIN", BIN_DIR), "wchild.exe")
LOST = R.RUN_STATUS_LOST


def module(mid, *args, **extra):
    """A module running wchild.exe with these arguments ({x} are parameters)."""
    m = {"id": mid, "name": mid, "argv": [WCHILD] + list(args)}
    m.update(extra)
    return m


MODULES = [
    module("lines", "lines", "{n}", "{ms}",
           parameters=[{"name": "n", "type": "integer", "default": "5"},
                       {"name": "ms", "type": "integer", "default": "0"}]),
    module("exit", "exit", "{code}", parameters=[{"name": "code", "type": "integer",
                                                   "required": True}]),
    module("tree", "tree", "{mark}", parameters=[{"name": "mark", "required": True}]),
    module("sleep", "sleep", "{mark}", parameters=[{"name": "mark", "required": True}]),
    module("stubborn", "stubborn"),
    {"id": "missing", "name": "missing", "argv": ["no-such-program.exe"]},
]


def marked(mark):
    """The pids of the processes whose command line holds `mark`."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines()
            if mark in line and "ps -eo" not in line]


def assert_gone(test, mark):
    # Wine takes a moment to take a terminated process off the list: there is no
    # event for that to wait on, so it is polled, bounded.
    poll_until(lambda: not marked(mark), "no process marked %s" % mark)


class WineRuns(ServerTestCase):
    server_kwargs = {"config_yaml": config_yaml(MODULES, max_concurrent=4)}

    def setUp(self):
        self.c = Client(self.server)

    def tearDown(self):
        self.c.close()

    def test_exit_codes_and_output(self):
        run = self.c.wait(self.c.start("lines", params={"n": "3"}).run_id)
        self.assertEqual(run.status, COMPLETED, status_name(run.status))
        self.assertEqual(run.exit_code, 0)
        self.assertEqual(self.c.output(run.run_id), (b"line 1\nline 2\nline 3\n", b""))
        run = self.c.wait(self.c.start("exit", params={"code": "3"}).run_id)
        self.assertEqual((run.status, run.exit_code), (FAILED, 3))
        self.assertEqual(self.c.output(run.run_id), (b"", b"exiting 3\n"))

    def test_program_not_found(self):
        run = self.c.wait(self.c.start("missing").run_id)
        self.assertEqual(run.status, FAILED, status_name(run.status))
        self.assertEqual(run.error_message,
                         'cannot start "no-such-program.exe": No such file or directory')

    def test_live_output_then_replay(self):
        run = self.c.start("lines", params={"n": "20", "ms": "100"})
        it = self.c.stream(run.run_id, follow=True)
        first, out = self.c.read_until(it, b"line 2\n")
        # Output arrives while the run still runs: live, not at the end.
        self.assertEqual(self.c.get(run.run_id).status, RUNNING)
        data, final = split_final(first + list(it))
        self.assertEqual(final.status, COMPLETED)
        whole = b"".join(c.data for c in data if c.stream == STDOUT)
        self.assertEqual(whole, b"".join(b"line %d\n" % i for i in range(1, 21)))
        # Replay from any seq gives exactly the chunks from there on.
        for k in range(len(data)):
            again, _ = self.c.chunks(run.run_id, start_seq=data[k].seq)
            self.assertEqual([(c.seq, c.data) for c in again],
                             [(c.seq, c.data) for c in data[k:]])

    def test_cancel_ends_the_whole_tree(self):
        mark = "tree-%d" % os.getpid()
        run = self.c.start("tree", params={"mark": mark})
        self.c.read_until(self.c.stream(run.run_id, follow=True), b"grandchild started\n")
        self.assertEqual(len(marked(mark)), 2)  # the child and the grandchild
        self.c.cancel(run.run_id, grace_ms=500)
        done = self.c.wait(run.run_id)
        self.assertEqual(done.status, CANCELLED, status_name(done.status))
        assert_gone(self, mark)

    def test_cancel_of_a_child_that_ignores_ctrl_break(self):
        run = self.c.start("stubborn")
        self.c.read_until(self.c.stream(run.run_id, follow=True), b"ready\n")
        t0 = time.monotonic()
        self.c.cancel(run.run_id, grace_ms=300)
        done = self.c.wait(run.run_id)
        self.assertEqual(done.status, CANCELLED)
        self.assertEqual(done.term_signal, signal.SIGKILL)
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)

    def test_timeout(self):
        mark = "timeout-%d" % os.getpid()
        run = self.c.start("sleep", params={"mark": mark}, timeout_ms=500)
        done = self.c.wait(run.run_id)
        self.assertEqual(done.status, TIMED_OUT, status_name(done.status))
        self.assertEqual(done.timeout_ms, 500)
        assert_gone(self, mark)


class WineConfig(unittest.TestCase):
    def test_builtin_configuration_runs(self):
        with Server() as srv:
            c = Client(srv)
            try:
                mods = c.stub.ListModules(R.ListModulesRequest(), timeout=WAIT).modules
                self.assertEqual([m.id for m in mods], ["echo", "sleep", "count", "fail", "progress"])
                run = c.wait(c.start("count", params={"n": "3"}).run_id)
                self.assertEqual((run.status, run.exit_code), (COMPLETED, 0))
                self.assertEqual(c.output(run.run_id)[0].split(), [b"1", b"2", b"3"])
                run = c.wait(c.start("fail", params={"code": "4"}).run_id)
                self.assertEqual((run.status, run.exit_code), (FAILED, 4))
            finally:
                c.close()

    def test_windows_data_dir(self):
        # A Windows path, with backslashes and directories to make: Wine's Z: is /.
        base = temp_dir()
        win = "Z:" + os.path.join(base, "a", "b", "var").replace("/", "\\")
        with Server(config_yaml(MODULES), extra_args=("--data-dir", win)) as srv:
            c = Client(srv)
            try:
                run = c.wait(c.start("lines", params={"n": "1"}).run_id)
                self.assertEqual(c.output(run.run_id), (b"line 1\n", b""))
            finally:
                c.close()
        self.assertTrue(os.path.isfile(os.path.join(base, "a", "b", "var", "runs.db")))

    def test_what_windows_refuses(self):
        for module, why in (
                ({"id": "s", "name": "s", "argv": ["x"], "executor": "slurm"},
                 "modules[0].executor: slurm is not available on Windows"),
                ({"id": "p", "name": "p", "argv": ["x", "{f}"], "parameters": [
                    {"name": "f", "type": "path", "base_dir": "data"}]},
                 "modules[0].parameters[0].base_dir must be an absolute path")):
            srv = Server(config_yaml([module], sections={"slurm": {"spool_dir": "/spool"}}))
            with self.assertRaises(RuntimeError) as cm:
                srv.start()
            self.assertIn(why, str(cm.exception))


class WinePaths(unittest.TestCase):
    """PATH parameters by Windows' rules (server/ppath_win.c): a base directory given as a
    Windows path; links made here, on the Linux side, are what Wine resolves. (A link to
    nowhere is not tested: Wine does not show one to Windows programs at all, where
    Windows shows the link and ppath_win.c refuses it.)"""

    def test_path_parameter(self):
        import grpc
        base = temp_dir()
        os.makedirs(os.path.join(base, "in"))
        os.symlink("/etc", os.path.join(base, "out"))
        win_base = "Z:" + base.replace("/", "\\")
        mod = module("say", "say", "{f}", parameters=[
            {"name": "f", "type": "path", "base_dir": win_base, "required": True}])
        with Server(config_yaml([mod])) as srv:
            c = Client(srv)
            try:
                run = c.wait(c.start("say", params={"f": "in/../in\\file.txt"}).run_id)
                self.assertEqual(run.status, COMPLETED, run.error_message)
                self.assertEqual(c.output(run.run_id)[0],
                                 (win_base + "\\in\\file.txt\n").encode())
                for value, why in (("..\\x", "leads outside " + win_base),
                                   ("C:\\windows", "leads outside " + win_base),
                                   ("out\\passwd", "leads outside " + win_base),
                                   ("in\\NUL", "is not a path this server takes"),
                                   ("in\\x.", "is not a path this server takes")):
                    with self.subTest(value=value):
                        with self.assertRaises(grpc.RpcError) as cm:
                            c.start("say", params={"f": value})
                        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                        self.assertEqual(cm.exception.details(), 'parameter "f" ' + why)
            finally:
                c.close()


WINE_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                        "wine-run.sh")


def wine(*args, timeout=120):
    """Runs a Windows program (sc.exe...) under the tests' Wine prefix: (exit status,
    output)."""
    p = subprocess.run([WINE_RUN, os.environ["PRISMQ_WINEPREFIX"]] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout


def windows_path(path):
    """A Linux path as Wine's drive Z: names it."""
    return "Z:" + path.replace("/", "\\")


class WineService(unittest.TestCase):
    """prismqd.exe as a Windows service, through Wine's service control manager: sc create
    with `--service`, sc start (RUNNING once it serves), a run, a reload by the control
    PARAMCHANGE (wchild.exe sends it: Wine's sc.exe cannot), sc stop (the graceful stop,
    then STOPPED with exit code 0), the log in --log-file."""

    def state(self, name):
        out = wine("sc.exe", "query", name)[1]
        return out.split("STATE")[1].split()[2] if "STATE" in out else out

    def test_service(self):
        import grpc
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tmp = temp_dir()
        name = "prismq-test-%d" % os.getpid()
        log = os.path.join(tmp, "prismqd.log")
        cfg = os.path.join(tmp, "prismqd.yaml")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(config_yaml(MODULES[:1]))
        cmd = "%s --service --config %s --listen tcp://127.0.0.1:%d --data-dir %s --log-file %s" % (
            windows_path(os.path.join(BIN_DIR, "prismqd.exe")), windows_path(cfg), port,
            windows_path(os.path.join(tmp, "var")), windows_path(log))
        self.assertEqual(wine("sc.exe", "create", name, "binPath=", cmd)[0], 0)
        # Wine ends its services once no program of the prefix runs: one runs meanwhile.
        keeper = subprocess.Popen(
            [WINE_RUN, os.environ["PRISMQ_WINEPREFIX"], "ping.exe", "-n", "600", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wine("sc.exe", "start", name)
            poll_until(lambda: self.state(name) == "RUNNING", "the service runs")
            srv = type("Srv", (), {"channel": lambda self: grpc.insecure_channel(
                "127.0.0.1:%d" % port)})()
            c = Client(srv)
            try:
                run = c.wait(c.start("lines", params={"n": "2"}).run_id)
                self.assertEqual((run.status, run.exit_code), (COMPLETED, 0))
                with open(cfg, "w", encoding="utf-8") as f:
                    f.write(config_yaml(MODULES[:2]))
                self.assertEqual(wine(WCHILD, "paramchange", name)[0], 0)
                poll_until(lambda: len(c.stub.ListModules(R.ListModulesRequest(),
                                                          timeout=WAIT).modules) == 2,
                           "the reloaded configuration")
            finally:
                c.close()
            wine("sc.exe", "stop", name)
            poll_until(lambda: self.state(name) == "STOPPED", "the service stops")
            self.assertIn("EXIT_CODE  : 0", wine("sc.exe", "query", name)[1])
            with open(log, encoding="utf-8") as f:
                text = f.read()
            self.assertIn("prismqd ready", text)
            self.assertIn("configuration reloaded modules=2", text)
            self.assertIn("shutting down on signal 21", text)  # SIGBREAK
            self.assertIn("prismqd stopped", text)
        finally:
            if self.state(name) != "STOPPED":
                wine("sc.exe", "stop", name)
            wine("sc.exe", "delete", name)
            keeper.kill()
            keeper.wait()


class WineRestart(unittest.TestCase):
    def test_crash_then_restart(self):
        mark = "crash-%d" % os.getpid()
        cfg = config_yaml(MODULES, max_concurrent=1)
        data_dir = os.path.join(temp_dir(), "var")
        s1 = Server(cfg, extra_args=("--data-dir", data_dir)).start()
        c1 = Client(s1)
        running = c1.start("sleep", params={"mark": mark})
        poll_until(lambda: c1.get(running.run_id).status == RUNNING, "the first run runs")
        queued = c1.start("lines", params={"n": "2"})
        self.assertEqual(c1.get(queued.run_id).status, QUEUED)
        c1.ch.close()
        self.assertEqual(s1.stop(signal.SIGKILL), -signal.SIGKILL)
        # Its Job Object went with the server: nothing of the run outlives it.
        assert_gone(self, mark)
        s2 = Server(cfg, extra_args=("--data-dir", data_dir)).start()
        c2 = Client(s2)
        try:
            lost = c2.get(running.run_id)
            self.assertEqual(lost.status, LOST, status_name(lost.status))
            done = c2.wait(queued.run_id)
            self.assertEqual(done.status, COMPLETED, status_name(done.status))
            self.assertEqual(c2.output(queued.run_id), (b"line 1\nline 2\n", b""))
        finally:
            c2.close()
        self.assertEqual(s2.stop(), 0)


if __name__ == "__main__":
    unittest.main()
