"""Write notebook/constraints.txt: requirements.txt resolved by pip against serving/constraints.txt.

Run by ``make notebook-constraints``. pip resolves without installing (``--dry-run --report``), so
the pins are what the image's ``pip install`` picks, and the packages the server image also holds
(torch, ultralytics, mlflow, boto3) keep the server's versions. It resolves for Debian bookworm's
Python 3.11.2, the oldest Python the image is built on (some current releases need 3.11.5), from
wheels only, as the image installs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = "3.11.2"
HEADER = """\
# Pins for the notebook image (notebook/Dockerfile uses this file as PIP_CONSTRAINT): the packages
# of requirements.txt resolved against serving/constraints.txt, so the notebook's torch,
# ultralytics, mlflow and boto3 are the server's. Regenerate with: make notebook-constraints
"""


def main() -> None:
    serving = (HERE.parent / "serving" / "constraints.txt").read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "serving.txt"
        # Only name==version lines: pip refuses editable or URL requirements as constraints.
        constraints.write_text(
            "\n".join(line for line in serving if "==" in line and "://" not in line) + "\n"
        )
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        # pip accepts a target Python only for a --target install (never written: --dry-run).
        cmd += ["--target", str(Path(tmp) / "target"), "--python-version", PYTHON, "--only-binary=:all:"]
        cmd += ["--report", str(report), "-c", str(constraints), "-r", str(HERE / "requirements.txt")]
        subprocess.run(cmd, check=True)
        installs = json.loads(report.read_text())["install"]
    pins = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in installs)
    pins.sort(key=lambda pin: pin[0].lower())
    (HERE / "constraints.txt").write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in pins))


if __name__ == "__main__":
    main()
