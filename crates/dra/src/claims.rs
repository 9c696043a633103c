//! Reading the ResourceClaims kubelet asks us to prepare.
//!
//! Kubelet's NodePrepareResources names a claim by namespace, name and UID;
//! the allocation (which devices, which opaque config) is only in the
//! ResourceClaim object, read here
//! (`GET /apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}`).
//! A claim deleted and recreated under the same name between kubelet's
//! decision and our read is another claim: [`ClaimSource::get_checked`]
//! refuses it by UID.

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;

/// Why a claim could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The API server has no such claim.
    #[error("ResourceClaim {namespace}/{name} not found")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The claim under that name is another object than the one kubelet meant.
    #[error("ResourceClaim {namespace}/{name} has UID {found:?}, kubelet asked for UID {expected}")]
    UidMismatch {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The UID kubelet sent.
        expected: String,
        /// The UID the API server has (`None`: no UID at all).
        found: Option<String>,
    },
    /// Kubelet's request is not a valid object reference.
    #[error("ResourceClaim {namespace:?}/{name:?}: {rule}")]
    InvalidReference {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Any other API failure.
    #[error("reading ResourceClaim {namespace}/{name}: {cause}")]
    Api {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the client reported.
        cause: Box<kube::Error>,
    },
}

/// Reads ResourceClaims from the API server.
#[derive(Clone)]
pub struct ClaimSource {
    client: kube::Client,
}

impl std::fmt::Debug for ClaimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimSource").finish_non_exhaustive()
    }
}

impl ClaimSource {
    /// Reads through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The claim `namespace/name`.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ClaimError> {
        check_reference(namespace, name)?;
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(claim) => Ok(claim),
            Err(kube::Error::Api(status)) if status.is_not_found() => Err(ClaimError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            Err(source) => Err(ClaimError::Api {
                namespace: namespace.to_string(),
                name: name.to_string(),
                cause: Box::new(source),
            }),
        }
    }

    /// The claim `namespace/name`, refused unless its UID is `uid`.
    pub async fn get_checked(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<ResourceClaim, ClaimError> {
        let claim = self.get(namespace, name).await?;
        check_uid(&claim, namespace, name, uid)?;
        Ok(claim)
    }
}

/// Refuses `claim` unless its UID is `uid`.
pub fn check_uid(
    claim: &ResourceClaim,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), ClaimError> {
    if claim.metadata.uid.as_deref() == Some(uid) {
        return Ok(());
    }
    Err(ClaimError::UidMismatch {
        namespace: namespace.to_string(),
        name: name.to_string(),
        expected: uid.to_string(),
        found: claim.metadata.uid.clone(),
    })
}

/// Kubelet's namespace and name go into a URL path: anything but a DNS
/// label namespace and a DNS subdomain name is refused before it is sent.
fn check_reference(namespace: &str, name: &str) -> Result<(), ClaimError> {
    let fail = |rule| {
        Err(ClaimError::InvalidReference {
            namespace: namespace.to_string(),
            name: name.to_string(),
            rule,
        })
    };
    if !crate::attributes::is_dns_label(namespace) {
        return fail("namespace is not a DNS label");
    }
    if !crate::attributes::is_dns_subdomain(name) {
        return fail("name is not a DNS subdomain");
    }
    Ok(())
}
