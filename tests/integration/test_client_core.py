"""The C client core (client/gclient.c) against a real prismqd, through the gcl_probe
helper (tests/integration/gcl_probe.c): unary calls, many calls on one connection,
streaming calls ended by the client and by a deadline, unknown methods, refused
connections, unix sockets, and a run under valgrind."""

import os
import shutil
import socket
import subprocess
import unittest

from prismq_testlib import WAIT, ServerTestCase, temp_dir

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBE = os.path.join(os.environ.get("PRISMQ_TESTBIN", os.path.join(_REPO, "build", "tests")),
                     "gcl_probe")
VALGRIND = shutil.which("valgrind")


def _asan_build():
    """True if gcl_probe was built with -DASAN=ON (valgrind cannot run those)."""
    try:
        with open(PROBE, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SOCK = os.path.join(temp_dir("prismq-sock-"), "prismqd.sock")


def probe(target, *args, wrapper=(), timeout=WAIT):
    """Runs gcl_probe TARGET args...; returns the CompletedProcess (text output)."""
    return subprocess.run(list(wrapper) + [PROBE, target] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


class ProbeCase(ServerTestCase):
    def wait_released(self):
        """Waits until the server holds no call but the GetStats one and no connection
        but the stats channel's: the probe's resets and its close reached it."""
        self.server.wait_stats(lambda s: s.live_calls == 1 and s.live_connections == 1)

    def assertProbe(self, expected, target, *args, **kw):
        r = probe(target, *args, **kw)
        self.assertEqual(r.returncode, 0, "gcl_probe %s: exit %d, stderr: %s"
                         % (" ".join(map(str, args)), r.returncode, r.stderr))
        self.assertEqual(r.stdout, expected + "\n")
        return r


class ClientCoreTcp(ProbeCase):
    def test_check(self):
        self.assertProbe("SERVING", self.server.addr, "check")

    def test_many_calls_one_connection(self):
        self.assertProbe("ok 300", self.server.addr, "loop", 300)

    def test_watch_cancelled_by_client(self):
        self.assertProbe("CANCELLED", self.server.addr, "watch-cancel")
        self.wait_released()

    def test_watch_deadline(self):
        self.assertProbe("DEADLINE_EXCEEDED", self.server.addr, "deadline", 300)
        self.wait_released()

    def test_unknown_method(self):
        self.assertProbe("UNIMPLEMENTED", self.server.addr, "unknown")

    def test_localhost_target(self):
        self.assertProbe("SERVING", "localhost:%d" % self.server.port, "check")

    def test_connection_refused(self):
        # A bound socket that does not listen: connecting to it is refused, and no
        # other process can take the port meanwhile.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            target = "127.0.0.1:%d" % s.getsockname()[1]
            r = probe(target, "check")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, "")
        self.assertIn("UNAVAILABLE", r.stderr)
        self.assertIn("refused", r.stderr)
        self.assertIn(target, r.stderr)

    def test_bad_target(self):
        r = probe("no-such-host.invalid:80", "check")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot resolve host no-such-host.invalid", r.stderr)
        r = probe("http://127.0.0.1:80", "check")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("http://127.0.0.1:80", r.stderr)

    @unittest.skipUnless(VALGRIND, "valgrind not installed")
    @unittest.skipIf(_asan_build(), "an ASan build does not run under valgrind")
    def test_valgrind_clean(self):
        vg = (VALGRIND, "-q", "--error-exitcode=99", "--leak-check=full")
        for args, expected in ((("loop", 20), "ok 20"), (("watch-cancel",), "CANCELLED"),
                               (("deadline", 200), "DEADLINE_EXCEEDED")):
            with self.subTest(args=args):
                self.assertProbe(expected, self.server.addr, *args, wrapper=vg, timeout=120)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            r = probe("127.0.0.1:%d" % s.getsockname()[1], "check", wrapper=vg, timeout=120)
        self.assertEqual(r.returncode, 1, r.stderr)  # 99 would be a valgrind error
        self.wait_released()


class ClientCoreUnix(ProbeCase):
    server_kwargs = {"extra_args": ("--listen", "unix://" + SOCK)}

    def test_check_over_unix_socket(self):
        self.assertProbe("SERVING", "unix:" + SOCK, "check")

    def test_watch_cancel_over_unix_socket(self):
        self.assertProbe("CANCELLED", "unix:" + SOCK, "watch-cancel")
        self.wait_released()

    def test_missing_socket(self):
        path = SOCK + ".missing"
        r = probe("unix:" + path, "check")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UNAVAILABLE", r.stderr)
        self.assertIn(path, r.stderr)


if __name__ == "__main__":
    unittest.main()
