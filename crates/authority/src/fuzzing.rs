//! Entry points for `cargo xtask fuzz` (the `fuzz/` crate). Not a stable API.

use crate::relay::Rewriter;

/// Runs a client's bytes through the `:authority` rewriter, split where
/// `cuts` says (a socket hands them over in arbitrary pieces): no panic,
/// and output only ever grows.
pub fn authority(cuts: &[u8], input: &[u8]) {
    let mut rw = Rewriter::default();
    let mut out = Vec::new();
    let mut rest = input;
    for c in cuts.iter().chain(std::iter::once(&u8::MAX)) {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(usize::from(*c).min(rest.len()).max(1));
        let before = out.len();
        if rw.feed(now, &mut out).is_err() {
            return;
        }
        assert!(out.len() >= before);
        rest = later;
    }
    if !rest.is_empty() {
        let _ = rw.feed(rest, &mut out);
    }
}
