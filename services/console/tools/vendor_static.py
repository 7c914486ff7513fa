"""Vendor the console's static files from npm: the DSFR components it uses and htmx.

Run from the repository's root (needs `npm` on PATH):

    python3 services/console/tools/vendor_static.py

What is kept, and why (docs/architecture.md decision 53):

- `@gouvfr/dsfr` (Etalab 2.0 licence, with terms of use reserving the State's visual identity to
  the administration): the core and the components the templates use, concatenated into
  `static/dsfr/dsfr-console.min.css`. The `@font-face` rules of the Marianne and Spectral fonts
  are removed and the font files not copied: the console falls back to the system's sans-serif
  font, and shows no State logo (the Marianne block), outside a .gouv.fr deployment.
- `htmx.org` 2.x (BSD-2-Clause): `static/htmx.min.js`.
- `axe-core` (MPL-2.0): `tests/vendor/axe.min.js`, run by the browser test only.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

DSFR = "@gouvfr/dsfr@1.15.3"
HTMX = "htmx.org@2.0.11"
AXE = "axe-core@4.14.1"
COMPONENTS = [
    "core/core",
    "component/skiplink/skiplink",
    "component/link/link",
    "component/header/header",
    "component/footer/footer",
    "component/button/button",
    "component/form/form",
    "component/input/input",
    "component/select/select",
    "component/alert/alert",
    "component/badge/badge",
    "component/table/table",
]
STATIC = Path(__file__).resolve().parents[1] / "src" / "maillage" / "console" / "static"
TEST_VENDOR = Path(__file__).resolve().parents[1] / "tests" / "vendor"


def unpacked(spec: str, into: Path) -> Path:
    """The npm package ``spec`` downloaded (``npm pack``) and extracted under ``into``."""
    name = subprocess.run(  # noqa: S603 (fixed arguments)
        ["npm", "pack", spec, "--silent"],  # noqa: S607 (npm from PATH)
        cwd=into,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    target = into / name.removesuffix(".tgz")
    with tarfile.open(into / name) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        dsfr = unpacked(DSFR, Path(work))
        css = "\n".join((dsfr / "dist" / f"{c}.min.css").read_text() for c in COMPONENTS)
        css = re.sub(r"@font-face\{[^}]*\}", "", css)
        css = re.sub(r"/\*# sourceMappingURL=[^*]*\*/", "", css)
        (STATIC / "dsfr" / "icons").mkdir(parents=True, exist_ok=True)
        # The icons the kept rules draw (the CSS masks), beside the stylesheet.
        for icon in sorted(set(re.findall(r"url\((?:\.\./)+icons/([^)]+)\)", css))):
            (STATIC / "dsfr" / "icons" / icon).parent.mkdir(parents=True, exist_ok=True)
            (STATIC / "dsfr" / "icons" / icon).write_text((dsfr / "dist/icons" / icon).read_text())
        css = re.sub(r"url\((?:\.\./)+icons/", "url(icons/", css)
        (STATIC / "dsfr" / "dsfr-console.min.css").write_text(css)
        (STATIC / "dsfr" / "LICENSE.md").write_text((dsfr / "LICENSE.md").read_text())
        htmx = unpacked(HTMX, Path(work))
        (STATIC / "htmx.min.js").write_text((htmx / "dist" / "htmx.min.js").read_text())
        (STATIC / "htmx.LICENSE").write_text((htmx / "LICENSE").read_text())
        # axe-core (MPL-2.0), for the browser test only: it never ships with the console.
        axe = unpacked(AXE, Path(work))
        TEST_VENDOR.mkdir(exist_ok=True)
        (TEST_VENDOR / "axe.min.js").write_text((axe / "axe.min.js").read_text())
        (TEST_VENDOR / "axe-core.LICENSE").write_text((axe / "LICENSE").read_text())


if __name__ == "__main__":
    main()
