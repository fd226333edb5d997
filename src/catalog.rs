//! The catalog: every pipeline the server knows, as apps (spark-jobserver's "binaries", which
//! in Floe are pipeline bundles: one YAML pipeline each), and the one place they change.
//!
//! An upload is validated before anything is stored (400 with every problem, each naming its
//! line and field), its jobs planned on their inputs' schemas too ([`crate::plan_check`]); a
//! valid upload becomes the app's next version. The pipelines folder is
//! registered at start-up as apps too, one per pipeline, named after it, each file read and
//! parsed once (its stored version is not parsed again), so the YAML pipelines and uploaded
//! bundles are one namespace. A job holds the `Arc<App>` it started
//! with, so re-uploading an app never changes a job already running.
//!
//! Every change (a new version, a deletion) is published, in the order it happened, to the
//! [`CatalogListener`]s subscribed (the scheduler): an upload, a replacement or a deletion
//! takes effect everywhere before the request that made it is answered.
//!
//! The store keeps the last `limits.binary_versions` versions of each app: an upload deletes
//! older ones, with their bytes unless a kept version has the same content. A job running on
//! a deleted version is unaffected, since it holds the parsed pipeline, not the bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::job::JobRegistry;
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::{Pipeline, PipelineErrors, check_name, parse_pipeline};
use crate::plan_check;
use crate::store::{BinaryMeta, Store, StoreError};

/// One version of an app, validated.
#[derive(Debug)]
pub struct App {
    pub meta: BinaryMeta,
    /// The pipeline, renamed to the app's name: results are stored under it.
    pub pipeline: Arc<Pipeline>,
    /// Where this version came from.
    pub source: AppSource,
}

impl App {
    pub fn name(&self) -> &str {
        &self.meta.app
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadName(String),
    #[error("Binary is not a valid pipeline bundle")]
    Invalid(Vec<String>),
    #[error(transparent)]
    DefinedByFile(#[from] DefinedByFile),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An upload or a delete of an app that a file of the pipelines folder defines: the file owns
/// the name (it would come back at the next start), so the change is refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "app {app} is defined by the file {} of the server's pipelines folder, which it is \
     registered from at every start: change or remove that file, or upload under another name",
    .file.display()
)]
pub struct DefinedByFile {
    pub app: String,
    pub file: PathBuf,
}

/// Why an app could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    DefinedByFile(#[from] DefinedByFile),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the current version of an app came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// A file of the server's pipelines folder, which owns the name.
    File(PathBuf),
    /// `POST /binaries/{app}`.
    Upload,
}

/// Why a pipeline of the server's pipelines folder could not be registered at start-up.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// A source path of the pipeline leaves the folder's data roots.
    #[error("{0}")]
    OutsideRoots(PipelineErrors),
    /// Storing the pipeline as an app version failed; the message is the whole cause chain,
    /// as start-up prints only this message.
    #[error("{}", crate::error::error_chain(.0))]
    Store(#[source] StoreError),
}

/// `JobServer::recover` still returns its start-up errors as text.
/// A change of the catalog, as its listeners see it.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    /// A new version of an app (an upload, a file of the pipelines folder, the stored version
    /// loaded at start), or the current one when a listener subscribes.
    Put(Arc<App>),
    /// The app was deleted.
    Removed(String),
}

/// Told of every change of the catalog, in order. Called with the catalog's change lock held:
/// it must not change the catalog itself.
pub trait CatalogListener: Send + Sync {
    fn catalog_changed(&self, change: &CatalogChange);
}

/// The latest version of every app, in memory, backed by the store.
pub struct Catalog {
    latest: RwLock<BTreeMap<String, Arc<App>>>,
    /// The listeners; the lock also serialises each change with its publication, so every
    /// listener sees the changes in the order the map went through them.
    changing: Mutex<Vec<Arc<dyn CatalogListener>>>,
    /// The roots uploaded pipelines read within.
    upload_roots: Arc<DataRoots>,
    /// The roots pipelines of the pipelines folder read within.
    folder_roots: Arc<DataRoots>,
    /// Versions kept per app in the store (`limits.binary_versions`).
    keep_versions: usize,
}

/// Validates `bytes` as a pipeline for app `name` that reads within `roots`.
fn validate(
    name: &str,
    bytes: &[u8],
    registry: &JobRegistry,
    roots: &Arc<DataRoots>,
) -> Result<Pipeline, Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![format!(
            "binary `{name}` is not UTF-8 text (byte {}): Floe's binaries are pipeline YAML, \
             not jars, eggs or wheels",
            e.valid_up_to()
        )]
    })?;
    let messages =
        |errors: PipelineErrors| errors.0.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let mut pipeline = parse_pipeline(text, Path::new(&format!("binary `{name}`")), registry)
        .and_then(|pipeline| pipeline.confine(roots.clone(), text))
        .map_err(messages)?;
    pipeline.name = name.to_owned();
    Ok(pipeline)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("apps", &self.read().len())
            .field("keep_versions", &self.keep_versions)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    pub fn new(
        upload_roots: Arc<DataRoots>,
        folder_roots: Arc<DataRoots>,
        keep_versions: usize,
    ) -> Catalog {
        Catalog {
            latest: RwLock::default(),
            changing: Mutex::new(Vec::new()),
            upload_roots,
            folder_roots,
            keep_versions,
        }
    }

    /// Subscribes `listener` to every later change, after telling it of every app there is
    /// now (as [`CatalogChange::Put`]), so it misses nothing in between.
    pub fn subscribe(&self, listener: Arc<dyn CatalogListener>) {
        let mut listeners = self.listeners();
        for app in self.all() {
            listener.catalog_changed(&CatalogChange::Put(app));
        }
        listeners.push(listener);
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn CatalogListener>>> {
        self.changing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to the map and tells the listeners.
    fn publish(&self, listeners: &[Arc<dyn CatalogListener>], change: CatalogChange) {
        match &change {
            CatalogChange::Put(app) => {
                self.write().insert(app.name().to_owned(), app.clone());
            }
            CatalogChange::Removed(name) => {
                self.write().remove(name);
            }
        }
        for listener in listeners {
            listener.catalog_changed(&change);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<App>> {
        self.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<App>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<App>>> {
        self.latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<App>>> {
        self.latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates an upload (HTTP) as a new version of `name`, reading within the data roots
    /// only (an upload never gets the operator's roots), stores it, and deletes the versions
    /// beyond the last `keep_versions`. Re-uploading the same bytes as the latest version
    /// stores nothing; it returns that version, confined to the upload roots.
    pub fn upload(
        &self,
        store: &Store,
        registry: &JobRegistry,
        name: &str,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Arc<App>, UploadError> {
        check_name(name).map_err(|e| UploadError::BadName(format!("app name: {e}")))?;
        self.refuse_if_file(name)?;
        let roots = &self.upload_roots;
        let pipeline = validate(name, bytes, registry, roots).map_err(UploadError::Invalid)?;
        // Only an upload is planned on its inputs' schemas: a stored or folder pipeline that
        // validated once must not stop loading because its data changed.
        let text = String::from_utf8_lossy(bytes);
        plan_check::check_pipeline(&pipeline, &text)
            .into_result()
            .map_err(|errors| {
                UploadError::Invalid(errors.0.iter().map(|d| d.to_string()).collect())
            })?;
        Ok(self.install(store, bytes, pipeline, roots, AppSource::Upload, now)?)
    }

    /// Registers the pipelines of the server's pipelines folder, each parsed once (by
    /// [`crate::pipeline::load_dir_with_texts`]) from `text`, as apps named after them, reading
    /// within the folder roots. Errors name the file and the problem.
    pub fn register_folder(
        &self,
        store: &Store,
        pipelines: Vec<(Pipeline, String)>,
        now: DateTime<Utc>,
    ) -> Result<(), FolderError> {
        for (pipeline, text) in pipelines {
            let pipeline = pipeline
                .confine(self.folder_roots.clone(), &text)
                .map_err(FolderError::OutsideRoots)?;
            // Its name in the folder: where the folder is on the host is not the client's
            // to know.
            let file = PathBuf::from(pipeline.file.file_name().unwrap_or_default());
            let source = AppSource::File(file);
            self.install(
                store,
                text.as_bytes(),
                pipeline,
                &self.folder_roots,
                source,
                now,
            )
            .map_err(FolderError::Store)?;
        }
        Ok(())
    }

    /// Makes `pipeline` (validated, confined to `roots`, parsed from `bytes`) the latest
    /// version of its name: stored as a new version unless the latest has the same bytes, and
    /// published.
    fn install(
        &self,
        store: &Store,
        bytes: &[u8],
        pipeline: Pipeline,
        roots: &Arc<DataRoots>,
        source: AppSource,
        now: DateTime<Utc>,
    ) -> Result<Arc<App>, StoreError> {
        let name = pipeline.name.clone();
        let sha = sha256_hex(bytes);
        let listeners = self.listeners();
        if let Some(current) = self.get(&name)
            && current.meta.sha256 == sha
        {
            let same_roots = current
                .pipeline
                .data_roots
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, roots));
            if same_roots && current.source == source {
                return Ok(current);
            }
            let app = Arc::new(App {
                meta: current.meta.clone(),
                pipeline: Arc::new(pipeline),
                source,
            });
            self.publish(&listeners, CatalogChange::Put(app.clone()));
            return Ok(app);
        }
        let meta = store.put_binary(&name, bytes, &sha, now, self.keep_versions)?;
        let app = Arc::new(App {
            meta,
            pipeline: Arc::new(pipeline),
            source,
        });
        self.publish(&listeners, CatalogChange::Put(app.clone()));
        Ok(app)
    }

    /// Loads the latest stored version of every app, as uploads, in place of what the catalog
    /// held, except those named in `skip` (the pipelines folder registers them from their
    /// files next: parsing the stored version too would be for nothing). A stored bundle this
    /// Floe no longer accepts is skipped with a warning rather than stopping the server.
    pub fn load_stored(
        &self,
        store: &Store,
        registry: &JobRegistry,
        skip: &std::collections::BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let mut loaded = BTreeMap::new();
        for (name, meta) in store.binaries_latest()? {
            if skip.contains(&name) {
                continue;
            }
            let Some(bytes) = store.binary_blob(&meta.sha256)? else {
                tracing::warn!(app = %name, "stored binary has no content; skipped");
                continue;
            };
            match validate(&name, &bytes, registry, &self.upload_roots) {
                Ok(pipeline) => {
                    loaded.insert(
                        name,
                        Arc::new(App {
                            meta,
                            pipeline: Arc::new(pipeline),
                            source: AppSource::Upload,
                        }),
                    );
                }
                Err(errors) => {
                    tracing::warn!(app = %name, errors = %errors.join("; "), "stored binary no longer validates; skipped");
                }
            }
        }
        let listeners = self.listeners();
        let gone: Vec<String> = self
            .read()
            .keys()
            .filter(|name| !loaded.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.publish(&listeners, CatalogChange::Removed(name));
        }
        for app in loaded.into_values() {
            self.publish(&listeners, CatalogChange::Put(app));
        }
        Ok(())
    }

    /// Removes `name` from the store and memory, and tells the listeners; returns whether it
    /// existed.
    pub fn delete(&self, store: &Store, name: &str) -> Result<bool, DeleteError> {
        self.refuse_if_file(name)?;
        let listeners = self.listeners();
        let deleted = store.delete_binary(name)?;
        let existed = self.get(name).is_some();
        if existed {
            self.publish(&listeners, CatalogChange::Removed(name.to_owned()));
        }
        Ok(deleted > 0 || existed)
    }

    fn refuse_if_file(&self, name: &str) -> Result<(), DefinedByFile> {
        match self.get(name).map(|app| app.source.clone()) {
            Some(AppSource::File(file)) => Err(DefinedByFile {
                app: name.to_owned(),
                file,
            }),
            _ => Ok(()),
        }
    }

    /// The stored bytes of the latest version of `name`.
    pub fn content(&self, store: &Store, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get(name) {
            Some(app) => store.binary_blob(&app.meta.sha256),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every change it is told of, as `put <name> v<version>` or `removed <name>`.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl CatalogListener for Recorder {
        fn catalog_changed(&self, change: &CatalogChange) {
            let line = match change {
                CatalogChange::Put(app) => format!("put {} v{}", app.name(), app.meta.version),
                CatalogChange::Removed(name) => format!("removed {name}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    fn pipeline_yaml(description: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/shop.yaml"))
            .unwrap()
            .replace("rolled up hourly", description)
    }

    #[test]
    fn listeners_get_what_is_there_then_every_change_in_order() {
        let store = Store::open_temporary().unwrap();
        let registry = JobRegistry::new();
        let roots = Arc::new(DataRoots::new(Path::new("data"), &[]));
        let catalog = Catalog::new(roots.clone(), roots, 2);
        let now = Utc::now();
        let upload = |name: &str, yaml: &str| {
            catalog
                .upload(&store, &registry, name, yaml.as_bytes(), now)
                .unwrap()
        };
        upload("a", &pipeline_yaml("one"));
        let recorder = Arc::new(Recorder::default());
        catalog.subscribe(recorder.clone());
        upload("b", &pipeline_yaml("one"));
        upload("a", &pipeline_yaml("two"));
        // The same bytes again are no change.
        upload("a", &pipeline_yaml("two"));
        // A refused upload is none either.
        assert!(matches!(
            catalog.upload(&store, &registry, "a", b"jobs: [", now),
            Err(UploadError::Invalid(_))
        ));
        assert!(catalog.delete(&store, "b").unwrap());
        assert!(!catalog.delete(&store, "b").unwrap());
        catalog
            .load_stored(&store, &registry, &Default::default())
            .unwrap();
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                "put a v1",
                "put b v1",
                "put a v2",
                "removed b",
                // Loaded from the store: what is there.
                "put a v2",
            ]
        );
        assert!(catalog.get("b").is_none());
    }
}
