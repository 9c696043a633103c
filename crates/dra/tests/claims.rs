//! Reading ResourceClaims from the fake API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::resource::v1::ResourceClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sriov_dra::claims::{ClaimError, ClaimSource};
use sriov_dra::testing::FakeApiServer;

fn claim(namespace: &str, name: &str, uid: &str) -> ResourceClaim {
    ResourceClaim {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn source() -> (FakeApiServer, ClaimSource) {
    let server = FakeApiServer::start().await.unwrap();
    server.put_claim(claim("default", "vf-claim", "uid-1"));
    let source = ClaimSource::new(server.client().unwrap());
    (server, source)
}

#[tokio::test]
async fn a_claim_is_read_by_namespace_and_name() {
    let (server, source) = source().await;
    let got = source
        .get_checked("default", "vf-claim", "uid-1")
        .await
        .unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some("uid-1"));
    let request = server.requests().pop().unwrap();
    assert_eq!(
        request.path,
        "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/vf-claim"
    );
}

#[tokio::test]
async fn a_missing_claim_is_not_found() {
    let (_server, source) = source().await;
    let err = source.get("default", "other").await.unwrap_err();
    assert!(
        matches!(&err, ClaimError::NotFound { name, .. } if name == "other"),
        "{err}"
    );
    let err = source.get("kube-system", "vf-claim").await.unwrap_err();
    assert!(matches!(err, ClaimError::NotFound { .. }));
}

#[tokio::test]
async fn a_claim_of_another_uid_is_refused_naming_both() {
    let (_server, source) = source().await;
    let err = source
        .get_checked("default", "vf-claim", "uid-2")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClaimError::UidMismatch { .. }));
    assert!(text.contains("uid-1") && text.contains("uid-2"), "{text}");
}

#[tokio::test]
async fn a_reference_that_is_no_object_name_is_refused_before_any_request() {
    let (server, source) = source().await;
    let err = source.get("default", "../../secrets/x").await.unwrap_err();
    assert!(matches!(err, ClaimError::InvalidReference { .. }), "{err}");
    assert!(server.requests().is_empty());
}
