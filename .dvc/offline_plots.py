"""Write .dvc/plots.html: the page `dvc plots show` fills (dvc_render's own) with the vega
libraries it would load from a CDN inlined, so that the plots render with no network.
.dvc/config names it (plots.html_template). The versions are the ones dvc_render asks for.

    make plots-template      # needs npm and its registry; the page is committed
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dvc_render.html import PAGE_HTML
from dvc_render.vega import VegaRenderer

OUT = Path(__file__).with_name("plots.html")


def main() -> None:
    packages = re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS)  # vega, vega-lite, vega-embed
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in packages:
            subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=tmp, check=True,
                           capture_output=True)
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as tgz:
                js = tgz.extractfile(f"package/build/{name}.min.js").read().decode()
            js = js.replace("</script", "<\\/script")  # inside an inline <script>
            scripts.append(f"<!-- {name}@{version} (npm), inlined for offline use -->\n<script>{js}</script>")
    # No {scripts} placeholder: DVC would put the CDN tags there.
    page = PAGE_HTML.replace("{scripts}", "\n".join(scripts))
    OUT.write_text(page, encoding="utf8")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): {', '.join(f'{n}@{v}' for n, v in packages)}")


if __name__ == "__main__":
    main()
