"""Vendor the screen's chart library from the npm registry into the static folder.

The screen runs on wall displays with no internet, so its one third-party file is
committed under `static/vendor/`. This script is how it got there and how it is
upgraded: `npm pack` fetches the pinned version (npm checks the registry's integrity
hash), and the files are copied with the licence beside them.

    .venv/bin/python -m scripts.build_screen            # vendor the pinned version
    .venv/bin/python -m scripts.build_screen --check    # verify the committed copy
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "uplot"
VERSION = "1.6.32"
# What we take from the package, and where it goes under static/vendor/uplot/.
FILES = {
    "package/dist/uPlot.esm.js": "uPlot.esm.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "LICENSE",
}
ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "services/api/cityvitals/api/static/vendor/uplot"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pack(workdir: Path) -> Path:
    """Download the pinned tarball with npm and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to vendor the chart library (Debian: apt-get install npm)")
    out = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    return workdir / out.stdout.strip().splitlines()[-1]


def vendor(dest: Path) -> dict[str, str]:
    """Copy the pinned package's files into `dest`; return their SHA-256 sums."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cityvitals-npm-") as tmp:
        tarball = _pack(Path(tmp))
        with tarfile.open(tarball) as tar:
            for member, target in FILES.items():
                src = tar.extractfile(member)
                if src is None:
                    raise SystemExit(f"{member} missing from {tarball.name}")
                (dest / target).write_bytes(src.read())
    (dest / "VERSION").write_text(f"{PACKAGE}@{VERSION}\n", encoding="utf-8")
    return {name: _sha256(dest / name) for name in FILES.values()}


def main(argv: list[str] | None = None) -> int:
    """Vendor the chart library, or with --check compare the committed copy to npm's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, change nothing")
    args = parser.parse_args(argv)
    if not args.check:
        for name, digest in vendor(VENDOR).items():
            print(f"{digest}  {name}")
        return 0
    with tempfile.TemporaryDirectory(prefix="cityvitals-vendor-") as tmp:
        fresh = vendor(Path(tmp))
    stale = [n for n, d in fresh.items() if not (VENDOR / n).exists() or _sha256(VENDOR / n) != d]
    for name in stale:
        print(f"differs from {PACKAGE}@{VERSION}: {name}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
