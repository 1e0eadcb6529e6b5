//! The in-memory data behind the resource endpoints.
//!
//! Each [`crate::router`] call gets its own freshly seeded [`Store`], so
//! gateway tests running in parallel never see each other's writes. Maps are
//! `BTreeMap`s so list endpoints answer in a stable (alphabetical) order that
//! tests can assert on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

/// An item or a product: both have the same shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Item {
    pub(crate) name: String,
    pub(crate) price: f64,
    pub(crate) category: Option<String>,
}

impl Item {
    fn seed(name: &str, price: f64, category: &str) -> (String, Item) {
        let item = Item { name: name.to_owned(), price, category: Some(category.to_owned()) };
        (name.to_owned(), item)
    }
}

/// A category as answered: its name and the names of the items filed in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Category {
    pub(crate) name: String,
    pub(crate) items: Vec<String>,
}

/// Everything the mock remembers.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) items: BTreeMap<String, Item>,
    pub(crate) products: BTreeMap<String, Item>,
    pub(crate) categories: BTreeSet<String>,
}

impl Store {
    /// The seed data every new router starts from.
    pub(crate) fn seeded() -> Self {
        Self {
            items: BTreeMap::from([
                Item::seed("chair", 15.99, "furniture"),
                Item::seed("desk", 89.5, "furniture"),
            ]),
            products: BTreeMap::from([
                Item::seed("lamp", 24.99, "lighting"),
                Item::seed("bookshelf", 74.0, "furniture"),
            ]),
            categories: BTreeSet::from(["furniture".to_owned()]),
        }
    }

    /// The category `name` with the items currently filed under it.
    /// Membership is derived from the items' `category` field, so it is
    /// always up to date.
    pub(crate) fn category(&self, name: &str) -> Category {
        let items = self
            .items
            .values()
            .filter(|item| item.category.as_deref() == Some(name))
            .map(|item| item.name.clone())
            .collect();
        Category { name: name.to_owned(), items }
    }
}

/// A `Store` shared between handlers.
#[derive(Debug, Clone)]
pub(crate) struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    pub(crate) fn seeded() -> Self {
        Self(Arc::new(Mutex::new(Store::seeded())))
    }

    /// Locks the store. A handler that panicked mid-update cannot leave the
    /// maps structurally broken, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_furniture_holds_chair_and_desk() {
        let store = Store::seeded();
        assert_eq!(store.category("furniture").items, ["chair", "desk"]);
        assert!(store.category("nothing").items.is_empty());
    }
}
