//! Entry points for fuzz targets: hostile tokens and certificates must give
//! an error, never a panic.

/// Feeds `data` to every token reader: as a token, and split in two as a
/// token and a signer certificate.
pub fn tokens(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::token::decode_unverified(&text);
    let _ = crate::token::verify(&text, data);
    let mid = data.len() / 2;
    let (token, cert) = data.split_at(mid);
    let _ = crate::token::verify(&String::from_utf8_lossy(token), cert);
}
