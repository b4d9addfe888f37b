"""Runner API contract, independent of how processes are waited for: ListModules,
request validation and its status codes, run ids, request_id idempotency, ListRuns
(order, filters, paging), the queue limit, dry-run mode and a bad PRISMQ_RUN_MODE."""

import base64
import os
import signal
import subprocess
import unittest

import grpc

from prismq_testlib import BIN_DIR, WAIT, ServerTestCase, temp_dir
from runner_common import (CANCELLED, CHILD, COMPLETED, PY, QUEUED, RUNNING, STDOUT, R,
                           RunnerMixin, child_module, config_yaml, mode_env)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

STRICT = {"id": "strict", "name": "Strict one", "description": "checks its parameters",
          "argv": [PY, CHILD, "argv", "{count}", "{speed}"],
          "timeout_ms": 60000, "max_concurrent": 3,
          "parameters": [
              {"name": "count", "required": True, "pattern": "[0-9]+",
               "description": "how many"},
              {"name": "speed", "default": "fast", "pattern": "fast|slow"},
              {"name": "note", "default": "n/a"}]}
TRUE = {"id": "true", "argv": ["/bin/true"]}
TOUCH = {"id": "touch", "argv": ["/usr/bin/touch", "{path}"],
         "parameters": [{"name": "path", "required": True}]}

MODULES = [child_module("child"), STRICT, TRUE, TOUCH]

# Well-formed (26 Crockford base32 characters, like every run id) but never issued.
UNKNOWN_RUN = "0" * 26


class Api(RunnerMixin, ServerTestCase):
    server_kwargs = {"config_yaml": config_yaml(MODULES), "env": mode_env("async")}

    def test_list_modules(self):
        mods = self.c.stub.ListModules(R.ListModulesRequest(), timeout=WAIT).modules
        self.assertEqual([m.id for m in mods], [m["id"] for m in MODULES])
        strict = mods[1]
        self.assertEqual((strict.name, strict.description, strict.timeout_ms,
                          strict.max_concurrent), ("Strict one", "checks its parameters", 60000, 3))
        self.assertEqual([(p.name, p.required, p.default_value, p.pattern, p.description)
                          for p in strict.parameters],
                         [("count", True, "", "[0-9]+", "how many"),
                          ("speed", False, "fast", "fast|slow", ""),
                          ("note", False, "n/a", "", "")])
        true = mods[2]
        self.assertEqual((true.name, true.timeout_ms, true.max_concurrent, len(true.parameters)),
                         ("true", 0, 0, 0))

    def test_start_run_answer_and_sortable_ids(self):
        run = self.c.start("strict", params={"count": "5"}, labels={"k": "v"},
                           request_id="answer-1")
        self.assertIn(run.status, (QUEUED, RUNNING))
        self.assertEqual((run.module_id, run.request_id, dict(run.labels)),
                         ("strict", "answer-1", {"k": "v"}))
        self.assertEqual(run.parameters["count"], "5")
        self.assertGreater(run.created_at_ms, 0)
        ids = [self.c.start("true").run_id for _ in range(20)]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 20)
        self.assertGreater(ids[0], run.run_id)

    def test_unknown_module(self):
        self.assertCode(NOT_FOUND, self.c.start, "no-such-module", mentions=["no-such-module"])

    def test_unicode_parameters_and_labels_round_trip(self):
        params = {"count": "3", "note": "\u00fcn\u00efc\u00f6de \u2603 \U0001f600"}
        labels = {"k\u00e9y": "v\u00e4lue \u2603"}
        run = self.c.wait(self.c.start("strict", params=params, labels=labels).run_id)
        self.assertStatus(run, COMPLETED)
        self.assertEqual(run.parameters["note"], params["note"])
        self.assertEqual(dict(run.labels), labels)
        self.assertEqual([r.run_id for r in self.c.list(labels=labels).runs], [run.run_id])

    def test_parameter_errors(self):
        before = len(self.c.list(module_id="strict", page_size=1000).runs)
        cases = [  # (parameters, the parameter the error must name)
            ({"count": "1", "bogus": "x"}, "bogus"),
            ({}, "count"),
            ({"speed": "slow"}, "count"),
            ({"count": "12a"}, "count"),
            ({"count": "a12"}, "count"),
            ({"count": ""}, "count"),
            ({"count": "1\n2"}, "count"),
            ({"count": "1", "speed": "medium"}, "speed"),
            ({"count": "1", "speed": "slowly"}, "speed"),    # whole value, not a prefix
            ({"count": "1", "speed": "fastslow"}, "speed"),
            ({"count": "1", "speed": "xfast"}, "speed"),
        ]
        for params, name in cases:
            with self.subTest(params=params):
                self.assertCode(INVALID, self.c.start, "strict", params=params, mentions=[name])
        with self.assertRaises(grpc.RpcError) as cm:  # no module: either answer is fair
            self.c.start("")
        self.assertIn(cm.exception.code(), (INVALID, NOT_FOUND))
        # None of these made a run; valid values do.
        self.assertEqual(len(self.c.list(module_id="strict", page_size=1000).runs), before)
        for params in ({"count": "0"}, {"count": "123", "speed": "slow"}):
            self.assertStatus(self.c.wait(self.c.start("strict", params=params).run_id),
                              COMPLETED)

    def test_parameter_value_with_nul_byte(self):
        # A C string would end at the NUL: the value must be refused, not cut short.
        self.assertCode(INVALID, self.c.start, "strict", params={"count": "1", "note": "a\x00b"})

    def test_empty_values_are_values(self):
        # grpcio encodes an empty map value explicitly (a zero-length field 2).
        run = self.c.start("strict", params={"count": "1", "note": ""}, labels={"empty": ""})
        self.assertEqual((run.parameters["note"], dict(run.labels)), ("", {"empty": ""}))
        done = self.c.wait(run.run_id)
        self.assertStatus(done, COMPLETED)
        self.assertEqual(self.c.output(run.run_id)[0], b'["1", "fast"]\n')
        self.assertEqual([r.run_id for r in self.c.list(labels={"empty": ""}).runs],
                         [run.run_id])

    def test_unknown_run_ids(self):
        for run_id in (UNKNOWN_RUN, "no-such-run", "x" * 500):
            with self.subTest(run_id=run_id[:30]):
                self.assertCode(NOT_FOUND, self.c.get, run_id)
                self.assertCode(NOT_FOUND, self.c.stub.WaitRun,
                                R.WaitRunRequest(run_id=run_id, timeout_ms=100), timeout=WAIT)
                self.assertCode(NOT_FOUND, self.c.cancel, run_id)
                self.assertCode(NOT_FOUND, self.c.chunks, run_id)
                self.assertCode(NOT_FOUND, self.c.chunks, run_id, follow=True)

    def test_request_id_idempotency(self):
        p = {"count": "7"}
        first = self.c.start("strict", params=p, request_id="idem-1")
        again = self.c.start("strict", params=p, request_id="idem-1")
        self.assertEqual(again.run_id, first.run_id)
        done = self.c.wait(first.run_id)
        self.assertEqual(self.c.start("strict", params=p, request_id="idem-1"), done)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.c.start, "strict",
                        params={"count": "8"}, request_id="idem-1")
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.c.start, "child", action="ok",
                        request_id="idem-1")
        # Racing duplicates make one run.
        req = R.StartRunRequest(module_id="strict", parameters=p, request_id="idem-race",
                                labels={"race": "1"})
        futs = [self.c.stub.StartRun.future(req, timeout=WAIT) for _ in range(20)]
        ids = {f.result().run_id for f in futs}
        self.assertEqual(len(ids), 1)
        self.c.started.extend(ids)
        self.assertEqual(len(self.c.list(labels={"race": "1"}).runs), 1)
        # A different request_id is a different run.
        self.assertNotEqual(self.c.start("strict", params=p, request_id="idem-2").run_id,
                            first.run_id)

    def test_list_runs_order_and_filters(self):
        lab = {"suite": "filters"}
        a = self.c.wait(self.c.start("true", labels=dict(lab, kind="a")).run_id)
        b = self.c.wait(self.c.start("child", "exit", 1, labels=dict(lab, kind="b")).run_id)
        c = self.c.wait(self.c.start("strict", params={"count": "1"},
                                     labels=dict(lab, kind="a", extra="y")).run_id)
        d = self.c.start("child", "sleep", 30, labels=dict(lab, kind="d"))
        self.assertStatus(self.c.cancel(d.run_id), CANCELLED)

        def ids(**kw):
            return [r.run_id for r in self.c.list(**kw).runs]

        everything = ids(labels=lab)
        self.assertEqual(everything, [d.run_id, c.run_id, b.run_id, a.run_id])  # newest first
        self.assertEqual(ids(labels=dict(lab, kind="a")), [c.run_id, a.run_id])
        self.assertEqual(ids(labels=dict(lab, kind="a", extra="y")), [c.run_id])
        self.assertEqual(ids(labels=dict(lab, kind="a", extra="n")), [])
        self.assertEqual(ids(labels=dict(lab, missing="a")), [])
        self.assertEqual(ids(labels=lab, module_id="child"), [d.run_id, b.run_id])
        self.assertEqual(ids(labels=lab, module_id="child", statuses=[R.RUN_STATUS_FAILED]),
                         [b.run_id])
        self.assertEqual(ids(labels=lab, statuses=[COMPLETED, CANCELLED]),
                         [d.run_id, c.run_id, a.run_id])
        self.assertEqual(ids(labels=lab, module_id="nope"), [])
        listed = self.c.list(labels=lab).runs
        self.assertEqual(listed[1], c)  # whole runs, as GetRun has them
        self.assertEqual([r.created_at_ms for r in listed],
                         sorted((r.created_at_ms for r in listed), reverse=True))

    def test_list_runs_paging(self):
        lab = {"suite": "paging"}
        made = [self.c.start("true", labels=lab).run_id for _ in range(11)]
        pages, token = [], ""
        while True:
            resp = self.c.list(labels=lab, page_size=3, page_token=token)
            pages.append([r.run_id for r in resp.runs])
            token = resp.next_page_token
            if not token:
                break
            self.assertNotIn(token, made)  # opaque, not a bare run id
            self.assertLess(len(pages), 10)
        self.assertEqual([len(p) for p in pages], [3, 3, 3, 2])
        self.assertEqual(sum(pages, []), made[::-1])

    def test_list_runs_bad_page_token(self):
        run = self.c.start("true")
        for tok in ("garbage", "!!!!", base64.b64encode(b"v9:nonsense").decode(),
                    run.run_id, "A" * 1000):
            with self.subTest(token=tok[:20]):
                self.assertCode(INVALID, self.c.list, page_token=tok)

    def test_max_queued(self):
        srv = self.own_server(config_yaml([child_module("child")], max_concurrent=1,
                                          max_queued=2))
        c = self.client(srv)
        g = self.gate()
        first = c.start("child", "gate", g.path)
        conn, _ = g.accept()
        queued = [c.start("child", "ok") for _ in range(2)]
        for r in queued:
            self.assertStatus(r, QUEUED)
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, c.start, "child", "ok")
        self.assertStatus(c.cancel(queued[0].run_id), CANCELLED)
        queued.append(c.start("child", "ok"))  # a place came free
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, c.start, "child", "ok")
        g.release(conn)
        for r in [first] + queued[1:]:
            self.assertStatus(c.wait(r.run_id), COMPLETED)

    def test_no_queue(self):
        srv = self.own_server(config_yaml([child_module("child")], max_concurrent=1,
                                          max_queued=0))
        c = self.client(srv)
        g = self.gate()
        first = c.start("child", "gate", g.path)
        conn, _ = g.accept()
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, c.start, "child", "ok")
        g.release(conn)
        self.assertStatus(c.wait(first.run_id), COMPLETED)
        self.assertStatus(c.wait(c.start("child", "ok").run_id), COMPLETED)

    def test_resource_check_holds_runs_queued(self):
        # No machine has 1 PiB available: the run may not start.
        srv = self.own_server(config_yaml([child_module("child")],
                                          min_available_memory_mb=1 << 30))
        c = self.client(srv)
        run = c.start("child", "ok")
        self.assertStatus(run, QUEUED)
        now = c.stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=1500), timeout=WAIT)
        self.assertStatus(now, QUEUED)  # still, after more than one resource sample
        self.assertStatus(c.cancel(run.run_id), CANCELLED)

    def test_bad_run_mode_exits_2(self):
        for mode in ("bogus", "ASYNC", "dry_run"):
            with self.subTest(mode=mode):
                env = dict(os.environ, PRISMQ_RUN_MODE=mode)
                p = subprocess.run(
                    [os.path.join(BIN_DIR, "prismqd"), "--listen", "tcp://127.0.0.1:0",
                     "--data-dir", os.path.join(temp_dir(), "var")],
                    env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(b"PRISMQ_RUN_MODE", p.stdout + p.stderr)


    def test_second_server_on_the_same_data_dir_exits_2(self):
        # It would mark the first one's active runs LOST: the run table is locked.
        cfg = config_yaml([child_module("child")])
        data_dir = os.path.join(temp_dir(), "var")
        s1 = self.own_server(cfg, ("--data-dir", data_dir))
        c1 = self.client(s1)
        g = self.gate()
        running = c1.start("child", "gate", g.path)
        conn, _ = g.accept()
        p = subprocess.run(
            [os.path.join(BIN_DIR, "prismqd"), "--listen", "tcp://127.0.0.1:0", "--data-dir", data_dir],
            env=dict(os.environ, **mode_env(self.MODE)), stdin=subprocess.DEVNULL,
            capture_output=True, timeout=WAIT)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"runs.db: in use by another process", p.stdout + p.stderr)
        # The first server and its run carry on.
        self.assertStatus(c1.get(running.run_id), RUNNING)
        g.release(conn)
        self.assertStatus(c1.wait(running.run_id), COMPLETED)

    def test_restart_keeps_runs_and_output(self):
        cfg = config_yaml([child_module("child")], max_concurrent=1)
        data_dir = os.path.join(temp_dir(), "var")
        s1 = self.own_server(cfg, ("--data-dir", data_dir), check_exit=False)
        c1 = self.client(s1)
        done = c1.wait(c1.start("child", "interleave", 100).run_id)
        chunks = c1.chunks(done.run_id)[0]
        g = self.gate()
        running = c1.start("child", "gate", g.path)
        conn, _ = g.accept()
        c1.read_until(c1.stream(running.run_id, follow=True), b"waiting\n")
        queued = c1.start("child", "ok")
        self.assertStatus(queued, QUEUED)
        self.assertEqual(s1.stop(signal.SIGKILL), -signal.SIGKILL)  # a crash
        s2 = self.own_server(cfg, ("--data-dir", data_dir))
        c2 = self.client(s2)
        self.assertEqual(c2.get(done.run_id), done)
        self.assertEqual([(c.seq, c.stream, c.offset, c.data, c.time_ms)
                          for c in c2.chunks(done.run_id)[0]],
                         [(c.seq, c.stream, c.offset, c.data, c.time_ms) for c in chunks])
        self.assertEqual(c2.chunks(done.run_id, follow=True)[1], done)
        # The running run is LOST, and its process, orphaned by the crash, was killed at
        # the restart: the gate sees its end without being released.
        lost = c2.get(running.run_id)
        self.assertStatus(lost, R.RUN_STATUS_LOST)
        self.assertIn("killed at restart", lost.error_message)
        conn.settimeout(WAIT)
        self.assertEqual(conn.recv(1), b"")
        self.assertEqual(b"".join(c.data for c in c2.chunks(running.run_id)[0]), b"waiting\n")
        # The queued one was queued again, and ran.
        self.assertStatus(c2.wait(queued.run_id), COMPLETED)
        self.assertEqual([r.run_id for r in c2.list().runs],
                         [queued.run_id, running.run_id, done.run_id])
        later = c2.wait(c2.start("child", "ok").run_id)
        self.assertStatus(later, COMPLETED)
        self.assertGreater(later.run_id, queued.run_id)


class DryRun(RunnerMixin, ServerTestCase):
    server_kwargs = {"config_yaml": config_yaml(MODULES), "env": mode_env("dry-run")}

    def test_records_argv_and_executes_nothing(self):
        path = os.path.join(temp_dir(), "must not exist")
        run = self.c.start("touch", params={"path": path}, labels={"dry": "1"})
        data, final = self.c.chunks(run.run_id, follow=True)
        self.assertStatus(final, COMPLETED)
        self.assertEqual(len(data), 1)
        self.assertEqual((data[0].seq, data[0].stream, data[0].offset), (1, STDOUT, 0))
        self.assertIn(b"/usr/bin/touch", data[0].data)
        self.assertIn(path.encode(), data[0].data)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.c.get(run.run_id), final)
        self.assertEqual([r.run_id for r in self.c.list(labels={"dry": "1"}).runs],
                         [run.run_id])
        self.assertEqual(final.stdout_bytes, len(data[0].data))

    def test_validates_as_usual(self):
        self.assertCode(NOT_FOUND, self.c.start, "nope")
        self.assertCode(INVALID, self.c.start, "strict", params={"count": "x"},
                        mentions=["count"])
        self.assertCode(INVALID, self.c.start, "strict", params={}, mentions=["count"])
        self.assertCode(INVALID, self.c.start, "strict", params={"count": "1", "zz": "1"},
                        mentions=["zz"])
        first = self.c.start("strict", params={"count": "1"}, request_id="dry-idem")
        self.assertEqual(self.c.start("strict", params={"count": "1"},
                                      request_id="dry-idem").run_id, first.run_id)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.c.start, "strict",
                        params={"count": "2"}, request_id="dry-idem")

    def test_list_runs_page_sizes(self):
        lab = {"suite": "pagesize"}
        req = R.StartRunRequest(module_id="true", labels=lab)
        futs = [self.c.stub.StartRun.future(req, timeout=60) for _ in range(1001)]
        made = [f.result().run_id for f in futs]
        newest_first = sorted(made, reverse=True)
        default = self.c.list(labels=lab)
        self.assertEqual([r.run_id for r in default.runs], newest_first[:100])
        self.assertTrue(default.next_page_token)
        big = self.c.list(labels=lab, page_size=5000)
        self.assertEqual(len(big.runs), 1000)
        rest = self.c.list(labels=lab, page_size=5000, page_token=big.next_page_token)
        self.assertEqual([r.run_id for r in big.runs] + [r.run_id for r in rest.runs],
                         newest_first)
        self.assertEqual(rest.next_page_token, "")


if __name__ == "__main__":
    unittest.main()
