//! NSM path tokens: the JWT each hop writes into its path segment.
//!
//! NSM (networkservicemesh/sdk `pkg/tools/spiffejwt/token.go`) signs with
//! ES256 and the X.509 SVID's own key, with only registered claims: `sub`
//! is the signer's SPIFFE ID, `aud` the peer's SPIFFE ID (a one-element
//! array, absent when there is no TLS peer), `exp` in whole seconds: the
//! earliest of now + the maximum lifetime, the signer's and the peer's
//! certificate expiry. Its policies (`pkg/tools/opa/policies`) verify the
//! previous hop's token with the peer certificate (`io.jwt.verify_es256`),
//! chain segments by `aud` of one == `sub` of the next, and call a token
//! alive while now < `exp`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize};

/// Longest token we look at: a path has a handful of ~600-byte tokens, and
/// hostile input should not make us decode megabytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The claims of an NSM path token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The signer's SPIFFE ID.
    pub sub: String,
    /// Who the token is for: the peer's SPIFFE ID, or empty. A JWT may carry
    /// one string or an array; both read into this.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued-at, when a signer sets it (NSM does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer, when a signer sets it (NSM does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(a) => vec![a],
        Aud::Many(a) => a,
    })
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// Which of the three dot-separated parts of a JWS failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The JOSE header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Header => "header",
            Self::Payload => "payload",
            Self::Signature => "signature",
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token of {len} bytes is longer than {MAX_TOKEN_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not three dot-separated parts (a JWE, or not a JWT at all).
    #[error("token has {parts} dot-separated parts, a JWS has 3")]
    Malformed {
        /// How many it has.
        parts: usize,
    },
    /// A part is not unpadded base64url.
    #[error("token {part} is not base64url: {cause}")]
    Base64 {
        /// Which part.
        part: Part,
        /// What the decoder said.
        cause: String,
    },
    /// The header or payload is not the JSON we expect.
    #[error("token {part} is not valid JSON for a JWT: {cause}")]
    Json {
        /// Which part.
        part: Part,
        /// What serde_json said.
        cause: String,
    },
    /// Signed with another algorithm than NSM's ES256 (`none` included).
    #[error("token algorithm {alg:?} is not ES256")]
    Algorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// An ES256 signature is 64 bytes (r || s).
    #[error("token signature is {len} bytes, ES256 has 64")]
    SignatureLength {
        /// Its decoded length.
        len: usize,
    },
    /// The signature does not match the certificate's key: tampered, or
    /// signed by someone else.
    #[error("token signature does not verify with the key of {signer}")]
    BadSignature {
        /// The certificate's SPIFFE ID, or `certificate` if it has none.
        signer: String,
    },
    /// The signer certificate cannot be read.
    #[error("token signer certificate is not DER X.509: {cause}")]
    Certificate {
        /// What the parser said.
        cause: String,
    },
    /// The signer certificate's key is not EC P-256.
    #[error("token signer certificate key is not EC P-256 but {key}")]
    KeyType {
        /// The key algorithm or curve OID.
        key: String,
    },
    /// `exp` is not after now.
    #[error("token of {sub} expired at {exp} (now {now})")]
    Expired {
        /// The token's subject.
        sub: String,
        /// Its `exp`.
        exp: i64,
        /// The time checked against, seconds since the epoch.
        now: i64,
    },
}

struct Split<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Split<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong { len: token.len() });
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok(Split {
            header,
            payload,
            signature,
        }),
        _ => Err(TokenError::Malformed {
            parts: token.split('.').count(),
        }),
    }
}

fn b64(part: Part, text: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| TokenError::Base64 {
            part,
            cause: e.to_string(),
        })
}

fn json<T: serde::de::DeserializeOwned>(part: Part, text: &str) -> Result<T, TokenError> {
    serde_json::from_slice(&b64(part, text)?).map_err(|e| TokenError::Json {
        part,
        cause: e.to_string(),
    })
}

/// The claims of a token, without checking signature or expiry: for
/// policies that look at every path segment (chaining, expiry), whose
/// signers we hold no certificate of.
pub fn decode_unverified(token: &str) -> Result<Claims, TokenError> {
    let parts = split(token)?;
    json(Part::Payload, parts.payload)
}

/// The claims of a token signed (ES256) by the key of `signer_cert_der` and
/// not expired now: "the previous hop's token is signed by the peer we talk
/// to".
pub fn verify(token: &str, signer_cert_der: &[u8]) -> Result<Claims, TokenError> {
    verify_at(token, signer_cert_der, SystemTime::now())
}

/// [`verify`] against a given time.
pub fn verify_at(
    token: &str,
    signer_cert_der: &[u8],
    now: SystemTime,
) -> Result<Claims, TokenError> {
    let parts = split(token)?;
    let header: Header = json(Part::Header, parts.header)?;
    if header.alg != "ES256" {
        return Err(TokenError::Algorithm { alg: header.alg });
    }
    let signature = b64(Part::Signature, parts.signature)?;
    if signature.len() != 64 {
        return Err(TokenError::SignatureLength {
            len: signature.len(),
        });
    }
    let key = crate::cert::p256_public_key(signer_cert_der).map_err(|e| match e {
        crate::cert::KeyError::Parse(cause) => TokenError::Certificate { cause },
        crate::cert::KeyError::NotP256(key) => TokenError::KeyType { key },
    })?;
    // The signing input is the header and payload exactly as sent.
    let signed_len = parts.header.len() + 1 + parts.payload.len();
    let signed = token.get(..signed_len).unwrap_or_default();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature {
            signer: crate::cert::spiffe_id(signer_cert_der)
                .unwrap_or_else(|| "certificate".to_owned()),
        })?;
    let claims: Claims = json(Part::Payload, parts.payload)?;
    let now = unix_seconds(now);
    if now >= claims.exp {
        return Err(TokenError::Expired {
            sub: claims.sub,
            exp: claims.exp,
            now,
        });
    }
    Ok(claims)
}

/// Seconds since the epoch, whole, as JWT numeric dates are (0 before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Signs `claims` with an EC P-256 PKCS#8 key as NSM does (ES256, JWS
/// compact form). The error is ring's word on the key.
pub(crate) fn sign(claims: &Claims, pkcs8: &[u8]) -> Result<String, String> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        .map_err(|e| e.to_string())?;
    let header = Header {
        alg: "ES256".to_owned(),
        typ: Some("JWT".to_owned()),
    };
    let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let payload = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key
        .sign(&rng, token.as_bytes())
        .map_err(|_| "ECDSA signing failed".to_owned())?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
    Ok(token)
}
