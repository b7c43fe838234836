"""The course site (`make docs`): it builds offline with warnings as errors, every internal link lands, and its front
page renders with its theme in a real headless browser.

The site is built once for this module, with the Makefile's own command, into a temporary folder.
"""
from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "outputs" / "site" / "front_page.png"
WINDOW = (1280, 900)
# As tests/test_serving.py runs it: headless, and nothing that reaches for the network at start.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_docs_command() -> list[str]:
    """The Makefile's `docs` recipe: its sphinx command, with $(BIN)/python as it is run here."""
    lines = (REPO / "Makefile").read_text().splitlines()
    recipe = lines[lines.index("docs: setup") + 1:]
    command = next(line for line in recipe if "-m sphinx" in line)
    return [sys.executable if word == "$(BIN)/python" else word for word in shlex.split(command)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(the finished build, the folder of its HTML)."""
    command = make_docs_command()
    assert command[-1] == "docs/_build/html", command
    html = tmp_path_factory.mktemp("site") / "html"
    build = subprocess.run(command[:-1] + [str(html)], cwd=REPO, capture_output=True, text=True, timeout=600)
    return build, html


def test_the_site_builds_offline_with_warnings_as_errors(site):
    build, html = site
    command = make_docs_command()
    assert {"-W", "--keep-going", "-n"} <= set(command), f"make docs must fail on warnings: {command}"
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
    assert "WARNING" not in build.stderr, build.stderr
    # The pages, and every course notebook rendered from its committed outputs.
    for page in ("index", "students", "instructors", "service", "performance", "scaling", "troubleshooting"):
        assert (html / "docs" / f"{page}.html").is_file(), page
    notebooks = sorted(path.stem for path in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks and all((html / "notebooks" / f"{name}.html").is_file() for name in notebooks)
    assert "cell_output" in (html / "notebooks" / f"{notebooks[0]}.html").read_text(encoding="utf-8")
    assert (html / "index.html").is_file()


class Links(HTMLParser):
    """The ids of a page and the links it makes (href and src)."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if tag == "a" and attributes.get("name"):
            self.ids.add(attributes["name"])
        for name in ("href", "src"):
            if attributes.get(name):
                self.links.append(attributes[name])


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def broken_links(html: Path) -> list[str]:
    """Every relative link of the built site that names a missing file, or an id its target page lacks."""
    # The site's pages; not the theme's template fragments that it copies into _static/ unrendered.
    pages = {page: parse(page) for page in sorted(html.rglob("*.html")) if "_static" not in page.relative_to(html).parts}
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue  # http(s):, mailto:, data:, javascript: ...: not this site's
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            where = f"{page.relative_to(html)}: {link}"
            if not target.is_relative_to(html.resolve()) and target != page:
                broken.append(f"{where} (leaves the site)")
            elif not target.exists():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no id {parts.fragment!r} in {target.relative_to(html.resolve())})")
    return broken


def test_every_internal_link_of_the_site_lands(site):
    build, html = site
    assert build.returncode == 0, "the site did not build: see the test above"
    html = html.resolve()
    assert len([page for page in html.rglob("*.html") if "_static" not in page.parts]) >= 20
    broken = broken_links(html)
    assert not broken, "\n".join(broken)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="no chromium here (CI installs it: apt-get install chromium)")
def test_the_front_page_renders_in_a_headless_browser(site, tmp_path):
    build, html = site
    assert build.returncode == 0, "the site did not build: see the first test"
    assert CHROMIUM, "CI must run this test: install chromium (apt-get install chromium)"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    # The entry point the README names: it forwards to the front page, docs/index.html, which is what is drawn.
    front_page = (html / "index.html").resolve()
    shot = subprocess.run(
        [CHROMIUM, *CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000", f"--screenshot={SCREENSHOT}",
         front_page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and SCREENSHOT.is_file(), shot.stdout + shot.stderr
    assert png_size(SCREENSHOT) == WINDOW
    # A page drawn with its theme (sidebar, fonts, colours) compresses far worse than the forwarding page, an empty
    # page or an unstyled one.
    assert 30_000 < SCREENSHOT.stat().st_size < 10_000_000, SCREENSHOT.stat().st_size
    # Laid out by the theme: the article fills the right half of the window with text, where unstyled HTML, stacked
    # at the left edge, leaves it blank.
    with Image.open(SCREENSHOT) as image:
        histogram = image.convert("L").crop((WINDOW[0] // 2, 0, *WINDOW)).histogram()
    assert sum(histogram[:200]) / sum(histogram) > 0.01, "the front page is drawn without its theme's layout"
