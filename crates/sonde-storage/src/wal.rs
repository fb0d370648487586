//! The write-ahead log: numbered files of checksummed records, appended by one thread.
//!
//! ```text
//! wal/00000000000000000001.wal   records with LSN 1 ..
//! wal/00000000000000004213.wal   records with LSN 4213 .. (the active file)
//!
//! record = len: u32 LE | crc32c(lsn ‖ payload): u32 LE | lsn: u64 LE | payload (len bytes)
//! payload = dataset name: u16-length-prefixed | event count: u32 LE | the events, encoded as
//!           `sonde_model::encoded` lays them out
//! ```
//!
//! A file is named after the first LSN it may hold, so file *i* holds exactly the LSNs below
//! the name of file *i + 1*: once every dataset has persisted everything below that name, file
//! *i* is deleted ([`remove_files_below`]).
//!
//! **Torn tails.** A crash can leave the last record half-written. On open, the reader stops at
//! the first record whose length runs past the end of the file or whose checksum fails, and the
//! file is truncated there — such a record was never acknowledged, because acks are sent only
//! after the fsync that follows a complete write. A bad record anywhere but in the newest file is
//! not a torn tail but damage, and is reported as [`Error::WalCorrupt`].

use crate::{Error, Result};
use sonde_model::encoded::{EncodedEvents, EventsReader};
use sonde_model::{DatasetName, Event};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A log sequence number: the position of a record in the WAL, increasing by one per record
/// (0: before the first record). Its own type, so it is never mixed up with a row count, a
/// segment id or a time; stored as a plain number (in the catalog, in record headers, in WAL
/// file names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The LSN `n` records after this one.
    pub fn plus(self, n: u64) -> Lsn {
        Lsn(self.0 + n)
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

const HEADER_LEN: usize = 16;
/// Upper bound on one record's payload, far above any accepted request (the body limit), so that
/// a corrupted length field is recognised instead of allocated.
const MAX_RECORD_LEN: usize = 1 << 30;

/// One decoded WAL record: the events of one request for one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct WalRecord {
    /// The record's sequence number.
    pub lsn: Lsn,
    /// The dataset the events belong to.
    pub dataset: DatasetName,
    /// The events, in request order.
    pub events: Vec<Event>,
}

/// Bytes of a framed record of `events` for `dataset`: its header and payload.
pub(crate) fn framed_len(dataset: &DatasetName, events: &EncodedEvents) -> usize {
    HEADER_LEN + payload_len(dataset, events)
}

/// Bytes of the payload of a record of `events` for `dataset`.
pub(crate) fn payload_len(dataset: &DatasetName, events: &EncodedEvents) -> usize {
    2 + dataset.as_str().len() + 4 + events.as_bytes().len()
}

/// Appends one framed record (header, then the payload: the dataset name, the event count and
/// the encoded events) to `out`. The events' bytes are copied once, straight from the decoder's
/// buffer into the group being written.
pub(crate) fn frame_record(out: &mut Vec<u8>, lsn: Lsn, dataset: &DatasetName, events: &EncodedEvents) {
    // Names are bounded by the model's limits (128 bytes for a dataset), far below u16::MAX.
    let name = dataset.as_str().as_bytes();
    let mut head = Vec::with_capacity(6 + name.len());
    head.extend_from_slice(&(name.len() as u16).to_le_bytes());
    head.extend_from_slice(name);
    head.extend_from_slice(&(events.len() as u32).to_le_bytes());
    let lsn_bytes = lsn.0.to_le_bytes();
    let mut crc = crc32c::crc32c(&lsn_bytes);
    crc = crc32c::crc32c_append(crc, &head);
    crc = crc32c::crc32c_append(crc, events.as_bytes());
    out.extend_from_slice(&(payload_len(dataset, events) as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(&head);
    out.extend_from_slice(events.as_bytes());
}

/// Decodes a record's payload (see [`frame_record`]), validating every string. `None` means
/// the bytes are not a valid payload (which, behind a good checksum, means a bug or a format
/// change).
pub(crate) fn decode_payload(lsn: Lsn, payload: &[u8]) -> Option<WalRecord> {
    let n = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(payload.get(2..2 + n)?).ok()?;
    let dataset = DatasetName::new(name).ok()?;
    let count = u32::from_le_bytes(payload.get(2 + n..6 + n)?.try_into().ok()?) as usize;
    let events = EventsReader::checked(&payload[6 + n..], count).into_events()?;
    Some(WalRecord { lsn, dataset, events })
}

pub(crate) fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

fn file_name(first_lsn: Lsn) -> String {
    format!("{:020}.wal", first_lsn.0)
}

/// Lists the WAL files with their first LSN, oldest first.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
        else {
            continue;
        };
        if let Ok(lsn) = stem.parse::<u64>() {
            files.push((Lsn(lsn), path));
        }
    }
    files.sort();
    Ok(files)
}

/// What reading the WAL found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every valid record, in LSN order.
    pub records: Vec<WalRecord>,
    /// Bytes cut from the newest file's torn tail (0 when it ended cleanly).
    pub torn_bytes: u64,
    /// The highest LSN seen (0 when the WAL is empty).
    pub last_lsn: Lsn,
    /// Bytes of damaged records skipped (their files were copied to `quarantine/wal/`).
    pub corrupt_bytes: u64,
}

/// Reads every WAL file, cutting a torn tail off the newest one (and fsyncing the cut).
///
/// Damage anywhere else — a record whose checksum fails with intact records after it, or the
/// end of an older file — is not a torn write: those records were acknowledged. The file is
/// copied to `quarantine/wal/` (beside the WAL directory) for inspection, the damaged bytes are
/// reported, and reading resumes at the next intact record, so one bad sector costs the records
/// it hit and nothing after them.
pub(crate) fn replay(dir: &Path) -> Result<Replay> {
    let files = list_files(dir)?;
    let mut out = Replay::default();
    for (i, (_, path)) in files.iter().enumerate() {
        let is_newest = i + 1 == files.len();
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let mut pos = 0usize;
        while pos < bytes.len() {
            match read_record(&bytes[pos..]) {
                Some((lsn, payload, len)) => {
                    let rec = decode_payload(lsn, payload).ok_or_else(|| Error::WalCorrupt {
                        path: path.clone(),
                        offset: pos as u64,
                        reason: "record passed its checksum but does not decode".into(),
                    })?;
                    out.last_lsn = out.last_lsn.max(lsn);
                    out.records.push(rec);
                    pos += len;
                }
                None if is_newest && bytes[pos..].iter().all(|&b| b == 0) => {
                    // Zeros after the last record: the end of a direct write's last block
                    // (see `WalFile`), not a torn record.
                    let f = OpenOptions::new().write(true).open(path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    break;
                }
                None => {
                    // The next position where an intact record (past what was read) starts.
                    let resume = (pos + 1..bytes.len())
                        .find(|&p| read_record(&bytes[p..]).is_some_and(|(lsn, _, _)| lsn > out.last_lsn));
                    if resume.is_none() && is_newest {
                        cut_torn_tail(path, &bytes, pos, &mut out)?;
                        break;
                    }
                    let end = resume.unwrap_or(bytes.len());
                    let moved_to = quarantine_copy(dir, path)?;
                    tracing::error!(
                        path = %path.display(), offset = pos, damaged_bytes = end - pos, moved_to = %moved_to.display(),
                        "damaged WAL records skipped; the file was copied to quarantine"
                    );
                    out.corrupt_bytes += (end - pos) as u64;
                    pos = end;
                }
            }
        }
    }
    out.records.sort_by_key(|r| r.lsn);
    Ok(out)
}

/// Copies a damaged WAL file to `quarantine/wal/` beside the WAL directory (once per file name).
fn quarantine_copy(dir: &Path, path: &Path) -> Result<PathBuf> {
    let qdir = dir
        .parent()
        .unwrap_or(dir)
        .join(crate::quarantine::QUARANTINE_DIR)
        .join("wal");
    std::fs::create_dir_all(&qdir)?;
    let to = qdir.join(path.file_name().unwrap_or_default());
    std::fs::copy(path, &to)?;
    Ok(to)
}

/// Cuts the newest file's torn tail at `pos` (a write that never completed, so never acked).
fn cut_torn_tail(path: &Path, bytes: &[u8], pos: usize, out: &mut Replay) -> Result<()> {
    let torn = (bytes.len() - pos) as u64;
    tracing::warn!(path = %path.display(), offset = pos, torn_bytes = torn, "cutting torn wal tail");
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(pos as u64)?;
    f.sync_all()?;
    out.torn_bytes += torn;
    Ok(())
}

/// Parses one framed record at the start of `buf`: `(lsn, payload, framed length)`, or `None`
/// when it is incomplete or its checksum fails.
fn read_record(buf: &[u8]) -> Option<(Lsn, &[u8], usize)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    if len == 0 || len > MAX_RECORD_LEN || buf.len() < HEADER_LEN + len {
        return None;
    }
    let lsn_bytes = &buf[8..16];
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    let actual = crc32c::crc32c_append(crc32c::crc32c(lsn_bytes), payload);
    (actual == crc).then(|| {
        (
            Lsn(u64::from_le_bytes(lsn_bytes.try_into().unwrap())),
            payload,
            HEADER_LEN + len,
        )
    })
}

/// Deletes WAL files that hold only LSNs below `watermark` (never the newest file).
/// Returns how many files were removed.
pub(crate) fn remove_files_below(dir: &Path, watermark: Lsn) -> Result<usize> {
    let files = list_files(dir)?;
    let mut removed = 0;
    for pair in files.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= watermark {
            std::fs::remove_file(path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The size direct writes align their file offsets, lengths and memory to: the largest
/// logical block size of common disks.
const BLOCK: usize = 4096;

/// The file the WAL thread appends to.
///
/// With fsync durability the file is written with `O_DIRECT`: records go from this process's
/// memory to the disk with no copy into the page cache, a copy that was 9% of ingest's CPU (a
/// WAL is written once and read only at start, so caching it gains nothing). Direct writes
/// cover whole blocks, so each append writes the file's last partial block again with the new
/// records after it, and zeros up to the end of the block. Those zeros lie past the file's
/// logical end; they are cut off at rotation and at drop, and after a crash [`replay`] cuts
/// them. A file system that refuses `O_DIRECT` (tmpfs) gets buffered writes.
pub(crate) struct WalFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The logical length: the end of the last complete append.
    len: u64,
    rotate_bytes: u64,
    /// Whether `file` was opened with `O_DIRECT`.
    direct: bool,
    /// The group being appended. In direct mode its bytes start at `start`, on a [`BLOCK`]
    /// boundary in memory, with the file's last partial block before the new records.
    group: Vec<u8>,
    start: usize,
    /// Direct mode: the bytes of the file's last partial block (`len % BLOCK` of them).
    partial: Vec<u8>,
}

impl WalFile {
    /// Opens the WAL file whose first record will have `first_lsn`, creating it if needed;
    /// written directly (bypassing the page cache) when `direct` and the file system allows.
    pub(crate) fn create(dir: &Path, first_lsn: Lsn, rotate_bytes: u64, direct: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(first_lsn));
        let opened = if direct {
            open_direct(&path)
        } else {
            open_buffered(&path)
        };
        let (file, direct) = match opened {
            Ok(file) => (file, direct),
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => (open_buffered(&path)?, false),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let mut partial = vec![0; (len % BLOCK as u64) as usize];
        if !partial.is_empty() {
            use std::os::unix::fs::FileExt;
            // A direct descriptor reads only whole aligned blocks; this one-off read uses a
            // plain one.
            let at = len - partial.len() as u64;
            File::open(&path)?.read_exact_at(&mut partial, at)?;
        }
        sync_dir(dir)?;
        Ok(WalFile {
            dir: dir.to_path_buf(),
            path,
            file,
            len,
            rotate_bytes,
            direct,
            group: Vec::new(),
            start: 0,
            partial,
        })
    }

    /// Empties the group buffer, with room for `bytes` bytes of framed records, and returns it
    /// to append them to ([`frame_record`]); [`WalFile::write_group`] then writes them.
    pub(crate) fn begin_group(&mut self, bytes: usize) -> &mut Vec<u8> {
        self.group.clear();
        self.start = 0;
        if !self.direct {
            self.group.reserve(bytes);
            return &mut self.group;
        }
        // Room for the partial block, the records and the zeros that complete the last block.
        let room = self.partial.len() + bytes + BLOCK;
        let mut start = self.group.as_ptr().align_offset(BLOCK);
        if self.group.capacity() < start + room {
            self.group = Vec::with_capacity(room + BLOCK);
            start = self.group.as_ptr().align_offset(BLOCK);
        }
        self.group.resize(start, 0);
        self.group.extend_from_slice(&self.partial);
        self.start = start;
        &mut self.group
    }

    /// Appends framed records; with `sync`, returns only after they are on stable storage.
    #[cfg(test)]
    pub(crate) fn append(&mut self, framed: &[u8], sync: bool) -> Result<()> {
        self.begin_group(framed.len()).extend_from_slice(framed);
        self.write_group(sync)
    }

    /// Writes the records appended to [`WalFile::begin_group`]'s buffer; with `sync`, returns
    /// only after they are on stable storage.
    ///
    /// When the disk is full, whatever part of the group reached the file is cut off again, so
    /// that the file ends at its last complete record and appending can go on once there is
    /// room: the error is then [`Error::DiskFull`]. Any other failure leaves the file as it is.
    pub(crate) fn write_group(&mut self, sync: bool) -> Result<()> {
        let mut end = self.group.len();
        let kept = if self.direct { self.partial.len() } else { 0 };
        let new = end - self.start - kept;
        let written = match self.direct {
            true => self.write_direct(&mut end),
            false => self.file.write_all(&self.group),
        };
        let written = written.and_then(|()| match sync {
            true => self.file.sync_data(),
            false => Ok(()),
        });
        match written {
            Ok(()) => {
                if self.direct {
                    let bytes = end - self.start;
                    self.partial.clear();
                    self.partial
                        .extend_from_slice(&self.group[self.start + bytes - bytes % BLOCK..end]);
                }
                self.len += new as u64;
                Ok(())
            }
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // The file system took the open but refuses direct writes: go on through the
                // page cache, from the last complete record.
                tracing::warn!(error = %e, "the WAL's file system refuses direct writes; writing through the page cache");
                self.file = open_buffered(&self.path)?;
                self.file.set_len(self.len)?;
                self.direct = false;
                self.group = self.group[self.start + kept..end].to_vec();
                self.start = 0;
                self.partial.clear();
                self.write_group(sync)
            }
            Err(e) if is_disk_full(&e) => {
                self.file.set_len(self.len)?;
                self.file.sync_data()?;
                Err(Error::DiskFull(format!("appending to the WAL: {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `group[start..end]` in whole blocks at the start of the file's last partial
    /// block. `end` follows the bytes if they had to move.
    fn write_direct(&mut self, end: &mut usize) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let bytes = *end - self.start;
        let padded = bytes.next_multiple_of(BLOCK);
        if self.group[self.start..].as_ptr().align_offset(BLOCK) != 0 || self.group.capacity() < self.start + padded {
            // More records than `begin_group` was told of moved the buffer: align it again.
            let mut moved: Vec<u8> = Vec::with_capacity(padded + BLOCK);
            let start = moved.as_ptr().align_offset(BLOCK);
            moved.resize(start, 0);
            moved.extend_from_slice(&self.group[self.start..*end]);
            self.group = moved;
            self.start = start;
            *end = start + bytes;
        }
        self.group.resize(self.start + padded, 0);
        let at = self.len - self.partial.len() as u64;
        self.file.write_all_at(&self.group[self.start..], at)
    }

    /// Starts the next file if this one has passed the rotation size. `next_lsn` is the LSN
    /// the next appended record will carry.
    pub(crate) fn maybe_rotate(&mut self, next_lsn: Lsn) -> Result<()> {
        if self.len >= self.rotate_bytes {
            // The old file must be complete on disk, ending at its last record, before
            // records go to the next one.
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
            match WalFile::create(&self.dir, next_lsn, self.rotate_bytes, self.direct) {
                Ok(next) => *self = next,
                Err(e) => {
                    // No half-made file may stay behind: its name would claim records that go
                    // on being appended to this one. Rotation is tried again after the next
                    // append.
                    match std::fs::remove_file(self.dir.join(file_name(next_lsn))) {
                        Ok(()) => {}
                        Err(r) if r.kind() == std::io::ErrorKind::NotFound => {}
                        Err(r) => return Err(r.into()),
                    }
                    return Err(match e {
                        Error::Io(io) if is_disk_full(&io) => Error::DiskFull(format!("starting a WAL file: {io}")),
                        other => other,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for WalFile {
    /// Cuts the zeros after the last record, so that a cleanly stopped WAL ends at its last
    /// record (replay would cut them anyway).
    fn drop(&mut self) {
        if self.direct {
            let _ = self.file.set_len(self.len);
        }
    }
}

fn open_buffered(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_model::FieldValue;

    fn rec(lsn: u64, n: usize) -> WalRecord {
        WalRecord {
            lsn: Lsn(lsn),
            dataset: DatasetName::new("ds").unwrap(),
            events: (0..n)
                .map(|i| Event {
                    timestamp_us: 1_700_000_000_000_000 + i as i64,
                    sample_rate: 1 + i as i64,
                    fields: vec![
                        ("b".into(), FieldValue::Bool(i % 2 == 0)),
                        ("i".into(), FieldValue::Int(-(i as i64))),
                        ("f".into(), FieldValue::Float(i as f64 / 3.0)),
                        ("s".into(), FieldValue::Str(format!("v{i}é"))),
                    ],
                })
                .collect(),
        }
    }

    fn write(dir: &Path, first: u64, recs: &[WalRecord]) -> PathBuf {
        let mut w = WalFile::create(dir, Lsn(first), 1 << 30, true).unwrap();
        let mut buf = Vec::new();
        for r in recs {
            frame_record(&mut buf, r.lsn, &r.dataset, &EncodedEvents::from_events(&r.events));
        }
        w.append(&buf, true).unwrap();
        dir.join(file_name(Lsn(first)))
    }

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let recs = vec![rec(1, 3), rec(2, 0), rec(3, 5)];
        write(d.path(), 1, &recs);
        let r = replay(d.path()).unwrap();
        assert_eq!(r.records, recs);
        assert_eq!(r.last_lsn, Lsn(3));
        assert_eq!(r.torn_bytes, 0);
    }

    #[test]
    fn torn_tail_is_cut_at_every_length() {
        let recs = vec![rec(1, 2), rec(2, 3)];
        let mut full = Vec::new();
        for r in &recs {
            frame_record(&mut full, r.lsn, &r.dataset, &EncodedEvents::from_events(&r.events));
        }
        let first_len = {
            let mut b = Vec::new();
            frame_record(
                &mut b,
                Lsn(1),
                &recs[0].dataset,
                &EncodedEvents::from_events(&recs[0].events),
            );
            b.len()
        };
        for cut in 0..full.len() {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path()).unwrap();
            let path = d.path().join(file_name(Lsn(1)));
            std::fs::write(&path, &full[..cut]).unwrap();
            let r = replay(d.path()).unwrap();
            let expect = if cut >= first_len { 1 } else { 0 };
            assert_eq!(r.records.len(), expect, "cut at {cut}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                if expect == 1 { first_len as u64 } else { 0 }
            );
        }
    }

    #[test]
    fn damage_is_quarantined_and_replay_resumes_at_the_next_intact_record() {
        let d = tempfile::tempdir().unwrap();
        let wal = d.path().join("wal");
        // An old file of three records with its middle one damaged, and a newer file.
        let old = write(&wal, 1, &[rec(1, 2), rec(2, 3), rec(3, 4)]);
        write(&wal, 4, &[rec(4, 2)]);
        let mut bytes = std::fs::read(&old).unwrap();
        let first_len = {
            let mut b = Vec::new();
            frame_record(
                &mut b,
                Lsn(1),
                &rec(1, 2).dataset,
                &EncodedEvents::from_events(&rec(1, 2).events),
            );
            b.len()
        };
        bytes[first_len + 20] ^= 1;
        std::fs::write(&old, &bytes).unwrap();
        let r = replay(&wal).unwrap();
        assert_eq!(r.records.iter().map(|r| r.lsn.0).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(r.corrupt_bytes > 0);
        assert_eq!(r.torn_bytes, 0);
        // The damaged file is kept, byte for byte, in quarantine beside the WAL directory.
        let copy = d.path().join("quarantine/wal").join(old.file_name().unwrap());
        assert_eq!(std::fs::read(copy).unwrap(), bytes);

        // Damage at the very end of an old file (nothing intact after it in that file).
        let d = tempfile::tempdir().unwrap();
        let wal = d.path().join("wal");
        let old = write(&wal, 1, &[rec(1, 2)]);
        write(&wal, 2, &[rec(2, 2)]);
        let mut bytes = std::fs::read(&old).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&old, bytes).unwrap();
        let r = replay(&wal).unwrap();
        assert_eq!(r.records.iter().map(|r| r.lsn.0).collect::<Vec<_>>(), vec![2]);
        assert!(r.corrupt_bytes > 0);
    }

    fn framed(recs: &[WalRecord]) -> Vec<u8> {
        let mut buf = Vec::new();
        for r in recs {
            frame_record(&mut buf, r.lsn, &r.dataset, &EncodedEvents::from_events(&r.events));
        }
        buf
    }

    #[test]
    fn direct_appends_of_any_length_read_back_and_end_at_the_last_record() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(file_name(Lsn(1)));
        let recs: Vec<_> = (1..=40).map(|i| rec(i, (i as usize * 7) % 23)).collect();
        let mut w = WalFile::create(d.path(), Lsn(1), 1 << 30, true).unwrap();
        let mut logical = 0;
        // Appends of odd sizes, some within one block, some across several.
        for chunk in recs.chunks(3) {
            let bytes = framed(chunk);
            w.append(&bytes, true).unwrap();
            logical += bytes.len() as u64;
            assert_eq!(w.len, logical);
            let on_disk = std::fs::metadata(&path).unwrap().len();
            if w.direct {
                assert_eq!(on_disk, logical.next_multiple_of(BLOCK as u64), "whole blocks");
            } else {
                assert_eq!(on_disk, logical);
            }
        }
        // A crash leaves the zeros of the last block; replay reads every record, and cuts
        // the zeros without calling them torn.
        std::mem::forget(w);
        let r = replay(d.path()).unwrap();
        assert_eq!(r.records, recs);
        assert_eq!(r.torn_bytes, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), logical);

        // Opened again (its length not on a block boundary), appended to, dropped cleanly.
        let more: Vec<_> = (41..=45).map(|i| rec(i, 5)).collect();
        let mut w = WalFile::create(d.path(), Lsn(1), 1 << 30, true).unwrap();
        w.append(&framed(&more), true).unwrap();
        drop(w);
        let all: Vec<_> = recs.iter().chain(&more).cloned().collect();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), framed(&all).len() as u64);
        assert_eq!(replay(d.path()).unwrap().records, all);
    }

    #[test]
    fn a_rotated_direct_file_ends_at_its_last_record() {
        let d = tempfile::tempdir().unwrap();
        let mut w = WalFile::create(d.path(), Lsn(1), 100, true).unwrap();
        let first = vec![rec(1, 3)];
        w.append(&framed(&first), true).unwrap();
        w.maybe_rotate(Lsn(2)).unwrap();
        let second = vec![rec(2, 4)];
        w.append(&framed(&second), true).unwrap();
        std::mem::forget(w);
        let old = d.path().join(file_name(Lsn(1)));
        assert_eq!(
            std::fs::read(&old).unwrap(),
            framed(&first),
            "no zeros after the last record"
        );
        let r = replay(d.path()).unwrap();
        assert_eq!(r.records, vec![first[0].clone(), second[0].clone()]);
        assert_eq!((r.torn_bytes, r.corrupt_bytes), (0, 0));
    }

    #[test]
    fn files_below_watermark_are_removed() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 1, &[rec(1, 1), rec(2, 1)]);
        write(d.path(), 3, &[rec(3, 1)]);
        write(d.path(), 4, &[rec(4, 1)]);
        assert_eq!(remove_files_below(d.path(), Lsn(3)).unwrap(), 1);
        assert_eq!(remove_files_below(d.path(), Lsn(100)).unwrap(), 1);
        assert_eq!(list_files(d.path()).unwrap().len(), 1, "the newest file always stays");
    }
}
