//! Screenshots (binary PPM, as QEMU's `screendump` writes them) and the
//! test guest's screen pattern (`jt.screen=1`): four solid quadrants, red
//! top-left, green top-right, blue bottom-left, white bottom-right.

use std::path::Path;

/// The background of the desktop guest's local pages in Firefox (#2a6f97).
pub const PAGE_COLOUR: [u8; 3] = [0x2a, 0x6f, 0x97];

/// A screenshot's pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screenshot {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB, row by row.
    pub pixels: Vec<[u8; 3]>,
}

impl Screenshot {
    /// Reads a binary PPM (`P6`, 8 bits a channel).
    ///
    /// # Errors
    /// A text saying what is wrong with the file.
    pub fn read_ppm(path: &Path) -> Result<Screenshot, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Header: "P6" width height maxval, whitespace-separated, one byte of whitespace, then data.
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            if start == at {
                return Err(format!("{} ends inside its PPM header", path.display()));
            }
            fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
        }
        let number = |i: usize| fields[i].parse::<usize>().map_err(|_| format!("bad PPM header in {}", path.display()));
        if fields[0] != "P6" || number(3)? != 255 {
            return Err(format!("{} is not an 8-bit binary PPM", path.display()));
        }
        let (width, height) = (number(1)?, number(2)?);
        let data = &bytes[at + 1..];
        if data.len() < width * height * 3 {
            return Err(format!("{} holds fewer pixels than {width}x{height}", path.display()));
        }
        let pixels = data.chunks_exact(3).take(width * height).map(|p| [p[0], p[1], p[2]]).collect();
        Ok(Screenshot { width, height, pixels })
    }

    /// The pixel at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.pixels[y * self.width + x]
    }

    /// Whether this is the test guest's pattern: each quadrant's centre and
    /// the points a quarter of the way in from its corners have its colour.
    pub fn shows_test_pattern(&self) -> bool {
        let (w, h) = (self.width, self.height);
        if w < 16 || h < 16 {
            return false;
        }
        let quadrants =
            [(0, 0, [255, 0, 0]), (w / 2, 0, [0, 255, 0]), (0, h / 2, [0, 0, 255]), (w / 2, h / 2, [255, 255, 255])];
        quadrants.iter().all(|&(x0, y0, colour)| {
            let (qw, qh) = (w / 2, h / 2);
            [(qw / 2, qh / 2), (qw / 4, qh / 4), (3 * qw / 4, qh / 4), (qw / 4, 3 * qh / 4), (3 * qw / 4, 3 * qh / 4)]
                .iter()
                .all(|&(dx, dy)| self.at(x0 + dx, y0 + dy) == colour)
        })
    }

    /// Whether this is the desktop guest's session with Firefox on its
    /// local page: the page's background ([`PAGE_COLOUR`]) over a good part
    /// of the screen, and the rest of a session around it (panel, window
    /// decorations, anti-aliased text: over a hundred colours).
    pub fn shows_desktop_session(&self) -> bool {
        self.share_of(PAGE_COLOUR) > 0.10 && self.distinct_colours() > 100
    }

    /// The share (0 to 1) of the pixels that have exactly `colour`.
    pub fn share_of(&self, colour: [u8; 3]) -> f64 {
        if self.pixels.is_empty() {
            return 0.0;
        }
        self.pixels.iter().filter(|&&p| p == colour).count() as f64 / self.pixels.len() as f64
    }

    /// How many different colours the screen shows: a blank screen or a
    /// text console has a handful, a graphical session (anti-aliased text,
    /// icons, a wallpaper) hundreds.
    pub fn distinct_colours(&self) -> usize {
        let mut seen: Vec<[u8; 3]> = self.pixels.clone();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(width: usize, height: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut bytes = format!("P6\n{width} {height}\n255\n").into_bytes();
        for y in 0..height {
            for x in 0..width {
                bytes.extend(pixel(x, y));
            }
        }
        bytes
    }

    #[test]
    fn the_pattern_is_recognised_and_a_black_screen_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = dir.path().join("pattern.ppm");
        std::fs::write(
            &pattern,
            ppm(64, 48, |x, y| match (x < 32, y < 24) {
                (true, true) => [255, 0, 0],
                (false, true) => [0, 255, 0],
                (true, false) => [0, 0, 255],
                (false, false) => [255, 255, 255],
            }),
        )
        .unwrap();
        let shot = Screenshot::read_ppm(&pattern).unwrap();
        assert_eq!((shot.width, shot.height), (64, 48));
        assert!(shot.shows_test_pattern());
        let black = dir.path().join("black.ppm");
        std::fs::write(&black, ppm(64, 48, |_, _| [0, 0, 0])).unwrap();
        assert!(!Screenshot::read_ppm(&black).unwrap().shows_test_pattern());
        std::fs::write(&black, b"P6\n64 48\n255\n").unwrap();
        assert!(Screenshot::read_ppm(&black).unwrap_err().contains("fewer pixels"));
    }

    #[test]
    fn shares_and_distinct_colours_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shot.ppm");
        // A quarter of the pixels one blue, the rest a gradient of 192 greys.
        std::fs::write(&file, ppm(64, 4, |x, y| if y == 0 { [42, 111, 151] } else { [x as u8, x as u8, y as u8] }))
            .unwrap();
        let shot = Screenshot::read_ppm(&file).unwrap();
        assert!((shot.share_of([42, 111, 151]) - 0.25).abs() < 1e-9);
        assert_eq!(shot.share_of([1, 2, 3]), 0.0);
        assert_eq!(shot.distinct_colours(), 1 + 64 * 3);
    }
}
