#!/usr/bin/env python3
"""SIGHUP reloads the configuration: a valid file becomes the current snapshot (modules,
limits, authorization) while runs already taken keep theirs; a broken file is refused
with its line, and the old configuration stays."""

import json
import os
import signal
import socket
import subprocess
import unittest

import grpc

from prismq_testlib import BIN_DIR, VALGRIND, VALGRIND_ARGS, WAIT, ServerTestCase, protos, temp_dir
from runner_common import (COMPLETED, QUEUED, RUNNING, R, RunnerMixin, child_module,
                           config_yaml, poll_until)

pb = protos()
H = pb.health_pb2


class Reload(RunnerMixin, ServerTestCase):
    MODE = "async"

    def reload(self, srv, text, expect):
        """Writes `text` as the server's config file, sends SIGHUP and waits for the log
        line matching `expect`; returns the match."""
        with open(os.path.join(srv.tmp, "prismq.yaml"), "w", encoding="utf-8") as f:
            f.write(text)
        mark = srv.log_text().count("\n")
        os.kill(srv.pid, signal.SIGHUP)
        return srv.wait_log(expect, start=mark)

    def modules(self, c):
        return sorted(m.id for m in c.stub.ListModules(R.ListModulesRequest()).modules)

    def test_good_file_applies_and_running_runs_keep_their_module(self):
        srv = self.own_server(config_yaml([child_module("a")], max_concurrent=1))
        c = self.client(srv)
        g = self.gate()
        running = c.start("a", "gate", g.path)
        conn, _ = g.accept()
        queued = c.start("a", "ok")
        self.assertStatus(queued, QUEUED)

        # Module a goes, b comes, and two runs may run at once.
        self.reload(srv, config_yaml([child_module("b")], max_concurrent=2),
                    r"configuration reloaded modules=1")
        self.assertEqual(self.modules(c), ["b"])
        self.assertCode(grpc.StatusCode.NOT_FOUND, c.start, "a", "ok", mentions=['"a"'])
        self.assertStatus(c.wait(c.start("b", "ok").run_id), COMPLETED)
        # The runs of a were taken under the old snapshot: the queued one starts with
        # the new limit, the running one goes on, and both finish.
        self.assertStatus(c.wait(queued.run_id), COMPLETED)
        self.assertStatus(c.get(running.run_id), RUNNING)
        g.release(conn)
        self.assertStatus(c.wait(running.run_id), COMPLETED)

    def test_broken_file_keeps_the_old_configuration(self):
        srv = self.own_server(config_yaml([child_module("a")]))
        c = self.client(srv)
        m = self.reload(srv, "modules:\n  - id: b\n    argv: [x]\n    agrv: [y]\n",
                        r"configuration reload failed, keeping the current one: (.*)")
        self.assertRegex(m.group(1), r"prismq\.yaml:4: modules\[0\]: unknown key \"agrv\"")
        self.assertEqual(self.modules(c), ["a"])
        self.assertStatus(c.wait(c.start("a", "ok").run_id), COMPLETED)
        # A later good file still applies.
        self.reload(srv, config_yaml([child_module("a"), child_module("c")]),
                    r"configuration reloaded modules=2")
        self.assertEqual(self.modules(c), ["a", "c"])



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(target):
    """True if a Health/Check on `target` (a gRPC target) answers SERVING."""
    try:
        with grpc.insecure_channel(target) as ch:
            resp = pb.health_pb2_grpc.HealthStub(ch).Check(H.HealthCheckRequest(), timeout=2)
        return resp.status == H.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


class Listeners(unittest.TestCase):
    """Without --listen, the configuration's listen addresses follow a reload."""

    def test_added_and_removed(self):
        tmp = temp_dir()
        cfg, log = os.path.join(tmp, "prismq.yaml"), os.path.join(tmp, "log")
        tcp = "127.0.0.1:%d" % free_port()
        sock = os.path.join(tmp, "s.sock")

        def write(listen):
            with open(cfg, "w", encoding="utf-8") as f:
                json.dump({"listen": listen, "modules": []}, f)
        write(["tcp://" + tcp])
        args = [os.path.join(BIN_DIR, "prismqd"), "--config", cfg, "--data-dir", os.path.join(tmp, "var")]
        with open(log, "wb") as out:
            p = subprocess.Popen((VALGRIND_ARGS if VALGRIND else []) + args, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: serving(tcp), "tcp listener", timeout=WAIT)
            write(["tcp://" + tcp, "unix://" + sock])
            p.send_signal(signal.SIGHUP)
            poll_until(lambda: serving("unix:" + sock), "unix listener added", timeout=WAIT)
            self.assertTrue(serving(tcp))
            write(["unix://" + sock])
            p.send_signal(signal.SIGHUP)
            poll_until(lambda: not serving(tcp), "tcp listener removed", timeout=WAIT)
            self.assertTrue(serving("unix:" + sock))
            # A listener that cannot be opened: the whole reload is refused.
            write(["unix://" + sock, "tcp://192.0.2.1:1"])
            p.send_signal(signal.SIGHUP)
            def refused():
                with open(log, "rb") as f:
                    return b"configuration reload failed" in f.read()
            poll_until(refused, "reload refused", timeout=WAIT)
            self.assertTrue(serving("unix:" + sock))
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(WAIT), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    unittest.main()
