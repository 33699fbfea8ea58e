//! Why a server could not start.

use std::io;
use std::net::SocketAddr;

use crate::runtime::RuntimeError;

/// Why [`crate::server::ServerBuilder::serve`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening sockets could not be set up.
    #[error("could not listen on {addr}: {source} (is the address in use or not local?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A limit was set to 0, which would refuse everything.
    #[error("ServerBuilder::{setting} must be at least 1 (0 would refuse every request); leave it unset for the default")]
    ZeroLimit {
        /// The builder method.
        setting: &'static str,
    },
    /// A timeout out of range: 0 would refuse every request (a head or a
    /// write that does not complete at once), and past a year it means no
    /// limit at all (and overflows the clock in hyper).
    #[error("ServerBuilder::{setting} must be between 1 ns and a year, not {value:?}; leave it unset for the default (30 s), or pick a long one such as an hour")]
    Timeout {
        /// The builder method.
        setting: &'static str,
        /// The value given.
        value: std::time::Duration,
    },
    /// The workers could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
