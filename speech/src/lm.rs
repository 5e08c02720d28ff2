//! Word n-gram language models in the ARPA text format, scored with Katz backoff (as SRILM and
//! kenlm score them), for shallow fusion in the CTC beam search ([`crate::beam`]).
//!
//! An ARPA file is a `\data\` header with one `ngram N=count` line per order, then one
//! `\N-grams:` section per order, in increasing order, each line being
//!
//! ```text
//! log10_prob <whitespace> w1 ... wN [<whitespace> log10_backoff]
//! ```
//!
//! (the highest order carries no backoff), then `\end\`. Text before `\data\` is ignored, as
//! are blank lines. Every problem with the file (a missing section, a count that disagrees with
//! the header, a field that is not a number, a word in a longer n-gram that is not a unigram,
//! a repeated n-gram) is an error naming the line; parsing never panics.
//!
//! Scoring: `log10 p(w | h)` is the listed probability of the longest n-gram `h' w` (with `h'`
//! a suffix of `h`) that the model lists, plus the backoff weights of the contexts dropped on
//! the way there:
//!
//! ```text
//! p(w | h1 .. hk) = p*(h1 .. hk w)                        if listed
//!                 = bo(h1 .. hk) + p(w | h2 .. hk)        otherwise (bo = 0 when unlisted)
//! ```
//!
//! A word the model does not know is scored as `<unk>` when the model lists `<unk>`, and gets
//! [`NgramLm::unk_log10_floor`] (by default -100, the value kenlm substitutes for a missing
//! `<unk>`) otherwise. All scores here are log10, as in the file; the beam search converts to
//! natural log where it fuses them.

use std::collections::HashMap;
use std::path::Path;

use stapes_tensor::{Error, Result};

/// Index of a word in an [`NgramLm`]'s vocabulary (see [`NgramLm::word_id`]).
pub type WordId = u32;

/// The sentence-start token.
pub const BOS: &str = "<s>";
/// The sentence-end token.
pub const EOS: &str = "</s>";
/// The unknown-word token.
pub const UNK: &str = "<unk>";

/// One listed n-gram: its log10 probability and log10 backoff weight (0 when absent).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    log10_prob: f32,
    log10_backoff: f32,
}

/// A word n-gram language model read from an ARPA file. Cheap to share behind an `Arc`; all
/// queries take `&self`.
#[derive(Clone)]
pub struct NgramLm {
    order: usize,
    words: Vec<String>,
    ids: HashMap<String, WordId>,
    /// `ngrams[n - 1]` maps the word ids of each listed n-gram to its entry.
    ngrams: Vec<HashMap<Box<[WordId]>, Entry>>,
    unk: Option<WordId>,
    unk_log10_floor: f32,
    trie: WordPrefixTrie,
}

impl std::fmt::Debug for NgramLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NgramLm")
            .field("order", &self.order)
            .field("counts", &self.counts())
            .field("has_unk", &self.unk.is_some())
            .field("unk_log10_floor", &self.unk_log10_floor)
            .finish()
    }
}

impl NgramLm {
    /// Reads an ARPA file. Errors name the file and, for malformed contents, the line.
    pub fn from_arpa_file(path: impl AsRef<Path>) -> Result<NgramLm> {
        const OP: &str = "NgramLm::from_arpa_file";
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(OP, path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| Error::io(OP, path, format!("not UTF-8: {e}")))?;
        parse_arpa(&text).map_err(|msg| Error::io(OP, path, msg))
    }

    /// Parses ARPA text. Errors name the line.
    pub fn from_arpa_str(text: &str) -> Result<NgramLm> {
        parse_arpa(text).map_err(|msg| Error::invalid("NgramLm::from_arpa_str", msg))
    }

    /// The same model with another log10 score for unknown words when the model has no
    /// `<unk>` (default -100).
    pub fn with_unk_log10_floor(mut self, floor: f32) -> NgramLm {
        self.unk_log10_floor = floor;
        self
    }

    /// The log10 score of unknown words when the model lists no `<unk>`.
    pub fn unk_log10_floor(&self) -> f32 {
        self.unk_log10_floor
    }

    /// The highest n-gram order.
    pub fn order(&self) -> usize {
        self.order
    }

    /// The number of listed n-grams of each order (`counts()[n - 1]` for order `n`).
    pub fn counts(&self) -> Vec<usize> {
        self.ngrams.iter().map(HashMap::len).collect()
    }

    /// Whether `word` is a listed unigram (`<s>`, `</s>` and `<unk>` included when listed).
    pub fn contains(&self, word: &str) -> bool {
        self.ids.contains_key(word)
    }

    /// The id of `word`. An unknown word gets the id of `<unk>`, or, when the model lists no
    /// `<unk>`, an id that matches no n-gram ([`NgramLm::is_unknown`] says which).
    pub fn word_id(&self, word: &str) -> WordId {
        self.ids.get(word).copied().unwrap_or_else(|| self.unknown_id())
    }

    /// The id unknown words map to: `<unk>`'s, or one past the vocabulary.
    pub fn unknown_id(&self) -> WordId {
        self.unk.unwrap_or(self.words.len() as WordId)
    }

    /// Whether `id` stands for an unknown word (it is `<unk>` or matches nothing).
    pub fn is_unknown(&self, id: WordId) -> bool {
        id == self.unknown_id()
    }

    /// The word of `id` (`None` for the unknown id of a model without `<unk>`).
    pub fn word(&self, id: WordId) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// The vocabulary, in file order (id `i` is `vocabulary()[i]`).
    pub fn vocabulary(&self) -> &[String] {
        &self.words
    }

    /// The character trie of the vocabulary's ordinary words (`<s>`, `</s>` and `<unk>`
    /// left out), for prefix checks of partial words.
    pub fn word_trie(&self) -> &WordPrefixTrie {
        &self.trie
    }

    /// `log10 p(word | context)` with Katz backoff; `context` is oldest first (only its last
    /// `order - 1` words count) and may start with `<s>`. Unknown words (in `word` or in the
    /// context) are `<unk>`.
    pub fn log10_prob(&self, context: &[&str], word: &str) -> f32 {
        let ctx: Vec<WordId> = context.iter().map(|w| self.word_id(w)).collect();
        self.log10_prob_ids(&ctx, self.word_id(word))
    }

    /// [`NgramLm::log10_prob`] on word ids.
    pub fn log10_prob_ids(&self, context: &[WordId], word: WordId) -> f32 {
        if self.unk.is_none() && word == self.unknown_id() {
            return self.unk_log10_floor;
        }
        let k = context.len().min(self.order - 1);
        let ctx = &context[context.len() - k..];
        let mut key: Vec<WordId> = Vec::with_capacity(k + 1);
        let mut backoff = 0.0f32;
        // Longest context first; each miss adds the backoff weight of the context dropped.
        for start in 0..=k {
            let h = &ctx[start..];
            key.clear();
            key.extend_from_slice(h);
            key.push(word);
            if let Some(e) = self.ngrams[h.len()].get(key.as_slice()) {
                return backoff + e.log10_prob;
            }
            if !h.is_empty() {
                if let Some(e) = self.ngrams[h.len() - 1].get(h) {
                    backoff += e.log10_backoff;
                }
            }
        }
        // Not even a unigram: only the unknown id of a model without <unk> gets here (handled
        // above), or a word id that is not this model's; score it as unknown.
        self.unk_log10_floor
    }

    /// The log10 probability of a whole sentence of whitespace-separated words: each word
    /// given the ones before it, starting from `<s>` when `bos`, with `</s>` scored at the
    /// end when `eos`.
    pub fn sentence_log10_prob(&self, sentence: &str, bos: bool, eos: bool) -> f32 {
        let mut ctx: Vec<WordId> = vec![];
        if bos {
            ctx.push(self.word_id(BOS));
        }
        let mut total = 0.0;
        let words = sentence.split_whitespace().map(|w| self.word_id(w));
        for w in words.chain(eos.then(|| self.word_id(EOS))) {
            total += self.log10_prob_ids(&ctx, w);
            ctx.push(w);
        }
        total
    }
}

/// A character trie of the words of an [`NgramLm`], to tell whether a partial word can still
/// become a word the model knows. Nodes are indices; the root is [`WordPrefixTrie::ROOT`].
#[derive(Clone, Debug, Default)]
pub struct WordPrefixTrie {
    /// Per node: its children `(char, node)` in sorted order, and the word ending there.
    nodes: Vec<TrieNode>,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    children: Vec<(char, u32)>,
    word: Option<WordId>,
}

impl WordPrefixTrie {
    /// The node of the empty prefix.
    pub const ROOT: u32 = 0;

    /// A trie of `words` (word `i` gets id `i`).
    pub fn new<'a>(words: impl IntoIterator<Item = (&'a str, WordId)>) -> WordPrefixTrie {
        let mut t = WordPrefixTrie { nodes: vec![TrieNode::default()] };
        for (w, id) in words {
            let mut node = Self::ROOT;
            for ch in w.chars() {
                node = match t.child(node, ch) {
                    Some(n) => n,
                    None => {
                        let n = t.nodes.len() as u32;
                        t.nodes.push(TrieNode::default());
                        let kids = &mut t.nodes[node as usize].children;
                        let at = kids.partition_point(|&(c, _)| c < ch);
                        kids.insert(at, (ch, n));
                        n
                    }
                };
            }
            t.nodes[node as usize].word = Some(id);
        }
        t
    }

    /// The node of `prefix + ch`, or `None` when no word starts with that.
    pub fn child(&self, node: u32, ch: char) -> Option<u32> {
        let kids = &self.nodes.get(node as usize)?.children;
        kids.binary_search_by(|&(c, _)| c.cmp(&ch)).ok().map(|i| kids[i].1)
    }

    /// The word that ends at `node`, if any.
    pub fn word(&self, node: u32) -> Option<WordId> {
        self.nodes.get(node as usize).and_then(|n| n.word)
    }

    /// The node of `prefix`, or `None` when no word starts with it.
    pub fn find(&self, prefix: &str) -> Option<u32> {
        prefix.chars().try_fold(Self::ROOT, |n, ch| self.child(n, ch))
    }

    /// Whether some word starts with `prefix` (every word starts with "").
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.find(prefix).is_some()
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the trie holds no word.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].word.is_none()
    }
}

// ------------------------------------------------------------------------------------------------
// ARPA parsing
// ------------------------------------------------------------------------------------------------

/// The highest n-gram order accepted (kenlm's default build takes 6).
const MAX_ORDER: usize = 32;

/// Parses ARPA text; the error is a message naming the line (1-based).
fn parse_arpa(text: &str) -> std::result::Result<NgramLm, String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));

    // Everything before \data\ is ignored (some tools write a comment header).
    loop {
        match lines.next() {
            Some((_, "\\data\\")) => break,
            Some(_) => {}
            None => return Err("no \\data\\ header: not an ARPA file".into()),
        }
    }

    // The header: `ngram N=count` lines, up to the first section line.
    let mut declared: Vec<Option<(usize, usize)>> = vec![]; // order -> (count, line)
    let mut next_section = None;
    for (no, line) in lines.by_ref() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('\\') {
            next_section = Some((no, line));
            break;
        }
        let rest = line
            .strip_prefix("ngram")
            .filter(|r| r.starts_with(char::is_whitespace))
            .ok_or_else(|| format!("line {no}: expected `ngram N=count` in the \\data\\ header, found {line:?}"))?;
        let (n, count) = rest
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("line {no}: expected `ngram N=count`, found {line:?}"))?;
        let n: usize = n
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("line {no}: n-gram order {:?} is not a positive integer", n.trim()))?;
        if n > MAX_ORDER {
            return Err(format!("line {no}: n-gram order {n} is above the supported {MAX_ORDER}"));
        }
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("line {no}: n-gram count {:?} is not an integer", count.trim()))?;
        if declared.len() < n {
            declared.resize(n, None);
        }
        if let Some((_, first)) = declared[n - 1] {
            return Err(format!("line {no}: order {n} declared twice (first on line {first})"));
        }
        declared[n - 1] = Some((count, no));
    }
    if declared.is_empty() {
        return Err("the \\data\\ header declares no `ngram N=count` line".into());
    }
    if let Some(missing) = declared.iter().position(Option::is_none) {
        return Err(format!("the \\data\\ header declares order {} but not order {}", declared.len(), missing + 1));
    }
    let counts: Vec<usize> = declared.iter().map(|d| d.expect("checked above").0).collect();
    let order = counts.len();
    if counts[0] == 0 {
        return Err("the \\data\\ header declares no unigrams (ngram 1=0)".into());
    }

    // Preallocate from the header, but not beyond what the text could hold: the counts are
    // not trusted before the sections have been read.
    let reserve = |n: usize| n.min(text.len() / 4);
    let mut words: Vec<String> = Vec::with_capacity(reserve(counts[0]));
    let mut ids: HashMap<String, WordId> = HashMap::with_capacity(reserve(counts[0]));
    let mut ngrams: Vec<HashMap<Box<[WordId]>, Entry>> = Vec::with_capacity(order);

    for n in 1..=order {
        let expected_header = format!("\\{n}-grams:");
        let (sec_no, sec_line) = match next_section.take() {
            Some(s) => s,
            None => return Err(format!("end of file: expected the {expected_header} section")),
        };
        if sec_line != expected_header {
            return Err(format!("line {sec_no}: expected {expected_header}, found {sec_line:?}"));
        }
        let mut table: HashMap<Box<[WordId]>, Entry> = HashMap::with_capacity(reserve(counts[n - 1]));
        for (no, line) in lines.by_ref() {
            if line.is_empty() {
                continue;
            }
            if line.starts_with('\\') {
                next_section = Some((no, line));
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let backoff_field = if fields.len() == n + 2 {
                if n == order {
                    return Err(format!(
                        "line {no}: {n}-grams are the highest order and take no backoff weight, found {} fields in {line:?}",
                        fields.len()
                    ));
                }
                true
            } else if fields.len() == n + 1 {
                false
            } else {
                return Err(format!(
                    "line {no}: a {n}-gram line has {} fields (log10 prob, {n} word{}{}), found {} in {line:?}",
                    if n < order { "n + 1 or n + 2" } else { "n + 1" },
                    if n > 1 { "s" } else { "" },
                    if n < order { ", optional log10 backoff" } else { "" },
                    fields.len()
                ));
            };
            let number = |s: &str, what: &str| -> std::result::Result<f32, String> {
                s.parse::<f32>()
                    .ok()
                    .filter(|v| !v.is_nan())
                    .ok_or_else(|| format!("line {no}: {what} {s:?} is not a number"))
            };
            let log10_prob = number(fields[0], "log10 probability")?;
            if log10_prob > 0.0 {
                return Err(format!("line {no}: log10 probability {log10_prob} is above 0"));
            }
            let log10_backoff = if backoff_field { number(fields[n + 1], "log10 backoff")? } else { 0.0 };
            if log10_backoff == f32::INFINITY {
                return Err(format!("line {no}: log10 backoff is +inf"));
            }
            let mut key: Vec<WordId> = Vec::with_capacity(n);
            for &w in &fields[1..=n] {
                let id = if n == 1 {
                    if ids.contains_key(w) {
                        return Err(format!("line {no}: unigram {w:?} listed twice"));
                    }
                    let id = words.len() as WordId;
                    words.push(w.to_string());
                    ids.insert(w.to_string(), id);
                    id
                } else {
                    *ids.get(w).ok_or_else(|| format!("line {no}: word {w:?} of a {n}-gram is not a unigram"))?
                };
                key.push(id);
            }
            if table.insert(key.into_boxed_slice(), Entry { log10_prob, log10_backoff }).is_some() {
                return Err(format!("line {no}: {n}-gram {:?} listed twice", fields[1..=n].join(" ")));
            }
        }
        if table.len() != counts[n - 1] {
            return Err(format!(
                "line {sec_no}: the \\data\\ header declares {} {n}-grams but the {expected_header} section lists {}",
                counts[n - 1],
                table.len()
            ));
        }
        ngrams.push(table);
    }
    match next_section {
        Some((_, "\\end\\")) => {}
        Some((no, line)) => return Err(format!("line {no}: expected \\end\\ after the {order}-grams, found {line:?}")),
        None => return Err(format!("end of file: expected \\end\\ after the {order}-grams")),
    }

    let unk = ids.get(UNK).copied();
    let trie = WordPrefixTrie::new(
        words
            .iter()
            .enumerate()
            .filter(|(_, w)| ![BOS, EOS, UNK].contains(&w.as_str()))
            .map(|(i, w)| (w.as_str(), i as WordId)),
    );
    Ok(NgramLm { order, words, ids, ngrams, unk, unk_log10_floor: -100.0, trie })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A trigram model; the expected scores in `katz_backoff_by_hand` are worked out from it.
    const ARPA: &str = "some tool's banner
\\data\\
ngram 1=6
ngram 2=4
ngram 3=2

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.5
-0.7\t</s>
-0.6\tthe\t-0.3
-0.9\tcat\t-0.2
-1.2\tsat\t-0.25

\\2-grams:
-0.2\t<s> the\t-0.1
-0.4\tthe cat\t-0.15
-0.5\tcat sat
-0.3\tsat </s>

\\3-grams:
-0.05\t<s> the cat
-0.1\tthe cat sat

\\end\\
";

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn katz_backoff_by_hand() {
        let lm = NgramLm::from_arpa_str(ARPA).unwrap();
        assert_eq!(lm.order(), 3);
        assert_eq!(lm.counts(), vec![6, 4, 2]);
        // Listed trigram.
        assert!(close(lm.log10_prob(&["<s>", "the"], "cat"), -0.05));
        // Listed bigram, context too short for a trigram.
        assert!(close(lm.log10_prob(&["the"], "cat"), -0.4));
        // "the the cat" unlisted: bo(the the) = 0 (unlisted) + p(cat | the) = -0.4.
        assert!(close(lm.log10_prob(&["the", "the"], "cat"), -0.4));
        // "<s> the sat": bo(<s> the) = -0.1, "the sat" unlisted: bo(the) = -0.3, p(sat) = -1.2.
        assert!(close(lm.log10_prob(&["<s>", "the"], "sat"), -0.1 - 0.3 - 1.2));
        // "cat cat" unlisted: bo(cat) = -0.2 + p(cat) = -0.9.
        assert!(close(lm.log10_prob(&["cat"], "cat"), -1.1));
        // Only the last order - 1 = 2 words of a long context count.
        assert!(close(lm.log10_prob(&["sat", "sat", "<s>", "the"], "cat"), -0.05));
        // Unknown word = <unk>: bo(the cat) = -0.15, bo(cat) = -0.2, p(<unk>) = -1.0.
        assert!(close(lm.log10_prob(&["the", "cat"], "dog"), -1.35));
        // Unknown word in the context: "<unk> sat" unlisted, bo(<unk>) = 0, p(sat) = -1.2.
        assert!(close(lm.log10_prob(&["dog"], "sat"), -1.2));
        // The sentence "the cat sat": p(the|<s>) -0.2 + p(cat|<s> the) -0.05
        //   + p(sat|the cat) -0.1 + p(</s>|cat sat): bo(cat sat)=0 + p(</s>|sat) -0.3 = -0.65.
        assert!(close(lm.sentence_log10_prob("the cat sat", true, true), -0.65));
        // Without <s>: p(the) -0.6 + p(cat|the) -0.4 + p(sat|the cat) -0.1 = -1.1.
        assert!(close(lm.sentence_log10_prob("the cat sat", false, false), -1.1));
        // The trie holds the ordinary words only.
        let t = lm.word_trie();
        assert!(t.has_prefix("ca") && t.has_prefix("") && t.has_prefix("sat"));
        assert!(!t.has_prefix("cab") && !t.has_prefix("<s") && !t.has_prefix("sate"));
        assert_eq!(t.find("the").and_then(|n| t.word(n)), Some(lm.word_id("the")));
        assert_eq!(t.find("th").and_then(|n| t.word(n)), None);
    }

    #[test]
    fn never_panics_on_damaged_files() {
        // Every truncation, and every file with one line dropped or doubled: an error or a
        // model, never a panic.
        for (i, _) in ARPA.char_indices() {
            let _ = NgramLm::from_arpa_str(&ARPA[..i]);
        }
        let lines: Vec<&str> = ARPA.lines().collect();
        for i in 0..lines.len() {
            let mut dropped = lines.clone();
            dropped.remove(i);
            let _ = NgramLm::from_arpa_str(&dropped.join("\n"));
            let mut doubled = lines.clone();
            doubled.insert(i, lines[i]);
            let _ = NgramLm::from_arpa_str(&doubled.join("\n"));
        }
    }

    #[test]
    fn unknown_words_without_unk_get_the_floor() {
        let arpa = "\\data\\\nngram 1=2\n\n\\1-grams:\n-0.3 a\n-0.2 b\n\\end\\\n";
        let lm = NgramLm::from_arpa_str(arpa).unwrap();
        assert_eq!(lm.order(), 1);
        assert!(close(lm.log10_prob(&[], "zzz"), -100.0));
        assert!(close(lm.clone().with_unk_log10_floor(-7.0).log10_prob(&["a"], "zzz"), -7.0));
        assert!(close(lm.log10_prob(&["zzz"], "b"), -0.2));
        assert!(lm.is_unknown(lm.word_id("zzz")) && !lm.is_unknown(lm.word_id("a")));
        assert_eq!(lm.word(lm.word_id("zzz")), None);
    }

    #[test]
    fn malformed_files_name_the_line() {
        let err = |s: &str| NgramLm::from_arpa_str(s).unwrap_err().to_string();
        let e = err(&ARPA.replace("-0.4\tthe cat\t-0.15", "-0.4\tthe cat\tx"));
        assert!(e.contains("line 17") && e.contains("backoff") && e.contains("\"x\""), "{e}");
        let e = err(&ARPA.replace("ngram 2=4", "ngram 2=5"));
        assert!(e.contains("declares 5 2-grams") && e.contains("lists 4"), "{e}");
        let e = err(&ARPA.replace("-0.05\t<s> the cat", "-0.05\t<s> the dog"));
        assert!(e.contains("line 22") && e.contains("\"dog\""), "{e}");
        let e = err(&ARPA.replace("-0.1\tthe cat sat", "-0.1\tthe cat sat -0.3"));
        assert!(e.contains("line 23") && e.contains("no backoff"), "{e}");
        let e = err(&ARPA.replace("\\end\\", ""));
        assert!(e.contains("expected \\end\\"), "{e}");
        let e = err(&ARPA.replace("\\2-grams:", "\\3-grams:"));
        assert!(e.contains("line 15") && e.contains("expected \\2-grams:"), "{e}");
        let e = err(&ARPA.replace("-0.5\tcat sat", "-0.5\tcat"));
        assert!(e.contains("line 18") && e.contains("fields"), "{e}");
        let e = err(&ARPA.replace("-0.5\tcat sat", "-0.4\tthe cat"));
        assert!(e.contains("line 18") && e.contains("twice"), "{e}");
        let e = err(&ARPA.replace("ngram 3=2", "ngram three=2"));
        assert!(e.contains("line 5"), "{e}");
        let e = err(&ARPA.replace("ngram 2=4\n", ""));
        assert!(e.contains("order 3 but not order 2"), "{e}");
        let e = err(&ARPA.replace("-0.9\tcat", "0.9\tcat"));
        assert!(e.contains("line 12") && e.contains("above 0"), "{e}");
        assert!(err("hello").contains("no \\data\\"));
        assert!(err("\\data\\\n").contains("no `ngram"));
        assert!(err("\\data\\\nngram 1=1\n").contains("expected the \\1-grams:"));
        let e = err(&ARPA.replace("ngram 3=2", "ngram 99999999999=2"));
        assert!(e.contains("line 5") && e.contains("above the supported"), "{e}");
        assert!(err(&ARPA.replace("ngram 1=6", "ngram 1=99999999999999")).contains("declares 99999999999999"));
        // Files: the error names the path.
        let e = NgramLm::from_arpa_file("/nonexistent/lm.arpa").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/lm.arpa"), "{e}");
    }
}
