//! Small JSON documents the server keeps beside the catalog: derived columns today, and the
//! other objects users define (markers, boards, triggers, SLOs) as they come.
//!
//! Each document is one file, `documents/{name}.json`, in the data directory or in the bucket
//! that holds the segments, so a second server over the same bucket reads the same ones. A
//! write replaces the whole document the way the catalog is replaced: locally a temporary
//! file, fsync, rename, directory fsync; remotely one PUT (atomic and durable when answered).
//! A crash leaves the old document or the new one, never a mix. Changes through this server
//! are serialised by one lock (read, change, write); two servers changing the same document
//! at once keep the last write.

use crate::wal::sync_dir;
use crate::{Error, Result};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

const DIR: &str = "documents";

/// Where documents live, and the lock that orders this server's changes to them.
#[derive(Debug)]
pub struct Documents {
    place: Place,
    changes: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
enum Place {
    Local(PathBuf),
    Remote(Arc<dyn ObjectStore>),
}

impl Documents {
    /// Documents in `dir/documents/`.
    pub fn local(dir: PathBuf) -> Documents {
        Documents {
            place: Place::Local(dir.join(DIR)),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Documents under `documents/` in an object store.
    pub fn remote(store: Arc<dyn ObjectStore>) -> Documents {
        Documents {
            place: Place::Remote(store),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The document `name`, or its default when none was written yet.
    pub async fn load<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        let corrupt = |reason: String| Error::CatalogCorrupt {
            path: PathBuf::from(format!("{DIR}/{name}.json")),
            reason,
        };
        let bytes = match &self.place {
            Place::Local(dir) => match std::fs::read(dir.join(format!("{name}.json"))) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
                Err(e) => return Err(e.into()),
            },
            Place::Remote(store) => match store.get(&Self::path(name)).await {
                Ok(r) => r.bytes().await?.to_vec(),
                Err(object_store::Error::NotFound { .. }) => return Ok(T::default()),
                Err(e) => return Err(e.into()),
            },
        };
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))
    }

    /// Reads `name`, lets `change` modify it, and writes it back whole when `change` succeeds;
    /// answers what `change` answered. Changes through this server happen one at a time.
    pub async fn update<T, R, E>(&self, name: &str, change: impl FnOnce(&mut T) -> Result<R, E>) -> Result<Result<R, E>>
    where
        T: DeserializeOwned + Serialize + Default,
    {
        let _one_at_a_time = self.changes.lock().await;
        let mut doc: T = self.load(name).await?;
        let answer = match change(&mut doc) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = serde_json::to_vec_pretty(&doc).expect("documents serialise");
        match &self.place {
            Place::Local(dir) => {
                let (dir, file) = (dir.clone(), format!("{name}.json"));
                tokio::task::spawn_blocking(move || replace_file(&dir, &file, &bytes))
                    .await
                    .map_err(|e| Error::TaskFailed(format!("document write panicked: {e}")))??;
            }
            Place::Remote(store) => {
                store.put(&Self::path(name), bytes.into()).await?;
            }
        }
        Ok(Ok(answer))
    }

    fn path(name: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{DIR}/{name}.json"))
    }
}

/// Replaces `dir/file` whole and durably: a temporary file beside it, fsync, rename, directory
/// fsync — a crash leaves the old file or the new one. (The catalog is written the same way.)
pub(crate) fn replace_file(dir: &std::path::Path, file: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{file}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(file))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn written_whole_and_read_back_locally_and_remotely() {
        let d = tempfile::tempdir().unwrap();
        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for docs in [
            Documents::local(d.path().to_path_buf()),
            Documents::remote(memory.clone()),
        ] {
            let empty: BTreeMap<String, u32> = docs.load("things").await.unwrap();
            assert!(empty.is_empty());
            let r: Result<usize, String> = docs
                .update("things", |m: &mut BTreeMap<String, u32>| {
                    m.insert("a".into(), 1);
                    Ok(m.len())
                })
                .await
                .unwrap();
            assert_eq!(r, Ok(1));
            // A refused change writes nothing.
            let r: Result<(), String> = docs
                .update("things", |m: &mut BTreeMap<String, u32>| {
                    m.clear();
                    Err("no".into())
                })
                .await
                .unwrap();
            assert!(r.is_err());
            let back: BTreeMap<String, u32> = docs.load("things").await.unwrap();
            assert_eq!(back.get("a"), Some(&1));
        }
        // A second handle over the same bucket sees what the first wrote.
        let other = Documents::remote(memory);
        let back: BTreeMap<String, u32> = other.load("things").await.unwrap();
        assert_eq!(back.len(), 1);
    }
}
