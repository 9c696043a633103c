//! Test support, for this crate's tests and for crates built on it: private network namespaces
//! held by a parked thread, veth pairs, and a recording fake of [`NetlinkOps`].
//!
//! A private namespace is made by a dedicated std thread calling `unshare(CLONE_NEWNET)`; the
//! thread parks until the [`PrivateNetns`] is dropped, so the namespace has a `/proc` path
//! (`file:///proc/<pid>/task/<tid>/ns/net`) that disappears with it, as a pod's does. Work runs
//! inside it through [`PrivateNetns::block_on`]: a fresh thread enters it and drives a
//! current-thread tokio runtime, so "home" for an [`RtNetlink`] created there is the private
//! namespace and the host's interfaces are never touched.

use std::future::Future;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};

use crate::client::{LinkStatus, OperState, RtNetlink};
use crate::error::{Error, Result};
use crate::health::LinkEvent;
use crate::netns::{Netns, NetnsUrl};
use crate::ops::NetlinkOps;
use crate::plumb::{BackOut, ClientLink, MovedLink, OriginalLink};
use crate::types::{IpNetwork, LinkRef};
use crate::vf::{VfConfig, VfRecord, VfState};

/// A network namespace of our own, alive until dropped.
#[derive(Debug)]
pub struct PrivateNetns {
    netns: Netns,
    url: NetnsUrl,
    tid: i32,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl PrivateNetns {
    /// Creates a namespace (needs CAP_SYS_ADMIN). Its loopback is down, as in any new netns.
    pub fn new() -> Result<Self> {
        let label = "a new private namespace".to_owned();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let keeper = std::thread::Builder::new()
            .name("private-netns".into())
            .spawn(move || {
                let setup = unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|source| Error::Setns {
                        netns: "a new private namespace".into(),
                        source,
                    })
                    .and_then(|()| Netns::current())
                    .map(|ns| {
                        (
                            ns,
                            nix::unistd::getpid().as_raw(),
                            nix::unistd::gettid().as_raw(),
                        )
                    });
                let ok = setup.is_ok();
                if ready_tx.send(setup).is_ok() && ok {
                    // Parked until the owner drops the sender; then the thread and its
                    // reference to the namespace go away.
                    let _ = stop_rx.recv();
                }
            })
            .map_err(|e| Error::Thread {
                netns: label.clone(),
                reason: e.to_string(),
            })?;
        let (netns, pid, tid) = ready_rx.recv().map_err(|_| Error::Thread {
            netns: label,
            reason: "namespace thread died".into(),
        })??;
        Ok(PrivateNetns {
            netns,
            url: NetnsUrl::File(format!("/proc/{pid}/task/{tid}/ns/net").into()),
            tid,
            stop: Some(stop_tx),
            keeper: Some(keeper),
        })
    }

    /// The open namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// A `file://` URL for it that stops resolving once it is dropped.
    pub fn url(&self) -> &NetnsUrl {
        &self.url
    }

    /// The id of a task inside it, for `ip link set ... netns <pid>`.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Runs an async closure inside the namespace, on a fresh thread with its own current-thread
    /// runtime, and returns its output. Panics inside are resumed on the caller.
    pub fn block_on<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.netns.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f()))
                .map_err(|e| Error::Thread {
                    netns: self.netns.to_string(),
                    reason: format!("tokio runtime: {e}"),
                })
        })?
    }
}

impl Drop for PrivateNetns {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        // A join returns once the keeper's tid is cleared, which the kernel does before the
        // exiting task lets go of its namespaces: for a moment the URL still resolves. Wait
        // that out (bounded), so the URL stops resolving when the drop returns, as `url` says.
        let id = self.netns.id();
        for _ in 0..5000 {
            if Netns::open(&self.url).map_or(true, |n| n.id() != id) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// A private namespace for the test `test`, or `None` after printing `SKIP <test>: <reason>` to
/// stderr when this process may not create one (not root, no CAP_SYS_ADMIN, no netns support).
///
/// # Panics
/// On any other failure: that is a bug, not a reason to skip.
pub fn private_netns_or_skip(test: &str) -> Option<PrivateNetns> {
    match PrivateNetns::new() {
        Ok(ns) => Some(ns),
        Err(Error::Setns { source, .. })
            if matches!(
                source,
                Errno::EPERM | Errno::EACCES | Errno::ENOSYS | Errno::EINVAL
            ) =>
        {
            eprintln!("SKIP {test}: cannot create a network namespace: {source}");
            None
        }
        #[allow(
            clippy::panic,
            reason = "test support: a failed setup must fail the test"
        )]
        Err(e) => panic!("{test}: creating a private network namespace failed: {e}"),
    }
}

/// Creates a veth pair `a`/`b` in the namespace of `handle`.
pub async fn add_veth(handle: &rtnetlink::Handle, a: &str, b: &str) -> Result<()> {
    handle
        .link()
        .add(rtnetlink::LinkVeth::new(a, b).build())
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            op: format!("add veth peer {b}"),
            link: a.to_owned(),
            source,
        })
}

/// One call seen by [`RecordingOps`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// [`NetlinkOps::move_into`].
    MoveInto(ClientLink),
    /// [`NetlinkOps::back_out`].
    BackOut(MovedLink),
    /// [`NetlinkOps::disable`].
    Disable(MovedLink, Option<Vec<IpNetwork>>),
    /// [`NetlinkOps::set_vf`].
    SetVf {
        /// PF.
        pf: LinkRef,
        /// VF number.
        vf: u32,
        /// Settings.
        config: VfConfig,
    },
    /// [`NetlinkOps::restore_vf`].
    RestoreVf(VfRecord),
    /// [`NetlinkOps::vfs`].
    Vfs(LinkRef),
    /// [`NetlinkOps::link_status`].
    LinkStatus(LinkRef),
    /// [`NetlinkOps::link_events`].
    LinkEvents,
}

impl Call {
    fn op(&self) -> &'static str {
        match self {
            Call::MoveInto(_) => "move_into",
            Call::BackOut(_) => "back_out",
            Call::Disable(..) => "disable",
            Call::SetVf { .. } => "set_vf",
            Call::RestoreVf(_) => "restore_vf",
            Call::Vfs(_) => "vfs",
            Call::LinkStatus(_) => "link_status",
            Call::LinkEvents => "link_events",
        }
    }
}

/// An op a test holds, and the permits that let its calls through.
type Gate = (&'static str, Arc<tokio::sync::Semaphore>);

/// A fake [`NetlinkOps`] that records every call and answers as a kernel would on success
/// (moved links get ifindex 100, no VFs, every link exists and is healthy), or fails the ops
/// named with [`RecordingOps::fail`].
#[derive(Clone, Debug, Default)]
pub struct RecordingOps {
    calls: Arc<Mutex<Vec<Call>>>,
    failing: Arc<Mutex<Vec<&'static str>>>,
    held: Arc<Mutex<Vec<Gate>>>,
    stranding: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingOps {
    /// A fake that succeeds at everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call of `op` (a [`NetlinkOps`] method name, e.g. `"move_into"`) fail
    /// with [`Error::LinkNotFound`].
    pub fn fail(&self, op: &'static str) {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op);
    }

    /// Makes every later `disable` wait, once recorded, until the test
    /// adds a permit to the semaphore returned (one per call), so a test
    /// can see what runs while the interface is being taken down.
    pub fn hold_disable(&self) -> Arc<tokio::sync::Semaphore> {
        self.hold("disable")
    }

    /// Makes every later `back_out` wait as [`RecordingOps::hold_disable`] makes `disable` wait.
    pub fn hold_back_out(&self) -> Arc<tokio::sync::Semaphore> {
        self.hold("back_out")
    }

    fn hold(&self, op: &'static str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|(o, _)| *o != op);
        held.push((op, gate.clone()));
        gate
    }

    /// Waits at `op`'s gate, if a test holds it (a closed gate lets every caller through).
    fn gate(&self, op: &'static str) -> impl Future<Output = ()> + use<> {
        let gate = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, g)| g.clone());
        async move {
            if let Some(gate) = gate
                && let Ok(permit) = gate.acquire().await
            {
                permit.forget();
            }
        }
    }

    /// Makes every later move fail as one whose rollback failed too: the link stays in the
    /// client, and the error ([`Error::RollbackFailed`]) carries its record.
    pub fn strand_moves(&self) {
        self.stranding
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The failure [`RecordingOps::strand_moves`] asks for, for a move that would record `moved`.
    fn stranded(&self, moved: MovedLink) -> Result<MovedLink> {
        if !self.stranding.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(moved);
        }
        let refused = |what: &str| {
            Box::new(Error::LinkNotFound {
                link: moved.client_name.clone(),
                netns: format!("RecordingOps (stranding moves: {what})"),
            })
        };
        Err(Error::RollbackFailed {
            op: "move into namespace",
            link: moved.original.name.clone(),
            cause: refused("the move"),
            rollback: refused("its rollback"),
            record: Box::new(moved),
        })
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, call: Call) -> Result<()> {
        let op = call.op();
        let link = format!("{call:?}");
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
        if self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&op)
        {
            return Err(Error::LinkNotFound {
                link,
                netns: "RecordingOps (told to fail)".into(),
            });
        }
        Ok(())
    }
}

/// What a move of `request` records, in this fake's numbers.
fn planned(request: ClientLink) -> MovedLink {
    let name = request.link.to_string();
    MovedLink {
        netns_id: crate::netns::NetnsId { dev: 0, ino: 0 },
        netns: request.netns,
        original: OriginalLink {
            index: 1,
            name: name.clone(),
            address: Vec::new(),
            perm_address: None,
            mtu: 1500,
        },
        client_index: 1,
        client_name: request.name.map(|n| n.to_string()).unwrap_or(name),
        client_address: request.mac.map(|m| m.octets().to_vec()).unwrap_or_default(),
        held: request.opened.clone(),
    }
}

impl NetlinkOps for RecordingOps {
    fn move_into(&self, request: ClientLink) -> BoxFuture<'static, Result<MovedLink>> {
        let result = self
            .record(Call::MoveInto(request.clone()))
            .map(|()| MovedLink {
                client_index: 100,
                ..planned(request)
            })
            .and_then(|m| self.stranded(m));
        async move { result }.boxed()
    }

    fn move_planned(
        &self,
        request: ClientLink,
        plan: MovedLink,
    ) -> BoxFuture<'static, Result<MovedLink>> {
        // Recorded as the move it is, so tests that fail or count "move_into" see it.
        let result = self
            .record(Call::MoveInto(request.clone()))
            .map(|()| MovedLink {
                client_index: 100,
                held: request.opened.clone(),
                ..plan
            })
            .and_then(|m| self.stranded(m));
        async move { result }.boxed()
    }

    fn plan_move(&self, request: ClientLink) -> BoxFuture<'static, Result<MovedLink>> {
        // A read: not recorded as a call, and it fails only where the move would.
        let planned = planned(request);
        async move { Ok(planned) }.boxed()
    }

    fn vf_record(
        &self,
        pf: LinkRef,
        vf: u32,
        config: VfConfig,
    ) -> BoxFuture<'static, Result<VfRecord>> {
        // A read: not recorded as a call.
        let record = VfRecord {
            pf_index: 1,
            pf_name: pf.to_string(),
            vf,
            previous: VfState::default().previous_of(&config),
        };
        async move { Ok(record) }.boxed()
    }

    fn back_out(&self, record: MovedLink) -> BoxFuture<'static, Result<BackOut>> {
        let result = self
            .record(Call::BackOut(record))
            .map(|()| BackOut::Returned { index: 1 });
        let gate = self.gate("back_out");
        async move {
            gate.await;
            result
        }
        .boxed()
    }

    fn disable(
        &self,
        record: MovedLink,
        addresses: Option<Vec<IpNetwork>>,
    ) -> BoxFuture<'static, Result<()>> {
        let result = self.record(Call::Disable(record, addresses));
        let gate = self.gate("disable");
        async move {
            gate.await;
            result
        }
        .boxed()
    }

    fn set_vf(
        &self,
        pf: LinkRef,
        vf: u32,
        config: VfConfig,
    ) -> BoxFuture<'static, Result<VfRecord>> {
        let result = self
            .record(Call::SetVf {
                pf: pf.clone(),
                vf,
                config: config.clone(),
            })
            .map(|()| VfRecord {
                pf_index: 1,
                pf_name: pf.to_string(),
                vf,
                previous: VfState::default().previous_of(&config),
            });
        async move { result }.boxed()
    }

    fn restore_vf(&self, record: VfRecord) -> BoxFuture<'static, Result<()>> {
        let result = self.record(Call::RestoreVf(record));
        async move { result }.boxed()
    }

    fn vfs(&self, pf: LinkRef) -> BoxFuture<'static, Result<Vec<VfState>>> {
        let result = self.record(Call::Vfs(pf)).map(|()| Vec::new());
        async move { result }.boxed()
    }

    fn link_status(&self, link: LinkRef) -> BoxFuture<'static, Result<Option<LinkStatus>>> {
        let result = self.record(Call::LinkStatus(link.clone())).map(|()| {
            Some(LinkStatus {
                index: match link {
                    LinkRef::Index(i) => i,
                    LinkRef::Name(_) => 1,
                },
                name: link.to_string(),
                address: Vec::new(),
                perm_address: None,
                mtu: 1500,
                up: true,
                carrier: Some(true),
                oper_state: OperState::Up,
            })
        });
        async move { result }.boxed()
    }

    fn link_events(&self) -> Result<BoxStream<'static, LinkEvent>> {
        self.record(Call::LinkEvents)?;
        Ok(Box::pin(futures::stream::pending()))
    }
}

/// Runs a test body in a fresh private namespace with an [`RtNetlink`] whose home is that
/// namespace; prints `SKIP` and returns `None` where namespaces cannot be created.
pub fn in_private_netns<F, Fut, T>(test: &str, body: F) -> Option<T>
where
    F: FnOnce(RtNetlink) -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    let home = private_netns_or_skip(test)?;
    let result = home.block_on(|| async move {
        match RtNetlink::new() {
            Ok(nl) => Ok(body(nl).await),
            Err(e) => Err(e),
        }
    });
    match result {
        Ok(Ok(value)) => Some(value),
        #[allow(
            clippy::panic,
            reason = "test support: a failed setup must fail the test"
        )]
        Ok(Err(e)) | Err(e) => panic!("{test}: netlink setup in the private namespace failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn recording_ops_records_calls_and_fails_on_demand() {
        let fake = RecordingOps::new();
        let ops: &dyn NetlinkOps = &fake;
        let url = NetnsUrl::Inode { dev: 1, ino: 2 };
        let moved = ops
            .move_into(
                ClientLink::new("vf0", url.clone()).name(crate::IfName::new("nsm0").unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(moved.client_name, "nsm0");
        fake.fail("back_out");
        assert!(ops.back_out(moved.clone()).await.is_err());
        assert_eq!(
            fake.calls(),
            [
                Call::MoveInto(
                    ClientLink::new("vf0", url).name(crate::IfName::new("nsm0").unwrap())
                ),
                Call::BackOut(moved),
            ]
        );
    }
}
