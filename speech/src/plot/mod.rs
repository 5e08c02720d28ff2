//! PNG images without a plotting dependency: training curves and spectrograms.
//!
//! - [`png`]: a small PNG encoder (RGB8, CRC-32, zlib with fixed-Huffman deflate and LZ77
//!   matching, Adler-32), [`encode_png`] and the atomic [`write_png`].
//! - [`Canvas`]: a raster to draw on: rectangles, anti-aliased lines of any width, discs and
//!   text in a built-in 5×8 bitmap font (printable ASCII), usually at scale 2.
//! - [`plot_curves`] / [`plot_figure`]: line charts of training curves ([`Chart`] of
//!   [`Series`]) with nice 1-2-5 ticks, optional log or percent y axis and a legend, alone or
//!   in a grid (loss beside CER/WER).
//! - [`spectrogram_png`]: a feature matrix as a heat map (viridis or magma), low frequencies at
//!   the bottom, optional decibels with a `top_db` clamp, time in seconds, a kHz (linear or
//!   mel) or row-index axis and a colour bar.
//!
//! Bad input (empty data, a zero-size canvas, a buffer of the wrong length, a bad range) is an
//! [`stapes_tensor::Error`]; values that are not finite are skipped or drawn as missing, never
//! a panic.
//!
//! ```no_run
//! use stapes_speech::plot::{plot_figure, Chart, Series};
//! let loss = Chart::new("training loss")
//!     .labels("step", "CTC loss")
//!     .with_series(Series::new("train", vec![(0.0, 3.2), (100.0, 1.4), (200.0, 0.8)]));
//! let mut cer = Chart::new("dev error rate")
//!     .labels("epoch", "")
//!     .with_series(Series::new("CER", vec![(1.0, 0.41), (2.0, 0.22), (3.0, 0.12)]));
//! cer.percent_y = true;
//! plot_figure("curves.png", &[loss, cer], 2)?;
//! # Ok::<(), stapes_tensor::Error>(())
//! ```

mod canvas;
mod chart;
mod font;
mod heatmap;
pub mod png;
mod ticks;

pub use canvas::{text_height, text_width, Canvas, Rect, Rgb, MAX_CANVAS_SIDE};
pub use chart::{plot_curves, plot_figure, render_chart, render_figure, Chart, Series, PALETTE};
pub use font::{glyph, GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
pub use heatmap::{render_spectrogram, spectrogram_png, Colormap, FreqAxis, SpectrogramPlot, ValueScale};
pub use png::{encode_png, write_png};
pub use ticks::{format_log_tick, format_tick, log_ticks, nice_range, nice_step, nice_ticks};
