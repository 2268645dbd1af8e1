"""Which index a node opens: SQLite in the data folder, or PostgreSQL with ``[cluster]``."""

from __future__ import annotations

from service.config import Config
from service.storage.index import Index


def open_index(config: Config) -> Index:
    """The node's index: in PostgreSQL with ``[cluster] database_url`` (shared by the nodes of
    a cluster), else ``data_dir/index.sqlite``.

    Raises
    ------
    IndexUnavailableError
        The index cannot be opened.
    """
    if not config.cluster.enabled:
        return Index(config.data_dir / "index.sqlite")
    return Index.on_postgres(config.cluster.database_url)
