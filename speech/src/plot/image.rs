//! RGB images and PNG files: [`RgbImage`] holds what the chart and spectrogram renderers draw,
//! [`encode_png`] turns row-major RGB8 pixels into a PNG through the `png` crate, and
//! [`write_png`] writes one atomically.

use std::path::Path;

use plotters::style::RGBColor;
use stapes_tensor::{Error, Result};

/// An 8-bit RGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// White.
    pub const WHITE: Rgb = Rgb(255, 255, 255);
    /// Black.
    pub const BLACK: Rgb = Rgb(0, 0, 0);

    /// The colour `t` of the way from `self` to `other` (`t` clamped to `[0, 1]`, NaN as 0).
    pub fn lerp(self, other: Rgb, t: f32) -> Rgb {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let mix = |a: u8, b: u8| (f32::from(a) + (f32::from(b) - f32::from(a)) * t).round() as u8;
        Rgb(mix(self.0, other.0), mix(self.1, other.1), mix(self.2, other.2))
    }
}

impl From<Rgb> for RGBColor {
    fn from(c: Rgb) -> RGBColor {
        RGBColor(c.0, c.1, c.2)
    }
}

/// An axis-aligned rectangle in pixels: `x..x + w` by `y..y + h`, y growing downwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub w: i32,
    /// Height.
    pub h: i32,
}

impl Rect {
    /// A rectangle from its top-left corner and size.
    pub const fn new(x: i32, y: i32, w: i32, h: i32) -> Rect {
        Rect { x, y, w, h }
    }

    /// One past the right edge.
    pub fn right(&self) -> i32 {
        self.x.saturating_add(self.w)
    }

    /// One past the bottom edge.
    pub fn bottom(&self) -> i32 {
        self.y.saturating_add(self.h)
    }

    /// Whether pixel `(x, y)` is inside.
    pub fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x && x < self.right() && y >= self.y && y < self.bottom()
    }
}

/// The largest image side the renderers make, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// A `width × height` RGB8 image, row-major, the top row first.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl RgbImage {
    /// An image filled with `background`. Errors on a zero side or one above
    /// [`MAX_IMAGE_SIDE`].
    pub fn new(width: u32, height: u32, background: Rgb) -> Result<RgbImage> {
        if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
            return Err(Error::invalid(
                "RgbImage::new",
                format!("image size {width}x{height} must be between 1 and {MAX_IMAGE_SIDE} on each side"),
            ));
        }
        let n = width as usize * height as usize;
        let mut pixels = Vec::with_capacity(n * 3);
        for _ in 0..n {
            pixels.extend_from_slice(&[background.0, background.1, background.2]);
        }
        Ok(RgbImage { width, height, pixels })
    }

    /// The width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// The height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels: `width * height * 3` bytes, row-major RGB.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixels, to draw on (plotters' bitmap backend borrows them).
    pub(crate) fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// The colour at `(x, y)`, or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some(Rgb(self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]))
    }

    /// Sets the colour at `(x, y)`; pixels outside the image are ignored.
    pub(crate) fn set_pixel(&mut self, x: i32, y: i32, c: Rgb) {
        if x < 0 || y < 0 || x as u32 >= self.width || y as u32 >= self.height {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
    }

    /// The image as a PNG file in memory ([`encode_png`]).
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        encode_png(self.width, self.height, &self.pixels)
    }

    /// Writes the image to `path` as a PNG file, atomically ([`write_png`]).
    pub fn write_png(&self, path: impl AsRef<Path>) -> Result<()> {
        write_png(path, self.width, self.height, &self.pixels)
    }
}

/// The largest width or height PNG allows.
const PNG_MAX_SIDE: u32 = (1 << 31) - 1;

/// Encodes a `width × height` image of row-major RGB8 pixels (`rgb.len() == width * height *
/// 3`, the top row first) as a PNG file in memory (8-bit RGB, adaptive filtering, the `png`
/// crate's balanced compression). Errors on a zero or too large size and on a pixel buffer of
/// the wrong length.
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    const OP: &str = "encode_png";
    if width == 0 || height == 0 || width > PNG_MAX_SIDE || height > PNG_MAX_SIDE {
        return Err(Error::invalid(OP, format!("image size {width}x{height} is empty or beyond PNG's 2^31-1 limit")));
    }
    let expected = (width as usize).checked_mul(height as usize).and_then(|p| p.checked_mul(3));
    if expected != Some(rgb.len()) {
        return Err(Error::invalid(
            OP,
            format!("a {width}x{height} RGB8 image needs {width} * {height} * 3 bytes, got {}", rgb.len()),
        ));
    }
    let mut out = Vec::new();
    let mut encoder = ::png::Encoder::new(&mut out, width, height);
    encoder.set_color(::png::ColorType::Rgb);
    encoder.set_depth(::png::BitDepth::Eight);
    encoder.set_compression(::png::Compression::Balanced);
    let fail = |e: ::png::EncodingError| Error::invalid(OP, format!("PNG encoding failed: {e}"));
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// Encodes the image like [`encode_png`] and writes it to `path` atomically (a temporary file
/// in the same folder, synced, then renamed over `path`). A missing folder or an unwritable
/// path is an [`Error::Io`] naming the path.
pub fn write_png(path: impl AsRef<Path>, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    let bytes = encode_png(width, height, rgb)?;
    stapes_nn::checkpoint::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_are_errors() {
        assert!(encode_png(0, 5, &[]).is_err());
        assert!(encode_png(2, 2, &[0; 11]).is_err());
        assert!(encode_png(u32::MAX, 1, &[]).is_err());
        assert!(RgbImage::new(0, 10, Rgb::WHITE).is_err());
        assert!(RgbImage::new(MAX_IMAGE_SIDE + 1, 10, Rgb::WHITE).is_err());
        let png = encode_png(1, 1, &[1, 2, 3]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn pixels_outside_are_ignored() {
        let mut img = RgbImage::new(3, 2, Rgb::WHITE).unwrap();
        img.set_pixel(-1, 0, Rgb::BLACK);
        img.set_pixel(3, 1, Rgb::BLACK);
        img.set_pixel(2, 1, Rgb(1, 2, 3));
        assert_eq!(img.pixel(2, 1), Some(Rgb(1, 2, 3)));
        assert_eq!(img.pixel(3, 0), None);
        assert_eq!(img.pixels().iter().filter(|&&b| b != 255).count(), 3);
    }
}
