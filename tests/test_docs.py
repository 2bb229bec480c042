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


def test_python_312_and_313_are_admitted_and_locked():
    """requires-python admits 3.11-3.13, and uv.lock was resolved for exactly that range (uv
    writes the range it resolved for; a lock for a narrower one would fail `uv sync` there)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = SpecifierSet(project["requires-python"])
    assert all(v in spec for v in ("3.11.7", "3.12.8", "3.13.1")), spec
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert SpecifierSet(lock["requires-python"]) == spec
    # every compiled dependency has wheels for the admitted versions, not only 3.11's
    wheels = {p["name"]: " ".join(w["url"] for w in p.get("wheels", [])) for p in lock["package"]}
    for name in ("torch", "numpy", "scikit-learn", "scipy"):
        assert "cp312" in wheels[name] and "cp313" in wheels[name], name
