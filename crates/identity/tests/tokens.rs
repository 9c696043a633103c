#![allow(clippy::unwrap_used, clippy::expect_used)]
//! NSM path tokens: signed as NSM signs them, verified against the signer's
//! certificate, hostile input refused with the precise reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sriov_identity::testing::{FakeWorkloadApi, SVID_TTL};
use sriov_identity::token::{self, Part, TokenError};
use sriov_identity::{Identity, Peer};

const FORWARDER: &str = "spiffe://example.org/forwarder-sriov";
const NSMGR: &str = "spiffe://example.org/nsmgr";

async fn setup() -> (tempfile::TempDir, FakeWorkloadApi, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeWorkloadApi::start(dir.path().join("agent.sock"), FORWARDER).unwrap();
    let me = Identity::from_workload_api(&fake.endpoint(), Duration::from_secs(30))
        .await
        .unwrap();
    (dir, fake, me)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn part(token: &str, i: usize) -> serde_json::Value {
    let text = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
}

#[tokio::test]
async fn sign_then_verify_with_our_certificate() {
    let (_dir, _fake, me) = setup().await;
    let (token, expires) = me
        .sign_token(Some(NSMGR), Duration::from_secs(600))
        .unwrap();
    let claims = token::verify(&token, &me.certificate_der().unwrap()).unwrap();
    assert_eq!(claims.sub, FORWARDER);
    assert_eq!(claims.aud, vec![NSMGR.to_owned()]);
    assert_eq!(expires, UNIX_EPOCH + Duration::from_secs(claims.exp as u64));
}

#[tokio::test]
async fn claims_are_what_nsm_sets() {
    let (_dir, _fake, me) = setup().await;
    let before = now();
    let (token, _) = me
        .sign_token(Some(NSMGR), Duration::from_secs(600))
        .unwrap();
    let after = now();

    let header = part(&token, 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let payload = part(&token, 1);
    // Registered claims only: sub, aud as an array, exp in whole seconds.
    let keys: Vec<_> = payload.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 3, "{payload}");
    assert_eq!(payload["sub"], FORWARDER);
    assert_eq!(payload["aud"], serde_json::json!([NSMGR]));
    let exp = payload["exp"].as_i64().unwrap();
    assert!((before + 600..=after + 600).contains(&exp), "{exp}");

    // Without a peer, no aud at all (NSM's omitempty).
    let (token, _) = me.sign_token(None, Duration::from_secs(600)).unwrap();
    let payload = part(&token, 1);
    assert!(payload.get("aud").is_none(), "{payload}");
    assert!(token::decode_unverified(&token).unwrap().aud.is_empty());

    // A lifetime past our certificate's expiry is cut to it.
    let (token, _) = me.sign_token(None, SVID_TTL * 10).unwrap();
    let exp = token::decode_unverified(&token).unwrap().exp;
    // The SVID was minted moments before, for SVID_TTL.
    assert!(exp <= after + SVID_TTL.as_secs() as i64, "{exp}");
    assert!(exp >= before + SVID_TTL.as_secs() as i64 - 120, "{exp}");
}

#[tokio::test]
async fn token_for_a_tls_peer_names_it_and_chains() {
    let (_dir, fake, me) = setup().await;
    let nsmgr = fake.mint(NSMGR).unwrap();
    let peer = Peer {
        spiffe_id: NSMGR.to_owned(),
        cert_der: nsmgr.leaf_der().to_vec(),
    };
    let (ours, _) = me.sign_token_for(&peer, Duration::from_secs(60)).unwrap();
    let claims = token::verify(&ours, &me.certificate_der().unwrap()).unwrap();
    assert_eq!(claims.aud, vec![NSMGR.to_owned()]);

    // NSM's tokens_chained: the aud of one segment is the sub of the next.
    let theirs = forge(
        &nsmgr.key_der,
        &serde_json::json!({"sub": NSMGR, "exp": now() + 60}),
    );
    let next = token::verify(&theirs, nsmgr.leaf_der()).unwrap();
    assert!(claims.aud.contains(&next.sub));
}

#[tokio::test]
async fn verify_with_another_certificate_fails() {
    let (_dir, fake, me) = setup().await;
    let (token, _) = me.sign_token(None, Duration::from_secs(60)).unwrap();
    let other = fake.mint(NSMGR).unwrap();
    let err = token::verify(&token, other.leaf_der()).unwrap_err();
    assert_eq!(
        err,
        TokenError::BadSignature {
            signer: NSMGR.to_owned()
        }
    );
}

#[tokio::test]
async fn tampered_token_fails() {
    let (_dir, _fake, me) = setup().await;
    let cert = me.certificate_der().unwrap();
    let (token, _) = me.sign_token(Some(NSMGR), Duration::from_secs(60)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = part(&token, 1);
    payload["sub"] = "spiffe://example.org/intruder".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert!(matches!(
        token::verify(&tampered, &cert),
        Err(TokenError::BadSignature { .. })
    ));
    // The unverified reader still reads it: that is what it is for.
    assert_eq!(
        token::decode_unverified(&tampered).unwrap().sub,
        "spiffe://example.org/intruder"
    );

    // A flipped signature bit.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert!(matches!(
        token::verify(&flipped, &cert),
        Err(TokenError::BadSignature { .. })
    ));
}

#[tokio::test]
async fn expired_token_fails() {
    let (_dir, _fake, me) = setup().await;
    let cert = me.certificate_der().unwrap();
    // A zero lifetime expires the second it is signed in (alive while now < exp).
    let (token, _) = me.sign_token(None, Duration::ZERO).unwrap();
    let err = token::verify(&token, &cert).unwrap_err();
    assert!(
        matches!(&err, TokenError::Expired { sub, .. } if sub == FORWARDER),
        "{err:?}"
    );
    let (token, expires) = me.sign_token(None, Duration::from_secs(60)).unwrap();
    token::verify_at(&token, &cert, expires - Duration::from_secs(1)).unwrap();
    assert!(matches!(
        token::verify_at(&token, &cert, expires),
        Err(TokenError::Expired { .. })
    ));
}

/// A JWS over `payload` with `key_der` (P-256 PKCS#8), by hand.
fn forge(key_der: &[u8], payload: &serde_json::Value) -> String {
    forge_with(key_der, &serde_json::json!({"alg": "ES256"}), payload)
}

fn forge_with(key_der: &[u8], header: &serde_json::Value, payload: &serde_json::Value) -> String {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key_der, &rng).unwrap();
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
    );
    let sig = key.sign(&rng, signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[tokio::test]
async fn garbage_tokens_give_the_right_error() {
    let (_dir, fake, me) = setup().await;
    let cert = me.certificate_der().unwrap();
    let key = fake.current().key_der;
    let exp = now() + 60;
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);

    for (token, want) in [
        ("", TokenError::Malformed { parts: 1 }),
        ("a.b", TokenError::Malformed { parts: 2 }),
        ("a.b.c.d.e", TokenError::Malformed { parts: 5 }),
    ] {
        assert_eq!(token::verify(token, &cert).unwrap_err(), want, "{token:?}");
        assert_eq!(
            token::decode_unverified(token).unwrap_err(),
            want,
            "{token:?}"
        );
    }
    let long = "a".repeat(token::MAX_TOKEN_LEN + 1);
    assert!(matches!(
        token::decode_unverified(&long),
        Err(TokenError::TooLong { .. })
    ));
    assert!(matches!(
        token::verify("!!.e30.AA", &cert),
        Err(TokenError::Base64 {
            part: Part::Header,
            ..
        })
    ));
    assert!(matches!(
        token::decode_unverified("e30.!!.AA"),
        Err(TokenError::Base64 {
            part: Part::Payload,
            ..
        })
    ));
    let not_json = format!("{}.{}.AA", b64(r#"{"alg":"ES256"}"#), b64("not json"));
    assert!(matches!(
        token::decode_unverified(&not_json),
        Err(TokenError::Json {
            part: Part::Payload,
            ..
        })
    ));
    let no_sub = format!("{}.{}.AA", b64(r#"{"alg":"ES256"}"#), b64(r#"{"exp":1}"#));
    assert!(matches!(
        token::decode_unverified(&no_sub),
        Err(TokenError::Json {
            part: Part::Payload,
            ..
        })
    ));
    // `alg: none` and friends are refused before any signature work.
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none"}"#),
        b64(r#"{"sub":"x","exp":1}"#)
    );
    assert_eq!(
        token::verify(&none, &cert).unwrap_err(),
        TokenError::Algorithm { alg: "none".into() }
    );
    let short_sig = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256"}"#),
        b64(r#"{"sub":"x","exp":1}"#),
        URL_SAFE_NO_PAD.encode([0u8; 10])
    );
    assert_eq!(
        token::verify(&short_sig, &cert).unwrap_err(),
        TokenError::SignatureLength { len: 10 }
    );
    let good = forge(&key, &serde_json::json!({"sub": FORWARDER, "exp": exp}));
    assert!(matches!(
        token::verify(&good, b"not a certificate"),
        Err(TokenError::Certificate { .. })
    ));

    // A single-string aud (allowed by RFC 7519) reads as one audience.
    let single = forge(
        &key,
        &serde_json::json!({"sub": FORWARDER, "aud": NSMGR, "exp": exp}),
    );
    assert_eq!(
        token::verify(&single, &cert).unwrap().aud,
        vec![NSMGR.to_owned()]
    );
    // Another header field order or extra fields are fine.
    let extra = forge_with(
        &key,
        &serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": "k"}),
        &serde_json::json!({"sub": FORWARDER, "exp": exp, "iat": exp - 60}),
    );
    assert_eq!(token::verify(&extra, &cert).unwrap().iat, Some(exp - 60));
}

#[test]
fn signer_with_a_non_p256_key_is_named() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"x","exp":1}"#),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    assert!(matches!(
        token::verify(&token, cert.der()),
        Err(TokenError::KeyType { .. })
    ));
}

#[test]
fn fuzzing_entry_survives_hostile_input() {
    for input in [
        &b""[..],
        b"...",
        b"e30.e30.e30",
        b"\xff\xfe.\x00.\x01",
        b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjoxfQ.AAAA",
    ] {
        sriov_identity::fuzzing::tokens(input);
    }
}
