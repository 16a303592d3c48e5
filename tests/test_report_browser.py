"""The report in a real browser: headless Chromium opens index.html from disk with every network request blocked,
and the page must make no request but for itself, log no console error and throw nothing, and draw every figure
(an SVG with marks of non-zero size, or a non-blank canvas). A screenshot of each page goes to the test's tmp dir.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: fds 3 and 4, JSON
messages ended by NUL), with the standard library only: no driver binary and no pip package. Without Chromium the
tests are skipped, saying so (scripts/setup.sh installs Debian's `chromium` where apt-get is usable).

Select them with `pytest -m browser`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import test_report as TR

pytestmark = pytest.mark.browser

# every request fails before it leaves the machine: no name resolves, and every connection (loopback included)
# goes to a proxy on a port where nothing listens; DevTools' offline emulation on top
NETWORK_OFF = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
               "--proxy-bypass-list=<-loopback>"]
QUIET = ["--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
         "--metrics-recording-only", "--hide-scrollbars"]
WIDTH = 1280

FIGURES_JS = """
(() => Array.from(document.querySelectorAll('div.chart')).map(div => {
  const marks = Array.from(div.querySelectorAll('.cartesianlayer g.trace, .cartesianlayer g.hm'))
    .map(el => { const b = el.getBBox(); return b.width * b.height; }).filter(area => area > 0);
  const canvases = Array.from(div.querySelectorAll('canvas')).filter(c => {
    if (!c.width || !c.height) return false;
    const ctx = c.getContext('2d'); if (!ctx) return true;  // a WebGL canvas: sized is the best there is
    return ctx.getImageData(0, 0, c.width, c.height).data.some(v => v !== 0);
  });
  return {id: div.id, rendered: div.getAttribute('data-rendered'), svgs: div.querySelectorAll('svg.main-svg').length,
          marks: marks.length, canvases: canvases.length, height: div.getBoundingClientRect().height};
}))()
"""


def find_chromium() -> str | None:
    """Debian's chromium (or another Chromium build named by CUSTSEG_CHROMIUM)."""
    named = os.environ.get("CUSTSEG_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


class Chromium:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, binary: str, work: Path) -> None:
        cmd_r, cmd_w = os.pipe()  # our commands -> Chromium's fd 3
        evt_r, evt_w = os.pipe()  # Chromium's fd 4 -> its answers and events
        # above 10, so that moving them to 3 and 4 in the child never overwrites one with the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, evt_w)]
        for fd in (cmd_r, evt_w):
            os.close(fd)
        self.log_path = work / "chromium.log"
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={work / 'profile'}", f"--window-size={WIDTH},900", *QUIET, *NETWORK_OFF,
                "about:blank"]
        self.pid = os.posix_spawn(binary, args, dict(os.environ), setpgroup=0, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2), (os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)])
        for fd in (*high, log):
            os.close(fd)
        self.out, self.inp = cmd_w, evt_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return dict(m.get("result") or {})
            self.events.append(m)

    def wait_for(self, matches: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        for e in self.events:
            if matches(e):
                return e
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            self.events.append(m)
            if matches(m):
                return m

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError(f"no answer from Chromium (its log: {self.log_path})")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed its DevTools pipe (its log: {self.log_path})")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return dict(json.loads(message))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # it may be gone already
            self.send("Browser.close", timeout=10)
        for _ in range(50):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.killpg(self.pid, signal.SIGKILL)  # the process group started for this browser, nothing else
            os.waitpid(self.pid, 0)
        for fd in (self.out, self.inp):
            os.close(fd)


class Visit:
    """What one page did in a fresh tab: its requests, console errors, exceptions, figures and a screenshot."""

    def __init__(self, browser: Chromium, url: str, screenshot: Path, wait_for_charts: bool = True) -> None:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        first = len(browser.events)
        for method in ("Network.enable", "Runtime.enable", "Log.enable", "Page.enable"):
            browser.send(method, session=s)
        browser.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                          "uploadThroughput": -1}, session=s)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=s)
        browser.send("Page.navigate", {"url": url}, session=s)
        browser.wait_for(lambda e: e.get("method") == "Page.loadEventFired" and e.get("sessionId") == s)

        def evaluate(expression: str) -> Any:
            r = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=s)
            return r.get("result", {}).get("value")

        deadline = time.monotonic() + 60
        while wait_for_charts and evaluate("document.body.getAttribute('data-charts')") == "pending":
            assert time.monotonic() < deadline, "the charts did not finish drawing within 60 s"
            time.sleep(0.2)
        self.charts_state = evaluate("document.body.getAttribute('data-charts')")
        self.figures: list[dict[str, Any]] = evaluate(FIGURES_JS) or []
        self.pwned = evaluate("window.__pwned === undefined ? null : String(window.__pwned)")
        self.injected = evaluate("document.querySelectorAll('img, iframe, object, embed').length")
        height = int(evaluate("Math.ceil(document.documentElement.scrollHeight)") or 900)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": min(height, 16000),
                                                            "deviceScaleFactor": 1, "mobile": False}, session=s)
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=s)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        events = [e for e in browser.events[first:] if e.get("sessionId") == s]
        self.requests = [e["params"]["request"]["url"] for e in events
                         if e.get("method") == "Network.requestWillBeSent"]
        self.errors = [_describe(e) for e in events if _is_error(e)]
        browser.send("Target.closeTarget", {"targetId": target})


def _is_error(e: dict[str, Any]) -> bool:
    p = e.get("params") or {}
    return (e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error"))


def _describe(e: dict[str, Any]) -> str:
    p = e.get("params") or {}
    if e.get("method") == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        return f"exception: {d.get('exception', {}).get('description') or d.get('text')}"
    if e.get("method") == "Runtime.consoleAPICalled":
        return "console." + p.get("type", "") + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                for a in p.get("args", []))
    return f"log: {p.get('entry', {}).get('text')}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed, so the report was NOT checked in a browser (scripts/setup.sh "
                    "installs Debian's chromium when apt-get is usable; CUSTSEG_CHROMIUM names another build)")
    b = Chromium(binary, tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


def _network(urls: list[str]) -> list[str]:
    """The requests that could leave the page: not the data: URLs Plotly draws heatmaps from (in memory)."""
    return [u for u in urls if not u.startswith(("data:", "blob:"))]


def _check_page(visit: Visit, spec_count: int) -> None:
    assert visit.errors == [], visit.errors
    assert visit.charts_state == "rendered"
    assert len(visit.figures) == spec_count
    for f in visit.figures:
        assert f["rendered"] == "true" and f["height"] > 0, f
        assert f["svgs"] > 0 and (f["marks"] > 0 or f["canvases"] > 0), f"figure {f['id']} drew nothing: {f}"


def test_the_full_report_opens_offline_draws_every_figure_and_runs_nothing_injected(
        spark, tmp_path_factory, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = TR.over_time_report(spark, tmp_path_factory)
    url = report["path"].as_uri()
    visit = Visit(browser, url, tmp_path / "report.png")
    _check_page(visit, report["html"].count('type="application/json" id="chart-'))
    assert _network(visit.requests) == [url]  # the file itself, nothing else
    kinds = {f["id"].split("-")[1] for f in visit.figures}
    assert {"heatmap", "dist", "map", "selection", "attr", "migration", "kpi"} <= kinds
    assert visit.pwned is None and visit.injected == 0  # the hostile names stayed text
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_the_one_segment_report_opens_and_draws_what_it_has(spark, tmp_path_factory, browser,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = TR.one_segment_report(spark, tmp_path_factory)
    url = report["path"].as_uri()
    visit = Visit(browser, url, tmp_path / "one-segment.png")
    _check_page(visit, report["html"].count('type="application/json" id="chart-'))
    assert _network(visit.requests) == [url]
    assert {f["id"] for f in visit.figures} >= {"chart-heatmap", "chart-dist-0"}


def test_the_checks_catch_a_request_an_error_and_a_blank_figure(browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the same checks on a page that misbehaves: they are not vacuous
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body data-charts="rendered"><div class="chart" id="chart-x" '
                    'data-rendered="true" style="height:50px"><svg class="main-svg"></svg></div>'
                    '<script>fetch("http://report-test.invalid/data.json").catch(function () {});'
                    'console.error("broken on purpose");</script></body></html>', encoding="utf-8")
    visit = Visit(browser, page.as_uri(), tmp_path / "bad.png", wait_for_charts=False)
    assert any("report-test.invalid" in u for u in visit.requests), visit.requests
    assert any("broken on purpose" in e for e in visit.errors), visit.errors
    assert visit.figures == [{"id": "chart-x", "rendered": "true", "svgs": 1, "marks": 0, "canvases": 0,
                              "height": 50}]
