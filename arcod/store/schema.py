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

# Migration 3: backfills (the backfill controller's rows). A backfill stores its selector,
# span and counters, never its partition list: `backfill_targets` holds only the partitions a
# retry-failed child lists explicitly (those that did not succeed in its parent's planned
# chunks). `backfill_definitions` keeps, once per content digest, the partitions definition a
# backfill was created with, so chunk arithmetic never shifts under a reload.
# `backfill_chunks` has one row per planned chunk; its primary key is what makes "no chunk is
# planned twice" a constraint. `backfill_transitions` is the state log: (backfill, version)
# is unique, so state_version sequences cannot have gaps or repeats.
_BACKFILLS = """
CREATE TABLE backfill_definitions (
    digest TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE backfills (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    backfill_id TEXT NOT NULL UNIQUE,
    request_key TEXT UNIQUE,
    request_id TEXT,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    state_version INTEGER NOT NULL,
    assets BLOB NOT NULL,
    definition TEXT NOT NULL,
    definition_digest TEXT NOT NULL REFERENCES backfill_definitions (digest),
    selector BLOB NOT NULL,
    as_of TEXT NOT NULL,
    selector_count INTEGER NOT NULL,
    span_lo INTEGER NOT NULL,
    span_hi INTEGER NOT NULL,
    explicit_count INTEGER NOT NULL DEFAULT 0,
    partitions_total INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunks_total INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL,
    newest_first INTEGER NOT NULL,
    reprocess TEXT NOT NULL,
    code_version TEXT NOT NULL,
    parent_backfill_id TEXT REFERENCES backfills (backfill_id),
    root_backfill_id TEXT NOT NULL,
    next_chunk INTEGER NOT NULL DEFAULT 0,
    chunks_succeeded INTEGER NOT NULL DEFAULT 0,
    chunks_failed INTEGER NOT NULL DEFAULT 0,
    chunks_canceled INTEGER NOT NULL DEFAULT 0,
    chunks_skipped INTEGER NOT NULL DEFAULT 0,
    partitions_planned INTEGER NOT NULL DEFAULT 0,
    partitions_succeeded INTEGER NOT NULL DEFAULT 0,
    partitions_failed INTEGER NOT NULL DEFAULT 0,
    partitions_canceled INTEGER NOT NULL DEFAULT 0,
    partitions_skipped INTEGER NOT NULL DEFAULT 0,
    request BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX backfills_by_state ON backfills (state, seq);
CREATE INDEX backfills_by_root ON backfills (root_backfill_id, seq);
CREATE TABLE backfill_chunks (
    backfill_id TEXT NOT NULL REFERENCES backfills (backfill_id),
    chunk_index INTEGER NOT NULL,
    state TEXT NOT NULL,          -- RUNNING | SUCCEEDED | FAILED | CANCELED | SKIPPED
    run_id TEXT UNIQUE REFERENCES runs (run_id),
    partitions INTEGER NOT NULL,
    first_partition TEXT NOT NULL,
    last_partition TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    partitions_succeeded INTEGER NOT NULL DEFAULT 0,
    partitions_failed INTEGER NOT NULL DEFAULT 0,
    partitions_canceled INTEGER NOT NULL DEFAULT 0,
    partitions_skipped INTEGER NOT NULL DEFAULT 0,
    planned_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (backfill_id, chunk_index)
);
CREATE INDEX backfill_chunks_by_state ON backfill_chunks (backfill_id, state, chunk_index);
CREATE TABLE backfill_targets (
    backfill_id TEXT NOT NULL REFERENCES backfills (backfill_id),
    position INTEGER NOT NULL,
    partition TEXT NOT NULL,
    assets BLOB NOT NULL,
    PRIMARY KEY (backfill_id, position)
) WITHOUT ROWID;
CREATE TABLE backfill_transitions (
    backfill_id TEXT NOT NULL REFERENCES backfills (backfill_id),
    version INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    at TEXT NOT NULL,
    request_id TEXT,
    reason TEXT NOT NULL,
    PRIMARY KEY (backfill_id, version)
);
"""

# Migration 4: a run_key maps to at most one run, ever (SPEC §5), even after retention
# pruned the run: the key, its run id and fingerprint outlive the run as a tombstone.
_RUN_KEY_TOMBSTONES = """
CREATE TABLE run_key_tombstones (
    run_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    pruned_at TEXT NOT NULL
);
"""

# Migration 5: a run's task states change only through the dispatcher, which keeps them in
# memory with what follows from them (core `RunProgress`); every transaction that changes them
# also moves this number, so the memory copy is trusted only while it names the stored state.
# The dispatcher also looks for tasks waiting for another run's partition on every message:
# the partial index keeps that to the waiting tasks, not every task of every running run.
_TASKS_VERSION = """
ALTER TABLE runs ADD COLUMN tasks_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_waiting ON tasks (run_id) WHERE waiting_for IS NOT NULL;
"""

MIGRATIONS: list[str] = [
    _ACTOR_RUNTIME,
    _RUNS,
    _BACKFILLS,
    _RUN_KEY_TOMBSTONES,
    _TASKS_VERSION,
]
