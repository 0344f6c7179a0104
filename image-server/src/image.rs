//! What a desktop daemon serves.

/// A read-only image: a VM's RAM file or disk image.
///
/// Implementations must never write the file: it is the desktop's
/// checkpoint of the VM.
pub trait Image: Send + Sync + std::fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// The unit (page or block size) at which all-zero data is reported as
    /// a zero marker instead of bytes. A power of two.
    fn unit(&self) -> u32;

    /// Fills `buf` with the bytes at `offset`; the caller has checked that
    /// the range lies inside [`Image::size`].
    ///
    /// # Errors
    /// The I/O error of the underlying file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}
