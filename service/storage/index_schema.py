"""The index's tables, in the SQL SQLite speaks and :mod:`service.storage.postgres_db`
translates for PostgreSQL, and the statements both back-ends share verbatim."""

from __future__ import annotations

from service.storage.index_exports import RESULTS_EXPORTS_SCHEMA
from service.storage.index_facts import FACTS_SCHEMA

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid     TEXT PRIMARY KEY,
    sop_class_uid        TEXT NOT NULL,
    study_instance_uid   TEXT NOT NULL,
    series_instance_uid  TEXT NOT NULL,
    modality             TEXT NOT NULL DEFAULT '',
    path                 TEXT NOT NULL,
    size_bytes           INTEGER NOT NULL,
    calling_ae_title     TEXT NOT NULL DEFAULT '',
    received_at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid);

CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid   TEXT PRIMARY KEY,
    state                TEXT NOT NULL,
    first_received_at    REAL NOT NULL,
    last_received_at     REAL NOT NULL,
    processed_count      INTEGER NOT NULL DEFAULT 0,
    generation           INTEGER NOT NULL DEFAULT 0,
    error                TEXT,
    result_json          TEXT,
    updated_at           REAL NOT NULL
);
"""
SCHEMA = _SCHEMA + RESULTS_EXPORTS_SCHEMA + FACTS_SCHEMA
"""Every table of the index, in SQLite's words (PostgreSQL's:
:func:`~service.storage.postgres_db.postgres_ddl`)."""

UPSERT_INSTANCE = (
    "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_instance_uid,"
    " series_instance_uid, modality, path, size_bytes, calling_ae_title, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sop_instance_uid) DO UPDATE SET"
    " sop_class_uid = excluded.sop_class_uid, study_instance_uid = excluded.study_instance_uid,"
    " series_instance_uid = excluded.series_instance_uid, modality = excluded.modality,"
    " path = excluded.path, size_bytes = excluded.size_bytes,"
    " calling_ae_title = excluded.calling_ae_title, received_at = excluded.received_at"
)
"""A stored instance (again): the row is replaced (SQL both back-ends speak)."""
