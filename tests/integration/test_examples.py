"""The example clients in scripts/examples/ against a real prismqd: the Python one
(Debian's grpcio, stubs generated at run time) and the Node.js one (@grpc/grpc-js and
@grpc/proto-loader, installed with `npm ci` into a temporary copy unless
node_modules is already there). The Node tests are skipped only when node is not
installed. Each example is also run over TLS with a client certificate, against a
prismqd that requires one (certificates from scripts/gen-dev-certs.sh)."""

import functools
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import unittest

import grpc

from prismq_testlib import PROTO_DIR, WAIT, Server, ServerTestCase, protos, temp_dir

R = protos().runner_pb2
RunnerStub = protos().runner_pb2_grpc.RunnerStub

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "examples"))
PY_CLIENT = os.path.join(EXAMPLES, "python_client.py")
NODE_DIR = os.path.join(EXAMPLES, "node")
GEN_CERTS = os.path.abspath(os.path.join(EXAMPLES, "..", "gen-dev-certs.sh"))
# One example invocation: protoc or proto-loader, a connection and a short run.
RUN_BOUND = 60
NPM_BOUND = 240

STATUS_RX = re.compile(r"^run (\S+) (\w+) exit_code=(-?\d+)", re.M)
STARTED_RX = re.compile(r"^started run (\S+)$", re.M)
CANNOT_ACCESS = b"ls: cannot access '/nonexistent'"


def final_status(stderr):
    """(run_id, STATUS, exit_code) of the example's last status line."""
    found = STATUS_RX.findall(stderr.decode("utf-8", "replace"))
    assert found, "no status line in stderr: %r" % stderr
    run_id, status, code = found[-1]
    return run_id, status, int(code)


class ExampleCase(ServerTestCase):
    """Runs an example as a subprocess; the server runs on the built-in config."""

    def example(self, argv, env=None):
        """Runs argv (bounded) with env added to ours, less any PRISMQ_TLS_* of ours;
        returns the CompletedProcess with bytes stdout/stderr."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRISMQ_TLS_")}
        full_env.update(env or {}, PRISMQ_PROTO=PROTO_DIR)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=full_env,
                              timeout=RUN_BOUND)

    def channel(self):
        """A new channel to the server (caller closes it)."""
        return self.server.channel()

    def assert_run_recorded(self, run_id, status):
        """The server agrees with what the example printed; returns its Run."""
        with self.channel() as ch:
            run = RunnerStub(ch).GetRun(R.GetRunRequest(run_id=run_id), timeout=WAIT)
        self.assertEqual(R.RunStatus.Name(run.status), "RUN_STATUS_" + status)
        return run


class PythonExample(ExampleCase):

    def py(self, *args, env=None):
        return self.example(["/usr/bin/python3", PY_CLIENT] + list(args), env)

    def test_run_follows_stdout_and_reports_completed(self):
        p = self.py("--target", self.server.addr, "run", "count", "n=5", "--label", "from=example")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"1\n2\n3\n4\n5\n")
        run_id, status, code = final_status(p.stderr)
        self.assertEqual((status, code), ("COMPLETED", 0))
        self.assertEqual(STARTED_RX.search(p.stderr.decode()).group(1), run_id)
        run = self.assert_run_recorded(run_id, "COMPLETED")
        self.assertEqual((dict(run.parameters), dict(run.labels)), ({"n": "5"}, {"from": "example"}))

    def test_target_from_environment(self):
        p = self.py("run", "echo", "message=from env", env={"PRISMQ_TARGET": self.server.addr})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"from env\n")

    def test_binary_output_is_copied_exactly(self):
        # Far more than one output chunk, all zero bytes: nothing may be decoded as text.
        p = self.py("--target", self.server.addr, "run", "emit", "bytes=300000")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"\0" * 300000)

    def test_stderr_goes_to_stderr_and_failure_exits_1(self):
        p = self.py("--target", self.server.addr, "run", "fail")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, b"")
        self.assertIn(CANNOT_ACCESS, p.stderr)
        run_id, status, code = final_status(p.stderr)
        self.assertEqual(status, "FAILED")
        self.assertNotEqual(code, 0)
        self.assert_run_recorded(run_id, "FAILED")

    def test_cancel_path(self):
        p = self.py("--target", self.server.addr, "cancel", "--seconds", "300", "--grace-ms", "2000")
        self.assertEqual(p.returncode, 0, p.stderr)
        run_id, status, _ = final_status(p.stderr)
        self.assertEqual(status, "CANCELLED")
        self.assertEqual(STARTED_RX.search(p.stderr.decode()).group(1), run_id)
        self.assert_run_recorded(run_id, "CANCELLED")

    def test_grpc_error_is_reported_with_its_code(self):
        p = self.py("--target", self.server.addr, "run", "no-such-module")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"error: NOT_FOUND:", p.stderr)
        self.assertIn(b"no-such-module", p.stderr)

    def test_modules_lists_the_demo_modules(self):
        p = self.py("--target", self.server.addr, "modules")
        self.assertEqual(p.returncode, 0, p.stderr)
        ids = [line.split("\t")[0] for line in p.stdout.decode().splitlines() if not line.startswith(" ")]
        self.assertEqual(ids, ["echo", "emit", "sleep", "count", "fail", "list", "secret",
                               "progress", "stages"])


# A module that writes a line, then waits to be cancelled: output seen before the run
# ends proves the example follows live rather than replaying at the end.
LIVE_CONFIG = json.dumps({"modules": [
    {"id": "tick", "argv": ["sh", "-c", "echo first; exec sleep 300"]}]})


def read_lines(f, q):
    for line in f:
        q.put(line)


class PythonExampleLive(unittest.TestCase):

    def test_output_arrives_while_the_run_is_running(self):
        sock = os.path.join(temp_dir(), "prismq.sock")
        with Server(config_yaml=LIVE_CONFIG, extra_args=("--listen", "unix://" + sock)) as srv:
            # Over the unix socket, the other transport the docs promise.
            p = subprocess.Popen(["/usr/bin/python3", PY_CLIENT, "--target", "unix://" + sock,
                                  "--proto-dir", PROTO_DIR, "run", "tick"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                lines = queue.Queue()
                threading.Thread(target=read_lines, args=(p.stdout, lines), daemon=True).start()
                self.assertEqual(lines.get(timeout=RUN_BOUND), b"first\n")
                with srv.channel() as ch:
                    stub = RunnerStub(ch)
                    runs = stub.ListRuns(R.ListRunsRequest(module_id="tick"), timeout=WAIT).runs
                    self.assertEqual(len(runs), 1)
                    self.assertEqual(runs[0].status, R.RUN_STATUS_RUNNING)
                    stub.CancelRun(R.CancelRunRequest(run_id=runs[0].run_id, grace_ms=2000), timeout=WAIT)
                self.assertEqual(p.wait(timeout=RUN_BOUND), 1)
                err = p.stderr.read()
                self.assertEqual(final_status(err)[:2], (runs[0].run_id, "CANCELLED"))
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                p.stdout.close()
                p.stderr.close()


@functools.cache
def node_install():
    """The directory to run client.js from, with its dependencies installed.

    Uses scripts/examples/node itself when node_modules is there; otherwise copies
    package.json, package-lock.json and client.js to a temporary directory and runs
    `npm ci` there (once per process), so the tree stays clean. Raises
    unittest.SkipTest if node is not installed, AssertionError if npm is missing or fails.
    """
    if shutil.which("node") is None:
        raise unittest.SkipTest("node is not installed: the Node.js example is not tested "
                                "(scripts/examples/node needs node >= 18 and npm)")
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        return NODE_DIR
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not: cannot install the example's dependencies"
    work = temp_dir("prismq-node-")
    for f in ("package.json", "package-lock.json", "client.js"):
        shutil.copy(os.path.join(NODE_DIR, f), work)
    p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=work, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=NPM_BOUND)
    assert p.returncode == 0, "npm ci failed (exit %d):\n%s%s" % (
        p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))
    return work


class NodeExample(ExampleCase):

    @classmethod
    def setUpClass(cls):
        cls.node_dir = node_install()  # before the server: a skip leaves nothing to stop
        super().setUpClass()

    def node(self, *args):
        return self.example(["node", os.path.join(self.node_dir, "client.js"),
                             "--target", self.server.addr] + list(args))

    def test_start_follow_wait(self):
        p = self.node("count", "n=5")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"1\n2\n3\n4\n5\n")
        run_id, status, code = final_status(p.stderr)
        self.assertEqual((status, code), ("COMPLETED", 0))
        self.assert_run_recorded(run_id, "COMPLETED")

    def test_binary_output_is_copied_exactly(self):
        p = self.node("emit", "bytes=300000")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"\0" * 300000)

    def test_stderr_and_failure(self):
        p = self.node("fail")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, b"")
        self.assertIn(CANNOT_ACCESS, p.stderr)
        run_id, status, _ = final_status(p.stderr)
        self.assertEqual(status, "FAILED")
        self.assert_run_recorded(run_id, "FAILED")

    def test_grpc_error_is_reported_with_its_code(self):
        p = self.node("no-such-module")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"error: NOT_FOUND:", p.stderr)


@functools.cache
def dev_certs():
    """A temporary directory with scripts/gen-dev-certs.sh's certificates, made once."""
    d = temp_dir("prismq-certs-")
    p = subprocess.run([GEN_CERTS, d], stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_BOUND)
    assert p.returncode == 0, "gen-dev-certs.sh failed: %s" % p.stderr.decode("utf-8", "replace")
    return d


def cert(name):
    """The path of one of dev_certs()'s files."""
    return os.path.join(dev_certs(), name)


def read(name):
    """The content of one of dev_certs()'s files."""
    with open(cert(name), "rb") as f:
        return f.read()


class TlsExampleCase(ExampleCase):
    """A server that serves TLS and requires a client certificate signed by the dev CA.

    Server() always listens on tcp://127.0.0.1:0 from the command line, which replaces a
    config's listen list, so the TLS listener comes from the command line too.
    Attributes: tls_addr ("127.0.0.1:PORT" of the TLS listener)."""

    @classmethod
    def setUpClass(cls):
        cls.server_kwargs = {"extra_args": ("--listen", "tls://127.0.0.1:0"), "config_yaml": json.dumps({
            "tls": {"cert": cert("server.pem"), "key": cert("server.key"), "client_ca": cert("ca.pem"),
                    "require_client_cert": True},
            "modules": [{"id": "count", "argv": ["seq", "1", "{n}"],
                         "parameters": [{"name": "n", "required": True}]}]})}
        super().setUpClass()
        port = cls.server.wait_log(r"listening on tls://127\.0\.0\.1:(\d+)").group(1)
        cls.tls_addr = "127.0.0.1:" + port

    def channel(self):
        # As client2: the owner a run keeps is who started it, not who asks.
        creds = grpc.ssl_channel_credentials(read("ca.pem"), read("client2.key"), read("client2.pem"))
        return grpc.secure_channel(self.tls_addr, creds, options=[("grpc.use_local_subchannel_pool", 1)])


class TlsTests:
    """The TLS tests, mixed into a TlsExampleCase per example whose
    client(options, [MODULE, NAME=VALUE...], env=None) runs the example's start-and-follow."""

    def assert_count_3_by_client1(self, p):
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"1\n2\n3\n")
        run_id, status, code = final_status(p.stderr)
        self.assertEqual((status, code), ("COMPLETED", 0))
        run = self.assert_run_recorded(run_id, "COMPLETED")
        self.assertEqual(run.owner, "spiffe://prismq/client1")

    def test_tls_with_client_certificate(self):
        p = self.client(["--target", "tls://" + self.tls_addr, "--tls-ca", cert("ca.pem"),
                         "--tls-cert", cert("client1.pem"), "--tls-key", cert("client1.key")], ["count", "n=3"])
        self.assert_count_3_by_client1(p)

    def test_tls_options_from_environment(self):
        # A plain HOST:PORT target: the TLS variables alone make the connection TLS.
        env = {"PRISMQ_TLS_CA": cert("ca.pem"), "PRISMQ_TLS_CERT": cert("client1.pem"),
               "PRISMQ_TLS_KEY": cert("client1.key"), "PRISMQ_TLS_SERVER_NAME": "localhost"}
        self.assert_count_3_by_client1(self.client(["--target", self.tls_addr], ["count", "n=3"], env))

    def test_tls_without_client_certificate_is_unavailable(self):
        p = self.client(["--target", "tls://" + self.tls_addr, "--tls-ca", cert("ca.pem")], ["count", "n=3"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"error: UNAVAILABLE", p.stderr)
        self.assertNotRegex(p.stderr.decode("utf-8", "replace"), STARTED_RX)
        self.assertEqual(p.stdout, b"")


class PythonExampleTls(TlsTests, TlsExampleCase):

    def client(self, options, run_args, env=None):
        return self.example(["/usr/bin/python3", PY_CLIENT] + options + ["run"] + run_args, env)


class NodeExampleTls(TlsTests, TlsExampleCase):

    @classmethod
    def setUpClass(cls):
        cls.node_dir = node_install()  # before the server: a skip leaves nothing to stop
        super().setUpClass()

    def client(self, options, run_args, env=None):
        return self.example(["node", os.path.join(self.node_dir, "client.js")] + options + run_args, env)


if __name__ == "__main__":
    unittest.main()
