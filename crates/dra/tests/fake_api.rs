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
