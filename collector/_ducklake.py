"""DuckLake: several collectors writing one lake (catalog in PostgreSQL, Parquet data files
on a shared path), for when one machine is not enough.

``--db ducklake:postgres:dbname=… host=…`` with ``--data-path /shared/lake/``. The DuckLake
and PostgreSQL extensions come from PyPI wheels (the ``ducklake`` extra of the repository)
and are installed from the wheel's file: nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import duckdb

from ._errors import ConfigError
from ._settings import Settings

__all__ = ["CATALOG", "maintain", "open_ducklake"]

#: The name the lake is attached under; every cursor ``USE``s it.
CATALOG = "eventscope"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _extension_file(name: str) -> str:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"db: DuckLake needs the {name} extension wheel: pip install "
            f"'duckdb-extension-{name}=={duckdb.__version__}' (or, in the repository, "
            "pip install -e '.[ducklake]')"
        )
    version = duckdb.__version__
    found = sorted(Path(spec.origin).parent.glob(f"extensions/v{version}/{name}.duckdb_extension"))
    if not found:
        raise ConfigError(
            f"db: duckdb-extension-{name} has no build for duckdb {version}; "
            f"pip install 'duckdb-extension-{name}=={version}'"
        )
    return str(found[0])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_ducklake(
    settings: Settings, *, read_only: bool = False
) -> tuple[duckdb.DuckDBPyConnection, str]:
    """Attach the lake named by ``settings.db``; return the connection and a description.

    Raises:
        ConfigError: no data path, a missing extension wheel, or the catalog cannot be
            reached; the message names the setting.
    """
    if not settings.data_path and not read_only:
        raise ConfigError("data_path: DuckLake needs --data-path (where Parquet files go)")
    if settings.ducklake_schema and not _SCHEMA_NAME.match(settings.ducklake_schema):
        raise ConfigError(f"ducklake_schema: {settings.ducklake_schema!r} is not a schema name")
    connection = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    for name in ("postgres", "ducklake"):
        connection.execute(f"INSTALL {_quote(_extension_file(name))}")
        connection.execute(f"LOAD {name}")
    options = []
    data_path = ""
    if settings.data_path:
        data_path = str(Path(settings.data_path).expanduser().resolve()) + "/"
        Path(data_path).mkdir(parents=True, exist_ok=True)
        options.append(f"DATA_PATH {_quote(data_path)}")
    if settings.ducklake_schema:
        options.append(f"METADATA_SCHEMA {_quote(settings.ducklake_schema)}")
    if read_only:
        options.append("READ_ONLY")
    attach = f"ATTACH {_quote(settings.db)} AS {CATALOG}"
    if options:
        attach += f" ({', '.join(options)})"
    try:
        connection.execute(attach)
    except duckdb.Error as exc:
        connection.close()
        raise ConfigError(f"db: cannot attach {settings.db!r}: {str(exc).splitlines()[0]}") from exc
    connection.execute(f"USE {CATALOG}")
    if not settings.data_path:  # a reader: the files are where the catalog says
        row = connection.execute(
            f"SELECT data_path FROM ducklake_settings({_quote(CATALOG)})"
        ).fetchone()
        data_path = row[0] if row and row[0] else ""
    if data_path:
        # The only files this instance may read once external access is switched off (the
        # collector and `eventscope query` do so before running anything a user typed).
        connection.execute("SET allowed_directories = [?]", [data_path])
    return connection, f"{settings.db} (data: {settings.data_path or 'from the catalog'})"


def maintain(connection: duckdb.DuckDBPyConnection) -> None:
    """Fold small inlined inserts and small Parquet files into larger ones. Blocking."""
    connection.execute(f"CALL ducklake_flush_inlined_data({_quote(CATALOG)})")
    connection.execute(f"CALL ducklake_merge_adjacent_files({_quote(CATALOG)})")
