//! The unsynced state of one file: the pages written and the size set since its last fsync.
//!
//! The backing file holds exactly what was durable at the last fsync; everything after it lives
//! here, in memory, until [`Dirty::flush`] (fsync or fdatasync of the file) writes it back, or
//! the owner drops it (power loss). Invariants: `backing_valid <= size` (bytes of the backing
//! file past `backing_valid` were cut by a truncation since the last flush and read as zeros);
//! bytes of a cached page at or past `size` are zero.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes of a cached page: the unit in which unsynced writes are kept (and dropped).
pub const PAGE_BYTES: u64 = 4096;

/// What a file holds beyond its durable (backing) content.
#[derive(Debug)]
pub struct Dirty {
    /// Pages written since the last flush, by page number; each is `PAGE_BYTES` long.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The size the application sees.
    size: u64,
    /// Bytes at the start of the backing file that still count.
    backing_valid: u64,
}

impl Dirty {
    /// Nothing unsynced yet over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Dirty {
        Dirty {
            pages: BTreeMap::new(),
            size: backing_len,
            backing_valid: backing_len,
        }
    }

    /// The size the application sees.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of pages held (what a power loss discards).
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_BYTES
    }

    /// Writes `data` at `offset`, reading a partly overwritten page from `backing` first.
    pub fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let number = pos / PAGE_BYTES;
            let in_page = (pos % PAGE_BYTES) as usize;
            let n = (PAGE_BYTES - in_page as u64).min(end - pos) as usize;
            if !self.pages.contains_key(&number) {
                let page = if n as u64 == PAGE_BYTES {
                    vec![0u8; PAGE_BYTES as usize].into_boxed_slice()
                } else {
                    self.load(backing, number)?
                };
                self.pages.insert(number, page);
            }
            if let Some(page) = self.pages.get_mut(&number) {
                let from = (pos - offset) as usize;
                page[in_page..in_page + n].copy_from_slice(&data[from..from + n]);
            }
            pos += n as u64;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Up to `len` bytes at `offset`, as the application would read them.
    pub fn read(&self, backing: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size || len == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + len as u64).min(self.size);
        let mut out = vec![0u8; (end - offset) as usize];
        if offset < self.backing_valid {
            let valid = (self.backing_valid.min(end) - offset) as usize;
            read_backing(backing, offset, &mut out[..valid])?;
        }
        let first = offset / PAGE_BYTES;
        let last = (end - 1) / PAGE_BYTES;
        for (&number, page) in self.pages.range(first..=last) {
            let page_start = number * PAGE_BYTES;
            let from = page_start.max(offset);
            let to = (page_start + PAGE_BYTES).min(end);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        Ok(out)
    }

    /// Sets the size: a shrink drops the cached bytes past it and hides the backing ones.
    pub fn truncate(&mut self, size: u64) {
        if size < self.size {
            drop(self.pages.split_off(&size.div_ceil(PAGE_BYTES)));
            let keep = (size % PAGE_BYTES) as usize;
            if keep != 0 {
                if let Some(page) = self.pages.get_mut(&(size / PAGE_BYTES)) {
                    page[keep..].fill(0);
                }
            }
            self.backing_valid = self.backing_valid.min(size);
        }
        self.size = size;
    }

    /// Makes it durable: writes every cached byte and the size to `backing`.
    pub fn flush(self, backing: &File) -> io::Result<()> {
        backing.set_len(self.backing_valid)?;
        for (number, page) in &self.pages {
            let start = number * PAGE_BYTES;
            if start >= self.size {
                continue;
            }
            let n = PAGE_BYTES.min(self.size - start) as usize;
            backing.write_all_at(&page[..n], start)?;
        }
        backing.set_len(self.size)
    }

    /// Page `number` as the backing file holds it (zeros past `backing_valid`).
    fn load(&self, backing: &File, number: u64) -> io::Result<Box<[u8]>> {
        let mut page = vec![0u8; PAGE_BYTES as usize].into_boxed_slice();
        let start = number * PAGE_BYTES;
        if start < self.backing_valid {
            let valid = (self.backing_valid - start).min(PAGE_BYTES) as usize;
            read_backing(backing, start, &mut page[..valid])?;
        }
        Ok(page)
    }
}

/// Fills `out` from `backing` at `offset`; what lies past its end stays zero.
fn read_backing(backing: &File, offset: u64, out: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        match backing.read_at(&mut out[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn backing(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, file)
    }

    fn on_disk(file: &File) -> Vec<u8> {
        let mut out = vec![0u8; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut out, 0).unwrap();
        out
    }

    #[test]
    fn writes_stay_in_memory_until_flushed() {
        let (_dir, file) = backing(b"hello world");
        let mut dirty = Dirty::new(11);
        dirty.write(&file, 6, b"WORLD!").unwrap();
        assert_eq!(dirty.read(&file, 0, 100).unwrap(), b"hello WORLD!");
        assert_eq!(
            on_disk(&file),
            b"hello world",
            "nothing reaches the disk before a flush"
        );
        dirty.flush(&file).unwrap();
        assert_eq!(on_disk(&file), b"hello WORLD!");
    }

    #[test]
    fn writes_across_pages_and_past_the_end_read_back() {
        let (_dir, file) = backing(&[7u8; 5000]);
        let mut dirty = Dirty::new(5000);
        let data: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
        dirty.write(&file, 3000, &data).unwrap();
        let mut expected = vec![7u8; 3000];
        expected.extend_from_slice(&data);
        assert_eq!(dirty.size(), 12000);
        assert_eq!(dirty.read(&file, 0, 20000).unwrap(), expected);
        assert_eq!(dirty.read(&file, 4090, 20).unwrap(), expected[4090..4110]);
        dirty.flush(&file).unwrap();
        assert_eq!(on_disk(&file), expected);
    }

    #[test]
    fn a_truncation_hides_the_backing_bytes_past_it() {
        let (_dir, file) = backing(&[1u8; 10000]);
        let mut dirty = Dirty::new(10000);
        dirty.write(&file, 100, &[2u8; 10]).unwrap();
        dirty.truncate(105);
        dirty.truncate(8192);
        let read = dirty.read(&file, 0, 9000).unwrap();
        assert_eq!(read.len(), 8192);
        assert_eq!(read[..100], [1u8; 100]);
        assert_eq!(read[100..105], [2u8; 5]);
        assert!(
            read[105..].iter().all(|&b| b == 0),
            "cut bytes read as zeros"
        );
        assert_eq!(
            on_disk(&file),
            vec![1u8; 10000],
            "the cut is not durable yet"
        );
        dirty.flush(&file).unwrap();
        assert_eq!(on_disk(&file), read);
    }

    #[test]
    fn dropping_the_cache_leaves_the_durable_content() {
        let (_dir, file) = backing(b"durable");
        let mut dirty = Dirty::new(7);
        dirty.write(&file, 0, b"LOST").unwrap();
        dirty.truncate(2);
        assert!(dirty.dirty_bytes() > 0);
        drop(dirty);
        assert_eq!(on_disk(&file), b"durable");
    }
}
