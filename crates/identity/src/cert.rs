//! The few facts we read from X.509 certificates ourselves: expiry, the EC
//! P-256 public key of a token signer, the SPIFFE ID (through spiffe).

use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate cannot give a P-256 verification key.
#[derive(Debug)]
pub(crate) enum KeyError {
    /// Not DER X.509.
    Parse(String),
    /// The key is of another algorithm or curve (named by OID).
    NotP256(String),
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} bytes after the certificate", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// The certificate's notAfter, in seconds since the epoch.
pub(crate) fn not_after(der: &[u8]) -> Result<i64, String> {
    Ok(parse(der)?.validity().not_after.timestamp())
}

/// The uncompressed SEC1 point of a P-256 subject key, as ring verifies with.
pub(crate) fn p256_public_key(der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let cert = parse(der).map_err(KeyError::Parse)?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(KeyError::NotP256(spki.algorithm.algorithm.to_id_string()));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(oid) if oid == OID_EC_P256 => Ok(spki.subject_public_key.data.to_vec()),
        Some(oid) => Err(KeyError::NotP256(oid.to_id_string())),
        None => Err(KeyError::NotP256("EC key without a named curve".into())),
    }
}

/// The SPIFFE ID of a certificate's single URI SAN.
pub(crate) fn spiffe_id(der: &[u8]) -> Option<String> {
    spiffe::cert::spiffe_id_from_der(der)
        .ok()
        .map(|id| id.to_string())
}

/// The serial number's big-endian bytes.
#[cfg(feature = "testing")]
pub(crate) fn serial(der: &[u8]) -> Option<Vec<u8>> {
    parse(der).ok().map(|c| c.raw_serial().to_vec())
}
