//! Who is calling: the peer the transport authenticated (mTLS, its SPIFFE
//! ID and certificate) and the token it sent for its own path segment.
//!
//! NSM's clients send their segment's token beside the request, not in it:
//! grpc-go per-RPC credentials (sdk `pkg/tools/token/creds.go`) put it in
//! the `nsm-client-token` header and its expiry, RFC 3339 with
//! nanoseconds, in `nsm-client-token-expires`; the server's `updatetoken`
//! copies both into the previous segment (`pkg/tools/token/context.go`).
//! The server ([`crate::server`]) reads them into a [`Caller`] for each
//! call; `begin` hands it to the connection's context for that call only.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::metadata::MetadataMap;

/// The header carrying the caller's token for its own segment.
pub const TOKEN_HEADER: &str = "nsm-client-token";
/// The header carrying that token's expiry (RFC 3339, nanoseconds).
pub const TOKEN_EXPIRES_HEADER: &str = "nsm-client-token-expires";

/// A peer authenticated by mTLS: the SPIFFE ID of its X.509 SVID and the
/// SVID's leaf certificate (DER), against which the token it signed for
/// its segment is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `spiffe://trust-domain/path`.
    pub spiffe_id: String,
    /// The leaf certificate, DER.
    pub cert_der: Arc<[u8]>,
}

/// A token a hop signed for its own segment, with its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedToken {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires: SystemTime,
}

/// This call's caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Who the transport says is calling; `None` on a plaintext socket
    /// (`NSM_INSECURE=true`).
    pub peer: Option<PeerIdentity>,
    /// The token the caller sent for its segment, if it sent one that
    /// reads as one.
    pub token: Option<SignedToken>,
}

impl Caller {
    /// The caller of a gRPC call: `peer` from the connection, the token
    /// from the call's headers. A header repeated, not ASCII or with an
    /// unparsable expiry is ignored, as the Go SDK ignores (and logs) it:
    /// the policies then judge the segment on the token the path carries.
    pub fn from_call(peer: Option<PeerIdentity>, metadata: &MetadataMap) -> Self {
        Self {
            peer,
            token: client_token(metadata),
        }
    }
}

fn single<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    let mut values = metadata.get_all(key).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

fn client_token(metadata: &MetadataMap) -> Option<SignedToken> {
    let token = single(metadata, TOKEN_HEADER)?;
    let expires = single(metadata, TOKEN_EXPIRES_HEADER)?;
    // The offset form first: humantime's weak parser would read
    // `...+01:00` as UTC, an hour off.
    let expires =
        parse_rfc3339_offset(expires).or_else(|| humantime::parse_rfc3339_weak(expires).ok())?;
    Some(SignedToken {
        token: token.to_string(),
        expires,
    })
}

/// Go's `time.RFC3339Nano` with a numeric offset (`Local()` times carry
/// one): `2026-12-07T01:02:03.456+01:00`.
fn parse_rfc3339_offset(s: &str) -> Option<SystemTime> {
    let split = s.len().checked_sub(6)?;
    let (stamp, offset) = (s.get(..split)?, s.get(split..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    if offset.get(3..4)? != ":" || hours > 23 || minutes > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(stamp).ok()?;
    let shift = std::time::Duration::from_secs(u64::try_from(hours * 3600 + minutes * 60).ok()?);
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// Formats `t` as the Go SDK's clients send it (`time.RFC3339Nano`, UTC).
pub fn format_expiry(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn the_token_and_its_expiry_are_read_as_go_writes_them() {
        let utc = Caller::from_call(
            None,
            &md(&[
                (TOKEN_HEADER, "a.b.c"),
                (TOKEN_EXPIRES_HEADER, "2026-12-07T01:02:03.5Z"),
            ]),
        );
        let t = utc.token.unwrap();
        assert_eq!(t.token, "a.b.c");
        let at = t.expires.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(at, Duration::from_millis(1_796_605_323_500));
        let offset = Caller::from_call(
            None,
            &md(&[
                (TOKEN_HEADER, "a.b.c"),
                (TOKEN_EXPIRES_HEADER, "2026-12-07T02:02:03.5+01:00"),
            ]),
        );
        assert_eq!(offset.token.unwrap().expires, t.expires);
    }

    #[test]
    fn a_missing_repeated_or_unparsable_header_gives_no_token() {
        assert_eq!(Caller::from_call(None, &md(&[])).token, None);
        assert_eq!(
            Caller::from_call(None, &md(&[(TOKEN_HEADER, "x")])).token,
            None
        );
        let repeated = md(&[
            (TOKEN_HEADER, "x"),
            (TOKEN_HEADER, "y"),
            (TOKEN_EXPIRES_HEADER, "2026-12-07T01:02:03Z"),
        ]);
        assert_eq!(Caller::from_call(None, &repeated).token, None);
        let bad = md(&[(TOKEN_HEADER, "x"), (TOKEN_EXPIRES_HEADER, "tomorrow")]);
        assert_eq!(Caller::from_call(None, &bad).token, None);
    }

    #[test]
    fn expiries_round_trip_through_the_header_format() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_796_605_323_123_456_789);
        let back = Caller::from_call(
            None,
            &md(&[
                (TOKEN_HEADER, "x"),
                (TOKEN_EXPIRES_HEADER, &format_expiry(t)),
            ]),
        );
        assert_eq!(back.token.unwrap().expires, t);
    }
}
