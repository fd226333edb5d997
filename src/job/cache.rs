//! Jobs built once per definition: a worker process receives each call's job as its
//! definition (a class and its parameters, a SQL text, a pipeline job's block) and builds it
//! again; the next call with the same definition reuses it, as the server reuses the job it
//! planned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::Job;

/// Definitions kept at most; past it the cache starts over.
const MAX_KINDS: usize = 256;

/// Built jobs by their definition's text.
#[derive(Debug, Default)]
pub struct KindCache {
    kinds: Mutex<HashMap<String, Arc<dyn Job>>>,
}

impl KindCache {
    /// The job `definition` describes, built by `build` unless it was built before.
    pub fn get_or_build<E>(
        &self,
        definition: &str,
        build: impl FnOnce() -> Result<Arc<dyn Job>, E>,
    ) -> Result<Arc<dyn Job>, E> {
        if let Some(kind) = self.lock().get(definition) {
            return Ok(kind.clone());
        }
        let kind = build()?;
        let mut kinds = self.lock();
        if kinds.len() >= MAX_KINDS {
            kinds.clear();
        }
        kinds.insert(definition.to_owned(), kind.clone());
        Ok(kind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Job>>> {
        self.kinds.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
