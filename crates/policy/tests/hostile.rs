//! Hostile inputs never panic: random path shapes, tokens and certificates
//! through every shipped policy, and every decision names a loaded policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{RingCheck, Signer, now};
use serde_json::json;
use sriov_api::nsm::connection::{Path, PathSegment};
use sriov_policy::{ConnectionOwners, Input, Peer, Policies, previous_connection_id};

/// xorshift64*: reproducible without a dependency; the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn claims(rng: &mut Rng) -> serde_json::Value {
    let any = |rng: &mut Rng| match rng.below(9) {
        0 => json!(null),
        1 => json!("spiffe://test/x"),
        2 => json!(["spiffe://test/x", 5]),
        3 => json!(1e300),
        4 => json!(-1),
        5 => json!(u64::MAX),
        6 => json!({"nested": [1, {"deep": "x"}]}),
        7 => json!(now() + 60),
        _ => json!(""),
    };
    let mut object = serde_json::Map::new();
    for key in ["sub", "aud", "exp", "iat"] {
        if rng.below(4) != 0 {
            object.insert(key.to_owned(), any(rng));
        }
    }
    serde_json::Value::Object(object)
}

fn token(rng: &mut Rng, signer: &Signer) -> String {
    let part = |rng: &mut Rng| URL_SAFE_NO_PAD.encode(rng.bytes(40));
    match rng.below(9) {
        0 => String::new(),
        1 => "..".to_owned(),
        2 => String::from_utf8_lossy(&rng.bytes(60)).into_owned(),
        3 => format!("{}.{}.{}", part(rng), part(rng), part(rng)),
        4 => signer.token_with(claims(rng)),
        5 => format!("{}.{}", signer.token_with(claims(rng)), part(rng)),
        6 => "é.☃.🦀".to_owned(),
        _ => signer.token("spiffe://test/next", now() + rng.below(100) as i64 - 50),
    }
}

fn path(rng: &mut Rng, signer: &Signer) -> Path {
    let segments = rng.below(7) as usize;
    Path {
        index: match rng.below(4) {
            0 => u32::MAX,
            _ => rng.below(segments as u64 + 2) as u32,
        },
        path_segments: (0..segments)
            .map(|i| PathSegment {
                name: String::from_utf8_lossy(&rng.bytes(8)).into_owned(),
                id: format!("id{}", rng.below(4)),
                token: token(rng, signer),
                expires: (rng.below(2) == 0).then(|| prost_types::Timestamp {
                    seconds: rng.next() as i64,
                    nanos: rng.next() as i32,
                }),
                metrics: [(format!("m{i}"), "v".to_owned())].into(),
            })
            .collect(),
    }
}

#[test]
fn random_paths_never_panic_and_every_denial_names_a_loaded_policy() {
    let policies = Policies::load("etc/nsm/opa/.*.rego", Arc::new(RingCheck)).unwrap();
    let names: Vec<String> = policies.names().map(str::to_owned).collect();
    assert_eq!(names.len(), 7);
    let signer = Signer::new("spiffe://test/peer");
    let owners = ConnectionOwners::new();
    let seed = 0x5eed_0f00_0001_u64;
    let mut rng = Rng(seed);
    let mut allowed = 0;
    let mut denied = 0;
    for round in 0..400 {
        let path = path(&mut rng, &signer);
        let certificate = match rng.below(3) {
            0 => signer.certificate(),
            1 => rng.bytes(100),
            _ => Vec::new(),
        };
        let spiffe_id = format!("spiffe://test/{}", rng.below(3));
        let peer = Peer {
            spiffe_id: (rng.below(4) != 0).then_some(spiffe_id.as_str()),
            certificate_der: (rng.below(4) != 0).then_some(certificate.as_slice()),
        };
        if let (Some(id), Some(conn)) = (peer.spiffe_id, previous_connection_id(&path)) {
            owners.insert(id, conn);
        }
        let tokens: Vec<String> = path.path_segments.iter().map(|s| s.token.clone()).collect();
        let ids = BTreeMap::from([(format!("r{}", rng.below(3)), vec![spiffe_id.clone()])]);
        let inputs = [
            Input::network_service(&path, &peer),
            Input::monitor(&path.path_segments, &peer, &owners),
            Input::registry(
                &format!("r{}", rng.below(3)),
                path.index,
                &tokens,
                &ids,
                &peer,
            ),
        ];
        for input in &inputs {
            match policies.check(input) {
                Ok(()) => allowed += 1,
                Err(d) => {
                    denied += 1;
                    assert!(
                        names.contains(&d.policy),
                        "seed {seed:#x} round {round}: {d}"
                    );
                }
            }
        }
    }
    // Seven policies over three unrelated input shapes: nearly all refuse.
    assert!(denied > 1000, "{denied} denied, {allowed} allowed");
}

#[test]
fn each_policy_alone_survives_random_json() {
    let signer = Signer::new("spiffe://test/peer");
    let mut rng = Rng(0xdead_beef);
    let one = |name: &str| Policies::load(name, Arc::new(RingCheck)).unwrap();
    let policies: Vec<Policies> = [
        "etc/nsm/opa/common/tokens_valid.rego",
        "etc/nsm/opa/common/tokens_expired.rego",
        "etc/nsm/opa/common/tokens_chained.rego",
        "etc/nsm/opa/server/prev_token_signed.rego",
        "etc/nsm/opa/client/next_token_signed.rego",
        "etc/nsm/opa/monitor/service_connection.rego",
        "etc/nsm/opa/registry/client_allowed.rego",
    ]
    .into_iter()
    .map(one)
    .collect();
    for _ in 0..300 {
        // Fields of the wrong type where the policies expect others.
        let document = json!({
            "index": claims(&mut rng)["exp"],
            "path_segments": match rng.below(3) {
                0 => json!("not an array"),
                1 => json!([{"token": 5}, {"token": token(&mut rng, &signer)}, null]),
                _ => json!({"0": {"token": token(&mut rng, &signer)}}),
            },
            "auth_info": {"certificate": claims(&mut rng)["sub"]},
            "spiffe_id_connection_map": {"a": claims(&mut rng)["aud"]},
            "selector_connection_ids": claims(&mut rng)["aud"],
            "service_spiffe_id": "a",
            "resource_path_ids_map": {"r": claims(&mut rng)["aud"]},
            "resource_name": "r",
            "resource_id": "spiffe://test/x",
        });
        let input = Input::from_json(document);
        for policy in &policies {
            if let Err(denied) = policy.check(&input) {
                assert_eq!(Some(denied.policy.as_str()), policy.names().next());
            }
        }
    }
}
