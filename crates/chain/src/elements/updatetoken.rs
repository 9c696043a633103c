//! `updatetoken`: the path's tokens, as the Go SDK's `updatetoken` server
//! sets them (sdk `pkg/networkservice/common/updatetoken`).
//!
//! On Request and Close:
//! - the previous segment gets the token its hop sent beside the call
//!   (`nsm-client-token`, see [`crate::caller`]): the one that hop signed
//!   for *us*, whose audience names us, which `tokens_chained` and
//!   `prev_token_signed` then judge;
//! - our segment gets a fresh token signed with our SVID's key, whose
//!   audience is the caller's SPIFFE ID, and that token's expiry (never
//!   later than either certificate's end).
//!
//! Without a signer (`NSM_INSECURE=true`) our segment keeps the expiry
//! `updatepath` gave it and no token, as before. Nothing to undo.

use std::sync::Arc;
use std::time::SystemTime;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::caller::{Caller, PeerIdentity, SignedToken};
use crate::elements::updatepath::timestamp;
use crate::{Ctx, Element, Next};

/// Signs our segment's tokens (the forwarder's SVID, `sriov-identity`).
pub trait TokenSigner: Send + Sync + 'static {
    /// A token whose audience is `peer` (the hop it is for, when the
    /// transport authenticated one) and its expiry, never later than
    /// either certificate's end; the error says why none can be made.
    fn sign(&self, peer: Option<&PeerIdentity>) -> Result<SignedToken, String>;
}

/// See the module docs.
#[derive(Clone, Default)]
pub struct UpdateToken {
    signer: Option<Arc<dyn TokenSigner>>,
}

impl std::fmt::Debug for UpdateToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateToken")
            .field("signs", &self.signer.is_some())
            .finish()
    }
}

impl UpdateToken {
    /// Tokens signed by `signer`; `None` leaves our segment unsigned.
    pub fn new(signer: Option<Arc<dyn TokenSigner>>) -> Self {
        Self { signer }
    }

    fn update(&self, ctx: &Ctx, conn: &mut Connection) -> Result<(), Status> {
        let caller = ctx.get::<Caller>().cloned().unwrap_or_default();
        let Some(path) = conn.path.as_mut() else {
            return Ok(());
        };
        let ours = usize::try_from(path.index).unwrap_or(usize::MAX);
        if let (Some(prev), Some(sent)) = (
            ours.checked_sub(1)
                .and_then(|i| path.path_segments.get_mut(i)),
            caller.token.as_ref(),
        ) {
            prev.token = sent.token.clone();
            prev.expires = Some(timestamp(sent.expires));
        }
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let signed = signer.sign(caller.peer.as_ref()).map_err(|why| {
            Status::unavailable(format!("updatetoken: cannot sign our token: {why}"))
        })?;
        let seg = path
            .path_segments
            .get_mut(ours)
            .ok_or_else(|| Status::internal("updatetoken: our segment vanished"))?;
        seg.token = signed.token;
        seg.expires = Some(timestamp(clamp(signed.expires)));
        Ok(())
    }
}

/// An expiry in the past still reads as one (a zero timestamp would read
/// as "none").
fn clamp(t: SystemTime) -> SystemTime {
    t.max(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
}

impl Element for UpdateToken {
    type Needs = ();

    fn name(&self) -> &'static str {
        "updatetoken"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        if let Some(conn) = request.connection.as_mut() {
            self.update(ctx, conn)?;
        }
        next.request(ctx, request).await
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        mut connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        self.update(ctx, &mut connection)?;
        next.close(ctx, connection).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sriov_api::nsm::connection::{Path, PathSegment};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Records the audiences it was asked to sign for.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Option<String>>>);

    impl TokenSigner for Recorder {
        fn sign(&self, peer: Option<&PeerIdentity>) -> Result<SignedToken, String> {
            let audience = peer.map(|p| p.spiffe_id.as_str());
            self.0.lock().unwrap().push(audience.map(str::to_string));
            Ok(SignedToken {
                token: format!("signed-for-{}", audience.unwrap_or("nobody")),
                expires: SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            })
        }
    }

    struct Refuses;
    impl TokenSigner for Refuses {
        fn sign(&self, _: Option<&PeerIdentity>) -> Result<SignedToken, String> {
            Err("no SVID".into())
        }
    }

    fn request() -> NetworkServiceRequest {
        let seg = |name: &str| PathSegment {
            name: name.into(),
            id: format!("{name}-id"),
            token: "old".into(),
            ..Default::default()
        };
        NetworkServiceRequest {
            connection: Some(Connection {
                id: "fwd-id".into(),
                path: Some(Path {
                    index: 1,
                    path_segments: vec![seg("nsmgr"), seg("fwd")],
                }),
                ..Default::default()
            }),
            mechanism_preferences: vec![],
        }
    }

    fn caller() -> Caller {
        Caller {
            peer: Some(PeerIdentity {
                spiffe_id: "spiffe://example.org/nsmgr".into(),
                cert_der: Arc::from(&b"cert"[..]),
            }),
            token: Some(SignedToken {
                token: "nsmgr-for-us".into(),
                expires: SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
            }),
        }
    }

    /// The path as the rest of the chain saw it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Option<Connection>>>);
    impl Element for Seen {
        type Needs = ();
        fn name(&self) -> &'static str {
            "seen"
        }
        async fn request(
            &self,
            _: &mut Ctx,
            _: (),
            r: NetworkServiceRequest,
            _: Next<'_>,
        ) -> Result<Connection, Status> {
            let c = r.connection.unwrap_or_default();
            *self.0.lock().unwrap() = Some(c.clone());
            Ok(c)
        }
        async fn close(&self, _: &mut Ctx, c: Connection, _: Next<'_>) -> Result<(), Status> {
            *self.0.lock().unwrap() = Some(c);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_previous_segment_gets_the_callers_token_and_ours_is_signed_for_the_caller() {
        let signer = Arc::new(Recorder::default());
        let seen = Seen::default();
        let chain = crate::Chain::new()
            .with(UpdateToken::new(Some(signer.clone())))
            .with(seen.clone());
        let mut ctx = Ctx::new();
        ctx.insert(caller());
        chain.request(&mut ctx, request()).await.unwrap();
        let c = seen.0.lock().unwrap().take().unwrap();
        let segs = &c.path.unwrap().path_segments;
        assert_eq!(segs[0].token, "nsmgr-for-us");
        assert_eq!(segs[0].expires.as_ref().unwrap().seconds, 1_900_000_000);
        assert_eq!(segs[1].token, "signed-for-spiffe://example.org/nsmgr");
        assert_eq!(segs[1].expires.as_ref().unwrap().seconds, 2_000_000_000);
        assert_eq!(
            *signer.0.lock().unwrap(),
            vec![Some("spiffe://example.org/nsmgr".to_string())]
        );

        chain
            .close(&mut ctx, request().connection.unwrap())
            .await
            .unwrap();
        let c = seen.0.lock().unwrap().take().unwrap();
        assert_eq!(
            c.path.unwrap().path_segments[1].token,
            "signed-for-spiffe://example.org/nsmgr"
        );
    }

    #[tokio::test]
    async fn without_a_signer_the_tokens_are_left_as_they_came() {
        let seen = Seen::default();
        let chain = crate::Chain::new()
            .with(UpdateToken::new(None))
            .with(seen.clone());
        let mut ctx = Ctx::new();
        ctx.insert(Caller::default());
        chain.request(&mut ctx, request()).await.unwrap();
        let c = seen.0.lock().unwrap().take().unwrap();
        let segs = &c.path.unwrap().path_segments;
        assert_eq!(
            (segs[0].token.as_str(), segs[1].token.as_str()),
            ("old", "old")
        );
    }

    #[tokio::test]
    async fn a_signer_that_cannot_sign_stops_the_request_before_the_rest_runs() {
        let seen = Seen::default();
        let chain = crate::Chain::new()
            .with(UpdateToken::new(Some(Arc::new(Refuses))))
            .with(seen.clone());
        let e = chain.request(&mut Ctx::new(), request()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("no SVID"), "{}", e.message());
        assert!(seen.0.lock().unwrap().is_none());
    }
}
