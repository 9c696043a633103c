//! The chain: elements called in order, each passing the request on to the rest.

use std::sync::Arc;

use futures::future::BoxFuture;
use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::context::Ctx;

/// What elements return: a boxed future of a result whose error is the
/// gRPC status the client will see.
pub type ElementFuture<'a, T> = BoxFuture<'a, Result<T, Status>>;

/// One step of the forwarder's NetworkService chain.
///
/// An element does one thing on `request`, calls `next`, and undoes its own
/// work when `next` fails; on `close` it undoes its work (after or before
/// calling `next`, whichever order makes the undo safe). Per-connection
/// state lives in [`Ctx`], which survives refreshes and is dropped on close.
pub trait Element: Send + Sync + 'static {
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;

    /// Handles a Request.
    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection>;

    /// Handles a Close.
    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> ElementFuture<'a, ()>;
}

/// The rest of the chain after the current element.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Element>],
}

impl<'a> Next<'a> {
    /// Passes the request to the next element; the end of the chain
    /// returns the request's connection as it is.
    pub fn request<'b>(
        self,
        ctx: &'b mut Ctx,
        request: NetworkServiceRequest,
    ) -> ElementFuture<'b, Connection>
    where
        'a: 'b,
    {
        match self.rest.split_first() {
            Some((head, tail)) => head.request(ctx, request, Next { rest: tail }),
            None => Box::pin(async move { Ok(request.connection.unwrap_or_default()) }),
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
    pub fn close<'b>(self, ctx: &'b mut Ctx, connection: Connection) -> ElementFuture<'b, ()>
    where
        'a: 'b,
    {
        match self.rest.split_first() {
            Some((head, tail)) => head.close(ctx, connection, Next { rest: tail }),
            None => Box::pin(async { Ok(()) }),
        }
    }
}

/// An ordered list of elements.
#[derive(Clone, Default)]
pub struct Chain {
    elements: Vec<Arc<dyn Element>>,
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

    /// Appends a shared element.
    pub fn with_arc(mut self, element: Arc<dyn Element>) -> Self {
        self.elements.push(element);
        self
    }

    /// The element names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.elements.iter().map(|e| e.name()).collect()
    }

    /// Runs a Request through every element.
    pub fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
    ) -> ElementFuture<'a, Connection> {
        Next {
            rest: &self.elements,
        }
        .request(ctx, request)
    }

    /// Runs a Close through every element.
    pub fn close<'a>(&'a self, ctx: &'a mut Ctx, connection: Connection) -> ElementFuture<'a, ()> {
        Next {
            rest: &self.elements,
        }
        .close(ctx, connection)
    }
}

/// A chain used as one element (the per-mechanism sub-chains): its
/// elements run first, then the outer chain's rest.
impl Element for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection> {
        let mut all = self.elements.clone();
        all.extend(next.rest.iter().cloned());
        Box::pin(async move { Next { rest: &all }.request(ctx, request).await })
    }

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> ElementFuture<'a, ()> {
        let mut all = self.elements.clone();
        all.extend(next.rest.iter().cloned());
        Box::pin(async move { Next { rest: &all }.close(ctx, connection).await })
    }
}
