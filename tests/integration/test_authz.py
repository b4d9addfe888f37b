"""Authorization (config `authz:`) as callers with different identities see it: TLS
client certificates (spiffe://prismq/client1, client2, ops-1, and names that match no
rule), anonymous TLS and loopback TCP callers, and the unix-socket peer (unix:root).
Which modules each may start, whose runs each may read, list and cancel, who may call
Admin/GetStats, that Health is open to all, that PERMISSION_DENIED names the missing
role or module, that runs record their owner; and, without an authz section, that local
peers may do everything (the behaviour before authz existed)."""

import json
import os
import re
import unittest

import grpc

from prismq_testlib import WAIT, ServerTestCase
from tls_common import (IDENTITY_UNIX, R, SERVING, Stubs, TlsServer, cli_tls_args,
                        config_yaml, issue, path, prismq, tls_section)

DENIED = grpc.StatusCode.PERMISSION_DENIED
CLIENT1 = "spiffe://prismq/client1"
CLIENT2 = "spiffe://prismq/client2"
OPS = "spiffe://prismq/ops-1"
STRANGER = "spiffe://prismq/stranger"
TERMINAL = (R.RUN_STATUS_COMPLETED, R.RUN_STATUS_FAILED, R.RUN_STATUS_CANCELLED,
            R.RUN_STATUS_TIMED_OUT, R.RUN_STATUS_LOST)

RULES = [
    # Starts echo and sleep; reads its own runs.
    {"identity": CLIENT1, "modules": ["echo", "sleep"], "roles": ["read"]},
    # Reads everything, starts nothing.
    {"identity": CLIENT2, "roles": ["read_all"]},
    # Two rules for the same glob: their union cancels anyone's runs and starts echo.
    {"identity": "spiffe://prismq/ops-*", "roles": ["cancel_any"]},
    {"identity": "spiffe://prismq/ops-*", "modules": ["ech?"]},
    {"identity": "unix:*", "roles": ["admin"]},
]
CONFIG = config_yaml(tls_section(), authz=RULES)


def path_of(method):
    return "/prismq.runner.v1.Runner/" + method


class AuthzCase(ServerTestCase):
    """A TlsServer per class; callers by name; runs of each test cancelled at its end."""

    server_kwargs = {"config_yaml": CONFIG}

    @classmethod
    def setUpClass(cls):
        # Certificates for identities the dev set lacks. The names under "unix:" claim
        # the unix peer's identity, which a certificate must not be able to.
        for name, cn, san in (("ops-1", "ops-1", OPS), ("stranger", "stranger", STRANGER),
                              ("unix-claim", IDENTITY_UNIX, IDENTITY_UNIX)):
            if not os.path.exists(path(name + ".pem")):
                issue(name, cn, "URI:" + san)
        cls.server = TlsServer(**cls.server_kwargs).start()

    def setUp(self):
        super().setUp()
        self.callers = {}
        self.admin = self.caller("admin")
        self.addCleanup(self.cancel_leftovers)

    def caller(self, who):
        """Stubs for `who`: "admin" (the unix socket), "tcp" (anonymous loopback TCP),
        "anon" (TLS without a certificate), or the name of a client certificate."""
        if who not in self.callers:
            srv = self.server
            ch = (srv.unix_channel() if who == "admin" else srv.plain_channel() if who == "tcp"
                  else srv.tls_channel(None if who == "anon" else who))
            self.callers[who] = s = Stubs(ch)
            self.addCleanup(s.close)
        return self.callers[who]

    def cancel_leftovers(self):
        for run in self.admin.list():
            if run.status not in TERMINAL:
                try:
                    self.admin.cancel(run.run_id)
                except grpc.RpcError as e:  # it ended meanwhile
                    if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise

    def denied(self, fn, *args, says=(), **kw):
        """fn(*args, **kw) must fail PERMISSION_DENIED with details naming each of `says`;
        returns the details."""
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        e = cm.exception
        self.assertEqual(e.code(), DENIED, e.details())
        for s in says:
            self.assertIn(s, e.details())
        return e.details()

    def needs(self, method, roles, who):
        """The message of a call refused for want of a role."""
        return "permission denied: %s needs role %s, which %s does not have" % (
            method, roles, who)

    def drain(self, stream):
        return list(stream)


class Authz(AuthzCase):
    def test_start_only_the_modules_granted(self):
        c1 = self.caller("client1")
        run = c1.start("echo", message="mine")
        self.assertEqual(run.owner, CLIENT1)
        self.assertEqual(c1.wait(run.run_id).status, R.RUN_STATUS_COMPLETED)
        self.assertEqual(c1.output(run.run_id)[0], b"mine\n")
        self.server.wait_log(r"run queued run_id=%s .*owner=%s" % (run.run_id, CLIENT1))
        self.denied(c1.start, "other",
                    says=("permission denied: %s may not start module other" % CLIENT1,))
        # A module that does not exist is refused the same way: nothing is told of
        # modules the caller may not start.
        self.denied(c1.start, "no-such-module", says=("may not start module no-such-module",))
        self.assertFalse([r for r in self.admin.list() if r.module_id == "other"
                          and r.owner == CLIENT1])

    def test_read_only_identity(self):
        c1, c2 = self.caller("client1"), self.caller("client2")
        mine = c1.start("sleep")
        self.denied(c2.start, "echo",
                    says=(self.needs(path_of("StartRun"), "start", CLIENT2),))
        self.denied(c2.cancel, mine.run_id,
                    says=(self.needs(path_of("CancelRun"), "cancel_any or start", CLIENT2),))
        self.assertNotEqual(self.admin.get(mine.run_id).status, R.RUN_STATUS_CANCELLED)
        # read_all: every run, whoever started it.
        admins = self.admin.start("echo", message="admin's")
        self.assertEqual(c2.get(mine.run_id).owner, CLIENT1)
        self.assertEqual(c2.wait(admins.run_id).owner, IDENTITY_UNIX)
        self.assertEqual(c2.output(admins.run_id)[0], b"admin's\n")
        self.assertEqual(next(iter(c2.stream(mine.run_id, follow=True))).data, b"sleeping\n")
        ids = {r.run_id for r in c2.list()}
        self.assertLessEqual({mine.run_id, admins.run_id}, ids)
        self.assertIn("echo", c2.modules())

    def test_own_runs_only_without_read_all(self):
        c1 = self.caller("client1")
        mine = c1.start("echo")
        theirs = self.admin.start("echo", message="not yours")
        c1.wait(mine.run_id)
        runs = c1.list()
        self.assertIn(mine.run_id, [r.run_id for r in runs])
        self.assertEqual({r.owner for r in runs}, {CLIENT1})
        self.assertNotIn(theirs.run_id, [r.run_id for r in c1.list(module_id="echo")])
        why = "permission denied: run %s belongs to another identity; %s needs role read_all" % (
            theirs.run_id, CLIENT1)
        self.denied(c1.get, theirs.run_id, says=(why,))
        self.denied(c1.wait, theirs.run_id, says=(why,))
        self.denied(self.drain, c1.stream(theirs.run_id), says=(why,))
        self.denied(c1.cancel, theirs.run_id, says=(
            "permission denied: run %s belongs to another identity; %s needs role cancel_any"
            % (theirs.run_id, CLIENT1),))
        # A run id that names no run is NOT_FOUND, for a caller without read_all too.
        with self.assertRaises(grpc.RpcError) as cm:
            c1.get("0" * 26)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_cancel_own_run(self):
        c1 = self.caller("client1")
        run = c1.start("sleep")
        start = self.server.log_len()
        self.assertEqual(c1.cancel(run.run_id).status, R.RUN_STATUS_CANCELLED)
        self.server.wait_log(r"cancel requested run_id=%s by=%s " % (run.run_id, CLIENT1),
                             start=start)

    def test_cancel_any(self):
        ops, c1 = self.caller("ops-1"), self.caller("client1")
        run = c1.start("sleep")
        # cancel_any, not read_all: ops may stop the run but not look at it.
        self.denied(ops.get, run.run_id, says=("needs role read_all",))
        self.assertNotIn(run.run_id, [r.run_id for r in ops.list()])
        start = self.server.log_len()
        self.assertEqual(ops.cancel(run.run_id).status, R.RUN_STATUS_CANCELLED)
        self.server.wait_log(r"cancel requested run_id=%s by=%s " % (run.run_id, OPS),
                             start=start)
        self.assertEqual(c1.get(run.run_id).status, R.RUN_STATUS_CANCELLED)
        # The second rule for the same glob lets ops start echo ("ech?"), only that.
        own = ops.start("echo")
        self.assertEqual(own.owner, OPS)
        listed = ops.list()
        self.assertIn(own.run_id, [r.run_id for r in listed])
        self.assertEqual({r.owner for r in listed}, {OPS})
        self.denied(ops.start, "sleep", says=("%s may not start module sleep" % OPS,))

    def test_admin(self):
        self.assertGreaterEqual(self.admin.stats().live_connections, 1)
        c1 = self.caller("client1")
        theirs = c1.start("sleep")
        run = self.admin.start("other")
        self.assertEqual(run.owner, IDENTITY_UNIX)
        self.assertIn(theirs.run_id, [r.run_id for r in self.admin.list()])
        self.assertEqual(self.admin.get(theirs.run_id).owner, CLIENT1)
        self.assertEqual(self.admin.cancel(theirs.run_id).status, R.RUN_STATUS_CANCELLED)
        for who, name in (("client1", CLIENT1), ("client2", CLIENT2), ("ops-1", OPS),
                          ("tcp", "an anonymous caller")):
            with self.subTest(who=who):
                self.denied(self.caller(who).stats, says=(
                    self.needs("/prismq.admin.v1.Admin/GetStats", "admin", name),))

    def test_presets_belong_to_who_saved_them(self):
        def save(who, name, **params):
            return self.caller(who).runner.SavePreset(R.SavePresetRequest(
                module_id="echo", name=name, parameters=params), timeout=WAIT)

        def delete(who, name):
            return self.caller(who).runner.DeletePreset(
                R.DeletePresetRequest(module_id="echo", name=name), timeout=WAIT)

        mine = save("client1", "greeting", message="from client1")
        self.assertEqual(mine.owner, CLIENT1)
        # Saving and deleting need the right to start the module; listing and using do not.
        self.denied(save, "client2", "x",
                    says=(self.needs(path_of("SavePreset"), "start", CLIENT2),))
        with self.assertRaises(grpc.RpcError) as cm:
            self.caller("ops-1").runner.SavePreset(R.SavePresetRequest(
                module_id="sleep", name="x"), timeout=WAIT)
        self.assertEqual(cm.exception.details(),
                         "permission denied: %s may not change the presets of module sleep" % OPS)
        listed = self.caller("client2").runner.ListPresets(
            R.ListPresetsRequest(module_id="echo"), timeout=WAIT).presets
        self.assertIn(("greeting", CLIENT1), [(p.name, p.owner) for p in listed])
        # Another identity that may start echo may use it, not replace or delete it.
        ops = self.caller("ops-1")
        run = ops.runner.StartRun(R.StartRunRequest(module_id="echo", preset="greeting"),
                                  timeout=WAIT)
        self.assertEqual((run.owner, run.preset), (OPS, "greeting"))
        self.assertEqual(ops.wait(run.run_id).status, R.RUN_STATUS_COMPLETED)
        self.assertEqual(ops.output(run.run_id)[0], b"from client1\n")
        belongs = 'preset "greeting" of module "echo" belongs to %s' % CLIENT1
        self.denied(save, "ops-1", "greeting", message="hijacked", says=(belongs,))
        self.denied(delete, "ops-1", "greeting", says=(belongs,))
        # Its owner replaces it; an admin deletes anyone's.
        self.assertEqual(save("client1", "greeting", message="v2").parameters["message"], "v2")
        delete("admin", "greeting")
        with self.assertRaises(grpc.RpcError) as cm:
            delete("client1", "greeting")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_is_open_to_everyone(self):
        for who in ("admin", "client1", "client2", "ops-1", "stranger", "unix-claim", "anon",
                    "tcp"):
            with self.subTest(who=who):
                self.assertEqual(self.caller(who).check(), SERVING)

    def test_no_matching_rule_no_access(self):
        # With an authz section, only the rules count: a loopback TCP peer is no one.
        for who, name in (("stranger", STRANGER), ("anon", "an anonymous caller"),
                          ("tcp", "an anonymous caller")):
            with self.subTest(who=who):
                s = self.caller(who)
                self.denied(s.modules, says=(self.needs(path_of("ListModules"), "any", name),))
                self.denied(s.list, says=(
                    self.needs(path_of("ListRuns"), "read or read_all or start", name),))
                self.denied(s.start, "echo", says=(self.needs(path_of("StartRun"), "start",
                                                              name),))
                self.denied(s.stats, says=("needs role admin",))
        self.assertEqual(sorted(self.caller("client1").modules()), ["echo", "other", "sleep"])

    def test_a_certificate_cannot_claim_a_unix_identity(self):
        # Its URI SAN and CN are both "unix:root": neither may name a TLS caller.
        s = self.caller("unix-claim")
        self.denied(s.stats, says=(
            self.needs("/prismq.admin.v1.Admin/GetStats", "admin", "an anonymous caller"),))
        self.denied(s.modules, says=("an anonymous caller",))

    def test_cli_sees_own_runs(self):
        def cli(client, *args, code=0):
            p = prismq("--target", "tls://" + self.server.tls_addr, *cli_tls_args(client),
                       *args)
            self.assertEqual(p.returncode, code, p.stderr)
            return p

        mine = cli("client1", "run", "echo", "-p", "message=cli").stdout.decode().strip()
        theirs = self.admin.start("echo").run_id
        cli("client1", "wait", mine)
        listed = json.loads(cli("client1", "ls", "--json").stdout)["runs"]
        self.assertIn(mine, [r["runId"] for r in listed])
        self.assertEqual({r["owner"] for r in listed}, {CLIENT1})
        every = [r["runId"] for r in json.loads(cli("client2", "ls", "--json").stdout)["runs"]]
        self.assertLessEqual({mine, theirs}, set(every))
        p = cli("client1", "run", "other", code=1)
        self.assertEqual(p.stderr.decode(), "prismq: PERMISSION_DENIED: permission denied: "
                         "%s may not start module other\n" % CLIENT1)
        p = cli("client1", "status", theirs, code=1)
        self.assertRegex(p.stderr.decode(), r"^prismq: PERMISSION_DENIED: .*%s.*read_all\n$"
                         % re.escape(theirs))


class EmptyAuthz(AuthzCase):
    """`authz: []`: a section with no rules refuses everyone but Health."""

    server_kwargs = {"config_yaml": config_yaml(tls_section(), authz=[])}

    def cancel_leftovers(self):
        pass  # nobody could start anything

    def test_everyone_refused(self):
        for who in ("admin", "client1", "tcp"):
            with self.subTest(who=who):
                s = self.caller(who)
                self.assertEqual(s.check(), SERVING)
                self.denied(s.modules, says=("needs role any",))
                self.denied(s.start, "echo", says=("needs role start",))
                self.denied(s.stats, says=("needs role admin",))


class NoAuthzSection(AuthzCase):
    """No authz section (and allow_insecure_remote false): every local peer, loopback TCP,
    unix socket or TLS on loopback, may do everything, as before authz existed. Runs
    still record who started them."""

    server_kwargs = {"config_yaml": config_yaml(tls_section())}

    def test_local_peers_may_do_everything(self):
        tcp, c1, c2 = self.caller("tcp"), self.caller("client1"), self.caller("client2")
        anon_run = tcp.start("other")
        self.assertEqual(anon_run.owner, "")
        c1_run = c1.start("sleep")
        self.assertEqual(c1_run.owner, CLIENT1)
        self.assertEqual(tcp.get(c1_run.run_id).owner, CLIENT1)
        self.assertLessEqual({anon_run.run_id, c1_run.run_id}, {r.run_id for r in tcp.list()})
        self.assertLessEqual({anon_run.run_id, c1_run.run_id}, {r.run_id for r in c2.list()})
        self.assertEqual(c2.cancel(c1_run.run_id).status, R.RUN_STATUS_CANCELLED)
        for who in ("tcp", "client1", "admin", "anon"):
            with self.subTest(who=who):
                s = self.caller(who)
                self.assertGreaterEqual(s.stats().live_connections, 1)
                self.assertEqual(sorted(s.modules()), ["echo", "other", "sleep"])
        self.assertEqual(self.admin.start("echo").owner, IDENTITY_UNIX)


if __name__ == "__main__":
    unittest.main()
