//! The per-suite summary that `cargo xtask test` prints at the end.

use std::fmt;

/// How one suite ended.
pub(crate) enum Outcome {
    Passed(String),
    Failed(String),
    Skipped(String),
}

/// Free space where the builds go, as `df` prints it, so that a run that
/// fills the disk shows which suite did it.
fn disk_free() -> Option<String> {
    let target = crate::demo::target_dir();
    let out = std::process::Command::new("df")
        .args(["-h", "--output=avail"])
        .arg(if target.exists() { target } else { ".".into() })
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().nth(1).map(|l| l.trim().to_string())
}

/// Suites in the order they ran, with test counts gathered from cargo's
/// `test result:` lines so the closing line counts tests, not suites.
#[derive(Default)]
pub(crate) struct Report {
    rows: Vec<(String, Outcome)>,
    pub(crate) tests_passed: u64,
    pub(crate) tests_failed: u64,
    pub(crate) tests_ignored: u64,
}

impl Report {
    pub(crate) fn record(&mut self, suite: &str, outcome: Outcome) {
        println!("xtask: {suite}: {outcome}");
        if let Some(free) = disk_free() {
            println!("xtask: {free} free for the build after {suite}");
        }
        self.rows.push((suite.to_string(), outcome));
    }

    pub(crate) fn failed(&self) -> bool {
        self.rows
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_)))
    }

    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    pub(crate) fn count_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = words
                .iter()
                .rev()
                .nth(1)
                .and_then(|w| w.parse::<u64>().ok());
            match (n, words.last()) {
                (Some(n), Some(&"passed")) => self.tests_passed += n,
                (Some(n), Some(&"failed")) => self.tests_failed += n,
                (Some(n), Some(&"ignored")) => self.tests_ignored += n,
                _ => {}
            }
        }
    }

    pub(crate) fn print_summary(&self) {
        println!();
        println!("==== summary ====");
        for (suite, outcome) in &self.rows {
            println!("{suite:<14} {outcome}");
        }
        let skipped = self
            .rows
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Skipped(_)))
            .count();
        println!(
            "suites: {} passed, {} failed, {skipped} skipped",
            self.rows
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Passed(_)))
                .count(),
            self.rows
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
                .count(),
        );
        println!(
            "tests: {} passed, {} failed, {} skipped",
            self.tests_passed, self.tests_failed, self.tests_ignored
        );
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed(s) => write!(f, "PASSED {s}"),
            Outcome::Failed(s) => write!(f, "FAILED {s}"),
            Outcome::Skipped(s) => write!(f, "SKIPPED ({s})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cargo_result_lines() {
        let mut r = Report::default();
        r.count_line("test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        r.count_line(
            "test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        r.count_line("running 4 tests");
        assert_eq!(
            (r.tests_passed, r.tests_failed, r.tests_ignored),
            (13, 3, 2)
        );
    }

    #[test]
    fn any_failed_suite_fails_the_run() {
        let mut r = Report::default();
        r.record("a", Outcome::Passed(String::new()));
        r.record("b", Outcome::Skipped("no qemu".into()));
        assert!(!r.failed());
        r.record("c", Outcome::Failed("exit 1".into()));
        assert!(r.failed());
    }
}
