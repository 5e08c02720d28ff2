//! Audio I/O against fixtures written by `tools/golden/audio_fixtures.py` (libsndfile through
//! Python's soundfile): the same signal as WAV, FLAC, OGG/Vorbis and MP3 must decode to the
//! same samples within codec precision, aligned; corrupt files must be clear errors.

use std::path::{Path, PathBuf};

use stapes::speech::audio::{audio_info, load_audio, resample, write_wav, AudioFormat};
use stapes::tensor::Generator;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio").join(name)
}

/// A fresh empty folder under the system temp dir, unique to this process and name.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stapes-speech-audio-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The fixture signal (`test_signal` in tools/golden/audio_fixtures.py), quantised to 16 bits
/// and read back as `q / 32768`.
fn reference() -> Vec<f32> {
    let (n, sr) = (8000usize, 16000.0);
    (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let tau = 2.0 * std::f64::consts::PI;
            let mut x = 0.30 * (tau * 440.0 * t).sin();
            x += 0.15 * (tau * 1250.0 * t + 0.5).sin();
            x += 0.10 * (tau * (300.0 * t + 1500.0 * t * t)).sin();
            let env = (std::f64::consts::PI * i as f64 / (n - 1) as f64).sin().sqrt();
            ((x * env * 32767.0).round() / 32768.0) as f32
        })
        .collect()
}

/// Signal-to-error ratio in dB of `y` against `x`.
fn snr_db(x: &[f32], y: &[f32]) -> f64 {
    let ps: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    let pe: f64 = x.iter().zip(y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    10.0 * (ps / pe).log10()
}

/// The lag (in samples, -max..=max) maximising the cross-correlation of `y` against `x`.
fn best_lag(x: &[f32], y: &[f32], max: i64) -> i64 {
    let c = |l: i64| -> f64 {
        (0..x.len() as i64)
            .filter(|&i| i + l >= 0 && ((i + l) as usize) < y.len())
            .map(|i| x[i as usize] as f64 * y[(i + l) as usize] as f64)
            .sum()
    };
    (-max..=max).max_by(|&a, &b| c(a).total_cmp(&c(b))).unwrap()
}

#[test]
fn lossless_formats_are_exact() {
    let r = reference();
    for f in ["signal.wav", "signal.flac"] {
        let a = load_audio(fixture(f), false).unwrap();
        assert_eq!((a.channels, a.sample_rate), (1, 16000), "{f}");
        assert_eq!(a.samples, r, "{f}: 16-bit samples must read back bit for bit");
        let info = audio_info(fixture(f)).unwrap();
        assert_eq!(info.frames, Some(8000));
        assert_eq!(info.duration(), Some(0.5));
    }
    assert_eq!(audio_info(fixture("signal.flac")).unwrap().format, AudioFormat::Flac);
}

/// Lossy codecs: same length, no lag (the MP3 encoder delay of 1105 samples and its padding,
/// and the Vorbis pre-skip and final-block padding, are trimmed from the LAME tag and the
/// granule positions), and a signal-to-error ratio near what the encoders give at their
/// default quality for this 16 kHz signal: measured 28.6 dB for Vorbis (max error 0.037 on a
/// peak of 0.55) and 37.8 dB for MP3 (max error 0.011). The bounds leave 3 dB of margin.
#[test]
fn lossy_formats_are_aligned_and_close() {
    let r = reference();
    for (f, min_snr) in [("signal.ogg", 25.0), ("signal.mp3", 34.0)] {
        let a = load_audio(fixture(f), true).unwrap();
        assert_eq!((a.channels, a.sample_rate), (1, 16000), "{f}");
        assert_eq!(a.samples.len(), r.len(), "{f}: length");
        assert_eq!(best_lag(&r, &a.samples, 1200), 0, "{f}: decoded audio is shifted");
        let snr = snr_db(&r, &a.samples);
        assert!(snr >= min_snr, "{f}: SNR {snr:.2} dB below {min_snr} dB");
    }
}

#[test]
fn stereo_channels_and_downmix() {
    let a = load_audio(fixture("stereo.wav"), false).unwrap();
    assert_eq!((a.channels, a.frames()), (2, 1600));
    let q = |amp: f64, f: f64, i: usize| {
        ((amp * (2.0 * std::f64::consts::PI * f * i as f64 / 16000.0).sin() * 32767.0).round() / 32768.0) as f32
    };
    let left: Vec<f32> = (0..1600).map(|i| q(0.4, 500.0, i)).collect();
    let right: Vec<f32> = (0..1600).map(|i| q(0.2, 900.0, i)).collect();
    assert_eq!(a.channel(0).unwrap(), left);
    assert_eq!(a.channel(1).unwrap(), right);
    assert_eq!(a.samples[0..4], [left[0], right[0], left[1], right[1]], "interleaved");
    let m = load_audio(fixture("stereo.wav"), true).unwrap();
    assert_eq!(m.channels, 1);
    let want: Vec<f32> = left.iter().zip(&right).map(|(l, r)| (l + r) / 2.0).collect();
    assert_eq!(m.samples, want);
}

#[test]
fn write_wav_round_trips_atomically() {
    let dir = temp_dir("write");
    let x: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.01).sin() * 0.9).collect();
    let p = dir.join("out.wav");
    write_wav(&p, &x, 22050).unwrap();
    write_wav(&p, &x, 22050).unwrap(); // overwrite in place
    let a = load_audio(&p, false).unwrap();
    assert_eq!((a.channels, a.sample_rate), (1, 22050));
    let expect: Vec<f32> = x.iter().map(|v| (v * 32767.0).round() / 32768.0).collect();
    assert_eq!(a.samples, expect);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    let e = write_wav(dir.join("no/such/dir/x.wav"), &x, 16000).unwrap_err().to_string();
    assert!(e.contains("write_wav") && e.contains("x.wav"), "{e}");
    assert!(write_wav(dir.join("nan.wav"), &[f32::NAN], 16000).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Loads `bytes` saved as `name` and expects an error mentioning the file and `what`.
fn expect_error(dir: &Path, name: &str, bytes: &[u8], what: &str) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let e = load_audio(&p, true).expect_err(name).to_string();
    assert!(e.contains("load_audio") && e.contains(name), "{name}: {e}");
    assert!(e.contains(what), "{name}: expected {what:?} in {e:?}");
}

#[test]
fn corrupt_files_are_clear_errors() {
    let dir = temp_dir("corrupt");
    let wav = std::fs::read(fixture("signal.wav")).unwrap();
    let flac = std::fs::read(fixture("signal.flac")).unwrap();
    let ogg = std::fs::read(fixture("signal.ogg")).unwrap();
    let mp3 = std::fs::read(fixture("signal.mp3")).unwrap();
    // Truncated headers.
    expect_error(&dir, "head.wav", &wav[..20], "WAV");
    expect_error(&dir, "head.flac", &flac[..30], "FLAC");
    expect_error(&dir, "head.ogg", &ogg[..20], "OGG");
    // Truncated data: the header states more frames than are there.
    expect_error(&dir, "data.wav", &wav[..wav.len() / 2], "truncated");
    expect_error(&dir, "data.flac", &flac[..flac.len() / 2], "truncated");
    // Zero bytes.
    for ext in ["wav", "flac", "ogg", "mp3"] {
        expect_error(&dir, &format!("empty.{ext}"), &[], "empty file");
    }
    // Random bytes.
    let mut g = Generator::new(42);
    let noise: Vec<u8> = (0..4096).map(|_| g.next_u64() as u8).collect();
    for ext in ["wav", "flac", "ogg"] {
        expect_error(&dir, &format!("random.{ext}"), &noise, "unrecognised header");
    }
    // Wrong extension: WAV bytes named .flac, FLAC named .mp3, an unsupported extension.
    expect_error(&dir, "wav-bytes.flac", &wav, "the extension says FLAC but the contents are WAV");
    expect_error(&dir, "flac-bytes.mp3", &flac, "the extension says MP3 but the contents are FLAC");
    expect_error(&dir, "signal.txt", &wav, "unsupported file extension");
    expect_error(&dir, "noext", &wav, "unsupported file extension");
    // A missing file.
    let e = load_audio(dir.join("missing.wav"), true).unwrap_err().to_string();
    assert!(e.contains("missing.wav"), "{e}");
    assert!(audio_info(dir.join("empty.wav")).is_err());
    expect_error(&dir, "head.mp3", &mp3[..3], "MP3");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Damaged copies of every fixture (random bytes overwritten past the first 64, random cut
/// points) must decode or fail with an error, never panic.
#[test]
fn damaged_files_never_panic() {
    let dir = temp_dir("fuzz");
    let mut g = Generator::new(7);
    let mut errors = 0;
    for f in ["signal.wav", "signal.flac", "signal.ogg", "signal.mp3", "stereo.wav"] {
        let good = std::fs::read(fixture(f)).unwrap();
        let ext = Path::new(f).extension().unwrap().to_str().unwrap();
        for k in 0..40 {
            let mut b = good.clone();
            for _ in 0..1 + k % 8 {
                let at = 12 + (g.next_u64() as usize) % (b.len() - 12);
                b[at] = g.next_u64() as u8;
            }
            if k % 3 == 0 {
                b.truncate(12 + (g.next_u64() as usize) % (b.len() - 12));
            }
            let p = dir.join(format!("d{k}.{ext}"));
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| load_audio(&p, true));
            let r = r.unwrap_or_else(|_| panic!("load_audio panicked on a damaged {f} (case {k})"));
            if let Err(e) = r {
                errors += 1;
                assert!(e.to_string().contains(&format!("d{k}.{ext}")), "{e}");
            }
        }
    }
    assert!(errors > 0, "some damaged files must be reported as errors");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resampling_the_fixture_keeps_its_content() {
    // 16 kHz -> 8 kHz -> 16 kHz: every component (<= 1.8 kHz) is below the 4 kHz Nyquist, so
    // the round trip returns the signal apart from the filter's edge transients.
    let r = reference();
    let down = resample(&r, 16000, 8000).unwrap();
    assert_eq!(down.len(), 4000);
    let back = resample(&down, 8000, 16000).unwrap();
    assert_eq!(back.len(), 8000);
    let snr = snr_db(&r[400..7600], &back[400..7600]);
    // Measured 61.6 dB (see `sinc_params` in speech/src/audio.rs).
    assert!(snr > 58.0, "round-trip SNR {snr:.1} dB");
}
