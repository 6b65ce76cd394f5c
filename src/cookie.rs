//! The distribution cookie: the shared secret every node of a cluster must hold.
//!
//! A [`Cookie`] is read with Erlang's own rules (those of OTP's `auth` module):
//!
//! * the default file is `$HOME/.erlang.cookie`, then
//!   `$XDG_CONFIG_HOME/erlang/.erlang.cookie` (`~/.config/erlang/.erlang.cookie`);
//! * the file must be a regular file that only its owner can access (no group or other
//!   permission bit);
//! * the cookie is the leading run of printable characters (32–126); after it only
//!   line feeds, carriage returns and spaces may follow, and they are dropped;
//! * an empty cookie is refused.
//!
//! [`Cookie::new`] and [`Cookie::from_env`] apply the same character rules.
//!
//! The cookie never leaves this type by accident: `Debug` and `Display` print
//! `<redacted>`, errors never contain it, and its memory is wiped on drop. A
//! [`fingerprint`](Cookie::fingerprint) (what `rabbitmqctl` prints,
//! `base64(md5(cookie))`) is available on request only, because it lets anyone who sees
//! it test cookie guesses offline.
//!
//! ```
//! use autocluster::Cookie;
//!
//! let cookie = Cookie::new("SECRETCOOKIE")?;
//! assert_eq!(format!("{cookie:?}"), "Cookie(<redacted>)");
//! assert_eq!(cookie.to_string(), "<redacted>");
//! # Ok::<(), autocluster::CookieError>(())
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use zeroize::Zeroizing;

/// Length under which [`Cookie::is_weak`] reports a cookie as easy to brute-force.
pub const WEAK_COOKIE_LEN: usize = 16;

/// The largest cookie file read, in bytes (OTP writes 20 characters).
const MAX_COOKIE_FILE_LEN: u64 = 64 * 1024;

/// A distribution cookie. Redacted in `Debug` and `Display`; wiped on drop.
#[derive(Clone)]
pub struct Cookie {
    bytes: Zeroizing<Vec<u8>>,
}

/// Where a cookie came from, for error messages (never the cookie itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieSource {
    /// Given as a string by the caller.
    Literal,
    /// Read from this environment variable.
    Env(String),
    /// Read from this file.
    File(PathBuf),
}

impl fmt::Display for CookieSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieSource::Literal => f.write_str("the cookie string given"),
            CookieSource::Env(var) => write!(f, "environment variable {var}"),
            CookieSource::File(path) => write!(f, "cookie file {}", path.display()),
        }
    }
}

/// Why a cookie could not be loaded. Never contains the cookie.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The cookie is empty (or only line breaks and spaces).
    #[error("{0} holds an empty cookie")]
    Empty(CookieSource),
    /// The cookie holds a byte outside the printable range 32–126.
    #[error(
        "{origin} holds a character outside the printable range 32-126 at byte {offset} \
         (Erlang accepts only printable ASCII, optionally followed by line breaks)"
    )]
    BadCharacter {
        /// Where the cookie came from.
        origin: CookieSource,
        /// Byte offset of the first bad character.
        offset: usize,
    },
    /// The cookie file is a directory, socket or other non-regular file.
    #[error("cookie file {} is not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// The cookie file can be read or written by group or others.
    #[error(
        "cookie file {} has mode {mode:o}: it must be accessible by its owner only (chmod 400 {})",
        path.display(), path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The cookie file is larger than any cookie should be.
    #[error("cookie file {} is {size} bytes; a cookie file holds one short line", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The cookie file could not be read.
    #[error("cannot read cookie file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The environment variable is not valid Unicode.
    #[error("environment variable {0} is not valid Unicode")]
    EnvNotUnicode(String),
    /// Neither default cookie file exists.
    #[error("no cookie file: neither {} nor {} exists", home.display(), xdg.display())]
    NoDefaultFile {
        /// `$HOME/.erlang.cookie`.
        home: PathBuf,
        /// `$XDG_CONFIG_HOME/erlang/.erlang.cookie`.
        xdg: PathBuf,
    },
    /// `$HOME` is not set, so the default file cannot be located.
    #[error("HOME is not set: cannot locate the default cookie file")]
    NoHome,
}

impl Cookie {
    /// A cookie from a string: printable ASCII (32–126), not empty.
    ///
    /// Trailing line breaks are dropped as in a cookie file.
    pub fn new(cookie: impl Into<String>) -> Result<Cookie, CookieError> {
        let cookie = Zeroizing::new(cookie.into());
        Cookie::parse(cookie.as_bytes(), CookieSource::Literal)
    }

    /// A cookie from an environment variable, e.g. `RABBITMQ_ERLANG_COOKIE`.
    pub fn from_env(var: &str) -> Result<Cookie, CookieError> {
        match std::env::var(var) {
            Ok(v) => {
                let v = Zeroizing::new(v);
                Cookie::parse(v.as_bytes(), CookieSource::Env(var.to_owned()))
            }
            Err(std::env::VarError::NotPresent) => Err(CookieError::EnvMissing(var.to_owned())),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(CookieError::EnvNotUnicode(var.to_owned()))
            }
        }
    }

    /// A cookie from a file, checked as Erlang checks `~/.erlang.cookie`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Cookie, CookieError> {
        let path = path.as_ref();
        let io = |source| CookieError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(CookieError::NotRegularFile {
                path: path.to_owned(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(CookieError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        if meta.len() > MAX_COOKIE_FILE_LEN {
            return Err(CookieError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
            });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        Cookie::parse(&bytes, CookieSource::File(path.to_owned()))
    }

    /// The cookie Erlang itself would use: `$HOME/.erlang.cookie`, or else
    /// `$XDG_CONFIG_HOME/erlang/.erlang.cookie` (default `~/.config/erlang`).
    ///
    /// Unlike `erl`, this never creates a cookie file.
    pub fn from_default_file() -> Result<Cookie, CookieError> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(CookieError::NoHome)?;
        let (home_path, xdg_path) =
            default_paths(&home, std::env::var_os("XDG_CONFIG_HOME").as_deref());
        if std::fs::symlink_metadata(&home_path).is_ok() {
            return Cookie::from_file(&home_path);
        }
        if std::fs::symlink_metadata(&xdg_path).is_ok() {
            return Cookie::from_file(&xdg_path);
        }
        Err(CookieError::NoDefaultFile {
            home: home_path,
            xdg: xdg_path,
        })
    }

    /// A fresh random cookie of 20 upper-case letters, like the one `erl` writes.
    ///
    /// Drawn from the operating system's CSPRNG (about 94 bits of entropy).
    pub fn generate() -> Cookie {
        use rand::RngExt as _;
        let mut rng = rand::rng();
        let bytes: Vec<u8> = (0..20).map(|_| rng.random_range(b'A'..=b'Z')).collect();
        Cookie {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Writes the cookie to a new file that only its owner can read (mode 0400), as
    /// `erl` writes `~/.erlang.cookie`. Fails if the file exists.
    ///
    /// Useful to hand a cookie to an `erl` started with `HOME` pointing at a private
    /// directory, instead of `-setcookie`, which every local user can read in `ps`.
    pub fn write_file(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o400);
        }
        let mut file = options.open(path)?;
        file.write_all(self.as_bytes())?;
        file.sync_all()
    }

    fn parse(raw: &[u8], source: CookieSource) -> Result<Cookie, CookieError> {
        let end = raw
            .iter()
            .position(|b| !(32..=126).contains(b))
            .unwrap_or(raw.len());
        if let Some(bad) = raw[end..]
            .iter()
            .position(|b| !matches!(b, b'\n' | b'\r' | b' '))
        {
            return Err(CookieError::BadCharacter {
                origin: source,
                offset: end + bad,
            });
        }
        if end == 0 {
            return Err(CookieError::Empty(source));
        }
        Ok(Cookie {
            bytes: Zeroizing::new(raw[..end].to_vec()),
        })
    }

    /// The cookie's bytes, for the handshake digest.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the cookie in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: an empty cookie cannot be constructed.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether the cookie is short enough to brute-force from one observed handshake
    /// (fewer than [`WEAK_COOKIE_LEN`] characters).
    pub fn is_weak(&self) -> bool {
        self.bytes.len() < WEAK_COOKIE_LEN
    }

    /// `base64(md5(cookie))`, the fingerprint `rabbitmqctl` prints to compare cookies.
    ///
    /// It is an offline brute-force oracle for the cookie: show it only when a user
    /// explicitly asks for it.
    pub fn fingerprint(&self) -> CookieFingerprint {
        let digest = Md5::digest(self.as_bytes());
        CookieFingerprint(base64::engine::general_purpose::STANDARD.encode(digest))
    }

    /// Compares two cookies in constant time.
    pub fn ct_eq(&self, other: &Cookie) -> bool {
        use subtle::ConstantTimeEq as _;
        self.bytes.len() == other.bytes.len() && bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

fn default_paths(home: &OsStr, xdg_config: Option<&OsStr>) -> (PathBuf, PathBuf) {
    let home = Path::new(home);
    let xdg_base = match xdg_config {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => home.join(".config"),
    };
    (
        home.join(".erlang.cookie"),
        xdg_base.join("erlang").join(".erlang.cookie"),
    )
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `base64(md5(cookie))`, as `rabbitmqctl` prints it. See [`Cookie::fingerprint`].
#[derive(Clone, PartialEq, Eq)]
pub struct CookieFingerprint(String);

impl CookieFingerprint {
    /// The fingerprint text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CookieFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CookieFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieFingerprint({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn file_with(content: &[u8], mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn reads_like_erlang() {
        let f = file_with(b"ABCDEFGHIJKLMNOPQRST\r\n  \n", 0o400);
        assert_eq!(
            Cookie::from_file(f.path()).unwrap().as_bytes(),
            b"ABCDEFGHIJKLMNOPQRST"
        );
        // Spaces are printable: those before the line break belong to the cookie, as in OTP.
        let f = file_with(b"a b \n", 0o600);
        assert_eq!(Cookie::from_file(f.path()).unwrap().as_bytes(), b"a b ");
    }

    #[test]
    fn refuses_loose_permissions_and_odd_files() {
        for mode in [0o640, 0o604, 0o644, 0o610] {
            let f = file_with(b"cookie", mode);
            match Cookie::from_file(f.path()) {
                Err(CookieError::Permissions { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Cookie::from_file(dir.path()),
            Err(CookieError::NotRegularFile { .. })
        ));
        assert!(matches!(
            Cookie::from_file(dir.path().join("missing")),
            Err(CookieError::Io { .. })
        ));
    }

    #[test]
    fn refuses_empty_and_bad_characters_without_revealing_them() {
        let f = file_with(b"\n \r\n", 0o400);
        assert!(matches!(
            Cookie::from_file(f.path()),
            Err(CookieError::Empty(_))
        ));
        let f = file_with(b"SECRET\tX", 0o400);
        let err = Cookie::from_file(f.path()).unwrap_err();
        assert!(matches!(err, CookieError::BadCharacter { offset: 6, .. }));
        assert!(!err.to_string().contains("SECRET"));
        let err = Cookie::new("SECRET\u{e9}").unwrap_err();
        assert!(
            matches!(err, CookieError::BadCharacter { offset: 6, .. }),
            "{err:?}"
        );
        assert!(!format!("{err:?}").contains("SECRET"));
        assert!(matches!(Cookie::new(""), Err(CookieError::Empty(_))));
        assert!(matches!(
            Cookie::new("abc\nx"),
            Err(CookieError::BadCharacter { .. })
        ));
    }

    #[test]
    fn never_printed() {
        let c = Cookie::new("VERYSECRETCOOKIE").unwrap();
        assert!(!format!("{c:?} {c} {c:#?}").contains("VERYSECRET"));
    }

    #[test]
    fn fingerprint_matches_rabbitmqctl() {
        // erl: base64:encode(erlang:md5("cookie")), md5 = 2dccd1ab3e03990aea77359831c85ca2
        let c = Cookie::new("cookie").unwrap();
        assert_eq!(c.fingerprint().as_str(), "LczRqz4DmQrqdzWYMchcog==");
    }

    #[test]
    fn default_paths_follow_otp() {
        let (home, xdg) = default_paths(OsStr::new("/home/u"), None);
        assert_eq!(home, Path::new("/home/u/.erlang.cookie"));
        assert_eq!(xdg, Path::new("/home/u/.config/erlang/.erlang.cookie"));
        let (_, xdg) = default_paths(OsStr::new("/home/u"), Some(OsStr::new("/cfg")));
        assert_eq!(xdg, Path::new("/cfg/erlang/.erlang.cookie"));
    }

    #[test]
    fn written_files_read_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".erlang.cookie");
        let c = Cookie::generate();
        c.write_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        assert!(Cookie::from_file(&path).unwrap().ct_eq(&c));
        assert!(c.write_file(&path).is_err(), "never overwrites");
    }

    #[test]
    fn generated_cookies_are_strong_and_distinct() {
        let a = Cookie::generate();
        let b = Cookie::generate();
        assert_eq!(a.len(), 20);
        assert!(!a.is_weak());
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&a.clone()));
    }
}
