"""`cityvitals devices import FILE`: the report on stdout, the exit code, one error line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg

from cityvitals.cli.localstack import free_port
from tests.fix_services import CITYVITALS


def run_import(path: Path, database_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it, its output to pipes (no terminal)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CITYVITALS_") and k not in ("TTY_COMPATIBLE", "FORCE_COLOR")
    }
    env["CITYVITALS_DATABASE_URL"] = database_url
    env.update(extra)
    return subprocess.run(
        [CITYVITALS, "devices", "import", str(path)],
        env=env,
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_file_with_a_bad_row_is_imported_and_exits_1(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("device_id,kind,district\np-1,parking,xuhui\np-2,tram,\np-3,parking,\n")
    done = run_import(path, database_url)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {
        "imported": 2,
        "failed": [
            {
                "row": 2,
                "device_id": "p-2",
                "errors": ["kind: Input should be 'parking', 'waste' or 'energy'"],
            }
        ],
    }
    # No progress bar on a pipe: stderr stays empty, stdout is the report alone.
    assert done.stderr == ""
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (2,)


def test_json_files_import_and_exit_0(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([{"device_id": "e-1", "kind": "energy", "key_consumer": True}]))
    done = run_import(path, database_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"imported": 1, "failed": []}


def test_an_unreadable_file_exits_2_and_stores_nothing(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_bytes(b"id,kind\np-1,parking\n")
    done = run_import(path, database_url)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"cannot import {path}: CSV header must name the columns and include device_id; "
        "nothing was stored"
    ]


def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("device_id,kind\np-1,parking\n")
    url = f"postgresql://cityvitals:cityvitals@127.0.0.1:{free_port()}/cityvitals"
    done = run_import(path, url)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cityvitals devices import: error: cannot reach the database")


def test_a_terminal_gets_a_progress_bar_beside_the_report(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("device_id,kind\n" + "".join(f"p-{i},parking\n" for i in range(2000)))
    # Rich draws on stderr when told it is a terminal (TTY_COMPATIBLE, rich's own switch).
    done = run_import(path, database_url, TTY_COMPATIBLE="1")
    assert done.returncode == 0, done.stderr
    assert "reading" in done.stderr
    assert json.loads(done.stdout) == {"imported": 2000, "failed": []}
