"""gRPC server reflection (grpc.reflection.v1 and v1alpha) against a real prismqd.

Exact checks with Debian's grpcio, the reflection messages generated at run time, the
expected descriptors being protoc's own from proto/: the services listed, every symbol
and file described, errors answered on a stream that goes on, many requests on one
stream, the limits. Then a stock reflection client, the npm package
grpc-js-reflection-client on @grpc/grpc-js (tests/integration/reflection_client), which
`npm ci` installs into <build>/npm/reflection-client the first time (and again when the
lock file changes); its test is skipped only when node is not installed."""

import functools
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import unittest

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from prismq_testlib import BIN_DIR, PROTO_DIR, WAIT, ServerTestCase, protos, temp_dir

SERVED = ("prismq/runner/v1/runner.proto", "prismq/admin/v1/admin.proto",
          "grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto",
          "grpc/reflection/v1alpha/reflection.proto")
SERVICES = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection", "prismq.admin.v1.Admin",
            "prismq.runner.v1.Runner"]
VERSIONS = ("v1", "v1alpha")
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
MAX_REQUESTS = 4096      # REFLECTION_MAX_REQUESTS
MAX_REQUEST = 16 << 10   # REFLECTION_MAX_REQUEST

CLIENT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reflection_client")
BUILD_DIR = os.environ.get("PRISMQ_BUILD") or os.path.dirname(os.path.abspath(BIN_DIR))
NPM_BOUND = 240
NODE_BOUND = 60


@functools.cache
def expected():
    """protoc's FileDescriptorProtos of the served files and their imports, by name."""
    out = os.path.join(temp_dir("prismq-refl-"), "set.pb")
    subprocess.run(["/usr/bin/protoc", "-I", PROTO_DIR, "-I", "/usr/include", "--include_imports",
                    "--descriptor_set_out=" + out] + [os.path.join(PROTO_DIR, p) for p in SERVED],
                   check=True)
    with open(out, "rb") as f:
        return {fd.name: fd for fd in descriptor_pb2.FileDescriptorSet.FromString(f.read()).file}


@functools.cache
def messages(version):
    """The Python module of grpc/reflection/VERSION/reflection.proto, generated now and
    loaded by path under a name of its own (a grpc.reflection package would hide grpcio)."""
    out = temp_dir("prismq-refl-pb-")
    proto = "grpc/reflection/%s/reflection.proto" % version
    subprocess.run(["/usr/bin/protoc", "-I", PROTO_DIR, "--python_out=" + out,
                    os.path.join(PROTO_DIR, proto)], check=True)
    spec = importlib.util.spec_from_file_location(
        "reflection_%s_pb2" % version, os.path.join(out, proto.replace(".proto", "_pb2.py")))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def declared(fd):
    """Every name the FileDescriptorProto fd declares, fully qualified, by protobuf's
    scoping: services, methods, messages (nested too), fields, oneofs, enums, enum values
    (in the enum's own scope) and extensions."""
    out = []

    def q(scope, name):
        return scope + "." + name if scope else name

    def enum(scope, e):
        out.append(q(scope, e.name))
        out.extend(q(scope, v.name) for v in e.value)

    def message(scope, m):
        full = q(scope, m.name)
        out.append(full)
        out.extend(q(full, x.name) for x in list(m.field) + list(m.extension) + list(m.oneof_decl))
        for n in m.nested_type:
            message(full, n)
        for e in m.enum_type:
            enum(full, e)

    for m in fd.message_type:
        message(fd.package, m)
    for e in fd.enum_type:
        enum(fd.package, e)
    for s in fd.service:
        out.append(q(fd.package, s.name))
        out.extend(q(q(fd.package, s.name), m.name) for m in s.method)
    out.extend(q(fd.package, x.name) for x in fd.extension)
    return out


def type_names(fd):
    """The full names of the messages (nested too), enums and services of fd."""
    out = []

    def walk(scope, msgs, enums):
        out.extend(scope + "." + e.name for e in enums)
        for m in msgs:
            out.append(scope + "." + m.name)
            walk(scope + "." + m.name, m.nested_type, m.enum_type)

    walk(fd.package, fd.message_type, fd.enum_type)
    out.extend(fd.package + "." + s.name for s in fd.service)
    return out


def method_shapes(svc):
    """A ServiceDescriptorProto's methods as the node client reports them."""
    return [{"name": m.name, "requestType": m.input_type.lstrip("."),
             "responseType": m.output_type.lstrip("."), "requestStream": m.client_streaming,
             "responseStream": m.server_streaming} for m in svc.method]


def rpc(channel, version, raw=False):
    """ServerReflectionInfo of `version` on `channel`; with raw, requests are bytes."""
    pb = messages(version)
    return channel.stream_stream(
        "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
        request_serializer=None if raw else pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString)


def converse(channel, version, requests):
    """Sends the requests on one stream, each once the answer to the one before has come,
    then ends the stream; returns the answers."""
    answered = queue.Queue()

    def gen():
        for r in requests:
            yield r
            answered.get(timeout=WAIT)

    out = []
    for resp in rpc(channel, version)(gen(), timeout=WAIT):
        out.append(resp)
        answered.put(None)
    return out


def files_of(resp):
    """The FileDescriptorProtos of a file answer."""
    return [descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in resp.file_descriptor_response.file_descriptor_proto]


class ReflectionCase(ServerTestCase):

    def setUp(self):
        self.ch = self.server.channel()
        self.addCleanup(self.ch.close)

    def ask(self, version, **request):
        """One request on a stream of its own; returns the one answer."""
        pb = messages(version)
        [resp] = list(rpc(self.ch, version)(iter([pb.ServerReflectionRequest(**request)]),
                                            timeout=WAIT))
        return resp

    def assert_error(self, resp, code):
        self.assertEqual(resp.WhichOneof("message_response"), "error_response", resp)
        self.assertEqual(resp.error_response.error_code, code)
        self.assertTrue(resp.error_response.error_message)


class Reflection(ReflectionCase):

    def test_list_services(self):
        for v in VERSIONS:
            with self.subTest(version=v):
                resp = self.ask(v, list_services="*")
                self.assertEqual([s.name for s in resp.list_services_response.service], SERVICES)
                self.assertEqual(resp.original_request.list_services, "*")

    def test_describe_every_service(self):
        """Each service's file comes whole, as protoc wrote it, and a stock descriptor
        pool built from the answer knows the service and its methods."""
        for v in VERSIONS:
            pb = messages(v)
            answers = converse(self.ch, v, [pb.ServerReflectionRequest(file_containing_symbol=s)
                                            for s in SERVICES])
            for svc, resp in zip(SERVICES, answers):
                with self.subTest(version=v, service=svc):
                    files = files_of(resp)
                    [want] = [fd for fd in expected().values() if svc in declared(fd)]
                    self.assertEqual(files[0], want)
                    pool = descriptor_pool.DescriptorPool()
                    for fd in reversed(files):
                        pool.Add(fd)
                    got = pool.FindServiceByName(svc)
                    [want_svc] = [s for s in want.service if svc.endswith("." + s.name)]
                    self.assertEqual([(m.name, m.input_type.full_name, m.output_type.full_name)
                                      for m in got.methods],
                                     [(m.name, m.input_type[1:], m.output_type[1:])
                                      for m in want_svc.method])

    def test_every_symbol_on_one_stream(self):
        """Every name each file declares (methods, nested messages, fields, oneofs, enum
        values...) gives that file, hundreds of requests on one stream, in order."""
        want = [(sym, fd.name) for fd in expected().values() for sym in declared(fd)]
        self.assertGreater(len(want), 100)
        pb = messages("v1")
        reqs = [pb.ServerReflectionRequest(file_containing_symbol=s) for s, _ in want]
        answers = list(rpc(self.ch, "v1")(iter(reqs), timeout=WAIT))
        self.assertEqual(len(answers), len(want))
        for (sym, name), resp in zip(want, answers):
            self.assertEqual(resp.original_request.file_containing_symbol, sym)
            self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response", sym)
            self.assertEqual(files_of(resp)[0].name, name, sym)

    def test_file_by_filename(self):
        for v in VERSIONS:
            for name, want in expected().items():
                with self.subTest(version=v, file=name):
                    files = files_of(self.ask(v, file_by_filename=name))
                    # The file, then its imports (the served files import nothing).
                    self.assertEqual(files, [want] + [expected()[d] for d in want.dependency])

    def test_unknown_names_are_not_found_and_the_stream_goes_on(self):
        for v in VERSIONS:
            pb = messages(v)
            reqs = [pb.ServerReflectionRequest(file_containing_symbol="prismq.runner.v1.Nope"),
                    pb.ServerReflectionRequest(file_containing_symbol="prismq.runner.v1"),
                    pb.ServerReflectionRequest(file_by_filename="runner.proto"),
                    pb.ServerReflectionRequest(file_containing_extension=pb.ExtensionRequest(
                        containing_type="prismq.runner.v1.Run", extension_number=100)),
                    pb.ServerReflectionRequest(all_extension_numbers_of_type="prismq.runner.v1.No"),
                    pb.ServerReflectionRequest(
                        all_extension_numbers_of_type="prismq.runner.v1.RunStatus"),
                    pb.ServerReflectionRequest(),
                    pb.ServerReflectionRequest(all_extension_numbers_of_type="prismq.runner.v1.Run"),
                    pb.ServerReflectionRequest(file_containing_symbol="prismq.admin.v1.Admin")]
            with self.subTest(version=v):
                answers = converse(self.ch, v, reqs)
                self.assertEqual([a.original_request for a in answers], reqs)
                for resp in answers[:6]:
                    self.assert_error(resp, NOT_FOUND)
                self.assert_error(answers[6], UNIMPLEMENTED)
                numbers = answers[7].all_extension_numbers_response
                self.assertEqual(numbers.base_type_name, "prismq.runner.v1.Run")
                self.assertEqual(list(numbers.extension_number), [])
                self.assertEqual(files_of(answers[8])[0].name, "prismq/admin/v1/admin.proto")

    def test_no_request(self):
        self.assertEqual(list(rpc(self.ch, "v1")(iter([]), timeout=WAIT)), [])

    def test_malformed_requests_end_the_call(self):
        # Not protobuf at all; a string that is not UTF-8.
        for raw in (b"\xff", b"\x22\x02\xc3\x28"):
            with self.subTest(raw=raw):
                with self.assertRaises(grpc.RpcError) as e:
                    list(rpc(self.ch, "v1", raw=True)(iter([raw]), timeout=WAIT))
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_limits(self):
        pb = messages("v1")
        with self.assertRaises(grpc.RpcError) as e:
            list(rpc(self.ch, "v1")(iter([pb.ServerReflectionRequest(
                file_containing_symbol="x" * MAX_REQUEST)]), timeout=WAIT))
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        answers = []
        reqs = [pb.ServerReflectionRequest(file_by_filename="x")] * (MAX_REQUESTS + 1)
        with self.assertRaises(grpc.RpcError) as e:
            for resp in rpc(self.ch, "v1")(iter(reqs), timeout=WAIT):
                answers.append(resp)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(len(answers), MAX_REQUESTS)
        self.server.wait_idle()


class ReflectionWithoutRoles(ReflectionCase):
    """`authz: []`: no caller holds any role, yet reflection, like Health, answers."""

    server_kwargs = {"config_yaml": json.dumps({"modules": [{"id": "t", "argv": ["true"]}],
                                                "authz": []})}

    def test_reflection_needs_no_role(self):
        with self.assertRaises(grpc.RpcError) as e:
            protos().runner_pb2_grpc.RunnerStub(self.ch).ListModules(
                protos().runner_pb2.ListModulesRequest(), timeout=WAIT)
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        for v in VERSIONS:
            resp = self.ask(v, list_services="")
            self.assertEqual([s.name for s in resp.list_services_response.service], SERVICES)


@functools.cache
def node_client():
    """The directory to run client.js from: <build>/npm/reflection-client, where `npm ci`
    installs its dependencies unless the lock file it installed from is the tree's.
    Raises unittest.SkipTest if node is not installed, AssertionError if npm is missing
    or fails."""
    if shutil.which("node") is None:
        raise unittest.SkipTest("node is not installed: the stock reflection client is not run")
    work = os.path.join(BUILD_DIR, "npm", "reflection-client")
    os.makedirs(work, exist_ok=True)
    for f in ("package.json", "package-lock.json", "client.js"):
        shutil.copy(os.path.join(CLIENT_DIR, f), work)
    stamp = os.path.join(work, "installed-from.json")
    with open(os.path.join(CLIENT_DIR, "package-lock.json"), "rb") as f:
        lock = f.read()
    if os.path.exists(stamp):
        with open(stamp, "rb") as f:
            if f.read() == lock:
                return work
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not: cannot install the reflection client"
    p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=work, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=NPM_BOUND)
    assert p.returncode == 0, "npm ci failed (exit %d):\n%s%s" % (
        p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))
    with open(stamp, "wb") as f:
        f.write(lock)
    return work


class StockClient(ReflectionCase):
    """grpc-js-reflection-client lists, describes and fetches as grpcurl would."""

    @classmethod
    def setUpClass(cls):
        cls.node_dir = node_client()  # before the server: a skip leaves nothing to stop
        super().setUpClass()

    def test_list_and_describe(self):
        symbols = ["prismq.runner.v1.StartRunRequest", "prismq.runner.v1.RunStatus",
                   "grpc.health.v1.HealthCheckResponse.ServingStatus", "prismq.runner.v1.Nope"]
        want_services = {s: method_shapes(svc) for fd in expected().values()
                         for svc in fd.service for s in [fd.package + "." + svc.name]}
        runner = expected()["prismq/runner/v1/runner.proto"]
        health = expected()["grpc/health/v1/health.proto"]
        [start] = [m for m in runner.message_type if m.name == "StartRunRequest"]
        [status] = [e for e in runner.enum_type if e.name == "RunStatus"]
        [check] = [m for m in health.message_type if m.name == "HealthCheckResponse"]
        want_symbols = {
            # protobufjs names fields by their JSON names, as protoc gives them.
            symbols[0]: {"kind": "message", "names": [f.json_name for f in start.field]},
            symbols[1]: {"kind": "enum", "names": [v.name for v in status.value]},
            symbols[2]: {"kind": "enum", "names": [v.name for v in check.enum_type[0].value]},
        }
        for v in VERSIONS:
            with self.subTest(version=v):
                p = subprocess.run(["node", os.path.join(self.node_dir, "client.js"),
                                    self.server.addr, v, "grpc/health/v1/health.proto"] + symbols,
                                   stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=NODE_BOUND)
                self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
                got = json.loads(p.stdout)
                self.assertEqual(got["services"], SERVICES)
                self.assertEqual(got["methods"], want_services)
                self.assertEqual(got["symbols"], want_symbols)
                self.assertEqual(sorted(got["file"]), sorted(type_names(health)))
                self.assertIn("not found", got["missing"])


if __name__ == "__main__":
    unittest.main()
