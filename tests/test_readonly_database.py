"""A database file this user may not write: one line saying so, before anything is read or
changed (``import`` used to read the whole file and then fail with a traceback).

Root may write any file, so as root the command runs as ``nobody`` (setpriv)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, TEMPLATES

from models.db import open_database

LEADFLOW = str(Path(sys.executable).parent / "leadflow")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

pytestmark = pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="as root, needs setpriv to run as another user",
)


@pytest.fixture
def readonly_home() -> Iterator[Path]:
    """A folder anyone can read, holding a migrated database file nobody but root may write."""
    home = Path(tempfile.mkdtemp(prefix="leadflow-ro-"))
    home.chmod(0o755)
    open_database(f"sqlite:///{home / 'leadflow.db'}").dispose()
    (home / "leads.csv").write_text("email,first_name\nann@acme.example,Ann\n", encoding="utf-8")
    for path in home.iterdir():
        path.chmod(0o444)
    yield home
    shutil.rmtree(home)


@pytest.mark.parametrize("command", [["import", "leads.csv"], ["run", "score"], ["leads"]])
def test_a_database_this_user_cannot_write_is_one_line_and_stays_unchanged(
    readonly_home: Path, command: list[str]
) -> None:
    db = readonly_home / "leadflow.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(readonly_home),
        "LEADFLOW_HOME": str(readonly_home),
        "LEADFLOW_DATABASE_URL": f"sqlite:///{db}",
        "LEADFLOW_CONFIG": str(DEFAULT_CONFIG),
        "LEADFLOW_TEMPLATES": str(TEMPLATES),
        "LEADFLOW_DEMO": "true",
    }
    argv = [LEADFLOW, *command]
    if command[0] == "import":
        argv[2] = str(readonly_home / "leads.csv")
    started = time.monotonic()
    done = subprocess.run(
        (NOBODY if os.geteuid() == 0 else []) + argv,
        env=env,
        cwd=readonly_home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert done.returncode == 1
    assert done.stderr == f"error: {db} is not readable and writable by this user\n"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
