//! PNG images of training curves and spectrograms, drawn with plotters.
//!
//! - [`RgbImage`], [`encode_png`] and the atomic [`write_png`]: RGB8 pixels and their PNG
//!   files, encoded by the `png` crate.
//! - [`plot_curves`] / [`plot_figure`]: line charts of training curves ([`Chart`] of
//!   [`Series`]) with plotters' 1-2-5 ticks, optional log or percent y axis and a legend, alone
//!   or in a grid (loss beside CER/WER).
//! - [`spectrogram_png`]: a feature matrix as a heat map (viridis or magma), low frequencies at
//!   the bottom, optional decibels with a `top_db` clamp, time in seconds, a kHz (linear or
//!   mel) or row-index axis and a colour bar.
//!
//! plotters draws into an in-memory RGB buffer (its bitmap backend, without its image
//! encoder); text is DejaVu Sans Mono, embedded in the binary and rendered by `ab_glyph`, so no
//! system font is needed.
//!
//! Bad input (empty data, a zero-size image, a buffer of the wrong length, a bad range) is an
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

mod chart;
mod font;
mod heatmap;
mod image;

pub use chart::{plot_curves, plot_figure, render_chart, render_figure, Chart, Series, PALETTE};
pub use heatmap::{render_spectrogram, spectrogram_png, Colormap, FreqAxis, SpectrogramPlot, ValueScale};
pub use image::{encode_png, write_png, Rect, Rgb, RgbImage, MAX_IMAGE_SIDE};
