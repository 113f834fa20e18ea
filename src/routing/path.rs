//! Path matching for one host: a hash map for `Exact` paths and a segment trie for `Prefix` paths.

use std::collections::HashMap;

use crate::model::PathKind;

use super::Target;

/// The paths of one host.
#[derive(Debug, Default)]
pub struct PathTable {
    exact: HashMap<Box<str>, Target>,
    prefix: PrefixNode,
}

#[derive(Debug, Default)]
struct PrefixNode {
    backend: Option<Target>,
    children: HashMap<Box<str>, PrefixNode>,
}

/// Path elements as Ingress defines them: split on `/`, empty elements ignored, so a trailing slash does
/// not matter.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl PathTable {
    /// Adds a path; the first rule for the same path and kind wins.
    pub fn insert(&mut self, path: &str, kind: PathKind, backend: Target) {
        match kind {
            PathKind::Exact => {
                self.exact.entry(path.into()).or_insert(backend);
            }
            PathKind::Prefix => {
                let node = segments(path).fold(&mut self.prefix, |node, seg| {
                    node.children.entry(seg.into()).or_default()
                });
                node.backend.get_or_insert(backend);
            }
        }
    }

    /// The target of the longest matching path. An `Exact` match covers the whole path, so it is at least
    /// as long as any prefix match and wins ties.
    pub fn lookup(&self, path: &str) -> Option<&Target> {
        if let Some(b) = self.exact.get(path) {
            return Some(b);
        }
        let mut node = &self.prefix;
        let mut best = node.backend.as_ref();
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if node.backend.is_some() {
                        best = node.backend.as_ref();
                    }
                }
                None => break,
            }
        }
        best
    }
}
