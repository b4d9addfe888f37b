"""Typed parameters and module metadata through the real server and grpcio: every bad
parameter of a StartRun named in one INVALID_ARGUMENT, also as a google.rpc.BadRequest in
grpc-status-details-bin (decoded here as any gRPC client would); values reaching the
process in their run form (booleans as bare flags, paths resolved under their base);
ListModules showing types, ranges, options and metadata, filtered by category and tags;
a disabled module listed but refused with FAILED_PRECONDITION."""

import os
import subprocess
import unittest

import grpc

from prismq_testlib import BIN_DIR, WAIT, ServerTestCase, protos, temp_dir

pb = protos()
R = pb.runner_pb2
BASE = temp_dir("prismq-params-base-")
os.mkdir(os.path.join(BASE, "in"))
os.symlink("/etc", os.path.join(BASE, "escape"))

CONFIG = """
listen: ["tcp://127.0.0.1:0"]
modules:
  - id: args
    category: tools
    tags: [print, debug]
    version: "2.1"
    argv: [printf, "%%s\\n", "n={n}", "dry={dry}"]
    pass_parameters: flags
    parameters:
      - {name: n, type: integer, min: 1, max: 10, required: true}
      - {name: ratio, type: number, min: 0, max: 1, default: "0.5"}
      - {name: dry, type: boolean, default: "false"}
      - {name: mode, type: select, options: [fast, slow], default: fast}
      - {name: out, type: path, base_dir: %s}
      - {name: tag, min_length: 2, max_length: 4, pattern: "[a-z]+"}
  - id: other
    category: misc
    tags: [print]
    argv: ["true"]
  - id: off
    enabled: false
    argv: ["true"]
""" % BASE


class TypedParameters(ServerTestCase):
    server_kwargs = {"config_yaml": CONFIG}

    def setUp(self):
        self.ch = self.server.channel()
        self.stub = pb.runner_pb2_grpc.RunnerStub(self.ch)

    def tearDown(self):
        self.ch.close()

    def start(self, module="args", **params):
        return self.stub.StartRun(R.StartRunRequest(module_id=module, parameters=params),
                                  timeout=WAIT)

    def refused(self, module="args", **params):
        with self.assertRaises(grpc.RpcError) as cm:
            self.start(module, **params)
        return cm.exception

    def details(self, err):
        """The google.rpc.Status in the error's trailers, decoded."""
        raw = dict(err.trailing_metadata()).get("grpc-status-details-bin")
        self.assertIsNotNone(raw, "no grpc-status-details-bin")
        st = pb.status_pb2.Status.FromString(raw)
        self.assertEqual(st.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertEqual(st.message, err.details())
        self.assertEqual(len(st.details), 1)
        self.assertEqual(st.details[0].type_url, "type.googleapis.com/google.rpc.BadRequest")
        br = pb.error_details_pb2.BadRequest.FromString(st.details[0].value)
        return [(v.field, v.description) for v in br.field_violations]

    def output(self, run_id):
        done = self.stub.WaitRun(R.WaitRunRequest(run_id=run_id, timeout_ms=20000), timeout=WAIT)
        self.assertEqual(done.status, R.RUN_STATUS_COMPLETED, done.error_message)
        chunks = self.stub.StreamOutput(R.StreamOutputRequest(run_id=run_id), timeout=WAIT)
        return b"".join(c.data for c in chunks).decode().splitlines(), done

    def test_every_bad_parameter_is_named_at_once(self):
        err = self.refused(n="11", ratio="x", dry="maybe", mode="medium", out="../x", tag="A",
                           bogus="1")
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
        want = [
            ("parameters.bogus", 'unknown parameter "bogus"'),
            ("parameters.n", 'parameter "n" is 11, above the maximum 10'),
            ("parameters.ratio", 'parameter "ratio" must be a number'),
            ("parameters.dry", 'parameter "dry" must be true or false'),
            ("parameters.mode", 'parameter "mode" must be one of "fast", "slow"'),
            ("parameters.out", 'parameter "out" leads outside %s' % BASE),
            ("parameters.tag", 'parameter "tag" is 1 bytes long, shorter than the minimum 2'),
        ]
        self.assertEqual(self.details(err), want)
        self.assertEqual(err.details(), "; ".join(d for _, d in want))

    def test_edges(self):
        cases = [
            ({"n": "0"}, 'parameter "n" is 0, below the minimum 1'),
            ({"n": "1.5"}, 'parameter "n" must be an integer'),
            ({"n": "1", "ratio": "1.0001"}, 'parameter "ratio" is 1.0001, above the maximum 1'),
            ({"n": "1", "tag": "abcde"}, 'parameter "tag" is 5 bytes long, longer than the maximum 4'),
            ({"n": "1", "tag": "AB"}, 'parameter "tag" does not match [a-z]+'),
            ({"n": "1", "out": "escape/passwd"}, 'parameter "out" leads outside %s' % BASE),
            ({"n": "1", "out": "/etc/passwd"}, 'parameter "out" leads outside %s' % BASE),
            ({}, 'missing required parameter "n"'),
        ]
        for params, msg in cases:
            with self.subTest(params=params):
                err = self.refused(**params)
                self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertEqual(err.details(), msg)
                self.assertEqual(len(self.details(err)), 1)

    def test_values_reach_the_process_in_their_run_form(self):
        run = self.start(n="+7", dry="YES", mode="slow", out="in/../in/f", tag="ab", ratio="1e-1")
        lines, done = self.output(run.run_id)
        real = os.path.realpath(BASE)
        self.assertEqual(lines, ["n=+7", "dry=true", "--n", "+7", "--ratio", "1e-1", "--dry",
                                 "--mode", "slow", "--out", real + "/in/f", "--tag", "ab"])
        self.assertEqual(dict(done.parameters), {"n": "+7", "ratio": "1e-1", "dry": "true",
                                                 "mode": "slow", "out": real + "/in/f",
                                                 "tag": "ab"})
        # A false boolean is no flag; defaults apply.
        lines, done = self.output(self.start(n="1", dry="off").run_id)
        self.assertEqual(lines, ["n=1", "dry=false", "--n", "1", "--ratio", "0.5", "--mode", "fast"])

    def test_list_modules_shows_types_and_metadata(self):
        mods = {m.id: m for m in self.stub.ListModules(R.ListModulesRequest(), timeout=WAIT).modules}
        self.assertEqual(set(mods), {"args", "other", "off"})
        m = mods["args"]
        self.assertEqual((m.category, list(m.tags), m.version, m.enabled),
                         ("tools", ["print", "debug"], "2.1", True))
        p = {s.name: s for s in m.parameters}
        self.assertEqual(p["n"].type, R.PARAMETER_TYPE_INTEGER)
        self.assertTrue(p["n"].HasField("min") and p["n"].HasField("max"))
        self.assertEqual((p["n"].min, p["n"].max), (1, 10))
        self.assertFalse(p["dry"].HasField("min") or p["dry"].HasField("max"))
        self.assertEqual(p["dry"].type, R.PARAMETER_TYPE_BOOLEAN)
        self.assertEqual(list(p["mode"].options), ["fast", "slow"])
        self.assertEqual(p["mode"].type, R.PARAMETER_TYPE_SELECT)
        self.assertEqual((p["out"].type, p["out"].base_dir), (R.PARAMETER_TYPE_PATH, BASE))
        self.assertEqual((p["tag"].type, p["tag"].min_length, p["tag"].max_length),
                         (R.PARAMETER_TYPE_STRING, 2, 4))
        self.assertFalse(mods["off"].enabled)
        self.assertEqual(mods["off"].category, "")

    def test_cli_shows_types_and_refusals(self):
        def prismq(*args):
            return subprocess.run([os.path.join(BIN_DIR, "prismq"), "--target", self.server.addr]
                                  + list(args), capture_output=True, timeout=WAIT, text=True)
        p = prismq("modules", "--category", "tools")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn(" n:integer(1..10) [ratio:number(0..1)=0.5] [dry:boolean=false] "
                      "[mode:fast|slow=fast] [out:path(%s)] [tag(2..4 bytes)] " % BASE, lines[1])
        p = prismq("modules", "--tag", "print")
        self.assertEqual([l.split()[0] for l in p.stdout.splitlines()[1:]], ["args", "other"])
        p = prismq("modules")
        self.assertRegex(p.stdout, r"\noff +off \(disabled\) ")
        p = prismq("run", "args", "-p", "n=0", "-p", "mode=x")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr, 'prismq: INVALID_ARGUMENT: 2 bad parameters\n'
                                   'prismq:   n: parameter "n" is 0, below the minimum 1\n'
                                   'prismq:   mode: parameter "mode" must be one of "fast", '
                                   '"slow"\n')
        p = prismq("run", "args", "-p", "n=0")
        self.assertEqual(p.stderr, 'prismq: INVALID_ARGUMENT: parameter "n" is 0, below the '
                                   'minimum 1\n')
        # As many as the details hold (not all 60), each on its line after the count.
        many = [a for i in range(60) for a in ("-p", "p%02d_%s=v" % (i, "x" * 50))]
        p = prismq("run", "args", "-p", "n=1", *many)
        lines = p.stderr.splitlines()
        self.assertRegex(lines[0], r"^prismq: INVALID_ARGUMENT: \d+ bad parameters$")
        self.assertEqual(len(lines), 1 + int(lines[0].split()[2]))
        self.assertGreater(len(lines), 10)
        for line in lines[1:]:
            self.assertRegex(line, r'^prismq:   (p\d\d_x{50}): unknown parameter "\1"$')

    def test_list_modules_filters(self):
        def ids(**kw):
            resp = self.stub.ListModules(R.ListModulesRequest(**kw), timeout=WAIT)
            return [m.id for m in resp.modules]
        self.assertEqual(ids(category="tools"), ["args"])
        self.assertEqual(ids(tags=["print"]), ["args", "other"])
        self.assertEqual(ids(tags=["print", "debug"]), ["args"])
        self.assertEqual(ids(category="misc", tags=["debug"]), [])
        self.assertEqual(ids(category="nope"), [])

    def test_disabled_module_is_refused(self):
        err = self.refused("off")
        self.assertEqual(err.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(err.details(), 'module "off" is disabled')

    def test_many_violations_stay_bounded(self):
        params = {"p%03d_%s" % (i, "x" * 50): "v" for i in range(60)}
        err = self.refused(**params)
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
        raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
        self.assertLessEqual(len(raw), 3072)
        found = self.details(err)
        self.assertGreater(len(found), 10)
        self.assertLess(len(found), 61)
        # Map entries come in the client's order, which protobuf does not fix.
        for field, desc in found:
            name = field[len("parameters."):]
            self.assertIn(name, params)
            self.assertEqual(desc, 'unknown parameter "%s"' % name)


if __name__ == "__main__":
    unittest.main()
