//! A device plugin with two in-memory VFs, for the Python interop check
//! (`cargo xtask test`, suite grpc-interop): `interop_plugin <device-plugin dir>`.
//! Registers `interop.example.com/vf` with `<dir>/kubelet.sock` and serves
//! until killed or interrupted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sriov_deviceplugin::{
    AllocateError, Backend, ContainerAllocateResponse, Device, DevicePlugin, PluginConfig,
    RegistrationMode,
};
use tokio::sync::watch;

struct TwoVfs {
    devices: watch::Sender<Vec<Device>>,
    allocated: Mutex<HashSet<String>>,
}

impl Backend for TwoVfs {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.subscribe()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let known = self.devices.borrow().clone();
        let mut allocated = self.allocated.lock().unwrap();
        for id in containers.iter().flatten() {
            if !known.iter().any(|d| &d.id == id) {
                return Err(AllocateError::UnknownDevice { id: id.clone() });
            }
            if allocated.contains(id) {
                return Err(AllocateError::Unavailable {
                    id: id.clone(),
                    reason: "already allocated".into(),
                });
            }
        }
        allocated.extend(containers.iter().flatten().cloned());
        Ok(containers
            .iter()
            .map(|ids| ContainerAllocateResponse {
                envs: [("NSM_SRIOV_TOKENS_vf".to_string(), ids.join(","))].into(),
                ..Default::default()
            })
            .collect())
    }

    fn allocated(&self) -> Vec<String> {
        self.allocated.lock().unwrap().iter().cloned().collect()
    }

    fn release(&self, ids: &[String]) {
        let mut allocated = self.allocated.lock().unwrap();
        for id in ids {
            allocated.remove(id);
        }
    }
}

#[tokio::main]
async fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: interop_plugin <dir>"),
    );
    let vf = |id: &str| Device {
        id: id.into(),
        healthy: true,
        numa_node: Some(0),
        group: Some("0000:3b:00.0".into()),
    };
    let backend = Arc::new(TwoVfs {
        devices: watch::channel(vec![vf("0000:3b:02.0"), vf("0000:3b:02.1")]).0,
        allocated: Mutex::new(HashSet::new()),
    });
    let mut cfg = PluginConfig::new("interop.example.com/vf");
    cfg.device_plugin_dir = dir.clone();
    cfg.plugins_registry_dir = dir.join("no-plugins-registry");
    cfg.mode = RegistrationMode::Kubelet;
    cfg.retry_initial = Duration::from_millis(50);
    cfg.retry_max = Duration::from_millis(500);
    DevicePlugin::new(cfg, backend)
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
}
