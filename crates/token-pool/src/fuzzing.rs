//! Entry points for `cargo xtask fuzz` (the `fuzz/` crate). Not a stable API.

use crate::state::State;

/// Decodes a state file as start-up does; what decodes must encode and
/// decode again to the same state. The same bytes are also replayed as a
/// journal, of this boot and of an earlier one, which must refuse or apply
/// them without panicking.
pub fn state_file(raw: &[u8]) {
    if let Ok(state) = serde_json::from_slice::<State>(raw)
        && let Ok(again) = serde_json::to_vec(&state)
    {
        let back = serde_json::from_slice::<State>(&again).ok();
        assert_eq!(back.as_ref(), Some(&state));
    }
    let mut replayed = State::default();
    let _ = crate::journal::replay(&mut replayed, raw);
    let mut earlier = State::default();
    let _ = crate::journal::replay_from_an_earlier_boot(&mut earlier, raw);
    earlier.forget_uses();
}
