//! The challenge digest: `md5(cookie ++ decimal(challenge))`.
//!
//! The challenge is formatted as an *unsigned* 32-bit decimal number, as OTP does with
//! `integer_to_list/1` of a non-negative integer. Digests are compared in constant time.

use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq as _;

use crate::Cookie;

/// `md5(cookie ++ decimal(challenge))`.
pub fn digest(cookie: &Cookie, challenge: u32) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(cookie.as_bytes());
    let mut text = [0u8; 10];
    md5.update(decimal(challenge, &mut text));
    md5.finalize().into()
}

/// `n` in decimal, written at the end of `buf` (a `u32` has at most 10 digits).
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Whether `received` is the digest of `challenge` under `cookie`, compared in
/// constant time.
pub fn verify(cookie: &Cookie, challenge: u32, received: &[u8; 16]) -> bool {
    digest(cookie, challenge).ct_eq(received).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_written_as_unsigned_decimals() {
        for n in [0, 7, 10, 99, 100, 4_000_000_000, u32::MAX] {
            let mut buf = [0; 10];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn matches_erlang() {
        // erl: erlang:md5(["cookie" | integer_to_list(4294967295)])
        let c = Cookie::new("cookie").unwrap();
        let d = digest(&c, u32::MAX);
        let expected: [u8; 16] = [
            222, 86, 255, 157, 17, 176, 113, 144, 91, 206, 89, 122, 133, 214, 127, 79,
        ];
        assert_eq!(d, expected);
        assert!(verify(&c, u32::MAX, &d));
        assert!(!verify(&c, 0, &d));
        assert!(!verify(&Cookie::new("other").unwrap(), u32::MAX, &d));
    }
}
