//! Real ES256 tokens for the tests: ring signs them, and [`RingCheck`]
//! verifies them. The "certificate" handed to policies is the signer's raw
//! public key (an uncompressed P-256 point) instead of an X.509 DER: the
//! crate passes certificate bytes through untouched, and parsing X.509 is the
//! identity crate's business, not this one's.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::json;
use sriov_policy::TokenCheck;

pub(crate) struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    pub(crate) spiffe_id: String,
}

impl Signer {
    pub(crate) fn new(spiffe_id: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            key,
            rng,
            spiffe_id: spiffe_id.to_owned(),
        }
    }

    /// What the tests pass as the peer's certificate.
    pub(crate) fn certificate(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// A token from this signer to `audience`, expiring at `exp` (seconds).
    pub(crate) fn token(&self, audience: &str, exp: i64) -> String {
        self.token_with(json!({ "sub": self.spiffe_id, "aud": [audience], "exp": exp }))
    }

    pub(crate) fn token_with(&self, claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string());
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

pub(crate) struct RingCheck;

impl TokenCheck for RingCheck {
    fn signed_by(&self, token: &str, certificate_der: &[u8]) -> bool {
        let Some((input, signature)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, certificate_der)
            .verify(input.as_bytes(), &signature)
            .is_ok()
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
