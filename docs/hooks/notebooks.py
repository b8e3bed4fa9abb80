"""MkDocs hook: publish the repository's ``notebooks/*.ipynb`` as pages under ``notebooks/``.

The notebooks live outside ``docs_dir`` (they are run as tests from ``notebooks/``); this hook
adds each one to the site's files at ``notebooks/<name>.ipynb``, where the ``mkdocs-jupyter``
plugin renders it with its committed outputs (nothing is executed). The notebook template's
scripts that fetch code from the network (nbconvert's MathJax 2, Mermaid, the widget renderer)
are dropped from the page: every page of the site already loads the local MathJax 3, the
notebooks have no Mermaid diagrams, and widgets show their committed text.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

NOTEBOOKS = "notebooks"
"""Folder of the repository (next to ``mkdocs.yml``) and of the site that holds the notebooks."""

NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
"""nbconvert's MathJax 2 loader and configuration, as its ``mathjax`` template macro writes them."""

NETWORK_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>", re.DOTALL)
"""A ``<script>`` element whose code names a URL (it loads code from the network)."""


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add every notebook of the repository's ``notebooks/`` folder to the site."""
    root = Path(config.config_file_path).parent
    for path in sorted((root / NOTEBOOKS).glob("*.ipynb")):
        uri = f"{NOTEBOOKS}/{path.name}"
        files.append(
            File(uri, src_dir=str(root), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
        )
    return files


def on_post_page(output: str, page: Page, config: MkDocsConfig) -> str:
    """Remove the scripts of notebook pages that load code from the network."""
    if page.file.src_uri.endswith(".ipynb"):
        return NETWORK_SCRIPT.sub("", NBCONVERT_MATHJAX.sub("", output))
    return output
