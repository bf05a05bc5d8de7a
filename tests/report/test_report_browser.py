"""report.html in a real headless browser (Chromium): every image loads, nothing overflows the page width, and the
first screen (1400 x 900) holds the answer and the verdict table.

The page itself has no scripts; a copy of it gets one measuring script appended, Chromium loads the copy from disk
(``--dump-dom`` after the load event) and the script's findings are read back from the dumped DOM. Skipped with the
reason where no Chromium is installed (``.ci/run`` installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from codedyn.report.html import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1400, 900

MEASURE = """<script>
window.addEventListener("load", () => {
  const box = (el) => { if (!el) return null; const r = el.getBoundingClientRect();
                        return {top: r.top + scrollY, bottom: r.bottom + scrollY, right: r.right}; };
  const images = [...document.images].map((im) => ({alt: im.alt, complete: im.complete, width: im.naturalWidth,
                                                     right: im.getBoundingClientRect().right}));
  const wide = [...document.querySelectorAll("body *")].filter((el) => el.getBoundingClientRect().right
                 > innerWidth + 0.5 && !el.closest(".scroll,pre,details:not([open])"))
                 .map((el) => el.tagName + "." + el.className).slice(0, 10);
  const out = {inner: innerWidth, innerHeight: innerHeight, scroll: document.documentElement.scrollWidth,
               images: images, svgs: document.querySelectorAll("svg.spark").length, wide: wide,
               answer: box(document.getElementById("answer")),
               table: box(document.querySelector("#summary table.verdicts"))};
  const pre = document.createElement("pre"); pre.id = "browser-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser():
    path = _browser()
    if path is None:
        pytest.skip("no Chromium found (tried " + ", ".join(BROWSERS) + "); `apt-get install chromium` enables "
                    "this test, .ci/run does so where apt-get is available")
    return path


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-extensions", f"--window-size={WIDTH},{HEIGHT}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_renders_in_a_browser(study, browser, tmp_path):  # noqa: F811
    page = write_report(study)
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 5 * 2**20
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)  # self-contained: nothing from the network
    probe = page.with_name("report.browser-check.html")  # next to the report, so relative links resolve alike
    probe.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    try:
        done = _run(browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the browser gave no measurement (exit {done.returncode}): {done.stderr[-2000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">"))
    assert check["inner"] == WIDTH

    # Every image loads (decodes to a real size) and fits the page.
    assert len(check["images"]) >= 9
    broken = [im["alt"] for im in check["images"] if not im["complete"] or im["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    assert all(im["right"] <= WIDTH for im in check["images"])
    assert check["svgs"] >= 9  # one sparkline per measured signal

    # Nothing overflows the page width.
    assert check["scroll"] <= check["inner"], f"page is {check['scroll']} px wide: {check['wide']}"
    assert not check["wide"], f"elements past the right edge: {check['wide']}"

    # The first screen holds the answer and the whole verdict table.
    assert check["answer"]["top"] < check["table"]["top"]
    assert check["answer"]["bottom"] <= HEIGHT, check["answer"]
    assert check["table"]["bottom"] <= HEIGHT, f"verdict table ends at {check['table']['bottom']} px"


def test_first_screen_screenshot(study, browser, tmp_path):  # noqa: F811
    """The first screen as a picture (a real render, not only the DOM): a PNG of the viewport size with more
    than one colour in it."""
    from PIL import Image

    page = write_report(study)
    shot = tmp_path / "first_screen.png"
    done = _run(browser, f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50
