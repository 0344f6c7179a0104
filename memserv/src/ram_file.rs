//! A VM's RAM file, mapped read-only.

use std::fs::File;
use std::path::{Path, PathBuf};

use image_server::Image;
use memmap2::Mmap;

use crate::error::MemservError;

/// The guest page size, the unit of memserv's zero markers.
pub const PAGE_SIZE: u32 = 4096;

/// A stopped VM's RAM file (`memory-backend-file,share=on`), mapped
/// read-only. Holes in the file read as zero without allocating memory.
#[derive(Debug)]
pub struct RamFile {
    path: PathBuf,
    file: File,
    map: Mmap,
}

impl RamFile {
    /// Opens and maps the RAM file read-only.
    ///
    /// # Errors
    /// [`MemservError::Map`] if it cannot be opened or mapped,
    /// [`MemservError::Empty`] if it has no bytes.
    pub fn open(path: &Path) -> Result<Self, MemservError> {
        let map_err = |source| MemservError::Map { path: path.to_owned(), source };
        let file = File::open(path).map_err(map_err)?;
        let len = file.metadata().map_err(map_err)?.len();
        if len == 0 {
            return Err(MemservError::Empty { path: path.to_owned() });
        }
        // SAFETY: the mapping is read-only and private to this process's
        // reads. Another process changing the file would change what we
        // read, not break memory safety; truncating it would fault, so
        // `read_at` checks the length first, and the contract of memserv is
        // that the VM (the only other user of the file) is stopped.
        let map = unsafe { Mmap::map(&file) }.map_err(map_err)?;
        Ok(RamFile { path: path.to_owned(), file, map })
    }

    /// The file served.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Image for RamFile {
    fn size(&self) -> u64 {
        self.map.len() as u64
    }

    fn unit(&self) -> u32 {
        PAGE_SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset as usize + buf.len();
        // A file cut shorter than the mapping would fault on access: refuse
        // instead. (It means someone is changing the checkpoint under us.)
        if self.file.metadata()?.len() < end as u64 {
            return Err(std::io::Error::other(format!(
                "{} shrank below {end:#x} while served: is the VM running again?",
                self.path.display()
            )));
        }
        buf.copy_from_slice(&self.map[offset as usize..end]);
        Ok(())
    }
}
