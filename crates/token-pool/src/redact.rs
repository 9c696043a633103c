//! Tokens in logs and error messages.
//!
//! A token is a capability: whoever presents it in a Request gets the
//! token's VF. Logs are read by more people than the tenant that holds
//! it, so everything this crate prints shows a token as a short prefix,
//! enough to tell tokens apart; the full value appears only when TRACE
//! is enabled, for the operator who asked for it.

use std::fmt;

/// Characters of a token shown when it is redacted (the `sriov-` prefix
/// and the first characters of its UUID).
pub const SHOWN_CHARS: usize = 12;

/// Displays a token redacted: see the module docs.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if tracing::enabled!(tracing::Level::TRACE) {
            return f.write_str(self.0);
        }
        match self.0.char_indices().nth(SHOWN_CHARS) {
            Some((end, _)) => write!(f, "{}…", self.0.get(..end).unwrap_or_default()),
            None => f.write_str(self.0),
        }
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_shows_only_its_prefix() {
        let t = "sriov-0123456789abcdef";
        assert_eq!(Redacted(t).to_string(), "sriov-012345…");
        assert_eq!(format!("{:?}", Redacted(t)), "\"sriov-012345…\"");
        assert_eq!(Redacted("short").to_string(), "short");
    }
}
