"""The benchmark runs end to end (a few requests; the real numbers come from a full run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| server | 2 |" in done.stdout and "vs baseline" in done.stdout
    result = json.loads(out.read_text())
    assert {r["target"] for r in result["runs"]} == {"baseline", "server"}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in result["runs"])
    assert set(result["switch"]) == {"baseline", "server"}
    # The lines that put the server against the machine: forward-only limit and overload.
    assert result["forward_limit"]["images_per_s"] > 0 and "Forward only (" in done.stdout
    assert [o["backoff"] for o in result["overload"]] == [False, True]
    assert all(o["accepted"] > 0 and o["errors"] == 0 for o in result["overload"])
