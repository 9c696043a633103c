//! One fixture for the chain tests: a fake node (X710 fixture), a pool, a
//! cgroup v1 tree, /dev/vfio stand-ins, in-memory registry and next hop,
//! and a netlink implementation chosen by the test.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sriov_api::nsm::connection::{Connection, Mechanism, Path as NsmPath, PathSegment};
use sriov_api::nsm::connectioncontext::{ConnectionContext, IpContext, Route};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::registry::NetworkServiceEndpoint;
use sriov_chain::contract::Needs;
use sriov_chain::elements::bindvf::BindVf;
use sriov_chain::elements::monitor::Monitor;
use sriov_chain::elements::vfio::Vfio;
use sriov_chain::forwarder::{Deps, chain};
use sriov_chain::params;
use sriov_chain::returns::Returns;
use sriov_chain::{Chain, Ctx, Element, EndpointFinder, EndpointQuery, Next, NextHop};
use sriov_netlink::NetlinkOps;
use sriov_netlink::testing::{Call, RecordingOps};
use sriov_pci::{PciAddress, Sysfs};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_token_pool::{DriverKind, FileStore, PfEntry, Pool, TokenState, system_clock};
use sriov_vfio::{CgroupDevices, DeviceNodes, DeviceNumber, RuleWriter, VfioDir};
use tonic::Status;

pub const NAME: &str = "worker.domain/10G";
pub const PF: &str = "0000:3b:00.0";
pub const CGROUP: &str = "kubepods/pod1/ctr1";

/// A registry that knows a fixed list of endpoints.
#[derive(Debug, Default)]
pub struct FakeRegistry {
    pub endpoints: Vec<NetworkServiceEndpoint>,
}

impl EndpointFinder for FakeRegistry {
    fn find(
        &self,
        q: EndpointQuery,
    ) -> BoxFuture<'static, Result<Vec<NetworkServiceEndpoint>, Status>> {
        let found: Vec<_> = self
            .endpoints
            .iter()
            .filter(|e| e.network_service_names.contains(&q.network_service))
            .filter(|e| q.endpoint_name.as_ref().is_none_or(|n| *n == e.name))
            .cloned()
            .collect();
        async move { Ok(found) }.boxed()
    }
}

/// A next hop that records what it is asked, fills in an IP context, and
/// fails requests to endpoints named in `failing`.
#[derive(Debug, Default)]
pub struct FakeNextHop {
    pub requests: Mutex<Vec<NetworkServiceRequest>>,
    pub closes: Mutex<Vec<Connection>>,
    pub failing: Mutex<Vec<String>>,
    pub context: Mutex<Option<ConnectionContext>>,
    /// How long each Request and Close takes.
    pub delay: Mutex<std::time::Duration>,
}

impl NextHop for FakeNextHop {
    fn request(&self, r: NetworkServiceRequest) -> BoxFuture<'static, Result<Connection, Status>> {
        self.requests.lock().unwrap().push(r.clone());
        let mut conn = r.connection.unwrap_or_default();
        let fail = self
            .failing
            .lock()
            .unwrap()
            .contains(&conn.network_service_endpoint_name);
        if conn.context.is_none() {
            conn.context = self.context.lock().unwrap().clone();
        }
        conn.mechanism = r.mechanism_preferences.first().cloned();
        let delay = *self.delay.lock().unwrap();
        async move {
            tokio::time::sleep(delay).await;
            if fail {
                Err(Status::unavailable("next hop down"))
            } else {
                Ok(conn)
            }
        }
        .boxed()
    }

    fn close(&self, c: Connection) -> BoxFuture<'static, Result<(), Status>> {
        self.closes.lock().unwrap().push(c);
        let delay = *self.delay.lock().unwrap();
        async move {
            tokio::time::sleep(delay).await;
            Ok(())
        }
        .boxed()
    }
}

/// /dev/vfio stand-ins: every node is 10:196 for the container and 243:<group>.
#[derive(Debug)]
pub struct FakeNodes;

impl DeviceNodes for FakeNodes {
    fn device_number(&self, path: &Path) -> sriov_vfio::Result<DeviceNumber> {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "vfio" {
            return Ok(DeviceNumber::new(10, 196));
        }
        Ok(DeviceNumber::new(243, name.parse().unwrap_or(999)))
    }
}

/// Records the rules written to devices.allow / devices.deny.
#[derive(Debug, Default)]
pub struct Rules(pub Mutex<Vec<(String, String)>>);

impl RuleWriter for Rules {
    fn write_rule(&self, file: &Path, rule: &str) -> std::io::Result<()> {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        self.0.lock().unwrap().push((name, rule.to_string()));
        Ok(())
    }
}

/// The node and peers the forwarder works with, without a chain: a fake
/// sysfs with a pool over its PF, a cgroup v1 tree whose rule writes are
/// recorded, /dev/vfio stand-ins, a registry and a next hop. One element's
/// tests compose it with the element alone; [`Harness`] with the whole
/// forwarder chain.
/// The rest of the chain, faked: it records each Request that reaches it
/// with the records `N` it was handed (which proves the elements before it
/// provided them) and whether it was a refresh, records each Close, and
/// fails Requests while told to.
pub struct Probe<N = ()> {
    seen: Arc<Seen<N>>,
}

struct Seen<N> {
    requests: Mutex<Vec<(NetworkServiceRequest, N, bool)>>,
    closes: Mutex<Vec<Connection>>,
    fail: AtomicBool,
}

impl<N> Clone for Probe<N> {
    fn clone(&self) -> Self {
        Self {
            seen: self.seen.clone(),
        }
    }
}

impl<N: Needs + Clone> Probe<N> {
    pub fn new() -> Self {
        Self {
            seen: Arc::new(Seen {
                requests: Mutex::new(Vec::new()),
                closes: Mutex::new(Vec::new()),
                fail: AtomicBool::new(false),
            }),
        }
    }

    /// From now on Requests fail (`true`) or succeed.
    pub fn fail(&self, fail: bool) {
        self.seen.fail.store(fail, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.lock().unwrap().len()
    }

    /// The last Request and the records it came with.
    pub fn last(&self) -> (NetworkServiceRequest, N) {
        let (r, n, _) = self.seen.requests.lock().unwrap().last().cloned().unwrap();
        (r, n)
    }

    /// Whether each Request was a refresh, in order.
    pub fn refreshes(&self) -> Vec<bool> {
        self.seen
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.2)
            .collect()
    }

    pub fn closes(&self) -> Vec<Connection> {
        self.seen.closes.lock().unwrap().clone()
    }
}

impl<N: Needs + Clone + Sync> Element for Probe<N> {
    type Needs = N;

    fn name(&self) -> &'static str {
        "probe"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        needs: N,
        request: NetworkServiceRequest,
        _: Next<'_>,
    ) -> Result<Connection, Status> {
        self.seen
            .requests
            .lock()
            .unwrap()
            .push((request.clone(), needs, ctx.is_refresh()));
        if self.seen.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("probe: the rest of the chain failed"));
        }
        Ok(request.connection.unwrap_or_default())
    }

    async fn close(&self, _: &mut Ctx, connection: Connection, _: Next<'_>) -> Result<(), Status> {
        self.seen.closes.lock().unwrap().push(connection);
        Ok(())
    }
}

pub struct Node {
    pub rules: Arc<Rules>,
    pub fake: FakeSysfs,
    pub pool: Arc<Pool>,
    pub next_hop: Arc<FakeNextHop>,
    pub registry: Arc<FakeRegistry>,
    pub cgroups: Arc<CgroupDevices>,
    pub vfio_dir: VfioDir,
    pub cgroup_root: tempfile::TempDir,
    _state: tempfile::TempDir,
    _vfio: tempfile::TempDir,
}

pub struct Options {
    pub lifetime: Duration,
    pub endpoints: Vec<&'static str>,
    pub cgroup_v2: bool,
    /// VFIO access only at Allocate (what the forwarder does on cgroup v2).
    pub vfio_at_allocate: bool,
    /// `inode://` namespaces not sent by fd are looked for in /proc (as
    /// before fd passing; most tests name namespaces that way).
    pub netns_proc_scan: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(600),
            endpoints: vec!["nse-1"],
            cgroup_v2: false,
            vfio_at_allocate: false,
            netns_proc_scan: true,
        }
    }
}

impl Node {
    pub fn new() -> Self {
        Self::with(&Options::default())
    }

    pub fn with(o: &Options) -> Self {
        Self::build(
            fixtures::x710_2port(FakeSysfs::builder()).build().unwrap(),
            tempfile::tempdir().unwrap(),
            None,
            o,
        )
    }

    fn build(
        fake: FakeSysfs,
        state: tempfile::TempDir,
        cgroups: Option<tempfile::TempDir>,
        o: &Options,
    ) -> Self {
        let sysfs = fake.sysfs();
        let pf: PciAddress = PF.parse().unwrap();
        let (pool, _) = Pool::open(
            vec![PfEntry {
                pf: sysfs.physical_function(pf).unwrap(),
                names: vec![NAME.into()],
                vf_kernel_driver: "iavf".into(),
            }],
            FileStore::in_dir(state.path()).unwrap(),
            &sysfs,
            system_clock(),
        )
        .unwrap();
        let pool = if o.vfio_at_allocate {
            pool.with_vfio_only_at_allocate("this node runs cgroup v2")
        } else {
            pool
        };
        let fresh = cgroups.is_none();
        let cgroup_root = cgroups.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let ctr = cgroup_root.path().join(CGROUP);
        if fresh {
            std::fs::create_dir_all(&ctr).unwrap();
            std::fs::write(ctr.join("devices.allow"), "").unwrap();
            std::fs::write(ctr.join("devices.deny"), "").unwrap();
        }
        if o.cgroup_v2 {
            std::fs::write(
                cgroup_root.path().join("cgroup.controllers"),
                "cpu io memory\n",
            )
            .unwrap();
        }
        let vfio = tempfile::tempdir().unwrap();
        let registry = FakeRegistry {
            endpoints: o
                .endpoints
                .iter()
                .map(|n| NetworkServiceEndpoint {
                    name: n.to_string(),
                    network_service_names: vec!["sriov-ns".into()],
                    url: format!("unix:///{n}.sock"),
                    ..Default::default()
                })
                .collect(),
        };
        let rules = Arc::new(Rules::default());
        Self {
            cgroups: Arc::new(
                CgroupDevices::with_writer(cgroup_root.path(), rules.clone()).unwrap(),
            ),
            vfio_dir: VfioDir::with_device_nodes(vfio.path(), Arc::new(FakeNodes)),
            rules,
            fake,
            pool: Arc::new(pool),
            next_hop: Arc::new(FakeNextHop::default()),
            registry: Arc::new(registry),
            cgroup_root,
            _state: state,
            _vfio: vfio,
        }
    }

    /// The `bindvf` element for `kind` over this node's pool.
    pub fn bindvf(&self, kind: DriverKind, lifetime: Duration) -> Arc<BindVf> {
        Arc::new(BindVf::new(self.pool.clone(), self.sysfs(), kind, lifetime))
    }

    /// The `vfio` element over this node's /dev/vfio and cgroups.
    pub fn vfio(&self) -> Vfio {
        Vfio::new(
            self.sysfs(),
            self.vfio_dir.clone(),
            Ok(self.cgroups.clone()),
        )
    }

    pub fn sysfs(&self) -> Sysfs {
        self.fake.sysfs()
    }

    /// Allocates `n` tokens as kubelet would and returns them.
    pub fn allocate(&self, n: usize) -> Vec<String> {
        let ids: Vec<String> = self
            .pool
            .tokens()
            .unwrap()
            .into_iter()
            .filter(|t| t.name == NAME)
            .map(|t| t.id)
            .take(n)
            .collect();
        self.pool.allocate(NAME, &ids).unwrap();
        ids
    }

    /// Allocates `n` tokens through the device-plugin resource that binds
    /// each to a VF on vfio-pci, as on a cgroup v2 node; returns the tokens
    /// and kubelet's answer.
    pub fn allocate_bound(
        &self,
        n: usize,
    ) -> (
        Vec<String>,
        Vec<sriov_deviceplugin::ContainerAllocateResponse>,
    ) {
        use sriov_deviceplugin::Backend;
        let ids: Vec<String> = self
            .pool
            .tokens()
            .unwrap()
            .into_iter()
            .filter(|t| t.name == NAME)
            .map(|t| t.id)
            .take(n)
            .collect();
        let r = sriov_token_pool::PoolResource::new(self.pool.clone(), NAME)
            .unwrap()
            .with_vfio_at_allocate(sriov_token_pool::VfioAtAllocate {
                sysfs: self.sysfs(),
                vfio: self.vfio_dir.clone(),
            });
        let resp = r.allocate(std::slice::from_ref(&ids)).unwrap();
        (ids, resp)
    }

    pub fn in_use(&self) -> usize {
        self.pool
            .tokens()
            .unwrap()
            .iter()
            .filter(|t| matches!(t.state, TokenState::InUse(_)))
            .count()
    }

    /// Rules written, as `devices.allow: c 10:196 rw`.
    pub fn rules(&self) -> Vec<String> {
        self.rules
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(f, r)| format!("{f}: {r}"))
            .collect()
    }
}

pub struct Harness {
    node: Node,
    pub chain: Arc<Chain>,
    pub monitor: Monitor,
    /// What Closes left for after their answer.
    pub returns: Returns,
}

impl std::ops::Deref for Harness {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Harness {
    pub fn new(netlink: Arc<dyn NetlinkOps>) -> Self {
        Self::with(netlink, Options::default())
    }

    pub fn with(netlink: Arc<dyn NetlinkOps>, o: Options) -> Self {
        Self::on(
            fixtures::x710_2port(FakeSysfs::builder()).build().unwrap(),
            netlink,
            o,
        )
    }

    pub fn on(fake: FakeSysfs, netlink: Arc<dyn NetlinkOps>, o: Options) -> Self {
        Self::build(
            Node::build(fake, tempfile::tempdir().unwrap(), None, &o),
            netlink,
            o,
        )
    }

    /// kill -9 and start again: a new chain and pool on the same sysfs,
    /// state directory and cgroup tree (nothing in memory survives).
    pub fn restart(self, netlink: Arc<dyn NetlinkOps>) -> Self {
        self.restart_with(netlink, Options::default())
    }

    /// [`Harness::restart`] with options of its own.
    pub fn restart_with(self, netlink: Arc<dyn NetlinkOps>, o: Options) -> Self {
        let Node {
            fake,
            _state,
            cgroup_root,
            ..
        } = self.node;
        let node = Node::build(fake, _state, Some(cgroup_root), &o);
        Self::build(node, netlink, o)
    }

    fn build(node: Node, netlink: Arc<dyn NetlinkOps>, o: Options) -> Self {
        let monitor = Monitor::new();
        let returns = Returns::default();
        let chain = chain(Deps {
            name: "forwarder-1".into(),
            max_token_lifetime: o.lifetime,
            signer: None,
            authorization: None,
            pool: node.pool.clone(),
            sysfs: node.sysfs(),
            netlink,
            vfio_dir: node.vfio_dir.clone(),
            cgroups: Ok(node.cgroups.clone()),
            finder: node.registry.clone(),
            next_hop: node.next_hop.clone(),
            next_hop_timeout: sriov_chain::elements::connect::DEFAULT_NEXT_HOP_TIMEOUT,
            monitor: monitor.clone(),
            netns_proc_scan: o.netns_proc_scan,
            returns: returns.clone(),
        })
        .unwrap();
        Self {
            node,
            chain,
            monitor,
            returns,
        }
    }

    pub async fn request(&self, r: NetworkServiceRequest) -> Result<Connection, Status> {
        self.chain.request(&mut Ctx::new(), r).await
    }

    /// A Close, and what it left for after its answer finished.
    pub async fn close(&self, c: Connection) -> Result<(), Status> {
        let closed = self.close_answered(c).await;
        self.returns.settled().await;
        closed
    }

    /// A Close, as soon as it answers.
    pub async fn close_answered(&self, c: Connection) -> Result<(), Status> {
        self.chain.close(&mut Ctx::new(), c).await
    }

    /// A Close as a connection whose fd table is `fds` makes it.
    pub async fn close_with_fds(
        &self,
        fds: &sriov_grpcfd::FdTable,
        c: Connection,
    ) -> Result<(), Status> {
        let mut ctx = Ctx::new();
        ctx.insert(sriov_chain::records::CallFds(fds.clone()));
        let closed = self.chain.close(&mut ctx, c).await;
        self.returns.settled().await;
        closed
    }

    /// A Request as a connection whose fd table is `fds` makes it.
    pub async fn request_with_fds(
        &self,
        fds: &sriov_grpcfd::FdTable,
        r: NetworkServiceRequest,
    ) -> Result<Connection, Status> {
        let mut ctx = Ctx::new();
        ctx.insert(sriov_chain::records::CallFds(fds.clone()));
        self.chain.request(&mut ctx, r).await
    }
}

/// A client's request as NSM sends it: a path with the client and the
/// NSM manager before us, and one mechanism preference. The connection id
/// is the manager's segment id, as a manager's updatepath leaves it.
pub fn request(id: &str, mechanism: &str, params: &[(&str, &str)]) -> NetworkServiceRequest {
    NetworkServiceRequest {
        connection: Some(Connection {
            id: format!("{id}-mgr"),
            network_service: "sriov-ns".into(),
            path: Some(NsmPath {
                index: 1,
                path_segments: vec![
                    PathSegment {
                        name: "client".into(),
                        id: id.into(),
                        ..Default::default()
                    },
                    PathSegment {
                        name: "nsmgr".into(),
                        id: format!("{id}-mgr"),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        }),
        mechanism_preferences: vec![Mechanism {
            cls: params::CLS_LOCAL.into(),
            r#type: mechanism.into(),
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }],
    }
}

pub fn ip_context() -> ConnectionContext {
    ConnectionContext {
        ip_context: Some(IpContext {
            src_ip_addrs: vec!["172.16.1.2/30".into()],
            dst_ip_addrs: vec!["172.16.1.1/30".into()],
            src_routes: vec![
                Route {
                    prefix: "10.60.0.0/16".into(),
                    next_hop: "172.16.1.1".into(),
                },
                Route {
                    prefix: "172.16.1.0/30".into(),
                    next_hop: String::new(),
                },
            ],
            ..Default::default()
        }),
        mtu: 1450,
        ..Default::default()
    }
}

/// How many of the calls `ops` recorded match `which`.
pub fn count(ops: &RecordingOps, which: fn(&Call) -> bool) -> usize {
    ops.calls().iter().filter(|c| which(c)).count()
}

/// A KERNEL Request's parameters: `token`, a namespace by inode, the interface `nsm-1`.
pub fn kernel_params(token: &str) -> Vec<(&'static str, String)> {
    vec![
        (params::TOKEN_ID, token.to_string()),
        (params::INODE_URL, "inode://4/4026532999".to_string()),
        (params::NAME, "nsm-1".to_string()),
    ]
}

/// [`request`] with owned parameter values.
pub fn req(id: &str, mech: &str, p: &[(&'static str, String)]) -> NetworkServiceRequest {
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(id, mech, &p)
}

/// A harness whose netlink is `ops`, with one token allocated and the KERNEL connection `c1`
/// made with it.
pub async fn kernel_connection(ops: &RecordingOps) -> (Harness, String, Connection) {
    let h = Harness::new(Arc::new(ops.clone()));
    let token = h.allocate(1).remove(0);
    let conn = h
        .request(req("c1", params::MECH_KERNEL, &kernel_params(&token)))
        .await
        .unwrap();
    (h, token, conn)
}
