//! The chain: elements called in order, each passing the request on to the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;
use tracing::Instrument;

use crate::context::Ctx;
use crate::contract::{ContractError, Key, Needs, Provided};

/// One step of the forwarder's NetworkService chain.
///
/// An element does one thing on `request`, calls `next`, and undoes its own
/// work when `next` fails; on `close` it undoes its work (after or before
/// calling `next`, whichever order makes the undo safe). Per-connection
/// state lives in [`Ctx`], which survives refreshes and is dropped on close.
///
/// Elements write `async fn request`/`async fn close`; the chain boxes the
/// futures once, in one place, to hold elements of different types.
pub trait Element: Send + Sync + 'static {
    /// The records this element reads from the elements before it, handed
    /// to `request` by value. [`Chain::check`] refuses a chain where no
    /// earlier element [`provides`](Element::provides) one of them.
    type Needs: Needs;

    /// A short name for logs and errors.
    fn name(&self) -> &'static str;

    /// The records this element puts in the context before it calls
    /// `next`, for the elements after it.
    fn provides(&self) -> Vec<Key> {
        Vec::new()
    }

    /// Handles a Request.
    fn request(
        &self,
        ctx: &mut Ctx,
        needs: Self::Needs,
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> impl Future<Output = Result<Connection, Status>> + Send;

    /// Handles a Close.
    fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// Checks this element's place: what it needs is in `before`, to which
    /// it then adds what it provides. Elements that hold elements of their
    /// own (sub-chains) check those instead.
    fn check_order(&self, before: &mut Provided) -> Result<(), ContractError> {
        before.require(self.name(), &Self::Needs::keys())?;
        before.add(self.provides());
        Ok(())
    }
}

/// [`Element`] as the chain stores it: its futures boxed, its needs read
/// from the context.
trait Stored: Send + Sync {
    fn name(&self) -> &'static str;

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Connection, Status>>;

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Status>>;

    fn check_order(&self, before: &mut Provided) -> Result<(), ContractError>;
}

impl<E: Element> Stored for E {
    fn name(&self) -> &'static str {
        Element::name(self)
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Connection, Status>> {
        match E::Needs::read(ctx) {
            Some(needs) => {
                let name = Element::name(self);
                Box::pin(
                    async move {
                        let spent = Spent::default();
                        let started = Instant::now();
                        let next = next.timed(&spent);
                        let result = Element::request(self, ctx, needs, request, next).await;
                        spent.element_took(name, "request", started);
                        result
                    }
                    .instrument(element_span(name)),
                )
            }
            // Only a chain nobody checked gets here: the forwarder's is
            // checked before it serves.
            None => {
                let missing: Vec<_> = E::Needs::keys().iter().map(Key::name).collect();
                let e = Status::internal(format!(
                    "chain element {} ran without {missing:?}: its chain was not checked",
                    Element::name(self)
                ));
                Box::pin(std::future::ready(Err(e)))
            }
        }
    }

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Status>> {
        let name = Element::name(self);
        Box::pin(
            async move {
                let spent = Spent::default();
                let started = Instant::now();
                let result = Element::close(self, ctx, connection, next.timed(&spent)).await;
                spent.element_took(name, "close", started);
                result
            }
            .instrument(element_span(name)),
        )
    }

    fn check_order(&self, before: &mut Provided) -> Result<(), ContractError> {
        Element::check_order(self, before)
    }
}

/// The span of one element's work: `chain.<element>` (tracing names spans
/// statically; `otel.name` is the name OpenTelemetry exports).
fn element_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(
        "chain.element",
        otel.name = %format_args!("chain.{name}"),
        element = name
    )
}

/// Time spent in the rest of the chain, which an element's own figure
/// leaves out: every element calls the next one, and a figure that
/// included it would make `limits` as slow as the whole chain.
#[derive(Default)]
struct Spent(AtomicU64);

impl Spent {
    fn add(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    fn element_took(&self, element: &'static str, op: &'static str, started: Instant) {
        let rest = Duration::from_nanos(self.0.load(Ordering::Relaxed));
        let own = started.elapsed().saturating_sub(rest);
        crate::metrics::element_took(element, op, own.as_secs_f64());
    }
}

/// The rest of the chain after the current element.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Stored>],
    /// Where the time the rest takes is added, for the calling element's
    /// own figure.
    spent: Option<&'a Spent>,
}

impl<'a> Next<'a> {
    /// This rest, its time added to `spent`.
    fn timed<'b>(self, spent: &'b Spent) -> Next<'b>
    where
        'a: 'b,
    {
        Next {
            rest: self.rest,
            spent: Some(spent),
        }
    }

    /// `work`, its time added to what the calling element spent waiting.
    fn time<'b, T: Send + 'b>(self, work: BoxFuture<'b, T>) -> BoxFuture<'b, T>
    where
        'a: 'b,
    {
        match self.spent {
            None => work,
            Some(spent) => Box::pin(async move {
                let started = Instant::now();
                let out = work.await;
                spent.add(started.elapsed());
                out
            }),
        }
    }

    /// Passes the request to the next element; the end of the chain
    /// returns the request's connection as it is.
    pub fn request<'b>(
        self,
        ctx: &'b mut Ctx,
        request: NetworkServiceRequest,
    ) -> BoxFuture<'b, Result<Connection, Status>>
    where
        'a: 'b,
    {
        match self.rest.split_first() {
            Some((head, tail)) => self.time(head.request(
                ctx,
                request,
                Next {
                    rest: tail,
                    spent: None,
                },
            )),
            None => Box::pin(std::future::ready(Ok(request
                .connection
                .unwrap_or_default()))),
        }
    }

    /// Undoes the rest of the chain after this element failed on the way
    /// back (the rest had succeeded), and hands back the element's error:
    /// `Err(next.fail_after(ctx, conn, error).await)`.
    pub async fn fail_after(self, ctx: &mut Ctx, connection: Connection, error: Status) -> Status {
        if let Err(ce) = self.close(ctx, connection).await {
            tracing::warn!(error = %ce, cause = %error.message(), "closing the rest of the chain after a failure");
        }
        error
    }

    /// Passes the close to the next element.
    pub fn close<'b>(
        self,
        ctx: &'b mut Ctx,
        connection: Connection,
    ) -> BoxFuture<'b, Result<(), Status>>
    where
        'a: 'b,
    {
        match self.rest.split_first() {
            Some((head, tail)) => self.time(head.close(
                ctx,
                connection,
                Next {
                    rest: tail,
                    spent: None,
                },
            )),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }
}

/// An ordered list of elements.
#[derive(Clone, Default)]
pub struct Chain {
    elements: Vec<Arc<dyn Stored>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.elements.iter().map(|e| e.name()))
            .finish()
    }
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an element.
    pub fn with(mut self, element: impl Element) -> Self {
        self.elements.push(Arc::new(element));
        self
    }

    /// Appends an element shared with someone else (who asks it things).
    pub fn with_arc<E: Element>(mut self, element: Arc<E>) -> Self {
        self.elements.push(element);
        self
    }

    /// The element names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.elements.iter().map(|e| e.name()).collect()
    }

    /// Checks, before the chain serves, that every element comes after
    /// the elements providing what it reads.
    pub fn check(&self) -> Result<(), ContractError> {
        Element::check_order(self, &mut Provided::default())
    }

    /// Runs a Request through every element.
    pub fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
    ) -> BoxFuture<'a, Result<Connection, Status>> {
        Next {
            rest: &self.elements,
            spent: None,
        }
        .request(ctx, request)
    }

    /// Runs a Close through every element.
    pub fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Next {
            rest: &self.elements,
            spent: None,
        }
        .close(ctx, connection)
    }

    /// This chain's elements followed by `next`'s.
    fn then(&self, next: Next<'_>) -> Vec<Arc<dyn Stored>> {
        let mut all = self.elements.clone();
        all.extend(next.rest.iter().cloned());
        all
    }
}

/// A chain used as one element (the per-mechanism sub-chains): its
/// elements run first, then the outer chain's rest.
impl Element for Chain {
    type Needs = ();

    fn name(&self) -> &'static str {
        "chain"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let all = self.then(next);
        // The sub-chain's time is the rest of the element holding it.
        Next {
            rest: &all,
            spent: next.spent,
        }
        .request(ctx, request)
        .await
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let all = self.then(next);
        Next {
            rest: &all,
            spent: next.spent,
        }
        .close(ctx, connection)
        .await
    }

    fn check_order(&self, before: &mut Provided) -> Result<(), ContractError> {
        self.elements.iter().try_for_each(|e| e.check_order(before))
    }
}
