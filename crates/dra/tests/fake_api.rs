//! The fake API server refuses what a real one would (and unknown fields).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hyper::http;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::Api;
use kube::api::PostParams;

fn one_slice() -> ResourceSlice {
    pool(&inventory(3)).slices(1).remove(0)
}

async fn create_status(slice: &ResourceSlice) -> u16 {
    let server = sriov_dra::testing::FakeApiServer::start().await.unwrap();
    let api: Api<ResourceSlice> = Api::all(server.client().unwrap());
    match api.create(&PostParams::default(), slice).await {
        Ok(_) => 201,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_valid_slice_is_accepted() {
    assert_eq!(create_status(&one_slice()).await, 201);
}

#[tokio::test]
async fn invalid_slices_are_refused_with_422() {
    let mut no_driver = one_slice();
    no_driver.spec.driver.clear();
    let mut two_selections = one_slice();
    two_selections.spec.all_nodes = Some(true);
    let mut bad_device = one_slice();
    bad_device.spec.devices.as_mut().unwrap()[0].name = "0000:3b:02.1".into();
    let mut too_many = one_slice();
    too_many.spec.devices = Some(
        (0..129)
            .map(|i| Device {
                name: format!("d{i}"),
                ..Default::default()
            })
            .collect(),
    );
    let mut bad_attribute = one_slice();
    let attrs = bad_attribute.spec.devices.as_mut().unwrap()[0]
        .attributes
        .as_mut()
        .unwrap();
    let value = attrs.values().next().unwrap().clone();
    attrs.insert("example.com/not-a-c-identifier".into(), value);
    let mut zero_count = one_slice();
    zero_count.spec.pool.resource_slice_count = 0;

    for (what, slice) in [
        ("no driver", no_driver),
        ("two node selections", two_selections),
        ("device name not a DNS label", bad_device),
        ("129 devices", too_many),
        ("attribute name", bad_attribute),
        ("resourceSliceCount 0", zero_count),
    ] {
        assert_eq!(create_status(&slice).await, 422, "{what}");
    }
}

#[tokio::test]
async fn an_unknown_field_is_refused_not_dropped() {
    let server = sriov_dra::testing::FakeApiServer::start().await.unwrap();
    let client = server.client().unwrap();
    let mut body = serde_json::to_value(one_slice()).unwrap();
    body["spec"]["devices"][0]["atributes"] = serde_json::json!({});
    let request = http::Request::post("/apis/resource.k8s.io/v1/resourceslices")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match client.request_text(request).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("spec.devices[0].atributes"),
                "{}",
                status.message
            );
        }
        other => panic!("accepted: {other:?}"),
    }
    assert!(server.slices().is_empty());
}

#[tokio::test]
async fn a_stale_update_conflicts_and_immutable_fields_stay() {
    let server = sriov_dra::testing::FakeApiServer::start().await.unwrap();
    let api: Api<ResourceSlice> = Api::all(server.client().unwrap());
    let created = api
        .create(&PostParams::default(), &one_slice())
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    let mut newer = created.clone();
    newer.spec.pool.generation = 2;
    api.replace(&name, &PostParams::default(), &newer)
        .await
        .unwrap();
    // `created` carries the old resourceVersion now.
    match api.replace(&name, &PostParams::default(), &created).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("{other:?}"),
    }
    let mut moved = api.get(&name).await.unwrap();
    moved.spec.node_name = Some("node-2".into());
    match api.replace(&name, &PostParams::default(), &moved).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422),
        other => panic!("{other:?}"),
    }
}

fn posted_claim(name: &str, uid: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "sriov-vf"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": "vf", "driver": "sriovnetwork.k8snetworkplumbingwg.io", "pool": "node-1", "device": "0000-3b-02-0"}
        ]}}},
    })
}

async fn post_claim(
    client: &kube::Client,
    namespace: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, u16> {
    let request = http::Request::post(format!(
        "/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(body).unwrap())
    .unwrap();
    match client.request_text(request).await {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap()),
        Err(kube::Error::Api(status)) => Err(status.code),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_posted_claim_keeps_its_uid_and_is_readable() {
    use k8s_openapi::api::resource::v1::ResourceClaim;
    let server = sriov_dra::testing::FakeApiServer::start().await.unwrap();
    let client = server.client().unwrap();
    let uid = "5b1e9f4e-7f8a-4c1e-9d55-00000000c1a1";
    let created = post_claim(&client, "ns-a", &posted_claim("vf-claim", uid))
        .await
        .unwrap();
    assert_eq!(created["metadata"]["uid"], uid);
    assert_eq!(created["metadata"]["namespace"], "ns-a");
    let read: ResourceClaim = Api::namespaced(client.clone(), "ns-a")
        .get("vf-claim")
        .await
        .unwrap();
    assert_eq!(read.metadata.uid.as_deref(), Some(uid));
    let results = read
        .status
        .unwrap()
        .allocation
        .unwrap()
        .devices
        .unwrap()
        .results
        .unwrap();
    assert_eq!(results[0].device, "0000-3b-02-0");
    // The same name in another namespace is another claim.
    assert!(
        post_claim(&client, "ns-b", &posted_claim("vf-claim", uid))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn posted_claims_are_refused_as_a_real_server_would() {
    let server = sriov_dra::testing::FakeApiServer::start().await.unwrap();
    let client = server.client().unwrap();
    post_claim(&client, "ns", &posted_claim("taken", "u-1"))
        .await
        .unwrap();
    let mut misspelled = posted_claim("misspelled", "u-2");
    misspelled["spec"]["devices"]["requets"] = serde_json::json!([]);
    let mut wrong_kind = posted_claim("wrong-kind", "u-3");
    wrong_kind["kind"] = "ResourceSlice".into();
    let mut wrong_type = posted_claim("wrong-type", "u-4");
    wrong_type["spec"]["devices"]["requests"] = "vf".into();
    let mut other_namespace = posted_claim("elsewhere", "u-5");
    other_namespace["metadata"]["namespace"] = "other".into();
    for (what, body, code) in [
        ("an existing name", posted_claim("taken", "u-6"), 409),
        ("a misspelled field", misspelled, 422),
        ("another kind", wrong_kind, 422),
        ("requests not a list", wrong_type, 422),
        (
            "a name that is no DNS subdomain",
            posted_claim("Not_A_Name", "u-7"),
            422,
        ),
        ("another namespace in the body", other_namespace, 400),
    ] {
        assert_eq!(
            post_claim(&client, "ns", &body).await.err(),
            Some(code),
            "{what}"
        );
    }
    // The refused ones were not stored.
    let api: Api<k8s_openapi::api::resource::v1::ResourceClaim> = Api::namespaced(client, "ns");
    assert!(api.get("misspelled").await.is_err());
    assert_eq!(
        api.get("taken").await.unwrap().metadata.uid.as_deref(),
        Some("u-1")
    );
}
