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
    /// The workers could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
