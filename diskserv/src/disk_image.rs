//! A stopped VM's disk image, read with positional reads.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use image_server::Image;

use crate::error::DiskservError;

/// The default block size: the guest's page and filesystem block size, and
/// cownetdisk's default slice unit.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// The smallest block size: a disk sector.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The largest block size; a zero marker covers at least this much.
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// A VM's raw disk image (a regular file or a block device), opened
/// read-only. The size is taken once, at open: the image is a checkpoint
/// and must not change while it is served.
#[derive(Debug)]
pub struct DiskImage {
    path: PathBuf,
    file: File,
    size: u64,
    block_size: u32,
}

impl DiskImage {
    /// Opens the image read-only; `block_size` is the unit of zero markers.
    ///
    /// # Errors
    /// [`DiskservError::BlockSize`] for a block size that is not a power of
    /// two in [`MIN_BLOCK_SIZE`]..=[`MAX_BLOCK_SIZE`];
    /// [`DiskservError::Open`] if the image cannot be opened or measured;
    /// [`DiskservError::Empty`] if it has no bytes.
    pub fn open(path: &Path, block_size: u32) -> Result<Self, DiskservError> {
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(DiskservError::BlockSize { block_size });
        }
        let open_err = |source| DiskservError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        // Seeking to the end measures block devices too, whose metadata
        // length is zero; reads below are positional, so the offset left
        // behind does not matter.
        let size = (&file).seek(SeekFrom::End(0)).map_err(open_err)?;
        if size == 0 {
            return Err(DiskservError::Empty { path: path.to_owned() });
        }
        Ok(DiskImage { path: path.to_owned(), file, size, block_size })
    }

    /// The image served.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Image for DiskImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn unit(&self) -> u32 {
        self.block_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} ends before {:#x}: it shrank while served; is the VM running again?",
                        self.path.display(),
                        offset + buf.len() as u64
                    ),
                )
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("disk.raw");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reads_any_range_of_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        let disk = DiskImage::open(&image(dir.path(), &bytes), 4096).unwrap();
        assert_eq!(disk.size(), bytes.len() as u64);
        assert_eq!(disk.unit(), 4096);
        let mut buf = vec![0u8; 5000];
        disk.read_at(4000, &mut buf).unwrap();
        assert_eq!(buf, bytes[4000..9000]);
        let mut tail = vec![0u8; 100];
        disk.read_at(3 * 4096, &mut tail).unwrap();
        assert_eq!(tail, bytes[3 * 4096..]);
    }

    #[test]
    fn a_shrunk_image_is_reported_not_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), &[1u8; 8192]);
        let disk = DiskImage::open(&path, 4096).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
        let err = disk.read_at(4096, &mut [0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("shrank while served"), "{err}");
    }

    #[test]
    fn bad_block_sizes_and_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path(), &[1u8; 4096]);
        for bad in [0, 256, 3000, 2 << 20] {
            assert!(matches!(DiskImage::open(&path, bad), Err(DiskservError::BlockSize { .. })), "{bad}");
        }
        let empty = dir.path().join("empty.raw");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(DiskImage::open(&empty, 4096), Err(DiskservError::Empty { .. })));
        let missing = DiskImage::open(&dir.path().join("nope.raw"), 4096).unwrap_err();
        let text = wire::chain(&missing);
        assert!(text.contains("nope.raw") && text.contains("is the VM stopped"), "{text}");
    }
}
