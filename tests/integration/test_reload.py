#!/usr/bin/env python3
"""SIGHUP reloads the configuration: a valid file becomes the current snapshot (modules,
limits, authorization) while runs already taken keep theirs; a broken file is refused
with its line, and the old configuration stays."""

import os
import signal
import unittest

import grpc

from prismq_testlib import ServerTestCase
from runner_common import (COMPLETED, QUEUED, RUNNING, R, RunnerMixin, child_module,
                           config_yaml)


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


if __name__ == "__main__":
    unittest.main()
