"""libprismq, the C client library (client/include/prismq/client.h), against a real
prismqd: every RPC through the blocking API, a stream stopped early, blocking calls
interrupted from a signal handler, deadlines, a refused connection, a server killed
mid-stream, the asynchronous API (through the libprismq_probe helper,
tests/integration/libprismq_probe.c), the follow_run example (also under valgrind), and
`cmake --install` followed by an out-of-tree build of the example with pkg-config."""

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import time
import unittest

from prismq_testlib import BIN_DIR, WAIT, Server, ServerTestCase, temp_dir
from runner_child import pattern_bytes
from runner_common import (CANCELLED, R, Client, RunnerMixin, child_module, config_yaml,
                           mode_env)

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTBIN = os.environ.get("PRISMQ_TESTBIN", os.path.join(_REPO, "build", "tests"))
BUILD = os.environ.get("PRISMQ_BUILD", os.path.join(_REPO, "build"))
PROBE = os.path.join(TESTBIN, "libprismq_probe")
EXAMPLE = os.path.join(BIN_DIR, "follow_run")
EXAMPLE_SRC = os.path.join(_REPO, "client", "examples", "follow_run.c")
VALGRIND = shutil.which("valgrind")
VALGRIND_ARGS = (VALGRIND, "-q", "--error-exitcode=99", "--leak-check=full",
                 "--errors-for-leak-kinds=definite,indirect,possible")

# Runs are cancelled at shutdown: the tests stop servers with runs still running.
CONFIG = config_yaml([child_module("child")], {"shutdown": {"runs": "cancel"}})
SERVER_KWARGS = {"config_yaml": CONFIG, "env": mode_env("async")}

EXIT_RPC = 3
EXIT_CONNECT = 4


def _asan_build():
    """True if the probe was built with -DASAN=ON (valgrind cannot run those, and an
    out-of-tree program cannot load an ASan libprismq)."""
    try:
        with open(PROBE, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = _asan_build()


def run_cmd(args, wrapper=(), env=None, timeout=WAIT):
    # The probe reads PRISMQ_TLS_* as prismq does: a developer's own settings stay out.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRISMQ_TLS_")}
    full_env.update(env or {})
    return subprocess.run(list(wrapper) + [str(a) for a in args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, env=full_env)


def probe(target, *args, **kw):
    """Runs libprismq_probe TARGET args...; returns the CompletedProcess (bytes)."""
    return run_cmd([PROBE, target] + list(args), **kw)


def refused_target():
    """A context manager yielding a "127.0.0.1:PORT" nobody listens on: the port is
    bound (so no one else takes it) but not listening, so connecting is refused."""
    class _Refused:
        def __enter__(self):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            return "127.0.0.1:%d" % self.sock.getsockname()[1]

        def __exit__(self, *exc):
            self.sock.close()
            return False
    return _Refused()


def read_until(proc, pattern, timeout=WAIT):
    """Reads proc.stdout until the bytes read match `pattern`; returns them."""
    rx = re.compile(pattern)
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not rx.search(data):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError("no %r in the output within %.0f s: %r"
                                     % (pattern, timeout, data))
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError("output ended without %r: %r" % (pattern, data))
            data += chunk
    return data


class LibCase(RunnerMixin, ServerTestCase):
    server_kwargs = SERVER_KWARGS

    def ok(self, *args, **kw):
        """Runs the probe against the class's server; asserts exit 0; returns stdout text."""
        r = probe(self.server.addr, *args, **kw)
        self.assertEqual(r.returncode, 0, "libprismq_probe %s: exit %d, stderr: %s"
                         % (" ".join(map(str, args)), r.returncode, r.stderr.decode()))
        return r.stdout.decode()

    def rpc_error(self, code, *args, **kw):
        """Runs the probe; asserts that an RPC ended with `code`; returns its message."""
        r = probe(self.server.addr, *args, **kw)
        self.assertEqual(r.returncode, EXIT_RPC, "libprismq_probe %s: exit %d, stderr: %s"
                         % (" ".join(map(str, args)), r.returncode, r.stderr.decode()))
        err = r.stderr.decode()
        self.assertTrue(err.startswith(code + ": "), err)
        return err[len(code) + 2:].strip()

    def released(self):
        """Waits until the server holds no call but GetStats' and no connection but the
        stats and test client channels: what the probe started is gone."""
        self.server.wait_stats(lambda s: s.live_calls == 1)

    def sleeping_run(self):
        run = self.c.start(action="sleep", arg=60)
        return run.run_id


class BlockingApi(LibCase):
    def test_health(self):
        self.assertEqual(self.ok("health"), "SERVING\n")
        self.assertEqual(self.ok("health", "prismq.runner.v1.Runner"), "SERVING\n")
        self.assertIn("no.such.Service", self.rpc_error("NOT_FOUND", "health", "no.such.Service"))

    def test_list_modules(self):
        self.assertEqual(self.ok("modules"), "child\n")

    def test_start_get_wait_list_stream(self):
        out = self.ok("start", "child", "action=ok")
        run_id, status = out.split()
        self.c.started.append(run_id)
        self.assertIn(status, ("RUN_STATUS_QUEUED", "RUN_STATUS_RUNNING", "RUN_STATUS_COMPLETED"))
        # The server knows the run as the library asked for it.
        self.assertEqual(self.c.get(run_id).parameters["action"], "ok")
        self.assertEqual(self.ok("wait", run_id), "RUN_STATUS_COMPLETED 0\n")
        self.assertEqual(self.ok("get", run_id), "%s child RUN_STATUS_COMPLETED 0\n" % run_id)
        self.assertEqual(self.ok("list", "child").split()[0], run_id)
        r = probe(self.server.addr, "stream", run_id)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, b"ok\n", b""))

    def test_exit_code_and_stderr(self):
        run_id = self.c.start(action="exit", arg=3).run_id
        self.assertEqual(self.ok("wait", run_id), "RUN_STATUS_FAILED 3\n")
        r = probe(self.server.addr, "stream", run_id)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"")
        self.assertEqual(r.stderr, b"".join(b"stderr line %d\n" % i for i in range(100)))

    def test_stream_follow_large_output(self):
        # Many messages, split across DATA frames and reads: the bytes must be exact.
        n = 3 * 1024 * 1024 + 7
        run_id = self.c.start(action="bytes", arg=n).run_id
        r = probe(self.server.addr, "stream", run_id, "follow")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), n)
        self.assertTrue(r.stdout == pattern_bytes(n), "the output differs from the pattern")

    def test_cancel(self):
        run_id = self.sleeping_run()
        self.assertEqual(self.ok("cancel", run_id), "RUN_STATUS_CANCELLED\n")
        self.assertEqual(self.c.get(run_id).status, CANCELLED)
        self.assertIn("already", self.rpc_error("FAILED_PRECONDITION", "cancel", run_id))

    def test_server_errors(self):
        self.assertIn("0" * 26, self.rpc_error("NOT_FOUND", "get", "0" * 26))
        self.assertIn("no-such-module", self.rpc_error("NOT_FOUND", "start", "no-such-module"))
        self.assertIn("action", self.rpc_error("INVALID_ARGUMENT", "start", "child"))

    def test_stream_stopped_early(self):
        run_id = self.sleeping_run()
        out = self.ok("stop-early", run_id, 1)
        # The GetRun after the stop went over the same connection.
        self.assertEqual(out, "%s child RUN_STATUS_RUNNING 0\nCANCELLED 1\n" % run_id)
        self.released()

    def test_interrupt_from_a_signal_handler(self):
        # A follow of a silent run and a WaitRun without deadlines end only through
        # the interrupts; the connection serves the calls after them.
        run_id = self.sleeping_run()
        self.assertEqual(self.ok("interrupt", run_id),
                         "stream CANCELLED 1\nwait CANCELLED\nget CANCELLED\n"
                         "%s child RUN_STATUS_RUNNING 0\n" % run_id)
        self.released()
        self.assertEqual(self.c.get(run_id).status, R.RUN_STATUS_RUNNING)

    def test_wait_deadline(self):
        run_id = self.sleeping_run()
        start = time.monotonic()
        # Whichever side notices first (both enforce the deadline) says so.
        self.assertIn("deadline", self.rpc_error("DEADLINE_EXCEEDED", "wait", run_id, 300))
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.released()
        self.assertEqual(self.c.get(run_id).status, R.RUN_STATUS_RUNNING)

    def test_misuse_and_tls(self):
        self.assertEqual(self.ok("misuse"), "ok\n")
        self.assertRegex(self.ok("tls"), r"^cannot load the CA file ca\.pem: .*No such file or directory\n$")

    def test_target_from_environment(self):
        r = probe("-", "health", env={"PRISMQ_TARGET": self.server.addr})
        self.assertEqual((r.returncode, r.stdout), (0, b"SERVING\n"), r.stderr)

    def test_connection_refused(self):
        with refused_target() as target:
            r = probe(target, "health")
        self.assertEqual(r.returncode, EXIT_RPC, r.stderr)
        self.assertEqual(r.stderr.decode(),
                         "UNAVAILABLE: connect to %s: Connection refused\n" % target)

    def test_bad_target(self):
        r = probe("no-such-host.invalid:80", "health")
        self.assertEqual(r.returncode, EXIT_CONNECT)
        self.assertRegex(r.stderr.decode(), r"^connect: cannot resolve host no-such-host\.invalid: .+\n$")


class AsyncApi(LibCase):
    def test_all_calls(self):
        out = self.ok("async", "child", "action=interleave", "arg=50").splitlines()
        self.assertEqual(sorted(out[:2]), ["health SERVING", "modules 1"])
        self.assertTrue(out[2].startswith("started "), out)
        run_id = out[2].split()[1]
        self.c.started.append(run_id)
        out_bytes = sum(len(b"out %d\n" % i) for i in range(50))
        err_bytes = sum(len(b"err %d\n" % i) for i in range(50))
        self.assertEqual(sorted(out[3:5]), sorted([
            "stream OK stdout %d stderr %d final RUN_STATUS_COMPLETED" % (out_bytes, err_bytes),
            "wait RUN_STATUS_COMPLETED 0"]))
        # The last three answer in any order; the cancel of a finished run is refused.
        self.assertEqual(sorted(out[5:]), sorted([
            "get %s RUN_STATUS_COMPLETED" % run_id, "list first %s" % run_id,
            "cancel FAILED_PRECONDITION"]))

    def test_failed_start(self):
        r = probe(self.server.addr, "async", "no-such-module")
        self.assertEqual(r.returncode, 1, r.stderr)
        out = sorted(r.stdout.decode().splitlines())
        self.assertEqual(out[:2], ["health SERVING", "modules 1"])
        self.assertRegex(out[2], r"^start NOT_FOUND: .*no-such-module")
        self.assertEqual(len(out), 3)

    def test_free_with_calls_pending(self):
        run_id = self.sleeping_run()
        self.assertEqual(self.ok("async-free", run_id), "stream CANCELLED\nwait CANCELLED\n")
        self.released()

    def test_async_connection_refused(self):
        with refused_target() as target:
            r = probe(target, "async", "child", "action=ok")
        self.assertEqual(r.returncode, 1)
        out = r.stdout.decode()
        for call in ("health", "modules", "start"):
            self.assertIn("%s UNAVAILABLE: connect to %s: Connection refused" % (call, target),
                          out)


class Example(LibCase):
    def follow(self, *args, wrapper=(), exe=EXAMPLE, env=None, timeout=WAIT):
        return run_cmd([exe, "-t", self.server.addr, "child"] + list(args), wrapper=wrapper,
                       env=env, timeout=timeout)

    def check_interleave(self, r, n=5):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"".join(b"out %d\n" % i for i in range(n)))
        err = r.stderr.decode()
        self.assertEqual(err[:err.index("run ")], "".join("err %d\n" % i for i in range(n)))
        self.assertRegex(err, r"run \w+ RUN_STATUS_COMPLETED exit code 0\n$")

    def test_follow_run(self):
        self.check_interleave(self.follow("action=interleave", "arg=5"))

    def test_exit_code(self):
        r = self.follow("action=exit", "arg=7")
        self.assertEqual(r.returncode, 7)
        self.assertRegex(r.stderr.decode(), r"run \w+ RUN_STATUS_FAILED exit code 7\n$")

    def test_errors(self):
        r = self.follow("action=bad action")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr.decode(), r"^follow_run: StartRun: INVALID_ARGUMENT: ")
        with refused_target() as target:
            r = run_cmd([EXAMPLE, "-t", target, "child", "action=ok"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE: connect to %s: Connection refused" % target,
                      r.stderr.decode())

    @unittest.skipUnless(VALGRIND, "valgrind not installed")
    @unittest.skipIf(ASAN, "an ASan build does not run under valgrind")
    def test_valgrind_clean(self):
        self.check_interleave(self.follow("action=interleave", "arg=5", wrapper=VALGRIND_ARGS,
                                          timeout=120))
        run_id = self.sleeping_run()
        for args, want in ((("stop-early", run_id, 1), "CANCELLED 1"),
                           (("interrupt", run_id), "get CANCELLED"),
                           (("async-free", run_id), "wait CANCELLED"),
                           (("async", "child", "action=ok"), "wait RUN_STATUS_COMPLETED 0"),
                           (("misuse",), "ok")):
            with self.subTest(args=args):
                self.assertIn(want, self.ok(*args, wrapper=VALGRIND_ARGS, timeout=120))
        with refused_target() as target:
            r = probe(target, "health", wrapper=VALGRIND_ARGS, timeout=120)
        self.assertEqual(r.returncode, EXIT_RPC, r.stderr)  # 99 would be a valgrind error
        self.released()


class ServerGone(unittest.TestCase):
    """The server goes away while a stream is open: the stream ends UNAVAILABLE."""

    def stream_until_gone(self, stop):
        """Starts a sleeping run, follows it with the probe until its first output, calls
        stop(server), and returns the probe's CompletedProcess-like (code, stderr)."""
        srv = Server(**SERVER_KWARGS).start()
        pgid = None
        try:
            c = Client(srv)
            run_id = c.start(action="sleep", arg=60).run_id
            c.ch.close()
            proc = subprocess.Popen([PROBE, srv.addr, "stream", run_id, "follow"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            try:
                pgid = int(re.search(rb"sleeping (\d+)", read_until(proc, rb"sleeping \d+\n"))
                           .group(1))
                stop(srv)
                _, err = proc.communicate(timeout=WAIT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            return proc.returncode, err.decode()
        finally:
            srv.stop()
            if pgid is not None:  # a killed server leaves its run behind
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def test_server_killed(self):
        code, err = self.stream_until_gone(lambda s: s.stop(signal.SIGKILL))
        self.assertEqual(code, EXIT_RPC, err)
        # A killed server's socket ends with FIN or, with unread data, RST: the transport
        # says which.
        self.assertRegex(err, r"^UNAVAILABLE: (connection closed|read from 127\.0\.0\.1:\d+: "
                              r"Connection reset by peer)\n$")

    def test_server_shut_down(self):
        code, err = self.stream_until_gone(lambda s: s.stop(signal.SIGTERM))
        self.assertEqual(code, EXIT_RPC, err)
        self.assertTrue(err.startswith("UNAVAILABLE: "), err)


class UnixSocket(ServerTestCase):
    SOCK = os.path.join(temp_dir("prismq-sock-"), "prismqd.sock")
    server_kwargs = dict(SERVER_KWARGS, extra_args=("--listen", "unix://" + SOCK))

    def test_health_over_unix_socket(self):
        r = probe("unix:" + self.SOCK, "health")
        self.assertEqual((r.returncode, r.stdout), (0, b"SERVING\n"), r.stderr)

    def test_missing_socket(self):
        r = probe("unix:" + self.SOCK + ".missing", "health")
        self.assertEqual(r.returncode, EXIT_RPC)
        self.assertIn("UNAVAILABLE: connect to unix:%s.missing" % self.SOCK, r.stderr.decode())


class Install(ServerTestCase):
    """cmake --install into a temporary prefix, then the example built out of tree with
    pkg-config, against the shared and against the static library."""

    server_kwargs = SERVER_KWARGS

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.prefix = temp_dir("prismq-install-")
        r = run_cmd(["cmake", "--install", BUILD, "--prefix", cls.prefix], timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        cls.lib = os.path.join(cls.prefix, "lib")
        cls.pc_env = {"PKG_CONFIG_PATH": os.path.join(cls.lib, "pkgconfig")}

    def pkg_config(self, *args):
        r = run_cmd(["pkg-config"] + list(args) + ["prismq"], env=self.pc_env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode().split()

    def build_example(self, name, link_args):
        exe = os.path.join(temp_dir("prismq-example-"), name)
        r = run_cmd(["cc", "-std=c11", "-Wall", "-Werror", EXAMPLE_SRC, "-o", exe]
                    + self.pkg_config("--cflags") + link_args, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return exe

    def run_example(self, exe):
        r = run_cmd([exe, "-t", self.server.addr, "child", "action=interleave", "arg=3"],
                    env={"LD_LIBRARY_PATH": self.lib})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"out 0\nout 1\nout 2\n")
        self.assertRegex(r.stderr.decode(), r"^err 0\nerr 1\nerr 2\nrun \w+ RUN_STATUS_COMPLETED")

    def test_installed_files(self):
        for path in ("include/prismq/client.h", "include/prismq/runner/v1/runner.pb-c.h",
                     "lib/libprismq.a", "lib/libprismq.so", "lib/pkgconfig/prismq.pc"):
            self.assertTrue(os.path.exists(os.path.join(self.prefix, path)), path)
        so = os.path.realpath(os.path.join(self.lib, "libprismq.so"))
        r = run_cmd(["readelf", "-d", so])
        self.assertIn(b"Library soname: [libprismq.so.0]", r.stdout)
        self.assertTrue(os.path.exists(os.path.join(self.lib, "libprismq.so.0")))
        # Only the API and the generated messages are exported; no internals.
        for cmd in (["nm", "-D", "--defined-only", so],
                    ["nm", "-g", "--defined-only", os.path.join(self.lib, "libprismq.a")]):
            syms = [l.split()[-1].split("@")[0]
                    for l in run_cmd(cmd).stdout.decode().splitlines() if len(l.split()) == 3]
            self.assertIn("prismq_client_connect", syms)
            self.assertIn("prismq__runner__v1__run__free_unpacked", syms)
            self.assertEqual([s for s in syms if not s.startswith("prismq_")
                              and s != "LIBPRISMQ_0"], [], cmd)

    @unittest.skipIf(ASAN, "an ASan libprismq cannot be loaded by a program built without ASan")
    def test_example_shared(self):
        self.run_example(self.build_example("follow_run", self.pkg_config("--libs")))

    @unittest.skipIf(ASAN, "an ASan libprismq cannot be linked into a program built without ASan")
    def test_example_static(self):
        archive = os.path.join(self.lib, "libprismq.a")
        libs = [archive if a == "-lprismq" else a for a in self.pkg_config("--static", "--libs")]
        exe = self.build_example("follow_run_static", libs)
        r = run_cmd(["readelf", "-d", exe])
        self.assertNotIn(b"libprismq", r.stdout)
        self.run_example(exe)


if __name__ == "__main__":
    unittest.main()
