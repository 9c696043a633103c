//! What elements hand each other through the context, checked when the
//! chain is composed rather than on every Request.
//!
//! An element names the records it reads from the elements before it as a
//! type ([`Element::Needs`](crate::Element::Needs), a tuple), and the
//! records it leaves for those after it as [`Key`]s
//! ([`Element::provides`](crate::Element::provides)). [`crate::Chain::check`]
//! walks the composed chain once, at start, and refuses an element placed
//! before what it reads; after that, the chain hands each element its
//! needs by value, so no element looks them up (or fails to) on its own.

use std::any::{Any, TypeId};

use crate::Ctx;

/// A record type elements pass down the chain through the [`Ctx`].
#[derive(Debug, Clone, Copy)]
pub struct Key {
    id: TypeId,
    name: &'static str,
}

impl Key {
    /// The key of record type `T`.
    pub fn of<T: Any>() -> Self {
        let full = std::any::type_name::<T>();
        Self {
            id: TypeId::of::<T>(),
            name: full.rsplit("::").next().unwrap_or(full),
        }
    }

    /// The record type's name, for errors.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Key {}

/// The records an element reads from those before it: `()`, `(A,)` or
/// `(A, B)`. Each is cloned out of the context for the call, so the
/// element holds its inputs while it changes the context.
pub trait Needs: Sized + Send + 'static {
    /// The record types, for [`crate::Chain::check`].
    fn keys() -> Vec<Key>;

    /// The records, if all are in `ctx` (always, in a checked chain).
    fn read(ctx: &Ctx) -> Option<Self>;
}

impl Needs for () {
    fn keys() -> Vec<Key> {
        Vec::new()
    }

    fn read(_: &Ctx) -> Option<Self> {
        Some(())
    }
}

impl<A> Needs for (A,)
where
    A: Any + Clone + Send + Sync,
{
    fn keys() -> Vec<Key> {
        vec![Key::of::<A>()]
    }

    fn read(ctx: &Ctx) -> Option<Self> {
        Some((ctx.get::<A>()?.clone(),))
    }
}

impl<A, B> Needs for (A, B)
where
    A: Any + Clone + Send + Sync,
    B: Any + Clone + Send + Sync,
{
    fn keys() -> Vec<Key> {
        vec![Key::of::<A>(), Key::of::<B>()]
    }

    fn read(ctx: &Ctx) -> Option<Self> {
        Some((ctx.get::<A>()?.clone(), ctx.get::<B>()?.clone()))
    }
}

/// The records the elements so far leave for the next one.
#[derive(Debug, Clone, Default)]
pub struct Provided(Vec<Key>);

impl Provided {
    /// Whether `key` is among them.
    pub fn has(&self, key: Key) -> bool {
        self.0.contains(&key)
    }

    /// Adds what an element provides.
    pub fn add(&mut self, keys: impl IntoIterator<Item = Key>) {
        for k in keys {
            if !self.has(k) {
                self.0.push(k);
            }
        }
    }

    /// Keeps only what `other` has too: what every branch of a fork provides.
    pub fn keep_common(&mut self, other: &Provided) {
        self.0.retain(|k| other.has(*k));
    }

    /// `Ok` when every one of `keys` is provided, else the error naming
    /// `element` and the first missing record.
    pub fn require(&self, element: &'static str, keys: &[Key]) -> Result<(), ContractError> {
        match keys.iter().find(|k| !self.has(**k)) {
            Some(missing) => Err(ContractError {
                element,
                missing: missing.name(),
            }),
            None => Ok(()),
        }
    }
}

/// An element composed before what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    /// The element.
    pub element: &'static str,
    /// The record no element before it provides.
    pub missing: &'static str,
}

impl std::fmt::Display for ContractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain element `{}` reads {}, which no element before it provides",
            self.element, self.missing
        )
    }
}

impl std::error::Error for ContractError {}
