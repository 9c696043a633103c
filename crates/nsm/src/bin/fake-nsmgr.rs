//! `fake-nsmgr <socket> [options]`: serves the fake NSM manager (registry
//! and next hop, see `sriov_nsm::fake`) on a unix socket and prints every
//! call it receives on one stdout line, e.g.
//! `register name=forwarder services=forwarder labels=forwarder:p2p=true url=unix:///... expires_in=600.0s`.
//! Stops on SIGINT or SIGTERM, removing the socket.

use std::io::Write;
use std::process::ExitCode;

use sriov_api::nsm::connectioncontext::{ConnectionContext, IpContext, Route};
use sriov_nsm::fake::FakeNsmgr;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

const USAGE: &str = "\
usage: fake-nsmgr <socket-path | unix:///socket-path> [options]
  --fail-requests N   fail the next N Requests with UNAVAILABLE
  --src-ip CIDR       answer Requests with this client-side address (repeatable)
  --dst-ip CIDR       answer Requests with this endpoint-side address (repeatable)
  --src-route PREFIX  answer Requests with this route for the client (repeatable)
  --mtu N             answer Requests with this MTU
Any of --src-ip/--dst-ip/--src-route/--mtu replaces the connection context in
answers, as an endpoint with IPAM would.";

struct Args {
    socket: String,
    fail: u32,
    context: Option<ConnectionContext>,
}

/// `Ok(None)` is `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut socket = None;
    let mut fail = 0;
    let mut ip = IpContext::default();
    let mut mtu = 0u32;
    let mut args = std::env::args().skip(1);
    let value = |flag: &str, args: &mut dyn Iterator<Item = String>| {
        args.next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--fail-requests" => {
                let n = value(&arg, &mut args)?;
                fail = n
                    .parse()
                    .map_err(|_| format!("--fail-requests: {n:?} is not a number"))?;
            }
            "--src-ip" => ip.src_ip_addrs.push(value(&arg, &mut args)?),
            "--dst-ip" => ip.dst_ip_addrs.push(value(&arg, &mut args)?),
            "--src-route" => ip.src_routes.push(Route {
                prefix: value(&arg, &mut args)?,
                ..Default::default()
            }),
            "--mtu" => {
                let n = value(&arg, &mut args)?;
                mtu = n
                    .parse()
                    .map_err(|_| format!("--mtu: {n:?} is not a number"))?;
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
    let context = (ip != IpContext::default() || mtu != 0).then(|| ConnectionContext {
        ip_context: Some(ip),
        mtu,
        ..Default::default()
    });
    Ok(Some(Args {
        socket,
        fail,
        context,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Args {
        socket,
        fail,
        context,
    } = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            say(USAGE);
            return ExitCode::SUCCESS;
        }
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
    nsmgr.answer_with_context(context);
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
