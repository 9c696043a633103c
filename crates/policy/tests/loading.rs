//! Operator policy files named by a spec in NSM's syntax.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{RingCheck, Signer, now};
use serde_json::json;
use sriov_api::nsm::connection::{Path, PathSegment};
use sriov_policy::{Input, Peer, Policies, PolicyError};

/// An operator's policy in NSM's own dialect (Rego v0, OPA's `io.jwt.decode`
/// and `time.now_ns`): the first token must come from the allowed client.
const ONLY_GOOD_CLIENT: &str = r#"
package acme.authz

default valid = false

valid {
	[_, claims, _] := io.jwt.decode(input.path_segments[0].token)
	claims.sub == "spiffe://test/good"
	time.now_ns() > 0
}
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn input_from(signer: &Signer) -> Input {
    let path = Path {
        index: 0,
        path_segments: vec![PathSegment {
            token: signer.token("spiffe://test/nsmgr", now() + 60),
            ..Default::default()
        }],
    };
    Input::network_service(&path, &Peer::default())
}

#[test]
fn an_nsm_style_operator_file_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "only_good_client.rego", ONLY_GOOD_CLIENT);
    let policies = Policies::load(&file, Arc::new(RingCheck)).unwrap();
    assert_eq!(policies.names().collect::<Vec<_>>(), [file.as_str()]);

    policies
        .check(&input_from(&Signer::new("spiffe://test/good")))
        .unwrap();
    let denied = policies
        .check(&input_from(&Signer::new("spiffe://test/bad")))
        .unwrap_err();
    assert_eq!(denied.policy, file);
}

#[test]
fn masks_are_anchored_regexes_over_a_directory_tree_and_the_shipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let a = write(dir.path(), "a.rego", ONLY_GOOD_CLIENT);
    let b = write(dir.path(), "sub/b.rego", ONLY_GOOD_CLIENT);
    write(dir.path(), "notes.txt", "not rego");
    // A ConfigMap mount's timestamped copy: not loaded twice.
    write(dir.path(), "..2026_01_01/a.rego", "not even rego");

    let spec = format!("etc/nsm/opa/common/tokens_valid.rego, {root}/.*\\.rego");
    let policies = Policies::load(&spec, Arc::new(RingCheck)).unwrap();
    assert_eq!(
        policies.names().collect::<Vec<_>>(),
        [
            "etc/nsm/opa/common/tokens_valid.rego",
            a.as_str(),
            b.as_str()
        ]
    );

    let policies = Policies::load(&format!("{root}/[^/]*\\.rego"), Arc::new(RingCheck)).unwrap();
    assert_eq!(policies.names().collect::<Vec<_>>(), [a.as_str()]);
}

#[test]
fn a_file_that_does_not_parse_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "broken.rego",
        "package nsm\n\ndefault valid = false\n\nvalid {\n\tinput.index ==\n}\n",
    );
    let err = Policies::load(&file, Arc::new(RingCheck)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, PolicyError::Compile { name, .. } if *name == file),
        "{err:?}"
    );
    assert!(message.contains(&file), "{message}");
    assert!(message.contains("broken.rego:5:"), "{message}");
}

#[test]
fn a_file_without_valid_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "novalid.rego", "package nsm\n\nallow = true\n");
    let err = Policies::load(&file, Arc::new(RingCheck)).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Compile { name, .. } if *name == file),
        "{err:?}"
    );
}

#[test]
fn a_missing_file_is_no_match_naming_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let mask = format!("{}/absent.rego", dir.path().display());
    let err = Policies::load(&mask, Arc::new(RingCheck)).unwrap_err();
    assert!(
        matches!(&err, PolicyError::NoMatch { mask: m } if *m == mask),
        "{err:?}"
    );
    assert!(err.to_string().contains(&mask));
}

#[test]
fn a_non_boolean_or_failing_valid_denies() {
    let tokens = Arc::new(RingCheck);
    let policies = Policies::from_sources(
        [("number.rego", "package nsm\n\nvalid = 1\n")],
        tokens.clone(),
    )
    .unwrap();
    let denied = policies.check(&Input::from_json(json!({}))).unwrap_err();
    assert_eq!(denied.policy, "number.rego");
    assert!(denied.reason.contains("not a boolean"), "{denied}");

    let policies = Policies::from_sources(
        [("undefined.rego", "package nsm\n\nvalid { input.missing }\n")],
        tokens,
    )
    .unwrap();
    let denied = policies.check(&Input::from_json(json!({}))).unwrap_err();
    assert!(denied.reason.contains("undefined"), "{denied}");
}

#[test]
fn a_builtin_regorus_lacks_denies_naming_it() {
    let policies = Policies::from_sources(
        [(
            "regex.rego",
            "package nsm\n\nvalid { regex.match(\"^a\", \"abc\") }\n",
        )],
        Arc::new(RingCheck),
    )
    .unwrap();
    let denied = policies.check(&Input::from_json(json!({}))).unwrap_err();
    assert_eq!(denied.policy, "regex.rego");
    assert!(denied.reason.contains("regex.match"), "{denied}");
}
