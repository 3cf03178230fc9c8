"""The server installed as serving/README.md says: ``pip install`` with the pinned constraints, no extras.

A test that serves from such an environment catches a dependency that only the test extras bring
(the ``.venv`` of the repository has them all). The dependencies are installed once per content of
``pyproject.toml`` and ``constraints.txt`` (a stamp in the environment); the package itself is
reinstalled on every call, so the code under test is always the checkout's.

    python serving/tests/plain_install.py tests/output/serving-plain-venv   # what .ci/run warms up
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

SERVING = Path(__file__).resolve().parents[1]
CONSTRAINTS = SERVING / "constraints.txt"


def _stamp() -> str:
    digest = hashlib.sha256()
    for path in (SERVING / "pyproject.toml", CONSTRAINTS):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def plain_install(venv: Path) -> Path:
    """Create (or refresh) ``venv`` with ``pip install -c constraints.txt ./serving``; return its bin dir."""
    stamp = venv / "ailab-deps.stamp"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not stamp.exists() or stamp.read_text() != _stamp():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, "-c", str(CONSTRAINTS), str(SERVING)], check=True)
        stamp.write_text(_stamp())
    else:
        subprocess.run([*pip, "--no-deps", "--force-reinstall", str(SERVING)], check=True)
    return venv / "bin"


if __name__ == "__main__":
    plain_install(Path(sys.argv[1]).resolve())
