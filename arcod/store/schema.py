"""The database schema, as an append-only list of migrations.

`MIGRATIONS[i]` takes a database from `PRAGMA user_version = i` to `i + 1`. The store applies
the missing ones in order at open, each in its own write transaction together with the new
user_version, so a crash mid-upgrade leaves the database at a clean version and the next
start resumes from there. To change the schema, append a script; never edit one that has
shipped, because databases in the field already ran it.

A script is plain SQL, one or more statements separated by `;` (triggers with inner `;` are
fine). Do not put BEGIN/COMMIT or `PRAGMA user_version` in a script: the store owns both.
"""

from __future__ import annotations

# Migration 1: the actor runtime's tables.
#
# `events` is the append-only log of every message an actor applied, keyed by
# (actor, idem_key): recording the key in the same transaction as the effect is what makes a
# duplicate delivery a no-op, and `result` is the reply a duplicate request gets back.
#
# `outbox` holds messages a sender committed and their receiver has not applied yet; the
# receiver deletes the row in the transaction that applies the message. AUTOINCREMENT keeps
# ids strictly increasing even after the newest row is consumed, which the receiver relies on
# to page through its backlog in send order.
_ACTOR_RUNTIME = """
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    actor      TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       BLOB NOT NULL,
    result     BLOB,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (actor, idem_key)
);

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (target, idem_key)
);

CREATE INDEX outbox_by_target ON outbox (target, id);
"""

# Migration 2: definitions versions, dynamic partition keys, runs, tasks, attempts and
# per-(asset, partition) status. Runs keep their plan as JSON (immutable once planned);
# tasks and attempts are the dispatcher's rows; `partition_status` is the history indexer's.
_RUNS = """
CREATE TABLE code_versions (
    code_version TEXT PRIMARY KEY,
    assets BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE dynamic_partitions (
    definition TEXT NOT NULL,
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (definition, key)
);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    run_key TEXT UNIQUE,
    state TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    code_version TEXT NOT NULL,
    parent_run_id TEXT REFERENCES runs (run_id),
    root_run_id TEXT NOT NULL,
    rerun_kind TEXT,
    backfill_id TEXT,
    chunk_index INTEGER,
    request BLOB NOT NULL,
    partition_selection BLOB,
    tags BLOB NOT NULL,
    plan BLOB NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX runs_by_state ON runs (state, seq);
CREATE INDEX runs_by_root ON runs (root_run_id);
CREATE INDEX runs_by_backfill ON runs (backfill_id, chunk_index);
CREATE TABLE tasks (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    task_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    asset TEXT NOT NULL,
    partition TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    skipped_because TEXT,
    waiting_for TEXT,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX tasks_running ON tasks (state, asset, partition) WHERE state = 'RUNNING';
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    asset TEXT NOT NULL,
    partition TEXT,
    state TEXT NOT NULL,          -- SCHEDULED | RUNNING | SUCCEEDED | FAILED | CANCELED
    not_before TEXT NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    reason TEXT,
    log_path TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, task_id, attempt),
    FOREIGN KEY (run_id, task_id) REFERENCES tasks (run_id, task_id)
);
CREATE INDEX attempts_open ON attempts (state) WHERE state IN ('SCHEDULED', 'RUNNING');
CREATE TABLE partition_status (
    asset TEXT NOT NULL,
    partition TEXT NOT NULL,      -- '' for an unpartitioned asset
    last_materialized_run TEXT,
    last_materialized_at TEXT,
    last_attempt_run TEXT,
    last_attempt_state TEXT,      -- RUNNING | SUCCEEDED | FAILED (of the latest task outcome)
    last_attempt_at TEXT,
    PRIMARY KEY (asset, partition)
);
"""

MIGRATIONS: list[str] = [
    _ACTOR_RUNTIME,
    _RUNS,
]
