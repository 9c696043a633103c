//! Per-connection context: typed state elements keep between Request,
//! refreshes and Close.

use std::any::{Any, TypeId};
use std::collections::HashMap;

/// State carried through the chain for one connection.
///
/// Elements store what they must undo later under their own private types
/// (`ctx.insert(MyRecord { .. })`), so no element can read or clobber
/// another's state by accident. A record meant for the elements after its
/// maker is a public type the maker lists in
/// [`Element::provides`](crate::Element::provides), and they receive it
/// through [`Element::Needs`](crate::Element::Needs) rather than looking it
/// up. The `begin` element keeps a connection's context between calls and
/// drops it after Close.
#[derive(Default)]
pub struct Ctx {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    refresh: bool,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("values", &self.values.len())
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl Ctx {
    /// A context for a connection seen for the first time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this Request refreshes an established connection.
    pub fn is_refresh(&self) -> bool {
        self.refresh
    }

    /// Marks the context as belonging to an established connection.
    pub fn set_refresh(&mut self, refresh: bool) {
        self.refresh = refresh;
    }

    /// Stores a value, returning the previous one of its type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        self.values
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// The value of a type, if stored.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref())
    }

    /// The value of a type, mutably.
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.values
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut())
    }

    /// Takes a value out.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.values
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast().ok().map(|b| *b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct A(u32);
    #[derive(Debug, PartialEq)]
    struct B(&'static str);

    #[test]
    fn values_are_kept_apart_by_type() {
        let mut ctx = Ctx::new();
        assert_eq!(ctx.insert(A(1)), None);
        ctx.insert(B("x"));
        assert_eq!(ctx.insert(A(2)), Some(A(1)));
        assert_eq!(ctx.get::<A>(), Some(&A(2)));
        if let Some(a) = ctx.get_mut::<A>() {
            a.0 += 1;
        }
        assert_eq!(ctx.remove::<A>(), Some(A(3)));
        assert_eq!(ctx.get::<A>(), None);
        assert_eq!(ctx.get::<B>(), Some(&B("x")));
    }
}
