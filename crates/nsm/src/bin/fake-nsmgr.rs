//! `fake-nsmgr <socket> [--fail-requests N]`: serves the fake NSM manager
//! (registry and next hop, see `sriov_nsm::fake`) on a unix socket and
//! prints every call it receives on one stdout line, e.g.
//! `register name=forwarder services=forwarder labels=forwarder:p2p=true url=unix:///... expires_in=600.0s`.
//! Stops on SIGINT or SIGTERM, removing the socket.

use std::io::Write;
use std::process::ExitCode;

use sriov_nsm::fake::FakeNsmgr;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

const USAGE: &str = "usage: fake-nsmgr <socket-path> [--fail-requests N]";

fn parse_args() -> Result<(String, u32), String> {
    let mut socket = None;
    let mut fail = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(USAGE.into()),
            "--fail-requests" => {
                let n = args.next().ok_or("--fail-requests needs a number")?;
                fail = n
                    .parse()
                    .map_err(|_| format!("--fail-requests: {n:?} is not a number"))?;
            }
            _ if socket.is_none() && !arg.starts_with('-') => socket = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    let socket = socket.ok_or(USAGE)?;
    // Accept the URL form too, as NSM_CONNECT_TO spells it.
    let socket = socket
        .strip_prefix("unix://")
        .map(str::to_string)
        .unwrap_or(socket);
    Ok((socket, fail))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (socket, fail) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let mut nsmgr = match FakeNsmgr::start(&socket).await {
        Ok(n) => n,
        Err(err) => {
            eprintln!("fake-nsmgr: {err}");
            return ExitCode::FAILURE;
        }
    };
    if fail > 0 {
        nsmgr.fail_next_requests(fail, tonic::Code::Unavailable);
    }
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("fake-nsmgr: cannot handle signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut calls = nsmgr.subscribe();
    say(&format!("listening url={}", nsmgr.url()));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            call = calls.recv() => match call {
                Ok(call) => say(&call.to_string()),
                Err(RecvError::Lagged(n)) => say(&format!("lost {n} calls")),
                Err(RecvError::Closed) => break,
            },
        }
    }
    nsmgr.stop().await;
    say("stopped");
    ExitCode::SUCCESS
}

/// One line to stdout, flushed at once for whoever follows the output. A
/// reader that went away (`| head`) must not take the fake down.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
