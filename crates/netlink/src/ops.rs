//! [`NetlinkOps`]: the narrow seam the forwarder's chain elements and the device plugin call,
//! so their unit tests can use [`MockNetlinkOps`] (feature `mock`) or
//! `testing::RecordingOps` instead of the kernel.

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use crate::client::{LinkStatus, RtNetlink};
use crate::error::Result;
use crate::health::LinkEvent;
use crate::plumb::{BackOut, ClientLink, MovedLink};
use crate::types::{IpNetwork, LinkRef};
use crate::vf::{VfConfig, VfRecord, VfState};

/// The netlink operations the forwarder and device plugin need. Arguments are owned and futures
/// `'static`, so the trait is object-safe (`Arc<dyn NetlinkOps>`) and easy to mock.
#[cfg_attr(feature = "testing", mockall::automock)]
pub trait NetlinkOps: Send + Sync {
    /// Moves a link into a client namespace and configures it; rolls back on failure.
    /// See [`RtNetlink::move_into`].
    fn move_into(&self, request: ClientLink) -> BoxFuture<'static, Result<MovedLink>>;

    /// What [`NetlinkOps::move_into`] would record for `request`, read before the move so the
    /// intent can be persisted first. Refuses what `move_into` refuses. See
    /// [`RtNetlink::plan_move`].
    fn plan_move(&self, request: ClientLink) -> BoxFuture<'static, Result<MovedLink>>;

    /// Moves a link as `plan` ([`NetlinkOps::plan_move`] of the same request, persisted by the
    /// caller) says, without opening the namespace or reading the link again.
    /// See [`RtNetlink::move_planned`].
    fn move_planned(
        &self,
        request: ClientLink,
        plan: MovedLink,
    ) -> BoxFuture<'static, Result<MovedLink>>;

    /// Returns a moved link home (or recovers it after its namespace died).
    /// See [`RtNetlink::back_out`].
    fn back_out(&self, record: MovedLink) -> BoxFuture<'static, Result<BackOut>>;

    /// Makes a moved link unusable in the client's namespace without moving it: down, and
    /// `addresses` (`None`: all it has) deleted. See [`RtNetlink::disable`].
    fn disable(
        &self,
        record: MovedLink,
        addresses: Option<Vec<IpNetwork>>,
    ) -> BoxFuture<'static, Result<()>>;

    /// Applies PF-side settings to a VF, returning what to restore. See [`RtNetlink::set_vf`].
    fn set_vf(
        &self,
        pf: LinkRef,
        vf: u32,
        config: VfConfig,
    ) -> BoxFuture<'static, Result<VfRecord>>;

    /// The record [`NetlinkOps::set_vf`] would return (the current values of what `config`
    /// changes), read before the change so it can be persisted first. See
    /// [`RtNetlink::vf_record`].
    fn vf_record(
        &self,
        pf: LinkRef,
        vf: u32,
        config: VfConfig,
    ) -> BoxFuture<'static, Result<VfRecord>>;

    /// Restores a VF's previous settings. See [`RtNetlink::restore_vf`].
    fn restore_vf(&self, record: VfRecord) -> BoxFuture<'static, Result<()>>;

    /// The VFs of a PF. See [`RtNetlink::vfs`].
    fn vfs(&self, pf: LinkRef) -> BoxFuture<'static, Result<Vec<VfState>>>;

    /// A link's status in the home namespace, `None` if it does not exist.
    fn link_status(&self, link: LinkRef) -> BoxFuture<'static, Result<Option<LinkStatus>>>;

    /// Link changes in the home namespace.
    fn link_events(&self) -> Result<BoxStream<'static, LinkEvent>>;
}

impl NetlinkOps for RtNetlink {
    fn move_into(&self, request: ClientLink) -> BoxFuture<'static, Result<MovedLink>> {
        let this = self.clone();
        async move { this.move_into(&request).await }.boxed()
    }

    fn plan_move(&self, request: ClientLink) -> BoxFuture<'static, Result<MovedLink>> {
        let this = self.clone();
        async move { this.plan_move(&request).await }.boxed()
    }

    fn move_planned(
        &self,
        request: ClientLink,
        plan: MovedLink,
    ) -> BoxFuture<'static, Result<MovedLink>> {
        let this = self.clone();
        async move { this.move_planned(&request, &plan).await }.boxed()
    }

    fn back_out(&self, record: MovedLink) -> BoxFuture<'static, Result<BackOut>> {
        let this = self.clone();
        async move { this.back_out(&record).await }.boxed()
    }

    fn disable(
        &self,
        record: MovedLink,
        addresses: Option<Vec<IpNetwork>>,
    ) -> BoxFuture<'static, Result<()>> {
        let this = self.clone();
        async move { this.disable(&record, addresses.as_deref()).await }.boxed()
    }

    fn vf_record(
        &self,
        pf: LinkRef,
        vf: u32,
        config: VfConfig,
    ) -> BoxFuture<'static, Result<VfRecord>> {
        let this = self.clone();
        async move { this.vf_record(&pf, vf, &config).await }.boxed()
    }

    fn set_vf(
        &self,
        pf: LinkRef,
        vf: u32,
        config: VfConfig,
    ) -> BoxFuture<'static, Result<VfRecord>> {
        let this = self.clone();
        async move { this.set_vf(&pf, vf, &config).await }.boxed()
    }

    fn restore_vf(&self, record: VfRecord) -> BoxFuture<'static, Result<()>> {
        let this = self.clone();
        async move { this.restore_vf(&record).await }.boxed()
    }

    fn vfs(&self, pf: LinkRef) -> BoxFuture<'static, Result<Vec<VfState>>> {
        let this = self.clone();
        async move { this.vfs(&pf).await }.boxed()
    }

    fn link_status(&self, link: LinkRef) -> BoxFuture<'static, Result<Option<LinkStatus>>> {
        let this = self.clone();
        async move { this.link(&link).await }.boxed()
    }

    fn link_events(&self) -> Result<BoxStream<'static, LinkEvent>> {
        Ok(RtNetlink::link_events(self)?.boxed())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::netns::NetnsUrl;
    use crate::plumb::BackOut;

    #[tokio::test]
    async fn the_trait_can_be_mocked_for_chain_element_tests() {
        let mut mock = MockNetlinkOps::new();
        mock.expect_back_out()
            .withf(|record| record.client_name == "nsm0")
            .times(1)
            .returning(|_| async { Ok(BackOut::Vanished) }.boxed());
        let ops: std::sync::Arc<dyn NetlinkOps> = std::sync::Arc::new(mock);
        let record = MovedLink {
            netns: NetnsUrl::Inode { dev: 1, ino: 2 },
            netns_id: crate::netns::NetnsId { dev: 1, ino: 2 },
            original: crate::plumb::OriginalLink {
                index: 1,
                name: "vf0".into(),
                address: vec![],
                perm_address: None,
                mtu: 1500,
            },
            client_index: 1,
            client_name: "nsm0".into(),
            client_address: vec![],
            held: None,
        };
        assert_eq!(ops.back_out(record).await.unwrap(), BackOut::Vanished);
    }
}
