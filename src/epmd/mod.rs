//! EPMD, the Erlang Port Mapper Daemon: a client and an embedded server.
//!
//! Every host running Erlang nodes runs one EPMD (TCP port 4369 by default, or
//! `ERL_EPMD_PORT`). A node registers its alive name and distribution port with it
//! (`ALIVE2_REQ`) over a connection it keeps open for as long as it is distributed; other
//! nodes ask EPMD for that port (`PORT_PLEASE2_REQ`) before they connect.
//!
//! * `codec`: the messages, pure encoders and decoders with epmd's limits.
//! * [`EpmdClient`]: look nodes up, list them, register a node
//!   ([`EpmdRegistration`] keeps the registration alive while it lives).
//! * [`EpmdServer`]: an embedded EPMD, a drop-in for `epmd` on a host without Erlang,
//!   built on the pure `registry` and the crate's [`listener`](crate::listener) limits.
//!
//! ```no_run
//! use autocluster::epmd::{EpmdClient, NodeEntry};
//!
//! # async fn demo() -> Result<(), autocluster::epmd::EpmdError> {
//! let epmd = EpmdClient::localhost();
//! for (name, port) in epmd.names().await? {
//!     println!("name {name} at port {port}");
//! }
//! if let Some(node) = epmd.port_please("rabbit").await? {
//!     println!("rabbit listens on {}", node.port);
//! }
//! // Registered for as long as `registration` lives.
//! let registration = epmd.register(NodeEntry::new("tool", 45000).hidden()).await?;
//! println!("creation {}", registration.creation());
//! registration.deregister().await;
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use autocluster::epmd::port_from_env;
//! // ERL_EPMD_PORT when set to a valid port, else 4369.
//! let port = port_from_env();
//! assert!(port > 0);
//! ```

mod client;
crate::internal_mod!(codec);
crate::internal_mod!(registry);
mod server;

pub use client::{EpmdClient, EpmdError, EpmdRegistration};
pub use codec::{
    Alive2Form, CodecError, DumpEntry, DumpResponse, NameEntry, NameError, NamesResponse,
    NodeEntry, NodeType,
};
pub use server::{EpmdServer, EpmdServerConfig};

/// The port EPMD listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 4369;

/// The environment variable OTP (`erl`, `epmd`) reads the EPMD port from.
pub const PORT_ENV: &str = "ERL_EPMD_PORT";

/// The EPMD port as OTP picks it: `ERL_EPMD_PORT` if it holds a port number, else
/// [`DEFAULT_PORT`]. An invalid value is logged and ignored.
pub fn port_from_env() -> u16 {
    match std::env::var(PORT_ENV) {
        Ok(value) => match parse_port(&value) {
            Some(port) => port,
            None => {
                tracing::warn!(
                    value = %value,
                    "{PORT_ENV} is not a port number; using {DEFAULT_PORT}"
                );
                DEFAULT_PORT
            }
        },
        Err(_) => DEFAULT_PORT,
    }
}

fn parse_port(value: &str) -> Option<u16> {
    value.trim().parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_port_parsing() {
        assert_eq!(parse_port("4370"), Some(4370));
        assert_eq!(parse_port(" 4370\n"), Some(4370));
        assert_eq!(parse_port("0"), None);
        assert_eq!(parse_port("65536"), None);
        assert_eq!(parse_port("epmd"), None);
        assert_eq!(parse_port(""), None);
    }
}
