//! Group commit: the writer thread applies every write waiting for it in one transaction, so a
//! burst pays one fsync per group, and answers each write for itself.
//!
//! Two ways to apply a group, with the same answers:
//! - **Whole** (the usual case): every operation straight into the transaction, then one
//!   commit. If any operation fails, the transaction is rolled back — nothing of the group is
//!   stored — and the group is applied again the careful way.
//! - **Each in a savepoint**: one savepoint per operation, so a failing operation is undone
//!   alone and the others commit.
//!
//! Why not always the savepoints: they were a third of the writer's instructions per webhook
//! (issue 15 §4). Each `SAVEPOINT` / `RELEASE` is a statement parsed again, and every page an
//! operation touches for the first time in its savepoint is copied to the statement journal
//! first; the operations of a group touch the same few pages (the rightmost leaf of each
//! index), so each copied them again. A failing operation is rare (deliveries are
//! deduplicated with `INSERT OR IGNORE`, jobs only move forward with a `WHERE`), so paying
//! for the group twice then is cheaper than paying for savepoints every time. Re-applying is
//! safe: an operation is a function of the database's state, which the rollback restored.

use rusqlite::{Connection, TransactionBehavior};

use super::WriteOutcome;
use crate::store::StoreError;

/// Applies `batch` in one transaction and answers each operation; see the module.
///
/// An answer of `Ok` always means committed, an `Err` never.
pub(super) fn commit_group_with<R>(
    conn: &mut Connection,
    batch: &[R],
    apply: impl Fn(&Connection, &R) -> rusqlite::Result<WriteOutcome>,
) -> Vec<Result<WriteOutcome, StoreError>> {
    match commit_whole(conn, batch, &apply) {
        Whole::Answered(outcomes) => outcomes,
        Whole::OperationFailed => commit_each_in_savepoint(conn, batch, &apply),
    }
}

/// What applying a group whole came to.
enum Whole {
    /// Every operation's answer (all committed, or all failed with the transaction).
    Answered(Vec<Result<WriteOutcome, StoreError>>),
    /// An operation failed: the transaction was rolled back, nothing of the group is stored.
    OperationFailed,
}

/// IMMEDIATE: the write lock is taken (waiting up to the busy timeout) before the first read;
/// a deferred transaction that read first and then writes while the agent directory's
/// connection writes gets SQLITE_BUSY at once, without waiting.
fn begin(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn commit_whole<R>(
    conn: &mut Connection,
    batch: &[R],
    apply: &impl Fn(&Connection, &R) -> rusqlite::Result<WriteOutcome>,
) -> Whole {
    let tx = match begin(conn) {
        Ok(tx) => tx,
        Err(e) => return Whole::Answered(every(batch, &e)),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        match apply(&tx, request) {
            Ok(outcome) => outcomes.push(Ok(outcome)),
            Err(e) => {
                tracing::debug!(error = %e, group = batch.len(), "a write failed; applying its group again, each write in a savepoint");
                // Dropping the transaction rolls it back (or finds it already ended by SQLite).
                drop(tx);
                return Whole::OperationFailed;
            }
        }
    }
    match tx.commit() {
        Ok(()) => Whole::Answered(outcomes),
        Err(e) => {
            tracing::error!(error = %e, "the store could not commit a group of writes");
            Whole::Answered(every(batch, &e))
        }
    }
}

/// Applies `batch` in one transaction, each operation in its own savepoint, and answers each.
///
/// SQLite may end the whole transaction on an operation's error (SQLITE_FULL, SQLITE_IOERR,
/// SQLITE_BUSY and SQLITE_NOMEM can, per <https://www.sqlite.org/lang_transaction.html>,
/// "Response To Errors Within A Transaction"): then what the group applied before is gone, and
/// a savepoint opened after it would start and commit a transaction of its own. So once the
/// transaction is gone, that operation's error is its answer and every other operation of the
/// group is committed alone (at most one transaction each: bounded, and slow only when SQLite
/// is failing).
fn commit_each_in_savepoint<R>(
    conn: &mut Connection,
    batch: &[R],
    apply: &impl Fn(&Connection, &R) -> rusqlite::Result<WriteOutcome>,
) -> Vec<Result<WriteOutcome, StoreError>> {
    let mut tx = match begin(conn) {
        Ok(tx) => tx,
        Err(e) => return every(batch, &e),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, request) in batch.iter().enumerate() {
        let outcome = (|| {
            let sp = tx.savepoint()?;
            let outcome = apply(&sp, request)?;
            sp.commit()?;
            Ok::<_, rusqlite::Error>(outcome)
        })();
        match outcome {
            Err(e) if tx.is_autocommit() => {
                tracing::warn!(
                    error = %e,
                    group = batch.len(),
                    "a write ended the store's transaction; committing the rest of its group one by one"
                );
                drop(tx);
                return batch
                    .iter()
                    .enumerate()
                    .map(|(other, request)| {
                        if other == index {
                            Err(StoreError::Sqlite(clone_err(&e)))
                        } else {
                            commit_alone(conn, request, apply)
                        }
                    })
                    .collect();
            }
            outcome => outcomes.push(outcome.map_err(|e| {
                tracing::debug!(error = %e, "a write was refused");
                StoreError::from(e)
            })),
        }
    }
    match tx.commit() {
        Ok(()) => outcomes,
        Err(e) => {
            tracing::error!(error = %e, "the store could not commit a group of writes");
            every(batch, &e)
        }
    }
}

/// One operation in a transaction of its own.
fn commit_alone<R>(
    conn: &mut Connection,
    request: &R,
    apply: &impl Fn(&Connection, &R) -> rusqlite::Result<WriteOutcome>,
) -> Result<WriteOutcome, StoreError> {
    let tx = begin(conn)?;
    let outcome = apply(&tx, request)?;
    tx.commit()?;
    Ok(outcome)
}

/// The same failure for every operation of a group.
fn every<R>(batch: &[R], e: &rusqlite::Error) -> Vec<Result<WriteOutcome, StoreError>> {
    batch
        .iter()
        .map(|_| Err(StoreError::Sqlite(clone_err(e))))
        .collect()
}

/// A copy of `e` (rusqlite errors are not `Clone`).
pub(super) fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        e.sqlite_error()
            .copied()
            .unwrap_or(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR)),
        Some(e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::store::sqlite::open_connection;

    enum Op {
        Insert(i64),
        /// Inserts the first value, then the second: a write of two statements.
        InsertBoth(i64, i64),
        /// What SQLite does when an error (SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY, SQLITE_NOMEM)
        /// cannot be undone for the statement alone: the whole transaction is rolled back and
        /// the statement fails.
        EndsTheTransaction,
    }

    fn apply_op(conn: &Connection, op: &Op) -> rusqlite::Result<WriteOutcome> {
        match op {
            Op::Insert(v) => {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                Ok(WriteOutcome::Done)
            }
            Op::InsertBoth(a, b) => {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [a])?;
                conn.execute("INSERT INTO t (v) VALUES (?1)", [b])?;
                Ok(WriteOutcome::Done)
            }
            Op::EndsTheTransaction => {
                conn.execute_batch("ROLLBACK")?;
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    Some("database or disk is full".into()),
                ))
            }
        }
    }

    fn table() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        (dir, conn)
    }

    fn stored(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn answers(outcomes: &[Result<WriteOutcome, StoreError>]) -> Vec<bool> {
        outcomes.iter().map(Result::is_ok).collect()
    }

    /// Every connection of the store and of the agent directory keeps its temporary files
    /// in memory (see `open_connection`): none needs a writable temporary directory.
    #[test]
    fn no_connection_needs_a_temporary_directory() {
        let (_dir, mut conn) = table();
        let temp_store: i64 = conn
            .pragma_query_value(None, "temp_store", |r| r.get(0))
            .unwrap();
        assert_eq!(temp_store, 2, "PRAGMA temp_store = MEMORY");
        // A group whose statement journal is far above the 64 KiB spill threshold: the last
        // write fails, so the group is applied again with a savepoint for each.
        let mut batch: Vec<Op> = (0..2000).map(Op::Insert).collect();
        batch.push(Op::Insert(0));
        let outcomes = commit_group_with(&mut conn, &batch, apply_op);
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 2000);
        assert_eq!(stored(&conn).len(), 2000);
    }

    #[test]
    fn one_refused_write_fails_alone_and_the_group_commits() {
        let (_dir, mut conn) = table();
        let batch = [Op::Insert(1), Op::Insert(1), Op::Insert(2)];
        let outcomes = commit_group_with(&mut conn, &batch, apply_op);
        assert_eq!(answers(&outcomes), [true, false, true]);
        assert_eq!(stored(&conn), [1, 2]);
    }

    /// Without savepoints, a write's first statement would stay when its second fails.
    #[test]
    fn a_write_that_fails_halfway_leaves_nothing_and_the_others_commit() {
        let (_dir, mut conn) = table();
        let batch = [Op::Insert(1), Op::InsertBoth(5, 1), Op::InsertBoth(2, 3)];
        let outcomes = commit_group_with(&mut conn, &batch, apply_op);
        assert_eq!(answers(&outcomes), [true, false, true]);
        assert_eq!(stored(&conn), [1, 2, 3]);
    }

    /// The usual group is applied once, whole; only a group with a failing write is applied
    /// again (each write in a savepoint).
    #[test]
    fn a_group_without_failures_is_applied_once() {
        let (_dir, mut conn) = table();
        let applied = Cell::new(0);
        let counting = |conn: &Connection, op: &Op| {
            applied.set(applied.get() + 1);
            apply_op(conn, op)
        };
        let batch: Vec<Op> = (0..10).map(Op::Insert).collect();
        let outcomes = commit_group_with(&mut conn, &batch, counting);
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(applied.get(), 10);
        assert_eq!(stored(&conn).len(), 10);

        applied.set(0);
        let batch = [Op::Insert(10), Op::Insert(0), Op::Insert(11)];
        let outcomes = commit_group_with(&mut conn, &batch, counting);
        assert_eq!(answers(&outcomes), [true, false, true]);
        assert_eq!(
            applied.get(),
            2 + 3,
            "whole until the failure, then again each"
        );
        assert_eq!(stored(&conn).len(), 12);
    }

    /// Seen in the multi-host test after a controller restart: the group's commit failed with
    /// "cannot commit - no transaction is active", every delivery of the group was answered 500,
    /// yet the writes after the one that ended the transaction had been committed by their own
    /// savepoints, and those before it were lost. Every answer must say what is stored.
    #[test]
    fn a_write_that_ends_the_transaction_fails_alone_and_every_answer_is_true() {
        let (_dir, mut conn) = table();
        let batch = [
            Op::Insert(1),
            Op::Insert(2),
            Op::EndsTheTransaction,
            Op::Insert(3),
            Op::Insert(3),
        ];
        let outcomes = commit_group_with(&mut conn, &batch, apply_op);
        assert_eq!(answers(&outcomes), [true, true, false, true, false]);
        assert_eq!(stored(&conn), [1, 2, 3]);
        let Err(StoreError::Sqlite(e)) = &outcomes[2] else {
            panic!(
                "the failing write keeps its own error: {:?}",
                outcomes[2].as_ref().err()
            );
        };
        assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
        assert!(StoreError::Sqlite(clone_err(e)).is_transient());
        // The connection is usable afterwards: the next group is one transaction again.
        let outcomes = commit_group_with(&mut conn, &[Op::Insert(4)], apply_op);
        assert_eq!(answers(&outcomes), [true]);
        assert!(conn.is_autocommit());
        assert_eq!(stored(&conn), [1, 2, 3, 4]);
    }
}
