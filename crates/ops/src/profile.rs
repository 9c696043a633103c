//! CPU profiles in pprof's format, gzip-compressed as `go tool pprof`
//! reads them.
//!
//! The `pprof` crate samples the process on SIGPROF and symbolizes the
//! stacks; we encode its report ourselves from our hand-written
//! `proto/pprof/profile.proto` (its own `prost-codec` feature brings prost
//! 0.12 and a protoc run beside our prost 0.14).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use pprof::ProfilerGuardBuilder;
use prost::Message as _;

use crate::Error;
use crate::proto::{Function, Label, Line, Location, Profile, Sample, ValueType};

/// Sampling rate: Go's `runtime/pprof` default, so profiles compare.
pub const SAMPLE_HZ: i32 = 100;

/// Profile length when the request names none (Go's default).
pub const DEFAULT_SECONDS: u64 = 30;

/// Longest profile served: a forgotten `seconds=` must not sample for ever.
pub const MAX_SECONDS: u64 = 300;

/// The profiler is one per process (one SIGPROF timer): the first caller
/// takes this, later ones get [`Error::ProfilerBusy`] until it is done.
static BUSY: AtomicBool = AtomicBool::new(false);

struct Slot;

impl Slot {
    fn take() -> Result<Self, Error> {
        BUSY.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Slot)
            .map_err(|_| Error::ProfilerBusy)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// Samples this process's CPU for `duration` and returns the profile,
/// gzip-compressed protobuf `perftools.profiles.Profile` with sample types
/// `samples/count` and `cpu/nanoseconds`, one `thread` label per sample.
///
/// Dropping the future stops the profiler early (the client went away or
/// the server shuts down). One profile runs at a time in a process.
pub async fn cpu_profile(duration: Duration) -> Result<Vec<u8>, Error> {
    let slot = Slot::take()?;
    // The sampling thread waits on this channel: a message never comes, so
    // it wakes at the deadline, or early when this future (the sender) is
    // dropped.
    let (_stop, stopped) = mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let guard = builder().build().map_err(|cause| match cause {
            pprof::Error::Running => Error::ProfilerBusy,
            cause => Error::Profiler { cause },
        })?;
        match stopped.recv_timeout(duration) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Err(Error::ProfileCancelled),
        }
        let report = guard
            .report()
            .build()
            .map_err(|cause| Error::Profiler { cause })?;
        drop(guard);
        gzip(&encode(&report).encode_to_vec())
    })
    .await
    .map_err(|cause| Error::ProfileTask { cause })?
}

fn builder() -> ProfilerGuardBuilder {
    let builder = ProfilerGuardBuilder::default().frequency(SAMPLE_HZ);
    // Unwinding from the signal handler through these deadlocks or reads
    // bad DWARF (pprof-rs' README): their frames are left out.
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "loongarch64"
    ))]
    let builder = builder.blocklist(&["libc", "libgcc", "pthread", "vdso"]);
    builder
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|cause| Error::Compress { cause })
}

/// The string table: index 0 is "" as the format requires, each string
/// once.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.index.get(s) {
            return id;
        }
        let id = i64::try_from(self.table.len()).unwrap_or(i64::MAX);
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), id);
        id
    }
}

/// Builds the profile from pprof's report: a Function per distinct
/// (name, file), a Location per distinct stack frame with its inlined
/// calls as Lines (innermost first), a Sample per distinct stack.
fn encode(report: &pprof::Report) -> Profile {
    let mut strings = Strings::new();
    let samples_type = ValueType {
        r#type: strings.id("samples"),
        unit: strings.id("count"),
    };
    let cpu_type = ValueType {
        r#type: strings.id("cpu"),
        unit: strings.id("nanoseconds"),
    };
    let thread = strings.id("thread");
    let hz = i64::from(report.timing.frequency.max(1));
    let period = 1_000_000_000 / hz;

    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut location_ids: HashMap<Vec<(u64, i64)>, u64> = HashMap::new();
    let mut samples = Vec::with_capacity(report.data.len());

    for (frames, &count) in &report.data {
        let mut stack = Vec::with_capacity(frames.frames.len());
        for frame in frames.frames.iter().skip_while(|f| is_sampler(f)) {
            let lines: Vec<(u64, i64)> = frame
                .iter()
                .map(|symbol| {
                    let name = strings.id(&symbol.name());
                    let file = strings.id(&symbol.filename());
                    let next = next_id(functions.len());
                    let id = *function_ids.entry((name, file)).or_insert(next);
                    if id == next {
                        functions.push(Function {
                            id,
                            name,
                            system_name: strings.id(&symbol.sys_name()),
                            filename: file,
                            start_line: 0,
                        });
                    }
                    (id, i64::from(symbol.lineno()))
                })
                .collect();
            // A frame nothing resolved has no name to show.
            if lines.is_empty() {
                continue;
            }
            let next = next_id(locations.len());
            let id = *location_ids.entry(lines.clone()).or_insert(next);
            if id == next {
                locations.push(Location {
                    id,
                    line: lines
                        .iter()
                        .map(|&(function_id, line)| Line {
                            function_id,
                            line,
                            column: 0,
                        })
                        .collect(),
                    ..Location::default()
                });
            }
            stack.push(id);
        }
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        samples.push(Sample {
            location_id: stack,
            value: vec![count, count.saturating_mul(period)],
            label: vec![Label {
                key: thread,
                str: strings.id(&frames.thread_name_or_id()),
                ..Label::default()
            }],
        });
    }

    let time_nanos = report
        .timing
        .start_time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Profile {
        sample_type: vec![samples_type, cpu_type],
        sample: samples,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos,
        duration_nanos: i64::try_from(report.timing.duration.as_nanos()).unwrap_or(i64::MAX),
        period_type: Some(cpu_type),
        period,
        ..Profile::default()
    }
}

/// The profiler's own frames on top of every stack (the unwinder called
/// from its signal handler; pprof-rs drops only the handler's frame and
/// the signal trampoline): they would be every sample's leaf.
fn is_sampler(frame: &[pprof::Symbol]) -> bool {
    frame.iter().any(|symbol| {
        let name = symbol.name();
        name.starts_with("backtrace::")
            || name.starts_with("pprof::")
            || name.starts_with("<pprof::")
    })
}

/// Ids are 1-based: 0 means "none" in the format.
fn next_id(len: usize) -> u64 {
    u64::try_from(len).map_or(u64::MAX, |n| n.saturating_add(1))
}
