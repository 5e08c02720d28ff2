//! CTC prefix beam search with optional shallow fusion of a word n-gram language model, with
//! pyctcdecode's parameters and scoring.
//!
//! **Search.** Each hypothesis is a label prefix (the collapsed output so far) with two
//! log-probabilities: of all alignments of the frames so far that collapse to it and end in a
//! blank (`p_b`), and of those that end in its last label (`p_nb`). Per frame, every kept prefix
//! is extended by each candidate class: a blank keeps the prefix (`p_b += p_b + p_nb`); its last
//! label repeated keeps it too (`p_nb += p_nb`) and only extends it after a blank
//! (`prefix+c`'s `p_nb += p_b`); another label extends it (`p_nb += p_b + p_nb`). Paths that
//! reach the same prefix are summed (prefixes live in a trie, so equal prefixes are one node).
//! Prefixes are transcripts, as in pyctcdecode: a word delimiter at the start, after another
//! delimiter or at the end does not make a new hypothesis (the labellings `"a b"`, `" a  b "`
//! are one transcript, and their probabilities are summed). Without pruning this computes the
//! exact CTC probability of every transcript, the sum over all alignments that collapse to one
//! of its labellings (Graves 2012, Hannun et al. 2014).
//!
//! **Pruning** (pyctcdecode's defaults): per frame only classes with log-prob at least
//! `token_min_logp` (and always the frame's arg-max) extend prefixes; prefixes scoring more than
//! `-beam_prune_logp` below the best are dropped; then the best `beam_width` are kept.
//!
//! **Language model.** The score that ranks prefixes is `ln p_ctc(prefix) + lm(prefix)` with
//!
//! ```text
//! lm(prefix) = Σ over completed words w_i of  alpha * ln p_lm(w_i | w_<i) + beta
//!            + partial-word penalty (0 when some LM word starts with the partial word)
//! ```
//!
//! A word completes when the word delimiter (a space) follows it, and at the end of the
//! utterance, where `</s>` is scored too (`score_boundary`). A word the LM does not know is
//! scored as `<unk>` plus `unk_score_offset` (log10, -10 by default), so it costs
//! `alpha * ln(10) * (log10 p(<unk> | history) + unk_score_offset) + beta`. A partial word that
//! no LM word starts with costs `alpha * unk_score_offset` (natural log), scaled up by `len / 6`
//! past 6 characters, as pyctcdecode charges it. (pyctcdecode does not scale this penalty by
//! `alpha`; here it is scaled, so that `alpha = beta = 0` decodes exactly as without a language
//! model; at `alpha = 1` the two agree.)
//!
//! Unpruned, the scores of every transcript equal pyctcdecode 0.5.0's with kenlm (checked in
//! `tests/speech_decode.rs`), with two differences. pyctcdecode keeps "prefix ending in a
//! blank" and "prefix ending in its last label" as two separate beams that compete for the
//! `beam_width` slots and are pruned apart, which makes a width-1 search the same as greedy
//! decoding; here they are the two halves of one prefix, ranked by their sum (the standard
//! prefix search), so a search of the same width keeps more prefixes, and a width-1 search can
//! differ from greedy when a prefix's alignments together outweigh the best path's. And
//! pyctcdecode scores an empty string as an unknown last word for transcripts whose kept beam
//! ends in a delimiter (and for the empty transcript); here a transcript's LM score depends on
//! its words only.

use std::sync::Arc;

use rayon::prelude::*;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

use crate::data::Vocab;
use crate::lm::{NgramLm, WordId, WordPrefixTrie, BOS, EOS};
use crate::lm_train::LmTokenizer;
use crate::nnlm::{LmState, TransformerLm};

/// Characters past which a partial word unknown to the LM costs proportionally more
/// (pyctcdecode's `AVG_TOKEN_LEN`).
const AVG_WORD_LEN: usize = 6;

/// Parameters of [`beam_search_decode`]. The defaults are pyctcdecode's.
#[derive(Clone, Debug)]
pub struct BeamSearchConfig {
    /// Prefixes kept after each frame (default 100).
    pub beam_width: usize,
    /// Prefixes scoring this far below the best (natural log, `<= 0`) are dropped after each
    /// frame and at the end (default -10).
    pub beam_prune_logp: f64,
    /// Per frame, classes with a log-probability below this do not extend prefixes, except the
    /// frame's arg-max (default -5).
    pub token_min_logp: f64,
    /// After each frame, of prefixes sharing their last `max(1, order - 1)` words, partial word
    /// and last label (so that the LM scores them the same from now on), keep only the best
    /// (default false; it costs n-best diversity and speeds up the search).
    pub prune_history: bool,
    /// The word language model for shallow fusion; `None` decodes on the acoustic scores
    /// alone (and ignores `alpha`, `beta`, `unk_score_offset` and `score_boundary`).
    pub lm: Option<Arc<NgramLm>>,
    /// Weight of the LM's natural-log probability (default 0.5).
    pub alpha: f64,
    /// Bonus per word scored by the LM, against the LM's bias to short outputs (default 1.5).
    pub beta: f64,
    /// Added (log10, before `alpha`) to the LM score of a word the LM does not know; a partial
    /// word that no LM word starts with costs `alpha * unk_score_offset` (natural log)
    /// (default -10).
    pub unk_score_offset: f64,
    /// Score the first word after `<s>` and score `</s>` at the end (default true); false
    /// scores the first word with no context and no `</s>`.
    pub score_boundary: bool,
    /// The character that separates words (default ' '). A vocabulary without it decodes as
    /// one word.
    pub word_delimiter: char,
    /// A neural character LM fused into the search (shallow fusion), beside or instead of the
    /// n-gram `lm`; `None` by default.
    pub nnlm: Option<Arc<NeuralLm>>,
}

/// A Transformer LM over characters for shallow fusion: every extension of a prefix by a
/// character `c` adds `weight * ln p_lm(c | prefix)`, every completed word `word_bonus`, and
/// the end of the transcript `weight * ln p_lm(</s> | transcript)`. The LM sees the transcript
/// as the search builds it (`<s>`, then the characters with single spaces between words).
/// The prefixes that survived pruning and are new are fed to the LM in one batched
/// [`TransformerLm::step`] over cached keys and values, on the next frame where some prefix may
/// grow (frames where only the blank is a candidate need no LM step). A prefix as long as the LM's `max_len`
/// continues from its last `max_len / 2` characters.
pub struct NeuralLm {
    /// The model (eval mode).
    pub model: Arc<TransformerLm>,
    /// Its tokenizer; it must have every character of the acoustic vocabulary.
    pub tokenizer: Arc<LmTokenizer>,
    /// Weight of the LM's natural-log probabilities.
    pub weight: f64,
    /// Bonus per word.
    pub word_bonus: f64,
}

impl std::fmt::Debug for NeuralLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NeuralLm {{ weight: {}, word_bonus: {} }}", self.weight, self.word_bonus)
    }
}

impl NeuralLm {
    /// The LM id of each acoustic class (index 0, the blank, unused); an error naming the
    /// first character the LM's tokenizer cannot express.
    pub fn class_ids(&self, vocab: &Vocab) -> Result<Vec<i64>> {
        if !self.tokenizer.is_chars() {
            return Err(Error::invalid(
                "NeuralLm",
                format!(
                    "shallow fusion scores the beam's characters and needs a character LM; this one is {:?} (use it \
                     to rescore the n-best list)",
                    self.tokenizer.kind
                ),
            ));
        }
        let mut ids = vec![-1];
        for &c in vocab.chars() {
            // a checkpoint's special tokens (private-use characters of `CtcVocab::char_vocab`)
            // are the LM's unknown token
            if ('\u{E000}'..='\u{F8FF}').contains(&c) {
                ids.push(crate::lm_train::UNK);
                continue;
            }
            let id = self.tokenizer.id(c).ok_or_else(|| {
                Error::invalid(
                    "NeuralLm",
                    format!(
                        "the LM's vocabulary cannot express the acoustic model's symbol {c:?} (LM characters {:?})",
                        self.tokenizer.chars
                    ),
                )
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Rescores an n-best list: each hypothesis' `lm_score` gains `weight * ln p_lm(<s> text
    /// </s>) + word_bonus * words`, and `score = acoustic_score + lm_score`; re-sorted best
    /// first. One batched LM pass.
    pub fn rescore(&self, hyps: &mut [Hypothesis]) -> Result<()> {
        if hyps.is_empty() {
            return Ok(());
        }
        let seqs: Vec<Vec<i64>> = hyps.iter().map(|h| self.tokenizer.encode_sentence(&h.text)).collect();
        let lp = self.model.sequence_log_probs(&seqs)?;
        for (h, l) in hyps.iter_mut().zip(lp) {
            let words = h.text.split_whitespace().count() as f64;
            h.lm_score += self.weight * l + self.word_bonus * words;
            h.score = h.acoustic_score + h.lm_score;
        }
        hyps.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if !self.weight.is_finite() || !self.word_bonus.is_finite() {
            return Err(Error::invalid(
                "NeuralLm",
                format!("weight ({}) and word_bonus ({}) must be finite", self.weight, self.word_bonus),
            ));
        }
        Ok(())
    }
}

impl Default for BeamSearchConfig {
    fn default() -> Self {
        BeamSearchConfig {
            beam_width: 100,
            beam_prune_logp: -10.0,
            token_min_logp: -5.0,
            prune_history: false,
            lm: None,
            alpha: 0.5,
            beta: 1.5,
            unk_score_offset: -10.0,
            score_boundary: true,
            word_delimiter: ' ',
            nnlm: None,
        }
    }
}

impl BeamSearchConfig {
    /// Checks the parameters (no NaN, a positive width, a non-positive pruning threshold).
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "BeamSearchConfig";
        if self.beam_width == 0 {
            return Err(Error::invalid(OP, "beam_width must be at least 1"));
        }
        if self.beam_prune_logp.is_nan() || self.beam_prune_logp > 0.0 {
            return Err(Error::invalid(OP, format!("beam_prune_logp must be <= 0, got {}", self.beam_prune_logp)));
        }
        for (name, v) in [
            ("token_min_logp", self.token_min_logp),
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("unk_score_offset", self.unk_score_offset),
        ] {
            if v.is_nan() {
                return Err(Error::invalid(OP, format!("{name} is NaN")));
            }
        }
        if let Some(n) = &self.nnlm {
            n.validate()?;
        }
        if !self.alpha.is_finite() || !self.beta.is_finite() || !self.unk_score_offset.is_finite() {
            return Err(Error::invalid(
                OP,
                format!(
                    "alpha ({}), beta ({}) and unk_score_offset ({}) must be finite",
                    self.alpha, self.beta, self.unk_score_offset
                ),
            ));
        }
        Ok(())
    }
}

/// One decoded hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// The labelling: class ids with repeats merged and blanks removed (as
    /// [`crate::decode::collapse`] gives), in canonical form: no delimiter at the start or the
    /// end, none twice in a row (it stands for every labelling of the same words).
    pub tokens: Vec<usize>,
    /// Its text: the words separated by single spaces.
    pub text: String,
    /// The score that ranks hypotheses: `acoustic_score + lm_score`.
    pub score: f64,
    /// `ln p_ctc(words | frames)`: the log of the summed probability of the kept alignments of
    /// the transcript (all of them when nothing was pruned).
    pub acoustic_score: f64,
    /// The language model's part of the score (natural log, `alpha`, `beta` and the
    /// unknown-word offsets included; 0 without an LM).
    pub lm_score: f64,
}

/// CTC prefix beam search over one utterance: `log_probs` is `[t, c]` row-major,
/// log-probabilities (a log-softmax over the `c` classes of `vocab`, blank at 0). Returns up
/// to `beam_width` hypotheses, best first.
pub fn beam_search_decode(
    log_probs: &[f32],
    t: usize,
    c: usize,
    vocab: &Vocab,
    config: &BeamSearchConfig,
) -> Result<Vec<Hypothesis>> {
    search_utterance(log_probs, t, c, vocab, config, NN_KEEP_UPDATES).map(|(h, _)| h)
}

/// [`beam_search_decode`] with the neural LM's caches kept `nn_keep` updates after their
/// prefixes leave the beam; also returns how many caches had to be rebuilt.
fn search_utterance(
    log_probs: &[f32],
    t: usize,
    c: usize,
    vocab: &Vocab,
    config: &BeamSearchConfig,
    nn_keep: u32,
) -> Result<(Vec<Hypothesis>, usize)> {
    const OP: &str = "beam_search_decode";
    config.validate()?;
    check_log_probs(OP, log_probs, t, c, vocab)?;
    let mut search = Search::new(vocab, config);
    search.nn_keep = nn_keep;
    search.start_nn(vocab)?;
    let mut beams = vec![Search::root_beam()];
    let mut candidates = Vec::with_capacity(c);
    for frame in log_probs.chunks_exact(c) {
        frame_candidates(frame, config, &mut candidates);
        beams = search.step(&beams, frame, &candidates)?;
    }
    Ok((search.finish(&beams)?, search.nn_rebuilt))
}

/// Checks one utterance's `[t, c]` log-probabilities against the vocabulary: sizes, no NaN, no
/// `+inf`.
fn check_log_probs(op: &'static str, log_probs: &[f32], t: usize, c: usize, vocab: &Vocab) -> Result<()> {
    if c != vocab.len() {
        return Err(Error::invalid(op, format!("{c} classes for a vocabulary of {}", vocab.len())));
    }
    if t.checked_mul(c) != Some(log_probs.len()) {
        return Err(Error::shape(op, format!("{} log-probs are not [T={t}, C={c}]", log_probs.len())));
    }
    if let Some(i) = log_probs.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
        return Err(Error::invalid(op, format!("log-prob {} at frame {}, class {}", log_probs[i], i / c, i % c)));
    }
    Ok(())
}

/// The classes a frame may extend the beams with: the most probable one and every class at
/// least `token_min_logp`.
fn frame_candidates(frame: &[f32], config: &BeamSearchConfig, candidates: &mut Vec<usize>) {
    candidates.clear();
    let c = frame.len();
    let argmax = (0..c).fold(0, |best, i| if frame[i] > frame[best] { i } else { best });
    candidates.extend((0..c).filter(|&i| i == argmax || f64::from(frame[i]) >= config.token_min_logp));
}

/// Beam search over a batch `[B, T, C]` (batch-first) or `[T, B, C]` of log-probabilities with
/// per-utterance frame counts, in parallel over the batch. Returns each utterance's
/// hypotheses, best first.
pub fn beam_search_decode_batch(
    log_probs: &Tensor,
    lengths: &[usize],
    batch_first: bool,
    vocab: &Vocab,
    config: &BeamSearchConfig,
) -> Result<Vec<Vec<Hypothesis>>> {
    const OP: &str = "beam_search_decode_batch";
    let d = log_probs.dims();
    if d.len() != 3 {
        return Err(Error::shape(OP, format!("expects a 3-D tensor, got {d:?}")));
    }
    let bt = if batch_first { log_probs.clone() } else { log_probs.transpose(0usize, 1usize)? };
    let (b, t, c) = (bt.dims()[0], bt.dims()[1], bt.dims()[2]);
    if lengths.len() != b {
        return Err(Error::invalid(OP, format!("{} lengths for a batch of {b}", lengths.len())));
    }
    if let Some((i, &l)) = lengths.iter().enumerate().find(|(_, &l)| l > t) {
        return Err(Error::invalid(OP, format!("length {l} of utterance {i} exceeds the {t} frames")));
    }
    let data = bt.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let utt = |i: usize| &data[i * t * c..i * t * c + lengths[i] * c];
    (0..b).into_par_iter().map(|i| beam_search_decode(utt(i), lengths[i], c, vocab, config)).collect()
}

// ------------------------------------------------------------------------------------------------
// The search
// ------------------------------------------------------------------------------------------------

const ROOT: u32 = 0;
const NO_TOKEN: u32 = u32::MAX;

/// `ln(e^a + e^b)`, exact for infinities.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// A kept prefix and its alignment log-probabilities.
#[derive(Clone, Copy, Debug)]
struct Beam {
    node: u32,
    p_b: f64,
    p_nb: f64,
    /// `ln(p_b + p_nb)` plus the node's LM score (set when ranked).
    score: f64,
    /// The LM's part of `score` (set at the end).
    lm_score: f64,
}

/// A node of the prefix trie: a label prefix and the LM's view of it.
struct Node {
    parent: u32,
    token: u32,
    children: Vec<(u32, u32)>,
    /// The LM context after the completed words (index into `Search::contexts`).
    context: u32,
    /// LM score of the completed words.
    words_score: f64,
    /// Characters in the current partial word.
    partial_len: u32,
    /// The LM word trie's node of the partial word; `None` when no LM word starts with it.
    partial_trie: Option<u32>,
    /// The penalty of the partial word (0 or the unknown-prefix penalty).
    partial_score: f64,
    /// The neural LM's score of the prefix (0 without one).
    nn_score: f64,
    /// The neural LM's entry of the prefix in `Search::nn` (`NO_ENTRY` until computed).
    nn: u32,
}

const NO_ENTRY: u32 = u32::MAX;

/// The neural LM's view of a prefix: its next-character log-probabilities and, while the
/// prefix is in the beam or left it recently, its cached keys and values.
struct NnEntry {
    node: u32,
    logp: Vec<f32>,
    state: Option<LmState>,
    /// The LM update at which the prefix was last in the beam.
    seen: u32,
}

/// LM updates (frames on which some prefix may grow) for which a prefix that left the beam
/// keeps its cached keys and values. Prefixes often come back within a few frames (an
/// alignment of the same labels overtakes again); each that comes back without its cache
/// must have it rebuilt, one token at a time. A state costs little (its keys and values are
/// shared with the prefixes it was extended from, and it adds one token's), so keeping it a
/// while is cheaper than rebuilding it.
const NN_KEEP_UPDATES: u32 = 32;

struct Search<'a> {
    config: &'a BeamSearchConfig,
    lm: Option<&'a NgramLm>,
    chars: &'a [char],
    delimiter: Option<u32>,
    nodes: Vec<Node>,
    /// LM contexts (the last `order - 1` word ids), shared by the nodes of one word.
    contexts: Vec<Vec<WordId>>,
    /// Per node: the frame stamp and the index of its beam in the frame being built.
    slot: Vec<(u32, u32)>,
    stamp: u32,
    nnlm: Option<&'a NeuralLm>,
    /// LM ids of the acoustic classes.
    nn_ids: Vec<i64>,
    nn: Vec<NnEntry>,
    /// The entries that still hold a state.
    nn_live: Vec<u32>,
    /// LM updates so far.
    nn_updates: u32,
    /// LM updates for which a prefix out of the beam keeps its cache.
    nn_keep: u32,
    /// Caches rebuilt (prefixes that came back after theirs was dropped).
    nn_rebuilt: usize,
}

impl<'a> Search<'a> {
    fn new(vocab: &'a Vocab, config: &'a BeamSearchConfig) -> Self {
        let lm = config.lm.as_deref();
        let chars = vocab.chars();
        let delimiter = chars.iter().position(|&ch| ch == config.word_delimiter).map(|i| i as u32 + 1);
        let start_context = match lm {
            Some(lm) if config.score_boundary && lm.contains(BOS) => vec![lm.word_id(BOS)],
            _ => vec![],
        };
        let root = Node {
            parent: ROOT,
            token: NO_TOKEN,
            children: vec![],
            context: 0,
            words_score: 0.0,
            partial_len: 0,
            partial_trie: Some(WordPrefixTrie::ROOT),
            partial_score: 0.0,
            nn_score: 0.0,
            nn: NO_ENTRY,
        };
        Search {
            config,
            lm,
            chars,
            delimiter,
            nodes: vec![root],
            contexts: vec![start_context],
            slot: vec![],
            stamp: 0,
            nnlm: config.nnlm.as_deref(),
            nn_ids: vec![],
            nn: vec![],
            nn_live: vec![],
            nn_updates: 0,
            nn_keep: NN_KEEP_UPDATES,
            nn_rebuilt: 0,
        }
    }

    /// The beam of the empty prefix.
    fn root_beam() -> Beam {
        Beam { node: ROOT, p_b: 0.0, p_nb: f64::NEG_INFINITY, score: 0.0, lm_score: 0.0 }
    }

    /// Maps the classes to the neural LM's ids and feeds it `<s>` (the root's distribution).
    fn start_nn(&mut self, vocab: &Vocab) -> Result<()> {
        let Some(n) = self.nnlm else { return Ok(()) };
        self.nn_ids = n.class_ids(vocab)?;
        let (lp, mut st) = n.model.step(&[&n.model.empty_state()], &[crate::lm_train::BOS])?;
        self.nn.push(NnEntry { node: ROOT, logp: lp.to_vec::<f32>()?, state: st.pop(), seen: 0 });
        self.nodes[ROOT as usize].nn = 0;
        Ok(())
    }

    /// The cached state of `node`'s prefix, rebuilt from the nearest ancestor that still has one
    /// when it was dropped (the node left the beam and came back).
    fn nn_state(&mut self, node: u32) -> Result<LmState> {
        let n = self.nnlm.expect("a neural LM");
        let e = self.nodes[node as usize].nn;
        if let Some(s) = self.nn.get(e as usize).and_then(|e| e.state.clone()) {
            return Ok(s);
        }
        let parent = self.nodes[node as usize].parent;
        let ps = self.nn_state(parent)?;
        let tok = self.nn_ids[self.nodes[node as usize].token as usize];
        let (_, mut st) = n.model.step(&[&ps], &[tok])?;
        let st = st.pop().expect("one state");
        self.nn_rebuilt += 1;
        if let Some(entry) = self.nn.get_mut(e as usize) {
            entry.state = Some(st.clone());
            entry.seen = self.nn_updates;
            self.nn_live.push(e);
        }
        Ok(st)
    }

    /// The LM state of the last `window` characters of `node`'s prefix alone (without `<s>`):
    /// the context kept when a prefix outgrows the LM's `max_len`.
    fn window_state(&self, node: u32, window: usize) -> Result<LmState> {
        let n = self.nnlm.expect("a neural LM");
        let tokens = self.tokens(node);
        let mut st = n.model.empty_state();
        for &t in &tokens[tokens.len().saturating_sub(window.max(1))..] {
            st = n.model.step(&[&st], &[self.nn_ids[t]])?.1.pop().expect("one state");
        }
        Ok(st)
    }

    /// Gives every kept prefix its LM distribution (one batched step for the new ones), and
    /// drops the cached keys and values of prefixes that left the beam.
    fn update_nn(&mut self, kept: &[Beam]) -> Result<()> {
        let Some(n) = self.nnlm else { return Ok(()) };
        let need = self.nn_requests(kept)?;
        if !need.is_empty() {
            let refs: Vec<&LmState> = need.iter().map(|r| &r.1).collect();
            let toks: Vec<i64> = need.iter().map(|r| r.2).collect();
            let (lp, states) = n.model.step(&refs, &toks)?;
            let lp = lp.to_vec::<f32>()?;
            let v = lp.len() / need.len();
            for (k, (r, st)) in need.iter().zip(states).enumerate() {
                self.nn_store(r.0, lp[k * v..(k + 1) * v].to_vec(), st);
            }
        }
        // the caches of prefixes out of the beam for NN_KEEP_UPDATES updates are dropped
        self.nn_updates += 1;
        let now = self.nn_updates;
        for b in kept {
            if let Some(e) = self.nn.get_mut(self.nodes[b.node as usize].nn as usize) {
                e.seen = now;
            }
        }
        let nn = &mut self.nn;
        self.nn_live.retain(|&i| {
            let e = &mut nn[i as usize];
            let keep = e.node == ROOT || now - e.seen <= self.nn_keep;
            if !keep {
                e.state = None;
            }
            keep
        });
        Ok(())
    }

    /// What the LM must compute for the kept prefixes that have no distribution yet: each one's
    /// node, its parent's state and its last token (sorted by node, without repeats).
    fn nn_requests(&mut self, kept: &[Beam]) -> Result<Vec<(u32, LmState, i64)>> {
        let Some(n) = self.nnlm else { return Ok(vec![]) };
        let mut need: Vec<u32> =
            kept.iter().map(|b| b.node).filter(|&b| self.nodes[b as usize].nn == NO_ENTRY).collect();
        need.sort_unstable();
        need.dedup();
        let max_len = n.model.config().max_len;
        need.into_iter()
            .map(|b| {
                let parent = self.nodes[b as usize].parent;
                let mut p = self.nn_state(parent)?;
                // a prefix as long as the LM's context continues from its last max_len / 2 tokens
                if p.len() + 1 >= max_len {
                    p = self.window_state(parent, max_len / 2)?;
                }
                Ok((b, p, self.nn_ids[self.nodes[b as usize].token as usize]))
            })
            .collect()
    }

    /// Records the LM's next-token log-probabilities and state for `node`'s prefix.
    fn nn_store(&mut self, node: u32, logp: Vec<f32>, state: LmState) {
        self.nodes[node as usize].nn = self.nn.len() as u32;
        self.nn_live.push(self.nn.len() as u32);
        self.nn.push(NnEntry { node, logp, state: Some(state), seen: self.nn_updates });
    }

    /// `alpha * ln(10) * log10_prob`, with `alpha = 0` giving 0 even for a -inf probability.
    fn weighted(&self, log10_prob: f64) -> f64 {
        if self.config.alpha == 0.0 {
            0.0
        } else {
            self.config.alpha * std::f64::consts::LN_10 * log10_prob
        }
    }

    /// The fused score of `word` after `context` (`None`: a word the LM does not know), and
    /// the context after it.
    fn score_word(&self, lm: &NgramLm, context: &[WordId], word: Option<WordId>) -> (f64, Vec<WordId>) {
        let id = word.unwrap_or_else(|| lm.unknown_id());
        let mut log10_prob = f64::from(lm.log10_prob_ids(context, id));
        if word.is_none() {
            log10_prob += self.config.unk_score_offset;
        }
        let keep = lm.order().saturating_sub(1);
        let mut next: Vec<WordId> = context.iter().copied().chain(std::iter::once(id)).collect();
        next.drain(..next.len().saturating_sub(keep));
        (self.weighted(log10_prob) + self.config.beta, next)
    }

    /// The node of `prefix(parent) + token`, created with its LM state on first use.
    fn child(&mut self, parent: u32, token: u32) -> u32 {
        let p = &self.nodes[parent as usize];
        if let Some(&(_, n)) = p.children.iter().find(|&&(tok, _)| tok == token) {
            return n;
        }
        let nn_score = match self.nnlm {
            Some(n) => {
                let lp = self
                    .nn
                    .get(p.nn as usize)
                    .map_or(f32::NEG_INFINITY, |e| e.logp[self.nn_ids[token as usize] as usize]);
                let bonus = if Some(token) == self.delimiter { n.word_bonus } else { 0.0 };
                p.nn_score + n.weight * f64::from(lp) + bonus
            }
            None => 0.0,
        };
        let mut node = Node {
            parent,
            token,
            children: vec![],
            context: p.context,
            words_score: p.words_score,
            partial_len: p.partial_len,
            partial_trie: p.partial_trie,
            partial_score: p.partial_score,
            nn_score,
            nn: NO_ENTRY,
        };
        if let Some(lm) = self.lm {
            if Some(token) == self.delimiter {
                if p.partial_len > 0 {
                    let word = p.partial_trie.and_then(|n| lm.word_trie().word(n));
                    let (s, next) = self.score_word(lm, &self.contexts[p.context as usize], word);
                    node.words_score += s;
                    node.context = self.contexts.len() as u32;
                    self.contexts.push(next);
                    node.partial_len = 0;
                    node.partial_trie = Some(WordPrefixTrie::ROOT);
                    node.partial_score = 0.0;
                }
            } else {
                let ch = self.chars[token as usize - 1];
                node.partial_len += 1;
                node.partial_trie = node.partial_trie.and_then(|n| lm.word_trie().child(n, ch));
                node.partial_score = if node.partial_trie.is_some() {
                    0.0
                } else {
                    let len = node.partial_len as usize;
                    let scale = if len > AVG_WORD_LEN { len as f64 / AVG_WORD_LEN as f64 } else { 1.0 };
                    self.config.alpha * self.config.unk_score_offset * scale
                };
            }
        }
        let n = self.nodes.len() as u32;
        self.nodes.push(node);
        self.nodes[parent as usize].children.push((token, n));
        n
    }

    /// Adds `(p_b, p_nb)` to `node`'s beam in `next`, creating it on first use.
    fn add(&mut self, next: &mut Vec<Beam>, node: u32, p_b: f64, p_nb: f64) {
        if p_b == f64::NEG_INFINITY && p_nb == f64::NEG_INFINITY {
            return;
        }
        if self.slot.len() < self.nodes.len() {
            self.slot.resize(self.nodes.len(), (u32::MAX, 0));
        }
        let (stamp, idx) = self.slot[node as usize];
        if stamp == self.stamp {
            let b = &mut next[idx as usize];
            b.p_b = log_add(b.p_b, p_b);
            b.p_nb = log_add(b.p_nb, p_nb);
        } else {
            self.slot[node as usize] = (self.stamp, next.len() as u32);
            next.push(Beam { node, p_b, p_nb, score: 0.0, lm_score: 0.0 });
        }
    }

    /// One frame: extends every beam by every candidate class, then ranks and prunes.
    fn step(&mut self, beams: &[Beam], frame: &[f32], candidates: &[usize]) -> Result<Vec<Beam>> {
        // The neural LM is asked only when a prefix may grow: on frames where the blank is the
        // only candidate (most CTC frames) nothing is extended and no LM step runs; the prefixes
        // that appeared since the last call are then fed to it together.
        if candidates.iter().any(|&c| c != 0) {
            self.update_nn(beams)?;
        }
        self.stamp = self.stamp.wrapping_add(1);
        let mut next = Vec::with_capacity(beams.len() * 2);
        for b in beams {
            let total = log_add(b.p_b, b.p_nb);
            let last = self.nodes[b.node as usize].token;
            for &class in candidates {
                let lp = f64::from(frame[class]);
                if class == 0 {
                    self.add(&mut next, b.node, total + lp, f64::NEG_INFINITY);
                } else if Some(class as u32) == self.delimiter && (b.node == ROOT || last == class as u32) {
                    // A delimiter at the start or after a delimiter leaves the words as they
                    // are: the prefix stays, now ending in the delimiter (repeat or new copy).
                    self.add(&mut next, b.node, f64::NEG_INFINITY, total + lp);
                } else if class as u32 == last {
                    // A repeat merges into the prefix; a new copy of the label needs a blank.
                    self.add(&mut next, b.node, f64::NEG_INFINITY, b.p_nb + lp);
                    if b.p_b > f64::NEG_INFINITY {
                        let child = self.child(b.node, class as u32);
                        self.add(&mut next, child, f64::NEG_INFINITY, b.p_b + lp);
                    }
                } else {
                    let child = self.child(b.node, class as u32);
                    self.add(&mut next, child, f64::NEG_INFINITY, total + lp);
                }
            }
        }
        for b in &mut next {
            let n = &self.nodes[b.node as usize];
            b.score = log_add(b.p_b, b.p_nb) + n.words_score + n.partial_score + n.nn_score;
        }
        let mut kept = self.prune(next);
        if self.config.prune_history {
            let n = self.lm.map_or(1, |lm| lm.order().saturating_sub(1).max(1));
            let mut seen = std::collections::HashSet::new();
            kept.retain(|b| seen.insert(self.history_key(b.node, n)));
        }
        Ok(kept)
    }

    /// Drops beams more than `-beam_prune_logp` below the best, sorts best first (ties by
    /// creation order, for determinism) and keeps `beam_width`.
    fn prune(&self, mut beams: Vec<Beam>) -> Vec<Beam> {
        let best = beams.iter().map(|b| b.score).fold(f64::NEG_INFINITY, f64::max);
        let floor = best + self.config.beam_prune_logp;
        if best > f64::NEG_INFINITY {
            beams.retain(|b| b.score >= floor);
        }
        beams.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.node.cmp(&b.node)));
        beams.truncate(self.config.beam_width);
        beams
    }

    /// What the LM can still tell apart: the last label, the partial word and the last `n`
    /// completed words (labels in reverse order, separated by `NO_TOKEN`).
    fn history_key(&self, node: u32, n: usize) -> Vec<u32> {
        let mut key = vec![self.nodes[node as usize].token, NO_TOKEN];
        let mut words = 0;
        let mut in_partial = true;
        let mut word_len = 0;
        let mut at = node;
        while at != ROOT {
            let tok = self.nodes[at as usize].token;
            if Some(tok) == self.delimiter {
                if in_partial {
                    in_partial = false;
                    key.push(NO_TOKEN);
                } else if word_len > 0 {
                    words += 1;
                    key.push(NO_TOKEN);
                    if words == n {
                        break;
                    }
                }
                word_len = 0;
            } else {
                key.push(tok);
                word_len += 1;
            }
            at = self.nodes[at as usize].parent;
        }
        if word_len > 0 && !in_partial {
            key.push(NO_TOKEN); // the first word ends at the start as at a delimiter
        }
        key
    }

    /// Merges each prefix ending in a delimiter with the same prefix without it (the same
    /// words), scores the last partial word and `</s>`, ranks and builds the hypotheses.
    fn finish(&mut self, beams: &[Beam]) -> Result<Vec<Hypothesis>> {
        let mut merged: Vec<Beam> = Vec::with_capacity(beams.len());
        let mut at: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for b in beams {
            let n = &self.nodes[b.node as usize];
            let node = if b.node != ROOT && Some(n.token) == self.delimiter { n.parent } else { b.node };
            let p = log_add(b.p_b, b.p_nb);
            match at.get(&node) {
                Some(&i) => merged[i].p_b = log_add(merged[i].p_b, p),
                None => {
                    at.insert(node, merged.len());
                    merged.push(Beam { node, p_b: p, p_nb: f64::NEG_INFINITY, score: 0.0, lm_score: 0.0 });
                }
            }
        }
        self.update_nn(&merged)?; // the distributions that score </s>
        for b in &mut merged {
            let n = &self.nodes[b.node as usize];
            let mut lm_score = n.words_score;
            if let Some(lm) = self.lm {
                let mut context = self.contexts[n.context as usize].clone();
                if n.partial_len > 0 {
                    let word = n.partial_trie.and_then(|t| lm.word_trie().word(t));
                    let (s, next) = self.score_word(lm, &context, word);
                    lm_score += s;
                    context = next;
                }
                if self.config.score_boundary && lm.contains(EOS) {
                    lm_score += self.weighted(f64::from(lm.log10_prob_ids(&context, lm.word_id(EOS))));
                }
            }
            if let Some(nl) = self.nnlm {
                lm_score += n.nn_score;
                if b.node != ROOT {
                    lm_score += nl.word_bonus; // the last word, ended by the end of the transcript
                }
                if let Some(e) = self.nn.get(n.nn as usize) {
                    lm_score += nl.weight * f64::from(e.logp[crate::lm_train::EOS as usize]);
                }
            }
            b.score = b.p_b + lm_score;
            b.lm_score = lm_score;
        }
        let kept = self.prune(merged);
        Ok(kept
            .iter()
            .map(|b| {
                let tokens = self.tokens(b.node);
                Hypothesis {
                    text: self.text(&tokens),
                    tokens,
                    score: b.score,
                    acoustic_score: b.p_b,
                    lm_score: b.lm_score,
                }
            })
            .collect())
    }

    /// The labels of `node`'s prefix, first to last.
    fn tokens(&self, mut node: u32) -> Vec<usize> {
        let mut out = vec![];
        while node != ROOT {
            out.push(self.nodes[node as usize].token as usize);
            node = self.nodes[node as usize].parent;
        }
        out.reverse();
        out
    }

    /// The words of `tokens`, separated by single spaces.
    fn text(&self, tokens: &[usize]) -> String {
        let mut words: Vec<String> = vec![String::new()];
        for &t in tokens {
            if Some(t as u32) == self.delimiter {
                words.push(String::new());
            } else {
                words.last_mut().expect("never empty").push(self.chars[t - 1]);
            }
        }
        words.retain(|w| !w.is_empty());
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::greedy_decode;

    fn vocab() -> Vocab {
        Vocab::new(" ab").unwrap()
    }

    fn ln(p: &[[f64; 4]]) -> Vec<f32> {
        p.iter().flatten().map(|&v| v.ln() as f32).collect()
    }

    /// Dropping the LM caches of prefixes that left the beam at once (and rebuilding them when
    /// a prefix comes back) finds the same hypotheses as never dropping them.
    #[test]
    fn dropped_lm_caches_are_rebuilt_to_the_same_search() {
        use crate::lm_train::LmTokenizer;
        use crate::nnlm::{TransformerLm, TransformerLmConfig};
        stapes_tensor::manual_seed(11);
        let tokenizer = LmTokenizer::chars(" ab", false).unwrap();
        let model = TransformerLm::new(&TransformerLmConfig {
            vocab_size: tokenizer.vocab_size(),
            d_model: 16,
            nhead: 2,
            num_layers: 1,
            dim_feedforward: 16,
            dropout: 0.0,
            max_len: 64,
            ..TransformerLmConfig::default()
        })
        .unwrap();
        stapes_nn::Module::eval(&model);
        let nnlm = NeuralLm { model: Arc::new(model), tokenizer: Arc::new(tokenizer), weight: 1.0, word_bonus: 0.5 };
        let cfg = BeamSearchConfig {
            beam_width: 16,
            beam_prune_logp: f64::NEG_INFINITY,
            token_min_logp: f64::NEG_INFINITY,
            nnlm: Some(Arc::new(nnlm)),
            ..Default::default()
        };
        // 60 frames of random posteriors over {blank, ' ', a, b} (a case where prefixes come
        // back to the beam after leaving it)
        let mut g = stapes_tensor::Generator::new(1);
        let mut lp = Vec::new();
        for _ in 0..60 {
            let w: Vec<f64> = (0..4).map(|k| g.next_f64() + if k == 0 { 0.0 } else { 0.05 }).collect();
            let z: f64 = w.iter().sum();
            lp.extend(w.iter().map(|v| (v / z).ln() as f32));
        }
        let (kept, none) = search_utterance(&lp, 60, 4, &vocab(), &cfg, u32::MAX).unwrap();
        let (dropped, rebuilt) = search_utterance(&lp, 60, 4, &vocab(), &cfg, 0).unwrap();
        assert_eq!(none, 0);
        assert!(rebuilt > 0, "no cache was rebuilt: the test does not test it");
        assert_eq!(kept.len(), dropped.len());
        for (a, b) in kept.iter().zip(&dropped) {
            assert_eq!(a.text, b.text);
            assert!((a.score - b.score).abs() < 1e-4 && (a.lm_score - b.lm_score).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sums_alignments_and_needs_a_blank_between_repeats() {
        // Two frames over {blank, ' ', a, b}: "a" is reached by the paths "aa", "a-" and "-a"
        // (0.5*0.5 + 0.5*0.4 + 0.4*0.5 = 0.65) and, being a transcript, by "a " and " a"
        // (2 * 0.5*0.05): 0.7. "aa" needs a blank between its a's: not in 2 frames.
        let lp = ln(&[[0.4, 0.05, 0.5, 0.05], [0.4, 0.05, 0.5, 0.05]]);
        let cfg = BeamSearchConfig {
            beam_prune_logp: f64::NEG_INFINITY,
            token_min_logp: f64::NEG_INFINITY,
            ..Default::default()
        };
        let hyps = beam_search_decode(&lp, 2, 4, &vocab(), &cfg).unwrap();
        assert_eq!(hyps[0].tokens, vec![2]);
        assert_eq!(hyps[0].text, "a");
        assert!((hyps[0].acoustic_score - 0.7f64.ln()).abs() < 1e-6, "{}", hyps[0].acoustic_score);
        assert!(hyps.iter().all(|h| h.tokens != vec![2, 2]));
        // Every transcript of two frames: their probabilities sum to 1.
        let total: f64 = hyps.iter().map(|h| h.acoustic_score.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!(hyps.iter().all(|h| h.lm_score == 0.0 && h.score == h.acoustic_score));
    }

    #[test]
    fn width_one_can_differ_from_greedy() {
        // The known difference from best-path decoding: the best path is "a" then "b"
        // (0.5 * 0.36), but the prefix "a" (0.5 * (0.33 + 0.31)) outweighs "ab" at width 1.
        let lp = ln(&[[0.2, 0.1, 0.5, 0.2], [0.31, 0.0, 0.33, 0.36]]);
        let cfg = BeamSearchConfig { beam_width: 1, ..Default::default() };
        let best = &beam_search_decode(&lp, 2, 4, &vocab(), &cfg).unwrap()[0];
        let greedy = greedy_decode(&Tensor::from_vec(lp.clone(), [2, 4], &Device::Cpu).unwrap(), 2, 0).unwrap();
        assert_eq!(greedy, vec![2, 3]);
        assert_eq!(best.tokens, vec![2]);
    }

    #[test]
    fn rejects_bad_input() {
        let v = vocab();
        let cfg = BeamSearchConfig::default();
        assert!(beam_search_decode(&[0.0; 7], 2, 4, &v, &cfg).is_err());
        assert!(beam_search_decode(&[0.0; 6], 2, 3, &v, &cfg).is_err());
        let e = beam_search_decode(&[0.0, 0.0, 0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0], 2, 4, &v, &cfg).unwrap_err();
        assert!(e.to_string().contains("frame 1, class 1"), "{e}");
        for bad in [
            BeamSearchConfig { beam_width: 0, ..Default::default() },
            BeamSearchConfig { beam_prune_logp: 1.0, ..Default::default() },
            BeamSearchConfig { alpha: f64::NAN, ..Default::default() },
        ] {
            assert!(beam_search_decode(&[0.0; 8], 2, 4, &v, &bad).is_err());
        }
        // No frames: the empty hypothesis.
        let h = beam_search_decode(&[], 0, 4, &v, &cfg).unwrap();
        assert_eq!((h.len(), h[0].tokens.len(), h[0].score), (1, 0, 0.0));
    }

    #[test]
    fn history_key_sees_the_last_words_only() {
        let v = Vocab::new(" ab").unwrap();
        let cfg = BeamSearchConfig::default();
        let mut s = Search::new(&v, &cfg);
        let path = |s: &mut Search, toks: &[u32]| toks.iter().fold(ROOT, |n, &t| s.child(n, t));
        // "a b ab" and "b b ab" share the last word "b" and the partial "ab".
        let x = path(&mut s, &[2, 1, 3, 1, 2, 3]);
        let y = path(&mut s, &[3, 1, 3, 1, 2, 3]);
        let z = path(&mut s, &[3, 1, 2, 1, 2, 3]);
        let w = path(&mut s, &[3, 1, 3, 1, 1, 2, 3]);
        assert_eq!(s.history_key(x, 1), s.history_key(y, 1));
        assert_ne!(s.history_key(x, 1), s.history_key(z, 1));
        assert_ne!(s.history_key(x, 2), s.history_key(y, 2));
        // A run of delimiters is one word boundary.
        assert_eq!(s.history_key(w, 1), s.history_key(y, 1));
        assert_eq!(s.text(&s.tokens(w)), "b b ab");
    }
}
