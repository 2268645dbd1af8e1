"""Which index a node opens: SQLite in the data folder, or PostgreSQL with ``[cluster]``."""

from __future__ import annotations

import socket

from service.config import Config
from service.storage.errors import IndexUnavailableError
from service.storage.index import Index


def open_index(config: Config, *, holder: bool = False) -> Index:
    """The node's index: in PostgreSQL with ``[cluster] database_url``, else
    ``data_dir/index.sqlite``.

    Parameters
    ----------
    config
        The node's configuration.
    holder
        The node process itself, which holds a PostgreSQL database alone while it runs
        (:meth:`~service.storage.postgres_db.PgConnection.hold_alone`); its receiving
        processes open the same database without.

    Raises
    ------
    IndexUnavailableError
        The index cannot be opened, or another node holds the database.
    """
    if not config.cluster.enabled:
        return Index(config.data_dir / "index.sqlite")
    index = Index.on_postgres(config.cluster.database_url)
    if holder:
        assert index._pg is not None
        try:
            index._pg.hold_alone(config.cluster.node_id or socket.gethostname())
        except IndexUnavailableError:
            index.close()
            raise
    return index
