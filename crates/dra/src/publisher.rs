//! Keeps the API server's ResourceSlices of (driver, node) equal to the
//! desired pool.
//!
//! [`Publisher::publish`] lists our slices (field selector
//! `spec.nodeName=<node>,spec.driver=<driver>`), [`plan`]s the difference
//! and writes it: deletes first (an object name freed by a delete may be
//! needed by a create), then updates (PUT with the listed resourceVersion),
//! then creates. A 409 (someone wrote in between), or a 404 on a slice the
//! list had just shown, restarts the round from a fresh list, a bounded
//! number of times. Called again with the same pool it writes nothing.
//!
//! [`Publisher::run`] does this on every change of the desired pool and
//! follows a watch on our slices, so a slice someone else edits or deletes
//! is put back; failures are retried with exponential backoff.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

use crate::slices::{DesiredPool, Plan, plan};

/// How many rounds one publish makes before it gives up on conflicts.
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay of [`Publisher::run`].
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest retry delay of [`Publisher::run`].
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Events arriving this close together are handled by one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The server closes each watch after this long; it is then reopened.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Listing our slices failed.
    #[error("listing ResourceSlices of driver {driver} on node {node}: {cause}")]
    List {
        /// The driver.
        driver: String,
        /// The node.
        node: String,
        /// What the client reported.
        cause: Box<kube::Error>,
    },
    /// Creating a slice failed.
    #[error("creating ResourceSlice {name}: {cause}")]
    Create {
        /// The slice.
        name: String,
        /// What the client reported.
        cause: Box<kube::Error>,
    },
    /// Replacing a slice failed.
    #[error("updating ResourceSlice {name}: {cause}")]
    Update {
        /// The slice.
        name: String,
        /// What the client reported.
        cause: Box<kube::Error>,
    },
    /// Deleting a slice failed.
    #[error("deleting ResourceSlice {name}: {cause}")]
    Delete {
        /// The slice.
        name: String,
        /// What the client reported.
        cause: Box<kube::Error>,
    },
    /// Every round met a conflicting write.
    #[error("ResourceSlice {name}: still conflicting after {attempts} attempts")]
    Conflicts {
        /// The slice of the last conflict.
        name: String,
        /// Rounds made.
        attempts: u32,
    },
    /// The desired pool belongs to another driver or node than this publisher.
    #[error("pool of driver {driver} on node {node} handed to the publisher of another")]
    WrongOwner {
        /// The pool's driver.
        driver: String,
        /// The pool's node.
        node: String,
    },
}

/// What one publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The pool generation now published.
    pub generation: i64,
    /// Slices created.
    pub created: Vec<String>,
    /// Slices replaced.
    pub updated: Vec<String>,
    /// Slices deleted.
    pub deleted: Vec<String>,
    /// The list's resourceVersion the round started from (where a watch can begin).
    pub list_version: Option<String>,
}

impl Published {
    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        !(self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty())
    }
}

/// One round's outcome: done, or start over from a fresh list.
enum Round {
    Done(Published),
    Retry(String),
}

/// Publishes the pool of one driver on one node.
pub struct Publisher {
    api: Api<ResourceSlice>,
    driver: String,
    node: String,
    /// One reconcile at a time: a direct [`Publisher::publish`] and the
    /// run loop would otherwise plan from the same list and conflict.
    lock: tokio::sync::Mutex<()>,
    /// resourceVersions of our own writes, so their watch events do not
    /// cause another round.
    own_writes: std::sync::Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("driver", &self.driver)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for `driver` on `node` through `client`.
    pub fn new(client: kube::Client, driver: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            driver: driver.into(),
            node: node.into(),
            lock: tokio::sync::Mutex::new(()),
            own_writes: std::sync::Mutex::new(HashSet::new()),
        }
    }

    fn field_selector(&self) -> String {
        format!("spec.nodeName={},spec.driver={}", self.node, self.driver)
    }

    /// Our slices as the API server has them, and the list's resourceVersion.
    pub async fn list_own(&self) -> Result<(Vec<ResourceSlice>, Option<String>), PublishError> {
        let list = self
            .api
            .list(&ListParams::default().fields(&self.field_selector()))
            .await
            .map_err(|source| PublishError::List {
                driver: self.driver.clone(),
                node: self.node.clone(),
                cause: Box::new(source),
            })?;
        // The selector is the server's to apply; a server (or proxy) that
        // ignores it must not make us delete another node's slices.
        let items = list
            .items
            .into_iter()
            .filter(|s| {
                s.spec.driver == self.driver && s.spec.node_name.as_deref() == Some(&self.node)
            })
            .collect();
        Ok((items, list.metadata.resource_version))
    }

    /// Makes the API server's slices equal to `desired`.
    pub async fn publish(&self, desired: &DesiredPool) -> Result<Published, PublishError> {
        if desired.owner().driver != self.driver || desired.owner().node != self.node {
            return Err(PublishError::WrongOwner {
                driver: desired.owner().driver.clone(),
                node: desired.owner().node.clone(),
            });
        }
        let _guard = self.lock.lock().await;
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.round(desired).await? {
                Round::Done(published) => {
                    if published.wrote() {
                        tracing::info!(
                            driver = %self.driver,
                            node = %self.node,
                            generation = published.generation,
                            created = ?published.created,
                            updated = ?published.updated,
                            deleted = ?published.deleted,
                            "ResourceSlices published"
                        );
                    }
                    return Ok(published);
                }
                Round::Retry(name) => {
                    tracing::debug!(slice = %name, attempt, "ResourceSlice changed under us; re-reading");
                    last = name;
                }
            }
        }
        Err(PublishError::Conflicts {
            name: last,
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn round(&self, desired: &DesiredPool) -> Result<Round, PublishError> {
        let (published, list_version) = self.list_own().await?;
        let Plan {
            generation,
            create,
            update,
            delete,
        } = plan(desired, &published);
        let mut done = Published {
            generation,
            list_version,
            ..Default::default()
        };
        for name in delete {
            if let Some(round) = self.delete(&name).await? {
                return Ok(round);
            }
            done.deleted.push(name);
        }
        for slice in update {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match self
                .api
                .replace(&name, &PostParams::default(), &slice)
                .await
            {
                Ok(written) => self.remember(&written),
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {
                    return Ok(Round::Retry(name));
                }
                Err(source) => {
                    return Err(PublishError::Update {
                        name,
                        cause: Box::new(source),
                    });
                }
            }
            done.updated.push(name);
        }
        for slice in create {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match self.api.create(&PostParams::default(), &slice).await {
                Ok(written) => self.remember(&written),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                    return Ok(Round::Retry(name));
                }
                Err(source) => {
                    return Err(PublishError::Create {
                        name,
                        cause: Box::new(source),
                    });
                }
            }
            done.created.push(name);
        }
        Ok(Round::Done(done))
    }

    /// Deletes one slice; gone already is fine.
    async fn delete(&self, name: &str) -> Result<Option<Round>, PublishError> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Some(Round::Retry(name.to_string()))),
            Err(source) => Err(PublishError::Delete {
                name: name.to_string(),
                cause: Box::new(source),
            }),
        }
    }

    fn remember(&self, written: &ResourceSlice) {
        let Some(rv) = written.metadata.resource_version.clone() else {
            return;
        };
        if let Ok(mut seen) = self.own_writes.lock() {
            // Bounded: forgetting only costs one needless (write-free) round.
            if seen.len() > 4096 {
                seen.clear();
            }
            seen.insert(rv);
        }
    }

    fn is_own_write(&self, slice: &ResourceSlice) -> bool {
        let Some(rv) = slice.metadata.resource_version.as_deref() else {
            return false;
        };
        self.own_writes
            .lock()
            .map(|seen| seen.contains(rv))
            .unwrap_or(false)
    }

    /// Deletes every slice of ours (a clean stop: the node offers nothing
    /// while no plugin serves it). Returns the names deleted.
    pub async fn withdraw(&self) -> Result<Vec<String>, PublishError> {
        let _guard = self.lock.lock().await;
        let (published, _) = self.list_own().await?;
        let mut deleted = Vec::new();
        for slice in published {
            let Some(name) = slice.metadata.name else {
                continue;
            };
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(source) => {
                    return Err(PublishError::Delete {
                        name,
                        cause: Box::new(source),
                    });
                }
            }
        }
        if !deleted.is_empty() {
            tracing::info!(driver = %self.driver, node = %self.node, ?deleted, "ResourceSlices withdrawn");
        }
        Ok(deleted)
    }

    /// Publishes every pool `desired` holds, and again whenever our slices
    /// change under us, until `shutdown` completes. Failures are logged and
    /// retried with exponential backoff; this only returns on shutdown or
    /// when the sender of `desired` is gone.
    pub async fn run(
        self: Arc<Self>,
        mut desired: tokio::sync::watch::Receiver<Arc<DesiredPool>>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_START;
        loop {
            let pool = desired.borrow_and_update().clone();
            let list_version = match self.publish(&pool).await {
                // The backoff is reset only once a watch works too: a
                // watch refused (RBAC without `watch`) must not turn into a
                // list every 200ms.
                Ok(published) => published.list_version,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "publishing ResourceSlices failed");
                    tokio::select! {
                        () = &mut shutdown => return,
                        changed = desired.changed() => if changed.is_err() { return },
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            match self
                .follow(list_version.as_deref(), &mut desired, &mut shutdown)
                .await
            {
                Follow::Stop => return,
                Follow::Reconcile => backoff = BACKOFF_START,
                Follow::Failed => {
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Watches our slices from `version` until something asks for a round.
    async fn follow(
        &self,
        version: Option<&str>,
        desired: &mut tokio::sync::watch::Receiver<Arc<DesiredPool>>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Follow {
        let params = WatchParams::default()
            .fields(&self.field_selector())
            .timeout(WATCH_TIMEOUT_SECS);
        let stream = match self.api.watch(&params, version.unwrap_or("0")).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "watching ResourceSlices failed");
                return Follow::Failed;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = &mut *shutdown => return Follow::Stop,
                changed = desired.changed() => {
                    return if changed.is_ok() { Follow::Reconcile } else { Follow::Stop };
                }
                event = stream.next() => match event {
                    None => return Follow::Reconcile,
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    Some(Ok(WatchEvent::Added(s) | WatchEvent::Modified(s))) if self.is_own_write(&s) => {}
                    Some(Ok(WatchEvent::Added(s) | WatchEvent::Modified(s) | WatchEvent::Deleted(s))) => {
                        tracing::debug!(slice = ?s.metadata.name, "ResourceSlice changed by someone else");
                        tokio::time::sleep(DEBOUNCE).await;
                        return Follow::Reconcile;
                    }
                    Some(Ok(WatchEvent::Error(status))) => {
                        // 410 Gone: our version is too old; a new list starts over.
                        tracing::debug!(?status, "ResourceSlice watch ended by the server");
                        return Follow::Reconcile;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "ResourceSlice watch failed");
                        return Follow::Failed;
                    }
                }
            }
        }
    }
}

/// How following the watch ended.
enum Follow {
    Stop,
    Reconcile,
    Failed,
}
