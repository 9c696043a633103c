//! Best-effort line numbers for keys of a block-style YAML document.
//!
//! serde_yaml reports positions for syntax and type errors, but not for rules checked after
//! deserialising (an empty list, a bad PCI address in a map key). This finds the line of a key path
//! by indentation, which is exact for block style (how these files are written) and falls back to
//! the nearest enclosing key for flow style (`{a: 1}`).

/// One step of a path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    /// A mapping key, and which occurrence of that exact text (0 for the first; duplicates count).
    Key(&'a str, usize),
    /// The `n`th `- ` item of a block sequence.
    Item(usize),
}

#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    number: usize,
    indent: usize,
    content: &'a str,
}

fn significant_lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let content = raw.trim_start_matches(' ');
            let trimmed = content.trim_end();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                return None;
            }
            Some(Line {
                number: i + 1,
                indent: raw.len() - content.len(),
                content: trimmed,
            })
        })
        .collect()
}

/// The key a line starts with. A key ends at the first `: ` or a trailing `:`; PCI addresses
/// contain `:` but never `: `.
fn key_of(content: &str) -> Option<&str> {
    let end = content
        .find(": ")
        .or_else(|| content.strip_suffix(':').map(str::len))?;
    let key = content[..end].trim();
    let unquoted = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')));
    Some(unquoted.unwrap_or(key))
}

/// Lines after `at` that belong to the node started at `at` (whose keys sit at column `col`).
fn body<'a>(lines: &[Line<'a>], at: usize, col: usize) -> Vec<Line<'a>> {
    lines
        .get(at + 1..)
        .unwrap_or_default()
        .iter()
        .take_while(|l| l.indent > col || (l.indent == col && l.content.starts_with("- ")))
        .copied()
        .collect()
}

/// The 1-based line of `path` in `text`, or of its deepest ancestor that could be found.
pub(crate) fn locate(text: &str, path: &[Step<'_>]) -> Option<usize> {
    let mut window = significant_lines(text);
    let mut found = None;
    for step in path {
        let Some(level) = window.iter().map(|l| l.indent).min() else {
            return found;
        };
        match *step {
            Step::Key(key, occurrence) => {
                let hit = window
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.indent == level && !l.content.starts_with("- "))
                    .filter(|(_, l)| key_of(l.content) == Some(key))
                    .nth(occurrence);
                let Some((i, line)) = hit else {
                    return found;
                };
                found = Some(line.number);
                window = body(&window, i, line.indent);
            }
            Step::Item(n) => {
                let hit = window
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.indent == level && l.content.starts_with("- "))
                    .nth(n);
                let Some((i, line)) = hit else {
                    return found;
                };
                found = Some(line.number);
                // The item's first key sits on its `- ` line, two columns in.
                let mut item = vec![Line {
                    number: line.number,
                    indent: line.indent + 2,
                    content: line.content[2..].trim_start(),
                }];
                item.extend(
                    window
                        .get(i + 1..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|l| l.indent > line.indent)
                        .copied(),
                );
                window = item;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# comment
physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    capabilities:
    - intel
    virtualFunctions:
      - address: 0000:01:02.0
        iommuGroup: 1
      - iommuGroup: 2
        address: 0000:01:02.1
  \"0000:02:00.0\": {pfKernelDriver: x}
  0000:01:00.0:
    pfKernelDriver: dup
";

    #[test]
    fn keys_items_and_duplicates_are_found_by_line() {
        let pfs = Step::Key("physicalFunctions", 0);
        let pf = Step::Key("0000:01:00.0", 0);
        let vfs = Step::Key("virtualFunctions", 0);
        assert_eq!(locate(DOC, &[pfs]), Some(2));
        assert_eq!(locate(DOC, &[pfs, pf]), Some(3));
        assert_eq!(
            locate(DOC, &[pfs, pf, Step::Key("capabilities", 0)]),
            Some(5)
        );
        assert_eq!(
            locate(DOC, &[pfs, pf, Step::Key("capabilities", 0), Step::Item(0)]),
            Some(6)
        );
        assert_eq!(locate(DOC, &[pfs, pf, vfs]), Some(7));
        assert_eq!(locate(DOC, &[pfs, pf, vfs, Step::Item(0)]), Some(8));
        assert_eq!(locate(DOC, &[pfs, pf, vfs, Step::Item(1)]), Some(10));
        let second_address = [pfs, pf, vfs, Step::Item(1), Step::Key("address", 0)];
        assert_eq!(locate(DOC, &second_address), Some(11));
        let first_address = [pfs, pf, vfs, Step::Item(0), Step::Key("address", 0)];
        assert_eq!(locate(DOC, &first_address), Some(8));
        assert_eq!(locate(DOC, &[pfs, Step::Key("0000:02:00.0", 0)]), Some(12));
        let flow = [
            pfs,
            Step::Key("0000:02:00.0", 0),
            Step::Key("pfKernelDriver", 0),
        ];
        assert_eq!(
            locate(DOC, &flow),
            Some(12),
            "flow style falls back to the enclosing key"
        );
        assert_eq!(locate(DOC, &[pfs, Step::Key("0000:01:00.0", 1)]), Some(13));
        let dup_driver = [
            pfs,
            Step::Key("0000:01:00.0", 1),
            Step::Key("pfKernelDriver", 0),
        ];
        assert_eq!(locate(DOC, &dup_driver), Some(14));
        assert_eq!(locate(DOC, &[Step::Key("nothing", 0)]), None);
    }
}
