//! The app's database: Django's `django_session` and `auth_user` tables in
//! an SQLite file, reached with plain synchronous `rusqlite` calls.
//!
//! Legacy code calls [`Database::call`] with a closure that takes a
//! `&Connection`, as a Django view would use `connection.cursor()`; where
//! that closure runs is the database's [`DbCalls`] setting:
//!
//! * [`DbCalls::Inline`]: right there, on the calling thread (the fiber's
//!   worker thread in Suspend mode), on that thread's own connection (a
//!   `thread_local!`, like Django's per-thread connection). The thread is
//!   blocked for the whole call: other requests on it wait, and the
//!   pipeline's watchdog names the layer.
//! * [`DbCalls::Blocking`]: in `suspendware::blocking`, on a connection
//!   checked out of an `r2d2` pool and lent to the closure by `&mut` (no
//!   `Arc<Mutex>`: `blocking` closures may borrow); the fiber is suspended
//!   meanwhile and the worker thread serves other requests, so calls run in
//!   parallel (up to the pool's size, which is also the pipeline's
//!   `blocking_threads`).
//!
//! Async code (the views, and the native-async middleware of `--mode
//! async`) uses [`Database::call_async`]: `tokio::task::spawn_blocking` with
//! a pooled connection.
//!
//! Both pooled paths first take one of `pool_size` permits (an async
//! semaphore, awaited with `suspendware::wait` from sync code): a call that
//! finds every connection busy waits suspended, not on a blocking-pool
//! thread, so database calls never hold more threads than the pool has
//! connections.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension};

/// A session's values.
pub type SessionData = HashMap<String, String>;

/// Django's `SESSION_COOKIE_AGE`: two weeks, in seconds.
pub const SESSION_AGE_S: u64 = 1_209_600;

/// The demo users (`auth_user` is seeded with them at start).
pub const DEMO_USERS: [&str; 3] = ["alice", "bob", "carol"];

/// How long a connection waits for a lock held by another one before the
/// call fails with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database calls of sync middleware run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCalls {
    /// On the calling thread, on its own connection (blocks the thread).
    Inline,
    /// In `suspendware::blocking`, on a pooled connection (suspends the fiber).
    Blocking,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The SQLite file (created if missing). `None`: `app.sqlite3` in a fresh
    /// temporary directory, removed when the last [`Database`] clone goes.
    pub path: Option<PathBuf>,
    /// Where sync middleware's calls run.
    pub calls: DbCalls,
    /// Connections in the pool (`Blocking` calls and async code).
    pub pool_size: u32,
    /// Added to every call as a blocking sleep (stands for a remote server).
    pub latency: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            path: None,
            calls: DbCalls::Blocking,
            pool_size: 16,
            latency: Duration::ZERO,
        }
    }
}

/// Why the database could not be opened.
#[derive(Debug)]
pub struct DbError(pub String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

type Pool = r2d2::Pool<SqliteConnectionManager>;

/// The database; clones share the pool (and the temporary directory).
#[derive(Clone)]
pub struct Database {
    path: Arc<PathBuf>,
    pool: Pool,
    calls: DbCalls,
    latency: Duration,
    /// One permit per pooled connection.
    permits: Arc<tokio::sync::Semaphore>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("calls", &self.calls)
            .field("pool_size", &self.pool.max_size())
            .field("latency", &self.latency)
            .finish()
    }
}

/// Settings every connection gets (pooled or thread-local).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers don't block the writer nor the writer the readers.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl Database {
    /// Opens (creating if needed) the database, its tables and the demo users.
    pub fn open(cfg: &DbConfig) -> Result<Database, DbError> {
        let err = |what: &str, e: &dyn std::fmt::Display| DbError(format!("{what}: {e}"));
        let (path, dir) = match &cfg.path {
            Some(p) if p.as_os_str() == ":memory:" || p.as_os_str().is_empty() => {
                return Err(DbError(
                    "an in-memory database is not shared between connections; give a file".into(),
                ))
            }
            Some(p) => (p.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("legacy_app-")
                    .tempdir()
                    .map_err(|e| err("cannot create a temporary directory", &e))?;
                (dir.path().join("app.sqlite3"), Some(Arc::new(dir)))
            }
        };
        {
            let conn = Connection::open(&path).map_err(|e| err("cannot open the database", &e))?;
            configure(&conn).map_err(|e| err("cannot configure the database", &e))?;
            create_schema(&conn).map_err(|e| err("cannot create the tables", &e))?;
        }
        let manager = SqliteConnectionManager::file(&path).with_init(|c| configure(c));
        // All connections are opened here (`min_idle` defaults to the size),
        // so a call finds one idle.
        let pool = r2d2::Pool::builder()
            .max_size(cfg.pool_size.max(1))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(|e| err("cannot build the connection pool", &e))?;
        Ok(Database {
            path: Arc::new(path),
            pool,
            calls: cfg.calls,
            latency: cfg.latency,
            permits: Arc::new(tokio::sync::Semaphore::new(cfg.pool_size.max(1) as usize)),
            _dir: dir,
        })
    }

    /// Connections in the pool (the pipeline's `blocking_threads`).
    pub fn pool_size(&self) -> u32 {
        self.pool.max_size()
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a connection, from sync code (see the module docs).
    /// `f` may borrow the caller's locals (`blocking` borrows).
    pub fn call<F, R>(&self, f: F) -> R
    where
        F: FnOnce(&Connection) -> R + Send,
        R: Send,
    {
        let latency = self.latency;
        match self.calls {
            DbCalls::Inline => with_thread_connection(&self.path, |conn| {
                slow_down(latency);
                f(conn)
            }),
            DbCalls::Blocking => {
                // Suspends (does not block) while every connection is busy.
                let _permit =
                    suspendware::wait(self.permits.clone().acquire_owned()).expect("never closed");
                // With a permit a connection is idle; `try_get` never waits
                // (`None` only if the pool is reopening a broken one: then
                // the pool thread waits for it).
                let mut conn = match self.pool.try_get() {
                    Some(c) => c,
                    // Only while the pool reopens a broken connection.
                    None => suspendware::blocking(|| self.pool.get().expect("database connection")),
                };
                // The closure borrows the checked-out connection (`&mut`:
                // a `Connection` may cross threads but not be shared).
                let conn_ref = &mut conn;
                let out = suspendware::blocking(move || {
                    slow_down(latency);
                    f(conn_ref)
                });
                drop(conn); // back to the pool before the permit
                out
            }
        }
    }

    /// Runs `f` with a pooled connection from async code
    /// (`tokio::task::spawn_blocking`).
    pub async fn call_async<F, R>(&self, f: F) -> R
    where
        F: FnOnce(&Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let _permit = self.permits.acquire().await.expect("never closed");
        let (pool, latency) = (self.pool.clone(), self.latency);
        let task = tokio::task::spawn_blocking(move || {
            let conn = pool.get().expect("database connection pool");
            slow_down(latency);
            f(&conn)
        });
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("database task: {e}"),
        }
    }
}

fn slow_down(latency: Duration) {
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
}

thread_local! {
    /// This thread's connections, one per database file.
    static CONNECTIONS: RefCell<HashMap<PathBuf, Connection>> = RefCell::new(HashMap::new());
}

/// `f` on this thread's connection to `path` (opened on first use).
fn with_thread_connection<R>(path: &Path, f: impl FnOnce(&Connection) -> R) -> R {
    // Taken out of the map while `f` runs, so a nested call cannot find it
    // borrowed (it opens its own).
    let conn = CONNECTIONS.with(|c| c.borrow_mut().remove(path));
    let conn = conn.unwrap_or_else(|| {
        let conn = Connection::open(path).expect("open the database");
        configure(&conn).expect("configure the connection");
        conn
    });
    let out = f(&conn);
    CONNECTIONS.with(|c| c.borrow_mut().insert(path.to_owned(), conn));
    out
}

fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS django_session (
             session_key varchar(40) NOT NULL PRIMARY KEY,
             session_data text NOT NULL,
             expire_date datetime NOT NULL
         );
         CREATE INDEX IF NOT EXISTS django_session_expire_date_a5c62663
             ON django_session (expire_date);
         CREATE TABLE IF NOT EXISTS auth_user (
             id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
             password varchar(128) NOT NULL DEFAULT '',
             last_login datetime NULL,
             is_superuser bool NOT NULL DEFAULT 0,
             username varchar(150) NOT NULL UNIQUE,
             first_name varchar(150) NOT NULL DEFAULT '',
             last_name varchar(150) NOT NULL DEFAULT '',
             email varchar(254) NOT NULL DEFAULT '',
             is_staff bool NOT NULL DEFAULT 0,
             is_active bool NOT NULL DEFAULT 1,
             date_joined datetime NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
         );",
    )?;
    for name in DEMO_USERS {
        conn.execute(
            "INSERT OR IGNORE INTO auth_user (username) VALUES (?1)",
            params![name],
        )?;
    }
    Ok(())
}

/// Now, as Django stores datetimes in SQLite (UTC text), computed by SQLite.
const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// The session's data, if `key` names a session that has not expired.
pub fn load_session(conn: &Connection, key: &str) -> rusqlite::Result<Option<SessionData>> {
    let sql = format!(
        "SELECT session_data FROM django_session WHERE session_key = ?1 AND expire_date > {NOW}"
    );
    let data: Option<String> = conn
        .prepare_cached(&sql)?
        .query_row(params![key], |row| row.get(0))
        .optional()?;
    Ok(data.map(|d| decode(&d)))
}

/// Saves the session under `key` (insert or update), expiring in
/// [`SESSION_AGE_S`]; when the key was cycled, `old` is deleted in the same
/// transaction (Django's `cycle_key`).
pub fn save_session(
    conn: &Connection,
    key: &str,
    old: Option<&str>,
    data: &SessionData,
) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT INTO django_session (session_key, session_data, expire_date)
         VALUES (?1, ?2, strftime('%Y-%m-%d %H:%M:%f', 'now', '+{SESSION_AGE_S} seconds'))
         ON CONFLICT (session_key) DO UPDATE
         SET session_data = excluded.session_data, expire_date = excluded.expire_date"
    );
    let tx = conn.unchecked_transaction()?;
    if let Some(old) = old {
        tx.prepare_cached("DELETE FROM django_session WHERE session_key = ?1")?
            .execute(params![old])?;
    }
    tx.prepare_cached(&sql)?
        .execute(params![key, encode(data)])?;
    tx.commit()
}

/// A registered user (a row of `auth_user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub username: String,
}

/// The active user with this id.
pub fn user_by_id(conn: &Connection, id: u32) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached("SELECT id, username FROM auth_user WHERE id = ?1 AND is_active")?
        .query_row(params![id], |r| {
            Ok(User {
                id: r.get(0)?,
                username: r.get(1)?,
            })
        })
        .optional()
}

/// The active user with this name.
pub fn user_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached("SELECT id, username FROM auth_user WHERE username = ?1 AND is_active")?
        .query_row(params![name], |r| {
            Ok(User {
                id: r.get(0)?,
                username: r.get(1)?,
            })
        })
        .optional()
}

/// Session data as stored (`application/x-www-form-urlencoded`; Django
/// stores signed JSON, which this example leaves out).
fn encode(data: &SessionData) -> String {
    let mut keys: Vec<_> = data.iter().collect();
    keys.sort();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(keys)
        .finish()
}

fn decode(text: &str) -> SessionData {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// A random 128-bit hex token (session keys, CSRF tokens). `RandomState`
/// is seeded from the OS; good enough for an example, not for production.
pub fn token() -> String {
    let half = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}
