//! The media store: files named by the SHA-256 of their content (`sha256/ab/cd/abcd…`), so
//! uploads of the same content keep one copy. An upload streams into `uploads/<random>` while
//! it is hashed and counted, and takes its content's name only once it is complete: nothing
//! half-written is ever under a content name, and no upload sits whole in memory.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream::BoxStream};
use ganglion_config::S3Config;
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart, aws::AmazonS3Builder,
    local::LocalFileSystem, path::Path, prefix::PrefixStore,
};
use sha2::{Digest, Sha256};

/// Bodies up to this size are stored in one write; larger ones in parts of this size.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was cut short: {0}")]
    Body(String),
    #[error("media store: {0}")]
    Store(#[from] object_store::Error),
    #[error("media store directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
}

/// An upload's content as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
}

/// A stored file being read.
pub struct Download {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
}

impl MediaStore {
    /// A store in a directory (a shared filesystem when several media workers use it).
    pub fn directory(dir: &std::path::Path) -> Result<MediaStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(MediaStore { store: Arc::new(store) })
    }

    /// A store in an S3-compatible bucket; credentials not in `config` come from `AWS_*`
    /// environment variables.
    pub fn s3(config: &S3Config) -> Result<MediaStore, StoreError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            // Path-style requests (`endpoint/bucket/key`), which every S3-compatible store serves.
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
        let store = match config.prefix.as_deref().filter(|prefix| !prefix.is_empty()) {
            Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
            None => store,
        };
        Ok(MediaStore { store })
    }

    /// Stores `body` (refusing it past `limit` bytes) and returns its content's hash and size.
    pub async fn put<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
        limit: u64,
    ) -> Result<Stored, StoreError> {
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut next = async |hasher: &mut Sha256, size: &mut u64| -> Result<Option<Bytes>, StoreError> {
            match body.next().await {
                None => Ok(None),
                Some(Err(error)) => Err(StoreError::Body(error.to_string())),
                Some(Ok(chunk)) => {
                    *size += chunk.len() as u64;
                    if *size > limit {
                        return Err(StoreError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    Ok(Some(chunk))
                }
            }
        };
        let temp = Path::from(format!("uploads/{}", random_name()));
        // Small files (most of them) go in one write.
        let mut first = BytesMut::new();
        let mut more = None;
        while first.len() < PART_BYTES {
            match next(&mut hasher, &mut size).await? {
                Some(chunk) => first.extend_from_slice(&chunk),
                None => break,
            }
        }
        if first.len() >= PART_BYTES {
            more = Some(first.freeze());
        } else {
            self.store.put(&temp, PutPayload::from(first.freeze())).await?;
        }
        if let Some(first) = more {
            let upload = self.store.put_multipart(&temp).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            writer.put(first);
            let streamed = async {
                while let Some(chunk) = next(&mut hasher, &mut size).await? {
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    writer.put(chunk);
                }
                Ok::<(), StoreError>(())
            }
            .await;
            if let Err(error) = streamed {
                let _ = writer.abort().await;
                return Err(error);
            }
            writer.finish().await?;
        }
        let sha256 = hex(&hasher.finalize());
        let name = content_path(&sha256);
        let placed = match self.store.head(&name).await {
            // The content is stored already: one copy is enough.
            Ok(_) => self.store.delete(&temp).await,
            Err(object_store::Error::NotFound { .. }) => self.store.rename(&temp, &name).await,
            Err(error) => Err(error),
        };
        if let Err(error) = placed {
            let _ = self.store.delete(&temp).await;
            return Err(error.into());
        }
        Ok(Stored { sha256, size })
    }

    /// Deletes what uploads cut off by a crash left under `uploads/` (an upload in progress keeps
    /// its file fresh, and on S3 its parts are not an object until it completes); how many.
    pub async fn sweep_uploads(&self, older_than: std::time::Duration) -> Result<usize, StoreError> {
        let cutoff = chrono_cutoff(older_than);
        let mut listing = self.store.list(Some(&Path::from("uploads")));
        let mut stale = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if meta.last_modified <= cutoff {
                stale.push(meta.location);
            }
        }
        for location in &stale {
            match self.store.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(stale.len())
    }

    /// The stored file with this content hash (`None` if the store does not have it).
    pub async fn get(&self, sha256: &str) -> Result<Option<Download>, StoreError> {
        match self.store.get(&content_path(sha256)).await {
            Ok(result) => {
                let size = result.meta.size;
                let body = match result.payload {
                    // object_store reads a local file 8 KiB per blocking task; far fewer, larger
                    // reads serve a large file several times faster.
                    GetResultPayload::File(file, _) => file_stream(tokio::fs::File::from_std(file)),
                    GetResultPayload::Stream(stream) => stream,
                };
                Ok(Some(Download { size, body }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

/// Bytes a local file is read in.
const READ_BYTES: usize = 256 * 1024;

fn file_stream(file: tokio::fs::File) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    use tokio::io::AsyncReadExt as _;
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buffer = BytesMut::with_capacity(READ_BYTES);
        let read = file.read_buf(&mut buffer).await.map_err(|source| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(source),
        })?;
        Ok((read > 0).then(|| (buffer.freeze(), file)))
    })
    .boxed()
}

/// `now - older_than` in the store's clock type.
fn chrono_cutoff(older_than: std::time::Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX)
}

fn content_path(sha256: &str) -> Path {
    Path::from(format!("sha256/{}/{}/{sha256}", &sha256[..2], &sha256[2..4]))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn random_name() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..24).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::iter(parts.into_iter().map(|part| Ok(Bytes::from(part))))
    }

    async fn read(store: &MediaStore, sha256: &str) -> Vec<u8> {
        let download = store.get(sha256).await.unwrap().unwrap();
        let mut out = Vec::new();
        let mut body = download.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(out.len() as u64, download.size);
        out
    }

    #[tokio::test]
    async fn small_and_multipart_uploads_are_stored_by_content_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::directory(dir.path()).unwrap();
        let small = store.put(chunks(vec![b"hello ".to_vec(), b"world".to_vec()]), 100).await.unwrap();
        // sha256("hello world")
        assert_eq!(small.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(small.size, 11);
        assert_eq!(read(&store, &small.sha256).await, b"hello world");
        let again = store.put(chunks(vec![b"hello world".to_vec()]), 100).await.unwrap();
        assert_eq!(again, small);

        let big: Vec<u8> = (0..PART_BYTES * 2 + 123).map(|i| (i % 251) as u8).collect();
        let parts: Vec<Vec<u8>> = big.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
        let stored = store.put(chunks(parts), u64::MAX).await.unwrap();
        assert_eq!(stored.size, big.len() as u64);
        assert_eq!(read(&store, &stored.sha256).await, big);

        let empty = store.put(chunks(Vec::new()), 100).await.unwrap();
        assert_eq!(empty.size, 0);
        assert!(read(&store, &empty.sha256).await.is_empty());
        // Nothing is left under uploads/.
        let left = std::fs::read_dir(dir.path().join("uploads")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn what_crashed_uploads_left_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::directory(dir.path()).unwrap();
        let kept = store.put(chunks(vec![b"kept".to_vec()]), 100).await.unwrap();
        std::fs::create_dir_all(dir.path().join("uploads")).unwrap();
        std::fs::write(dir.path().join("uploads/orphan"), b"half an upload").unwrap();
        assert_eq!(store.sweep_uploads(std::time::Duration::from_secs(3600)).await.unwrap(), 0);
        assert!(dir.path().join("uploads/orphan").exists(), "a fresh upload was swept");
        assert_eq!(store.sweep_uploads(std::time::Duration::ZERO).await.unwrap(), 1);
        assert!(!dir.path().join("uploads/orphan").exists());
        assert_eq!(read(&store, &kept.sha256).await, b"kept");
    }

    #[tokio::test]
    async fn an_upload_over_the_limit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::directory(dir.path()).unwrap();
        let error = store.put(chunks(vec![vec![1; 60], vec![2; 60]]), 100).await.unwrap_err();
        assert!(matches!(error, StoreError::TooLarge { limit: 100 }), "{error}");
        let big = store.put(chunks(vec![vec![3; PART_BYTES], vec![4; 10]]), PART_BYTES as u64).await;
        assert!(matches!(big, Err(StoreError::TooLarge { .. })));
        let left = std::fs::read_dir(dir.path().join("uploads")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0);
        assert!(!dir.path().join("sha256").exists());
    }
}
