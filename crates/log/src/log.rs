use std::ops::{ControlFlow, Range};

use keel_io::disk::join;
use keel_io::{Disk, DiskError, DiskErrorKind, DiskFile};

use crate::format::{
    check_frame, decode_index, decode_segment_header, encode_frame, encode_index, encode_segment_header, frame_bytes, index_file_name, parse_file_name,
    segment_file_name, FileKind, FrameCheck, HeaderProblem, IndexEntry, SealedIndex, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

/// When appends are made durable without an explicit `flush`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Only `flush` makes records durable: the caller groups commits (the
    /// replication and Raft drivers do, so one fsync covers many requests).
    Manual,
    /// fsync after every append (slow; for tests and paranoid callers).
    EveryAppend,
    /// fsync once this much is unflushed, whichever bound is reached first.
    Threshold { unflushed_bytes_max: u64, unflushed_records_max: u64 },
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment rolls before it would exceed this size.
    pub segment_bytes_max: u64,
    /// One sparse index entry per this many bytes of frames.
    pub index_interval_bytes: u64,
    /// Appends larger than this are refused; recovery treats larger frames as corrupt.
    pub record_bytes_max: u32,
    /// Appended bytes are buffered and written in one call once this much accumulates.
    pub write_buffer_bytes_max: usize,
    /// Re-reads after a checksum failure before the read fails as corrupt.
    pub read_retries_max: u32,
    /// Bytes fetched per disk read when scanning.
    pub read_chunk_bytes: usize,
    pub flush_policy: FlushPolicy,
    /// Offset of the first record of a log created in an empty directory
    /// (a Raft log starts at index 1, or after an installed snapshot).
    pub initial_offset: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 256 * 1024 * 1024,
            index_interval_bytes: 4096,
            record_bytes_max: 16 * 1024 * 1024,
            write_buffer_bytes_max: 1024 * 1024,
            read_retries_max: 4,
            read_chunk_bytes: 64 * 1024,
            flush_policy: FlushPolicy::Manual,
            initial_offset: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{file} at byte {position}: {reason}")]
    Corrupt { file: String, position: u64, reason: String },
    #[error("{file} is not a keel log file ({reason}); point the log at an empty directory or one written by keel")]
    Foreign { file: String, reason: String },
    #[error("log {dir} is unusable after an earlier failure ({cause}); reopen it to recover from disk")]
    Poisoned { dir: String, cause: String },
    #[error("record of {len} bytes exceeds record_bytes_max {max}")]
    RecordTooLarge { len: usize, max: u32 },
    #[error("offset {offset} is outside the log [{start}, {end}]")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    #[error("invalid log config: {0}")]
    Config(String),
}

#[derive(Debug)]
struct Segment {
    base_offset: u64,
    path: String,
    file: DiskFile,
    /// Header plus frames, including bytes still in the write buffer.
    size_bytes: u64,
    /// One past the last offset in this segment.
    end_offset: u64,
    index: Vec<IndexEntry>,
    bytes_since_index: u64,
    /// Whether `{base}.index` exists on disk (sealed segments only).
    has_index_file: bool,
}

impl Segment {
    fn index_path(&self, dir: &str) -> String {
        join(dir, &index_file_name(self.base_offset))
    }

    /// Where to start scanning for `offset`: the latest index entry at or below it.
    fn scan_start(&self, offset: u64) -> (u64, u64) {
        let relative = offset - self.base_offset;
        let at = self.index.partition_point(|entry| u64::from(entry.relative_offset) <= relative);
        if at == 0 {
            (SEGMENT_HEADER_BYTES, self.base_offset)
        } else {
            let entry = self.index[at - 1];
            (u64::from(entry.position), self.base_offset + u64::from(entry.relative_offset))
        }
    }

    fn note_frame(&mut self, position: u64, frame_len: u64, index_interval_bytes: u64) {
        if self.index.is_empty() || self.bytes_since_index >= index_interval_bytes {
            let relative_offset = u32::try_from(self.end_offset - self.base_offset).expect("segment holds < 2^32 records");
            let position = u32::try_from(position).expect("segment smaller than 4 GiB");
            self.index.push(IndexEntry { relative_offset, position });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += frame_len;
        self.end_offset += 1;
        self.size_bytes = position + frame_len;
    }
}

/// The bytes of one segment as the log sees them: on disk up to `disk_end`,
/// then (for the active segment) the write buffer.
struct SegmentSpan<'a> {
    file: DiskFile,
    path: &'a str,
    disk_end: u64,
    buffer: &'a [u8],
}

impl SegmentSpan<'_> {
    fn end(&self) -> u64 {
        self.disk_end + self.buffer.len() as u64
    }

    async fn read(&self, position: u64, len: u64) -> Result<Vec<u8>, LogError> {
        let mut bytes = Vec::with_capacity(usize::try_from(len).expect("read fits memory"));
        if position < self.disk_end {
            let from_disk = len.min(self.disk_end - position);
            bytes = self.file.read_at(position, usize::try_from(from_disk).expect("read fits memory")).await?;
            if (bytes.len() as u64) < from_disk {
                return Err(LogError::Corrupt {
                    file: self.path.to_string(),
                    position: position + bytes.len() as u64,
                    reason: format!("file ends before byte {}", self.disk_end),
                });
            }
        }
        let buffered_from = position.max(self.disk_end);
        let buffered_to = position + len;
        if buffered_to > buffered_from {
            let a = usize::try_from(buffered_from - self.disk_end).expect("buffer offset");
            let b = usize::try_from(buffered_to - self.disk_end).expect("buffer offset");
            bytes.extend_from_slice(&self.buffer[a..b]);
        }
        Ok(bytes)
    }
}

/// Where a frame walk stopped.
struct WalkEnd {
    /// Position after the last valid frame walked.
    position: u64,
    /// Offset the next frame would hold.
    next_offset: u64,
    /// Set when a frame stayed invalid after every re-read.
    damage: Option<String>,
}

/// An append-only log in one directory of a `Disk`. Not shared: the owner
/// (a partition replica or the Raft storage) serializes calls.
#[derive(Debug)]
pub struct Log {
    disk: Disk,
    dir: String,
    config: LogConfig,
    /// Sorted by base offset, contiguous, never empty; the last one is active.
    segments: Vec<Segment>,
    /// Frames appended to the active segment but not yet handed to the disk.
    write_buffer: Vec<u8>,
    /// Bytes of the active segment already handed to the disk.
    active_written_bytes: u64,
    /// Every offset below this is durable.
    flushed_offset: u64,
    unflushed_bytes: u64,
    unflushed_records: u64,
    poisoned: Option<String>,
    /// Bytes of a torn or corrupt active-segment tail that opening this log
    /// cut off (crash recovery); 0 when the tail was whole.
    torn_tail_bytes_dropped: u64,
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering from a crash:
    /// the active segment's tail is scanned and a torn or corrupt suffix is
    /// truncated; everything recovered is made durable before this returns.
    pub async fn open(disk: Disk, dir: &str, config: LogConfig) -> Result<Log, LogError> {
        validate_config(&config)?;
        disk.create_dir_all(dir).await?;
        let mut segment_bases = Vec::new();
        let mut index_bases = Vec::new();
        for name in disk.list(dir).await? {
            match parse_file_name(&name) {
                Some((base, FileKind::Segment)) => segment_bases.push(base),
                Some((base, FileKind::Index)) => index_bases.push(base),
                None => {
                    return Err(LogError::Foreign {
                        file: join(dir, &name),
                        reason: "unexpected file name; a keel log directory holds only NNNNNNNNNNNNNNNNNNNN.log and .index files".into(),
                    })
                }
            }
        }
        segment_bases.sort_unstable();
        let mut log = Log {
            disk: disk.clone(),
            dir: dir.to_string(),
            config,
            segments: Vec::new(),
            write_buffer: Vec::new(),
            active_written_bytes: 0,
            flushed_offset: 0,
            unflushed_bytes: 0,
            unflushed_records: 0,
            poisoned: None,
            torn_tail_bytes_dropped: 0,
        };
        let mut dir_changed = false;
        // Index files are derived data: orphans (no segment) are removed.
        for base in &index_bases {
            if segment_bases.binary_search(base).is_err() {
                disk.remove(&join(dir, &index_file_name(*base))).await?;
                dir_changed = true;
            }
        }
        // A newest segment shorter than its header, holding a prefix of the
        // header this log would write, is a creation cut short after the file
        // was made and before its header was durable: a process that exits
        // after a failed fsync leaves one behind (a power loss does not: the
        // directory entry is synced only after the header). It holds no
        // record, so it is made again from scratch.
        if let Some(&newest) = segment_bases.last() {
            let path = join(dir, &segment_file_name(newest));
            let file = disk.open(&path).await?;
            let file_len = file.len().await?;
            if file_len < SEGMENT_HEADER_BYTES {
                let bytes = file.read_at(0, usize::try_from(file_len).expect("shorter than a header")).await?;
                if encode_segment_header(newest).starts_with(&bytes) {
                    tracing::warn!(file = path, file_len, "segment creation was cut short; making the segment again");
                    if index_bases.binary_search(&newest).is_ok() {
                        disk.remove(&join(dir, &index_file_name(newest))).await?;
                    }
                    disk.remove(&path).await?;
                    disk.sync_dir(dir).await?;
                    segment_bases.pop();
                    if segment_bases.is_empty() {
                        log.create_segment(newest).await?;
                        log.flushed_offset = newest;
                        return Ok(log);
                    }
                }
            }
        }
        if segment_bases.is_empty() {
            let initial_offset = log.config.initial_offset;
            log.create_segment(initial_offset).await?;
            log.flushed_offset = initial_offset;
            if dir_changed {
                disk.sync_dir(dir).await?;
            }
            return Ok(log);
        }
        let last = segment_bases.len() - 1;
        for (i, base) in segment_bases.iter().copied().enumerate() {
            let has_index_file = index_bases.binary_search(&base).is_ok();
            let segment = log.recover_segment(base, has_index_file, i == last).await?;
            if let Some(previous) = log.segments.last() {
                if previous.end_offset != segment.base_offset {
                    return Err(LogError::Corrupt {
                        file: segment.path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {} but {} ends at offset {}: records are missing",
                            segment.base_offset, previous.path, previous.end_offset
                        ),
                    });
                }
            }
            log.segments.push(segment);
        }
        // The active segment never keeps an index file: it is rewritten when sealed.
        let active = log.segments.last_mut().expect("at least one segment");
        if active.has_index_file {
            disk.remove(&active.index_path(dir)).await?;
            active.has_index_file = false;
            dir_changed = true;
        }
        // What was read back may still be only in the page cache (a process
        // crash, not a power loss): make it durable before anyone relies on it.
        active.file.sync().await?;
        if dir_changed {
            disk.sync_dir(dir).await?;
        }
        log.active_written_bytes = active.size_bytes;
        log.flushed_offset = active.end_offset;
        Ok(log)
    }

    async fn recover_segment(&mut self, base: u64, has_index_file: bool, is_active: bool) -> Result<Segment, LogError> {
        let path = join(&self.dir, &segment_file_name(base));
        let file = self.disk.open(&path).await?;
        let file_len = file.len().await?;
        // Re-read a bad header: a bit flipped on the way from disk is not a
        // corrupt file, and refusing to open would strand durable records.
        let mut header = file.read_at(0, SEGMENT_HEADER_BYTES as usize).await?;
        for _ in 0..self.config.read_retries_max {
            if decode_segment_header(&header).is_ok() {
                break;
            }
            header = file.read_at(0, SEGMENT_HEADER_BYTES as usize).await?;
        }
        match decode_segment_header(&header) {
            Ok(header_base) if header_base == base => {}
            Ok(header_base) => {
                return Err(LogError::Corrupt {
                    file: path,
                    position: 0,
                    reason: format!("header names base offset {header_base} but the file name says {base}"),
                })
            }
            Err(HeaderProblem::Foreign) => return Err(LogError::Foreign { file: path, reason: "no KEELSEG1 magic at byte 0".into() }),
            Err(HeaderProblem::Corrupt(reason)) => return Err(LogError::Corrupt { file: path, position: 0, reason }),
        }
        let mut segment = Segment {
            base_offset: base,
            path: path.clone(),
            file,
            size_bytes: SEGMENT_HEADER_BYTES,
            end_offset: base,
            index: Vec::new(),
            bytes_since_index: 0,
            has_index_file,
        };
        if !is_active && has_index_file {
            let index_path = segment.index_path(&self.dir);
            let index_file = self.disk.open(&index_path).await?;
            let index_len = index_file.len().await?;
            let bytes = index_file.read_at(0, usize::try_from(index_len).expect("index fits memory")).await?;
            match decode_index(&bytes) {
                Some(index) if index.segment_size_bytes == file_len => {
                    segment.size_bytes = index.segment_size_bytes;
                    segment.end_offset = index.segment_end_offset;
                    segment.index = index.entries;
                    return Ok(segment);
                }
                _ => tracing::warn!(file = %index_path, "index damaged or stale; rebuilding it from the segment"),
            }
        }
        let end = self.scan_segment(&mut segment, file_len).await?;
        if let Some(problem) = end.damage {
            if !is_active {
                // Sealed segments were fsynced before the next one was created,
                // so damage here is damage to durable records: never skip it.
                return Err(LogError::Corrupt { file: path, position: end.position, reason: problem });
            }
            tracing::warn!(
                file = %path,
                position = end.position,
                bytes_dropped = file_len - end.position,
                reason = %problem,
                "truncating the torn or corrupt tail of the active segment"
            );
            segment.file.truncate(end.position).await?;
            segment.file.sync().await?;
            self.torn_tail_bytes_dropped = file_len - end.position;
        }
        if !is_active {
            self.write_index_file(&mut segment).await?;
        }
        Ok(segment)
    }

    /// Scans every frame of `segment` from its header to `file_len`, rebuilding
    /// its index; stops at the first frame that stays invalid after re-reads.
    async fn scan_segment(&self, segment: &mut Segment, file_len: u64) -> Result<WalkEnd, LogError> {
        let path = segment.path.clone();
        let span = SegmentSpan { file: segment.file.clone(), path: &path, disk_end: file_len, buffer: &[] };
        let interval = self.config.index_interval_bytes;
        let walk_start = (SEGMENT_HEADER_BYTES, segment.base_offset);
        self.walk(&span, walk_start, None, self.config.read_chunk_bytes, |_, position, payload| {
            segment.note_frame(position, frame_bytes(payload.len()), interval);
            ControlFlow::Continue(())
        })
        .await
    }

    async fn write_index_file(&self, segment: &mut Segment) -> Result<(), LogError> {
        let index_path = segment.index_path(&self.dir);
        let bytes =
            encode_index(&SealedIndex { segment_end_offset: segment.end_offset, segment_size_bytes: segment.size_bytes, entries: segment.index.clone() });
        if segment.has_index_file {
            self.disk.remove(&index_path).await?;
        }
        let file = match self.disk.create(&index_path).await {
            Err(DiskError { kind: DiskErrorKind::AlreadyExists, .. }) => {
                self.disk.remove(&index_path).await?;
                self.disk.create(&index_path).await?
            }
            other => other?,
        };
        file.write_at(0, &bytes).await?;
        file.sync().await?;
        segment.has_index_file = true;
        Ok(())
    }

    /// Creates and durably registers an empty segment starting at `base`.
    async fn create_segment(&mut self, base: u64) -> Result<(), LogError> {
        let path = join(&self.dir, &segment_file_name(base));
        let file = self.disk.create(&path).await?;
        file.write_at(0, &encode_segment_header(base)).await?;
        // Header durable before the directory entry: a segment that survives a
        // crash always has a valid header.
        file.sync().await?;
        self.disk.sync_dir(&self.dir).await?;
        self.segments.push(Segment {
            base_offset: base,
            path,
            file,
            size_bytes: SEGMENT_HEADER_BYTES,
            end_offset: base,
            index: Vec::new(),
            bytes_since_index: 0,
            has_index_file: false,
        });
        self.active_written_bytes = SEGMENT_HEADER_BYTES;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(cause) => Err(LogError::Poisoned { dir: self.dir.clone(), cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Runs a mutating step; any failure poisons the log, because memory and
    /// disk may now disagree and only recovery knows what the disk holds.
    fn poison_on_error<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(error) = &result {
            if self.poisoned.is_none() {
                tracing::warn!(dir = %self.dir, %error, "log poisoned; it must be reopened");
                self.poisoned = Some(error.to_string());
            }
        }
        result
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> u64 {
        self.segments[0].base_offset
    }

    /// The offset the next append gets (the log end offset).
    pub fn next_offset(&self) -> u64 {
        self.segments.last().expect("at least one segment").end_offset
    }

    /// Bytes of a torn or corrupt tail that `open` cut off the active
    /// segment (0: it recovered nothing of the kind).
    pub fn torn_tail_bytes_dropped(&self) -> u64 {
        self.torn_tail_bytes_dropped
    }

    /// Every offset below this is durable.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset
    }

    /// Appends one record and returns its offset. Durable after the next flush.
    pub async fn append(&mut self, payload: &[u8]) -> Result<u64, LogError> {
        let range = self.append_batch(&[payload]).await?;
        Ok(range.start)
    }

    /// Appends records with consecutive offsets; the flush policy runs once for
    /// the whole batch.
    pub async fn append_batch(&mut self, payloads: &[&[u8]]) -> Result<Range<u64>, LogError> {
        self.check_usable()?;
        for payload in payloads {
            if payload.len() > self.config.record_bytes_max as usize {
                return Err(LogError::RecordTooLarge { len: payload.len(), max: self.config.record_bytes_max });
            }
        }
        let start = self.next_offset();
        let result = self.append_unchecked(payloads).await;
        self.poison_on_error(result)?;
        let end = self.next_offset();
        assert_eq!(end - start, payloads.len() as u64, "every payload got exactly one offset");
        Ok(start..end)
    }

    async fn append_unchecked(&mut self, payloads: &[&[u8]]) -> Result<(), LogError> {
        for payload in payloads {
            let frame_len = frame_bytes(payload.len());
            let active = self.segments.last().expect("at least one segment");
            if active.end_offset > active.base_offset && active.size_bytes + frame_len > self.config.segment_bytes_max {
                self.roll().await?;
            }
            let active = self.segments.last_mut().expect("at least one segment");
            let position = active.size_bytes;
            assert_eq!(position, self.active_written_bytes + self.write_buffer.len() as u64);
            let offset = active.end_offset;
            encode_frame(&mut self.write_buffer, offset, payload);
            active.note_frame(position, frame_len, self.config.index_interval_bytes);
            self.unflushed_bytes += frame_len;
            self.unflushed_records += 1;
            if self.write_buffer.len() >= self.config.write_buffer_bytes_max {
                self.write_out().await?;
            }
        }
        let flush_now = match self.config.flush_policy {
            FlushPolicy::Manual => false,
            FlushPolicy::EveryAppend => true,
            FlushPolicy::Threshold { unflushed_bytes_max, unflushed_records_max } => {
                self.unflushed_bytes >= unflushed_bytes_max || self.unflushed_records >= unflushed_records_max
            }
        };
        if flush_now {
            self.flush_unchecked().await?;
        }
        Ok(())
    }

    /// Hands buffered frames to the disk (not yet durable).
    async fn write_out(&mut self) -> Result<(), LogError> {
        if self.write_buffer.is_empty() {
            return Ok(());
        }
        let active = self.segments.last().expect("at least one segment");
        active.file.write_at(self.active_written_bytes, &self.write_buffer).await?;
        self.active_written_bytes += self.write_buffer.len() as u64;
        self.write_buffer.clear();
        assert_eq!(self.active_written_bytes, active.size_bytes);
        Ok(())
    }

    /// Makes every appended record durable (group commit: one fsync for all
    /// appends since the last flush). Returns the flushed offset.
    pub async fn flush(&mut self) -> Result<u64, LogError> {
        self.check_usable()?;
        let result = self.flush_unchecked().await;
        self.poison_on_error(result)?;
        Ok(self.flushed_offset)
    }

    async fn flush_unchecked(&mut self) -> Result<(), LogError> {
        if self.flushed_offset == self.next_offset() {
            return Ok(());
        }
        self.write_out().await?;
        self.segments.last().expect("at least one segment").file.sync().await?;
        self.flushed_offset = self.next_offset();
        self.unflushed_bytes = 0;
        self.unflushed_records = 0;
        Ok(())
    }

    /// Seals the active segment (durable, with an index file) and starts a new one.
    async fn roll(&mut self) -> Result<(), LogError> {
        self.flush_unchecked().await?;
        let mut active = self.segments.pop().expect("at least one segment");
        let result = self.write_index_file(&mut active).await;
        let base = active.end_offset;
        self.segments.push(active);
        result?;
        self.create_segment(base).await
    }

    /// Reads the record at `offset`, or `None` at or past the log end.
    pub async fn read(&self, offset: u64) -> Result<Option<Record>, LogError> {
        let mut records = self.read_from(offset, 1).await?;
        Ok(records.pop())
    }

    /// Reads consecutive records from `offset` until about `bytes_max` of
    /// payload (always at least one record when `offset` is below the end).
    /// Every record's checksum is verified after it is read.
    pub async fn read_from(&self, offset: u64, bytes_max: usize) -> Result<Vec<Record>, LogError> {
        self.check_usable()?;
        let (start, end) = (self.start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let mut records = Vec::new();
        let mut payload_bytes = 0usize;
        let mut next = offset;
        while next < end && (records.is_empty() || payload_bytes < bytes_max) {
            let segment_at = self.segments.partition_point(|s| s.base_offset <= next) - 1;
            let segment = &self.segments[segment_at];
            let before = records.len();
            self.read_segment(segment, next, bytes_max, &mut records, &mut payload_bytes).await?;
            assert!(records.len() > before, "a segment read below the end yields a record");
            next = records.last().expect("just read").offset + 1;
        }
        Ok(records)
    }

    fn span<'a>(&'a self, segment: &'a Segment) -> SegmentSpan<'a> {
        let is_active = std::ptr::eq(segment, self.segments.last().expect("at least one segment"));
        if is_active {
            SegmentSpan { file: segment.file.clone(), path: &segment.path, disk_end: self.active_written_bytes, buffer: &self.write_buffer }
        } else {
            SegmentSpan { file: segment.file.clone(), path: &segment.path, disk_end: segment.size_bytes, buffer: &[] }
        }
    }

    /// The one frame walker. From `(position, offset)` it walks frames until
    /// the span ends, `end_offset` is reached, or `visit` breaks, verifying
    /// each frame's checksum before trusting its length (a flipped length bit
    /// must not send the walk astray). A frame that fails is re-read up to
    /// `read_retries_max` times: a bit flipped on the way from disk is not
    /// corruption on disk. One that stays bad ends the walk with `damage`.
    async fn walk(
        &self,
        span: &SegmentSpan<'_>,
        (mut position, mut expected): (u64, u64),
        end_offset: Option<u64>,
        read_ahead_bytes: usize,
        mut visit: impl FnMut(u64, u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<WalkEnd, LogError> {
        let mut retries_left = self.config.read_retries_max;
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_start = position;
        let span_end = span.end();
        while position < span_end && end_offset.is_none_or(|end| expected < end) {
            let at = usize::try_from(position - chunk_start).expect("chunk offset fits memory");
            let problem = match check_frame(&chunk[at.min(chunk.len())..], expected, self.config.record_bytes_max) {
                FrameCheck::Valid { payload_len } => {
                    let payload_start = at + FRAME_HEADER_BYTES;
                    let flow = visit(expected, position, &chunk[payload_start..payload_start + payload_len]);
                    position += frame_bytes(payload_len);
                    expected += 1;
                    retries_left = self.config.read_retries_max;
                    if flow.is_break() {
                        break;
                    }
                    continue;
                }
                FrameCheck::Incomplete { needed } => {
                    let available = span_end - position;
                    let wanted = needed.map(|n| n as u64).unwrap_or(FRAME_HEADER_BYTES as u64);
                    if at >= chunk.len() || wanted <= available {
                        let len = (read_ahead_bytes as u64 + FRAME_HEADER_BYTES as u64).min(self.config.read_chunk_bytes as u64).max(wanted).min(available);
                        chunk = span.read(position, len).await?;
                        chunk_start = position;
                        continue;
                    }
                    // The span ends inside this frame: a torn write, unless a
                    // flipped length bit lied about the frame size.
                    format!("frame of {wanted} bytes but only {available} remain before byte {span_end}")
                }
                FrameCheck::Invalid(reason) => reason,
            };
            if retries_left == 0 {
                return Ok(WalkEnd { position, next_offset: expected, damage: Some(problem) });
            }
            retries_left -= 1;
            chunk.clear();
            chunk_start = position;
        }
        Ok(WalkEnd { position, next_offset: expected, damage: None })
    }

    /// Walks `segment` from the frame holding `offset`, calling `visit` for
    /// each frame at or after it; damage is a `Corrupt` error.
    async fn walk_frames(
        &self,
        segment: &Segment,
        offset: u64,
        read_ahead_bytes: usize,
        mut visit: impl FnMut(u64, u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        let span = self.span(segment);
        let start = segment.scan_start(offset);
        let mut stopped_by_visitor = false;
        let visit_from_offset = |frame_offset, position, payload: &[u8]| {
            if frame_offset < offset {
                return ControlFlow::Continue(());
            }
            let flow = visit(frame_offset, position, payload);
            stopped_by_visitor = flow.is_break();
            flow
        };
        let end = self.walk(&span, start, Some(segment.end_offset), read_ahead_bytes, visit_from_offset).await?;
        if let Some(reason) = end.damage {
            return Err(LogError::Corrupt { file: segment.path.clone(), position: end.position, reason });
        }
        if !stopped_by_visitor && end.next_offset < segment.end_offset {
            return Err(LogError::Corrupt {
                file: segment.path.clone(),
                position: end.position,
                reason: format!("segment bytes end at offset {}, before its end offset {}", end.next_offset, segment.end_offset),
            });
        }
        Ok(())
    }

    async fn read_segment(
        &self,
        segment: &Segment,
        offset: u64,
        bytes_max: usize,
        records: &mut Vec<Record>,
        payload_bytes: &mut usize,
    ) -> Result<(), LogError> {
        let read_ahead_bytes = bytes_max.saturating_sub(*payload_bytes);
        self.walk_frames(segment, offset, read_ahead_bytes, |frame_offset, _, payload| {
            records.push(Record { offset: frame_offset, payload: payload.to_vec() });
            *payload_bytes += payload.len();
            if *payload_bytes >= bytes_max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
    }

    /// Removes every record at or above `offset`. Durable when it returns: a
    /// truncated record never reappears, even after a crash.
    pub async fn truncate(&mut self, offset: u64) -> Result<(), LogError> {
        self.check_usable()?;
        let (start, end) = (self.start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        if offset == end {
            return Ok(());
        }
        let result = self.truncate_unchecked(offset).await;
        self.poison_on_error(result)
    }

    async fn truncate_unchecked(&mut self, offset: u64) -> Result<(), LogError> {
        self.write_out().await?;
        let keep = self.segments.iter().filter(|s| s.base_offset < offset).count().max(1);
        if self.remove_newest_segments(keep).await? {
            // The newly active segment was sealed: all of it is on disk.
            self.active_written_bytes = self.segments.last().expect("kept one").size_bytes;
        }
        let index_path = self.segments.last().expect("kept one").index_path(&self.dir);
        let last = self.segments.last_mut().expect("kept one");
        if last.has_index_file {
            self.disk.remove(&index_path).await?;
            self.disk.sync_dir(&self.dir).await?;
            last.has_index_file = false;
        }
        let last = self.segments.last().expect("kept one");
        let position = if offset == last.end_offset { last.size_bytes } else { self.position_of(last, offset).await? };
        let last = self.segments.last_mut().expect("kept one");
        last.file.truncate(position).await?;
        last.file.sync().await?;
        let relative = offset - last.base_offset;
        last.index.retain(|entry| u64::from(entry.relative_offset) < relative);
        // Later appends index relative to the last kept entry; over-counting is harmless.
        last.bytes_since_index = position - last.index.last().map(|e| u64::from(e.position)).unwrap_or(SEGMENT_HEADER_BYTES);
        last.end_offset = offset;
        last.size_bytes = position;
        self.active_written_bytes = position;
        self.flushed_offset = offset;
        self.unflushed_bytes = 0;
        self.unflushed_records = 0;
        Ok(())
    }

    /// The byte position of the frame holding `offset` in `segment`.
    async fn position_of(&self, segment: &Segment, offset: u64) -> Result<u64, LogError> {
        let mut found = None;
        self.walk_frames(segment, offset, 0, |_, position, _| {
            found = Some(position);
            ControlFlow::Break(())
        })
        .await?;
        found.ok_or_else(|| LogError::Corrupt {
            file: segment.path.clone(),
            position: segment.size_bytes,
            reason: format!("offset {offset} not found below segment end offset {}", segment.end_offset),
        })
    }

    /// Removes whole sealed segments that lie entirely below `offset`
    /// (retention, Raft log compaction). The active segment always stays.
    /// Returns the new start offset.
    pub async fn remove_segments_before(&mut self, offset: u64) -> Result<u64, LogError> {
        self.check_usable()?;
        let result = self.remove_segments_before_unchecked(offset).await;
        self.poison_on_error(result)?;
        Ok(self.start_offset())
    }

    async fn remove_segments_before_unchecked(&mut self, offset: u64) -> Result<(), LogError> {
        // Oldest first, each durable before the next: a crash leaves a contiguous suffix.
        while self.segments.len() > 1 && self.segments[0].end_offset <= offset {
            let segment = self.segments.remove(0);
            self.disk.remove(&segment.path).await?;
            self.disk.sync_dir(&self.dir).await?;
            if segment.has_index_file {
                self.disk.remove(&segment.index_path(&self.dir)).await?;
            }
        }
        Ok(())
    }

    /// Removes whole segments newest first until `keep` remain, each removal
    /// durable before the next, so a crash part-way leaves a contiguous
    /// prefix of the log, never a gap. Returns whether any was removed.
    async fn remove_newest_segments(&mut self, keep: usize) -> Result<bool, LogError> {
        let removed_any = self.segments.len() > keep;
        while self.segments.len() > keep {
            let segment = self.segments.pop().expect("more than keep");
            if segment.has_index_file {
                self.disk.remove(&segment.index_path(&self.dir)).await?;
            }
            self.disk.remove(&segment.path).await?;
            self.disk.sync_dir(&self.dir).await?;
        }
        Ok(removed_any)
    }

    /// Deletes every segment (see `remove_newest_segments` for crash safety).
    /// Reopening the empty directory starts a new log at
    /// `LogConfig::initial_offset` (how a Raft log restarts after a snapshot).
    pub async fn destroy(mut self) -> Result<(), LogError> {
        self.check_usable()?;
        self.remove_newest_segments(0).await?;
        Ok(())
    }
}

fn validate_config(config: &LogConfig) -> Result<(), LogError> {
    let smallest_segment = SEGMENT_HEADER_BYTES + frame_bytes(0);
    if config.segment_bytes_max < smallest_segment {
        return Err(LogError::Config(format!("segment_bytes_max must be at least {smallest_segment}")));
    }
    if config.segment_bytes_max > u64::from(u32::MAX) {
        return Err(LogError::Config("segment_bytes_max must be below 4 GiB (index positions are u32)".into()));
    }
    if config.read_chunk_bytes < FRAME_HEADER_BYTES {
        return Err(LogError::Config(format!("read_chunk_bytes must be at least {FRAME_HEADER_BYTES}")));
    }
    if let FlushPolicy::Threshold { unflushed_bytes_max: 0, .. } | FlushPolicy::Threshold { unflushed_records_max: 0, .. } = config.flush_policy {
        return Err(LogError::Config("flush thresholds must be positive; use FlushPolicy::EveryAppend".into()));
    }
    Ok(())
}
