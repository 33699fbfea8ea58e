//! Async in-memory stores: the session store the session middleware reads
//! and writes blocking-style through `suspendware::wait`, and a user
//! directory with async lookups.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use tokio::sync::RwLock;

/// A session's values.
pub type SessionData = HashMap<String, String>;

/// Sessions by key. Every call yields to the executor first, as a network
/// store would, so the middleware really suspends on it.
#[derive(Debug, Clone, Default)]
pub struct SessionStore {
    sessions: Arc<RwLock<HashMap<String, SessionData>>>,
}

impl SessionStore {
    pub async fn load(&self, key: &str) -> Option<SessionData> {
        tokio::task::yield_now().await;
        self.sessions.read().await.get(key).cloned()
    }

    pub async fn save(&self, key: &str, data: SessionData) {
        tokio::task::yield_now().await;
        self.sessions.write().await.insert(key.to_owned(), data);
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub username: String,
}

/// Users by name and id (async lookups).
#[derive(Debug, Clone)]
pub struct UserDirectory {
    users: Arc<Vec<User>>,
}

impl Default for UserDirectory {
    fn default() -> Self {
        let users = ["alice", "bob", "carol"]
            .iter()
            .zip(1..)
            .map(|(name, id)| User {
                id,
                username: (*name).to_owned(),
            })
            .collect();
        UserDirectory {
            users: Arc::new(users),
        }
    }
}

impl UserDirectory {
    pub async fn by_name(&self, name: &str) -> Option<User> {
        tokio::task::yield_now().await;
        self.users.iter().find(|u| u.username == name).cloned()
    }

    pub async fn by_id(&self, id: u32) -> Option<User> {
        tokio::task::yield_now().await;
        self.users.iter().find(|u| u.id == id).cloned()
    }
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
