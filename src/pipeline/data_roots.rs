//! Where a pipeline may read source files: its data roots.
//!
//! A source path is checked twice. When the pipeline is loaded or uploaded, its template must
//! stay inside the roots as written: no `..` component, and an absolute path must start inside
//! a root (a relative one resolves against the data dir, which is always a root). That makes a
//! bad upload a validation error naming the source, the path and the rule. When a partition is
//! read, every file the template's globs match is resolved (symlinks included) and must still
//! lie inside a root, so a symlink planted in the data dir cannot lead outside it.
//!
//! `floe serve` gives uploads the configured `data_roots` (the data dir by default) and
//! pipelines from its own folder those plus `operator_data_roots`; the CLI reads the operator's
//! pipelines with the data dir plus `--data-root`s.

use std::path::{Component, Path, PathBuf};

use crate::pipeline::PathTemplate;

/// Why a source path template or a matched file is refused by the data roots. `roots` is the
/// roots as [`DataRoots::describe`] lists them.
#[derive(Debug, thiserror::Error)]
pub enum DataRootError {
    #[error("`{template}` has a `..` component; a source path may not climb out of its folder")]
    ParentComponent { template: String },
    #[error("the path holds a NUL byte")]
    NulByte,
    #[error("`{template}` is outside the data roots ({roots}); a source may read only inside them")]
    TemplateOutside { template: String, roots: String },
    #[error("cannot resolve {}: {source}", path.display())]
    Unresolvable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} leads outside the data roots ({roots}); a source reads only inside them", path.display())]
    FileOutside { path: PathBuf, roots: String },
    #[error(
        "{} has a glob character (`*`, `?`, `[`, `]`, `{{`, `}}`) in its resolved path; Floe \
         does not read such files: rename them",
        path.display()
    )]
    GlobInResolvedPath { path: PathBuf },
}

/// The folders a pipeline may read under, with the base relative paths resolve against.
#[derive(Debug, Clone)]
pub struct DataRoots {
    /// The data dir as configured: relative patterns are joined to it as written, so file
    /// paths (which run fingerprints hash) do not change with the working directory.
    base: PathBuf,
    /// Each root as given (made absolute) and as the file system resolves it, when it exists.
    roots: Vec<(PathBuf, Option<PathBuf>)>,
}

/// `path` made absolute against the working directory, with `.` and `..` removed lexically.
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut clean = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

impl DataRoots {
    /// The data dir `base` (always a root) and `extra` roots.
    pub fn new(base: &Path, extra: &[PathBuf]) -> DataRoots {
        let mut roots = Vec::new();
        for root in std::iter::once(base).chain(extra.iter().map(PathBuf::as_path)) {
            let given = absolute(root);
            if !roots.iter().any(|(known, _)| *known == given) {
                let resolved = std::fs::canonicalize(&given).ok();
                roots.push((given, resolved));
            }
        }
        DataRoots {
            base: base.to_path_buf(),
            roots,
        }
    }

    /// These roots plus `extra`.
    pub fn with_extra(&self, extra: &[PathBuf]) -> DataRoots {
        let mut all: Vec<PathBuf> = self.roots.iter().map(|(given, _)| given.clone()).collect();
        all.extend(extra.iter().cloned());
        DataRoots::new(&self.base, &all[1..])
    }

    /// The data dir: relative source paths resolve against it.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The roots, as given, for messages.
    pub fn describe(&self) -> String {
        self.roots
            .iter()
            .map(|(given, _)| given.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A source path pattern (expanded or not) resolved against the data dir.
    pub fn resolve_pattern(&self, pattern: &str) -> PathBuf {
        if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.base.join(pattern)
        }
    }

    /// Checks a source path template as written: the problem, or `None`.
    pub fn check_template(&self, template: &PathTemplate) -> Result<(), DataRootError> {
        let raw = template.raw();
        if Path::new(raw)
            .components()
            .any(|component| component == Component::ParentDir)
        {
            return Err(DataRootError::ParentComponent {
                template: raw.to_owned(),
            });
        }
        if raw.contains('\0') {
            return Err(DataRootError::NulByte);
        }
        let path = absolute(&self.resolve_pattern(raw));
        let inside = self.roots.iter().any(|(given, resolved)| {
            path.starts_with(given) || resolved.as_ref().is_some_and(|r| path.starts_with(r))
        });
        if inside {
            Ok(())
        } else {
            Err(DataRootError::TemplateOutside {
                template: raw.to_owned(),
                roots: self.describe(),
            })
        }
    }

    /// The file `path` (a glob match) resolved through symlinks, if it lies inside a root.
    ///
    /// A resolved path holding a glob character is refused too: polars expands the paths it is
    /// given as globs again (always, for NDJSON), so a file named `*` beside a link could make
    /// it read what the link points to. The message never names where a link leads.
    pub fn check_file(&self, path: &Path) -> Result<PathBuf, DataRootError> {
        let resolved =
            std::fs::canonicalize(path).map_err(|source| DataRootError::Unresolvable {
                path: path.to_path_buf(),
                source,
            })?;
        let inside = self.roots.iter().any(|(given, known)| match known {
            Some(root) => resolved.starts_with(root),
            // A root created after start-up: resolve it now.
            None => std::fs::canonicalize(given).is_ok_and(|root| resolved.starts_with(root)),
        });
        if !inside {
            return Err(DataRootError::FileOutside {
                path: path.to_path_buf(),
                roots: self.describe(),
            });
        }
        if resolved
            .to_string_lossy()
            .contains(['*', '?', '[', ']', '{', '}'])
        {
            return Err(DataRootError::GlobInResolvedPath {
                path: path.to_path_buf(),
            });
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(raw: &str) -> PathTemplate {
        PathTemplate::parse(raw).unwrap()
    }

    #[test]
    fn templates_must_stay_inside_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&data).unwrap();
        let roots = DataRoots::new(&data, std::slice::from_ref(&shared));
        assert!(
            roots
                .check_template(&template("events/date={date}/*.parquet"))
                .is_ok()
        );
        let inside = format!("{}/x/{{date}}.csv", shared.display());
        assert!(roots.check_template(&template(&inside)).is_ok());
        let err = roots
            .check_template(&template("/etc/os-release"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`/etc/os-release` is outside the data roots ("),
            "{err}"
        );
        let err = roots
            .check_template(&template("../../etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has a `..` component"), "{err}");
        let sneaky = format!("{}/../../etc/passwd", data.display());
        assert!(roots.check_template(&template(&sneaky)).is_err());
        // A sibling whose name starts like a root is not inside it.
        let sibling = format!("{}-other/x.csv", data.display());
        assert!(roots.check_template(&template(&sibling)).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn files_reached_through_symlinks_must_resolve_inside() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(data.join("events")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.csv"), "a\n1\n").unwrap();
        std::fs::write(data.join("events/ok.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("events/link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.csv"), data.join("leak.csv")).unwrap();
        let roots = DataRoots::new(&data, &[]);
        assert!(roots.check_file(&data.join("events/ok.csv")).is_ok());
        for path in [data.join("leak.csv"), data.join("events/link/secret.csv")] {
            let err = roots.check_file(&path).unwrap_err().to_string();
            assert!(err.contains("leads outside the data roots"), "{err}");
            assert!(
                !err.contains("outside/secret.csv"),
                "names where the link leads: {err}"
            );
        }
        // A glob character in a name: polars would expand it again.
        std::fs::write(data.join("events/*"), "a\n1\n").unwrap();
        let err = roots
            .check_file(&data.join("events/*"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("glob character"), "{err}");
        // A root that is itself a symlink still works.
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&data, &alias).unwrap();
        let roots = DataRoots::new(&alias, &[]);
        assert!(roots.check_file(&alias.join("events/ok.csv")).is_ok());
        let through = format!("{}/events/*.csv", alias.display());
        assert!(roots.check_template(&template(&through)).is_ok());
    }
}
