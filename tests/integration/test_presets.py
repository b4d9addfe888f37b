"""Presets through the real server with grpcio: the configuration's and saved ones,
how a run's parameters come from the module's defaults, then the preset, then the
request; what may not be saved (secrets, bad values, the configuration's names); that
saved presets outlive the server; listing and paging; rich error details."""

import unittest

import grpc

from prismq_testlib import WAIT, Server, protos

pb = protos()
R = pb.runner_pb2

CONFIG = """
listen: ["tcp://127.0.0.1:0"]
modules:
  - id: show
    argv: [sh, -c, 'echo "$*"', show]
    pass_parameters: flags
    parameters:
      - {name: a, default: "a0"}
      - {name: b, default: "b0"}
      - {name: c, default: "c0"}
      - {name: n, type: integer, min: 1, max: 9, default: "1"}
      - {name: key, type: secret, env_var: KEY}
    presets:
      - {name: fixed, description: from the config, parameters: {b: b-conf, n: "5"}}
  - id: other
    argv: [true]
"""


class Presets(unittest.TestCase):
    def setUp(self):
        self.srv = Server(config_yaml=CONFIG).start()
        self.connect()

    def connect(self):
        self.ch = self.srv.channel()
        self.stub = pb.runner_pb2_grpc.RunnerStub(self.ch)

    def tearDown(self):
        self.ch.close()
        if self.srv.returncode is None:
            self.assertEqual(self.srv.stop(), 0)

    def save(self, name, module="show", description="", **params):
        return self.stub.SavePreset(R.SavePresetRequest(
            module_id=module, name=name, description=description, parameters=params),
            timeout=WAIT)

    def presets(self, module="show", **kw):
        return self.stub.ListPresets(R.ListPresetsRequest(module_id=module, **kw), timeout=WAIT)

    def start_run(self, preset="", **params):
        run = self.stub.StartRun(R.StartRunRequest(module_id="show", preset=preset,
                                                   parameters=params), timeout=WAIT)
        done = self.stub.WaitRun(R.WaitRunRequest(run_id=run.run_id, timeout_ms=20000),
                                 timeout=WAIT)
        self.assertEqual(done.status, R.RUN_STATUS_COMPLETED, done.error_message)
        out = b"".join(c.data for c in self.stub.StreamOutput(
            R.StreamOutputRequest(run_id=run.run_id), timeout=WAIT))
        return done, out.decode()

    def refused(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception

    def test_override_order(self):
        saved = self.save("mine", description="a and b", a="a-saved", b="b-saved")
        self.assertEqual(saved.owner, "")
        self.assertFalse(saved.from_config)
        self.assertGreater(saved.updated_at_ms, 0)
        # Defaults, then the preset, then the request.
        done, out = self.start_run("mine", b="b-req")
        self.assertEqual(out, "--a a-saved --b b-req --c c0 --n 1\n")
        self.assertEqual(done.preset, "mine")
        self.assertEqual(dict(done.parameters), {"a": "a-saved", "b": "b-req", "c": "c0", "n": "1"})
        done, out = self.start_run("fixed")
        self.assertEqual(out, "--a a0 --b b-conf --c c0 --n 5\n")
        self.assertEqual(done.preset, "fixed")
        done, out = self.start_run()
        self.assertEqual((done.preset, out), ("", "--a a0 --b b0 --c c0 --n 1\n"))
        # Saving again replaces it.
        self.save("mine", c="c-saved")
        self.assertEqual(self.start_run("mine")[1], "--a a0 --b b0 --c c-saved --n 1\n")

    def test_unknown_preset_and_bad_requests(self):
        e = self.refused(grpc.StatusCode.NOT_FOUND, self.start_run, "nope")
        self.assertEqual(e.details(), 'module "show" has no preset "nope"')
        e = self.refused(grpc.StatusCode.INVALID_ARGUMENT, self.save, "x", key="k", n="10",
                         zz="1")
        self.assertIn('parameter "key" is a secret, which a preset cannot hold', e.details())
        self.assertIn('parameter "n" is 10, above the maximum 9', e.details())
        self.assertIn('unknown parameter "zz"', e.details())
        st = pb.status_pb2.Status.FromString(
            dict(e.trailing_metadata())["grpc-status-details-bin"])
        bad = pb.error_details_pb2.BadRequest.FromString(st.details[0].value)
        self.assertEqual(sorted(v.field for v in bad.field_violations),
                         ["parameters.key", "parameters.n", "parameters.zz"])
        e = self.refused(grpc.StatusCode.INVALID_ARGUMENT, self.save, "bad name")
        self.assertIn("must match", e.details())
        e = self.refused(grpc.StatusCode.FAILED_PRECONDITION, self.save, "fixed", a="x")
        self.assertEqual(e.details(),
                         'preset "fixed" of module "show" is part of the server\'s configuration')
        self.refused(grpc.StatusCode.NOT_FOUND, self.save, "x", module="missing")
        self.refused(grpc.StatusCode.NOT_FOUND, self.presets, "missing")
        e = self.refused(grpc.StatusCode.FAILED_PRECONDITION, self.stub.DeletePreset,
                         R.DeletePresetRequest(module_id="show", name="fixed"), timeout=WAIT)
        self.refused(grpc.StatusCode.NOT_FOUND, self.stub.DeletePreset,
                     R.DeletePresetRequest(module_id="show", name="never"), timeout=WAIT)
        self.refused(grpc.StatusCode.INVALID_ARGUMENT, self.stub.DeletePreset,
                     R.DeletePresetRequest(module_id="show"), timeout=WAIT)
        # A bad value in the preset fails the run's check like a bad request value.
        self.save("ok", n="3")
        e = self.refused(grpc.StatusCode.INVALID_ARGUMENT, self.start_run, "ok", n="0")
        self.assertEqual(e.details(), 'parameter "n" is 0, below the minimum 1')

    def test_list_delete_and_restart(self):
        self.save("zeta", a="1")
        self.save("alpha", description="first", b="2")
        self.save("solo", module="other")
        got = self.presets()
        self.assertEqual([(p.name, p.from_config) for p in got.presets],
                         [("fixed", True), ("alpha", False), ("zeta", False)])
        self.assertEqual(dict(got.presets[0].parameters), {"b": "b-conf", "n": "5"})
        self.assertEqual(got.presets[0].description, "from the config")
        self.assertEqual(got.next_page_token, "")
        everything = self.presets("")
        self.assertEqual([(p.module_id, p.name) for p in everything.presets],
                         [("show", "fixed"), ("show", "alpha"), ("show", "zeta"),
                          ("other", "solo")])
        # Pages.
        names, token = [], ""
        while True:
            page = self.presets("", page_size=3, page_token=token)
            self.assertLessEqual(len(page.presets), 3)
            names += [p.name for p in page.presets]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(names, ["fixed", "alpha", "zeta", "solo"])
        self.refused(grpc.StatusCode.INVALID_ARGUMENT, self.presets, page_token="junk")
        # Deleted ones go; the rest outlive the server.
        self.stub.DeletePreset(R.DeletePresetRequest(module_id="show", name="zeta"), timeout=WAIT)
        self.ch.close()
        self.assertEqual(self.srv.stop(), 0)
        self.srv = Server(config_yaml=CONFIG, extra_args=("--data-dir", self.srv.data_dir)).start()
        self.connect()
        got = self.presets()
        self.assertEqual([p.name for p in got.presets], ["fixed", "alpha"])
        self.assertEqual(got.presets[1].description, "first")
        self.assertEqual(self.start_run("alpha")[1], "--a a0 --b 2 --c c0 --n 1\n")

    def test_request_id_retry_with_a_preset(self):
        self.save("p", a="x")
        req = R.StartRunRequest(module_id="show", preset="p", request_id="job-1")
        first = self.stub.StartRun(req, timeout=WAIT)
        again = self.stub.StartRun(req, timeout=WAIT)
        self.assertEqual(again.run_id, first.run_id)
        self.save("p", a="y")  # the preset changed: the same request_id is another request
        self.refused(grpc.StatusCode.ALREADY_EXISTS, self.stub.StartRun, req, timeout=WAIT)


if __name__ == "__main__":
    unittest.main()
