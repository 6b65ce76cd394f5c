//! The embedded EPMD server's node table and request handling, with no I/O.
//!
//! [`Registry`] follows `erts/epmd/src/epmd_srv.c`:
//!
//! * A name that is registered already is refused (`ALIVE2` result 1, creation 99);
//!   epmd has no "replace the stale registration" rule, the old connection must close
//!   first.
//! * Creation numbers: each name has a counter, seeded with the current Unix time when
//!   the name is first seen and incremented on every registration, skipping 0..=3 (the
//!   values a 16-bit-creation node uses). A node registering with distribution version 6
//!   or more gets the counter itself (32 bits, `ALIVE2_X_RESP`); an older node gets
//!   `counter % 3 + 1` (`ALIVE2_RESP`). So a node that restarts gets a new creation and
//!   its old pids, refs and ports are recognisably stale.
//! * Names that were unregistered are remembered (at most [`MAX_OLD_NAMES`], oldest
//!   forgotten first) so that their next registration bumps the counter.
//! * `NAMES` lists the newest registration first, like epmd.
//!
//! [`Registry::handle`] turns one decoded request into the reply bytes and what the
//! connection must do next, applying epmd's access rules:
//!
//! * `ALIVE2`, `DUMP`, `KILL` and `STOP` are served to local peers only (loopback, or the
//!   peer address equal to the address it connected to); others are closed silently.
//! * `KILL` answers `NO` while nodes are registered, unless the relaxed command check is
//!   on (`epmd -relaxed_command_check`); after `OK` the server shuts down.
//! * `STOP` is only served with the relaxed command check (otherwise the connection is
//!   closed without a reply, as epmd does); it answers `STOPPED` after unregistering the
//!   node and closing its connection, or `NOEXIST`. (epmd follows `NOEXIST` with a
//!   stray `STOPPED`; `epmd -stop` reads only 7 bytes, we send only `NOEXIST`.)
//!
//! ```
//! use autocluster::epmd::codec::{NodeEntry, Request};
//! use autocluster::epmd::registry::{After, Registry, RequestContext};
//!
//! let mut registry = Registry::new();
//! let ctx = RequestContext { conn: 1, local_peer: true, epmd_port: 4369, unix_time: 1_700_000_000,
//!                            relaxed_command_check: false, may_register: true };
//! let outcome = registry.handle(Request::Alive2(NodeEntry::new("rabbit", 25672)), &ctx);
//! assert_eq!(outcome.after, After::KeepRegistered);
//! assert_eq!(registry.lookup("rabbit").map(|e| e.port), Some(25672));
//!
//! // The connection closes: the name is free again, and comes back with a new creation.
//! registry.unregister_conn(1);
//! assert!(registry.lookup("rabbit").is_none());
//! # Ok::<(), autocluster::epmd::codec::CodecError>(())
//! ```

use std::collections::VecDeque;

use super::codec::{
    Alive2Form, Alive2Response, DumpEntry, DumpResponse, KillResponse, NameEntry, NamesResponse,
    NodeEntry, PortPlease2Response, Request, StopResponse,
};

/// How many unregistered names are remembered for creation bumping (epmd's
/// `MAX_UNREG_COUNT`).
pub const MAX_OLD_NAMES: usize = 1000;

/// The creation epmd sends with a failed registration.
pub const FAILED_CREATION: u32 = 99;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A live node holds the name.
    #[error("node name {0:?} is registered already")]
    NameInUse(String),
    /// This connection registered a node already (epmd serves one request per
    /// connection).
    #[error("connection {0} registered a node already")]
    ConnectionInUse(u64),
    /// The entry breaks the codec limits.
    #[error("invalid registration: {0}")]
    Invalid(#[from] super::codec::CodecError),
}

#[derive(Debug, Clone)]
struct Live {
    conn: u64,
    entry: NodeEntry,
    counter: u32,
}

#[derive(Debug, Clone)]
struct Old {
    name: String,
    port: u16,
    conn: u64,
    counter: u32,
}

/// The table of registered nodes.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// Newest first, as epmd lists them.
    live: Vec<Live>,
    /// Oldest first.
    old: VecDeque<Old>,
}

fn bump(counter: u32) -> u32 {
    let next = counter.wrapping_add(1);
    if next < 4 { 4 } else { next }
}

fn creation_for(counter: u32, highest_version: u16) -> (u32, Alive2Form) {
    if highest_version >= 6 {
        (counter, Alive2Form::Extended)
    } else {
        (counter % 3 + 1, Alive2Form::Old)
    }
}

impl Registry {
    /// An empty table.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `entry` for connection `conn` and returns its creation number.
    ///
    /// `unix_time` (seconds) seeds the creation counter of a name seen for the first time,
    /// as epmd does.
    pub fn register(
        &mut self,
        conn: u64,
        entry: NodeEntry,
        unix_time: u64,
    ) -> Result<u32, RegisterError> {
        entry.validate()?;
        if self.live.iter().any(|l| l.entry.name == entry.name) {
            return Err(RegisterError::NameInUse(entry.name));
        }
        if self.live.iter().any(|l| l.conn == conn) {
            return Err(RegisterError::ConnectionInUse(conn));
        }
        let counter = match self.old.iter().position(|o| o.name == entry.name) {
            Some(i) => {
                let previous = self.old.remove(i).map_or(0, |o| o.counter);
                bump(previous)
            }
            // time_t truncated to epmd's unsigned int counter.
            None => bump(unix_time as u32),
        };
        let (creation, _) = creation_for(counter, entry.highest_version);
        self.live.insert(
            0,
            Live {
                conn,
                entry,
                counter,
            },
        );
        Ok(creation)
    }

    /// Unregisters the node registered by connection `conn` (it closed).
    pub fn unregister_conn(&mut self, conn: u64) -> Option<NodeEntry> {
        let i = self.live.iter().position(|l| l.conn == conn)?;
        Some(self.retire(i))
    }

    /// Unregisters the node called `name`, returning the connection that registered it.
    pub fn unregister_name(&mut self, name: &str) -> Option<u64> {
        let i = self.live.iter().position(|l| l.entry.name == name)?;
        let conn = self.live[i].conn;
        self.retire(i);
        Some(conn)
    }

    fn retire(&mut self, i: usize) -> NodeEntry {
        let live = self.live.remove(i);
        if self.old.len() >= MAX_OLD_NAMES {
            self.old.pop_front();
        }
        self.old.push_back(Old {
            name: live.entry.name.clone(),
            port: live.entry.port,
            conn: live.conn,
            counter: live.counter,
        });
        live.entry
    }

    /// The registered node called `name`.
    pub fn lookup(&self, name: &str) -> Option<&NodeEntry> {
        self.live
            .iter()
            .find(|l| l.entry.name == name)
            .map(|l| &l.entry)
    }

    /// The registered nodes, newest first.
    pub fn entries(&self) -> impl Iterator<Item = &NodeEntry> {
        self.live.iter().map(|l| &l.entry)
    }

    /// The creation number the live node `name` was given.
    pub fn creation(&self, name: &str) -> Option<u32> {
        self.live
            .iter()
            .find(|l| l.entry.name == name)
            .map(|l| creation_for(l.counter, l.entry.highest_version).0)
    }

    /// How many nodes are registered.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no node is registered.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The `NAMES` reply.
    pub fn names(&self, epmd_port: u16) -> NamesResponse {
        NamesResponse {
            epmd_port: u32::from(epmd_port),
            nodes: self
                .live
                .iter()
                .map(|l| NameEntry {
                    name: l.entry.name.clone(),
                    port: l.entry.port,
                })
                .collect(),
        }
    }

    /// The `DUMP` reply: live nodes (newest first), then remembered old names (oldest
    /// first). The `fd` column holds the server's connection number.
    pub fn dump(&self, epmd_port: u16) -> DumpResponse {
        let conn_number = |conn: u64| i64::try_from(conn).unwrap_or(i64::MAX);
        let live = self.live.iter().map(|l| DumpEntry {
            name: l.entry.name.clone(),
            port: l.entry.port,
            fd: conn_number(l.conn),
            active: true,
        });
        let old = self.old.iter().map(|o| DumpEntry {
            name: o.name.clone(),
            port: o.port,
            fd: conn_number(o.conn),
            active: false,
        });
        DumpResponse {
            epmd_port: u32::from(epmd_port),
            entries: live.chain(old).collect(),
        }
    }

    /// Serves one decoded request: returns the reply and what the connection does next.
    pub fn handle(&mut self, request: Request, ctx: &RequestContext) -> Outcome {
        let local_only = matches!(
            request,
            Request::Alive2(_) | Request::Dump | Request::Kill | Request::Stop { .. }
        );
        if local_only && !ctx.local_peer {
            return Outcome::close(Vec::new(), Note::NotLocal);
        }
        match request {
            Request::Alive2(entry) => {
                let form = creation_for(0, entry.highest_version).1;
                let failure = |note| {
                    let reply = Alive2Response {
                        result: 1,
                        creation: FAILED_CREATION,
                        form,
                    };
                    Outcome::close(reply.encode(), note)
                };
                if !ctx.may_register {
                    return failure(Note::LimitReached);
                }
                let name = entry.name.clone();
                match self.register(ctx.conn, entry, ctx.unix_time) {
                    Ok(creation) => Outcome {
                        reply: Alive2Response {
                            result: 0,
                            creation,
                            form,
                        }
                        .encode(),
                        after: After::KeepRegistered,
                        note: Note::Registered { name, creation },
                    },
                    Err(RegisterError::NameInUse(name)) => failure(Note::NameInUse(name)),
                    Err(_) => failure(Note::Refused),
                }
            }
            Request::PortPlease2 { name } => {
                let reply = match self.lookup(&name) {
                    Some(entry) => PortPlease2Response::Found(entry.clone()),
                    None => PortPlease2Response::NotFound { result: 1 },
                };
                // Registered entries passed validation, so encoding cannot fail; answer
                // "not found" rather than nothing if it ever did.
                let bytes = reply
                    .encode()
                    .unwrap_or_else(|_| vec![super::codec::PORT2_RESP, 1]);
                Outcome::close(bytes, Note::Served)
            }
            Request::Names => Outcome::close(self.names(ctx.epmd_port).encode(), Note::Served),
            Request::Dump => Outcome::close(self.dump(ctx.epmd_port).encode(), Note::Served),
            Request::Kill => {
                if !ctx.relaxed_command_check && !self.is_empty() {
                    Outcome::close(KillResponse::No.encode(), Note::KillRefused)
                } else {
                    Outcome {
                        reply: KillResponse::Ok.encode(),
                        after: After::Shutdown,
                        note: Note::Killed,
                    }
                }
            }
            Request::Stop { name } => {
                if !ctx.relaxed_command_check {
                    return Outcome::close(Vec::new(), Note::StopRefused);
                }
                match self.unregister_name(&name) {
                    Some(conn) => Outcome {
                        reply: StopResponse::Stopped.encode(),
                        after: After::CloseOther(conn),
                        note: Note::Stopped(name),
                    },
                    None => Outcome::close(StopResponse::NoExist.encode(), Note::Served),
                }
            }
        }
    }
}

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The connection's number (unique for the server's lifetime).
    pub conn: u64,
    /// Whether the peer is local (loopback, or the address it connected to).
    pub local_peer: bool,
    /// The port the request arrived on (reported in `NAMES` and `DUMP`).
    pub epmd_port: u16,
    /// Seconds since the Unix epoch, to seed creation numbers.
    pub unix_time: u64,
    /// epmd's `-relaxed_command_check`: allow `STOP`, and `KILL` with live nodes.
    pub relaxed_command_check: bool,
    /// Whether the connection limits allow one more registered node.
    pub may_register: bool,
}

/// What the connection does after writing the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Close the connection (every request but a successful `ALIVE2`).
    Close,
    /// Keep the connection open: the node stays registered until it closes. Then call
    /// [`Registry::unregister_conn`].
    KeepRegistered,
    /// Close this connection and the registered connection with this number (`STOP`).
    CloseOther(u64),
    /// Close this connection and shut the whole server down (`KILL`).
    Shutdown,
}

/// What happened, for the server's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note {
    /// A query was answered.
    Served,
    /// A node registered.
    Registered {
        /// Its name.
        name: String,
        /// Its creation.
        creation: u32,
    },
    /// A registration was refused: the name is taken.
    NameInUse(String),
    /// A registration was refused: the connection limits are reached.
    LimitReached,
    /// A registration was refused for another reason.
    Refused,
    /// A local-only request came from a remote peer.
    NotLocal,
    /// `KILL` refused because nodes are registered.
    KillRefused,
    /// `KILL` accepted.
    Killed,
    /// `STOP` refused (no relaxed command check).
    StopRefused,
    /// `STOP` unregistered a node.
    Stopped(String),
}

/// The result of [`Registry::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes to send (possibly none: epmd closes some connections without a word).
    pub reply: Vec<u8>,
    /// What to do next.
    pub after: After,
    /// What happened.
    pub note: Note,
}

impl Outcome {
    fn close(reply: Vec<u8>, note: Note) -> Outcome {
        Outcome {
            reply,
            after: After::Close,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    const T: u64 = 1_700_000_000;

    fn ctx(conn: u64) -> RequestContext {
        RequestContext {
            conn,
            local_peer: true,
            epmd_port: 4369,
            unix_time: T,
            relaxed_command_check: false,
            may_register: true,
        }
    }

    fn alive(name: &str, port: u16) -> Request {
        Request::Alive2(NodeEntry::new(name, port))
    }

    fn alive_reply(outcome: &Outcome) -> Alive2Response {
        match Alive2Response::decode(&outcome.reply) {
            Ok(Status::Complete((r, n))) if n == outcome.reply.len() => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn creation_follows_epmd() {
        let mut r = Registry::new();
        let first = r.register(1, NodeEntry::new("a", 1), T).unwrap();
        assert_eq!(first, T as u32 + 1);
        r.unregister_conn(1).unwrap();
        assert_eq!(
            r.register(2, NodeEntry::new("a", 1), T + 50).unwrap(),
            first + 1
        );
        assert_eq!(r.creation("a"), Some(first + 1));
        // A counter at the top of u32 wraps past the reserved 0..=3.
        let wrapped = r
            .register(3, NodeEntry::new("b", 1), u64::from(u32::MAX))
            .unwrap();
        assert_eq!(wrapped, 4);
        let small = r.register(4, NodeEntry::new("c", 1), 1).unwrap();
        assert_eq!(small, 4);
    }

    #[test]
    fn old_nodes_get_a_16_bit_creation_in_the_old_reply() {
        let mut r = Registry::new();
        let mut e = NodeEntry::new("old", 1);
        e.highest_version = 5;
        e.lowest_version = 5;
        let out = r.handle(Request::Alive2(e), &ctx(1));
        let reply = alive_reply(&out);
        assert_eq!(reply.form, Alive2Form::Old);
        assert_eq!(reply.creation, (T as u32 + 1) % 3 + 1);
        assert!((1..=3).contains(&reply.creation));
        assert_eq!(out.reply[0], 121);
    }

    #[test]
    fn duplicate_live_name_is_refused_like_epmd() {
        let mut r = Registry::new();
        let out = r.handle(alive("rabbit", 1), &ctx(1));
        assert_eq!(out.after, After::KeepRegistered);
        assert!(alive_reply(&out).is_ok());
        let out = r.handle(alive("rabbit", 2), &ctx(2));
        assert_eq!(out.after, After::Close);
        assert_eq!(out.note, Note::NameInUse("rabbit".into()));
        let reply = alive_reply(&out);
        assert_eq!((reply.result, reply.creation), (1, FAILED_CREATION));
        assert_eq!(r.lookup("rabbit").unwrap().port, 1);
        assert!(matches!(
            r.register(1, NodeEntry::new("other", 1), T),
            Err(RegisterError::ConnectionInUse(1))
        ));
    }

    #[test]
    fn registration_limits_refuse_with_a_failed_reply() {
        let mut r = Registry::new();
        let out = r.handle(
            alive("a", 1),
            &RequestContext {
                may_register: false,
                ..ctx(1)
            },
        );
        assert_eq!(out.note, Note::LimitReached);
        assert!(!alive_reply(&out).is_ok());
        assert!(r.is_empty());
    }

    #[test]
    fn port_please_and_names() {
        let mut r = Registry::new();
        r.handle(alive("a", 100), &ctx(1));
        r.handle(alive("b", 200), &ctx(2));
        let out = r.handle(Request::PortPlease2 { name: "a".into() }, &ctx(3));
        assert_eq!(
            PortPlease2Response::decode(&out.reply).unwrap(),
            Status::Complete((
                PortPlease2Response::Found(NodeEntry::new("a", 100)),
                out.reply.len()
            ))
        );
        let out = r.handle(Request::PortPlease2 { name: "zz".into() }, &ctx(3));
        assert_eq!(out.reply, [119, 1]);
        let out = r.handle(Request::Names, &ctx(3));
        assert_eq!(
            out.reply,
            b"\0\0\x11\x11name b at port 200\nname a at port 100\n"
        );
        // Remote peers may ask NAMES and PORT_PLEASE2.
        let remote = RequestContext {
            local_peer: false,
            ..ctx(4)
        };
        assert_eq!(r.handle(Request::Names, &remote).note, Note::Served);
    }

    #[test]
    fn local_only_requests_from_remote_peers_are_closed_silently() {
        let mut r = Registry::new();
        let remote = RequestContext {
            local_peer: false,
            relaxed_command_check: true,
            ..ctx(1)
        };
        for request in [
            alive("a", 1),
            Request::Dump,
            Request::Kill,
            Request::Stop { name: "a".into() },
        ] {
            let out = r.handle(request, &remote);
            assert_eq!((out.reply.as_slice(), out.after), (&[][..], After::Close));
            assert_eq!(out.note, Note::NotLocal);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn kill_is_refused_while_nodes_live_unless_relaxed() {
        let mut r = Registry::new();
        let out = r.handle(Request::Kill, &ctx(1));
        assert_eq!(
            (out.reply.as_slice(), out.after),
            (&b"OK"[..], After::Shutdown)
        );
        r.handle(alive("a", 1), &ctx(2));
        let out = r.handle(Request::Kill, &ctx(3));
        assert_eq!(
            (out.reply.as_slice(), out.after),
            (&b"NO"[..], After::Close)
        );
        let relaxed = RequestContext {
            relaxed_command_check: true,
            ..ctx(4)
        };
        assert_eq!(r.handle(Request::Kill, &relaxed).after, After::Shutdown);
    }

    #[test]
    fn stop_needs_the_relaxed_check() {
        let mut r = Registry::new();
        r.handle(alive("a", 1), &ctx(7));
        let out = r.handle(Request::Stop { name: "a".into() }, &ctx(8));
        assert_eq!((out.reply.as_slice(), out.after), (&[][..], After::Close));
        assert!(r.lookup("a").is_some());
        let relaxed = RequestContext {
            relaxed_command_check: true,
            ..ctx(9)
        };
        let out = r.handle(Request::Stop { name: "a".into() }, &relaxed);
        assert_eq!(
            (out.reply.as_slice(), out.after),
            (&b"STOPPED"[..], After::CloseOther(7))
        );
        assert!(r.lookup("a").is_none());
        let out = r.handle(Request::Stop { name: "a".into() }, &relaxed);
        assert_eq!(out.reply, b"NOEXIST");
    }

    #[test]
    fn dump_lists_live_then_old() {
        let mut r = Registry::new();
        r.handle(alive("a", 1), &ctx(5));
        r.handle(alive("b", 2), &ctx(6));
        r.unregister_conn(5);
        let out = r.handle(Request::Dump, &ctx(7));
        assert_eq!(
            &out.reply[4..],
            b"active name     <b> at port 2, fd = 6\n\0old/unused name <a>, port = 1, fd = 5 \n\0"
        );
    }

    #[test]
    fn old_names_are_bounded() {
        let mut r = Registry::new();
        for i in 0..(MAX_OLD_NAMES as u64 + 10) {
            r.register(i, NodeEntry::new(format!("n{i}"), 1), T)
                .unwrap();
            r.unregister_conn(i).unwrap();
        }
        assert_eq!(r.old.len(), MAX_OLD_NAMES);
        assert!(r.is_empty());
        // The forgotten name starts from a fresh seed; a remembered one is bumped.
        assert_eq!(r.register(1, NodeEntry::new("n0", 1), 7).unwrap(), 8);
        assert_eq!(
            r.register(2, NodeEntry::new("n20", 1), 7).unwrap(),
            T as u32 + 2
        );
    }
}
