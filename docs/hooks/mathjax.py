"""MkDocs hook: serve MathJax from the built site, copied from an installed Python package.

The pages load ``assets/mathjax/tex-chtml.js`` (see ``extra_javascript`` in ``mkdocs.yml``);
this hook adds MathJax's ES5 build, fonts and TeX extensions included, to the site at that
path. They come from the ``django-static-mathjax`` package (MathJax 3, no Django needed), part of
the ``docs`` and ``dev`` extras, so the site renders mathematics offline and no page loads a CDN.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DEST = "assets/mathjax"
"""Folder of the site that holds MathJax's ES5 build."""


def mathjax_dir() -> Path:
    """The ES5 build of MathJax shipped by the ``django-static-mathjax`` package.

    Raises:
        PluginError: the package is not installed (the message names the install command).
    """
    spec = importlib.util.find_spec("mathjax")
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if es5 is None or not (es5 / "tex-chtml.js").is_file():
        raise PluginError(
            "MathJax is missing: the docs serve it from the django-static-mathjax package; "
            "run pip install -e '.[docs]' (or '.[dev]')"
        )
    return es5


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add every file of MathJax's ES5 build under ``assets/mathjax/``."""
    es5 = mathjax_dir()
    for path in sorted(p for p in es5.rglob("*") if p.is_file()):
        uri = f"{DEST}/{path.relative_to(es5).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
