//! The sweep: the daemon's periodic pass that ends what no live connection
//! holds any more, through the same undo path as Close.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sriov_chain::elements::monitor::Monitor;
use sriov_chain::reclaim::Reclaim;
use sriov_pci::Sysfs;
use sriov_token_pool::Pool;

/// Ends pool uses no live connection holds once their lease expired (after
/// a restart, uses recorded before it have no timer of their own): their
/// host changes are undone from the pool's record first ([`Reclaim`]), so
/// the VF goes back clean; then releases uses whose VF is gone or visibly
/// back with the forwarder. Connections whose token no pod holds any more
/// (kubelet's pod-resources said so) are closed: through the chain when
/// this process serves them, from the record otherwise.
pub(crate) async fn sweep_stale_uses(
    pool: Arc<Pool>,
    sysfs: Sysfs,
    reclaim: Reclaim,
    chain: Arc<sriov_chain::Chain>,
    monitor: Monitor,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        crate::metrics::reconcile_run();
        let served = monitor.connections();
        for connection in pool.abandoned() {
            let closed = match served.iter().find(|c| c.id == connection) {
                Some(conn) => chain
                    .close(&mut sriov_chain::Ctx::new(), conn.clone())
                    .await
                    .map(|()| Some("closed".to_string())),
                None => reclaim.connection(&connection).await,
            };
            match closed {
                Ok(Some(what)) => {
                    crate::metrics::repaired("gone_pod", 1);
                    tracing::info!(%connection, "{what} (its pod is gone)")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%connection, error = %e, "closing the connection of a gone pod; retried next sweep")
                }
            }
        }
        let mut live: HashSet<String> = monitor.connections().into_iter().map(|c| c.id).collect();
        let expired = match pool.expired() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired VF uses");
                Vec::new()
            }
        };
        let mut stuck = Vec::new();
        for (connection, _) in expired.iter().filter(|(c, _)| !live.contains(c)) {
            match reclaim.connection(connection).await {
                Ok(Some(what)) => {
                    crate::metrics::repaired("expired", 1);
                    tracing::info!(%connection, "{what} (expired unrefreshed)")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%connection, error = %e, "undoing an expired connection; retried next sweep");
                    stuck.push(connection.clone());
                }
            }
        }
        // A use whose undo failed stays recorded: released now, its VF would
        // go to the next tenant still configured for this one.
        live.extend(stuck);
        let (pool, sysfs) = (pool.clone(), sysfs.clone());
        let swept =
            tokio::task::spawn_blocking(move || pool.sweep(&sysfs, &|c| live.contains(c))).await;
        match swept {
            Ok(Ok(released)) => {
                crate::metrics::repaired("stale_use", released.len() as u64);
                released.iter().for_each(|r| tracing::info!("{r}"))
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping stale VF uses"),
            Err(e) => tracing::warn!(error = %e, "sweep task failed"),
        }
    }
}
