"""A torn write-ahead log: prismqd killed with -9 leaves its run table's last commits in
runs.db-wal, and a crash of the machine may leave that file cut anywhere, with garbage
after its end, or not at all.

  TornWal   one data directory is made once: runs recorded by a server that stopped
            cleanly (checkpointed into runs.db), then runs recorded by a second server
            that was killed with -9 (in runs.db-wal only). Each case restarts a server on
            a copy of it, the WAL damaged:
              - the last frame torn (a few bytes cut off);
              - garbage appended (a whole frame's worth, and a partial one);
              - cut at every commit boundary, from the header alone to the whole file
                (the crash at each moment of the second server's life, as far as the
                table can tell);
              - cut inside its header, or deleted.
            Every time the server starts and answers, the table is consistent (SQLite's
            integrity check once it stopped), the checkpointed runs are there unchanged,
            the second server's runs present are a prefix of them in start order, all of
            them as they were but the last, which may be LOST (it was running) or queued
            again and run anew; and a new run completes.

What SQLite guarantees is all that is asserted: a transaction whose frames are intact
and complete up to its commit frame survives, a later one is gone. The runs are
sequential (each is waited for before the next starts), so a run present means every
earlier one had ended durably: its completion was answered before the next StartRun.
"""

import os
import shutil
import signal
import sqlite3
import struct
import unittest

import grpc

from prismq_testlib import Server, temp_dir
from runner_common import COMPLETED, R, Client, child_module, config_yaml, status_name

LOST = R.RUN_STATUS_LOST
LOST_MESSAGE = "the server stopped while the run was running"
# Processes are not what this is about: process groups keep no cgroup behind.
CFG = config_yaml([child_module("child")], sections={"cgroups": {"root": "off"}})
CLEAN_RUNS = 3
KILLED_RUNS = 3
WAL_HEADER = 32
FRAME_HEADER = 24


def wal_commits(wal):
    """(page size, the end offsets of the WAL's commit frames, in order): a frame
    belongs to the log while its salts are the header's."""
    page = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    ends, off = [], WAL_HEADER
    while off + FRAME_HEADER + page <= len(wal) and wal[off + 8:off + 16] == salts:
        commit = struct.unpack(">I", wal[off + 4:off + 8])[0]
        off += FRAME_HEADER + page
        if commit:
            ends.append(off)
    return page, ends


class TornWal(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.snapshot = os.path.join(temp_dir("prismq-torn-"), "var")
        s1 = Server(CFG, extra_args=("--data-dir", cls.snapshot)).start()
        cls.clean = cls.record(s1, CLEAN_RUNS)
        assert s1.stop() == 0, s1.log_text()
        s2 = Server(CFG, extra_args=("--data-dir", cls.snapshot)).start()
        cls.killed = cls.record(s2, KILLED_RUNS)
        assert s2.stop(signal.SIGKILL) == -signal.SIGKILL
        with open(os.path.join(cls.snapshot, "runs.db-wal"), "rb") as f:
            cls.wal = f.read()
        cls.page, cls.commits = wal_commits(cls.wal)

    @staticmethod
    def record(srv, n):
        """n runs, one after the other, each waited for: [(run_id, terminal Run)]."""
        c = Client(srv)
        try:
            runs = []
            for _ in range(n):
                run = c.wait(c.start("child", "ok").run_id)
                assert run.status == COMPLETED, run
                runs.append((run.run_id, run))
            return runs
        finally:
            c.close()

    def restart(self, wal):
        """A server on a copy of the data directory whose runs.db-wal is `wal` (None: no
        WAL file); checks it as the module says, stops it, checks the file."""
        data_dir = os.path.join(temp_dir("prismq-torn-"), "var")
        shutil.copytree(self.snapshot, data_dir)
        path = os.path.join(data_dir, "runs.db-wal")
        if wal is None:
            os.unlink(path)
        else:
            with open(path, "wb") as f:
                f.write(wal)
        with Server(CFG, extra_args=("--data-dir", data_dir)) as srv:
            present = self.check(srv)
        self.assertEqual(srv.returncode, 0, "prismqd exit")
        db = sqlite3.connect(os.path.join(data_dir, "runs.db"))
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            self.assertEqual(db.execute("SELECT count(*) FROM runs").fetchone()[0],
                             CLEAN_RUNS + present + 1)
        finally:
            db.close()
        return present

    def check(self, srv):
        """Returns how many of the killed server's runs are present."""
        c = Client(srv)
        try:
            listed = {r.run_id: r for r in c.list(page_size=1000).runs}
            for rid, run in self.clean:
                self.assertEqual(c.get(rid), run)
            present = []
            for rid, run in self.killed:
                try:
                    present.append((rid, run, c.get(rid)))
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND, e.details())
            # A prefix of them, in start order; all but the last as they were.
            ids = [rid for rid, _, _ in present]
            self.assertEqual(ids, [rid for rid, _ in self.killed[:len(ids)]])
            self.assertEqual(set(listed), {rid for rid, _ in self.clean} | set(ids))
            for i, (rid, before, now) in enumerate(present):
                if now == before:
                    continue
                self.assertEqual(i, len(present) - 1, "%s changed: %s" % (rid, now))
                if now.status == LOST:
                    self.assertTrue(now.error_message.startswith(LOST_MESSAGE), now)
                    self.assertTrue(b"ok\n".startswith(c.output(rid)[0]), now)
                else:
                    # It had not started, as far as the table knew: queued again, it runs.
                    again = c.wait(rid)
                    self.assertEqual(status_name(again.status), status_name(COMPLETED), again)
                    self.assertEqual(c.output(rid), (b"ok\n", b""))
            new = c.wait(c.start("child", "ok").run_id)
            self.assertEqual(status_name(new.status), status_name(COMPLETED), new)
            self.assertEqual(c.output(new.run_id), (b"ok\n", b""))
            return len(present)
        finally:
            c.close()

    def test_wal_as_left(self):
        """The reference: the WAL as the kill left it holds every run."""
        self.assertEqual(self.commits[-1], len(self.wal), "the WAL ends with a commit")
        self.assertEqual(self.restart(self.wal), KILLED_RUNS)

    def test_torn_last_frame(self):
        for cut in (3, 100, FRAME_HEADER + self.page - 1):
            with self.subTest(cut=cut):
                self.assertGreaterEqual(self.restart(self.wal[:-cut]), KILLED_RUNS - 1)

    def test_garbage_appended(self):
        frame = b"\xa5" * (FRAME_HEADER + self.page)
        for tail in (frame, frame + b"torn", b"\x00" * 7):
            with self.subTest(tail=len(tail)):
                self.assertEqual(self.restart(self.wal + tail), KILLED_RUNS)

    def test_cut_at_every_commit(self):
        """As many runs come back as the cut keeps, never fewer for a longer log."""
        counts = []
        for end in [WAL_HEADER] + self.commits:
            with self.subTest(end=end):
                counts.append(self.restart(self.wal[:end]))
        self.assertEqual(counts[-1], KILLED_RUNS)
        self.assertEqual(counts, sorted(counts))

    def test_wal_lost(self):
        """Without the WAL (or with a torn header) what only it held is lost, not the
        database."""
        for name, wal in (("deleted", None), ("torn header", self.wal[:WAL_HEADER - 5])):
            with self.subTest(wal=name):
                self.restart(wal)


if __name__ == "__main__":
    unittest.main()
