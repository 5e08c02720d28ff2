//! Training the Transformer LM ([`crate::nnlm::TransformerLm`]) on text: the loop behind
//! `stapes lm train`, `stapes lm eval` and `stapes lm sample` (issue 18).
//!
//! **Text.** One sentence per line, any number of files, read as a stream: memory holds the
//! tokenizer, a bounded shuffle buffer of packed blocks and one batch, whatever the corpus size.
//! Every `round(1 / dev_fraction)`-th non-empty line is held out for the perplexity reported
//! each epoch.
//!
//! **Packing.** Each line becomes `<s> tokens </s>`; the lines are concatenated and cut into
//! blocks of `seq_len + 1` tokens (inputs `block[..seq_len]`, targets `block[1..]`), so no
//! position is padding. Blocks pass through a seeded shuffle buffer of `shuffle_blocks`, then
//! form batches of `batch_size`.
//!
//! **Run directory** (written atomically, as `stapes train`'s): `config.toml`,
//! `tokenizer.json`, `checkpoint.safetensors` (model, optimizer, schedule, scaler, RNG and the
//! position in the stream: `--resume` continues bit for bit), `best_model.safetensors` (lowest
//! dev perplexity), `log.jsonl`, `tensorboard/`.

use crate::config::{LoggingConfig, OptimizerConfig, OptimizerKind, Precision, ScheduleConfig};
use crate::nnlm::{LmState, TransformerLm, TransformerLmConfig};
use crate::tensorboard::SummaryWriter;
use serde::{Deserialize, Serialize};
use stapes_autograd::{autocast, no_grad, Var};
use stapes_nn::amp::{GradScaler, GradScalerConfig};
use stapes_nn::checkpoint::{save_module, write_atomic, Checkpoint};
use stapes_nn::loss::{cross_entropy, CrossEntropyOptions};
use stapes_nn::Module;
use stapes_tensor::{DType, Device, Error, Generator, Result, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The padding id.
pub const PAD: i64 = 0;
/// The sentence-start id.
pub const BOS: i64 = 1;
/// The sentence-end id.
pub const EOS: i64 = 2;
/// The id of characters the tokenizer does not know.
pub const UNK: i64 = 3;
const SPECIALS: i64 = 4;

/// The LM's tokenizer: `<pad>`, `<s>`, `</s>`, `<unk>` at ids 0-3, then either one id per
/// character (`kind = "chars"`: those of the training text, or the configured ones, lower-cased
/// when `lowercase`, in sorted order) or the subword units of a model trained on the text with
/// the `tokenizers` crate: byte-pair encoding (`kind = "bpe"`) or sentencepiece's unigram LM
/// (`kind = "unigram"`). Subword tokenizers are saved as the crate's `tokenizer.json`, which
/// Hugging Face's `tokenizers` library loads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LmTokenizer {
    /// `"chars"`, `"bpe"` or `"unigram"`.
    pub kind: String,
    /// The characters, ids 4, 5, … (`"chars"`).
    pub chars: String,
    /// Text is lower-cased before encoding.
    pub lowercase: bool,
    #[serde(skip)]
    ids: HashMap<char, i64>,
    #[cfg(feature = "bpe")]
    #[serde(skip)]
    bpe: Option<std::sync::Arc<tokenizers::Tokenizer>>,
}

impl PartialEq for LmTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.chars == other.chars && self.lowercase == other.lowercase && {
            #[cfg(feature = "bpe")]
            {
                self.bpe.as_ref().map(|b| b.to_string(false).ok())
                    == other.bpe.as_ref().map(|b| b.to_string(false).ok())
            }
            #[cfg(not(feature = "bpe"))]
            {
                true
            }
        }
    }
}

impl LmTokenizer {
    /// The tokenizer of the characters `chars` (repeats are an error).
    pub fn chars(chars: &str, lowercase: bool) -> Result<LmTokenizer> {
        let mut ids = HashMap::new();
        for (i, c) in chars.chars().enumerate() {
            if ids.insert(c, SPECIALS + i as i64).is_some() {
                return Err(Error::invalid("LmTokenizer", format!("character {c:?} appears twice")));
            }
        }
        Ok(LmTokenizer {
            kind: "chars".into(),
            chars: chars.to_string(),
            lowercase,
            ids,
            #[cfg(feature = "bpe")]
            bpe: None,
        })
    }

    /// Ids, the four special ones included.
    pub fn vocab_size(&self) -> usize {
        #[cfg(feature = "bpe")]
        if let Some(b) = &self.bpe {
            return b.get_vocab_size(true);
        }
        SPECIALS as usize + self.ids.len()
    }

    /// Whether the units are characters (what shallow fusion with the character beam search
    /// needs).
    pub fn is_chars(&self) -> bool {
        self.kind == "chars"
    }

    fn norm(&self, text: &str) -> String {
        let t = if self.lowercase { text.to_lowercase() } else { text.to_string() };
        t.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The id of one character (after lower-casing), if the tokenizer has it (`None` for a
    /// subword tokenizer).
    pub fn id(&self, c: char) -> Option<i64> {
        if !self.is_chars() {
            return None;
        }
        let c = if self.lowercase { c.to_lowercase().next().unwrap_or(c) } else { c };
        self.ids.get(&c).copied()
    }

    /// Ids of `text` (whitespace runs become one space; unknown characters `<unk>`), without
    /// `<s>`/`</s>`.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        #[cfg(feature = "bpe")]
        if let Some(b) = &self.bpe {
            return match b.encode(self.norm(text), false) {
                Ok(e) => e.get_ids().iter().map(|&i| i64::from(i)).collect(),
                Err(_) => vec![UNK],
            };
        }
        self.norm(text).chars().map(|c| self.ids.get(&c).copied().unwrap_or(UNK)).collect()
    }

    /// `<s> text </s>`.
    pub fn encode_sentence(&self, text: &str) -> Vec<i64> {
        let mut v = vec![BOS];
        v.extend(self.encode(text));
        v.push(EOS);
        v
    }

    /// The text of ids (special ids dropped).
    pub fn decode(&self, ids: &[i64]) -> String {
        #[cfg(feature = "bpe")]
        if let Some(b) = &self.bpe {
            let ids: Vec<u32> = ids.iter().filter(|&&i| i >= SPECIALS).map(|&i| i as u32).collect();
            return b.decode(&ids, true).unwrap_or_default();
        }
        let chars: Vec<char> = self.chars.chars().collect();
        ids.iter().filter_map(|&i| (i >= SPECIALS).then(|| chars.get((i - SPECIALS) as usize)).flatten()).collect()
    }

    /// Writes `tokenizer.json` atomically (for BPE, the `tokenizers` library's own file).
    pub fn save(&self, path: &Path) -> Result<()> {
        #[cfg(feature = "bpe")]
        if let Some(b) = &self.bpe {
            let text = b.to_string(true).map_err(|e| Error::invalid("LmTokenizer::save", e.to_string()))?;
            return write_atomic(path, text.as_bytes());
        }
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::invalid("LmTokenizer::save", e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }

    /// Reads `tokenizer.json` (a character tokenizer, or a `tokenizers` BPE file).
    pub fn load(path: &Path) -> Result<LmTokenizer> {
        const OP: &str = "LmTokenizer::load";
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(OP, path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::io(OP, path, format!("corrupt: {e}")))?;
        if v.get("kind").is_none() && v.get("model").is_some() {
            return Self::load_bpe(path, &text);
        }
        let t: LmTokenizer = serde_json::from_value(v).map_err(|e| Error::io(OP, path, format!("corrupt: {e}")))?;
        if t.kind != "chars" {
            return Err(Error::io(OP, path, format!("tokenizer kind {:?} (expected \"chars\")", t.kind)));
        }
        LmTokenizer::chars(&t.chars, t.lowercase).map_err(|e| Error::io(OP, path, e.to_string()))
    }

    #[cfg(feature = "bpe")]
    fn load_bpe(path: &Path, text: &str) -> Result<LmTokenizer> {
        let tk: tokenizers::Tokenizer =
            text.parse().map_err(|e| Error::io("LmTokenizer::load", path, format!("not a tokenizer: {e}")))?;
        Self::from_bpe(tk).map_err(|e| Error::io("LmTokenizer::load", path, e.to_string()))
    }

    #[cfg(not(feature = "bpe"))]
    fn load_bpe(path: &Path, _text: &str) -> Result<LmTokenizer> {
        Err(Error::io("LmTokenizer::load", path, "a BPE tokenizer: this build has no `bpe` feature"))
    }

    #[cfg(feature = "bpe")]
    fn from_bpe(tk: tokenizers::Tokenizer) -> Result<LmTokenizer> {
        use tokenizers::models::ModelWrapper;
        let kind = match tk.get_model() {
            ModelWrapper::BPE(_) => "bpe",
            ModelWrapper::Unigram(_) => "unigram",
            other => {
                let name = match other {
                    ModelWrapper::WordPiece(_) => "WordPiece",
                    ModelWrapper::WordLevel(_) => "WordLevel",
                    _ => "unknown",
                };
                return Err(Error::invalid(
                    "LmTokenizer",
                    format!("a {name} tokenizer model (BPE and Unigram ones are supported)"),
                ));
            }
        };
        for (name, id) in [("<pad>", PAD), ("<s>", BOS), ("</s>", EOS), ("<unk>", UNK)] {
            if tk.token_to_id(name).map(i64::from) != Some(id) {
                return Err(Error::invalid("LmTokenizer", format!("the {kind} model must have {name} at id {id}")));
            }
        }
        Ok(LmTokenizer {
            kind: kind.into(),
            chars: String::new(),
            lowercase: false,
            ids: HashMap::new(),
            bpe: Some(std::sync::Arc::new(tk)),
        })
    }

    /// A BPE model of `vocab_size` units trained on the lines of `files` (Metaspace
    /// pre-tokenization, as sentencepiece's `▁`; lower-cased first when `lowercase`).
    #[cfg(feature = "bpe")]
    pub fn train_bpe(files: &[PathBuf], vocab_size: usize, min_frequency: u64, lowercase: bool) -> Result<LmTokenizer> {
        Self::train_subword("bpe", files, vocab_size, min_frequency, lowercase)
    }

    /// A unigram LM model (sentencepiece's default algorithm) of `vocab_size` units trained on
    /// the lines of `files`: EM over a large seed vocabulary, pruned to the pieces whose removal
    /// costs the likelihood least (Metaspace pre-tokenization; lower-cased first when
    /// `lowercase`).
    #[cfg(feature = "bpe")]
    pub fn train_unigram(files: &[PathBuf], vocab_size: usize, lowercase: bool) -> Result<LmTokenizer> {
        Self::train_subword("unigram", files, vocab_size, 0, lowercase)
    }

    #[cfg(feature = "bpe")]
    fn train_subword(
        kind: &str,
        files: &[PathBuf],
        vocab_size: usize,
        min_frequency: u64,
        lowercase: bool,
    ) -> Result<LmTokenizer> {
        use tokenizers::decoders::DecoderWrapper;
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::models::unigram::{Unigram, UnigramTrainer};
        use tokenizers::models::{ModelWrapper, TrainerWrapper};
        use tokenizers::normalizers::{Lowercase, NormalizerWrapper};
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        use tokenizers::pre_tokenizers::PreTokenizerWrapper;
        use tokenizers::processors::PostProcessorWrapper;
        use tokenizers::{AddedToken, TokenizerBuilder};
        let op = if kind == "bpe" { "LmTokenizer::train_bpe" } else { "LmTokenizer::train_unigram" };
        let err = |e: Box<dyn std::error::Error + Send + Sync>| Error::invalid(op, e.to_string());
        let specials: Vec<AddedToken> =
            ["<pad>", "<s>", "</s>", "<unk>"].iter().map(|t| AddedToken::from(t.to_string(), true)).collect();
        let vocab = u32::try_from(vocab_size).map_err(|_| Error::invalid(op, format!("vocab_size {vocab_size}")))?;
        let (model, mut trainer) = if kind == "bpe" {
            let model = BPE::builder().unk_token("<unk>".into()).build().map_err(err)?;
            let trainer = BpeTrainerBuilder::new()
                .vocab_size(vocab_size)
                .min_frequency(min_frequency)
                .show_progress(false)
                .special_tokens(specials)
                .build();
            (ModelWrapper::BPE(model), TrainerWrapper::BpeTrainer(trainer))
        } else {
            let trainer = UnigramTrainer::builder()
                .vocab_size(vocab)
                .show_progress(false)
                .special_tokens(specials)
                .unk_token(Some("<unk>".into()))
                .build()
                .map_err(|e| Error::invalid(op, e.to_string()))?;
            (ModelWrapper::Unigram(Unigram::default()), TrainerWrapper::UnigramTrainer(trainer))
        };
        let meta = Metaspace::new('▁', PrependScheme::Always, true);
        let mut tk = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::default()
        .with_model(model)
        .with_normalizer(lowercase.then_some(NormalizerWrapper::Lowercase(Lowercase)))
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(meta.clone())))
        .with_decoder(Some(DecoderWrapper::Metaspace(meta)))
        .build()
        .map_err(err)?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        tk.train_from_files(&mut trainer, names).map_err(err)?;
        let json = tk.to_string(false).map_err(err)?;
        let tk: tokenizers::Tokenizer = json.parse().map_err(err)?;
        Self::from_bpe(tk)
    }
}

/// The `[tokenizer]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// `"chars"`, `"bpe"` (byte-pair encoding) or `"unigram"` (sentencepiece's unigram LM):
    /// subword models trained on the text, which need the `bpe` feature.
    pub kind: String,
    /// Lower-case the text.
    pub lowercase: bool,
    /// Subword units, the four special tokens included.
    pub vocab_size: usize,
    /// BPE: pairs seen fewer times are not merged (unigram: unused).
    pub min_frequency: u64,
    /// The characters, when given (for instance the acoustic model's, so that the LM can score
    /// every transcript it makes); by default those of the training text. Characters of the
    /// text outside it become `<unk>`.
    pub chars: Option<String>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig { kind: "chars".into(), lowercase: true, vocab_size: 1000, min_frequency: 2, chars: None }
    }
}

/// The `[training]` table of an LM run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmTrainingConfig {
    /// Blocks per batch.
    pub batch_size: usize,
    /// Tokens per block (the context the model is trained on).
    pub seq_len: usize,
    /// Passes over the text.
    pub epochs: usize,
    /// Stop after the epoch during which this much wall time has passed.
    pub max_seconds: Option<f64>,
    /// Gradient clipping by global L2 norm (0 disables it).
    pub clip_norm: f64,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// f32, or autocast to bf16/f16 (with a GradScaler for f16).
    pub precision: Precision,
    /// A checkpoint every this many steps as well as at every epoch end (0: epoch ends only).
    pub checkpoint_every_steps: usize,
    /// The held-out share of the lines.
    pub dev_fraction: f64,
    /// Blocks in the shuffle buffer.
    pub shuffle_blocks: usize,
}

impl Default for LmTrainingConfig {
    fn default() -> Self {
        LmTrainingConfig {
            batch_size: 32,
            seq_len: 128,
            epochs: 10,
            max_seconds: None,
            clip_norm: 1.0,
            seed: 0,
            precision: Precision::F32,
            checkpoint_every_steps: 500,
            dev_fraction: 0.02,
            shuffle_blocks: 1024,
        }
    }
}

/// A whole LM run, read from (and written as) TOML; every table optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmRunConfig {
    /// The model (`vocab_size` is set from the tokenizer).
    pub model: TransformerLmConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerConfig,
    /// The loop.
    pub training: LmTrainingConfig,
    /// The optimizer (AdamW by default).
    pub optimizer: OptimizerConfig,
    /// The schedule (Noam with 1000 warm-up steps by default).
    pub schedule: ScheduleConfig,
    /// TensorBoard.
    pub logging: LoggingConfig,
}

impl Default for LmRunConfig {
    fn default() -> Self {
        let model = TransformerLmConfig::default();
        LmRunConfig {
            schedule: ScheduleConfig::Noam { factor: 1.0, d_model: model.d_model, warmup: 1000 },
            model,
            tokenizer: TokenizerConfig::default(),
            training: LmTrainingConfig::default(),
            optimizer: OptimizerConfig { kind: OptimizerKind::AdamW, weight_decay: 0.01, ..OptimizerConfig::default() },
            logging: LoggingConfig { plots: false, ..LoggingConfig::default() },
        }
    }
}

impl LmRunConfig {
    /// Parses TOML (unknown keys are errors).
    pub fn from_toml_str(text: &str) -> Result<LmRunConfig> {
        toml::from_str(text).map_err(|e| Error::invalid("LmRunConfig", e.to_string()))
    }
    /// Reads a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<LmRunConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("LmRunConfig", path, e))?;
        Self::from_toml_str(&text).map_err(|e| Error::io("LmRunConfig", path, e.to_string()))
    }
    /// The TOML text.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::invalid("LmRunConfig", e.to_string()))
    }
    /// Checks the values, naming the field.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "LmRunConfig";
        let t = &self.training;
        if t.batch_size == 0 || t.seq_len == 0 || t.epochs == 0 || t.shuffle_blocks == 0 {
            return Err(Error::invalid(OP, "training: batch_size, seq_len, epochs and shuffle_blocks must be >= 1"));
        }
        if t.seq_len > self.model.max_len {
            return Err(Error::invalid(
                OP,
                format!("seq_len {} exceeds model.max_len {}", t.seq_len, self.model.max_len),
            ));
        }
        if !(t.dev_fraction > 0.0 && t.dev_fraction < 1.0) {
            return Err(Error::invalid(OP, format!("dev_fraction must be in (0, 1), got {}", t.dev_fraction)));
        }
        if !(t.clip_norm >= 0.0 && t.clip_norm.is_finite()) {
            return Err(Error::invalid(OP, format!("clip_norm must be finite and >= 0, got {}", t.clip_norm)));
        }
        match self.tokenizer.kind.as_str() {
            "chars" => {}
            "bpe" | "unigram" if cfg!(feature = "bpe") => {
                if self.tokenizer.vocab_size < 8 {
                    return Err(Error::invalid(
                        OP,
                        format!("tokenizer.vocab_size {} is too small", self.tokenizer.vocab_size),
                    ));
                }
            }
            k => {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "tokenizer.kind {k:?} is not supported (\"chars\", or \"bpe\" and \"unigram\" with the `bpe` \
                         feature)"
                    ),
                ))
            }
        }
        self.schedule.build()?;
        Ok(())
    }
}

/// The lines of text files, in order, as a stream; with the split they belong to.
fn for_each_line(files: &[PathBuf], mut f: impl FnMut(usize, &str) -> Result<bool>) -> Result<()> {
    let mut n = 0;
    for path in files {
        let file = std::fs::File::open(path).map_err(|e| Error::io("lm text", path, e))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| Error::io("lm text", path, format!("not UTF-8 text: {e}")))?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !f(n, line)? {
                return Ok(());
            }
            n += 1;
        }
    }
    Ok(())
}

/// Which lines are held out: every `k`-th.
fn dev_every(fraction: f64) -> usize {
    ((1.0 / fraction).round() as usize).max(2)
}

/// An error when `files` hold no non-empty line.
fn require_text(files: &[PathBuf]) -> Result<()> {
    let mut any = false;
    for_each_line(files, |_, _| {
        any = true;
        Ok(false)
    })?;
    if any {
        Ok(())
    } else {
        Err(Error::invalid("build_tokenizer", format!("no text in {files:?} (only empty lines)")))
    }
}

/// The tokenizer of the configured characters, or of the training lines' characters (one
/// streaming pass); an error when the text has no line.
pub fn build_tokenizer(files: &[PathBuf], cfg: &TokenizerConfig) -> Result<LmTokenizer> {
    let mut set = BTreeSet::new();
    if cfg.kind == "bpe" || cfg.kind == "unigram" {
        require_text(files)?;
        #[cfg(feature = "bpe")]
        return if cfg.kind == "bpe" {
            LmTokenizer::train_bpe(files, cfg.vocab_size, cfg.min_frequency, cfg.lowercase)
        } else {
            LmTokenizer::train_unigram(files, cfg.vocab_size, cfg.lowercase)
        };
        #[cfg(not(feature = "bpe"))]
        return Err(Error::invalid(
            "build_tokenizer",
            format!("tokenizer.kind = {:?} needs the `bpe` feature", cfg.kind),
        ));
    }
    if let Some(chars) = &cfg.chars {
        require_text(files)?;
        let mut cs: BTreeSet<char> =
            chars.chars().map(|c| if cfg.lowercase { c.to_lowercase().next().unwrap_or(c) } else { c }).collect();
        cs.insert(' ');
        return LmTokenizer::chars(&cs.into_iter().collect::<String>(), cfg.lowercase);
    }
    let mut lines = 0usize;
    for_each_line(files, |_, line| {
        let l = if cfg.lowercase { line.to_lowercase() } else { line.to_string() };
        set.extend(l.split_whitespace().flat_map(|w| w.chars()));
        lines += 1;
        Ok(true)
    })?;
    if lines == 0 {
        return Err(Error::invalid("build_tokenizer", format!("no text in {files:?} (only empty lines)")));
    }
    set.insert(' ');
    LmTokenizer::chars(&set.into_iter().collect::<String>(), cfg.lowercase)
}

/// Packs the lines of one split into blocks of `block` tokens and hands them to `f` in stream
/// order, through a shuffle buffer when `shuffle` gives one (`(capacity, generator)`).
fn blocks(
    files: &[PathBuf],
    tok: &LmTokenizer,
    dev: bool,
    every: usize,
    block: usize,
    mut shuffle: Option<(usize, &mut Generator)>,
    mut f: impl FnMut(Vec<i64>) -> Result<bool>,
) -> Result<()> {
    let mut pending: Vec<i64> = Vec::new();
    let mut buffer: Vec<Vec<i64>> = Vec::new();
    let mut go = true;
    let mut emit =
        |b: Vec<i64>, buffer: &mut Vec<Vec<i64>>, shuffle: &mut Option<(usize, &mut Generator)>| match shuffle {
            None => f(b),
            Some((cap, g)) => {
                if buffer.len() < *cap {
                    buffer.push(b);
                    return Ok(true);
                }
                let i = (g.next_u64() % buffer.len() as u64) as usize;
                let out = std::mem::replace(&mut buffer[i], b);
                f(out)
            }
        };
    for_each_line(files, |n, line| {
        if (n % every == every - 1) != dev {
            return Ok(true);
        }
        pending.extend(tok.encode_sentence(line));
        while pending.len() >= block {
            let rest = pending.split_off(block);
            let b = std::mem::replace(&mut pending, rest);
            go = emit(b, &mut buffer, &mut shuffle)?;
            if !go {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if !go {
        return Ok(());
    }
    // the tail of the stream: a last block padded with <pad> (its padding is not scored)
    if pending.len() > 1 {
        pending.resize(block, PAD);
        go = emit(pending, &mut buffer, &mut shuffle)?;
    }
    if let (true, Some((_, g))) = (go, shuffle) {
        while !buffer.is_empty() {
            let i = (g.next_u64() % buffer.len() as u64) as usize;
            if !f(buffer.swap_remove(i))? {
                break;
            }
        }
    }
    Ok(())
}

/// Inputs `[B, L]` and targets `[B, L]` (`-100` where the target is padding) of a batch.
fn batch_tensors(batch: &[Vec<i64>]) -> Result<(Tensor, Tensor)> {
    let l = batch[0].len() - 1;
    let mut x = Vec::with_capacity(batch.len() * l);
    let mut y = Vec::with_capacity(batch.len() * l);
    for b in batch {
        x.extend_from_slice(&b[..l]);
        y.extend(b[1..].iter().map(|&t| if t == PAD { -100 } else { t }));
    }
    let n = batch.len();
    Ok((Tensor::from_vec(x, [n, l], &Device::Cpu)?, Tensor::from_vec(y, [n, l], &Device::Cpu)?))
}

fn batch_loss(model: &TransformerLm, x: &Tensor, y: &Tensor, device: &Device) -> Result<Var> {
    let (b, l) = (x.dims()[0], x.dims()[1]);
    let logits = model.forward(x, None)?;
    let v = model.config().vocab_size;
    let logits = logits.reshape([b * l, v])?.to_dtype(DType::F32)?;
    let opts = CrossEntropyOptions { ignore_index: -100, ..CrossEntropyOptions::default() };
    cross_entropy(&logits, &y.reshape([b * l])?.to_device(device)?, &opts)
}

/// The held-out perplexity: `exp` of the mean negative log-likelihood per predicted token, and
/// the number of tokens. Leaves the model in eval mode.
pub fn perplexity(
    model: &TransformerLm,
    tok: &LmTokenizer,
    files: &[PathBuf],
    held_out: Option<f64>,
    seq_len: usize,
    batch_size: usize,
) -> Result<(f64, usize)> {
    model.eval();
    let device = model.parameters().first().map(|p| p.device()).unwrap_or(Device::Cpu);
    let (dev, every) = match held_out {
        Some(f) => (true, dev_every(f)),
        None => (false, usize::MAX),
    };
    let (mut nll, mut count) = (0f64, 0usize);
    let mut batch = Vec::new();
    let mut run = |batch: &mut Vec<Vec<i64>>| -> Result<()> {
        let (x, y) = batch_tensors(batch)?;
        let n = y.to_vec::<i64>()?.iter().filter(|&&t| t != -100).count();
        if n > 0 {
            let loss = no_grad(|| batch_loss(model, &x.to_device(&device)?, &y, &device))?;
            nll += loss.tensor().to_scalar_f64()? * n as f64;
            count += n;
        }
        batch.clear();
        Ok(())
    };
    blocks(files, tok, dev, every, seq_len + 1, None, |b| {
        batch.push(b);
        if batch.len() == batch_size {
            run(&mut batch)?;
        }
        Ok(true)
    })?;
    if !batch.is_empty() {
        run(&mut batch)?;
    }
    if count == 0 {
        return Err(Error::invalid("perplexity", format!("no tokens to score in {files:?}")));
    }
    Ok(((nll / count as f64).exp(), count))
}

/// What one LM epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmEpochLog {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: u64,
    /// Mean training loss (nats per token).
    pub train_loss: f64,
    /// Held-out perplexity.
    pub dev_perplexity: f64,
    /// Training tokens per second in the epoch.
    pub tokens_per_s: f64,
    /// Seconds of training so far.
    pub elapsed_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LmPosition {
    epoch: usize,
    batches_done: usize,
    epoch_complete: bool,
    loss_sum: f64,
    n_loss: usize,
    tokens: usize,
    epoch_seconds: f64,
    elapsed_s: f64,
    best_ppl: Option<f64>,
    logs: Vec<LmEpochLog>,
}

/// Progress of an LM run.
#[derive(Clone, Debug)]
pub enum LmEvent {
    /// Training starts: parameters, vocabulary, resumed position.
    Start {
        /// Parameters.
        parameters: usize,
        /// Tokenizer ids.
        vocab_size: usize,
        /// `Some((epoch, batches, step))` when resuming.
        resumed: Option<(usize, usize, u64)>,
    },
    /// A step finished.
    Step {
        /// Epoch.
        epoch: usize,
        /// Optimizer steps.
        step: u64,
        /// The batch's loss.
        loss: f64,
        /// Learning rate.
        lr: f64,
        /// Tokens per second in this epoch.
        tokens_per_s: f64,
    },
    /// An epoch ended.
    EpochEnd(LmEpochLog),
}

/// How to run [`train_lm`] beyond its configuration.
#[derive(Clone, Debug, Default)]
pub struct LmTrainOptions {
    /// Continue from the run directory's checkpoint.
    pub resume: bool,
    /// Where the model trains.
    pub device: Device,
}

/// The outcome of [`train_lm`].
pub struct LmTrainReport {
    /// Per-epoch logs.
    pub epochs: Vec<LmEpochLog>,
    /// The trained model (last weights).
    pub model: TransformerLm,
    /// The tokenizer.
    pub tokenizer: LmTokenizer,
    /// The configuration with `vocab_size` filled in.
    pub config: LmRunConfig,
}

/// Trains a Transformer LM on the lines of `text` (see the module docs) into `run_dir`.
pub fn train_lm(
    cfg: &LmRunConfig,
    text: &[PathBuf],
    run_dir: &Path,
    opts: &LmTrainOptions,
    mut observer: impl FnMut(&LmEvent),
) -> Result<LmTrainReport> {
    const OP: &str = "train_lm";
    if text.is_empty() {
        return Err(Error::invalid(OP, "no text files given"));
    }
    let mut cfg = cfg.clone();
    cfg.validate()?;
    let ck_path = run_dir.join("checkpoint.safetensors");
    let (tok, resume_from) = if opts.resume {
        if !ck_path.is_file() {
            return Err(Error::io(OP, &ck_path, "nothing to resume from: no checkpoint in the run directory"));
        }
        (LmTokenizer::load(&run_dir.join("tokenizer.json"))?, Some(Checkpoint::load(&ck_path)?))
    } else {
        (build_tokenizer(text, &cfg.tokenizer)?, None)
    };
    cfg.model.vocab_size = tok.vocab_size();
    cfg.model.validate()?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(OP, run_dir, e))?;
    write_atomic(run_dir.join("config.toml"), cfg.to_toml_string()?.as_bytes())?;
    tok.save(&run_dir.join("tokenizer.json"))?;

    let tc = cfg.training.clone();
    stapes_tensor::manual_seed(tc.seed);
    let model = TransformerLm::new(&cfg.model)?;
    let device = opts.device;
    model.to_device(&device)?;
    let mut sched = cfg.schedule.build()?;
    let mut opt = cfg.optimizer.build(model.parameters(), sched.lr())?;
    let mut scaler =
        GradScaler::new(GradScalerConfig { enabled: tc.precision == Precision::F16, ..GradScalerConfig::default() })?;
    let mut step = 0u64;
    let mut pos = LmPosition { epoch: 1, ..LmPosition::default() };
    if let Some(ck) = &resume_from {
        ck.restore(&ck_path, &model, opt.as_mut(), sched.as_mut(), &mut scaler)?;
        step = ck.step;
        pos = serde_json::from_value(ck.extra.clone())
            .map_err(|e| Error::io(OP, &ck_path, format!("corrupt position: {e}")))?;
        if pos.epoch_complete {
            pos = LmPosition {
                epoch: pos.epoch + 1,
                elapsed_s: pos.elapsed_s,
                best_ppl: pos.best_ppl,
                logs: std::mem::take(&mut pos.logs),
                ..LmPosition::default()
            };
        }
    }
    observer(&LmEvent::Start {
        parameters: model.num_parameters(),
        vocab_size: tok.vocab_size(),
        resumed: resume_from.as_ref().map(|_| (pos.epoch, pos.batches_done, step)),
    });
    let mut tb = if cfg.logging.tensorboard { Some(SummaryWriter::new(&run_dir.join("tensorboard"))?) } else { None };
    let amp = tc.precision.autocast_dtype();
    let every = dev_every(tc.dev_fraction);
    let session = Instant::now();
    let save = |pos: &LmPosition,
                step: u64,
                opt: &dyn stapes_nn::optim::Optimizer,
                sched: &dyn stapes_nn::schedule::LrSchedule,
                scaler: &GradScaler|
     -> Result<()> {
        let extra = serde_json::to_value(pos).map_err(|e| Error::invalid(OP, e.to_string()))?;
        Checkpoint::capture(&model, opt, sched, scaler, step, extra)?.save(&ck_path)
    };
    while pos.epoch <= tc.epochs {
        let epoch = pos.epoch;
        let t0 = Instant::now();
        let seconds_before = pos.epoch_seconds;
        model.train(true);
        let mut g = Generator::new(tc.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut batch: Vec<Vec<i64>> = Vec::with_capacity(tc.batch_size);
        let mut index = 0usize;
        let mut failure = None;
        blocks(text, &tok, false, every, tc.seq_len + 1, Some((tc.shuffle_blocks, &mut g)), |b| {
            batch.push(b);
            if batch.len() < tc.batch_size {
                return Ok(true);
            }
            let this = std::mem::take(&mut batch);
            index += 1;
            if index <= pos.batches_done {
                return Ok(true); // resumed: this batch was trained before the checkpoint
            }
            let (x, y) = batch_tensors(&this)?;
            let n_tok = y.to_vec::<i64>()?.iter().filter(|&&t| t != -100).count();
            opt.zero_grad();
            let x = x.to_device(&device)?;
            let fwd = || batch_loss(&model, &x, &y, &device);
            let loss = match amp {
                Some(dt) => autocast(dt, fwd)??,
                None => fwd()?,
            };
            let l = loss.tensor().to_scalar_f64()?;
            if !l.is_finite() && !scaler.is_enabled() {
                failure = Some(Error::invalid(OP, format!("the loss became {l} at step {step} (epoch {epoch})")));
                return Ok(false);
            }
            let (lr, _) =
                crate::train::backward_and_step(&loss, opt.as_mut(), sched.as_mut(), &mut scaler, tc.clip_norm)?;
            step += 1;
            pos.batches_done += 1;
            if l.is_finite() {
                pos.loss_sum += l;
                pos.n_loss += 1;
            }
            pos.tokens += n_tok;
            let secs = seconds_before + t0.elapsed().as_secs_f64();
            let tps = pos.tokens as f64 / secs.max(1e-9);
            if let Some(w) = tb.as_mut() {
                if step.is_multiple_of(cfg.logging.scalars_every_steps.max(1) as u64) {
                    w.add_scalar("lm/loss", l, step as i64)?;
                    w.add_scalar("lm/lr", lr, step as i64)?;
                    w.add_scalar("lm/tokens_per_s", tps, step as i64)?;
                }
            }
            observer(&LmEvent::Step { epoch, step, loss: l, lr, tokens_per_s: tps });
            if tc.checkpoint_every_steps > 0 && step.is_multiple_of(tc.checkpoint_every_steps as u64) {
                let p = LmPosition {
                    epoch_seconds: secs,
                    elapsed_s: pos.elapsed_s + t0.elapsed().as_secs_f64(),
                    ..pos.clone()
                };
                save(&p, step, opt.as_ref(), sched.as_ref(), &scaler)?;
            }
            Ok(true)
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        // the last partial batch of the epoch is dropped (every batch has batch_size blocks)
        let epoch_secs = seconds_before + t0.elapsed().as_secs_f64();
        pos.elapsed_s += t0.elapsed().as_secs_f64();
        let (ppl, _) = perplexity(&model, &tok, text, Some(tc.dev_fraction), tc.seq_len, tc.batch_size)?;
        let log = LmEpochLog {
            epoch,
            step,
            train_loss: pos.loss_sum / pos.n_loss.max(1) as f64,
            dev_perplexity: ppl,
            tokens_per_s: pos.tokens as f64 / epoch_secs.max(1e-9),
            elapsed_s: pos.elapsed_s,
        };
        if pos.best_ppl.is_none_or(|b| ppl < b) {
            pos.best_ppl = Some(ppl);
            save_module(run_dir.join("best_model.safetensors"), &model)?;
        }
        pos.logs.push(log.clone());
        pos.epoch_complete = true;
        pos.epoch_seconds = epoch_secs;
        save(&pos, step, opt.as_ref(), sched.as_ref(), &scaler)?;
        let lines: String = pos.logs.iter().map(|l| serde_json::to_string(l).unwrap_or_default() + "\n").collect();
        write_atomic(run_dir.join("log.jsonl"), lines.as_bytes())?;
        if let Some(w) = tb.as_mut() {
            w.add_scalar("lm/dev_perplexity", ppl, step as i64)?;
            w.flush()?;
        }
        observer(&LmEvent::EpochEnd(log));
        pos = LmPosition {
            epoch: epoch + 1,
            elapsed_s: pos.elapsed_s,
            best_ppl: pos.best_ppl,
            logs: std::mem::take(&mut pos.logs),
            ..LmPosition::default()
        };
        if session.elapsed().as_secs_f64() >= tc.max_seconds.unwrap_or(f64::INFINITY) {
            break;
        }
    }
    model.eval();
    Ok(LmTrainReport { epochs: pos.logs, model, tokenizer: tok, config: cfg })
}

/// A trained LM loaded back from its run directory.
pub struct LoadedLm {
    /// The run's configuration.
    pub config: LmRunConfig,
    /// Its tokenizer.
    pub tokenizer: LmTokenizer,
    /// The model (best weights, else the checkpoint's), in eval mode.
    pub model: TransformerLm,
}

/// Loads `config.toml`, `tokenizer.json` and the best model (or the checkpoint's) of an LM run.
pub fn load_lm_run(run_dir: &Path) -> Result<LoadedLm> {
    const OP: &str = "load_lm_run";
    if !run_dir.is_dir() {
        return Err(Error::io(OP, run_dir, "not a directory (expected a run directory of `stapes lm train`)"));
    }
    let config = LmRunConfig::from_toml_file(run_dir.join("config.toml"))?;
    let tokenizer = LmTokenizer::load(&run_dir.join("tokenizer.json"))?;
    if config.model.vocab_size != tokenizer.vocab_size() {
        return Err(Error::io(
            OP,
            run_dir,
            format!("config.toml says {} ids, tokenizer.json has {}", config.model.vocab_size, tokenizer.vocab_size()),
        ));
    }
    let model = TransformerLm::new(&config.model)?;
    let best = run_dir.join("best_model.safetensors");
    if best.is_file() {
        stapes_nn::checkpoint::load_module(&best, &model, true)?;
    } else {
        let ck = Checkpoint::load(run_dir.join("checkpoint.safetensors"))?;
        model.load_state_dict(&ck.model, true).map_err(|e| Error::io(OP, run_dir, e.to_string()))?;
    }
    model.eval();
    Ok(LoadedLm { config, tokenizer, model })
}

/// Generates up to `max_tokens` tokens after `<s> prompt` with the KV cache, sampling at
/// `temperature` (0: greedy), stopping at `</s>`. Returns the generated ids.
pub fn sample(
    model: &TransformerLm,
    tok: &LmTokenizer,
    prompt: &str,
    max_tokens: usize,
    temperature: f64,
    g: &mut Generator,
) -> Result<Vec<i64>> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(Error::invalid("sample", format!("temperature must be finite and >= 0, got {temperature}")));
    }
    let mut ids = vec![BOS];
    ids.extend(tok.encode(prompt));
    let mut state: LmState = model.empty_state();
    let mut lp = None;
    for &t in &ids {
        let (l, mut s) = model.step(&[&state], &[t])?;
        state = s.pop().expect("one state");
        lp = Some(l);
    }
    let mut out = Vec::new();
    for _ in 0..max_tokens {
        if state.len() >= model.config().max_len {
            break;
        }
        let l = lp.take().expect("a distribution").to_vec::<f32>()?;
        let next = if temperature == 0.0 {
            l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
        } else {
            let w: Vec<f64> = l.iter().map(|&v| (f64::from(v) / temperature).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut u = g.next_f64() * total;
            let mut pick = w.len() - 1;
            for (i, &p) in w.iter().enumerate() {
                if u < p {
                    pick = i;
                    break;
                }
                u -= p;
            }
            pick
        } as i64;
        if next == EOS {
            break;
        }
        out.push(next);
        let (l, mut s) = model.step(&[&state], &[next])?;
        state = s.pop().expect("one state");
        lp = Some(l);
    }
    Ok(out)
}
