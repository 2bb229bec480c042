"""The README stays a product page: small, no hashes or dates, its links resolve, the demo and
the two set-up commands on its first screen."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_readme_is_a_product_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 20_000
    first = "\n".join(text.splitlines()[:60])
    assert "make demo" in first and "make repro" in first and "make test" in first
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text), "a commit hash"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date"


def test_relative_links_resolve():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.name}: {target}"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{doc.name}: {target}"


def test_the_dvc_plots_page_loads_nothing_from_the_network():
    """`dvc plots show` fills .dvc/plots.html (.dvc/config), which carries the vega libraries itself."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc/config")
    page = (ROOT / ".dvc" / cfg["plots"]["html_template"]).read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC puts its CDN tags where {scripts} is
    assert not re.search(r"<script[^>]+src=", page)
    for lib in ("vega@", "vega-lite@", "vega-embed@"):
        assert f"<!-- {lib}" in page
