//! The shipped policies, each allowed and denied, through the public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{RingCheck, Signer, now};
use serde_json::json;
use sriov_api::nsm::connection::{Path, PathSegment};
use sriov_policy::{ConnectionOwners, Denied, Input, Peer, Policies, previous_connection_id};

fn segment(name: &str, id: &str, token: String) -> PathSegment {
    PathSegment {
        name: name.to_owned(),
        id: id.to_owned(),
        token,
        ..Default::default()
    }
}

/// client → nsmgr → forwarder (us, index 2), each token addressed to the next hop.
struct Chain {
    client: Signer,
    nsmgr: Signer,
    forwarder: Signer,
}

impl Chain {
    fn new() -> Self {
        Self {
            client: Signer::new("spiffe://test/client"),
            nsmgr: Signer::new("spiffe://test/nsmgr"),
            forwarder: Signer::new("spiffe://test/forwarder"),
        }
    }

    fn path(&self) -> Path {
        let exp = now() + 600;
        Path {
            index: 2,
            path_segments: vec![
                segment(
                    "client",
                    "c-id",
                    self.client.token(&self.nsmgr.spiffe_id, exp),
                ),
                segment(
                    "nsmgr",
                    "m-id",
                    self.nsmgr.token(&self.forwarder.spiffe_id, exp),
                ),
                segment(
                    "forwarder",
                    "f-id",
                    self.forwarder.token("spiffe://test/nse", exp),
                ),
            ],
        }
    }

    fn check(&self, path: &Path) -> Result<(), Denied> {
        self.check_from(path, &self.nsmgr.certificate())
    }

    fn check_from(&self, path: &Path, certificate: &[u8]) -> Result<(), Denied> {
        let policies = Policies::defaults_server(Arc::new(RingCheck)).unwrap();
        let peer = Peer {
            spiffe_id: Some(&self.nsmgr.spiffe_id),
            certificate_der: Some(certificate),
        };
        policies.check(&Input::network_service(path, &peer))
    }
}

fn denied_by(result: Result<(), Denied>, policy: &str) {
    let denied = result.expect_err("should be denied");
    assert_eq!(
        denied.policy,
        format!("etc/nsm/opa/{policy}.rego"),
        "{denied}"
    );
    assert!(denied.to_string().contains(policy), "{denied}");
}

#[test]
fn server_defaults_are_nsms_four_in_order() {
    let policies = Policies::defaults_server(Arc::new(RingCheck)).unwrap();
    assert_eq!(
        policies.names().collect::<Vec<_>>(),
        [
            "etc/nsm/opa/common/tokens_chained.rego",
            "etc/nsm/opa/common/tokens_expired.rego",
            "etc/nsm/opa/common/tokens_valid.rego",
            "etc/nsm/opa/server/prev_token_signed.rego",
        ]
    );
}

#[test]
fn a_well_formed_chain_is_allowed() {
    let chain = Chain::new();
    chain.check(&chain.path()).unwrap();
}

#[test]
fn only_the_left_side_is_checked() {
    let chain = Chain::new();
    let mut path = chain.path();
    // Segments after ours are not ours to judge (NSM cuts to [..=index]).
    path.path_segments
        .push(segment("nse", "e-id", "garbage".to_owned()));
    chain.check(&path).unwrap();
}

#[test]
fn an_expired_token_is_denied_by_tokens_expired() {
    let chain = Chain::new();
    let mut path = chain.path();
    path.path_segments[0].token = chain.client.token(&chain.nsmgr.spiffe_id, now() - 1);
    denied_by(chain.check(&path), "common/tokens_expired");
}

#[test]
fn a_token_without_exp_is_denied_by_tokens_expired() {
    let chain = Chain::new();
    let mut path = chain.path();
    path.path_segments[0].token = chain
        .client
        .token_with(json!({"sub": chain.client.spiffe_id, "aud": [chain.nsmgr.spiffe_id]}));
    denied_by(chain.check(&path), "common/tokens_expired");
}

#[test]
fn a_broken_chain_is_denied_by_tokens_chained() {
    let chain = Chain::new();
    let exp = now() + 600;
    // The client's token names someone else as its audience.
    let mut path = chain.path();
    path.path_segments[0].token = chain.client.token("spiffe://test/other", exp);
    denied_by(chain.check(&path), "common/tokens_chained");
    // The nsmgr's token claims a subject the client did not address.
    let impostor = Signer::new("spiffe://test/impostor");
    let mut path = chain.path();
    path.path_segments[1].token = impostor.token(&chain.forwarder.spiffe_id, exp);
    denied_by(chain.check(&path), "common/tokens_chained");
}

#[test]
fn an_audience_may_be_a_single_string() {
    let chain = Chain::new();
    let mut path = chain.path();
    path.path_segments[0].token = chain.client.token_with(
        json!({"sub": chain.client.spiffe_id, "aud": chain.nsmgr.spiffe_id, "exp": now() + 60}),
    );
    chain.check(&path).unwrap();
}

#[test]
fn a_garbage_token_is_denied() {
    let chain = Chain::new();
    // One segment: no pair to chain, so tokens_expired is the first to see it.
    let path = Path {
        index: 0,
        path_segments: vec![segment("client", "c-id", "not.a.jwt".to_owned())],
    };
    denied_by(chain.check(&path), "common/tokens_expired");
    // tokens_valid alone refuses it too.
    let valid =
        Policies::load("etc/nsm/opa/common/tokens_valid.rego", Arc::new(RingCheck)).unwrap();
    let input = Input::network_service(&path, &Peer::default());
    denied_by(valid.check(&input), "common/tokens_valid");
    // And accepts a readable one.
    let path = Path {
        index: 0,
        path_segments: vec![segment("c", "c", chain.client.token("x", 0))],
    };
    valid
        .check(&Input::network_service(&path, &Peer::default()))
        .unwrap();
}

#[test]
fn a_previous_token_not_signed_by_the_peer_is_denied_by_prev_token_signed() {
    let chain = Chain::new();
    // The peer presents the client's certificate, but the previous token is the nsmgr's.
    denied_by(
        chain.check_from(&chain.path(), &chain.client.certificate()),
        "server/prev_token_signed",
    );
    // A token whose signature was replaced (same claims, so the chain holds).
    let mut path = chain.path();
    let token = &path.path_segments[1].token;
    let (unsigned, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{unsigned}.{}", "A".repeat(86));
    path.path_segments[1].token = forged;
    denied_by(chain.check(&path), "server/prev_token_signed");
    // No certificate at all.
    let policies = Policies::defaults_server(Arc::new(RingCheck)).unwrap();
    let input = Input::network_service(&chain.path(), &Peer::default());
    denied_by(policies.check(&input), "server/prev_token_signed");
}

#[test]
fn index_zero_has_no_previous_token_to_trust() {
    let chain = Chain::new();
    let mut path = chain.path();
    path.index = 0;
    denied_by(chain.check(&path), "server/prev_token_signed");
}

#[test]
fn monitor_allows_only_the_owner_of_a_connection() {
    let policies = Policies::defaults_monitor(Arc::new(RingCheck)).unwrap();
    let owners = ConnectionOwners::new();
    let request = Path {
        index: 1,
        path_segments: vec![
            segment("nsmgr", "m-id", String::new()),
            segment("fwd", "f-id", String::new()),
        ],
    };
    owners.insert(
        "spiffe://test/nsmgr",
        previous_connection_id(&request).unwrap(),
    );
    let selector = [segment("", "m-id", String::new())];
    let owner = Peer {
        spiffe_id: Some("spiffe://test/nsmgr"),
        certificate_der: None,
    };
    policies
        .check(&Input::monitor(&selector, &owner, &owners))
        .unwrap();

    let stranger = Peer {
        spiffe_id: Some("spiffe://test/stranger"),
        certificate_der: None,
    };
    denied_by(
        policies.check(&Input::monitor(&selector, &stranger, &owners)),
        "monitor/service_connection",
    );
    denied_by(
        policies.check(&Input::monitor(&[], &owner, &owners)),
        "monitor/service_connection",
    );
    owners.remove("spiffe://test/nsmgr", "m-id");
    denied_by(
        policies.check(&Input::monitor(&selector, &owner, &owners)),
        "monitor/service_connection",
    );
}

#[test]
fn registry_client_allows_a_new_name_and_its_first_owner_only() {
    let policies = Policies::defaults_registry_client(Arc::new(RingCheck)).unwrap();
    assert_eq!(policies.names().count(), 5);
    // The variable's default as sriov-config splits it names the same five.
    let split = sriov_policy::DEFAULT_REGISTRY_CLIENT_SPEC
        .split(',')
        .collect::<Vec<_>>();
    let same = Policies::load_masks(&split, Arc::new(RingCheck)).unwrap();
    assert!(same.names().eq(policies.names()));
    let forwarder = Signer::new("spiffe://test/forwarder");
    let registry = Signer::new("spiffe://test/registry");
    let exp = now() + 600;
    let tokens = vec![
        forwarder.token(&registry.spiffe_id, exp),
        registry.token("spiffe://test/nobody", exp),
    ];
    let peer = Peer {
        spiffe_id: Some(&registry.spiffe_id),
        certificate_der: Some(&registry.certificate()),
    };
    let mut ids = BTreeMap::new();
    policies
        .check(&Input::registry("fwd-1", 0, &tokens, &ids, &peer))
        .unwrap();

    ids.insert("fwd-1".to_owned(), vec![forwarder.spiffe_id.clone()]);
    policies
        .check(&Input::registry("fwd-1", 0, &tokens, &ids, &peer))
        .unwrap();

    ids.insert(
        "fwd-1".to_owned(),
        vec!["spiffe://test/someone-else".to_owned()],
    );
    denied_by(
        policies.check(&Input::registry("fwd-1", 0, &tokens, &ids, &peer)),
        "registry/client_allowed",
    );

    // The registry's answer must carry a token the registry signed.
    let ids = BTreeMap::new();
    let wrong_peer = Peer {
        spiffe_id: Some(&registry.spiffe_id),
        certificate_der: Some(&forwarder.certificate()),
    };
    denied_by(
        policies.check(&Input::registry("fwd-1", 0, &tokens, &ids, &wrong_peer)),
        "client/next_token_signed",
    );
}

#[test]
fn no_policy_allows_everything() {
    let policies = Policies::load("", Arc::new(RingCheck)).unwrap();
    assert!(policies.is_empty());
    policies.check(&Input::from_json(json!({}))).unwrap();
}

#[test]
fn policies_are_shared_across_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    let policies = Policies::defaults_server(Arc::new(RingCheck)).unwrap();
    shared(&policies);
    let chain = Chain::new();
    let path = chain.path();
    let certificate = chain.nsmgr.certificate();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let peer = Peer {
                    spiffe_id: None,
                    certificate_der: Some(&certificate),
                };
                policies
                    .check(&Input::network_service(&path, &peer))
                    .unwrap();
            });
        }
    });
}
