//! The node's CNI network config directory: which file the runtime uses, and rewriting it.
//!
//! Runtimes (containerd, CRI-O, the kubelet's libcni) take the first file in lexical order
//! whose name ends in `.conf`, `.conflist` or `.json` and that loads as a valid config; this
//! picks the same file (or the one named with `--cni-conf-name`). A single-plugin `.conf` or
//! `.json` file that gets our entry is rewritten as `<stem>.conflist` and the original removed,
//! since only a list can chain plugins.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::conflist::{self, FieldError, NetworkConfig};
use super::files;

/// The extensions runtimes read.
const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// A network config file that failed to load; the message names the file and, where there is
/// one, the field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetDirError {
    #[error("listing {dir}: {source}")]
    List { dir: PathBuf, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not JSON: {detail}")]
    NotJson { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Field { path: PathBuf, source: FieldError },
    #[error("no usable CNI network config in {dir} (a runtime reads *.conf, *.conflist and *.json){skipped}")]
    NoConfig { dir: PathBuf, skipped: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// One loaded network config file.
#[derive(Clone, Debug)]
pub(crate) struct ConfigFile {
    pub(crate) path: PathBuf,
    pub(crate) config: NetworkConfig,
}

/// The files a runtime would consider, in the order it considers them.
pub(crate) fn candidates(dir: &Path) -> Result<Vec<PathBuf>, NetDirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| NetDirError::List { dir: dir.to_path_buf(), source })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads and checks one network config file.
pub(crate) fn load(path: &Path) -> Result<ConfigFile, NetDirError> {
    let bytes = std::fs::read(path).map_err(|source| NetDirError::Read { path: path.to_path_buf(), source })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| NetDirError::NotJson { path: path.to_path_buf(), detail: e.to_string() })?;
    let config = conflist::classify(value).map_err(|source| NetDirError::Field { path: path.to_path_buf(), source })?;
    Ok(ConfigFile { path: path.to_path_buf(), config })
}

/// The config the runtime uses: `name` in `dir` if given (a `.conf` already converted to
/// `.conflist` is found under its new name), else the first valid one.
pub(crate) fn primary(dir: &Path, name: Option<&str>) -> Result<ConfigFile, NetDirError> {
    if let Some(name) = name {
        let path = dir.join(name);
        let converted = path.with_extension("conflist");
        return if !path.exists() && converted.exists() { load(&converted) } else { load(&path) };
    }
    let mut skipped = Vec::new();
    for path in candidates(dir)? {
        match load(&path) {
            Ok(file) => return Ok(file),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    let skipped = if skipped.is_empty() { String::new() } else { format!("; skipped: {}", skipped.join("; ")) };
    Err(NetDirError::NoConfig { dir: dir.to_path_buf(), skipped })
}

/// Writes `list` as the new content of `file`; returns the path written (a single config's
/// list goes to `<stem>.conflist`, and the single config file is removed).
pub(crate) fn replace(file: &ConfigFile, list: &Map<String, Value>) -> Result<PathBuf, NetDirError> {
    let target = match file.config {
        NetworkConfig::List(_) => file.path.clone(),
        NetworkConfig::Single(_) => file.path.with_extension("conflist"),
    };
    let mut text = serde_json::to_vec_pretty(list).expect("a JSON object always serialises");
    text.push(b'\n');
    files::write_if_changed(&target, &text, 0o644)
        .map_err(|source| NetDirError::Write { path: target.clone(), source })?;
    if target != file.path {
        files::remove_if_present(&file.path)
            .map_err(|source| NetDirError::Write { path: file.path.clone(), source })?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn write(dir: &Path, name: &str, value: &Value) {
        std::fs::write(dir.join(name), serde_json::to_vec(value).unwrap()).unwrap();
    }

    #[test]
    fn picks_the_first_valid_file_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let list = json!({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]});
        write(dir.path(), "20-b.conflist", &list);
        write(dir.path(), "30-a.conf", &json!({"cniVersion": "1.0.0", "name": "a", "type": "ptp"}));
        std::fs::write(dir.path().join("10-broken.conflist"), "{").unwrap();
        std::fs::write(dir.path().join("05-notes.txt"), "not a config").unwrap();
        std::fs::write(dir.path().join("ZZZ-ztunnel-cni-kubeconfig"), "apiVersion: v1").unwrap();
        let file = primary(dir.path(), None).unwrap();
        assert_eq!(file.path, dir.path().join("20-b.conflist"), "10-broken is skipped as a runtime skips it");
        assert!(matches!(file.config, NetworkConfig::List(_)));
        let named = primary(dir.path(), Some("30-a.conf")).unwrap();
        assert!(matches!(named.config, NetworkConfig::Single(_)));
    }

    #[test]
    fn no_config_says_what_was_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-x.conflist", &json!({"cniVersion": "1.0.0", "plugins": [{"name": "x"}]}));
        let err = primary(dir.path(), None).unwrap_err().to_string();
        assert!(err.starts_with(&format!("no usable CNI network config in {}", dir.path().display())), "{err}");
        assert!(err.contains("10-x.conflist: plugins[0].type: missing"), "{err}");
    }

    #[test]
    fn a_single_config_is_rewritten_as_a_list() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-net.conf", &json!({"cniVersion": "0.4.0", "name": "net", "type": "bridge"}));
        let file = primary(dir.path(), None).unwrap();
        let (list, _) = conflist::chain(file.config.clone(), &json!({"type": "ztunnel-cni"}));
        let written = replace(&file, &list).unwrap();
        assert_eq!(written, dir.path().join("10-net.conflist"));
        assert!(!dir.path().join("10-net.conf").exists());
        let again = primary(dir.path(), Some("10-net.conf")).unwrap();
        assert_eq!(again.path, written, "the old name still finds the converted file");
    }
}
