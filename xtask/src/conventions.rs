//! House rules that a grep can hold, checked over every library and binary.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    sources(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }

    /// An error prints its cause once: either in its message or as its
    /// `source()`, never both (a report walking the chain, anyhow's `{:#}`
    /// or a gRPC status with the causes, would print it twice).
    #[test]
    fn no_error_prints_its_source_twice() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in ["crates", "bins"] {
            sources(&root.join(dir), &mut files);
        }
        assert!(files.len() > 50, "found only {} sources", files.len());
        let mut twice = Vec::new();
        for (path, text) in &files {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(msg) = line.trim().strip_prefix("#[error(") else {
                    continue;
                };
                // The variant's fields: up to the next attribute of the
                // enum's next variant, or a few lines.
                let body: String = lines[i + 1..(i + 12).min(lines.len())]
                    .iter()
                    .take_while(|l| !l.trim().starts_with("#[error("))
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                let source_field = body.contains("#[source]")
                    || body.contains("#[from]")
                    || body.lines().any(|l| l.trim().starts_with("source:"));
                let prints_it =
                    msg.contains("{source") || (msg.contains("{0") && body.contains("(#["));
                if source_field && prints_it {
                    twice.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
        assert!(
            twice.is_empty(),
            "errors printing their source twice: {twice:#?}"
        );
    }
}
