//! PNG output: the encoder checked by a separate decoder (a minimal inflate written from RFC
//! 1951 in this file, and PNG's five scanline filters), then pixel facts about the charts and
//! spectrograms (title text present, a constant series on its row, a 1 kHz tone on its FFT
//! bin), and the `stapes features` command.

use std::path::PathBuf;

use stapes::speech::audio::write_wav;
use stapes::speech::features::{MelSpectrogram, MelSpectrogramConfig, Spectrogram, SpectrogramConfig};
use stapes::speech::plot::{
    encode_png, plot_curves, plot_figure, render_chart, render_figure, render_spectrogram, spectrogram_png, write_png,
    Canvas, Chart, Colormap, Rect, Rgb, Series, SpectrogramPlot, PALETTE,
};

// ---------- an independent PNG decoder ----------

/// Reads bits least-significant first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    bit: u32,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = *self.data.get(self.pos).ok_or("inflate: out of input")?;
        let b = (u32::from(byte) >> self.bit) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.pos += 1;
        }
        Ok(b)
    }
    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut v = 0;
        for i in 0..n {
            v |= self.bit()? << i;
        }
        Ok(v)
    }
    fn align(&mut self) {
        if self.bit != 0 {
            self.bit = 0;
            self.pos += 1;
        }
    }
}

/// A canonical Huffman code from code lengths: (counts per length, symbols by code).
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Huffman {
        let mut counts = [0u16; 16];
        for &l in lengths {
            counts[l as usize] += 1;
        }
        counts[0] = 0;
        let mut offs = [0u16; 16];
        for i in 1..16 {
            offs[i] = offs[i - 1] + counts[i - 1];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[offs[l as usize] as usize] = s as u16;
                offs[l as usize] += 1;
            }
        }
        Huffman { counts, symbols }
    }

    /// Decodes one symbol, reading the code most-significant bit first (RFC 1951 3.1.1).
    fn decode(&self, b: &mut Bits) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= b.bit()? as i32;
            let count = i32::from(self.counts[len]);
            if code - count < first {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err("inflate: bad code".into())
    }
}

const LBASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEXT: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DBASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DEXT: [u32; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/// Inflates a raw deflate stream (stored, fixed and dynamic blocks); returns the bytes and the
/// input bytes consumed.
fn inflate(data: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut b = Bits { data, pos: 0, bit: 0 };
    let mut out = Vec::new();
    loop {
        let last = b.bit()?;
        match b.bits(2)? {
            0 => {
                b.align();
                let h = data.get(b.pos..b.pos + 4).ok_or("inflate: short stored header")?;
                let len = u16::from_le_bytes([h[0], h[1]]);
                if len != !u16::from_le_bytes([h[2], h[3]]) {
                    return Err("inflate: LEN/NLEN mismatch".into());
                }
                b.pos += 4;
                out.extend_from_slice(data.get(b.pos..b.pos + len as usize).ok_or("inflate: short stored block")?);
                b.pos += len as usize;
            }
            kind @ (1 | 2) => {
                let (lit, dist) = if kind == 1 {
                    let mut l = [8u8; 288];
                    l[144..256].fill(9);
                    l[256..280].fill(7);
                    (Huffman::new(&l), Huffman::new(&[5u8; 30]))
                } else {
                    let hlit = b.bits(5)? as usize + 257;
                    let hdist = b.bits(5)? as usize + 1;
                    let hclen = b.bits(4)? as usize + 4;
                    const ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
                    let mut cl = [0u8; 19];
                    for &o in &ORDER[..hclen] {
                        cl[o] = b.bits(3)? as u8;
                    }
                    let clh = Huffman::new(&cl);
                    let mut lengths = Vec::new();
                    while lengths.len() < hlit + hdist {
                        match clh.decode(&mut b)? {
                            s @ 0..=15 => lengths.push(s as u8),
                            16 => {
                                let prev = *lengths.last().ok_or("inflate: repeat with no previous length")?;
                                for _ in 0..3 + b.bits(2)? {
                                    lengths.push(prev);
                                }
                            }
                            17 => lengths.extend(std::iter::repeat_n(0, 3 + b.bits(3)? as usize)),
                            _ => lengths.extend(std::iter::repeat_n(0, 11 + b.bits(7)? as usize)),
                        }
                    }
                    (Huffman::new(&lengths[..hlit]), Huffman::new(&lengths[hlit..hlit + hdist]))
                };
                loop {
                    let sym = lit.decode(&mut b)? as usize;
                    if sym < 256 {
                        out.push(sym as u8);
                    } else if sym == 256 {
                        break;
                    } else {
                        let i = sym - 257;
                        let len =
                            *LBASE.get(i).ok_or("inflate: bad length symbol")? as usize + b.bits(LEXT[i])? as usize;
                        let d = dist.decode(&mut b)? as usize;
                        let distance = *DBASE.get(d).ok_or("inflate: bad distance symbol")? as usize
                            + b.bits(*DEXT.get(d).unwrap_or(&0))? as usize;
                        if distance > out.len() {
                            return Err(format!("inflate: distance {distance} beyond {} bytes of output", out.len()));
                        }
                        for _ in 0..len {
                            out.push(out[out.len() - distance]);
                        }
                    }
                }
            }
            _ => return Err("inflate: reserved block type".into()),
        }
        if last == 1 {
            b.align();
            return Ok((out, b.pos));
        }
    }
}

fn crc32_reference(bytes: &[u8]) -> u32 {
    // Bitwise, without a table: a different computation from the encoder's.
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A decoded RGB8 PNG.
struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    idat_chunks: usize,
}

impl Decoded {
    fn pixel(&self, x: u32, y: u32) -> Rgb {
        let i = ((y * self.width + x) * 3) as usize;
        Rgb(self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
    }
}

/// Decodes an 8-bit RGB, non-interlaced PNG, checking the signature, every chunk's CRC, the
/// zlib header and the Adler-32 trailer; undoes filters 0 to 4.
fn decode_png(png: &[u8]) -> Result<Decoded, String> {
    if png.get(..8) != Some(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A][..]) {
        return Err("bad signature".into());
    }
    let (mut pos, mut ihdr, mut idat, mut idat_chunks, mut ended) = (8, None, Vec::new(), 0, false);
    while pos < png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &png[pos + 4..pos + 8];
        let body = png.get(pos + 8..pos + 8 + len).ok_or("chunk past the end")?;
        let crc = u32::from_be_bytes(png[pos + 8 + len..pos + 12 + len].try_into().unwrap());
        if crc != crc32_reference(&png[pos + 4..pos + 8 + len]) {
            return Err(format!("bad CRC in {}", String::from_utf8_lossy(kind)));
        }
        match kind {
            b"IHDR" => ihdr = Some(body.to_vec()),
            b"IDAT" => {
                idat.extend_from_slice(body);
                idat_chunks += 1;
            }
            b"IEND" => ended = true,
            _ => {}
        }
        pos += 12 + len;
    }
    if !ended || pos != png.len() {
        return Err("no IEND at the end".into());
    }
    let ihdr = ihdr.ok_or("no IHDR")?;
    let width = u32::from_be_bytes(ihdr[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
    if ihdr[8..] != [8, 2, 0, 0, 0] {
        return Err(format!("not 8-bit RGB: {:?}", &ihdr[8..]));
    }
    if (u32::from(idat[0]) * 256 + u32::from(idat[1])) % 31 != 0 || idat[0] & 0x0F != 8 {
        return Err("bad zlib header".into());
    }
    let (raw, used) = inflate(&idat[2..])?;
    let adler = u32::from_be_bytes(idat[2 + used..2 + used + 4].try_into().map_err(|_| "no Adler-32")?);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    if adler != (b << 16) | a {
        return Err("bad Adler-32".into());
    }
    let stride = width as usize * 3;
    if raw.len() != (stride + 1) * height as usize {
        return Err(format!("{} bytes of scanlines for {width}x{height}", raw.len()));
    }
    let mut rgb = vec![0u8; stride * height as usize];
    for y in 0..height as usize {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let left = if x >= 3 { rgb[y * stride + x - 3] } else { 0 };
            let up = if y > 0 { rgb[(y - 1) * stride + x] } else { 0 };
            let ul = if x >= 3 && y > 0 { rgb[(y - 1) * stride + x - 3] } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => left,
                2 => up,
                3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
                4 => {
                    let p = i16::from(left) + i16::from(up) - i16::from(ul);
                    let (pa, pb, pc) =
                        ((p - i16::from(left)).abs(), (p - i16::from(up)).abs(), (p - i16::from(ul)).abs());
                    if pa <= pb && pa <= pc {
                        left
                    } else if pb <= pc {
                        up
                    } else {
                        ul
                    }
                }
                f => return Err(format!("bad filter type {f}")),
            };
            rgb[y * stride + x] = line[x].wrapping_add(pred);
        }
    }
    Ok(Decoded { width, height, rgb, idat_chunks })
}

fn decode_canvas(c: &Canvas) -> Decoded {
    let d = decode_png(&c.encode_png().unwrap()).unwrap();
    assert_eq!((d.width, d.height), (c.width(), c.height()));
    assert!(d.rgb == c.pixels(), "decoded pixels differ from the canvas");
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
fn png_round_trips_through_an_independent_decoder() {
    let mut seed = 7;
    // Noise (stored blocks), smooth gradients, flat colour with text, sizes 1x1 up to odd ones.
    let mut images: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    images.push((1, 1, vec![10, 20, 30]));
    images.push((37, 23, (0..37 * 23 * 3).map(|_| xorshift(&mut seed) as u8).collect()));
    images.push((300, 200, (0..300 * 200 * 3).map(|i| ((i % 900) / 3 + i / 2700) as u8).collect()));
    let mut c = Canvas::new(321, 111, Rgb::WHITE).unwrap();
    c.text(5, 5, "Hello, PNG 0123456789 %.-e", 2, Rgb::BLACK);
    c.line(0.0, 100.0, 320.0, 30.0, 3.0, Rgb(200, 40, 40));
    images.push((321, 111, c.pixels().to_vec()));
    // Repetitive but not flat: matches at many distances and lengths.
    images.push((500, 90, (0..500 * 90 * 3).map(|i| (((i * 7) % 251) ^ ((i / 1500) % 3)) as u8).collect()));
    for (w, h, rgb) in images {
        let png = encode_png(w, h, &rgb).unwrap();
        let d = decode_png(&png).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
        assert_eq!((d.width, d.height), (w, h));
        assert!(d.rgb == rgb, "{w}x{h}: pixels differ");
    }
}

#[test]
fn flat_images_compress_and_large_ones_split_their_data() {
    let c = Canvas::new(800, 500, Rgb(240, 240, 240)).unwrap();
    let png = c.encode_png().unwrap();
    assert!(png.len() < 800 * 500 * 3 / 100, "{} bytes for a flat 800x500 image", png.len());
    decode_canvas(&c);
    // Noise bigger than one IDAT chunk (1 MiB).
    let mut seed = 3;
    let (w, h) = (700, 600);
    let rgb: Vec<u8> = (0..w * h * 3).map(|_| xorshift(&mut seed) as u8).collect();
    let d = decode_png(&encode_png(w, h, &rgb).unwrap()).unwrap();
    assert!(d.idat_chunks >= 2);
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
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------- charts ----------

/// The plot frame: the longest run of the axis colour in the middle row gives the left and
/// right edges, the column just inside the left edge the top and bottom.
fn find_frame(d: &Decoded, axis: Rgb) -> Rect {
    let y = d.height / 2;
    let xs: Vec<u32> = (0..d.width).filter(|&x| d.pixel(x, y) == axis).collect();
    let (left, right) = (xs[0], *xs.last().unwrap());
    let col = left + 3;
    let ys: Vec<u32> = (0..d.height).filter(|&y| d.pixel(col, y) == axis).collect();
    let (top, bottom) = (ys[0], *ys.last().unwrap());
    Rect::new(left as i32, top as i32, (right - left + 1) as i32, (bottom - top + 1) as i32)
}

const AXIS: Rgb = Rgb(70, 70, 70);
const TEXT: Rgb = Rgb(25, 25, 25);

#[test]
fn a_constant_series_is_a_horizontal_line_on_its_row() {
    let points: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, 0.25)).collect();
    let mut chart = Chart::new("Constant").labels("step", "value").with_series(Series::new("", points));
    chart.y_range = Some((0.0, 1.0));
    let d = decode_canvas(&render_chart(&chart).unwrap());
    let frame = find_frame(&d, AXIS);
    // Value v sits at pixel centre bottom - 0.5 - v * (h - 1), inside the frame.
    let expected = f64::from(frame.bottom()) - 0.5 - 0.25 * f64::from(frame.h - 1);
    let colour = PALETTE[0];
    let rows: Vec<u32> = (0..d.height)
        .filter(|&y| (frame.x as u32 + 5..frame.right() as u32 - 5).all(|x| d.pixel(x, y) == colour))
        .collect();
    assert!(!rows.is_empty(), "no full-width row of the series colour");
    for &r in &rows {
        assert!((f64::from(r) + 0.5 - expected).abs() <= 1.0, "row {r}, expected about {expected}");
    }
    // Nothing of the series colour elsewhere.
    let stray = (0..d.height)
        .flat_map(|y| (0..d.width).map(move |x| (x, y)))
        .filter(|&(x, y)| d.pixel(x, y) == colour && (f64::from(y) + 0.5 - expected).abs() > 2.0)
        .count();
    assert_eq!(stray, 0);
}

#[test]
fn the_title_is_drawn_above_the_frame() {
    let chart = Chart::new("TITLE WITH TEXT 0.5%")
        .labels("epoch", "loss")
        .with_series(Series::new("train loss", vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)]));
    let d = decode_canvas(&render_chart(&chart).unwrap());
    let frame = find_frame(&d, AXIS);
    // Rows above the frame, less the top half of the top y tick label.
    let title_px =
        (0..frame.y as u32 - 8).flat_map(|y| (0..d.width).map(move |x| (x, y))).filter(|&(x, y)| d.pixel(x, y) == TEXT);
    let (n, xs): (usize, Vec<u32>) = title_px.fold((0, vec![]), |(n, mut xs), (x, _)| {
        xs.push(x);
        (n + 1, xs)
    });
    // 20 characters at scale 2: hundreds of text pixels, spread over about 20 * 12 columns.
    assert!(n > 400, "{n} title pixels");
    let span = xs.iter().max().unwrap() - xs.iter().min().unwrap();
    assert!((200..=260).contains(&span), "title spans {span} px");
    // Tick labels left of the frame and below it.
    let left_text = (frame.y as u32..frame.bottom() as u32).any(|y| (0..frame.x as u32).any(|x| d.pixel(x, y) == TEXT));
    let below_text = (frame.bottom() as u32..d.height)
        .any(|y| (frame.x as u32..frame.right() as u32).any(|x| d.pixel(x, y) == TEXT));
    assert!(left_text && below_text);
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
    decode_canvas(&fig);
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
    decode_canvas(&fig);
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

fn luma(c: Rgb) -> f32 {
    0.299 * f32::from(c.0) + 0.587 * f32::from(c.1) + 0.114 * f32::from(c.2)
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
    let (canvas, heat) = render_spectrogram(&m.data, m.rows, m.frames, &opts).unwrap();
    let d = decode_canvas(&canvas);
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
    let (canvas, heat) = render_spectrogram(&mel.data, mel.rows, mel.frames, &SpectrogramPlot::for_mel(&mcfg)).unwrap();
    let d = decode_canvas(&canvas);
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
    let (canvas, heat) = render_spectrogram(&data, rows, frames, &opts).unwrap();
    assert_eq!(heat.w, 1200);
    let d = decode_canvas(&canvas);
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
