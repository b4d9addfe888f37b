"""Shared helpers for PrismQ Runner black-box tests (tests/integration/test_*.py).

The tests run with Debian's /usr/bin/python3 and its grpcio; ctest sets the
environment (a test file also runs alone, defaulting to the repository layout):
  PRISMQ_BIN    directory holding prismqd      (default: <repo>/build/bin)
  PRISMQ_PROTO  the proto/ directory           (default: <repo>/proto)
  PRISMQ_KEEP_TMP=1 keeps each server's temporary directory for inspection.
  PRISMQ_VALGRIND=1 runs every Server under valgrind memcheck: any error or leak makes
                its exit code 99 (so stop() fails the test), and WAIT grows fivefold.
  PRISMQ_WINEPREFIX=DIR runs PRISMQ_BIN/prismqd.exe under Wine (scripts/wine-run.sh with
                that prefix) instead of prismqd (the Windows build's tests, tests/windows):
                its Linux paths work as they are (Wine's drive Z: is /), stop() sends
                SIGINT (Ctrl-C there; Windows has no SIGTERM) and WAIT grows threefold.

API:
  protos()          -> namespace of generated modules: runner_pb2, runner_pb2_grpc,
                       admin_pb2, admin_pb2_grpc, health_pb2, health_pb2_grpc,
                       status_pb2 and error_details_pb2 (google.rpc).
  Server(...)       a prismqd on tcp://127.0.0.1:<kernel-chosen port> with its own
                       temporary data dir; a context manager (see the class). Methods:
                       channel, stats, wait_stats, wait_idle, wait_log, log_text, stop,
                       send_signal, wait_exit.
  ServerTestCase    unittest base class: one Server per class (cls.server), stopped
                       and checked for exit code 0 at the end; prints the server's log
                       lines of a failed test on stderr.
  temp_dir()        a new temporary directory, removed when the process exits.
  read_until(stream, needle)
                    reads a pipe up to the first `needle` (and no further).
  WAIT              the default bound (seconds) for every wait in this module.

Every wait is bounded; nothing here sleeps to synchronise except wait_stats, which
polls counters that have no event to wait on.
"""

import atexit
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest

VALGRIND = os.environ.get("PRISMQ_VALGRIND") == "1"
WINEPREFIX = os.environ.get("PRISMQ_WINEPREFIX")
WAIT = 50.0 if VALGRIND else 30.0 if WINEPREFIX else 10.0
# memcheck around the server: errors and definite or indirect leaks fail its exit code;
# the runs it starts are not traced.
VALGRIND_ARGS = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                 "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
                 "--trace-children=no"]

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("PRISMQ_BIN", os.path.join(_REPO, "build", "bin"))
PROTO_DIR = os.environ.get("PRISMQ_PROTO", os.path.join(_REPO, "proto"))

# The generated modules we need, by proto file.
_PROTOS = ("prismq/runner/v1/runner.proto", "prismq/admin/v1/admin.proto",
           "grpc/health/v1/health.proto", "google/rpc/status.proto",
           "google/rpc/error_details.proto")

_protos_ns = None
_live_servers = set()


def read_until(stream, needle, timeout=None):
    """Reads the pipe `stream` a byte at a time until the bytes read end with `needle`
    (so nothing after it is taken); returns them. Fails after `timeout` (WAIT) seconds
    or at end-of-file."""
    timeout = WAIT if timeout is None else timeout
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while not data.endswith(needle):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError("no %r within %.0f s: %r" % (needle, timeout, data))
            part = os.read(stream.fileno(), 1)
            if not part:
                raise AssertionError("output ended without %r: %r" % (needle, data))
            data += part
    return data


def temp_dir(prefix="prismq-it-"):
    """A new temporary directory, removed at exit unless PRISMQ_KEEP_TMP is set."""
    path = tempfile.mkdtemp(prefix=prefix)
    if not os.environ.get("PRISMQ_KEEP_TMP"):
        atexit.register(shutil.rmtree, path, True)
    return path


def protos():
    """Generates the Python stubs once per process and returns them as a namespace.

    Each proto is compiled under its base name (health.proto, not
    grpc/health/v1/health.proto) so that the generated modules are top-level:
    a `grpc.health.v1` package would collide with grpcio's own `grpc` package. The
    proto package names, and so the RPC paths, are unchanged.
    Raises subprocess.CalledProcessError if protoc fails.
    """
    global _protos_ns
    if _protos_ns is not None:
        return _protos_ns
    out = temp_dir("prismq-pb-")
    paths = [os.path.join(PROTO_DIR, p) for p in _PROTOS]
    cmd = ["/usr/bin/protoc", "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
           "--python_out=" + out, "--grpc_python_out=" + out]
    cmd += ["-I" + os.path.dirname(p) for p in paths]
    subprocess.run(cmd + paths, check=True)
    sys.path.insert(0, out)
    ns = types.SimpleNamespace()
    for p in _PROTOS:
        base = os.path.splitext(os.path.basename(p))[0]
        for mod in (base + "_pb2", base + "_pb2_grpc"):
            setattr(ns, mod, __import__(mod))
    _protos_ns = ns
    return ns


def _kill_leftovers():
    for proc in list(_live_servers):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_kill_leftovers)


class Server:
    """One prismqd process for a test.

    Server(config_yaml=None, extra_args=(), env=None, nofile=None, preexec=None)
      config_yaml  text written to <tmp>/prismq.yaml and passed as --config; None runs
                   on the embedded default config.
      extra_args   more command-line arguments (e.g. ("--listen", "unix:///tmp/x.sock")).
      env          variables added to (or, with value None, removed from) the
                   environment of the server.
      nofile       RLIMIT_NOFILE of the server, soft and hard (None: inherited).
      preexec      a function called with no argument in the server's process just
                   before exec (after nofile is applied), e.g. to set another rlimit.
    start() (or `with Server(...) as srv:`) launches
      prismqd --listen tcp://127.0.0.1:0 --data-dir <tmp>/var [--config ...] extra_args
    and returns once the server has logged `prismqd ready` (raises RuntimeError, with
    the log, if it exits or is not ready within WAIT seconds).
    Attributes after start: addr ("127.0.0.1:PORT"), port, pid, data_dir, tmp.
    Leaving the `with` block stops the server; if the block raised or the exit code is
    not 0, the whole log is printed on stderr.
    """

    def __init__(self, config_yaml=None, extra_args=(), env=None, nofile=None, preexec=None):
        self.tmp = temp_dir()
        self.data_dir = os.path.join(self.tmp, "var")
        self.addr = None
        self.port = None
        self.pid = None
        self.returncode = None
        self._config_yaml = config_yaml
        self._extra_args = tuple(extra_args)
        self._env = env or {}
        self._nofile = nofile
        self._preexec = preexec
        self._proc = None
        self._lines = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = None
        self._admin = None
        self._admin_channel = None

    # -- life cycle ------------------------------------------------------------

    def start(self):
        if WINEPREFIX:
            args = [os.path.join(_REPO, "scripts", "wine-run.sh"), WINEPREFIX,
                    os.path.join(BIN_DIR, "prismqd.exe")]
        else:
            args = [os.path.join(BIN_DIR, "prismqd")]
        args += ["--listen", "tcp://127.0.0.1:0", "--data-dir", self.data_dir]
        if self._config_yaml is not None:
            path = os.path.join(self.tmp, "prismq.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(self._config_yaml)
            args += ["--config", path]
        args += list(self._extra_args)
        env = dict(os.environ)
        for k, v in self._env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        preexec = None
        if self._nofile is not None or self._preexec is not None:
            import resource
            n, hook = self._nofile, self._preexec

            def preexec():
                if n is not None:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
                if hook is not None:
                    hook()
        if VALGRIND:
            args = VALGRIND_ARGS + args
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
        _live_servers.add(self._proc)
        self.pid = self._proc.pid
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            m = self.wait_log(r"listening on tcp://127\.0\.0\.1:(\d+)")
            self.wait_log(r"prismqd ready")
        except AssertionError as e:
            self._proc.kill()
            self._proc.wait()
            _live_servers.discard(self._proc)
            self._reader.join(WAIT)
            self._proc.stdout.close()
            raise RuntimeError("prismqd did not start: %s\n--- prismqd log ---\n%s"
                               % (e, self.log_text())) from None
        self.port = int(m.group(1))
        self.addr = "127.0.0.1:%d" % self.port
        return self

    def stop(self, sig=None):
        """Sends `sig` (default SIGTERM; SIGINT under Wine) and waits up to WAIT seconds for
        the exit.

        Returns the exit code (negative: killed by that signal). If the server does not
        exit in time it is killed and AssertionError is raised. Calling stop() again
        returns the same code.
        """
        if self._admin_channel is not None:
            self._admin_channel.close()
            self._admin_channel = None
            self._admin = None
        if self.returncode is not None or self._proc is None:
            return self.returncode
        if sig is None:
            sig = signal.SIGINT if WINEPREFIX else signal.SIGTERM
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise AssertionError("prismqd did not exit within %.0f s of signal %d"
                                 % (WAIT, sig)) from None
        finally:
            _live_servers.discard(self._proc)
        self._reader.join(WAIT)
        self._proc.stdout.close()
        self.returncode = self._proc.returncode
        return self.returncode

    def wait_exit(self, timeout=WAIT):
        """Waits up to `timeout` seconds for the server to exit by itself (after a
        signal sent with send_signal, say), sending nothing; then as stop(). Raises
        AssertionError if it is still running then (and kills it)."""
        if self.returncode is None and self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self.stop()
                raise AssertionError("prismqd did not exit within %.1f s" % timeout) from None
        return self.stop()

    def send_signal(self, sig):
        """Sends `sig` to the server, without waiting."""
        self._proc.send_signal(sig)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        code = self.stop()
        if exc_type is not None or code != 0:
            sys.stderr.write("--- prismqd log (exit %s) ---\n%s--- end ---\n"
                             % (code, self.log_text()))
        return False

    # -- log -----------------------------------------------------------------

    def _read_log(self):
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def log_text(self, start=0):
        """All output lines of the server (from line index `start`) as one string."""
        with self._cond:
            return "".join(self._lines[start:])

    def log_len(self):
        """Number of log lines so far (an index for log_text/wait_log)."""
        with self._cond:
            return len(self._lines)

    def wait_log(self, pattern, timeout=WAIT, start=0):
        """Waits until a log line (from index `start`) matches the regex `pattern`.

        Returns the re.Match. Raises AssertionError on timeout or if the server's output
        ends first.
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError("no log line matching %r (%s)" % (
                        pattern, "server output ended" if self._eof else "timed out"))
                self._cond.wait(left)

    # -- gRPC ----------------------------------------------------------------

    def channel(self):
        """A new grpc.insecure_channel to the server's TCP address (caller closes it).

        Each channel has its own connection: grpcio would otherwise share one between
        all channels of the process with the same target."""
        import grpc
        return grpc.insecure_channel(self.addr, options=[("grpc.use_local_subchannel_pool", 1)])

    def stats(self):
        """Admin/GetStats over a channel kept for the purpose; returns admin_pb2.Stats.

        The GetStats call counts itself: live_calls is at least 1, and live_connections
        includes this channel's connection."""
        pb = protos()
        if self._admin is None:
            self._admin_channel = self.channel()
            self._admin = pb.admin_pb2_grpc.AdminStub(self._admin_channel)
        return self._admin.GetStats(pb.admin_pb2.GetStatsRequest(), timeout=WAIT)

    def wait_stats(self, pred, timeout=WAIT):
        """Polls stats() until pred(stats) is true; returns those stats.

        For counters that have no event to wait on (a call freed after a cancel...).
        Raises AssertionError with the last stats on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() >= deadline:
                raise AssertionError("stats condition not met within %.1f s; last stats: %s"
                                     % (timeout, str(st).replace("\n", " ")))
            time.sleep(0.02)

    def wait_idle(self, timeout=WAIT):
        """wait_stats until no call is live but the GetStats call itself; returns the stats."""
        return self.wait_stats(lambda s: s.live_calls == 1, timeout)


class ServerTestCase(unittest.TestCase):
    """Base class: one Server for the whole class, built from `server_kwargs`.

    setUpClass starts cls.server; tearDownClass stops it and fails unless it exits 0.
    When a test fails, the server's log lines written during that test go to stderr.
    """

    server_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.server = Server(**cls.server_kwargs).start()

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        if code != 0:
            sys.stderr.write("--- prismqd log ---\n%s--- end ---\n" % cls.server.log_text())
        assert code == 0, "prismqd exited with %s" % code

    def run(self, result=None):
        start = self.server.log_len() if hasattr(self, "server") else 0
        bad = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and hasattr(self, "server") and \
                len(result.failures) + len(result.errors) > bad:
            sys.stderr.write("--- prismqd log during %s ---\n%s--- end ---\n"
                             % (self.id(), self.server.log_text(start)))
        return out
