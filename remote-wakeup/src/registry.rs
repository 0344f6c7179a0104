//! The server daemon's desktops, by name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::waker::{DesktopStatus, DesktopWaker, WakeTarget};

/// Every desktop the server may have to wake. Each has one
/// [`DesktopWaker`], shared by all the memtap VMs and cownetdisk disks
/// whose state lives on it, so their wakes coalesce.
#[derive(Debug, Default)]
pub struct Registry {
    desktops: Mutex<BTreeMap<String, Arc<DesktopWaker>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The waker of `config.name`, made from `config` if it is new (an
    /// existing desktop keeps its waker and counters).
    pub fn add(&self, config: WakeTarget) -> Arc<DesktopWaker> {
        let mut desktops = self.desktops.lock().expect("registry lock poisoned: a thread panicked holding it");
        Arc::clone(desktops.entry(config.name.clone()).or_insert_with(|| Arc::new(DesktopWaker::new(config))))
    }

    /// The waker of the desktop called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<DesktopWaker>> {
        self.desktops.lock().expect("registry lock poisoned: a thread panicked holding it").get(name).cloned()
    }

    /// Every desktop's state and counters, by name.
    pub fn status(&self) -> Vec<DesktopStatus> {
        let desktops: Vec<_> = self
            .desktops
            .lock()
            .expect("registry lock poisoned: a thread panicked holding it")
            .values()
            .cloned()
            .collect();
        desktops.iter().map(|d| d.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magic::Mac;

    #[test]
    fn one_waker_per_desktop() {
        let registry = Registry::new();
        let config = |name: &str| {
            WakeTarget::new(
                name,
                Mac([2, 0, 0, 0, 0, 1]),
                "10.0.0.255".parse().unwrap(),
                "10.0.0.2:7410".parse().unwrap(),
            )
        };
        let a = registry.add(config("b-desk"));
        let again = registry.add(config("b-desk"));
        assert!(Arc::ptr_eq(&a, &again));
        registry.add(config("a-desk"));
        let names: Vec<_> = registry.status().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["a-desk", "b-desk"]);
        assert!(registry.get("c-desk").is_none());
    }
}
