//! The [`Dataset`] trait and the on-disk corpora: JSONL and CSV manifests, LibriSpeech.
//!
//! Corpora hold only the list of entries (paths and transcripts); audio is read from disk in
//! [`Dataset::get`], so a corpus of any size costs memory for its list alone.

use std::path::{Path, PathBuf};

use stapes_tensor::{Error, Result};

use crate::audio::{audio_info, load_audio, resample};

/// One utterance: mono audio, its sample rate, its transcript and an identifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Utterance {
    /// Identifier (file stem, manifest `id`, or LibriSpeech `speaker-chapter-utterance`).
    pub id: String,
    /// Mono samples in `[-1, 1)`.
    pub audio: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
    /// The transcript, as stored (no normalisation).
    pub transcript: String,
}

/// A random-access collection of utterances (like `torch.utils.data.Dataset`). Implementations
/// must be shareable across the loader's worker threads.
pub trait Dataset: Send + Sync {
    /// Number of utterances.
    fn len(&self) -> usize;

    /// True when there are no utterances.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads utterance `index`. An index out of range, or a missing or corrupt file, is an error.
    fn get(&self, index: usize) -> Result<Utterance>;

    /// The duration of utterance `index` in seconds when it can be known without decoding the
    /// audio (manifest field, file header); `None` when not. Used to sort and bucket.
    fn duration(&self, index: usize) -> Result<Option<f64>> {
        let _ = index;
        Ok(None)
    }
}

/// One line of a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestEntry {
    /// Identifier: the `id` field, or the audio file's stem.
    pub id: String,
    /// The audio file (made absolute against the manifest's folder when relative).
    pub audio: PathBuf,
    /// The transcript.
    pub transcript: String,
    /// The duration in seconds, when the manifest gives it.
    pub duration: Option<f64>,
    /// The speaker, when the manifest names one (`speaker`, `speaker_id` or `spk_id`; the
    /// speaker folder of a LibriSpeech layout).
    pub speaker: Option<String>,
}

/// A corpus listed in a manifest file.
///
/// * **JSONL** (`.jsonl`/`.json`): one object per line with the audio path in `audio`
///   (or `audio_filepath` as NeMo writes, `path`, `wav`), the transcript in `text` (or
///   `transcript`), and optional `duration` (seconds) and `id`. Blank lines are skipped.
/// * **CSV** (`.csv`): a header row naming the same columns, then one row per utterance;
///   fields may be double-quoted (`""` for a quote inside), as RFC 4180.
///
/// Relative audio paths are relative to the manifest's folder. Audio is down-mixed to mono and,
/// when [`ManifestDataset::with_sample_rate`] asks, resampled on load.
#[derive(Clone, Debug)]
pub struct ManifestDataset {
    entries: Vec<ManifestEntry>,
    sample_rate: Option<u32>,
}

const AUDIO_KEYS: [&str; 4] = ["audio", "audio_filepath", "path", "wav"];
const TEXT_KEYS: [&str; 2] = ["text", "transcript"];
const SPEAKER_KEYS: [&str; 3] = ["speaker", "speaker_id", "spk_id"];

#[allow(clippy::too_many_arguments)]
fn make_entry(
    op: &'static str,
    manifest: &Path,
    line: usize,
    audio: Option<String>,
    text: Option<String>,
    duration: Option<f64>,
    id: Option<String>,
    speaker: Option<String>,
) -> Result<ManifestEntry> {
    let audio =
        audio.ok_or_else(|| Error::io(op, manifest, format!("line {line}: no audio path (one of {AUDIO_KEYS:?})")))?;
    let transcript =
        text.ok_or_else(|| Error::io(op, manifest, format!("line {line}: no transcript (one of {TEXT_KEYS:?})")))?;
    if let Some(d) = duration {
        if !(d.is_finite() && d >= 0.0) {
            return Err(Error::io(op, manifest, format!("line {line}: invalid duration {d}")));
        }
    }
    let rel = PathBuf::from(&audio);
    let path = if rel.is_absolute() { rel } else { manifest.parent().unwrap_or(Path::new(".")).join(rel) };
    let id = id.unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(audio));
    Ok(ManifestEntry { id, audio: path, transcript, duration, speaker })
}

/// Splits one CSV line into fields (RFC 4180 quoting; no newlines inside fields).
fn split_csv(line: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut fields = vec![];
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote");
                    }
                }
            } else {
                cur.push(c);
            }
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
            continue;
        } else if c == '"' && at_start {
            quoted = true;
        } else {
            cur.push(c);
        }
        at_start = false;
    }
    if quoted {
        return Err("unterminated quoted field");
    }
    fields.push(cur);
    Ok(fields)
}

impl ManifestDataset {
    /// Reads a JSONL (`.jsonl`, `.json`) or CSV (`.csv`) manifest, by extension. Malformed lines
    /// are errors naming the manifest and the line.
    pub fn open(path: impl AsRef<Path>) -> Result<ManifestDataset> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("jsonl") | Some("json") => ManifestDataset::open_jsonl(path),
            Some("csv") => ManifestDataset::open_csv(path),
            _ => Err(Error::io("ManifestDataset::open", path, "unknown manifest type (expected .jsonl or .csv)")),
        }
    }

    /// Reads a JSONL manifest.
    pub fn open_jsonl(path: impl AsRef<Path>) -> Result<ManifestDataset> {
        const OP: &str = "ManifestDataset::open_jsonl";
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(OP, path, e))?;
        let mut entries = vec![];
        for (k, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| Error::io(OP, path, format!("line {}: {e}", k + 1)))?;
            let obj = v.as_object().ok_or_else(|| Error::io(OP, path, format!("line {}: not a JSON object", k + 1)))?;
            let string = |keys: &[&str]| keys.iter().find_map(|key| obj.get(*key)?.as_str().map(str::to_string));
            // a speaker id may be a number (LibriSpeech's are)
            let speaker = SPEAKER_KEYS.iter().find_map(|key| match obj.get(*key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let duration = match obj.get("duration") {
                None | Some(serde_json::Value::Null) => None,
                Some(d) => Some(
                    d.as_f64()
                        .ok_or_else(|| Error::io(OP, path, format!("line {}: duration is not a number", k + 1)))?,
                ),
            };
            entries.push(make_entry(
                OP,
                path,
                k + 1,
                string(&AUDIO_KEYS),
                string(&TEXT_KEYS),
                duration,
                string(&["id"]),
                speaker,
            )?);
        }
        Ok(ManifestDataset { entries, sample_rate: None })
    }

    /// Reads a CSV manifest with a header row.
    pub fn open_csv(path: impl AsRef<Path>) -> Result<ManifestDataset> {
        const OP: &str = "ManifestDataset::open_csv";
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(OP, path, e))?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| Error::io(OP, path, "empty manifest (no header row)"))?;
        let header =
            split_csv(header.trim_end_matches('\r')).map_err(|e| Error::io(OP, path, format!("line 1: {e}")))?;
        let col = |keys: &[&str]| header.iter().position(|h| keys.contains(&h.trim()));
        let (audio_col, text_col) = (col(&AUDIO_KEYS), col(&TEXT_KEYS));
        let (dur_col, id_col, spk_col) = (col(&["duration"]), col(&["id"]), col(&SPEAKER_KEYS));
        if audio_col.is_none() || text_col.is_none() {
            return Err(Error::io(OP, path, format!("the header {header:?} needs an audio and a text column")));
        }
        let mut entries = vec![];
        for (k, line) in lines {
            let f = split_csv(line.trim_end_matches('\r'))
                .map_err(|e| Error::io(OP, path, format!("line {}: {e}", k + 1)))?;
            if f.len() != header.len() {
                return Err(Error::io(
                    OP,
                    path,
                    format!("line {}: {} fields, the header has {}", k + 1, f.len(), header.len()),
                ));
            }
            let get = |c: Option<usize>| c.map(|c| f[c].clone()).filter(|s| !s.is_empty());
            let duration = match get(dur_col) {
                None => None,
                Some(s) => Some(
                    s.trim()
                        .parse::<f64>()
                        .map_err(|_| Error::io(OP, path, format!("line {}: duration {s:?} is not a number", k + 1)))?,
                ),
            };
            let text = text_col.map(|c| f[c].clone());
            entries.push(make_entry(OP, path, k + 1, get(audio_col), text, duration, get(id_col), get(spk_col))?);
        }
        Ok(ManifestDataset { entries, sample_rate: None })
    }

    /// A dataset over given entries (paths used as they are).
    pub fn from_entries(entries: Vec<ManifestEntry>) -> ManifestDataset {
        ManifestDataset { entries, sample_rate: None }
    }

    /// Resamples every utterance to `sample_rate` on load.
    pub fn with_sample_rate(mut self, sample_rate: u32) -> ManifestDataset {
        self.sample_rate = Some(sample_rate);
        self
    }

    /// The entries.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }
}

fn load_entry(e: &ManifestEntry, sample_rate: Option<u32>) -> Result<Utterance> {
    let a = load_audio(&e.audio, true)?;
    let (audio, sr) = match sample_rate {
        Some(sr) if sr != a.sample_rate => (resample(&a.samples, a.sample_rate, sr)?, sr),
        _ => (a.samples, a.sample_rate),
    };
    Ok(Utterance { id: e.id.clone(), audio, sample_rate: sr, transcript: e.transcript.clone() })
}

fn out_of_range(op: &'static str, index: usize, size: usize) -> Error {
    Error::IndexOutOfRange { op, index: index as i64, dim: 0, size }
}

impl Dataset for ManifestDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, index: usize) -> Result<Utterance> {
        const OP: &str = "ManifestDataset::get";
        let e = self.entries.get(index).ok_or_else(|| out_of_range(OP, index, self.entries.len()))?;
        load_entry(e, self.sample_rate)
    }

    fn duration(&self, index: usize) -> Result<Option<f64>> {
        const OP: &str = "ManifestDataset::duration";
        let e = self.entries.get(index).ok_or_else(|| out_of_range(OP, index, self.entries.len()))?;
        match e.duration {
            Some(d) => Ok(Some(d)),
            None => Ok(audio_info(&e.audio)?.duration()),
        }
    }
}

/// The LibriSpeech layout: `root/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`, each line
/// `<speaker>-<chapter>-<utterance> TRANSCRIPT`, next to `<speaker>-<chapter>-<utterance>.flac`.
/// Utterances are sorted by id; transcripts are kept as stored (upper case).
#[derive(Clone, Debug)]
pub struct LibriSpeech {
    inner: ManifestDataset,
}

impl LibriSpeech {
    /// Scans `root` (e.g. `LibriSpeech/train-clean-100`). A malformed transcript line, or a
    /// transcript whose `.flac` file is missing, is an error naming the file.
    pub fn open(root: impl AsRef<Path>) -> Result<LibriSpeech> {
        const OP: &str = "LibriSpeech::open";
        let root = root.as_ref();
        let dirs = |p: &Path| -> Result<Vec<PathBuf>> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(OP, p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            v.sort();
            Ok(v)
        };
        let mut entries = vec![];
        for speaker in dirs(root)? {
            for chapter in dirs(&speaker)? {
                let mut trans: Vec<PathBuf> = std::fs::read_dir(&chapter)
                    .map_err(|e| Error::io(OP, &chapter, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.to_string_lossy().ends_with(".trans.txt"))
                    .collect();
                trans.sort();
                for t in trans {
                    let text = std::fs::read_to_string(&t).map_err(|e| Error::io(OP, &t, e))?;
                    for (k, line) in text.lines().enumerate() {
                        let line = line.trim_end();
                        if line.is_empty() {
                            continue;
                        }
                        let (id, words) = line.split_once(' ').ok_or_else(|| {
                            Error::io(OP, &t, format!("line {}: expected `<id> <transcript>`", k + 1))
                        })?;
                        let audio = chapter.join(format!("{id}.flac"));
                        if !audio.is_file() {
                            return Err(Error::io(OP, &audio, format!("listed in {} but missing", t.display())));
                        }
                        entries.push(ManifestEntry {
                            id: id.to_string(),
                            audio,
                            transcript: words.to_string(),
                            duration: None,
                            speaker: speaker.file_name().map(|n| n.to_string_lossy().into_owned()),
                        });
                    }
                }
            }
        }
        if entries.is_empty() {
            return Err(Error::io(OP, root, "no */*/*.trans.txt transcripts found"));
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(LibriSpeech { inner: ManifestDataset::from_entries(entries) })
    }

    /// The entries (paths and transcripts).
    pub fn entries(&self) -> &[ManifestEntry] {
        self.inner.entries()
    }
}

impl Dataset for LibriSpeech {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize) -> Result<Utterance> {
        self.inner.get(index)
    }

    fn duration(&self, index: usize) -> Result<Option<f64>> {
        self.inner.duration(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields() {
        assert_eq!(split_csv("a,b,c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(split_csv("\"x, y\",\"say \"\"hi\"\"\",").unwrap(), vec!["x, y", "say \"hi\"", ""]);
        assert!(split_csv("\"open").is_err());
        assert!(split_csv("\"a\"b,c").is_err());
    }
}
