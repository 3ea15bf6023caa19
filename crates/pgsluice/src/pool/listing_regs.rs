//! The lists of entries ([`InfoList`]) and the guards that keep an entry listed for as
//! long as its connection lives ([`ClientReg`], [`ServerReg`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ClientInfo, ServerInfo};
use crate::sync::LockExt;

/// A list of entries keyed by id, behind a short-held lock.
#[derive(Debug)]
pub struct InfoList<T> {
    map: Mutex<BTreeMap<u64, Arc<T>>>,
}

impl<T> Default for InfoList<T> {
    fn default() -> Self {
        InfoList {
            map: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T> InfoList<T> {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<T>>> {
        self.map.locked()
    }

    /// Adds an entry.
    pub fn insert(&self, id: u64, v: Arc<T>) {
        self.lock().insert(id, v);
    }

    /// Removes an entry.
    pub fn remove(&self, id: u64) -> Option<Arc<T>> {
        self.lock().remove(&id)
    }

    /// Looks an entry up.
    pub fn get(&self, id: u64) -> Option<Arc<T>> {
        self.lock().get(&id).cloned()
    }

    /// Calls `f` on every entry, under the list's lock (keep `f` short).
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        for v in self.lock().values() {
            f(v);
        }
    }

    /// Every entry, in id order.
    pub fn snapshot(&self) -> Vec<Arc<T>> {
        self.lock().values().cloned().collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Keeps a server connection in its pool's list; dropping it (when the connection is
/// closed) removes the entry.
#[derive(Debug)]
pub(crate) struct ServerReg {
    pub(crate) info: Arc<ServerInfo>,
    list: Arc<InfoList<ServerInfo>>,
}

impl ServerReg {
    pub(crate) fn new(info: ServerInfo, list: Arc<InfoList<ServerInfo>>) -> ServerReg {
        let info = Arc::new(info);
        list.insert(info.id, info.clone());
        ServerReg { info, list }
    }
}

impl Drop for ServerReg {
    fn drop(&mut self) {
        self.list.remove(self.info.id);
    }
}

/// Keeps a client in its pool's list while its session runs.
#[derive(Debug)]
pub struct ClientReg {
    info: Arc<ClientInfo>,
    list: Arc<InfoList<ClientInfo>>,
}

impl ClientReg {
    /// Registers `info` in `list` until the guard drops.
    pub fn new(info: Arc<ClientInfo>, list: Arc<InfoList<ClientInfo>>) -> ClientReg {
        list.insert(info.id, info.clone());
        ClientReg { info, list }
    }

    /// The entry.
    pub fn info(&self) -> &Arc<ClientInfo> {
        &self.info
    }
}

impl Drop for ClientReg {
    fn drop(&mut self) {
        self.list.remove(self.info.id);
    }
}
