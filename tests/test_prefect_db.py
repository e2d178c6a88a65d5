"""The session's template Prefect database (tests/prefect_db.py) is what the installed Prefect sets up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import prefect


def test_the_template_is_at_the_installed_prefects_head_revision_with_its_block_types(
    prefect_db_template: Path,
) -> None:
    from alembic.script import ScriptDirectory
    from prefect.server import database

    migrations = Path(database.__file__).parent / "_migrations"
    scripts = ScriptDirectory(str(migrations), version_locations=[str(migrations / "versions" / "sqlite")])
    assert prefect.__version__ in prefect_db_template.name
    connection = sqlite3.connect(f"file:{prefect_db_template}?mode=ro", uri=True)
    try:
        revisions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
        block_types = {row[0] for row in connection.execute("SELECT slug FROM block_type")}
    finally:
        connection.close()
    assert revisions == [scripts.get_current_head()]
    assert {"secret", "local-file-system", "webhook"} <= block_types  # registered by the server that built it
