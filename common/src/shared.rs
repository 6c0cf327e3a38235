//! What a runtime's sessions and tasks share: object-store clients (their connection pools
//! and credentials), the cache of a decode pass's features, and whatever else is costly to
//! build and safe to reuse within one process's runtime.
//!
//! [`Shared`] is a DataFusion config extension that carries no entries: it never travels
//! as a setting (a cluster's client, scheduler and executors each insert their own), it
//! cannot be `SET`, and cloning a session's configuration shares it. Scalar functions see
//! only their session's [`ConfigOptions`], so this is how an operator reaches its
//! runtime's clients and caches without a process global: the engine inserts one
//! `Shared` per runtime (an embedded session's, a server's sessions together, an
//! executor's tasks together), and each crate keeps its own typed slot in it
//! ([`Shared::slot`]).
//!
//! Where a configuration has none (a bare DataFusion session), [`Shared::of`] gives an
//! empty set for the call: correct, but nothing is reused between calls.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion_common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};

/// The handles one runtime shares (see the module docs).
#[derive(Clone, Default)]
pub struct Shared {
    slots: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().map_or(0, |s| s.len());
        f.debug_struct("Shared").field("slots", &slots).finish()
    }
}

impl Shared {
    /// A new, empty set: a runtime's own.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of the runtime whose session `config` is; an empty one for this call when
    /// the configuration has none.
    pub fn of(config: &ConfigOptions) -> Self {
        config.extensions.get::<Self>().cloned().unwrap_or_default()
    }

    /// The slot of type `T`, created empty on first use. Each crate keeps its shared state
    /// in a type of its own, so the compiler checks what each slot holds.
    pub fn slot<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let entry = slots
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>);
        match Arc::clone(entry).downcast::<T>() {
            Ok(slot) => slot,
            // unreachable: a slot is only ever inserted under its own type's id
            Err(_) => {
                let slot = Arc::new(T::default());
                *entry = Arc::clone(&slot) as Arc<dyn Any + Send + Sync>;
                slot
            }
        }
    }

    /// Whether `self` and `other` are the same runtime's set.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
    }
}

impl ConfigExtension for Shared {
    const PREFIX: &'static str = "framefusion_shared";
}

impl ExtensionOptions for Shared {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, _value: &str) -> datafusion_common::Result<()> {
        Err(datafusion_common::DataFusionError::Configuration(format!(
            "'{key}' is not a setting: a runtime's shared clients and caches have none"
        )))
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    #[test]
    fn a_slot_is_shared_by_clones_and_by_configurations_that_carry_the_set() {
        let shared = Shared::new();
        let mut config = ConfigOptions::new();
        config.extensions.insert(shared.clone());
        let copy = config.clone();
        Shared::of(&copy)
            .slot::<Counter>()
            .0
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            shared
                .slot::<Counter>()
                .0
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(Shared::of(&copy).same_as(&shared));
        // no entries: nothing travels, nothing can be set
        assert!(
            config
                .entries()
                .iter()
                .all(|e| !e.key.starts_with("framefusion_shared"))
        );
        assert!(config.set("framefusion_shared.anything", "1").is_err());
        // a configuration without a set gets a new, empty one each time
        let bare = ConfigOptions::new();
        assert!(!Shared::of(&bare).same_as(&Shared::of(&bare)));
    }
}
