//! The one font of every plot: DejaVu Sans (Bitstream Vera licence, in
//! `speech/assets/DejaVuSans.LICENSE`), embedded in the binary and registered once per process
//! with plotters' `ab_glyph` text renderer, so no system font is ever looked up.
//!
//! A proportional font on purpose: plotters 0.3.7's `ab_glyph` renderer places each glyph at
//! its advance without its left side bearing, which a proportional font barely has but
//! DejaVu Sans Mono (half the size) has a lot of: its narrow glyphs (`.`, `-`, `1`) were drawn
//! flush left in their cells, so `3.0` read as `3. 0`.

use std::sync::OnceLock;

use plotters::style::{register_font, FontStyle, IntoFont, TextStyle};
use stapes_tensor::{Error, Result};

use super::image::Rgb;

/// The TrueType file, from Debian's `fonts-dejavu-core` 2.37.
const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The family name the font is registered under (a name of our own, so it never replaces a
/// font that other code registered with plotters).
const FAMILY: &str = "stapes-dejavu-sans";

/// Registers the embedded font with plotters (once); an error if it does not parse.
pub(crate) fn ensure_registered() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("plot", "the embedded font (DejaVu Sans) could not be parsed"))
    }
}

/// Text in the embedded font, `size` pixels per em, in `color`.
pub(crate) fn text(size: f64, color: Rgb) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&plotters::style::RGBColor::from(color))
}

/// The width in pixels of `s` in the embedded font at `size` (its advances and kerning: what
/// plotters lays the text out with).
pub(crate) fn text_width(s: &str, size: f64) -> i32 {
    (FAMILY, size).into_font().box_size(s).map(|(w, _)| w as i32).unwrap_or(0)
}

/// `s` at `size` if it fits in `max_w` pixels, else at the smaller `min_size`, else cut with
/// "..": the text and the size to draw it at.
pub(crate) fn fit_text(s: &str, size: f64, min_size: f64, max_w: i32) -> (String, f64) {
    if text_width(s, size) <= max_w {
        return (s.to_string(), size);
    }
    if text_width(s, min_size) <= max_w {
        return (s.to_string(), min_size);
    }
    let mut out: String = s.to_string();
    while !out.is_empty() && text_width(&format!("{out}.."), min_size) > max_w {
        out.pop();
    }
    (format!("{out}.."), min_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_font_registers_and_measures_text() {
        ensure_registered().unwrap();
        // Digits share one advance (tabular figures); "." is narrower.
        let w1 = text_width("0", 20.0);
        assert!((8..=16).contains(&w1), "{w1}");
        assert!((text_width("0123456789", 20.0) - 10 * w1).abs() <= 10);
        assert!(text_width("....", 20.0) < text_width("0000", 20.0));
        let (s, size) = fit_text("a long title that does not fit", 20.0, 14.0, 120);
        assert_eq!(size, 14.0);
        assert!(s.ends_with("..") && text_width(&s, 14.0) <= 120, "{s}");
        assert_eq!(fit_text("short", 20.0, 14.0, 120), ("short".to_string(), 20.0));
    }
}
