//! Closes that answer before the host is put back.
//!
//! Moving a VF netdev home from the client's namespace costs the kernel
//! about as much as moving it there (an RCU grace period or two). A Close
//! need not wait for it: once the client's interface is unusable where it is
//! (`inject` takes it down and deletes its addresses), the answer goes out
//! and the rest of the undo, the move home, the driver and the VF's return
//! to the pool, runs here in the background, in the order the elements
//! queued it ([`Deferred`]). (When netlink requests have a thread of their
//! own, `inject` starts the move home at once and queues the wait for it.)
//!
//! Nothing is handed out early: the VF stays in use in the pool until the
//! last step frees it. The connection's record says the Close began
//! (`established` cleared before the answer), so a process killed before the
//! background work finished rolls it back at its next start
//! ([`crate::reclaim::Reclaim::unfinished`]). A step that fails stops the
//! ones after it: the VF then stays recorded in use, and the sweep undoes it
//! from the record when its lease expires, rather than free a VF still in
//! someone's namespace.
//!
//! Callers that would act on the same VF wait for its return first:
//! `begin` before a Request naming the token of a returning connection
//! (a pod that closes and asks again gets the same VF back, not "token in
//! use"), `reclaim` before undoing a connection from its record (a retried
//! Close, the sweep), and the daemon's shutdown ([`Returns::settled`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tonic::Status;

/// One step of a Close left to run after the answer.
pub type Step = BoxFuture<'static, Result<(), Status>>;

/// The steps a Close's elements leave for after the answer, innermost
/// element first. `begin` puts an empty one in the context of a real Close
/// only: an element that finds none (a later element's failure undoing a
/// Request, a test calling the chain directly) undoes synchronously.
/// Clones share the queue (an element may queue while the elements after
/// it close, and those need the context).
#[derive(Default, Clone)]
pub struct Deferred(Arc<Mutex<Vec<Step>>>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

impl Deferred {
    /// Queues `step` after those queued before it.
    pub fn push(&self, step: Step) {
        if let Ok(mut steps) = self.0.lock() {
            steps.push(step);
        }
    }

    /// Whether anything was queued.
    pub fn is_empty(&self) -> bool {
        self.0.lock().map(|s| s.is_empty()).unwrap_or(true)
    }

    fn take(self) -> Vec<Step> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

#[derive(Clone)]
struct Entry {
    token: Option<String>,
    done: watch::Receiver<bool>,
}

struct Inner {
    by_connection: Mutex<HashMap<String, Entry>>,
    /// How many run.
    pending: watch::Sender<usize>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            by_connection: Mutex::default(),
            pending: watch::Sender::new(0),
        }
    }
}

/// Ends a background undo's entry however its task ends, a step's panic
/// included, so no waiter waits forever.
struct Finish {
    returns: Returns,
    connection: String,
    done: watch::Sender<bool>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let inner = &self.returns.0;
        if let Ok(mut map) = inner.by_connection.lock()
            && map
                .get(&self.connection)
                .is_some_and(|e| e.done.same_channel(&self.done.subscribe()))
        {
            map.remove(&self.connection);
        }
        self.done.send_replace(true);
        inner.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The connections whose Close answered and whose undo still runs. Cheap
/// to clone; one per chain, shared with `reclaim` and the daemon.
#[derive(Clone, Default)]
pub struct Returns(Arc<Inner>);

impl std::fmt::Debug for Returns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returns")
            .field("pending", &self.pending())
            .finish()
    }
}

impl Returns {
    /// Runs `deferred`'s steps for `connection` (which used `token`) in the
    /// background, in order, stopping at the first that fails.
    pub fn start(&self, connection: &str, token: Option<String>, deferred: Deferred) {
        let steps = deferred.take();
        if steps.is_empty() {
            return;
        }
        let (tx, done) = watch::channel(false);
        if let Ok(mut map) = self.0.by_connection.lock() {
            map.insert(connection.to_string(), Entry { token, done });
        }
        self.0.pending.send_modify(|n| *n += 1);
        let finish = Finish {
            returns: self.clone(),
            connection: connection.to_string(),
            done: tx,
        };
        tokio::spawn(async move {
            // After the answer: spawned from the Close's own task, this one would
            // otherwise run first on its worker, and the move's netlink send holds
            // the thread in the kernel for the whole move.
            tokio::task::yield_now().await;
            for (i, step) in steps.into_iter().enumerate() {
                if let Err(e) = step.await {
                    tracing::warn!(
                        connection = %finish.connection,
                        step = i,
                        error = %e,
                        "undoing a closed connection in the background; the VF stays in use \
                         until the sweep undoes it from its record"
                    );
                    break;
                }
            }
            drop(finish);
        });
    }

    /// How many closed connections are still being undone.
    pub fn pending(&self) -> usize {
        *self.0.pending.borrow()
    }

    /// Waits until `connection`'s background undo, if one runs, finished.
    pub async fn wait_connection(&self, connection: &str) {
        let entry = self
            .0
            .by_connection
            .lock()
            .ok()
            .and_then(|m| m.get(connection).cloned());
        if let Some(e) = entry {
            wait(e.done).await;
        }
    }

    /// Waits until every returning connection that used one of `tokens`
    /// finished.
    pub async fn wait_tokens(&self, tokens: &[String]) {
        let entries: Vec<Entry> = self
            .0
            .by_connection
            .lock()
            .map(|m| {
                m.values()
                    .filter(|e| e.token.as_ref().is_some_and(|t| tokens.contains(t)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for e in entries {
            wait(e.done).await;
        }
    }

    /// Waits until no background undo runs.
    pub async fn settled(&self) {
        // The sender lives as long as `self`: the wait ends only at zero.
        let _ = self.0.pending.subscribe().wait_for(|n| *n == 0).await;
    }
}

async fn wait(mut done: watch::Receiver<bool>) {
    // A dropped sender (the task panicked or the runtime stopped) ends the wait too.
    let _ = done.wait_for(|d| *d).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn step(order: Arc<Mutex<Vec<&'static str>>>, name: &'static str, ok: bool) -> Step {
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            order.lock().unwrap().push(name);
            if ok {
                Ok(())
            } else {
                Err(Status::internal(name))
            }
        }
        .boxed()
    }

    #[tokio::test]
    async fn steps_run_in_order_after_start_returns_and_waiters_see_the_end() {
        let returns = Returns::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let d = Deferred::default();
        d.push(step(order.clone(), "move home", true));
        d.push(step(order.clone(), "free the VF", true));
        returns.start("c1", Some("tok".into()), d);
        assert!(order.lock().unwrap().is_empty(), "start does not wait");
        assert_eq!(returns.pending(), 1);
        returns.wait_tokens(&["other".into()]).await;
        assert!(
            order.lock().unwrap().is_empty(),
            "another token does not wait"
        );
        returns.wait_tokens(&["tok".into()]).await;
        assert_eq!(*order.lock().unwrap(), ["move home", "free the VF"]);
        returns.settled().await;
        assert_eq!(returns.pending(), 0);
        returns.wait_connection("c1").await;
    }

    #[tokio::test]
    async fn a_failed_step_stops_the_ones_after_it() {
        let returns = Returns::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let d = Deferred::default();
        d.push(step(order.clone(), "move home", false));
        d.push(step(order.clone(), "free the VF", true));
        returns.start("c1", None, d);
        returns.wait_connection("c1").await;
        returns.settled().await;
        assert_eq!(*order.lock().unwrap(), ["move home"]);
    }

    #[tokio::test]
    async fn a_panicking_step_still_ends_its_entry() {
        let returns = Returns::default();
        let d = Deferred::default();
        d.push(async { panic!("a step that panics") }.boxed());
        returns.start("c1", Some("tok".into()), d);
        returns.wait_connection("c1").await;
        returns.wait_tokens(&["tok".into()]).await;
        returns.settled().await;
        assert_eq!(returns.pending(), 0);
    }

    #[tokio::test]
    async fn settled_waits_for_every_connection_and_nothing_queued_starts_nothing() {
        let returns = Returns::default();
        returns.start("empty", None, Deferred::default());
        assert_eq!(returns.pending(), 0);
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..4 {
            let d = Deferred::default();
            let ran = ran.clone();
            d.push(
                async move {
                    tokio::time::sleep(Duration::from_millis(2 * i)).await;
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
                .boxed(),
            );
            returns.start(&format!("c{i}"), None, d);
        }
        returns.settled().await;
        assert_eq!(ran.load(Ordering::SeqCst), 4);
    }
}
