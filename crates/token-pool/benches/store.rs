//! The pool's store under concurrent Requests: 16 PFs x 16 VFs (256 VFs),
//! every token allocated, then at 1, 16 and 256 concurrent clients each
//! Request does what the forwarder's chain does to the pool (take the token,
//! record the undo intent, record it done, and on Close release the VF).
//! Prints the store's own latency (record + done) at p50/p99, the token
//! use's, and Requests per second, and checks that no VF is ever held twice
//! and nothing fails. `cargo test` runs it small, as a correctness check.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sriov_pci_fake::fixtures;
use sriov_token_pool::{DriverKind, FileStore, PfEntry, Pool, system_clock};

/// An undo record of the size the chain writes for a KERNEL connection.
fn record(conn: &str, done: bool) -> serde_json::Value {
    let link = serde_json::json!({
        "netns": {"file": format!("/proc/4242/ns/net#{conn}")},
        "netns_id": {"dev": 4, "ino": 4026532999u64},
        "original": {"index": 17, "name": "enp59s2f3", "address": [2, 0, 0, 0, 0, 17],
                     "perm_address": null, "mtu": 1500},
        "client_index": 17, "client_name": "nsm-1", "client_address": [2, 0, 0, 0, 0, 17]
    });
    if done {
        serde_json::json!({"established": true, "moved": link})
    } else {
        serde_json::json!({"established": false, "moving": link})
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

struct Level {
    store: Vec<Duration>,
    take: Vec<Duration>,
    errors: usize,
    doubles: usize,
    wall: Duration,
    requests: usize,
}

fn run_level(pool: &Arc<Pool>, tokens: &[String], clients: usize) -> Level {
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = (0..clients)
        .map(|c| tokens.iter().skip(c).step_by(clients).cloned().collect())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(c, mine)| {
            let (pool, held) = (pool.clone(), held.clone());
            std::thread::spawn(move || {
                let (mut store, mut take, mut errors, mut doubles) = (vec![], vec![], 0, 0);
                for (n, token) in mine.iter().enumerate() {
                    let conn = format!("bench-{clients}-{c}-{n}");
                    let t0 = Instant::now();
                    let lease = match pool.use_token(token, DriverKind::Kernel, &conn, u64::MAX) {
                        Ok(l) => l,
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    };
                    let t1 = Instant::now();
                    if !held
                        .lock()
                        .is_ok_and(|mut h| h.insert(lease.vf.to_string()))
                    {
                        doubles += 1;
                    }
                    let ok = pool.record_undo(&conn, Some(record(&conn, false))).is_ok()
                        && pool.record_undo(&conn, Some(record(&conn, true))).is_ok();
                    let t2 = Instant::now();
                    if !ok {
                        errors += 1;
                    }
                    if let Ok(mut h) = held.lock() {
                        h.remove(&lease.vf.to_string());
                    }
                    if pool.unuse(&conn).is_err() {
                        errors += 1;
                    }
                    take.push(t1 - t0);
                    store.push(t2 - t1);
                }
                (store, take, errors, doubles)
            })
        })
        .collect();
    let mut level = Level {
        store: vec![],
        take: vec![],
        errors: 0,
        doubles: 0,
        wall: Duration::ZERO,
        requests: tokens.len(),
    };
    for h in handles {
        match h.join() {
            Ok((s, t, e, d)) => {
                level.store.extend(s);
                level.take.extend(t);
                level.errors += e;
                level.doubles += d;
            }
            Err(_) => level.errors += 1,
        }
    }
    level.wall = started.elapsed();
    level.store.sort();
    level.take.sort();
    level
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = std::env::args().any(|a| a == "--bench");
    let (pfs, vfs, levels) = if full {
        (16, 16, vec![1, 16, 256])
    } else {
        (2, 4, vec![1, 8])
    };
    let fake = fixtures::generated(pfs, vfs).build()?;
    let sysfs = fake.sysfs();
    let entries: Vec<PfEntry> = sysfs
        .discover_all()?
        .physical_functions
        .into_iter()
        .map(|pf| PfEntry {
            pf,
            names: vec!["bench.domain/vf".into()],
            vf_kernel_driver: "iavf".into(),
        })
        .collect();
    let state = tempfile::tempdir()?;
    let (pool, _) = Pool::open(
        entries,
        FileStore::in_dir(state.path())?,
        &sysfs,
        system_clock(),
    )?;
    let pool = Arc::new(pool);
    let tokens: Vec<String> = pool.tokens()?.into_iter().map(|t| t.id).collect();
    pool.allocate("bench.domain/vf", &tokens)?;
    println!(
        "pool store, {} VFs, every token allocated; per Request: take the token, record the \
         intent, record it done; then Close",
        tokens.len()
    );
    println!(
        "  {:>8} {:>9} {:>14} {:>14} {:>14} {:>12} {:>7} {:>7}",
        "clients",
        "requests",
        "store p50",
        "store p99",
        "take p50",
        "Requests/s",
        "errors",
        "double"
    );
    for clients in levels {
        let l = run_level(&pool, &tokens, clients);
        println!(
            "  {:>8} {:>9} {:>14?} {:>14?} {:>14?} {:>12.0} {:>7} {:>7}",
            clients,
            l.requests,
            percentile(&l.store, 0.5),
            percentile(&l.store, 0.99),
            percentile(&l.take, 0.5),
            l.requests as f64 / l.wall.as_secs_f64(),
            l.errors,
            l.doubles
        );
        if l.errors != 0 || l.doubles != 0 {
            return Err(format!(
                "{clients} clients: {} errors, {} double",
                l.errors, l.doubles
            )
            .into());
        }
    }
    Ok(())
}
