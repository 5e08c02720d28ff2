//! PNG output: files read back by the `png` crate's decoder (with its CRC and Adler-32 checks
//! on), then pixel facts about the charts and spectrograms plotters draws (title text above
//! the frame, a constant series on its row, a 1 kHz tone on its FFT bin), and the
//! `stapes features` command.

use std::path::PathBuf;

use stapes::speech::audio::write_wav;
use stapes::speech::features::{MelSpectrogram, MelSpectrogramConfig, Spectrogram, SpectrogramConfig};
use stapes::speech::plot::{
    encode_png, plot_curves, plot_figure, render_chart, render_figure, render_spectrogram, spectrogram_png, write_png,
    Chart, Colormap, Rect, Rgb, RgbImage, Series, SpectrogramPlot, PALETTE,
};

// ---------- decoding ----------

/// A decoded RGB8 PNG.
struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Decoded {
    fn pixel(&self, x: u32, y: u32) -> Rgb {
        let i = ((y * self.width + x) * 3) as usize;
        Rgb(self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
    }
}

/// Decodes an 8-bit RGB PNG with the `png` crate, every chunk CRC and the zlib Adler-32
/// checked.
fn decode_png(png: &[u8]) -> Result<Decoded, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.ignore_checksums(false);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut rgb = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut rgb).map_err(|e| e.to_string())?;
    if (info.color_type, info.bit_depth) != (png::ColorType::Rgb, png::BitDepth::Eight) {
        return Err(format!("not 8-bit RGB: {:?} {:?}", info.color_type, info.bit_depth));
    }
    rgb.truncate(info.buffer_size());
    Ok(Decoded { width: info.width, height: info.height, rgb })
}

/// Encodes `img`, decodes the PNG and checks it gives back the same pixels.
fn decode_image(img: &RgbImage) -> Decoded {
    let d = decode_png(&img.encode_png().unwrap()).unwrap();
    assert_eq!((d.width, d.height), (img.width(), img.height()));
    assert!(d.rgb == img.pixels(), "decoded pixels differ from the image");
    d
}

/// A fresh folder for a test's files: under `$STAPES_KEEP_PLOTS` when set (kept, to look at
/// the images), else under the temporary folder (removed by [`done`]).
fn out_dir(name: &str) -> PathBuf {
    let dir = match std::env::var_os("STAPES_KEEP_PLOTS") {
        Some(base) => PathBuf::from(base).join(name),
        None => std::env::temp_dir().join(format!("stapes-plot-{}-{name}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn done(dir: &std::path::Path) {
    if std::env::var_os("STAPES_KEEP_PLOTS").is_none() {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn xorshift(seed: &mut u32) -> u32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    *seed
}

// ---------- the encoder ----------

#[test]
fn png_round_trips_through_the_png_decoder() {
    let mut seed = 7;
    // Noise, smooth gradients, a rendered chart (flat colour, text, lines), sizes 1x1 up to odd
    // ones.
    let mut images: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    images.push((1, 1, vec![10, 20, 30]));
    images.push((37, 23, (0..37 * 23 * 3).map(|_| xorshift(&mut seed) as u8).collect()));
    images.push((300, 200, (0..300 * 200 * 3).map(|i| ((i % 900) / 3 + i / 2700) as u8).collect()));
    let chart = render_chart(
        &Chart::new("Hello, PNG 0123456789 %.-e")
            .with_series(Series::new("line", vec![(0.0, 1.0), (1.0, 3.0)]))
            .size(321, 211),
    )
    .unwrap();
    images.push((321, 211, chart.pixels().to_vec()));
    images.push((500, 90, (0..500 * 90 * 3).map(|i| (((i * 7) % 251) ^ ((i / 1500) % 3)) as u8).collect()));
    for (w, h, rgb) in images {
        let png = encode_png(w, h, &rgb).unwrap();
        let d = decode_png(&png).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
        assert_eq!((d.width, d.height), (w, h));
        assert!(d.rgb == rgb, "{w}x{h}: pixels differ");
    }
    // A corrupted byte is caught by the checksums.
    let mut png = encode_png(37, 23, &(0..37 * 23 * 3).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
    let n = png.len();
    png[n / 2] ^= 0x10;
    assert!(decode_png(&png).is_err());
}

#[test]
fn flat_images_compress_and_noise_round_trips() {
    let flat = RgbImage::new(800, 500, Rgb(240, 240, 240)).unwrap();
    let png = flat.encode_png().unwrap();
    assert!(png.len() < 800 * 500 * 3 / 100, "{} bytes for a flat 800x500 image", png.len());
    decode_image(&flat);
    let mut seed = 3;
    let (w, h) = (700, 600);
    let rgb: Vec<u8> = (0..w * h * 3).map(|_| xorshift(&mut seed) as u8).collect();
    let d = decode_png(&encode_png(w, h, &rgb).unwrap()).unwrap();
    assert!(d.rgb == rgb);
}

#[test]
fn write_png_is_atomic_and_reports_bad_paths() {
    let dir = out_dir("write");
    let path = dir.join("a.png");
    write_png(&path, 2, 1, &[1, 2, 3, 4, 5, 6]).unwrap();
    write_png(&path, 1, 1, &[9, 9, 9]).unwrap();
    let d = decode_png(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(d.rgb, vec![9, 9, 9]);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    let err = write_png(dir.join("missing/b.png"), 1, 1, &[0, 0, 0]).unwrap_err().to_string();
    assert!(err.contains("missing/b.png"), "{err}");
    assert!(write_png(dir.join("c.png"), 0, 1, &[]).is_err());
    assert!(write_png(dir.join("d.png"), 2, 2, &[0; 11]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------- charts ----------

/// The colour of the chart frame.
const AXIS: Rgb = Rgb(70, 70, 70);

/// The plot frame: the outermost columns and rows holding a straight run of at least 100
/// pixels of the frame colour (anti-aliased text can hit the colour in single pixels, not in
/// long runs).
fn find_frame(d: &Decoded, axis: Rgb) -> Rect {
    let longest = |pixels: &mut dyn Iterator<Item = Rgb>| {
        let (mut best, mut run) = (0, 0);
        for p in pixels {
            run = if p == axis { run + 1 } else { 0 };
            best = best.max(run);
        }
        best
    };
    let cols: Vec<u32> = (0..d.width).filter(|&x| longest(&mut (0..d.height).map(|y| d.pixel(x, y))) >= 100).collect();
    let rows: Vec<u32> = (0..d.height).filter(|&y| longest(&mut (0..d.width).map(|x| d.pixel(x, y))) >= 100).collect();
    assert!(!cols.is_empty() && !rows.is_empty(), "no frame found");
    let (left, right) = (cols[0], *cols.last().unwrap());
    let (top, bottom) = (rows[0], *rows.last().unwrap());
    Rect::new(left as i32, top as i32, (right - left + 1) as i32, (bottom - top + 1) as i32)
}

fn luma(c: Rgb) -> f32 {
    0.299 * f32::from(c.0) + 0.587 * f32::from(c.1) + 0.114 * f32::from(c.2)
}

/// Text is near-black on white: dark pixels that are not the frame colour.
fn is_text(c: Rgb) -> bool {
    luma(c) < 110.0 && c != AXIS
}

#[test]
fn a_constant_series_is_a_horizontal_line_on_its_row() {
    let points: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, 0.25)).collect();
    let mut chart = Chart::new("Constant").labels("step", "value").with_series(Series::new("", points));
    chart.y_range = Some((0.0, 1.0));
    let d = decode_image(&render_chart(&chart).unwrap());
    let frame = find_frame(&d, AXIS);
    // Inside the frame, 0 is the last pixel row and 1 the first: 0.25 is a quarter of the way
    // up, at the centre of a pixel row.
    let (first, last) = (f64::from(frame.y + 1), f64::from(frame.bottom() - 2));
    let expected = last + 0.5 - 0.25 * (last - first);
    let colour = PALETTE[0];
    let rows: Vec<u32> = (0..d.height)
        .filter(|&y| (frame.x as u32 + 5..frame.right() as u32 - 5).all(|x| d.pixel(x, y) == colour))
        .collect();
    assert!(!rows.is_empty(), "no full-width row of the series colour");
    for &r in &rows {
        assert!((f64::from(r) + 0.5 - expected).abs() <= 1.5, "row {r}, expected about {expected}");
    }
    // Nothing of the series colour elsewhere (no legend for an unlabelled series, no markers
    // on 200 points).
    let stray = (0..d.height)
        .flat_map(|y| (0..d.width).map(move |x| (x, y)))
        .filter(|&(x, y)| d.pixel(x, y) == colour && (f64::from(y) + 0.5 - expected).abs() > 2.5)
        .count();
    assert_eq!(stray, 0);
}

#[test]
fn the_title_is_drawn_above_the_frame() {
    let chart = Chart::new("TITLE WITH TEXT 0.5%")
        .labels("epoch", "loss")
        .with_series(Series::new("train loss", vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)]));
    let d = decode_image(&render_chart(&chart).unwrap());
    let frame = find_frame(&d, AXIS);
    // Rows above the frame, less the top half of the top y tick label.
    let title: Vec<u32> = (0..frame.y as u32 - 10)
        .flat_map(|y| (0..d.width).map(move |x| (x, y)))
        .filter(|&(x, y)| is_text(d.pixel(x, y)))
        .map(|(x, _)| x)
        .collect();
    // 20 characters of a monospaced font at 20 px: about 10 px each, centred on the image.
    assert!(title.len() > 300, "{} title pixels", title.len());
    let (lo, hi) = (*title.iter().min().unwrap(), *title.iter().max().unwrap());
    assert!((170..=260).contains(&(hi - lo)), "title spans {} px", hi - lo);
    assert!(((lo + hi) as i32 - d.width as i32).abs() <= 20, "title from {lo} to {hi} is not centred");
    // Tick labels left of the frame and below it; nothing dark inside but the curve.
    let left_text =
        (frame.y as u32..frame.bottom() as u32).any(|y| (0..frame.x as u32).any(|x| is_text(d.pixel(x, y))));
    let below_text = (frame.bottom() as u32..d.height)
        .any(|y| (frame.x as u32..frame.right() as u32).any(|x| is_text(d.pixel(x, y))));
    assert!(left_text && below_text);
}

#[test]
fn the_legend_names_every_labelled_series_in_its_colour() {
    // Two falling curves: the upper right corner is free.
    let chart = Chart::new("legend")
        .with_series(Series::new("first", (0..50).map(|i| (i as f64, 10.0 - i as f64 / 10.0)).collect()))
        .with_series(Series::new("second", (0..50).map(|i| (i as f64, 8.0 - i as f64 / 10.0)).collect()));
    let d = decode_image(&render_chart(&chart).unwrap());
    let frame = find_frame(&d, AXIS);
    let upper_right = |c: Rgb| {
        (frame.y as u32..(frame.y + frame.h / 3) as u32)
            .flat_map(|y| ((frame.x + frame.w / 2) as u32..frame.right() as u32).map(move |x| (x, y)))
            .filter(|&(x, y)| d.pixel(x, y) == c)
            .count()
    };
    // A sample line of each colour and the labels' text, where no curve passes.
    assert!(upper_right(PALETTE[0]) >= 20 && upper_right(PALETTE[1]) >= 20);
    let text = (frame.y as u32..(frame.y + frame.h / 3) as u32)
        .flat_map(|y| ((frame.x + frame.w / 2) as u32..frame.right() as u32).map(move |x| (x, y)))
        .filter(|&(x, y)| is_text(d.pixel(x, y)))
        .count();
    assert!(text > 50, "{text} legend text pixels");
}

#[test]
fn figures_place_charts_side_by_side_and_files_are_written() {
    let loss = Chart::new("loss")
        .labels("step", "CTC loss")
        .with_series(Series::new(
            "train loss",
            (0..500).map(|i| (i as f64, 3.0 * (-(i as f64) / 150.0).exp() + 0.1)).collect(),
        ))
        .size(600, 400);
    let mut cer = Chart::new("dev error")
        .labels("epoch", "")
        .with_series(Series::new("CER", vec![(1.0, 0.6), (2.0, 0.3), (3.0, 0.12), (4.0, 0.05)]))
        .with_series(Series::new("WER", vec![(1.0, 0.9), (2.0, 0.6), (3.0, f64::NAN), (4.0, 0.2)]))
        .size(600, 400);
    cer.percent_y = true;
    let fig = render_figure(&[loss.clone(), cer.clone()], 2).unwrap();
    assert_eq!((fig.width(), fig.height()), (1200, 400));
    let one_col = render_figure(&[loss.clone(), cer.clone(), loss.clone()], 1).unwrap();
    assert_eq!((one_col.width(), one_col.height()), (600, 1200));
    decode_image(&fig);
    // The left panel is the loss chart exactly.
    let alone = render_chart(&loss).unwrap();
    for y in 0..400 {
        assert_eq!(
            &fig.pixels()[y * 1200 * 3..y * 1200 * 3 + 600 * 3],
            &alone.pixels()[y * 600 * 3..(y + 1) * 600 * 3]
        );
    }
    let dir = out_dir("fig");
    plot_figure(dir.join("curves.png"), &[loss.clone(), cer], 2).unwrap();
    let mut log = loss;
    log.log_y = true;
    log.title = "loss (log y)".into();
    plot_curves(dir.join("log.png"), &log).unwrap();
    for f in ["curves.png", "log.png"] {
        decode_png(&std::fs::read(dir.join(f)).unwrap()).unwrap();
    }
    done(&dir);
}

#[test]
fn training_curves_render_as_the_trainer_draws_them() {
    use stapes::speech::train::{plot_training_curves, EpochLog};
    // 600 steps of a falling, noisy loss; a learning rate warming up then decaying; 6 epochs.
    let mut seed = 11;
    let history: Vec<(u64, f32, f32)> = (1..=600u64)
        .map(|s| {
            let noise = (xorshift(&mut seed) % 1000) as f32 / 1000.0 - 0.5;
            let loss = 3.5 * (-(s as f32) / 180.0).exp() + 0.15 + 0.1 * noise;
            let lr = if s < 60 { 1e-3 * s as f32 / 60.0 } else { 1e-3 * (60.0 / s as f32).sqrt() };
            (s, loss, lr)
        })
        .collect();
    let logs: Vec<EpochLog> = (1..=6)
        .map(|e| EpochLog {
            epoch: e,
            step: e as u64 * 100,
            train_loss: 3.5 * (-(e as f64) * 100.0 / 180.0).exp() + 0.15,
            dev_cer: 0.8 * (-(e as f64) / 2.0).exp(),
            dev_wer: (1.4 * (-(e as f64) / 2.5).exp()).min(1.0),
            lr: 1e-3,
            elapsed_s: e as f64 * 10.0,
            utterances_per_s: 50.0,
        })
        .collect();
    let dir = out_dir("train");
    let path = dir.join("curves.png");
    plot_training_curves(&path, &history, &logs).unwrap();
    let d = decode_png(&std::fs::read(&path).unwrap()).unwrap();
    // Three 800x500 charts side by side, each with its frame and its first series drawn.
    assert_eq!((d.width, d.height), (2400, 500));
    for panel in 0..3u32 {
        let blue = (0..d.height)
            .flat_map(|y| (panel * 800..(panel + 1) * 800).map(move |x| (x, y)))
            .filter(|&(x, y)| d.pixel(x, y) == PALETTE[0])
            .count();
        assert!(blue > 200, "panel {panel}: {blue} pixels of its first series");
    }
    done(&dir);
}

#[test]
fn awkward_charts_render_without_clipping_errors() {
    // Many series (the palette wraps), a title too long for the panel, large and negative
    // values, a wide log range, a lone point and an all-NaN series.
    let many = (0..12).fold(
        Chart::new("a very long title that cannot possibly fit in this small panel at scale two").size(400, 300),
        |c, k| {
            c.with_series(Series::new(
                format!("s{k}"),
                (0..50).map(|i| (i as f64, 1e6 * (k as f64 - i as f64 / 10.0))).collect(),
            ))
        },
    );
    let mut log = Chart::new("log y, 8 decades")
        .labels("step", "gradient norm")
        .with_series(Series::new("norm", (1..400).map(|i| (i as f64, 10f64.powf(2.0 - i as f64 / 50.0))).collect()))
        .with_series(Series::new("lone point", vec![(200.0, 1.0)]))
        .with_series(Series::new("all NaN", vec![(f64::NAN, f64::NAN); 3]));
    log.log_y = true;
    let mut neg = Chart::new("negative and tiny")
        .labels("x", "y")
        .with_series(Series::new("tiny", (0..100).map(|i| (i as f64 * 1e-4, -3e-5 + 1e-6 * i as f64)).collect()));
    neg.y_range = None;
    let empty = Chart::new("empty").labels("epoch", "CER");
    let fig = render_figure(&[many, log, neg, empty], 2).unwrap();
    decode_image(&fig);
    let dir = out_dir("edge");
    fig.write_png(dir.join("edge.png")).unwrap();
    done(&dir);
}

// ---------- spectrograms ----------

fn tone(freq: f32, seconds: f32, sr: u32) -> Vec<f32> {
    (0..(seconds * sr as f32) as usize)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / sr as f32).sin())
        .collect()
}

/// The data row shown brightest in the middle column of the heat map.
fn brightest_row(d: &Decoded, heat: Rect, rows: usize) -> usize {
    let x = (heat.x + heat.w / 2) as u32;
    let y = (heat.y..heat.bottom())
        .max_by(|&a, &b| luma(d.pixel(x, a as u32)).total_cmp(&luma(d.pixel(x, b as u32))))
        .unwrap();
    // Pixel row (from the top) back to a data row (from the bottom).
    rows - 1 - ((y - heat.y) as usize * rows / heat.h as usize)
}

#[test]
fn a_1khz_tone_is_brightest_on_its_frequency_bin() {
    let sr = 16000;
    let x = tone(1000.0, 1.0, sr);
    let cfg = SpectrogramConfig { n_fft: 400, hop_length: Some(160), ..SpectrogramConfig::default() };
    let m = Spectrogram::new(cfg.clone()).unwrap().forward_slice(&x).unwrap();
    assert_eq!(m.rows, 201);
    let mut opts = SpectrogramPlot::for_spectrogram(&cfg, sr);
    opts.title = "1 kHz tone".into();
    let (image, heat) = render_spectrogram(&m.data, m.rows, m.frames, &opts).unwrap();
    let d = decode_image(&image);
    // 1000 Hz / (16000 Hz / 400) = bin 25, low frequencies at the bottom.
    assert_eq!(brightest_row(&d, heat, m.rows), 25);
    // The maximum is the top colour of the map; the floor (80 dB down) the bottom one.
    let col = (heat.x + heat.w / 2) as u32;
    let colours: Vec<Rgb> = (heat.y..heat.bottom()).map(|y| d.pixel(col, y as u32)).collect();
    assert!(colours.iter().any(|&c| luma(c) > luma(Colormap::Viridis.color(0.95))));
    assert!(colours.contains(&Colormap::Viridis.color(0.0)));

    // Mel bands: the band whose centre is nearest 1 kHz.
    let mcfg = MelSpectrogramConfig { n_mels: 64, spectrogram: cfg, ..MelSpectrogramConfig::default() };
    let mel = MelSpectrogram::new(mcfg.clone()).unwrap().forward_slice(&x).unwrap();
    let (image, heat) = render_spectrogram(&mel.data, mel.rows, mel.frames, &SpectrogramPlot::for_mel(&mcfg)).unwrap();
    let d = decode_image(&image);
    let mid = mel.frames / 2;
    let expected = (0..mel.rows)
        .max_by(|&a, &b| mel.data[a * mel.frames + mid].total_cmp(&mel.data[b * mel.frames + mid]))
        .unwrap();
    let mel_1k = 2595.0 * (1.0f64 + 1000.0 / 700.0).log10();
    let mel_max = 2595.0 * (1.0f64 + 8000.0 / 700.0).log10();
    let band = (mel_1k / mel_max * 65.0 - 1.0).round() as usize;
    assert!(expected.abs_diff(band) <= 1, "strongest band {expected}, 1 kHz is band {band}");
    assert_eq!(brightest_row(&d, heat, mel.rows), expected);

    let dir = out_dir("spec");
    spectrogram_png(dir.join("tone.png"), &m.data, m.rows, m.frames, &opts).unwrap();
    decode_png(&std::fs::read(dir.join("tone.png")).unwrap()).unwrap();
    done(&dir);
}

#[test]
fn long_inputs_are_merged_into_the_maximum() {
    // 5000 frames into at most 1200 columns: a single loud frame must still show.
    let (rows, frames) = (10, 5000);
    let mut data = vec![1.0f32; rows * frames];
    data[3 * frames + 2501] = 1e6;
    let opts = SpectrogramPlot { values: stapes::speech::plot::ValueScale::PowerDb, ..SpectrogramPlot::default() };
    let (image, heat) = render_spectrogram(&data, rows, frames, &opts).unwrap();
    assert_eq!(heat.w, 1200);
    let d = decode_image(&image);
    let top = Colormap::Viridis.color(1.0);
    let hits: Vec<(i32, i32)> = (heat.y..heat.bottom())
        .flat_map(|y| (heat.x..heat.right()).map(move |x| (x, y)))
        .filter(|&(x, y)| d.pixel(x as u32, y as u32) == top)
        .collect();
    assert!(!hits.is_empty());
    for (x, y) in hits {
        assert_eq!(((x - heat.x) as usize * frames / heat.w as usize) / 4, 2501 / 4, "column {x}");
        assert_eq!(rows - 1 - (y - heat.y) as usize * rows / heat.h as usize, 3);
    }
}

// ---------- the command ----------

#[test]
fn the_features_command_writes_a_png_and_fails_cleanly() {
    let dir = out_dir("cli");
    let wav = dir.join("tone.wav");
    write_wav(&wav, &tone(440.0, 0.5, 22050), 22050).unwrap();
    let exe = env!("CARGO_BIN_EXE_stapes");
    for kind in ["mel", "spectrogram", "mfcc"] {
        let png = dir.join(format!("{kind}.png"));
        let out = std::process::Command::new(exe)
            .args(["features", wav.to_str().unwrap(), "--png", png.to_str().unwrap(), "--kind", kind, "--n-mels", "40"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(png.to_str().unwrap()), "{stdout}");
        let rows = match kind {
            "mel" => "40 x 51",
            "spectrogram" => "201 x 51",
            _ => "40 x 51",
        };
        assert!(stdout.contains(rows), "{kind}: {stdout}");
        decode_png(&std::fs::read(&png).unwrap()).unwrap();
    }
    let corrupt = dir.join("corrupt.wav");
    std::fs::write(&corrupt, b"RIFF\x10\x00\x00\x00WAVEjunkjunk").unwrap();
    for (input, png) in [
        (dir.join("missing.wav"), dir.join("x.png")),
        (corrupt.clone(), dir.join("x.png")),
        (wav.clone(), dir.join("no/such/dir/x.png")),
    ] {
        let out = std::process::Command::new(exe)
            .args(["features", input.to_str().unwrap(), "--png", png.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: succeeded", input.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("Error"), "{stderr}");
    }
    done(&dir);
}
