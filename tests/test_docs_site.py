"""The documentation site: a strict build whose pages render docstrings, maths and notebooks offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

REST = re.compile(r":(class|meth|func|mod|attr|data|exc|obj|math|ref|py:\w+):|^\s*\.\. [\w-]+::", re.MULTILINE)
"""What a reST role or directive leaves in a page when Markdown does not understand it."""

RAW_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^\s$][^$\n]*\$")
"""Maths delimiters (arithmatex's ``\\( \\)``, ``\\[ \\]``, and unconverted ``$``) in page text."""

TYPESET = {"arithmatex", "jp-MarkdownOutput", "md-nav__link"}
"""Classes of the elements MathJax typesets (``docs/javascripts/mathjax.js``, ``processHtmlClass``)."""

NETWORK = re.compile(r"(cdnjs|jsdelivr|unpkg|googleapis|gstatic|cdn\.)", re.IGNORECASE)
"""Hosts of content delivery networks."""


class PageText(HTMLParser):
    """A page's text: ``all`` (outside scripts and styles) and ``loose`` (also outside code and maths)."""

    SKIP = {"script", "style"}
    LITERAL = {"code", "pre"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[bool, bool]] = []  # (skipped, literal or typeset) per open element
        self.all: list[str] = []
        self.loose: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        skipped = tag in self.SKIP or (bool(self.stack) and self.stack[-1][0])
        shielded = tag in self.LITERAL or bool(classes & TYPESET) or (bool(self.stack) and self.stack[-1][1])
        self.stack.append((skipped, shielded))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        skipped, shielded = self.stack[-1] if self.stack else (False, False)
        if not skipped:
            self.all.append(data)
            if not shielded:
                self.loose.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", **os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "assets" not in p.relative_to(site).parts)


def text_of(page: Path) -> PageText:
    parser = PageText()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_no_rest_and_no_loose_maths(site):
    problems = []
    for page in pages(site):
        text = text_of(page)
        rel = page.relative_to(site)
        problems += [f"{rel}: reST {m.group(0)!r}" for m in REST.finditer("".join(text.all))]
        problems += [f"{rel}: maths outside MathJax {m.group(0)!r}" for m in RAW_MATH.finditer("".join(text.loose))]
    assert not problems, "\n".join(problems[:40])


def test_mathjax_served_by_the_site_and_no_cdn(site):
    assert (site / "assets" / "mathjax" / "tex-chtml.js").is_file()
    assert (site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    for page in pages(site):
        html = page.read_text(encoding="utf-8")
        assert not NETWORK.search(html), f"{page.relative_to(site)} names a CDN: {NETWORK.search(html).group(0)}"
        scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", html)
        assert not [s for s in scripts if re.match(r"(https?:)?//", s)], f"{page}: {scripts}"
        assert any(s.endswith("assets/mathjax/tex-chtml.js") for s in scripts), page


@pytest.mark.parametrize(
    "page, anchor, phrase",
    [
        ("api/core", "bioplaus.core.rule.Rule", "Subclasses override update"),
        ("api/spiking", "bioplaus.nets.thresholds.BDETT", "depolarization rate"),
        ("api/sequence", "bioplaus.nets.sab.AttentiveLSTM", "attends over a memory of its past states"),
        ("api/errors", "bioplaus.errors.ConfigError", "rule, model or task name is invalid"),
    ],
)
def test_api_pages_render_docstrings(site, page, anchor, phrase):
    html = (site / page / "index.html").read_text(encoding="utf-8")
    assert f'id="{anchor}"' in html
    after = html[html.index(f'id="{anchor}"') :]
    assert phrase.lower() in "".join(text_of_html(after[:20000]).all).lower()


def text_of_html(html: str) -> PageText:
    parser = PageText()
    parser.feed(html)
    return parser


def test_api_pages_link_and_typeset(site):
    html = (site / "api" / "spiking" / "index.html").read_text(encoding="utf-8")
    assert 'href="#bioplaus.nets.spiking.SpikingLinear"' in html or "#bioplaus.nets.spiking.SpikingLinear" in html
    assert 'class="arithmatex"' in html


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_pages_show_their_outputs(site, notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    html = (site / "notebooks" / notebook.stem / "index.html").read_text(encoding="utf-8")
    title = "".join(cells[0]["source"]).splitlines()[0].lstrip("# ").strip()
    assert title.split(":")[0] in html
    assert html.count("<img") >= images
    assert html.count("jp-OutputArea-output") >= min(len(outputs), 1)


OUTSIDE = re.compile(r"shared/|DESIGN\.md|research/|pitfall P\d|§|\bthe (research )?note\b|\bnote's\b", re.IGNORECASE)
"""What points at files that are not in the repository (design notes, research notes and their sections)."""

SCANNED = ["bioplaus", "docs", "experiments", "tests", "notebooks", "README.md", "mkdocs.yml"]
TEXT = {".py", ".md", ".ipynb", ".toml", ".c", ".cpp", ".h", ".yml", ".js", ".cfg"}


def test_the_project_speaks_of_itself_alone():
    paths = [ROOT / s for s in SCANNED if (ROOT / s).is_file()]
    paths += [p for s in SCANNED if (ROOT / s).is_dir() for p in (ROOT / s).rglob("*") if p.suffix in TEXT]
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}"
        for path in paths
        if path != Path(__file__).resolve()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "\n".join(hits)
