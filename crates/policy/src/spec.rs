//! Finding policy files from a spec as NSM's variables write it.
//!
//! A spec is a comma-separated list of masks. A mask naming an existing file
//! loads that file; any other mask is an anchored regular expression (`.*`
//! crosses `/`) over the paths of the files under the mask's last literal
//! directory, walked recursively, and over the names of the shipped policies
//! (`etc/nsm/opa/<group>/<name>.rego`), so NSM's defaults such as
//! `etc/nsm/opa/common/.*.rego` mean our shipped files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::PolicyError;

/// One policy's name (what a denial names) and its Rego text.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) text: String,
}

/// The policies in `policies/`, under the names NSM gives its embedded ones.
const SHIPPED: &[(&str, &str)] = &[
    (
        "etc/nsm/opa/client/next_token_signed.rego",
        include_str!("../policies/client/next_token_signed.rego"),
    ),
    (
        "etc/nsm/opa/common/tokens_chained.rego",
        include_str!("../policies/common/tokens_chained.rego"),
    ),
    (
        "etc/nsm/opa/common/tokens_expired.rego",
        include_str!("../policies/common/tokens_expired.rego"),
    ),
    (
        "etc/nsm/opa/common/tokens_valid.rego",
        include_str!("../policies/common/tokens_valid.rego"),
    ),
    (
        "etc/nsm/opa/monitor/service_connection.rego",
        include_str!("../policies/monitor/service_connection.rego"),
    ),
    (
        "etc/nsm/opa/registry/client_allowed.rego",
        include_str!("../policies/registry/client_allowed.rego"),
    ),
    (
        "etc/nsm/opa/server/prev_token_signed.rego",
        include_str!("../policies/server/prev_token_signed.rego"),
    ),
];

// A hostile or mistaken mask must not walk the whole filesystem forever.
const MAX_DEPTH: usize = 16;

/// The sources a spec names, in spec order; within a mask, files on disk
/// (sorted by path) before shipped policies. A name found twice is loaded once.
pub(crate) fn resolve(spec: &str) -> Result<Vec<Source>, PolicyError> {
    resolve_masks(spec.split(','))
}

/// As [`resolve`], for masks already split (as `sriov-config` splits
/// `NSM_REGISTRY_CLIENT_POLICIES`). Blank masks are skipped.
pub(crate) fn resolve_masks<I>(masks: I) -> Result<Vec<Source>, PolicyError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut sources = Vec::new();
    let mut seen = BTreeSet::new();
    for mask in masks {
        let mask = mask.as_ref().trim();
        if mask.is_empty() {
            continue;
        }
        let found = resolve_mask(mask)?;
        if found.is_empty() {
            return Err(PolicyError::NoMatch {
                mask: mask.to_owned(),
            });
        }
        for source in found {
            if seen.insert(source.name.clone()) {
                sources.push(source);
            }
        }
    }
    Ok(sources)
}

fn resolve_mask(mask: &str) -> Result<Vec<Source>, PolicyError> {
    let path = Path::new(mask);
    if path.is_file() {
        return Ok(vec![read(path, mask.to_owned())?]);
    }
    let pattern =
        regex_lite::Regex::new(&format!("^(?:{mask})$")).map_err(|e| PolicyError::BadMask {
            mask: mask.to_owned(),
            cause: e.to_string(),
        })?;

    let mut on_disk = Vec::new();
    let prefix = literal_dir(mask);
    let dir = PathBuf::from(prefix.unwrap_or("."));
    walk(&dir, prefix, 0, &mut |file, name| {
        if pattern.is_match(&name) {
            on_disk.push((name, file));
        }
    });
    on_disk.sort();

    let mut found = Vec::with_capacity(on_disk.len());
    for (name, file) in on_disk {
        found.push(read(&file, name)?);
    }
    found.extend(
        SHIPPED
            .iter()
            .filter(|(name, _)| pattern.is_match(name))
            .map(|(name, text)| Source {
                name: (*name).to_owned(),
                text: (*text).to_owned(),
            }),
    );
    Ok(found)
}

/// The directory to walk for a mask: its longest leading run of whole path
/// components free of regex syntax. NSM walks the mask's parent directory,
/// which for `dir/[^/]*.rego` is `dir/[^`; `.` is allowed, since as a regex it
/// also matches itself (`/tmp/.x`). `None` for a relative mask whose first
/// component is already a pattern: walk `.`.
fn literal_dir(mask: &str) -> Option<&str> {
    let pattern_at = mask
        .find(|c: char| "*+?()[]{}|^$\\".contains(c))
        .unwrap_or(mask.len());
    let end = mask.get(..pattern_at)?.rfind('/')?;
    // `/x.rego` lives in `/`.
    Some(if end == 0 { "/" } else { mask.get(..end)? })
}

/// Calls `visit(file, name)` for every non-directory under `dir`, where
/// `name` is the path as the mask spells it (`prefix/relative`). Unreadable
/// directories are skipped, as NSM's walk skips them; symlinked files are
/// visited (ConfigMap mounts are symlinks) but symlinked directories and
/// dot-directories are not entered, so a ConfigMap's `..data` timestamped
/// copies are not loaded twice.
fn walk(dir: &Path, prefix: Option<&str>, depth: usize, visit: &mut dyn FnMut(PathBuf, String)) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let name = match prefix {
            Some("/") => format!("/{file_name}"),
            Some(prefix) => format!("{prefix}/{file_name}"),
            None => file_name.clone(),
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !file_name.starts_with('.') {
                walk(&entry.path(), Some(&name), depth + 1, visit);
            }
        } else {
            visit(entry.path(), name);
        }
    }
}

fn read(path: &Path, name: String) -> Result<Source, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Source { name, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<String> {
        resolve(spec).unwrap().into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn nsm_default_masks_name_the_shipped_policies() {
        assert_eq!(
            names("etc/nsm/opa/common/.*.rego,etc/nsm/opa/server/.*.rego"),
            [
                "etc/nsm/opa/common/tokens_chained.rego",
                "etc/nsm/opa/common/tokens_expired.rego",
                "etc/nsm/opa/common/tokens_valid.rego",
                "etc/nsm/opa/server/prev_token_signed.rego",
            ]
        );
        assert_eq!(names("etc/nsm/opa/.*.rego").len(), SHIPPED.len());
        assert_eq!(names("etc/nsm/opa/common/tokens_.*.rego").len(), 3);
        assert_eq!(
            names(" etc/nsm/opa/monitor/service_connection.rego ,"),
            ["etc/nsm/opa/monitor/service_connection.rego"]
        );
    }

    #[test]
    fn a_name_is_loaded_once() {
        assert_eq!(
            names("etc/nsm/opa/common/tokens_valid.rego,etc/nsm/opa/common/.*valid.rego"),
            ["etc/nsm/opa/common/tokens_valid.rego"]
        );
    }

    #[test]
    fn the_walk_starts_at_the_last_literal_directory() {
        assert_eq!(
            literal_dir("etc/nsm/opa/common/.*.rego"),
            Some("etc/nsm/opa/common")
        );
        assert_eq!(literal_dir("/p/.tmp1/[^/]*\\.rego"), Some("/p/.tmp1"));
        assert_eq!(literal_dir("/p/(a|b)/x.rego"), Some("/p"));
        assert_eq!(literal_dir("/x.rego"), Some("/"));
        assert_eq!(literal_dir(".*.rego"), None);
        assert_eq!(literal_dir("x.rego"), None);
    }

    #[test]
    fn empty_spec_is_no_policy() {
        assert!(names("").is_empty());
        assert!(names(" , ").is_empty());
    }

    #[test]
    fn a_mask_matching_nothing_or_not_a_regex_is_refused() {
        assert!(matches!(
            resolve("etc/nsm/opa/common/nothing.rego"),
            Err(PolicyError::NoMatch { mask }) if mask == "etc/nsm/opa/common/nothing.rego"
        ));
        assert!(matches!(
            resolve("etc/nsm/opa/common/(.rego"),
            Err(PolicyError::BadMask { mask, .. }) if mask == "etc/nsm/opa/common/(.rego"
        ));
    }

    #[test]
    fn shipped_policies_are_all_listed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut on_disk = Vec::new();
        walk(&dir, Some("etc/nsm/opa"), 0, &mut |_, name| {
            on_disk.push(name)
        });
        on_disk.sort();
        let shipped: Vec<_> = SHIPPED.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(on_disk, shipped);
    }
}
