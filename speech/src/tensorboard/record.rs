//! TFRecord framing, the container format of an event file: each record is
//! `u64 LE length`, `u32 LE masked CRC32C of those 8 length bytes`, the data,
//! `u32 LE masked CRC32C of the data`.
//!
//! CRC32C is the Castagnoli CRC (CRC-32/ISCSI in the `crc` crate's catalogue); the mask is
//! `rotate_right(crc, 15) + 0xa282ead8` (wrapping), as TensorFlow's `crc32c::Mask`.
//!
//! Errors are plain strings here; the reader in the parent module wraps them into
//! `stapes_tensor::Error::Io` with the file path.

use crc::{Crc, CRC_32_ISCSI};

/// CRC32C (Castagnoli): reflected polynomial `0x82F63B78`, initial value and final xor
/// `0xFFFFFFFF`.
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// TensorFlow's masked CRC: a CRC stored next to the data it covers is rotated and offset, so
/// that the CRC of a buffer holding CRCs does not degenerate.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    CRC32C.checksum(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord (length, masked length CRC, data, masked data CRC) to `out`.
pub fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Splits a whole file into its records, checking both CRCs of every record: for each record,
/// the byte offset of its header and its data. The error says which record (by index and byte
/// offset) is truncated or corrupt.
pub fn split_records(bytes: &[u8]) -> Result<Vec<(usize, &[u8])>, String> {
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
        records.push((pos, data));
        pos += 16 + len as usize;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value_and_mask() {
        // The check value of CRC-32C (RFC 3720, iSCSI).
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        // Values from TensorBoard's own implementation
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c).
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(&[0u8; 8]), 0x0798_0329); // the length of an empty record
        assert_eq!(masked_crc32c(b"hello"), 0x191C_1FBB);
    }

    #[test]
    fn records_round_trip_and_detect_damage() {
        let mut file = Vec::new();
        write_record(&mut file, b"first");
        write_record(&mut file, b"");
        write_record(&mut file, b"third record");
        // The framing of an empty record, byte for byte.
        assert_eq!(file[21..37], [0, 0, 0, 0, 0, 0, 0, 0, 0x29, 0x03, 0x98, 0x07, 0xd8, 0xea, 0x82, 0xa2]);
        let records = split_records(&file).unwrap();
        assert_eq!(records, [(0, &b"first"[..]), (21, b""), (37, b"third record")]);
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
