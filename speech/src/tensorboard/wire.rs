//! The two byte-level formats under a TensorBoard event file, written by hand (no protobuf
//! dependency):
//!
//! * **TFRecord framing**: each record is `u64 LE length`, `u32 LE masked CRC32C of those 8
//!   length bytes`, the data, `u32 LE masked CRC32C of the data`. CRC32C is the Castagnoli
//!   polynomial (reflected `0x82F63B78`), computed with a 256-entry table; the mask is
//!   `rotate_right(crc, 15) + 0xa282ead8` (wrapping), as TensorFlow's `crc32c::Mask`.
//! * **Protocol buffers wire format**: a field is a varint key `(field_number << 3) | wire_type`
//!   followed by its value: wire type 0 a varint, 1 eight little-endian bytes (double, fixed64),
//!   2 a varint length then that many bytes (strings, sub-messages, packed repeated fields),
//!   5 four little-endian bytes (float, fixed32). Types 3 and 4 (groups) are obsolete and
//!   rejected by the decoder.
//!
//! Decoding errors are plain strings here; the reader in the parent module wraps them into
//! `stapes_tensor::Error::Io` with the file path and the record's offset.

/// The CRC32C lookup table for one byte at a time (reflected polynomial `0x82F63B78`).
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32C (Castagnoli) of `data`: initial value and final xor `0xFFFFFFFF`, reflected.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's masked CRC: a CRC stored next to the data it covers is rotated and offset, so
/// that the CRC of a buffer holding CRCs does not degenerate.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    // ((crc >> 15) | (crc << 17)) + 0xa282ead8
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord (length, masked length CRC, data, masked data CRC) to `out`.
pub fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Splits a whole file into its records' data, checking both CRCs of every record. The error
/// says which record (by index and byte offset) is truncated or corrupt.
pub fn split_records(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let index = records.len();
        let rest = &bytes[pos..];
        if rest.len() < 12 {
            return Err(format!(
                "record {index} at byte {pos}: truncated header ({} bytes left, a header is 12)",
                rest.len()
            ));
        }
        let len_bytes = &rest[..8];
        let stored = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        if masked_crc32c(len_bytes) != stored {
            return Err(format!("record {index} at byte {pos}: length CRC mismatch (corrupt header)"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let available = (rest.len() - 12) as u64;
        if len > available || available - len < 4 {
            return Err(format!(
                "record {index} at byte {pos}: truncated ({len} data bytes + 4 CRC bytes declared, \
                 {available} bytes left)"
            ));
        }
        let data = &rest[12..12 + len as usize];
        let stored = u32::from_le_bytes(rest[12 + len as usize..16 + len as usize].try_into().expect("4 bytes"));
        if masked_crc32c(data) != stored {
            return Err(format!("record {index} at byte {pos}: data CRC mismatch ({len} bytes of corrupt data)"));
        }
        records.push(data);
        pos += 16 + len as usize;
    }
    Ok(records)
}

/// Appends `v` as a base-128 varint (little-endian groups of 7 bits, high bit = more follow).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`, advancing it. At most 10 bytes; the 10th may only carry one bit.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(format!("truncated varint at byte {}", *pos));
        };
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(format!("varint longer than 64 bits ending at byte {}", *pos - 1));
        }
        v |= ((b & 0x7F) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(format!("varint longer than 10 bytes ending at byte {}", *pos - 1))
}

/// A protobuf message being encoded: fields are appended in the order they are written.
#[derive(Default)]
pub struct ProtoWriter {
    buf: Vec<u8>,
}

impl ProtoWriter {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        put_varint(&mut self.buf, ((field as u64) << 3) | wire_type as u64);
    }

    /// A varint field (int32, int64, uint64, bool, enum). Negative int64 values are written
    /// as their two's complement, ten bytes, as protobuf's `int64` does.
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        put_varint(&mut self.buf, v);
        self
    }

    /// A `double` field (wire type 1).
    pub fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, 1);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `float` field (wire type 5).
    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A length-delimited field: `bytes`, `string`, or an encoded sub-message.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A sub-message field built by `build`.
    pub fn message(&mut self, field: u32, build: impl FnOnce(&mut ProtoWriter)) -> &mut Self {
        let mut inner = ProtoWriter::new();
        build(&mut inner);
        self.bytes(field, &inner.buf)
    }

    /// A packed `repeated double` field (proto3's default encoding): one length-delimited
    /// field holding the values' little-endian bytes back to back. Nothing for an empty list.
    pub fn packed_doubles(&mut self, field: u32, values: &[f64]) -> &mut Self {
        if values.is_empty() {
            return self;
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(field, &bytes)
    }
}

/// One decoded field value, by wire type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (the raw 8 bytes as a little-endian u64).
    Fixed64(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire type 5 (the raw 4 bytes as a little-endian u32).
    Fixed32(u32),
}

/// Iterates over the fields of one encoded message.
pub struct ProtoReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ProtoReader<'a> {
    /// A reader over the encoded message `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        ProtoReader { buf, pos: 0 }
    }

    /// The next `(field number, value)`, `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = get_varint(self.buf, &mut self.pos)?;
        let field = key >> 3;
        if field == 0 || field > u32::MAX as u64 >> 3 {
            return Err(format!("invalid field number {field}"));
        }
        let field = field as u32;
        let value = match key & 7 {
            0 => WireValue::Varint(get_varint(self.buf, &mut self.pos)?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.take(8, field)?.try_into().expect("8 bytes"))),
            2 => {
                let len = get_varint(self.buf, &mut self.pos)?;
                let left = (self.buf.len() - self.pos) as u64;
                if len > left {
                    return Err(format!("field {field}: length {len} runs past the end of the message ({left} left)"));
                }
                WireValue::Bytes(self.take(len as usize, field)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(self.take(4, field)?.try_into().expect("4 bytes"))),
            t => return Err(format!("field {field}: unsupported wire type {t}")),
        };
        Ok(Some((field, value)))
    }

    fn take(&mut self, n: usize, field: u32) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("field {field}: truncated ({n} bytes needed, {} left)", self.buf.len() - self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

impl WireValue<'_> {
    /// The value of a `double` field.
    pub fn as_f64(&self, what: &str) -> Result<f64, String> {
        match *self {
            WireValue::Fixed64(bits) => Ok(f64::from_bits(bits)),
            other => Err(format!("{what}: expected a double (wire type 1), found {other:?}")),
        }
    }

    /// The value of a `float` field.
    pub fn as_f32(&self, what: &str) -> Result<f32, String> {
        match *self {
            WireValue::Fixed32(bits) => Ok(f32::from_bits(bits)),
            other => Err(format!("{what}: expected a float (wire type 5), found {other:?}")),
        }
    }

    /// The value of a varint field.
    pub fn as_varint(&self, what: &str) -> Result<u64, String> {
        match *self {
            WireValue::Varint(v) => Ok(v),
            other => Err(format!("{what}: expected a varint (wire type 0), found {other:?}")),
        }
    }

    /// The bytes of a length-delimited field.
    pub fn as_bytes(&self, what: &str) -> Result<&[u8], String> {
        match *self {
            WireValue::Bytes(b) => Ok(b),
            other => Err(format!("{what}: expected a length-delimited field (wire type 2), found {other:?}")),
        }
    }

    /// The text of a `string` field (UTF-8 checked).
    pub fn as_str(&self, what: &str) -> Result<String, String> {
        let b = self.as_bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("{what}: invalid UTF-8 ({e})"))
    }

    /// Appends the element(s) of a `repeated double` field: packed (one length-delimited
    /// field) or not (one fixed64 field per element); parsers must accept both.
    pub fn extend_f64(&self, what: &str, out: &mut Vec<f64>) -> Result<(), String> {
        match *self {
            WireValue::Fixed64(bits) => out.push(f64::from_bits(bits)),
            WireValue::Bytes(b) => {
                if b.len() % 8 != 0 {
                    return Err(format!("{what}: packed doubles of {} bytes (not a multiple of 8)", b.len()));
                }
                out.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))));
            }
            other => return Err(format!("{what}: expected repeated doubles, found {other:?}")),
        }
        Ok(())
    }

    /// Appends the element(s) of a `repeated float` field, packed or not.
    pub fn extend_f32(&self, what: &str, out: &mut Vec<f32>) -> Result<(), String> {
        match *self {
            WireValue::Fixed32(bits) => out.push(f32::from_bits(bits)),
            WireValue::Bytes(b) => {
                if b.len() % 4 != 0 {
                    return Err(format!("{what}: packed floats of {} bytes (not a multiple of 4)", b.len()));
                }
                out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))));
            }
            other => return Err(format!("{what}: expected repeated floats, found {other:?}")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // The check value of CRC-32C and the test vectors of RFC 3720 (iSCSI), B.4.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
    }

    #[test]
    fn masked_crc_known_values() {
        // Values from TensorBoard's own implementation
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c).
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(&[0u8; 8]), 0x0798_0329); // the length of an empty record
        assert_eq!(masked_crc32c(b"hello"), 0x191C_1FBB);
    }

    #[test]
    fn varint_round_trip() {
        let cases = [0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u32::MAX as u64, (-1i64) as u64, u64::MAX, 1 << 63];
        for &v in &cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let expected_len = if v == 0 { 1 } else { (64 - v.leading_zeros() as usize).div_ceil(7) };
            assert_eq!(buf.len(), expected_len, "{v}");
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, buf.len());
        }
        // Protobuf's documented example: 150 is 0x96 0x01.
        let mut buf = Vec::new();
        put_varint(&mut buf, 150);
        assert_eq!(buf, [0x96, 0x01]);
    }

    #[test]
    fn bad_varints_are_errors() {
        let mut pos = 0;
        assert!(get_varint(&[0x80, 0x80], &mut pos).unwrap_err().contains("truncated"));
        let mut pos = 0;
        assert!(get_varint(&[0xFF; 11], &mut pos).is_err());
        let mut pos = 0;
        assert!(get_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], &mut pos).is_err());
    }

    #[test]
    fn fields_round_trip() {
        let mut w = ProtoWriter::new();
        w.double(1, 1.5).varint(2, (-3i64) as u64).bytes(3, b"hi").float(4, 0.25).packed_doubles(6, &[1.0, -2.0]);
        w.message(5, |m| {
            m.varint(1, 7);
        });
        let buf = w.into_bytes();
        let mut r = ProtoReader::new(&buf);
        assert_eq!(r.next_field().unwrap().unwrap().1.as_f64("").unwrap(), 1.5);
        assert_eq!(r.next_field().unwrap().unwrap().1.as_varint("").unwrap() as i64, -3);
        assert_eq!(r.next_field().unwrap().unwrap().1.as_str("").unwrap(), "hi");
        assert_eq!(r.next_field().unwrap().unwrap().1.as_f32("").unwrap(), 0.25);
        let (f, v) = r.next_field().unwrap().unwrap();
        let mut d = Vec::new();
        v.extend_f64("", &mut d).unwrap();
        assert_eq!((f, d), (6, vec![1.0, -2.0]));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!(f, 5);
        let mut inner = ProtoReader::new(v.as_bytes("").unwrap());
        assert_eq!(inner.next_field().unwrap(), Some((1, WireValue::Varint(7))));
        assert_eq!(inner.next_field().unwrap(), None);
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn truncated_fields_are_errors() {
        let mut w = ProtoWriter::new();
        w.double(1, 1.5).bytes(2, b"hello");
        let buf = w.into_bytes();
        for cut in 1..buf.len() {
            let mut r = ProtoReader::new(&buf[..cut]);
            let mut result = Ok(());
            loop {
                match r.next_field() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            // Cutting exactly after the first field leaves a valid (shorter) message.
            assert_eq!(result.is_ok(), cut == 9, "cut at {cut}: {result:?}");
        }
    }

    #[test]
    fn records_round_trip_and_detect_damage() {
        let mut file = Vec::new();
        write_record(&mut file, b"first");
        write_record(&mut file, b"");
        write_record(&mut file, b"third record");
        let records = split_records(&file).unwrap();
        assert_eq!(records, [&b"first"[..], b"", b"third record"]);
        for cut in 0..file.len() {
            let r = split_records(&file[..cut]);
            let boundaries = [0, 21, 37];
            assert_eq!(r.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            let err = split_records(&bad).unwrap_err();
            assert!(err.contains("CRC") || err.contains("truncated"), "byte {i}: {err}");
        }
    }
}
