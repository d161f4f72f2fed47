//! Numbered schema migrations from `sql/`, embedded in the binary and applied in order.
//!
//! Each migration runs in its own transaction that first takes a transaction-level
//! advisory lock, so two processes starting together apply it once. Applied versions are
//! recorded in `schema_migrations`, so a second run applies nothing. Runs only on the
//! store thread.

use postgres::Client;

/// One schema change: a numbered SQL file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order they are applied. Add new files at the end and never
/// edit an applied one: the recorded checksum would no longer match.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../sql/001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "sync",
        sql: include_str!("../../sql/002_sync.sql"),
    },
    Migration {
        version: 3,
        name: "desired_state",
        sql: include_str!("../../sql/003_desired_state.sql"),
    },
    Migration {
        version: 4,
        name: "lean_raw_readings",
        sql: include_str!("../../sql/004_lean_raw_readings.sql"),
    },
];

/// Advisory lock key for migrations: the ASCII bytes of "tstatmig".
const MIGRATION_LOCK_KEY: i64 = 0x7473_7461_746d_6967;

const CREATE_MIGRATIONS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   bigint NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )";

/// Applies every migration that `schema_migrations` does not list yet and returns the
/// versions it applied, oldest first.
pub fn apply_migrations(client: &mut Client) -> Result<Vec<i32>, postgres::Error> {
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if apply_one(client, migration)? {
            applied.push(migration.version);
        }
    }
    Ok(applied)
}

/// Applies `migration` unless it is recorded; returns whether it was applied.
fn apply_one(client: &mut Client, migration: &Migration) -> Result<bool, postgres::Error> {
    let mut transaction = client.transaction()?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
    transaction.batch_execute(CREATE_MIGRATIONS_TABLE)?;

    let checksum = checksum(migration.sql);
    let recorded = transaction.query_opt(
        "SELECT checksum FROM schema_migrations WHERE version = $1",
        &[&migration.version],
    )?;
    if let Some(row) = recorded {
        let recorded_checksum: i64 = row.get(0);
        if recorded_checksum != checksum {
            log::warn!(
                "migration {} ({}) differs from the version applied to this database; \
                 the database keeps the applied version",
                migration.version,
                migration.name
            );
        }
        transaction.commit()?;
        return Ok(false);
    }

    transaction.batch_execute(migration.sql)?;
    transaction.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        &[&migration.version, &migration.name, &checksum],
    )?;
    transaction.commit()?;
    Ok(true)
}

/// Returns the 64-bit FNV-1a hash of `sql`, stored to notice an edited migration.
fn checksum(sql: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).ok(), Some(index + 1));
        }
    }

    #[test]
    fn checksum_changes_with_text() {
        assert_ne!(checksum("CREATE TABLE a ()"), checksum("CREATE TABLE b ()"));
    }
}
