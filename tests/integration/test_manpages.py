"""The manual pages, docs/man/prismqd.8 and docs/man/prismq.1, against the programs
they describe, so that the two cannot drift apart:

  - each page renders without a warning (groff -ww), as PostScript and as man shows it
    on a terminal; skipped where groff is not installed (scripts/deps.sh installs
    groff-base);
  - every long and short option that `prismqd --help` and `prismq --help` print is an
    option of the page's OPTIONS (GLOBAL OPTIONS) section, and every option there is one
    the program prints (or -h/--help, which both accept); the environment variables the
    usages name are in ENVIRONMENT;
  - every command `prismq help` lists has a subsection of COMMANDS, in that order, and
    no subsection is for a command that is gone; the options of each subsection are
    those `prismq help COMMAND` prints (-h/--help, which every command takes, is said
    once before them);
  - `cmake --install` puts both pages where man looks for them: MANDIR/man8/prismqd.8
    and MANDIR/man1/prismq.1, unchanged (and `man -M MANDIR -w` finds them, where man is
    installed).

The pages are read in their roff source, with the escapes that print an option
(\\-, \\fB...\\fR, \\&, \\c) taken out: no groff is needed for the comparisons.
"""

import os
import re
import shutil
import subprocess
import unittest

from prismq_testlib import BIN_DIR, WAIT, temp_dir

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN_DIR = os.path.join(REPO, "docs", "man")
BUILD = os.environ.get("PRISMQ_BUILD", os.path.dirname(BIN_DIR))
PRISMQD_PAGE = os.path.join(MAN_DIR, "prismqd.8")
PRISMQ_PAGE = os.path.join(MAN_DIR, "prismq.1")

# An option as a token of its own: --data-dir, -p; not dry-run, Ctrl-C, --tls-*.
OPTION = re.compile(r"(?<![\w\-*])(--[A-Za-z][\w-]*|-[A-Za-z])(?![\w\-*])")
HELP_OPTIONS = {"-h", "--help"}


def program(name, *args):
    """stdout of a program of BIN_DIR, which must exit 0."""
    r = subprocess.run([os.path.join(BIN_DIR, name)] + list(args), capture_output=True,
                       timeout=WAIT)
    assert r.returncode == 0, (name, args, r.returncode, r.stderr)
    return r.stdout.decode()


def plain(line):
    """A roff source line with the escapes that print text taken out: \\- is -, font
    changes, \\& and \\c are nothing, \\e is a backslash."""
    line = line.replace("\\-", "-").replace("\\e", "\\")
    line = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", line)
    return line.replace("\\&", "").replace("\\c", "")


class Page:
    """A page's source: its sections (.SH), their subsections (.SS) and the part of
    each section before its first subsection, each a list of lines with the escapes
    taken out; comment lines left out."""

    def __init__(self, path):
        self.path = path
        with open(path, encoding="utf-8") as f:
            self.lines = [l.rstrip("\n") for l in f if not l.startswith('.\\"')]
        self.sections, self.subsections, self.intros = {}, {}, {}
        section = sub = None
        for line in self.lines:
            m = re.match(r"\.(SH|SS)\s+(.*)", line)
            if m:
                name = m.group(2).strip().strip('"')
                if m.group(1) == "SH":
                    section, sub = name, None
                    self.sections[section] = []
                    self.subsections[section] = {}
                    self.intros[section] = []
                else:
                    sub = name
                    self.subsections[section][sub] = []
                continue
            if section is None:
                continue
            self.sections[section].append(plain(line))
            if sub is not None:
                self.subsections[section][sub].append(plain(line))
            else:
                self.intros[section].append(plain(line))

    def text(self, section, sub=None):
        lines = self.sections.get(section) if sub is None else self.subsections[section].get(sub)
        assert lines is not None, f"{self.path}: no section {section!r} {sub or ''}"
        return "\n".join(lines)

    def tags(self, section, sub=None):
        """The tags of the .TP paragraphs of a section: the line after each .TP."""
        lines = self.text(section, sub).split("\n")
        return [lines[i + 1] for i, l in enumerate(lines[:-1]) if l.split()[:1] == [".TP"]]

    def tag_options(self, section, sub=None):
        return {o for tag in self.tags(section, sub) for o in OPTION.findall(tag)}


def options(text):
    return set(OPTION.findall(text))


def commands(help_text):
    """The commands of `prismq help`: the lines under "Commands:" up to a blank one."""
    out, inside = [], False
    for line in help_text.splitlines():
        if line.strip() == "Commands:":
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            out.append(line.split()[0])
    return out


class Render(unittest.TestCase):
    def setUp(self):
        if not shutil.which("groff"):
            self.skipTest("groff is not installed (scripts/deps.sh installs groff-base); "
                          "the rendering is not checked")

    def check(self, page, *device):
        r = subprocess.run(["groff", "-man", "-ww", "-z", "-t"] + list(device) + [page],
                           capture_output=True, timeout=WAIT)
        self.assertEqual((r.returncode, r.stderr.decode()), (0, ""), page)

    def test_pages_render_without_warnings(self):
        for page in (PRISMQD_PAGE, PRISMQ_PAGE):
            with self.subTest(page=os.path.basename(page)):
                self.check(page)               # PostScript, groff's default device
                self.check(page, "-Tutf8")     # a terminal, as man shows it


class Prismqd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.help = program("prismqd", "--help")
        cls.page = Page(PRISMQD_PAGE)

    def test_every_option_of_the_usage_is_in_options(self):
        want = options(self.help)
        self.assertIn("--config", want)  # the usage was read at all
        have = self.page.tag_options("OPTIONS")
        self.assertEqual(want - have, set(), "options of prismqd --help missing from OPTIONS")
        self.assertEqual(have - want - HELP_OPTIONS, set(), "options in OPTIONS that prismqd --help lacks")
        self.assertTrue(options(self.page.text("SYNOPSIS")) >= want - HELP_OPTIONS)

    def test_the_environment_of_the_usage_is_in_environment(self):
        m = re.search(r"^environment: (.*)$", self.help, re.M)
        self.assertIsNotNone(m, self.help)
        names = re.findall(r"\b[A-Z][A-Z0-9_]+\b", m.group(1))
        self.assertIn("PRISMQ_RUN_MODE", names)
        tags = " ".join(self.page.tags("ENVIRONMENT"))
        for name in names + ["PRISMQ_TEST_CLOCK_OFFSET_MS"]:
            self.assertRegex(tags, rf"\b{name}\b")
        env = self.page.text("ENVIRONMENT")
        for mode in re.search(r"PRISMQ_RUN_MODE=(\S+)", m.group(1)).group(1).split("|"):
            self.assertRegex(env, rf"(?<![\w-]){re.escape(mode)}(?![\w-])")

    def test_sections(self):
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "ENVIRONMENT",
                        "SIGNALS", "FILES", "EXIT STATUS", "SEE ALSO"):
            self.page.text(section)
        signals = " ".join(self.page.tags("SIGNALS"))
        for sig in ("SIGTERM", "SIGINT", "SIGHUP"):
            self.assertIn(sig, signals)
        files = " ".join(self.page.tags("FILES"))
        for f in ("runs.db", "output/"):
            self.assertIn(f, files)


class Prismq(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.help = program("prismq", "--help")
        cls.commands = commands(program("prismq", "help"))
        cls.page = Page(PRISMQ_PAGE)

    def test_every_global_option_is_in_global_options(self):
        # The usage up to the command list, and the block of global options (the lines
        # after them name the commands' -f).
        usage = self.help.split("\nCommands:")[0]
        block = self.help.split("\nGlobal options:\n")[1].split("\n\n")[0]
        want = options(usage + "\n" + block)
        self.assertIn("--tls-server-name", want)
        have = self.page.tag_options("GLOBAL OPTIONS")
        self.assertEqual(want - have, set(), "options of prismq --help missing from GLOBAL OPTIONS")
        self.assertEqual(have - want, set(), "options in GLOBAL OPTIONS that prismq --help lacks")
        self.assertTrue(options(self.page.text("SYNOPSIS")) >= want - HELP_OPTIONS)

    def test_the_environment_of_the_usage_is_in_environment(self):
        names = set(re.findall(r"\$(PRISMQ_[A-Z_]+)", self.help))
        self.assertIn("PRISMQ_TARGET", names)
        tags = " ".join(self.page.tags("ENVIRONMENT"))
        for name in names:
            self.assertRegex(tags, rf"\b{name}\b")

    def test_every_command_has_a_subsection(self):
        self.assertIn("run", self.commands)
        subs = list(self.page.subsections["COMMANDS"])
        self.assertEqual(subs, self.commands, "COMMANDS's subsections, in prismq help's order")

    def test_each_commands_options_are_in_its_subsection(self):
        for cmd in self.commands:
            with self.subTest(command=cmd):
                usage = program("prismq", "help", cmd)
                # -h/--help, which every command takes, is said once for all of them.
                want = options(usage) - HELP_OPTIONS
                self.assertIn(f"prismq {cmd}", self.page.text("COMMANDS", cmd))
                have = self.page.tag_options("COMMANDS", cmd)
                self.assertEqual(want - have, set(), f"options of prismq help {cmd} missing")
                self.assertEqual(have - want, set(), f"options that prismq help {cmd} lacks")
        self.assertTrue(options("\n".join(self.page.intros["COMMANDS"])) >= HELP_OPTIONS)


class Install(unittest.TestCase):
    def mandir(self):
        """CMAKE_INSTALL_MANDIR of the build, relative to the prefix."""
        cache = {}
        with open(os.path.join(BUILD, "CMakeCache.txt"), encoding="utf-8") as f:
            for line in f:
                m = re.match(r"(CMAKE_INSTALL_(?:MANDIR|DATAROOTDIR)):\w+=(.*)", line)
                if m:
                    cache[m.group(1)] = m.group(2).strip()
        mandir = cache.get("CMAKE_INSTALL_MANDIR") or os.path.join(
            cache.get("CMAKE_INSTALL_DATAROOTDIR") or "share", "man")
        if os.path.isabs(mandir):
            self.skipTest(f"CMAKE_INSTALL_MANDIR is absolute ({mandir}): not under a --prefix")
        return mandir

    def test_cmake_install_puts_the_pages_where_man_looks(self):
        mandir = self.mandir()
        prefix = temp_dir("prismq-man-install-")
        r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        root = os.path.join(prefix, mandir)
        for page, name, section in ((PRISMQD_PAGE, "prismqd", "8"), (PRISMQ_PAGE, "prismq", "1")):
            with self.subTest(page=name):
                installed = os.path.join(root, "man" + section, f"{name}.{section}")
                with open(page, "rb") as a, open(installed, "rb") as b:
                    self.assertEqual(a.read(), b.read(), installed)
                if shutil.which("man"):
                    r = subprocess.run(["man", "-M", root, "-w", section, name], capture_output=True,
                                       timeout=WAIT)
                    self.assertEqual((r.returncode, r.stdout.decode().strip()), (0, installed),
                                     r.stderr.decode())


if __name__ == "__main__":
    unittest.main()
