//! One pool name as a kubelet device-plugin resource.

use std::collections::HashMap;
use std::sync::Arc;

use sriov_deviceplugin::{AllocateError, Backend, ContainerAllocateResponse, Device};
use tokio::sync::watch;

use crate::{Pool, PoolError};

/// Prefix of the env var that carries a container's tokens
/// (`NSM_SRIOV_TOKENS_<serviceDomain/capability>=<id>,<id>`), as NSM
/// clients read it.
pub const TOKENS_ENV_PREFIX: &str = "NSM_SRIOV_TOKENS_";

/// The env var name and value for a container's tokens of `name`.
pub fn tokens_env(name: &str, ids: &[String]) -> (String, String) {
    (format!("{TOKENS_ENV_PREFIX}{name}"), ids.join(","))
}

/// A [`Backend`] serving one name of a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolResource {
    pool: Arc<Pool>,
    name: String,
    devices: watch::Receiver<Vec<Device>>,
}

impl PoolResource {
    /// The resource for `name`; `None` when the pool does not serve it.
    pub fn new(pool: Arc<Pool>, name: &str) -> Option<Self> {
        let devices = pool.devices(name)?;
        Some(Self {
            pool,
            name: name.to_string(),
            devices,
        })
    }

    /// The resource name (`serviceDomain/capability`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn to_allocate_error(e: PoolError) -> AllocateError {
    match e {
        PoolError::UnknownToken(id) => AllocateError::UnknownDevice { id },
        PoolError::WrongName { token, .. } => AllocateError::UnknownDevice { id: token },
        PoolError::Exhausted { token, pf, reason } => AllocateError::Unavailable {
            id: token,
            reason: format!("PF {pf}: {reason}"),
        },
        other => AllocateError::Internal {
            id: String::new(),
            message: other.to_string(),
        },
    }
}

impl Backend for PoolResource {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.clone()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let all: Vec<String> = containers.iter().flatten().cloned().collect();
        self.pool
            .allocate(&self.name, &all)
            .map_err(to_allocate_error)?;
        Ok(containers
            .iter()
            .map(|ids| {
                let (k, v) = tokens_env(&self.name, ids);
                ContainerAllocateResponse {
                    envs: HashMap::from([(k, v)]),
                    ..Default::default()
                }
            })
            .collect())
    }

    fn allocated(&self) -> Vec<String> {
        self.pool.allocated(&self.name).unwrap_or_default()
    }

    fn release(&self, ids: &[String]) {
        if let Err(e) = self.pool.release(ids) {
            tracing::warn!(resource = %self.name, error = %e, "releasing tokens failed");
        }
    }
}
