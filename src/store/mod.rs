//! Durable state, through sqlx: a SQLite file on a single node, PostgreSQL for clusters.
//!
//! One implementation, `SqlStore`, runs the same queries on both through sqlx's `Any` driver
//! (SQL kept to what both accept: `$n` parameters, `ON CONFLICT … DO UPDATE`, `BIGINT`), and the
//! same tests run against both. Migrations are embedded in the binary and run at start-up (or by
//! `hub migrate`). Every method fails with `unavailable` when the database cannot be reached in
//! `store.acquire_timeout`; callers report that and carry on.

mod chat;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::{any::AnyPoolOptions, AnyPool, Row};

pub use chat::{Appended, ChatStore, ConversationRow, MatchRow, NewMessage, ReceiptKind, Receipts, ReportRow};

use crate::{
    config::StoreConfig,
    errors::{ErrorCode, HubError},
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ban {
    pub user: String,
    pub reason: String,
    pub created_at: u64,
    /// Seconds since the epoch when it ends; `None` until lifted.
    pub until: Option<u64>,
}

impl Ban {
    pub fn active(&self, now: u64) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Round trip to the database.
    async fn ping(&self) -> Result<(), HubError>;
    /// Records (or replaces) a ban.
    async fn ban(&self, ban: &Ban) -> Result<(), HubError>;
    /// Lifts a ban; false when there was none.
    async fn unban(&self, user: &str) -> Result<bool, HubError>;
    /// Bans in force at `now`.
    async fn bans(&self, now: u64) -> Result<Vec<Ban>, HubError>;
}

pub struct SqlStore {
    pool: AnyPool,
    /// Writers that batch chat appends (see `chat::Appenders`).
    appenders: chat::Appenders,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

impl SqlStore {
    /// Connects (creating a SQLite file and its folder if needed) and runs the migrations.
    pub async fn open(config: &StoreConfig) -> anyhow::Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let mut url = config.url.clone();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let file = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; NORMAL syncs at checkpoints, so a
                    // process crash loses nothing committed (a power cut may lose the last commits).
                    if conn.backend_name() == "SQLite" {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("store.url: cannot open {}: {e}", redact(&config.url)))?;
        MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("store migrations failed: {e}"))?;
        let sqlite = url.starts_with("sqlite");
        // SQLite has one writer at a time: one appender batches every conversation. PostgreSQL
        // locks per row: appenders side by side, each conversation always on the same one.
        let writers = if sqlite { 1 } else { (config.max_connections as usize / 2).max(1) };
        let appenders = chat::Appenders::start(pool.clone(), sqlite, writers);
        Ok(SqlStore { pool, appenders })
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn unavailable(e: sqlx::Error) -> HubError {
    HubError::new(ErrorCode::Unavailable, format!("store: {e}"))
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), HubError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(unavailable)
    }

    async fn ban(&self, ban: &Ban) -> Result<(), HubError> {
        sqlx::query(
            "INSERT INTO bans (user_id, reason, created_at, until_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason, created_at = excluded.created_at,
             until_at = excluded.until_at",
        )
        .bind(&ban.user)
        .bind(&ban.reason)
        .bind(ban.created_at as i64)
        .bind(ban.until.map(|u| u as i64))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn unban(&self, user: &str) -> Result<bool, HubError> {
        let done = sqlx::query("DELETE FROM bans WHERE user_id = $1").bind(user).execute(&self.pool).await;
        done.map(|r| r.rows_affected() > 0).map_err(unavailable)
    }

    async fn bans(&self, now: u64) -> Result<Vec<Ban>, HubError> {
        let rows = sqlx::query(
            "SELECT user_id, reason, created_at, until_at FROM bans
             WHERE until_at IS NULL OR until_at > $1 ORDER BY user_id",
        )
        .bind(now as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(Ban {
                    user: r.try_get("user_id")?,
                    reason: r.try_get("reason")?,
                    created_at: r.try_get::<i64, _>("created_at")? as u64,
                    until: r.try_get::<Option<i64>, _>("until_at")?.map(|u| u as u64),
                })
            })
            .collect::<Result<Vec<Ban>, sqlx::Error>>()
            .map_err(unavailable)
    }
}
