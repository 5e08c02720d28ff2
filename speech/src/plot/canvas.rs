//! A small RGB raster canvas: rectangles, anti-aliased lines of any width, discs and text in
//! the built-in bitmap font. Everything drawn is clipped to the canvas (or to a given clip
//! rectangle), so coordinates far outside, or not finite, never panic.

use std::path::Path;

use stapes_tensor::{Error, Result};

use super::font::{glyph, GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
use super::png;

/// An 8-bit RGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// White.
    pub const WHITE: Rgb = Rgb(255, 255, 255);
    /// Black.
    pub const BLACK: Rgb = Rgb(0, 0, 0);

    /// The colour `t` of the way from `self` to `other` (`t` clamped to `[0, 1]`).
    pub fn lerp(self, other: Rgb, t: f32) -> Rgb {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let mix = |a: u8, b: u8| (f32::from(a) + (f32::from(b) - f32::from(a)) * t).round() as u8;
        Rgb(mix(self.0, other.0), mix(self.1, other.1), mix(self.2, other.2))
    }
}

/// An axis-aligned rectangle in pixels: `x..x + w` by `y..y + h`, y growing downwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width (an empty rectangle when <= 0).
    pub w: i32,
    /// Height (an empty rectangle when <= 0).
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

    /// The overlap of two rectangles (empty, with `w` or `h` <= 0, when they do not meet).
    pub fn intersect(&self, o: &Rect) -> Rect {
        let (x0, y0) = (self.x.max(o.x), self.y.max(o.y));
        let (x1, y1) = (self.right().min(o.right()), self.bottom().min(o.bottom()));
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    fn is_empty(&self) -> bool {
        self.w <= 0 || self.h <= 0
    }
}

/// The largest canvas side, in pixels.
pub const MAX_CANVAS_SIDE: u32 = 16384;

/// The width in pixels of `s` drawn at `scale` (no trailing spacing).
pub fn text_width(s: &str, scale: u32) -> i32 {
    let n = s.chars().count() as i32;
    if n == 0 {
        0
    } else {
        (n * GLYPH_ADVANCE as i32 - (GLYPH_ADVANCE - GLYPH_WIDTH) as i32) * scale as i32
    }
}

/// The height in pixels of a line of text at `scale`, descenders included.
pub fn text_height(scale: u32) -> i32 {
    (GLYPH_HEIGHT * scale) as i32
}

/// An RGB8 image being drawn on.
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A `width × height` canvas filled with `background`. Errors on a zero side or one above
    /// [`MAX_CANVAS_SIDE`].
    pub fn new(width: u32, height: u32, background: Rgb) -> Result<Canvas> {
        if width == 0 || height == 0 || width > MAX_CANVAS_SIDE || height > MAX_CANVAS_SIDE {
            return Err(Error::invalid(
                "Canvas::new",
                format!("canvas size {width}x{height} must be between 1 and {MAX_CANVAS_SIDE} on each side"),
            ));
        }
        let n = width as usize * height as usize;
        let mut pixels = Vec::with_capacity(n * 3);
        for _ in 0..n {
            pixels.extend_from_slice(&[background.0, background.1, background.2]);
        }
        Ok(Canvas { width, height, pixels })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, row-major RGB8, top row first.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The whole canvas as a rectangle.
    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width as i32, self.height as i32)
    }

    /// The colour at `(x, y)`, `None` outside the canvas.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some(Rgb(self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]))
    }

    #[inline]
    fn index(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && x < i64::from(self.width) && y < i64::from(self.height))
            .then(|| (y as usize * self.width as usize + x as usize) * 3)
    }

    /// Sets `(x, y)` to `c`; does nothing outside the canvas.
    pub fn set_pixel(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.pixels[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
        }
    }

    /// Paints `c` over `(x, y)` with opacity `alpha` (clamped to `[0, 1]`).
    pub fn blend_pixel(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        if let Some(i) = self.index(x, y) {
            let old = Rgb(self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]);
            let new = old.lerp(c, alpha);
            self.pixels[i..i + 3].copy_from_slice(&[new.0, new.1, new.2]);
        }
    }

    /// Fills `r` (clipped to the canvas) with `c`.
    pub fn fill_rect(&mut self, r: Rect, c: Rgb) {
        let r = r.intersect(&self.bounds());
        if r.is_empty() {
            return;
        }
        for y in r.y..r.bottom() {
            let start = (y as usize * self.width as usize + r.x as usize) * 3;
            for px in self.pixels[start..start + r.w as usize * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&[c.0, c.1, c.2]);
            }
        }
    }

    /// Draws the 1-pixel outline of `r`, inside `r`.
    pub fn stroke_rect(&mut self, r: Rect, c: Rgb) {
        if r.is_empty() {
            return;
        }
        self.fill_rect(Rect::new(r.x, r.y, r.w, 1), c);
        self.fill_rect(Rect::new(r.x, r.bottom() - 1, r.w, 1), c);
        self.fill_rect(Rect::new(r.x, r.y, 1, r.h), c);
        self.fill_rect(Rect::new(r.right() - 1, r.y, 1, r.h), c);
    }

    /// An anti-aliased line of `width` pixels from `(x0, y0)` to `(x1, y1)` with round caps;
    /// coordinates are continuous (pixel `(i, j)` covers `[i, i + 1) × [j, j + 1)`).
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, width: f64, c: Rgb) {
        self.polyline(&[(x0, y0), (x1, y1)], width, c);
    }

    /// An anti-aliased polyline of `width` pixels through `points`, with round joins.
    pub fn polyline(&mut self, points: &[(f64, f64)], width: f64, c: Rgb) {
        self.polyline_clipped(points, width, c, self.bounds());
    }

    /// [`Canvas::polyline`] drawing only inside `clip`. Each pixel is painted once with its
    /// largest coverage over the segments, so joins are not darker than the line. A point
    /// that is not finite breaks the line there.
    pub fn polyline_clipped(&mut self, points: &[(f64, f64)], width: f64, c: Rgb, clip: Rect) {
        let clip = clip.intersect(&self.bounds());
        let r = if width.is_finite() { width.max(0.0) / 2.0 + 0.5 } else { 0.5 };
        let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let segments: Vec<((f64, f64), (f64, f64))> = if points.len() == 1 {
            points.iter().filter(|p| finite(p)).map(|&p| (p, p)).collect()
        } else {
            points.windows(2).filter(|w| finite(&w[0]) && finite(&w[1])).map(|w| (w[0], w[1])).collect()
        };
        if clip.is_empty() || segments.is_empty() {
            return;
        }
        // Coverage over the bounding box of all segments, clipped.
        let (mut bx0, mut by0, mut bx1, mut by1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for &((ax, ay), (bx, by)) in &segments {
            bx0 = bx0.min(ax.min(bx) - r);
            by0 = by0.min(ay.min(by) - r);
            bx1 = bx1.max(ax.max(bx) + r);
            by1 = by1.max(ay.max(by) + r);
        }
        let to_px = |v: f64, lo: i32, hi: i32| v.floor().clamp(f64::from(lo), f64::from(hi)) as i32;
        // First and last (inclusive) pixel of the box; an empty box when it misses `clip`.
        let (x0, y0) = (to_px(bx0, clip.x, clip.right()), to_px(by0, clip.y, clip.bottom()));
        let (x1, y1) = (to_px(bx1, clip.x - 1, clip.right() - 1), to_px(by1, clip.y - 1, clip.bottom() - 1));
        let area = Rect::new(x0, y0, x1 - x0 + 1, y1 - y0 + 1).intersect(&clip);
        if area.is_empty() {
            return;
        }
        let mut cov = vec![0f32; area.w as usize * area.h as usize];
        for &((ax, ay), (bx, by)) in &segments {
            let (dx, dy) = (bx - ax, by - ay);
            let len2 = dx * dx + dy * dy;
            let len = len2.sqrt();
            let ys = to_px(ay.min(by) - r, area.y, area.bottom());
            let ye = to_px(ay.max(by) + r, area.y - 1, area.bottom() - 1);
            for y in ys..=ye {
                let py = f64::from(y) + 0.5;
                // The columns where the band of half-width r around the segment's line meets
                // this row, within the segment's box.
                let (mut xa, mut xb) = (ax.min(bx) - r, ax.max(bx) + r);
                if len > 0.0 && dy.abs() > 1e-9 * len {
                    let (ux, uy) = (dx / len, dy / len);
                    let centre = ax + ux * (py - ay) / uy;
                    let half = r / uy.abs();
                    xa = xa.max(centre - half);
                    xb = xb.min(centre + half);
                }
                let xs = to_px(xa - 1.0, area.x, area.right());
                let xe = to_px(xb + 1.0, area.x - 1, area.right() - 1);
                for x in xs..=xe {
                    let px = f64::from(x) + 0.5;
                    let t = if len2 > 0.0 { (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                    let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
                    let d = (qx * qx + qy * qy).sqrt();
                    let a = (r - d).clamp(0.0, 1.0) as f32;
                    if a > 0.0 {
                        let k = (y - area.y) as usize * area.w as usize + (x - area.x) as usize;
                        cov[k] = cov[k].max(a);
                    }
                }
            }
        }
        for (k, &a) in cov.iter().enumerate() {
            if a > 0.0 {
                let x = area.x + (k % area.w as usize) as i32;
                let y = area.y + (k / area.w as usize) as i32;
                self.blend_pixel(i64::from(x), i64::from(y), c, a);
            }
        }
    }

    /// An anti-aliased disc of `radius` pixels centred on `(cx, cy)`.
    pub fn fill_circle(&mut self, cx: f64, cy: f64, radius: f64, c: Rgb) {
        self.polyline(&[(cx, cy)], 2.0 * radius, c);
    }

    /// Draws `s` with its top-left corner at `(x, y)`, each font pixel a `scale × scale`
    /// block (scale 0 draws nothing); returns the width drawn. Characters outside printable
    /// ASCII draw as `?`.
    pub fn text(&mut self, x: i32, y: i32, s: &str, scale: u32, c: Rgb) -> i32 {
        let sc = scale as i32;
        for (i, ch) in s.chars().enumerate() {
            let gx = x.saturating_add((i as i32).saturating_mul(GLYPH_ADVANCE as i32 * sc));
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits >> (GLYPH_WIDTH - 1 - col) & 1 == 1 {
                        let r =
                            Rect::new(gx.saturating_add(col as i32 * sc), y.saturating_add(row as i32 * sc), sc, sc);
                        self.fill_rect(r, c);
                    }
                }
            }
        }
        text_width(s, scale)
    }

    /// Draws `s` rotated a quarter turn anticlockwise (reading upwards), inside the box with
    /// top-left corner `(x, y)`, [`text_height`] wide and [`text_width`] tall.
    pub fn text_vertical(&mut self, x: i32, y: i32, s: &str, scale: u32, c: Rgb) {
        let sc = scale as i32;
        let total = text_width(s, scale);
        for (i, ch) in s.chars().enumerate() {
            let u0 = (i as i32).saturating_mul(GLYPH_ADVANCE as i32 * sc);
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits >> (GLYPH_WIDTH - 1 - col) & 1 == 1 {
                        let u = u0.saturating_add(col as i32 * sc);
                        let v = row as i32 * sc;
                        let top = y.saturating_add(total).saturating_sub(u).saturating_sub(sc);
                        self.fill_rect(Rect::new(x.saturating_add(v), top, sc, sc), c);
                    }
                }
            }
        }
    }

    /// Encodes the canvas as a PNG file in memory.
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        png::encode_png(self.width, self.height, &self.pixels)
    }

    /// Writes the canvas to `path` as a PNG file, atomically.
    pub fn write_png(&self, path: impl AsRef<Path>) -> Result<()> {
        png::write_png(path, self.width, self.height, &self.pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(c: &Canvas, col: Rgb) -> usize {
        c.pixels().chunks_exact(3).filter(|p| *p == [col.0, col.1, col.2]).count()
    }

    #[test]
    fn zero_or_huge_canvases_are_errors() {
        assert!(Canvas::new(0, 10, Rgb::WHITE).is_err());
        assert!(Canvas::new(10, 0, Rgb::WHITE).is_err());
        assert!(Canvas::new(MAX_CANVAS_SIDE + 1, 1, Rgb::WHITE).is_err());
    }

    #[test]
    fn rectangles_clip_to_the_canvas() {
        let mut c = Canvas::new(10, 8, Rgb::WHITE).unwrap();
        c.fill_rect(Rect::new(-5, -5, 8, 7), Rgb::BLACK);
        assert_eq!(count(&c, Rgb::BLACK), 3 * 2);
        c.fill_rect(Rect::new(i32::MAX - 1, 0, 5, 5), Rgb::BLACK);
        c.stroke_rect(Rect::new(0, 0, 10, 8), Rgb(1, 2, 3));
        assert_eq!(count(&c, Rgb(1, 2, 3)), 2 * 10 + 2 * 6);
    }

    #[test]
    fn a_horizontal_two_pixel_line_covers_two_full_rows() {
        let mut c = Canvas::new(40, 20, Rgb::WHITE).unwrap();
        c.line(5.0, 10.0, 35.0, 10.0, 2.0, Rgb::BLACK);
        for y in 0..20 {
            let full = (0..40).filter(|&x| c.pixel(x, y) == Some(Rgb::BLACK)).count();
            if y == 9 || y == 10 {
                assert!(full >= 29, "row {y}: {full}");
            } else {
                assert_eq!(full, 0, "row {y}");
            }
        }
    }

    #[test]
    fn diagonal_lines_and_bad_coordinates_do_not_panic() {
        let mut c = Canvas::new(50, 50, Rgb::WHITE).unwrap();
        c.line(0.0, 0.0, 49.0, 49.0, 3.0, Rgb::BLACK);
        assert_eq!(c.pixel(25, 25), Some(Rgb::BLACK));
        assert_eq!(c.pixel(45, 5), Some(Rgb::WHITE));
        c.line(-1e300, 3.0, 1e300, 3.0, 1.0, Rgb::BLACK);
        c.line(f64::NAN, 0.0, 3.0, 3.0, 1.0, Rgb::BLACK);
        c.polyline(&[(1.0, 1.0), (f64::INFINITY, 2.0), (5.0, 5.0)], f64::NAN, Rgb::BLACK);
        c.fill_circle(25.0, 25.0, 4.0, Rgb(9, 9, 9));
        assert_eq!(c.pixel(25, 25), Some(Rgb(9, 9, 9)));
    }

    #[test]
    fn text_has_the_glyph_pixels_and_the_stated_width() {
        let mut c = Canvas::new(60, 20, Rgb::WHITE).unwrap();
        let w = c.text(1, 1, "1.5", 2, Rgb::BLACK);
        assert_eq!(w, text_width("1.5", 2));
        assert_eq!(w, (3 * 6 - 1) * 2);
        // The '1' glyph's stem (column 2) spans rows 0..=6.
        for row in 0..7 {
            assert_eq!(c.pixel(1 + 2 * 2, 1 + row * 2), Some(Rgb::BLACK));
        }
        let mut v = Canvas::new(20, 60, Rgb::WHITE).unwrap();
        v.text_vertical(0, 0, "ab", 2, Rgb::BLACK);
        assert!(count(&v, Rgb::BLACK) > 0);
        assert_eq!(count(&v, Rgb::BLACK), {
            let mut h = Canvas::new(60, 20, Rgb::WHITE).unwrap();
            h.text(0, 0, "ab", 2, Rgb::BLACK);
            count(&h, Rgb::BLACK)
        });
    }
}
