//! One evaluation of the shipped server policies against a three-hop path,
//! compiled once: what authorization adds to every Request and Close. The
//! signature check is a stub so the figure is the policy engine's alone.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sriov_api::nsm::connection::{Path, PathSegment};
use sriov_policy::{Input, Peer, Policies, TokenCheck};

struct Trusting;

impl TokenCheck for Trusting {
    fn signed_by(&self, _token: &str, _certificate_der: &[u8]) -> bool {
        true
    }
}

fn token(sub: &str, aud: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"{sub}","aud":["{aud}"],"exp":4102444800}}"#
    ));
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let policies = Policies::defaults_server(Arc::new(Trusting))?;
    let compile = started.elapsed();

    let hops = ["client", "nsmgr", "forwarder", "nse"];
    let path = Path {
        index: 2,
        path_segments: hops
            .windows(2)
            .map(|w| PathSegment {
                name: w[0].to_owned(),
                id: format!("{}-id", w[0]),
                token: token(w[0], w[1]),
                ..Default::default()
            })
            .collect(),
    };
    let certificate = vec![0x30u8; 600];
    let peer = Peer {
        spiffe_id: Some("nsmgr"),
        certificate_der: Some(&certificate),
    };

    const ROUNDS: u32 = 2000;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let input = Input::network_service(&path, &peer);
        if let Err(denied) = policies.check(&input) {
            return Err(denied.into());
        }
    }
    let per_check = started.elapsed() / ROUNDS;

    let started = Instant::now();
    let mut built = 0;
    for _ in 0..ROUNDS {
        built += Input::network_service(&path, &peer)
            .as_json()
            .as_object()
            .map_or(0, |o| o.len());
    }
    let per_input = started.elapsed() / ROUNDS;
    if built == 0 {
        return Err("no input built".into());
    }
    println!("compile (4 server policies): {compile:?}");
    println!("check (input + 4 policies, 3 segments): {per_check:?} per call over {ROUNDS}");
    println!("  of which building the input: {per_input:?}");
    Ok(())
}
