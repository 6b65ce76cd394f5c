//! Conversions to and from `eetf::Term`.
