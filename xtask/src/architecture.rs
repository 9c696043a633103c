//! Keeps ARCHITECTURE.md's crate graph equal to what `cargo metadata` says.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use crate::suites::cargo;

    type Edges = BTreeSet<(String, String)>;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Normal, non-optional dependencies between workspace members, xtask
    /// left out.
    fn from_metadata() -> Edges {
        let out = cargo(&[
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
        let packages = meta["packages"].as_array().expect("packages");
        let ours: BTreeSet<&str> = packages
            .iter()
            .filter_map(|p| p["name"].as_str())
            .filter(|n| *n != "xtask")
            .collect();
        let mut edges = Edges::new();
        for p in packages {
            let name = p["name"].as_str().unwrap_or_default();
            if !ours.contains(name) {
                continue;
            }
            for d in p["dependencies"].as_array().into_iter().flatten() {
                let dep = d["name"].as_str().unwrap_or_default();
                if ours.contains(dep) && d["kind"].is_null() && d["optional"] != true {
                    edges.insert((name.to_string(), dep.to_string()));
                }
            }
        }
        edges
    }

    /// The `a --> b` lines of ARCHITECTURE.md's mermaid block.
    fn from_doc() -> Edges {
        let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
        let block = doc
            .split("```mermaid")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a mermaid block in ARCHITECTURE.md");
        block
            .lines()
            .filter_map(|l| l.trim().split_once(" --> "))
            .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            .collect()
    }

    #[test]
    fn architecture_crate_graph_is_cargo_metadatas() {
        let (real, doc) = (from_metadata(), from_doc());
        assert!(!real.is_empty());
        let missing: Vec<_> = real.difference(&doc).collect();
        let stale: Vec<_> = doc.difference(&real).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "ARCHITECTURE.md's graph drifted: add {missing:?}, remove {stale:?}"
        );
    }
}
