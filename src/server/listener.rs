//! One listening socket per worker.
//!
//! On Unix every worker gets its own socket bound to the same address with
//! `SO_REUSEPORT`, and the kernel spreads new connections across them: no
//! acceptor thread, no hand-off. Elsewhere the workers share clones of one
//! socket. `SO_REUSEPORT` lets other processes of the same user bind the
//! same port too; don't run untrusted code as the server's user.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// `n` non-blocking listeners on `addr` (port 0: the first one picks it).
pub(crate) fn bind(addr: SocketAddr, n: usize, backlog: i32) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr, backlog)?;
    let addr = first.local_addr()?;
    let mut listeners = Vec::with_capacity(n);
    listeners.push(first);
    for _ in 1..n {
        #[cfg(unix)]
        listeners.push(bind_one(addr, backlog)?);
        #[cfg(not(unix))]
        listeners.push(listeners[0].try_clone()?);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
