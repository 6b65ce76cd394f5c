//! EPMD messages: encoders and decoders, with no I/O.
//!
//! Requests travel as `Len:16 | Request`, one request per TCP connection. Replies have no
//! length prefix: `PORT2_RESP` and `ALIVE2_X_RESP` are self-delimiting, while `NAMES`
//! and `DUMP` replies end when EPMD closes the socket, so their decoders take the whole
//! reply.
//!
//! The limits are epmd's own (`erts/epmd/src/epmd_int.h`): a node name is 1 to 255
//! characters of UTF-8 (at most 1020 bytes) without NUL, the extra field at most
//! 1020 bytes, and a request at most [`MAX_REQUEST_LEN`] bytes. On top of epmd we refuse
//! names containing ASCII control characters: a newline in a name would let a local
//! process forge lines in every `NAMES` reply.
//!
//! ```
//! use autocluster::epmd::codec::{NodeEntry, PortPlease2Response, Request};
//! use autocluster::wire::Status;
//!
//! let request = Request::PortPlease2 { name: "rabbit".into() };
//! let bytes = request.encode()?;
//! assert_eq!(bytes, b"\x00\x07zrabbit");
//! assert_eq!(Request::decode(&bytes)?, Status::Complete((request, bytes.len())));
//! // Incomplete input asks for more instead of failing.
//! assert_eq!(Request::decode(&bytes[..4])?, Status::Partial);
//!
//! let reply = PortPlease2Response::Found(NodeEntry::new("rabbit", 25672));
//! let bytes = reply.encode()?;
//! assert_eq!(PortPlease2Response::decode(&bytes)?, Status::Complete((reply, bytes.len())));
//! # Ok::<(), autocluster::epmd::codec::CodecError>(())
//! ```

use std::fmt::Write as _;

use crate::wire::{Reader, Status, put_u16_prefixed};

/// `ALIVE2_REQ` tag (`x`): register a node.
pub const ALIVE2_REQ: u8 = 120;
/// `ALIVE2_X_RESP` tag (`v`): registration reply with a 32-bit creation (dist version 6+).
pub const ALIVE2_X_RESP: u8 = 118;
/// `ALIVE2_RESP` tag (`y`): the old registration reply with a 16-bit creation.
pub const ALIVE2_RESP: u8 = 121;
/// `PORT_PLEASE2_REQ` tag (`z`): look a node up.
pub const PORT_PLEASE2_REQ: u8 = 122;
/// `PORT2_RESP` tag (`w`): the lookup reply.
pub const PORT2_RESP: u8 = 119;
/// `NAMES_REQ` tag (`n`): list the registered nodes.
pub const NAMES_REQ: u8 = 110;
/// `DUMP_REQ` tag (`d`): list registered and old nodes with their sockets.
pub const DUMP_REQ: u8 = 100;
/// `KILL_REQ` tag (`k`): ask EPMD to exit.
pub const KILL_REQ: u8 = 107;
/// `STOP_REQ` tag (`s`): ask EPMD to unregister a node.
pub const STOP_REQ: u8 = 115;

/// Most characters in a node name (an atom's limit, as epmd checks it).
pub const MAX_NAME_CHARS: usize = 255;
/// Most bytes in a node name: 255 characters of up to 4 UTF-8 bytes (epmd's `MAXSYMLEN`).
pub const MAX_NAME_BYTES: usize = 255 * 4;
/// Most bytes in the extra field of a registration (epmd's `MAXSYMLEN`).
pub const MAX_EXTRA_LEN: usize = 255 * 4;
/// Largest `Len` epmd accepts in a request (its input buffer holds `3 * MAXSYMLEN`
/// bytes, the 2 length bytes included, and it refuses a request that fills it).
pub const MAX_REQUEST_LEN: usize = 3 * MAX_NAME_BYTES - 3;
/// Largest `PORT2_RESP`: 14 fixed bytes plus the longest name and extra.
pub const MAX_PORT2_RESPONSE_LEN: usize = 14 + MAX_NAME_BYTES + MAX_EXTRA_LEN;
/// Largest `NAMES` or `DUMP` reply a client accepts (1 MiB).
pub const MAX_NAMES_RESPONSE_LEN: usize = 1 << 20;
/// Most lines a client accepts in a `NAMES` or `DUMP` reply.
pub const MAX_NAMES_ENTRIES: usize = 16_384;

/// The highest distribution version this crate registers with (OTP 23+).
pub const DIST_VERSION_HIGH: u16 = 6;
/// The lowest distribution version this crate registers with (OTP 25 registers 6 too).
pub const DIST_VERSION_LOW: u16 = 6;

/// Why bytes could not be decoded, or a message not encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A request with `Len = 0`.
    #[error("empty EPMD request (length 0)")]
    EmptyRequest,
    /// A request longer than `MAX_REQUEST_LEN`.
    #[error("EPMD request of {len} bytes exceeds the limit of {max}")]
    RequestTooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A request tag this crate does not know.
    #[error("unknown EPMD request tag {0}")]
    UnknownRequest(u8),
    /// A reply did not start with the expected tag.
    #[error("unexpected EPMD reply tag {got}, expected {expected}")]
    UnexpectedTag {
        /// The tag received.
        got: u8,
        /// What was expected.
        expected: &'static str,
    },
    /// A message ends before one of its fields does.
    #[error("EPMD message truncated in {what}")]
    Truncated {
        /// The field or message cut short.
        what: &'static str,
    },
    /// Bytes follow the end of a message.
    #[error("{count} unexpected bytes after the end of {what}")]
    TrailingData {
        /// The message.
        what: &'static str,
        /// How many bytes follow it.
        count: usize,
    },
    /// A node name breaks epmd's rules.
    #[error("invalid node name: {0}")]
    InvalidName(NameError),
    /// The extra field of a registration is too long.
    #[error("extra field of {len} bytes exceeds the limit of {max}")]
    ExtraTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A line of a `NAMES` or `DUMP` reply does not have the expected shape.
    #[error("malformed line {line} in EPMD {what} reply: {text:?}")]
    MalformedLine {
        /// Which reply.
        what: &'static str,
        /// 1-based line number.
        line: usize,
        /// The line (cut to 80 characters).
        text: String,
    },
    /// A `NAMES` or `DUMP` reply exceeds `MAX_NAMES_RESPONSE_LEN`.
    #[error("EPMD reply exceeds the limit of {max} bytes")]
    ResponseTooLong {
        /// The limit.
        max: usize,
    },
    /// A `NAMES` or `DUMP` reply has more than `MAX_NAMES_ENTRIES` lines.
    #[error("EPMD reply lists more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
}

/// What is wrong with a node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("empty")]
    Empty,
    /// More than `MAX_NAME_CHARS` characters.
    #[error("{chars} characters, more than {MAX_NAME_CHARS}")]
    TooLong {
        /// Its length in characters (or bytes when it is not even valid UTF-8).
        chars: usize,
    },
    /// Not valid UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Contains NUL or another ASCII control character.
    #[error("contains the control character {0:#04x}")]
    ControlChar(u8),
}

/// Checks a name against epmd's rules (and ours on control characters).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(&b) = name.as_bytes().iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return Err(NameError::ControlChar(b));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong { chars });
    }
    Ok(())
}

fn name_from_bytes(bytes: &[u8]) -> Result<String, CodecError> {
    if bytes.len() > MAX_NAME_BYTES {
        return Err(CodecError::InvalidName(NameError::TooLong {
            chars: bytes.len(),
        }));
    }
    let name =
        std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidName(NameError::NotUtf8))?;
    validate_name(name).map_err(CodecError::InvalidName)?;
    Ok(name.to_owned())
}

/// The kind of node being registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// A normal Erlang node (`M`, 77).
    Normal,
    /// A hidden node, e.g. a C node or a CLI tool (`H`, 72).
    Hidden,
    /// Any other value, kept as received.
    Other(u8),
}

impl NodeType {
    /// The byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            NodeType::Normal => 77,
            NodeType::Hidden => 72,
            NodeType::Other(b) => b,
        }
    }

    /// Reads the byte from the wire.
    pub fn from_byte(b: u8) -> Self {
        match b {
            77 => NodeType::Normal,
            72 => NodeType::Hidden,
            other => NodeType::Other(other),
        }
    }
}

/// A node as EPMD knows it: what `ALIVE2_REQ` registers and `PORT2_RESP` returns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeEntry {
    /// The alive part of the node name (`rabbit` in `rabbit@host`).
    pub name: String,
    /// The distribution listen port.
    pub port: u16,
    /// Normal or hidden.
    pub node_type: NodeType,
    /// Transport protocol; 0 is TCP/IP (v4 or v6).
    pub protocol: u8,
    /// Highest distribution version supported.
    pub highest_version: u16,
    /// Lowest distribution version supported.
    pub lowest_version: u16,
    /// Opaque extra data (at most `MAX_EXTRA_LEN` bytes).
    pub extra: Vec<u8>,
}

impl NodeEntry {
    /// A normal TCP node supporting distribution version `DIST_VERSION_LOW` to
    /// `DIST_VERSION_HIGH`, with no extra data.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        NodeEntry {
            name: name.into(),
            port,
            node_type: NodeType::Normal,
            protocol: 0,
            highest_version: DIST_VERSION_HIGH,
            lowest_version: DIST_VERSION_LOW,
            extra: Vec::new(),
        }
    }

    /// The same entry as a hidden node.
    pub fn hidden(mut self) -> Self {
        self.node_type = NodeType::Hidden;
        self
    }

    /// Checks the name and the extra field against the limits.
    pub fn validate(&self) -> Result<(), CodecError> {
        validate_name(&self.name).map_err(CodecError::InvalidName)?;
        if self.extra.len() > MAX_EXTRA_LEN {
            return Err(CodecError::ExtraTooLong {
                len: self.extra.len(),
                max: MAX_EXTRA_LEN,
            });
        }
        Ok(())
    }

    /// `Port:16 | NodeType:8 | Protocol:8 | Highest:16 | Lowest:16 | Nlen:16 | Name |
    /// Elen:16 | Extra`, shared by `ALIVE2_REQ` and `PORT2_RESP`.
    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.validate()?;
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.node_type.to_byte());
        out.push(self.protocol);
        out.extend_from_slice(&self.highest_version.to_be_bytes());
        out.extend_from_slice(&self.lowest_version.to_be_bytes());
        // Both lengths are within u16 after validate().
        put_u16_prefixed(out, self.name.as_bytes()).ok_or(CodecError::InvalidName(
            NameError::TooLong {
                chars: self.name.len(),
            },
        ))?;
        put_u16_prefixed(out, &self.extra).ok_or(CodecError::ExtraTooLong {
            len: self.extra.len(),
            max: MAX_EXTRA_LEN,
        })?;
        Ok(())
    }

    /// Reads the shared body; `None` when the input ends early.
    fn decode_body(r: &mut Reader<'_>) -> Result<Option<NodeEntry>, CodecError> {
        let (Some(port), Some(node_type), Some(protocol), Some(high), Some(low), Some(nlen)) =
            (r.u16(), r.u8(), r.u8(), r.u16(), r.u16(), r.u16())
        else {
            return Ok(None);
        };
        let nlen = usize::from(nlen);
        if nlen > MAX_NAME_BYTES {
            return Err(CodecError::InvalidName(NameError::TooLong { chars: nlen }));
        }
        let Some(name) = r.take(nlen) else {
            return Ok(None);
        };
        let name = name_from_bytes(name)?;
        let Some(elen) = r.u16() else {
            return Ok(None);
        };
        let elen = usize::from(elen);
        if elen > MAX_EXTRA_LEN {
            return Err(CodecError::ExtraTooLong {
                len: elen,
                max: MAX_EXTRA_LEN,
            });
        }
        let Some(extra) = r.take(elen) else {
            return Ok(None);
        };
        Ok(Some(NodeEntry {
            name,
            port,
            node_type: NodeType::from_byte(node_type),
            protocol,
            highest_version: high,
            lowest_version: low,
            extra: extra.to_vec(),
        }))
    }
}

/// A request to EPMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `ALIVE2_REQ`: register a node for as long as the connection stays open.
    Alive2(NodeEntry),
    /// `PORT_PLEASE2_REQ`: look up the node with this alive name.
    PortPlease2 {
        /// The alive part of the node name.
        name: String,
    },
    /// `NAMES_REQ`: list registered names and ports.
    Names,
    /// `DUMP_REQ`: list registered and old names (local clients only).
    Dump,
    /// `KILL_REQ`: ask EPMD to exit (local clients only).
    Kill,
    /// `STOP_REQ`: ask EPMD to unregister a node (local clients only, and only with
    /// epmd's relaxed command check).
    Stop {
        /// The alive part of the node name.
        name: String,
    },
}

impl Request {
    /// The request tag.
    pub fn tag(&self) -> u8 {
        match self {
            Request::Alive2(_) => ALIVE2_REQ,
            Request::PortPlease2 { .. } => PORT_PLEASE2_REQ,
            Request::Names => NAMES_REQ,
            Request::Dump => DUMP_REQ,
            Request::Kill => KILL_REQ,
            Request::Stop { .. } => STOP_REQ,
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Alive2(_) => "ALIVE2_REQ",
            Request::PortPlease2 { .. } => "PORT_PLEASE2_REQ",
            Request::Names => "NAMES_REQ",
            Request::Dump => "DUMP_REQ",
            Request::Kill => "KILL_REQ",
            Request::Stop { .. } => "STOP_REQ",
        }
    }

    /// Encodes `Len:16 | Request`. Fails on a name or extra field beyond the limits.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut body = vec![self.tag()];
        match self {
            Request::Alive2(entry) => entry.encode_body(&mut body)?,
            Request::PortPlease2 { name } | Request::Stop { name } => {
                validate_name(name).map_err(CodecError::InvalidName)?;
                body.extend_from_slice(name.as_bytes());
            }
            Request::Names | Request::Dump | Request::Kill => {}
        }
        let mut out = Vec::with_capacity(body.len() + 2);
        put_u16_prefixed(&mut out, &body).ok_or(CodecError::RequestTooLong {
            len: body.len(),
            max: MAX_REQUEST_LEN,
        })?;
        Ok(out)
    }

    /// Decodes one `Len:16 | Request` from the start of `buf` (the server side).
    ///
    /// Returns the request and the bytes consumed, or `Partial` when more bytes are
    /// needed. A length beyond [`MAX_REQUEST_LEN`] is refused as soon as the two length
    /// bytes are in, so a peer announcing a giant request is dropped at once.
    pub fn decode(buf: &[u8]) -> Result<Status<(Request, usize)>, CodecError> {
        let mut r = Reader::new(buf);
        let Some(len) = r.u16() else {
            return Ok(Status::Partial);
        };
        let len = usize::from(len);
        if len == 0 {
            return Err(CodecError::EmptyRequest);
        }
        if len > MAX_REQUEST_LEN {
            return Err(CodecError::RequestTooLong {
                len,
                max: MAX_REQUEST_LEN,
            });
        }
        let Some(body) = r.take(len) else {
            return Ok(Status::Partial);
        };
        let request = Self::decode_body(body)?;
        Ok(Status::Complete((request, 2 + len)))
    }

    fn decode_body(body: &[u8]) -> Result<Request, CodecError> {
        let mut r = Reader::new(body);
        let tag = r.u8().ok_or(CodecError::EmptyRequest)?;
        let request = match tag {
            ALIVE2_REQ => {
                let entry = NodeEntry::decode_body(&mut r)?
                    .ok_or(CodecError::Truncated { what: "ALIVE2_REQ" })?;
                Request::Alive2(entry)
            }
            PORT_PLEASE2_REQ | STOP_REQ => {
                let mut name = r.rest();
                // Old clients (and epmd's own) may NUL-terminate the name; epmd strips it.
                if let [rest @ .., 0] = name {
                    name = rest;
                }
                let name = name_from_bytes(name)?;
                if tag == STOP_REQ {
                    Request::Stop { name }
                } else {
                    Request::PortPlease2 { name }
                }
            }
            NAMES_REQ => Request::Names,
            DUMP_REQ => Request::Dump,
            KILL_REQ => Request::Kill,
            other => return Err(CodecError::UnknownRequest(other)),
        };
        if !r.is_empty() {
            return Err(CodecError::TrailingData {
                what: request.kind(),
                count: r.remaining(),
            });
        }
        Ok(request)
    }
}

/// Which of the two registration replies epmd sent (or is to send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alive2Form {
    /// `ALIVE2_X_RESP` (118) with a 32-bit creation: epmd sends it when the node
    /// registered with a highest version of 6 or more.
    Extended,
    /// `ALIVE2_RESP` (121) with a 16-bit creation, for older nodes.
    Old,
}

/// The reply to `ALIVE2_REQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive2Response {
    /// 0 on success; epmd sends 1 when the name is taken or invalid.
    pub result: u8,
    /// The creation number the node must use (epmd sends 99 with a failure).
    pub creation: u32,
    /// Which reply form.
    pub form: Alive2Form,
}

impl Alive2Response {
    /// Whether the registration succeeded.
    pub fn is_ok(&self) -> bool {
        self.result == 0
    }

    /// Encodes the reply; an [`Alive2Form::Old`] reply keeps the low 16 bits of creation.
    pub fn encode(&self) -> Vec<u8> {
        match self.form {
            Alive2Form::Extended => {
                let mut out = vec![ALIVE2_X_RESP, self.result];
                out.extend_from_slice(&self.creation.to_be_bytes());
                out
            }
            Alive2Form::Old => {
                let mut out = vec![ALIVE2_RESP, self.result];
                out.extend_from_slice(&(self.creation as u16).to_be_bytes());
                out
            }
        }
    }

    /// Decodes either reply form from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Status<(Alive2Response, usize)>, CodecError> {
        let mut r = Reader::new(buf);
        let Some(tag) = r.u8() else {
            return Ok(Status::Partial);
        };
        let form = match tag {
            ALIVE2_X_RESP => Alive2Form::Extended,
            ALIVE2_RESP => Alive2Form::Old,
            got => {
                return Err(CodecError::UnexpectedTag {
                    got,
                    expected: "ALIVE2_X_RESP (118) or ALIVE2_RESP (121)",
                });
            }
        };
        let Some(result) = r.u8() else {
            return Ok(Status::Partial);
        };
        let creation = match form {
            Alive2Form::Extended => r.u32(),
            Alive2Form::Old => r.u16().map(u32::from),
        };
        let Some(creation) = creation else {
            return Ok(Status::Partial);
        };
        Ok(Status::Complete((
            Alive2Response {
                result,
                creation,
                form,
            },
            r.position(),
        )))
    }
}

/// The reply to `PORT_PLEASE2_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPlease2Response {
    /// `119 | 0 | entry`.
    Found(NodeEntry),
    /// `119 | Result` with a non-zero result: no such node.
    NotFound {
        /// The result byte (epmd sends 1).
        result: u8,
    },
}

impl PortPlease2Response {
    /// Encodes the reply. Fails if the entry breaks the limits.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        match self {
            PortPlease2Response::Found(entry) => {
                // Sized once: tag, result, the 10 fixed bytes, two lengths, name, extra.
                let mut out = Vec::with_capacity(14 + entry.name.len() + entry.extra.len());
                out.extend_from_slice(&[PORT2_RESP, 0]);
                entry.encode_body(&mut out)?;
                Ok(out)
            }
            PortPlease2Response::NotFound { result } => Ok(vec![PORT2_RESP, (*result).max(1)]),
        }
    }

    /// Decodes the reply from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Status<(PortPlease2Response, usize)>, CodecError> {
        let mut r = Reader::new(buf);
        let Some(tag) = r.u8() else {
            return Ok(Status::Partial);
        };
        if tag != PORT2_RESP {
            return Err(CodecError::UnexpectedTag {
                got: tag,
                expected: "PORT2_RESP (119)",
            });
        }
        let Some(result) = r.u8() else {
            return Ok(Status::Partial);
        };
        if result != 0 {
            return Ok(Status::Complete((
                PortPlease2Response::NotFound { result },
                2,
            )));
        }
        match NodeEntry::decode_body(&mut r)? {
            Some(entry) => Ok(Status::Complete((
                PortPlease2Response::Found(entry),
                r.position(),
            ))),
            None => Ok(Status::Partial),
        }
    }
}

/// One `name X at port Y` line of a `NAMES` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameEntry {
    /// The alive part of the node name.
    pub name: String,
    /// The distribution port.
    pub port: u16,
}

/// The reply to `NAMES_REQ`: `EpmdPort:32` then `name <Name> at port <Port>\n` lines,
/// ended by EPMD closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesResponse {
    /// The port EPMD says it listens on.
    pub epmd_port: u32,
    /// The registered nodes, in EPMD's order (epmd lists the newest first).
    pub nodes: Vec<NameEntry>,
}

impl NamesResponse {
    /// Encodes the whole reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.epmd_port.to_be_bytes().to_vec();
        for node in &self.nodes {
            out.extend_from_slice(&names_line(&node.name, node.port));
        }
        out
    }

    /// Decodes a complete reply (everything read until EPMD closed the connection).
    ///
    /// Every line must be well formed and newline-terminated (epmd writes whole lines);
    /// the reply may hold at most `MAX_NAMES_RESPONSE_LEN` bytes and
    /// `MAX_NAMES_ENTRIES` lines.
    pub fn decode(buf: &[u8]) -> Result<NamesResponse, CodecError> {
        let (epmd_port, text) = split_port_header(buf, "NAMES")?;
        let mut nodes = Vec::new();
        for (index, line) in lines(text, b'\n', "NAMES")? {
            let entry = parse_names_line(line).ok_or_else(|| malformed("NAMES", index, line))?;
            nodes.push(entry);
        }
        Ok(NamesResponse { epmd_port, nodes })
    }
}

/// One `NAMES` line, as epmd prints it.
pub fn names_line(name: &str, port: u16) -> Vec<u8> {
    format!("name {name} at port {port}\n").into_bytes()
}

fn parse_names_line(line: &[u8]) -> Option<NameEntry> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("name ")?;
    // The name may itself contain spaces; the port is whatever follows the last marker.
    let (name, port) = rest.rsplit_once(" at port ")?;
    if validate_name(name).is_err() {
        return None;
    }
    Some(NameEntry {
        name: name.to_owned(),
        port: parse_port(port)?,
    })
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn split_port_header<'a>(buf: &'a [u8], what: &'static str) -> Result<(u32, &'a [u8]), CodecError> {
    if buf.len() > MAX_NAMES_RESPONSE_LEN {
        return Err(CodecError::ResponseTooLong {
            max: MAX_NAMES_RESPONSE_LEN,
        });
    }
    let mut r = Reader::new(buf);
    let port = r.u32().ok_or(CodecError::Truncated { what })?;
    Ok((port, r.rest()))
}

/// Splits `text` into `terminator`-ended records, numbered from 1.
fn lines<'a>(
    text: &'a [u8],
    terminator: u8,
    what: &'static str,
) -> Result<Vec<(usize, &'a [u8])>, CodecError> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == terminator) else {
            return Err(CodecError::Truncated { what });
        };
        if out.len() >= MAX_NAMES_ENTRIES {
            return Err(CodecError::TooManyEntries {
                max: MAX_NAMES_ENTRIES,
            });
        }
        out.push((out.len() + 1, &rest[..end]));
        rest = &rest[end + 1..];
    }
    Ok(out)
}

fn malformed(what: &'static str, line: usize, text: &[u8]) -> CodecError {
    CodecError::MalformedLine {
        what,
        line,
        text: String::from_utf8_lossy(text).chars().take(80).collect(),
    }
}

/// One entry of a `DUMP` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    /// The alive part of the node name.
    pub name: String,
    /// The distribution port.
    pub port: u16,
    /// The file descriptor epmd holds (or held) for the node's connection; the embedded
    /// server prints its connection number instead.
    pub fd: i64,
    /// `true` for a registered node, `false` for an old/unused name epmd remembers (to
    /// give it a new creation when it comes back).
    pub active: bool,
}

/// The reply to `DUMP_REQ`: `EpmdPort:32` then NUL-terminated lines, one per node:
/// `active name     <N> at port P, fd = F\n\0` or `old/unused name <N>, port = P, fd = F \n\0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpResponse {
    /// The port EPMD says it listens on.
    pub epmd_port: u32,
    /// Active entries first, then old ones, as epmd lists them.
    pub entries: Vec<DumpEntry>,
}

impl DumpResponse {
    /// Encodes the whole reply exactly as epmd does (each line keeps its NUL).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.epmd_port.to_be_bytes().to_vec();
        let mut line = String::new();
        for e in &self.entries {
            line.clear();
            // Writing to a String cannot fail.
            let _ = if e.active {
                write!(
                    line,
                    "active name     <{}> at port {}, fd = {}\n\0",
                    e.name, e.port, e.fd
                )
            } else {
                write!(
                    line,
                    "old/unused name <{}>, port = {}, fd = {} \n\0",
                    e.name, e.port, e.fd
                )
            };
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    /// Decodes a complete reply (everything read until EPMD closed the connection).
    pub fn decode(buf: &[u8]) -> Result<DumpResponse, CodecError> {
        let (epmd_port, text) = split_port_header(buf, "DUMP")?;
        let mut entries = Vec::new();
        for (index, record) in lines(text, 0, "DUMP")? {
            let entry = parse_dump_line(record).ok_or_else(|| malformed("DUMP", index, record))?;
            entries.push(entry);
        }
        Ok(DumpResponse { epmd_port, entries })
    }
}

fn parse_dump_line(record: &[u8]) -> Option<DumpEntry> {
    let text = std::str::from_utf8(record).ok()?;
    let text = text.strip_suffix('\n')?;
    if let Some(rest) = text.strip_prefix("active name     <") {
        let (name, rest) = rest.rsplit_once("> at port ")?;
        let (port, fd) = rest.split_once(", fd = ")?;
        return dump_entry(name, port, fd, true);
    }
    let rest = text.strip_prefix("old/unused name <")?;
    let (name, rest) = rest.rsplit_once(">, port = ")?;
    let (port, fd) = rest.split_once(", fd = ")?;
    dump_entry(name, port, fd.strip_suffix(' ')?, false)
}

fn dump_entry(name: &str, port: &str, fd: &str, active: bool) -> Option<DumpEntry> {
    validate_name(name).ok()?;
    if fd.is_empty() || fd.len() > 20 {
        return None;
    }
    Some(DumpEntry {
        name: name.to_owned(),
        port: parse_port(port)?,
        fd: fd.parse().ok()?,
        active,
    })
}

/// The reply to `KILL_REQ`: `OK` (EPMD exits) or `NO` (refused: nodes are registered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillResponse {
    /// `OK`: EPMD exits.
    Ok,
    /// `NO`: refused because nodes are registered.
    No,
}

impl KillResponse {
    /// The two reply bytes.
    pub fn encode(self) -> Vec<u8> {
        match self {
            KillResponse::Ok => b"OK".to_vec(),
            KillResponse::No => b"NO".to_vec(),
        }
    }

    /// Decodes the reply from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Status<(KillResponse, usize)>, CodecError> {
        match buf.get(..2) {
            None => Ok(Status::Partial),
            Some(b"OK") => Ok(Status::Complete((KillResponse::Ok, 2))),
            Some(b"NO") => Ok(Status::Complete((KillResponse::No, 2))),
            Some(other) => Err(CodecError::UnexpectedTag {
                got: other[0],
                expected: "OK or NO",
            }),
        }
    }
}

/// The reply to `STOP_REQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopResponse {
    /// `STOPPED`: the node was unregistered and its connection closed.
    Stopped,
    /// `NOEXIST`: no such node.
    NoExist,
}

impl StopResponse {
    /// The seven reply bytes.
    pub fn encode(self) -> Vec<u8> {
        match self {
            StopResponse::Stopped => b"STOPPED".to_vec(),
            StopResponse::NoExist => b"NOEXIST".to_vec(),
        }
    }

    /// Decodes the reply from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Status<(StopResponse, usize)>, CodecError> {
        match buf.get(..7) {
            None => Ok(Status::Partial),
            Some(b"STOPPED") => Ok(Status::Complete((StopResponse::Stopped, 7))),
            Some(b"NOEXIST") => Ok(Status::Complete((StopResponse::NoExist, 7))),
            Some(other) => Err(CodecError::UnexpectedTag {
                got: other[0],
                expected: "STOPPED or NOEXIST",
            }),
        }
    }
}

#[cfg(test)]
mod tests;
