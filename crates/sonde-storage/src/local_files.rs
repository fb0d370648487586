//! The local data directory as an object store, reading byte ranges without zeroing them first.
//!
//! `object_store`'s `LocalFileSystem` reads a range into a buffer it first fills with zeros, and
//! a query reads every Parquet page it decodes that way: the profile of a sampled BubbleUp over
//! 10M events put 11% of the server's CPU in that zeroing, and more in the kernel clearing the
//! fresh pages it touched. [`LocalFiles`] hands everything to `LocalFileSystem` except
//! `get_ranges` (the Parquet reader's page reads), which it reads with `Read::read_to_end` into
//! the buffer's spare capacity: the standard library reads into uninitialised memory there,
//! safely, so each byte is written once, by the kernel's copy.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

/// `LocalFileSystem` with range reads that do not zero their buffers (see the module's note).
#[derive(Debug)]
pub(crate) struct LocalFiles {
    inner: LocalFileSystem,
}

impl LocalFiles {
    /// The files under `root`.
    pub(crate) fn new(root: &std::path::Path) -> Result<LocalFiles> {
        Ok(LocalFiles {
            inner: LocalFileSystem::new_with_prefix(root)?,
        })
    }
}

impl fmt::Display for LocalFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalFiles({})", self.inner)
    }
}

/// Reads `ranges` of the file at `path`, each into a buffer of its exact size.
fn read_ranges(path: &std::path::Path, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
    let error = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFiles",
        source: format!("{}: {source}", path.display()).into(),
    };
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: location.to_string(),
            source: e.into(),
        },
        _ => error(e),
    })?;
    ranges
        .iter()
        .map(|r| {
            let want = r.end.saturating_sub(r.start);
            let mut buf = Vec::with_capacity(want as usize);
            file.seek(SeekFrom::Start(r.start)).map_err(error)?;
            (&mut file).take(want).read_to_end(&mut buf).map_err(error)?;
            if buf.len() as u64 != want {
                return Err(error(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "range {}..{} is past the file's end ({} bytes read)",
                        r.start,
                        r.end,
                        buf.len()
                    ),
                )));
            }
            Ok(Bytes::from(buf))
        })
        .collect()
}

#[async_trait]
impl ObjectStore for LocalFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let (location, ranges) = (location.clone(), ranges.to_vec());
        tokio::task::spawn_blocking(move || read_ranges(&path, &location, &ranges))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFiles",
                source: Box::new(e),
            })?
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn ranges_read_as_the_plain_store_reads_them_and_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("seg.parquet"), &body).unwrap();
        let (ours, plain) = (
            LocalFiles::new(dir.path()).unwrap(),
            LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
        );
        let file = Path::from("seg.parquet");
        let ranges = [0..1, 10..70_000, 99_999..100_000, 500..500, 4096..8192];
        let got = ours.get_ranges(&file, &ranges).await.unwrap();
        assert_eq!(got, plain.get_ranges(&file, &ranges).await.unwrap());
        for (g, r) in got.iter().zip(&ranges) {
            assert_eq!(&g[..], &body[r.start as usize..r.end as usize]);
        }
        let past_end = [Range {
            start: 99_000,
            end: 100_001,
        }];
        let e = ours.get_ranges(&file, &past_end).await.unwrap_err();
        assert!(e.to_string().contains("past the file's end"), "{e}");
        let first = [Range { start: 0, end: 1 }];
        let e = ours.get_ranges(&Path::from("nope.parquet"), &first).await.unwrap_err();
        assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
        // Everything else is the plain store's.
        ours.put(&Path::from("a/b.json"), Bytes::from_static(b"{}").into())
            .await
            .unwrap();
        assert_eq!(
            &plain.get(&Path::from("a/b.json")).await.unwrap().bytes().await.unwrap()[..],
            b"{}"
        );
    }
}
