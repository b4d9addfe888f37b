"""The web page at / in a real browser: headless Chromium driven by Selenium (Debian's
chromium, chromium-driver and python3-selenium; scripts/deps.sh installs them) against
the real prismqd. The page loads nothing from elsewhere and lays out without
horizontal scrolling at 1280x800 and at 390x844 (a phone); a module is started from
the form built from its ParameterSpecs (a preset, typed inputs, a secret, labels);
its live output shows stdout and stderr apart, ANSI colours as styled spans and no
escape characters; the status turns COMPLETED at the end; progress shows as a bar; a
long run is cancelled with the Cancel button; the output follows the end unless the reader scrolls up, and keeps
only its last lines; the runs list pages and its status filter narrows it; a bad
parameter is shown under its field. Any JavaScript console error fails the case it
happens in. Screenshots (PNG) go to <build dir>/test-output/test_ui/.

Missing browser parts fail the test (they are required, not optional)."""

import json
import os
import re
import sys
import unittest
import urllib.request

from prismq_testlib import BIN_DIR, WAIT, Server, temp_dir

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:
    sys.exit("test_ui: python3-selenium is required (scripts/deps.sh installs it): %s" % e)
for _path in (CHROMIUM, CHROMEDRIVER):
    if not os.access(_path, os.X_OK):
        sys.exit("test_ui: %s is required (scripts/deps.sh installs chromium and "
                 "chromium-driver)" % _path)

# Every wait on the page (WAIT grows under valgrind, where the server answers slower).
T = 2 * WAIT
OUT_DIR = os.path.join(os.environ.get("PRISMQ_BUILD", os.path.dirname(os.path.abspath(BIN_DIR))),
                       "test-output", "test_ui")
MODULES = 8  # in CONFIG

CONFIG = r"""
listen: ["tcp://127.0.0.1:0"]
modules:
  - id: colours
    name: Colours
    description: Lines on stdout and stderr, some in ANSI colours
    category: test
    tags: [output, ansi]
    argv:
      - sh
      - -c
      - |
        i=0
        while [ "$i" -lt "$1" ]; do
          i=$((i + 1))
          echo "out $i $2"
          echo "err $i" >&2
        done
        printf 'before \033[31mred\033[0m plain \033[1;92mbright\033[0m after\n'
        printf 'bad \033]0;title\007\033[2Kend\n' >&2
      - colours
      - "{n}"
      - "{word}"
    parameters:
      - {name: n, type: integer, min: 1, max: 1000, default: "3", description: how many pairs}
      - {name: word, pattern: "[a-z]+", required: true, description: printed on stdout}
      - {name: mode, type: select, options: [fast, slow], default: fast}
      - {name: ratio, type: number, min: 0.5, max: 2}
      - {name: verbose, type: boolean, default: "true"}
      - {name: token, type: secret, env_var: TOKEN}
    presets:
      - {name: two, description: two pairs, parameters: {n: "2"}}
  - id: wait
    name: Wait
    description: Sleeps a minute (cancel it)
    category: test
    argv: [sleep, "60"]
  - id: ticks
    name: Ticks
    description: A line every 20 ms until cancelled
    category: test
    argv: [sh, -c, 'i=0; while :; do i=$((i + 1)); echo "tick $i"; sleep 0.02; done']
  - id: many
    name: Many
    description: Prints the lines 1 to N at once
    category: test
    argv: [seq, 1, "{n}"]
    parameters:
      - {name: n, type: integer, min: 1, default: "6000"}
  - id: steps
    name: Steps
    description: Reports its progress in its output
    category: test
    argv: [sh, -c, 'echo "PROGRESS 1/4 one"; echo "PROGRESS 2/4 two"']
    progress: {pattern: '^PROGRESS (?P<done>\d+)/(?P<total>\d+)(?: (?P<message>.*))?$'}
  - id: quick
    name: Quick
    description: Does nothing
    category: other
    argv: ["true"]
  - id: files
    name: Files
    description: Lists a path under /nonexistent
    category: other
    argv: [ls, "{path}"]
    parameters:
      - {name: path, type: path, base_dir: /nonexistent, default: /nonexistent}
  - id: off
    name: Off
    description: A module that is switched off
    argv: ["true"]
    enabled: false
"""


class Browser(unittest.TestCase):
    """One prismqd and one headless Chromium for the class; each case checks the
    browser's console at its end."""

    @classmethod
    def setUpClass(cls):
        os.makedirs(OUT_DIR, exist_ok=True)
        cls.server = Server(config_yaml=CONFIG).start()
        cls.base = "http://%s" % cls.server.addr
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        # --no-sandbox: the tests may run as root. The rest keep Chromium from talking
        # to anything but the server.
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,800", "--no-first-run", "--no-default-browser-check",
                  "--disable-extensions", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--user-data-dir=" + temp_dir("prismq-chromium-")):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        except Exception:
            cls.server.stop()
            raise
        cls.driver.set_page_load_timeout(T)
        cls.driver.set_script_timeout(T)
        cls.viewport(1280, 800)

    @classmethod
    def viewport(cls, width, height, mobile=False):
        """The page's viewport exactly (a headless window's size includes its frame)."""
        cls.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1,
            "mobile": mobile})

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        code = cls.server.stop()
        if code != 0:
            sys.stderr.write("--- prismqd log ---\n%s--- end ---\n" % cls.server.log_text())
        assert code == 0, "prismqd exited with %s" % code

    def setUp(self):
        self.d = self.driver
        self.allowed_console = []  # regexes of console errors a case expects
        self.log_start = self.server.log_len()
        self.d.get_log("browser")  # what earlier cases left

    def tearDown(self):
        entries = self.d.get_log("browser")
        bad = [e for e in entries if e["level"] == "SEVERE"
               and not any(re.search(rx, e["message"]) for rx in self.allowed_console)]
        self.assertEqual(bad, [], "JavaScript console errors")

    def run(self, result=None):
        """A case that fails leaves a screenshot of the page (FAILED-<case>.png) and
        the server's log lines written meanwhile on stderr."""
        bad = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > bad:
            try:
                self.shot("FAILED-" + self._testMethodName)
            except Exception as e:  # the browser may be what failed
                sys.stderr.write("no screenshot: %s\n" % e)
            sys.stderr.write("--- prismqd log during %s ---\n%s--- end ---\n"
                             % (self.id(), self.server.log_text(getattr(self, "log_start", 0))))
        return out

    # -- helpers -------------------------------------------------------------------

    def shot(self, name):
        path = os.path.join(OUT_DIR, name + ".png")
        self.assertTrue(self.d.save_screenshot(path), path)
        return path

    def wait(self, cond, what):
        """Waits (at most T seconds) until cond() is true-ish; returns its value. A
        stale element (the page redrew it) counts as not yet."""
        def check(_):
            try:
                return cond()
            except StaleElementReferenceException:
                return False
        return WebDriverWait(self.d, T).until(check, message=what)

    def open(self, hash_path):
        self.d.get(self.base + "/" + hash_path)
        return self.wait(lambda: self.d.execute_script("return document.readyState") == "complete",
                         "the page loaded")

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=T) as r:
            return json.loads(r.read())

    def run_id_from_url(self):
        url = self.wait(lambda: "#/runs/" in self.d.current_url and self.d.current_url,
                        "the run page")
        return url.rsplit("#/runs/", 1)[1]

    def status(self):
        return self.d.find_element(By.ID, "run-status").text

    def output_lines(self, cls):
        return self.d.execute_script(
            "return Array.from(document.querySelectorAll('#output .line.' + arguments[0]),"
            " (e) => e.textContent)", cls)

    def no_horizontal_overflow(self):
        sizes = self.d.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        self.assertLessEqual(sizes[0], sizes[1], "the page scrolls sideways: %r" % sizes)

    def card(self, module):
        """The module's card, with its start form opened."""
        card = self.wait(lambda: self.d.find_element(By.CSS_SELECTOR,
                                                     "section.card[data-module='%s']" % module),
                         "the card of " + module)
        details = card.find_element(By.CSS_SELECTOR, "details.start")
        if details.get_attribute("open") is None:
            details.find_element(By.TAG_NAME, "summary").click()
        return card

    def start_from_form(self, module):
        self.open("#/modules")
        card = self.card(module)
        card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        return self.run_id_from_url()

    # -- cases -----------------------------------------------------------------------

    def test_page_self_contained_at_1280x800(self):
        self.open("#/modules")
        cards = self.wait(lambda: len(self.d.find_elements(By.CSS_SELECTOR, "section.card"))
                          == MODULES and self.d.find_elements(By.CSS_SELECTOR, "section.card"),
                          "every module's card")
        self.assertEqual(self.d.execute_script("return [innerWidth, innerHeight]"), [1280, 800])
        self.assertEqual(self.d.title, "Modules · PrismQ Runner")
        text = cards[0].text
        self.assertIn("Lines on stdout and stderr", text)
        self.assertIn("test", text)  # the category
        self.assertIn("ansi", text)  # a tag
        off = self.card("off")
        self.assertFalse(off.find_element(By.CSS_SELECTOR, "button[type=submit]").is_enabled())
        # Everything the page loaded came from the server (the page, its files, the
        # JSON calls).
        urls = self.d.execute_script(
            "return [location.href].concat(performance.getEntriesByType('resource')"
            ".map((e) => e.name))")
        self.assertGreaterEqual(len(urls), 4, urls)  # page, style, script, API
        for u in urls:
            self.assertTrue(u.startswith(self.base + "/"), u)
        self.no_horizontal_overflow()
        # The filter box narrows the cards.
        box = self.d.find_element(By.ID, "module-search")
        box.send_keys("ansi")
        shown = lambda: [c.get_attribute("data-module") for c in
                         self.d.find_elements(By.CSS_SELECTOR, "section.card") if c.is_displayed()]
        self.wait(lambda: shown() == ["colours"], "only the module tagged ansi")
        box.clear()
        box.send_keys(" ")  # clear() fires no input event
        self.wait(lambda: len(shown()) == MODULES, "every card again")
        self.shot("modules-1280x800")

    def test_start_from_form_live_output(self):
        self.open("#/modules")
        card = self.card("colours")
        form = card.find_element(By.CSS_SELECTOR, "form")
        field = lambda name: form.find_element(By.CSS_SELECTOR, "[data-param='%s']" % name)
        # One control per parameter type, with the spec's bounds and defaults.
        n = field("n")
        self.assertEqual((n.get_attribute("type"), n.get_attribute("min"), n.get_attribute("max"),
                          n.get_attribute("step"), n.get_attribute("value")),
                         ("number", "1", "1000", "1", "3"))
        word = field("word")
        self.assertEqual((word.get_attribute("type"), word.get_attribute("pattern")),
                         ("text", "[a-z]+"))
        self.assertIsNotNone(word.get_attribute("required"))
        self.assertEqual(Select(field("mode")).first_selected_option.text, "fast")
        self.assertEqual([o.text for o in Select(field("mode")).options],
                         ["(default)", "fast", "slow"])
        ratio = field("ratio")
        self.assertEqual((ratio.get_attribute("step"), ratio.get_attribute("min")), ("any", "0.5"))
        self.assertEqual(field("verbose").get_attribute("type"), "checkbox")
        self.assertTrue(field("verbose").is_selected())
        self.assertEqual(field("token").get_attribute("type"), "password")
        self.assertIn("*", form.find_element(By.CSS_SELECTOR, "label[for='%s']"
                                             % word.get_attribute("id")).text)
        # The preset fills the form; the form's values go over it.
        Select(form.find_element(By.CSS_SELECTOR, "select.preset-select")).select_by_value("two")
        self.assertEqual(n.get_attribute("value"), "2")
        n.clear()
        n.send_keys("4")
        word.send_keys("abc")
        field("token").send_keys("s3cret-value")
        form.find_element(By.CSS_SELECTOR, "textarea.labels-input").send_keys("purpose=ui\nteam=qa")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        run_id = self.run_id_from_url()
        self.wait(lambda: "out 4 abc" in self.output_lines("stdout"), "the last stdout line")
        self.wait(lambda: "bad end" in self.output_lines("stderr"), "the last stderr line")
        self.wait(lambda: self.status() == "COMPLETED", "COMPLETED")
        self.wait(lambda: self.d.find_element(By.ID, "output-state").text == "ended",
                  "the stream closed at its end event")
        out, err = self.output_lines("stdout"), self.output_lines("stderr")
        self.assertEqual([l for l in out if l.startswith("out")],
                         ["out %d abc" % i for i in range(1, 5)])
        self.assertEqual([l for l in err if l.startswith("err")],
                         ["err %d" % i for i in range(1, 5)])
        # ANSI SGR: spans with the colour classes; other sequences (OSC, erase line)
        # gone; no escape character left anywhere.
        self.assertIn("before red plain bright after", out)
        red = self.d.find_element(By.CSS_SELECTOR, "#output .line.stdout span.fg1")
        self.assertEqual(red.text, "red")
        bright = self.d.find_element(By.CSS_SELECTOR, "#output .line.stdout span.fg10.b")
        self.assertEqual(bright.text, "bright")
        colour = lambda e: self.d.execute_script("return getComputedStyle(arguments[0]).color", e)
        plain = self.d.find_element(By.CSS_SELECTOR, "#output .line.stdout")
        self.assertNotEqual(colour(red), colour(plain))
        stderr_line = self.d.find_element(By.CSS_SELECTOR, "#output .line.stderr")
        self.assertNotEqual(colour(stderr_line), colour(plain))
        text = self.d.find_element(By.ID, "output").get_attribute("textContent")
        self.assertNotIn("\x1b", text)
        self.assertNotIn("title", text)
        # Colours off: the same spans, no colour.
        self.d.find_element(By.ID, "output-colours").click()
        self.assertEqual(colour(red), colour(plain))
        self.d.find_element(By.ID, "output-colours").click()
        # The details: parameters with the secret redacted by the server, labels,
        # preset, exit code; the Cancel button off.
        details = self.d.find_element(By.ID, "run-details").text
        params = self.d.find_element(By.ID, "run-parameters").text
        for kv in ("n=4", "word=abc", "mode=fast", "verbose=true", "token=***"):
            self.assertIn(kv, params)
        self.assertNotIn("s3cret", self.d.find_element(By.TAG_NAME, "body").text)
        self.assertIn("purpose=ui", details)
        self.assertIn("team=qa", details)
        self.assertIn("two", details)
        self.assertEqual(self.d.find_element(By.ID, "run-exit").text, "0")
        self.assertFalse(self.d.find_element(By.ID, "cancel").is_enabled())
        run = self.api("GET", "/v1/runs/" + run_id)
        self.assertEqual((run["status"], run["preset"], run["labels"]),
                         ("RUN_STATUS_COMPLETED", "two", {"purpose": "ui", "team": "qa"}))
        self.no_horizontal_overflow()
        self.shot("run-1280x800")

    def test_cancel(self):
        run_id = self.start_from_form("wait")
        self.wait(lambda: self.status() == "RUNNING", "RUNNING")
        cancel = self.wait(lambda: self.d.find_element(By.ID, "cancel").is_enabled() and
                           self.d.find_element(By.ID, "cancel"), "Cancel enabled")
        cancel.click()
        self.wait(lambda: self.status() == "CANCELLED", "CANCELLED")
        self.wait(lambda: not self.d.find_element(By.ID, "cancel").is_enabled(), "Cancel disabled")
        self.wait(lambda: self.d.find_element(By.ID, "output-state").text == "ended",
                  "the stream's end")
        self.assertEqual(self.api("GET", "/v1/runs/" + run_id)["status"], "RUN_STATUS_CANCELLED")
        self.shot("cancelled-1280x800")

    def test_follow_stops_when_scrolled_up(self):
        run_id = self.start_from_form("ticks")
        pre = self.wait(lambda: self.d.find_element(By.ID, "output"), "the output")
        gap = ("return arguments[0].scrollHeight - arguments[0].scrollTop"
               " - arguments[0].clientHeight")
        count = lambda: len(self.output_lines("stdout"))
        try:
            # It fills the box and stays at its end.
            self.wait(lambda: self.d.execute_script(
                "return arguments[0].scrollHeight > 2 * arguments[0].clientHeight", pre),
                "more output than the box shows")
            self.wait(lambda: self.d.execute_script(gap, pre) < 30, "at the end")
            # Scrolled up, it stays there while lines come, and offers to follow.
            self.d.execute_script("arguments[0].scrollTop = 0", pre)
            jump = self.wait(lambda: self.d.find_element(By.ID, "output-jump").is_displayed() and
                             self.d.find_element(By.ID, "output-jump"), "the follow button")
            n = count()
            self.wait(lambda: count() >= n + 20, "more lines")
            self.assertEqual(self.d.execute_script("return arguments[0].scrollTop", pre), 0)
            # Back at the end, it follows again.
            jump.click()
            self.wait(lambda: not jump.is_displayed(), "the follow button gone")
            n = count()
            self.wait(lambda: count() >= n + 20, "more lines")
            self.wait(lambda: self.d.execute_script(gap, pre) < 30, "still at the end")
        finally:
            self.api("POST", "/v1/runs/%s:cancel" % run_id)
        self.wait(lambda: self.status() == "CANCELLED", "CANCELLED")

    def test_progress(self):
        self.start_from_form("steps")
        self.wait(lambda: self.status() == "COMPLETED", "COMPLETED")
        bar = lambda: self.d.find_element(By.CSS_SELECTOR, "#run-progress progress")
        self.wait(lambda: bar().get_attribute("value") == "2", "2 steps done")
        self.assertEqual(bar().get_attribute("max"), "4")
        self.assertIn("50 % (2 of 4) · two", self.d.find_element(By.ID, "run-progress").text)

    def test_output_keeps_the_last_lines(self):
        run_id = self.start_from_form("many")  # 6000 lines
        self.wait(lambda: self.status() == "COMPLETED", "COMPLETED")
        self.wait(lambda: self.d.find_element(By.ID, "output-state").text == "ended", "the end")
        lines = self.wait(lambda: self.output_lines("stdout"), "the lines")
        self.assertEqual(len(lines), 5000)
        self.assertEqual((lines[0], lines[-1]), ("1001", "6000"))
        self.assertIn("1000 earlier lines not shown",
                      self.d.find_element(By.ID, "output-dropped").text)
        self.assertEqual(self.api("GET", "/v1/runs/" + run_id)["status"], "RUN_STATUS_COMPLETED")

    def test_runs_list_filter_and_pages(self):
        done = self.api("POST", "/v1/runs", {"moduleId": "quick"})
        for _ in range(25):  # 26 in all: two pages of 25
            self.api("POST", "/v1/runs", {"moduleId": "quick"})
        long = self.api("POST", "/v1/runs", {"moduleId": "wait"})
        self.api("GET", "/v1/runs/%s:wait?timeout_ms=%d" % (done["runId"], T * 1000))
        rows = lambda: [r.get_attribute("data-run-id") for r in
                        self.d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")]
        try:
            self.open("#/runs")
            self.wait(lambda: long["runId"] in rows(), "the running run listed")
            # The status filter narrows the list (and lands in the address).
            status = Select(self.d.find_element(By.ID, "filter-status"))
            status.select_by_value("RUN_STATUS_RUNNING")
            self.wait(lambda: "status=RUN_STATUS_RUNNING" in self.d.current_url, "the filter")
            self.wait(lambda: rows() and done["runId"] not in rows(), "only running runs")
            self.assertIn(long["runId"], rows())
            for s in self.d.find_elements(By.CSS_SELECTOR, "#runs-table tbody .status"):
                self.assertEqual(s.text, "RUNNING")
            self.shot("runs-running-1280x800")
            # The module filter, and the pages.
            self.open("#/runs?module_id=quick")
            self.wait(lambda: len(rows()) == 25, "a full first page")
            page1 = rows()
            nxt = self.d.find_element(By.ID, "next-page")
            self.wait(lambda: nxt.is_enabled(), "a next page")
            nxt.click()
            self.wait(lambda: "page_token=" in self.d.current_url, "the second page")
            self.wait(lambda: len(rows()) >= 1 and set(rows()).isdisjoint(page1), "other runs")
            self.assertFalse(self.d.find_element(By.ID, "next-page").is_enabled())
            self.assertEqual(len(page1) + len(rows()), 26)
            self.assertIn(done["runId"], page1 + rows())
            self.no_horizontal_overflow()
        finally:
            self.api("POST", "/v1/runs/%s:cancel" % long["runId"])

    def test_bad_parameter_shown_at_its_field(self):
        # The browser cannot check a path's confinement: the server refuses it (400,
        # which Chrome reports on the console) and the page shows why under the field.
        self.allowed_console = [r"/v1/runs - Failed to load resource: .* 400"]
        self.open("#/modules")
        card = self.card("files")
        path = card.find_element(By.CSS_SELECTOR, "[data-param='path']")
        path.clear()
        path.send_keys("../etc")
        card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        err = card.find_element(By.ID, path.get_attribute("aria-describedby"))
        self.wait(lambda: err.text, "the field's error")
        self.assertEqual(err.text, 'parameter "path" leads outside /nonexistent')
        self.assertIn("#/modules", self.d.current_url)
        self.assertTrue(card.find_element(By.CSS_SELECTOR, "[role=alert]").is_displayed())
        self.shot("bad-parameter-1280x800")

    def test_phone_viewport(self):
        done = self.api("POST", "/v1/runs", {"moduleId": "colours", "parameters": {"word": "x"}})
        self.api("GET", "/v1/runs/%s:wait?timeout_ms=%d" % (done["runId"], T * 1000))
        self.viewport(390, 844, mobile=True)
        try:
            self.open("#/modules")
            self.wait(lambda: len(self.d.find_elements(By.CSS_SELECTOR, "section.card")) == MODULES,
                      "the cards")
            self.assertEqual(self.d.execute_script("return innerWidth"), 390)
            self.card("colours")
            self.no_horizontal_overflow()
            self.shot("modules-390x844")
            self.open("#/runs")
            self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr"), "runs")
            self.no_horizontal_overflow()
            self.shot("runs-390x844")
            self.open("#/runs/" + done["runId"])
            self.wait(lambda: self.status() == "COMPLETED", "COMPLETED")
            self.wait(lambda: "out 3 x" in self.output_lines("stdout"), "the output")
            self.no_horizontal_overflow()
            self.shot("run-390x844")
        finally:
            self.viewport(1280, 800)


if __name__ == "__main__":
    unittest.main()
