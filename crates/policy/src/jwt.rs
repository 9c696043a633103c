//! The JWT and PEM reading that OPA's `io.jwt.*` builtins do and regorus
//! lacks. Decoding verifies nothing: that is [`crate::TokenCheck`]'s job.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A token read as OPA's `io.jwt.decode` reads it: the header and claims as
/// JSON objects, the signature as lowercase hex.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    pub(crate) header: serde_json::Value,
    pub(crate) claims: serde_json::Value,
    pub(crate) signature_hex: String,
}

/// Reads a compact JWS. `None` for anything that is not three base64url
/// parts whose first two are JSON objects.
pub(crate) fn decode(token: &str) -> Option<Decoded> {
    let mut parts = token.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = json_object(header)?;
    let claims = json_object(claims)?;
    let signature = base64url(signature)?;
    let mut signature_hex = String::with_capacity(signature.len() * 2);
    for byte in signature {
        signature_hex.push(char::from(HEX[usize::from(byte >> 4)]));
        signature_hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    Some(Decoded {
        header,
        claims,
        signature_hex,
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn json_object(part: &str) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(&base64url(part)?).ok()?;
    value.is_object().then_some(value)
}

// RFC 7515 forbids padding, but some encoders add it anyway; OPA accepts it.
fn base64url(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// The `sub` claim of an unverified token, as NSM's registry authorization
/// reads the resource's identity from the first path segment.
pub(crate) fn subject(token: &str) -> Option<String> {
    decode(token)?
        .claims
        .get("sub")?
        .as_str()
        .map(str::to_owned)
}

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// PEM text of one DER certificate, as Go's `pem.EncodeToMemory` writes it
/// (64-column lines), so a policy sees what it sees under NSM.
pub(crate) fn pem_encode(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str(PEM_BEGIN);
    pem.push('\n');
    // base64 output is ASCII, so splitting bytes never cuts a character.
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// The DER of the first certificate in PEM text.
pub(crate) fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let len = pem.get(start..)?.find(PEM_END)?;
    let body: String = pem
        .get(start..start + len)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(body).ok().filter(|der| !der.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn decodes_header_claims_and_signature() {
        let token = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"sub":"a","exp":5}"#),
            URL_SAFE_NO_PAD.encode([0xab, 0x01])
        );
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.header["alg"], "ES256");
        assert_eq!(decoded.claims["exp"], 5);
        assert_eq!(decoded.signature_hex, "ab01");
        assert_eq!(subject(&token).as_deref(), Some("a"));
    }

    #[test]
    fn refuses_what_is_not_a_jws() {
        let claims = b64(r#"{"sub":"a"}"#);
        for token in [
            String::new(),
            "a.b".to_owned(),
            format!("{claims}.{claims}.AA.AA"),
            format!("{}.{claims}.AA", b64("[1]")),
            format!("{claims}.{}.AA", b64("\"s\"")),
            format!("{claims}.{claims}.*"),
        ] {
            assert_eq!(decode(&token), None, "{token:?}");
        }
    }

    #[test]
    fn pem_round_trips_and_refuses_garbage() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = pem_encode(&der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_decode(&pem), Some(der));
        assert_eq!(pem_decode(""), None);
        assert_eq!(pem_decode(&format!("{PEM_BEGIN}\n!!\n{PEM_END}")), None);
        assert_eq!(pem_decode(&format!("{PEM_BEGIN}\n{PEM_END}")), None);
        assert_eq!(pem_decode(&format!("{PEM_END}\n{PEM_BEGIN}")), None);
    }
}
