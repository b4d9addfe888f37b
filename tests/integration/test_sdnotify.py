#!/usr/bin/env python3
"""prismqd as a systemd service (Type=notify), without systemd: the test plays the
service manager's part of the sd_notify(3) protocol, a datagram socket named by
NOTIFY_SOCKET, and checks what prismqd tells it and when.

  Notify       READY=1 arrives, and the listeners already accept connections then;
               SIGHUP gives RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, µs), then
               READY=1 once the reload is done, applied or refused; SIGTERM gives
               STOPPING=1. The same through an abstract socket ("@name"). A
               NOTIFY_SOCKET nobody listens on, or one that names no socket at all,
               does not keep the server from serving, and is said once in its log.
  ServiceFiles server/dist: the unit (as cmake configured it, ExecStart pointed at the
               built prismqd) passes `systemd-analyze verify`, stops slower than
               prismqd's own shutdown may take, and prismqd.yaml declares what the
               built-in configuration does, with every section of the format shown.

Every wait for a datagram is bounded by WAIT; nothing sleeps to synchronise.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import grpc

from prismq_testlib import BIN_DIR, WAIT, Server, protos, temp_dir

pb = protos()
H = pb.health_pb2
R = pb.runner_pb2

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("PRISMQ_BUILD", os.path.dirname(BIN_DIR))
DIST = os.path.join(REPO, "server", "dist")
CONFIG_H = os.path.join(REPO, "server", "config.h")
# As configured by server/CMakeLists.txt (configure_file of dist/prismqd.service.in).
UNIT = os.path.join(BUILD, "server", "dist", "prismqd.service")

MODULE_A = "modules:\n  - id: a\n    argv: [\"true\"]\n"
MODULE_B = MODULE_A + "  - id: b\n    argv: [\"true\"]\n"


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Manager:
    """The service manager's end: an AF_UNIX datagram socket at a path in `tmp`, or in
    the abstract namespace when `abstract` is true. .env is NOTIFY_SOCKET's value."""

    def __init__(self, tmp, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "prismq-test-notify-%d-%s" % (os.getpid(), os.path.basename(tmp))
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(tmp, "notify.sock")
            self.sock.bind(self.env)

    def recv(self, timeout=WAIT):
        """The next message as a dict of its assignments; fails the test after `timeout`."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise AssertionError("no notification within %.0f s" % timeout) from None
        return dict(line.split("=", 1) for line in data.decode().split("\n") if line)

    def pending(self):
        """Messages already waiting, without waiting for more."""
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096))
        except BlockingIOError:
            return out

    def close(self):
        self.sock.close()


def start_in_thread(srv):
    """Starts `srv` from another thread, so that this one can watch the notifications
    while it starts; returns a function that waits for the start and re-raises its
    error."""
    errors = []

    def run():
        try:
            srv.start()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join():
        t.join(WAIT * 2)
        if t.is_alive():
            raise AssertionError("Server.start did not return")
        if errors:
            raise errors[0]
    return join


class Notify(unittest.TestCase):

    def setUp(self):
        self.tmp = temp_dir()

    def health(self, target):
        with grpc.insecure_channel(target) as ch:
            return pb.health_pb2_grpc.HealthStub(ch).Check(H.HealthCheckRequest(service=""), timeout=WAIT)

    def reload(self, srv, mgr, text):
        """Writes the server's config file, sends SIGHUP and returns the two messages
        that follow (RELOADING, READY), checking MONOTONIC_USEC against the clock."""
        with open(os.path.join(srv.tmp, "prismq.yaml"), "w", encoding="utf-8") as f:
            f.write(text)
        before = monotonic_usec()
        srv.send_signal(signal.SIGHUP)
        reloading = mgr.recv()
        after = monotonic_usec()
        self.assertEqual(reloading.get("RELOADING"), "1", reloading)
        self.assertRegex(reloading.get("MONOTONIC_USEC", ""), r"^[0-9]+$", reloading)
        self.assertTrue(before <= int(reloading["MONOTONIC_USEC"]) <= after,
                        (before, reloading["MONOTONIC_USEC"], after))
        ready = mgr.recv()
        self.assertEqual(ready.get("READY"), "1", ready)
        return reloading, ready

    def test_ready_reload_stopping(self):
        mgr = Manager(self.tmp)
        self.addCleanup(mgr.close)
        sock_path = os.path.join(self.tmp, "prismq.sock")
        srv = Server(config_yaml=MODULE_A, extra_args=("--listen", "unix://" + sock_path),
                     env={"NOTIFY_SOCKET": mgr.env})
        self.addCleanup(srv.stop)
        join = start_in_thread(srv)
        ready = mgr.recv()
        # At once, before anything else: READY=1 promises a listener that accepts.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(WAIT)
            c.connect(sock_path)
        join()
        self.assertEqual(ready.get("READY"), "1", ready)
        self.assertIn("serving 1 modules", ready.get("STATUS", ""))
        self.assertEqual(self.health("unix:" + sock_path).status, H.HealthCheckResponse.SERVING)

        _, ready = self.reload(srv, mgr, MODULE_B)
        self.assertIn("serving 2 modules", ready.get("STATUS", ""))
        srv.wait_log(r"configuration reloaded modules=2")
        # A refused reload ends with READY=1 too: the old configuration still serves.
        _, ready = self.reload(srv, mgr, "modules: [\n")
        self.assertIn("refused", ready.get("STATUS", ""))
        srv.wait_log(r"configuration reload failed")
        self.assertEqual(self.health(srv.addr).status, H.HealthCheckResponse.SERVING)

        srv.send_signal(signal.SIGTERM)
        stopping = mgr.recv()
        self.assertEqual(stopping.get("STOPPING"), "1", stopping)
        self.assertEqual(srv.wait_exit(), 0)
        self.assertEqual(mgr.pending(), [])

    def test_abstract_socket(self):
        mgr = Manager(self.tmp, abstract=True)
        self.addCleanup(mgr.close)
        with Server(env={"NOTIFY_SOCKET": mgr.env}) as srv:
            self.assertEqual(mgr.recv().get("READY"), "1")
            self.assertEqual(self.health(srv.addr).status, H.HealthCheckResponse.SERVING)
            srv.send_signal(signal.SIGTERM)
            self.assertEqual(mgr.recv().get("STOPPING"), "1")
            self.assertEqual(srv.wait_exit(), 0)

    def test_nobody_listening_is_said_once(self):
        gone = os.path.join(self.tmp, "nobody.sock")
        with Server(env={"NOTIFY_SOCKET": gone}) as srv:
            mark = srv.log_len()
            srv.send_signal(signal.SIGHUP)
            srv.wait_log(r"configuration reloaded", start=mark)
            self.assertEqual(self.health(srv.addr).status, H.HealthCheckResponse.SERVING)
            self.assertEqual(srv.stop(), 0)
        # READY, RELOADING, READY and STOPPING all failed: one line.
        self.assertEqual(srv.log_text().count("cannot notify the service manager"), 1, srv.log_text())

    def test_not_a_socket_address(self):
        with Server(env={"NOTIFY_SOCKET": "relative/path"}) as srv:
            srv.wait_log(r"NOTIFY_SOCKET=relative/path is neither an absolute path nor @name")
            self.assertEqual(self.health(srv.addr).status, H.HealthCheckResponse.SERVING)


def unit_settings(path):
    """The unit file's assignments: {key: [values in order]}."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and line[0] not in "#;[" and "=" in line:
                k, v = line.split("=", 1)
                out.setdefault(k.strip(), []).append(v.strip())
    return out


class ServiceFiles(unittest.TestCase):

    def test_unit_verifies(self):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze is not installed (package systemd)")
        with open(UNIT, encoding="utf-8") as f:
            text = f.read()
        # Where cmake --install would put prismqd may hold nothing yet: the built one.
        prismqd = os.path.abspath(os.path.join(BIN_DIR, "prismqd"))
        text, n = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=" + prismqd, text)
        self.assertEqual(n, 1)
        tmp = temp_dir()
        path = os.path.join(tmp, "prismqd.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        # --man=no: prismqd(8) is not installed here (the package test checks it is).
        r = subprocess.run([analyze, "verify", "--man=no", path], capture_output=True, text=True,
                           timeout=WAIT * 3)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip(), "", "systemd-analyze verify warns")

    def test_unit_settings(self):
        u = unit_settings(UNIT)
        self.assertEqual(u["Type"], ["notify"])
        self.assertEqual(u["Delegate"], ["yes"])
        self.assertEqual(u["KillMode"], ["mixed"])
        self.assertNotIn("ProtectControlGroups", u)
        self.assertNotIn("MemoryDenyWriteExecute", u)
        argv = u["ExecStart"][0].split()
        self.assertEqual(os.path.basename(argv[0]), "prismqd")
        self.assertEqual(argv[1], "--config")
        self.assertTrue(argv[2].endswith("/prismq/prismqd.yaml"), argv)
        # Every option of ExecStart is one prismqd takes.
        usage = subprocess.run([os.path.join(BIN_DIR, "prismqd"), "--help"], capture_output=True,
                               text=True, timeout=WAIT).stdout
        for opt in (a for a in argv if a.startswith("-")):
            self.assertIn(opt + " ", usage)
        # systemd must not kill prismqd before its own shutdown is over: grace_ms, then
        # 5 s for cancelled runs, then 5 s of margin (server/main.c).
        grace_ms = 30000
        m = re.search(r"(?m)^shutdown:.*grace_ms:\s*([0-9]+)", self.yaml())
        if m:
            grace_ms = int(m.group(1))
        stop = re.fullmatch(r"([0-9]+)(s|min)?", u["TimeoutStopSec"][0])
        stop_s = int(stop.group(1)) * (60 if stop.group(2) == "min" else 1)
        self.assertGreater(stop_s * 1000, grace_ms + 10000)
        self.assertEqual(u["StateDirectory"], ["prismq"])
        self.assertRegex(self.yaml(), r"(?m)^data_dir: /var/lib/prismq$")

    def yaml(self):
        with open(os.path.join(DIST, "prismqd.yaml"), encoding="utf-8") as f:
            return f.read()

    def test_yaml_shows_every_section(self):
        # The top-level keys of the format in config.h's header comment.
        with open(CONFIG_H, encoding="utf-8") as f:
            keys = re.findall(r"(?m)^ \*   ([a-z_]+):", f.read())
        self.assertIn("listen", keys)
        text = self.yaml()
        for k in keys:
            self.assertRegex(text, r"(?m)^#?%s:" % k, "prismqd.yaml does not show %s" % k)

    def modules(self, srv):
        with srv.channel() as ch:
            stub = pb.runner_pb2_grpc.RunnerStub(ch)
            return list(stub.ListModules(R.ListModulesRequest(), timeout=WAIT).modules)

    def test_yaml_declares_the_builtin_configuration(self):
        with Server() as builtin:
            want = self.modules(builtin)
        # prismqd.yaml with the test's own data directory and port (Server's options).
        with Server(config_yaml=self.yaml()) as shipped:
            got = self.modules(shipped)
        self.assertEqual(got, want)
        self.assertRegex(self.yaml(), r'(?m)^listen: \["tcp://127\.0\.0\.1:50051"\]$')
        self.assertRegex(self.yaml(), r"(?m)^  max_concurrent: 8\b")


if __name__ == "__main__":
    unittest.main()
