//! A small PNG encoder for 8-bit RGB images, with no dependencies.
//!
//! The file is the signature, an `IHDR` chunk (bit depth 8, colour type 2, no interlace), the
//! image data in `IDAT` chunks and `IEND`; every chunk carries its CRC-32 (table made at compile
//! time). Each scanline is filtered with whichever of None, Sub or Up gives the smallest sum of
//! absolute (signed) bytes, the usual heuristic. The filtered bytes are a zlib stream
//! (RFC 1950) holding one deflate block (RFC 1951) with the fixed Huffman codes: greedy LZ77
//! matching over a 32 KiB window with 3-byte hash chains, which turns the flat colour of plots
//! into long runs (a 800×500 chart compresses to a few percent of its raw size). When that
//! would be larger than the raw bytes (noise), stored blocks are written instead. Adler-32
//! closes the zlib stream.

use std::path::Path;

use stapes_tensor::{Error, Result};

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// The largest width or height PNG allows.
const PNG_MAX_SIDE: u32 = (1 << 31) - 1;
/// `IDAT` chunks are cut at this many bytes.
const IDAT_CHUNK: usize = 1 << 20;

const CRC_TABLE: [u32; 256] = crc_table();

/// The CRC-32 table for the reflected polynomial `0xEDB88320` (PNG, zlib, gzip).
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC-32 of `bytes` (ISO 3309, as PNG chunks use it): `crc32(b"IEND") == 0xAE426082`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
}

/// The Adler-32 checksum of `bytes` (the zlib trailer).
pub fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before `b` could overflow 32 bits.
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Writes bits least-significant first, as deflate packs them.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new(capacity: usize) -> Self {
        BitWriter { out: Vec::with_capacity(capacity), acc: 0, n: 0 }
    }

    /// Appends the low `count` (at most 32) bits of `bits`.
    #[inline]
    fn put(&mut self, bits: u32, count: u32) {
        self.acc |= u64::from(bits & ((1u64 << count) - 1) as u32) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// `code` of `len` bits, bit-reversed: Huffman codes are sent most-significant bit first
/// into a least-significant-first stream.
const fn reverse_bits(code: u32, len: u32) -> u32 {
    let mut r = 0;
    let mut i = 0;
    while i < len {
        r |= ((code >> i) & 1) << (len - 1 - i);
        i += 1;
    }
    r
}

/// The fixed literal/length code (RFC 1951 3.2.6) as `(reversed code, length)` per symbol.
const FIXED_LITLEN: [(u16, u8); 288] = fixed_litlen();

const fn fixed_litlen() -> [(u16, u8); 288] {
    let mut t = [(0u16, 0u8); 288];
    let mut s = 0;
    while s < 288 {
        let (code, len) = match s {
            0..=143 => (0x30 + s as u32, 8),
            144..=255 => (0x190 + (s as u32 - 144), 9),
            256..=279 => (s as u32 - 256, 7),
            _ => (0xC0 + (s as u32 - 280), 8),
        };
        t[s] = (reverse_bits(code, len) as u16, len as u8);
        s += 1;
    }
    t
}

const LEN_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

const WINDOW: usize = 32 * 1024;
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const HASH_BITS: u32 = 15;
/// Candidates examined per position: enough for plots, bounded for noise.
const MAX_CHAIN: usize = 48;
const NONE: u32 = u32::MAX;

#[inline]
fn hash3(d: &[u8], i: usize) -> usize {
    let v = u32::from(d[i]) | u32::from(d[i + 1]) << 8 | u32::from(d[i + 2]) << 16;
    (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// One deflate block with the fixed Huffman codes, greedy LZ77 matching.
fn deflate_fixed(data: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::new(data.len() / 8 + 64);
    w.put(1, 1); // BFINAL
    w.put(1, 2); // BTYPE = 01, fixed Huffman
    let mut head = vec![NONE; 1 << HASH_BITS];
    let mut prev = vec![NONE; WINDOW];
    let n = data.len();
    let insert = |head: &mut [u32], prev: &mut [u32], p: usize| {
        if p + MIN_MATCH <= n {
            let h = hash3(data, p);
            prev[p % WINDOW] = head[h];
            head[h] = p as u32;
        }
    };
    let mut i = 0;
    while i < n {
        let (mut best_len, mut best_dist) = (0, 0);
        if i + MIN_MATCH <= n {
            let max = MAX_MATCH.min(n - i);
            let mut cand = head[hash3(data, i)];
            let mut chain = 0;
            while cand != NONE && chain < MAX_CHAIN {
                let c = cand as usize;
                if c >= i || i - c > WINDOW {
                    break;
                }
                let len = data[c..c + max].iter().zip(&data[i..i + max]).take_while(|(a, b)| a == b).count();
                if len > best_len {
                    (best_len, best_dist) = (len, i - c);
                    if len == max {
                        break;
                    }
                }
                let next = prev[c % WINDOW];
                if next == NONE || next as usize >= c {
                    break;
                }
                cand = next;
                chain += 1;
            }
        }
        if best_len >= MIN_MATCH {
            let li = LEN_BASE.partition_point(|&b| usize::from(b) <= best_len) - 1;
            let (code, bits) = FIXED_LITLEN[257 + li];
            w.put(u32::from(code), u32::from(bits));
            w.put((best_len - usize::from(LEN_BASE[li])) as u32, u32::from(LEN_EXTRA[li]));
            let di = DIST_BASE.partition_point(|&b| usize::from(b) <= best_dist) - 1;
            w.put(reverse_bits(di as u32, 5), 5);
            w.put((best_dist - usize::from(DIST_BASE[di])) as u32, u32::from(DIST_EXTRA[di]));
            for p in i..i + best_len {
                insert(&mut head, &mut prev, p);
            }
            i += best_len;
        } else {
            let (code, bits) = FIXED_LITLEN[usize::from(data[i])];
            w.put(u32::from(code), u32::from(bits));
            insert(&mut head, &mut prev, i);
            i += 1;
        }
    }
    let (code, bits) = FIXED_LITLEN[256];
    w.put(u32::from(code), u32::from(bits));
    w.finish()
}

/// Stored (uncompressed) deflate blocks of at most 65535 bytes.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(0xFFFF).max(1);
    let mut out = Vec::with_capacity(data.len() + 5 * blocks);
    for b in 0..blocks {
        let chunk = &data[b * 0xFFFF..((b + 1) * 0xFFFF).min(data.len())];
        out.push(u8::from(b + 1 == blocks)); // BFINAL, BTYPE = 00, then byte alignment
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A zlib stream (RFC 1950) holding `data`: fixed-Huffman deflate, or stored blocks when those
/// are smaller.
pub fn zlib_compress(data: &[u8]) -> Vec<u8> {
    let mut body = deflate_fixed(data);
    let stored_len = data.len() + 5 * data.len().div_ceil(0xFFFF).max(1);
    if body.len() > stored_len {
        body = deflate_stored(data);
    }
    // CMF 0x78: deflate with a 32 KiB window; FLG 0x01 makes CMF * 256 + FLG a multiple of 31.
    let mut out = Vec::with_capacity(body.len() + 6);
    out.extend_from_slice(&[0x78, 0x01]);
    out.extend_from_slice(&body);
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// Filters the scanlines of a `width × height` RGB8 image, each prefixed by its filter type.
fn filter_scanlines(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let stride = width * 3;
    let mut out = Vec::with_capacity((stride + 1) * height);
    let mut sub = vec![0u8; stride];
    let mut up = vec![0u8; stride];
    let cost = |v: &[u8]| v.iter().map(|&b| u64::from((b as i8).unsigned_abs())).sum::<u64>();
    for y in 0..height {
        let row = &rgb[y * stride..(y + 1) * stride];
        for x in 0..stride {
            sub[x] = row[x].wrapping_sub(if x >= 3 { row[x - 3] } else { 0 });
            up[x] = row[x].wrapping_sub(if y > 0 { rgb[(y - 1) * stride + x] } else { 0 });
        }
        let options: [(u8, &[u8]); 3] = [(0, row), (1, &sub), (2, &up)];
        let (kind, bytes) = options.into_iter().min_by_key(|(_, v)| cost(v)).unwrap_or((0, row));
        out.push(kind);
        out.extend_from_slice(bytes);
    }
    out
}

fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes a `width × height` image of row-major RGB8 pixels (`rgb.len() == width * height *
/// 3`, the top row first) as a PNG file in memory. Errors on a zero or too large size and on
/// a pixel buffer of the wrong length.
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
    let compressed = zlib_compress(&filter_scanlines(width as usize, height as usize, rgb));
    let mut out = Vec::with_capacity(compressed.len() + 64);
    out.extend_from_slice(&PNG_SIGNATURE);
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    push_chunk(&mut out, b"IHDR", &ihdr);
    for part in compressed.chunks(IDAT_CHUNK) {
        push_chunk(&mut out, b"IDAT", part);
    }
    push_chunk(&mut out, b"IEND", &[]);
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
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(&[]), 1);
        // Past the 5552-byte reduction interval.
        let big = vec![0xFFu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(u64::from(adler32(&big)), (b << 16) | a);
    }

    #[test]
    fn zlib_header_is_valid_and_flat_data_compresses() {
        let z = zlib_compress(&vec![7u8; 50_000]);
        assert_eq!((u32::from(z[0]) * 256 + u32::from(z[1])) % 31, 0);
        assert!(z.len() < 600, "{} bytes for 50000 equal bytes", z.len());
        let z = zlib_compress(&[]);
        assert_eq!(&z[z.len() - 4..], &[0, 0, 0, 1]);
    }

    #[test]
    fn incompressible_data_falls_back_to_stored_blocks() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        let z = zlib_compress(&noise);
        assert_eq!(z.len(), 2 + noise.len() + 5 * 4 + 4);
        // First stored block: not final, LEN 65535.
        assert_eq!(&z[2..7], &[0, 0xFF, 0xFF, 0, 0]);
    }

    #[test]
    fn length_and_distance_tables_cover_their_ranges() {
        for len in MIN_MATCH..=MAX_MATCH {
            let i = LEN_BASE.partition_point(|&b| usize::from(b) <= len) - 1;
            let extra = len - usize::from(LEN_BASE[i]);
            assert!(extra < 1 << LEN_EXTRA[i], "length {len}");
        }
        for dist in 1..=WINDOW {
            let i = DIST_BASE.partition_point(|&b| usize::from(b) <= dist) - 1;
            assert!(dist - usize::from(DIST_BASE[i]) < 1 << DIST_EXTRA[i], "distance {dist}");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(encode_png(0, 5, &[]).is_err());
        assert!(encode_png(2, 2, &[0; 11]).is_err());
        assert!(encode_png(u32::MAX, 1, &[]).is_err());
        let png = encode_png(1, 1, &[1, 2, 3]).unwrap();
        assert_eq!(&png[..8], &PNG_SIGNATURE);
        assert_eq!(&png[png.len() - 12..], &[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
    }
}
