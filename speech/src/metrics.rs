//! Error rates: word and character error rate with substitution, deletion and insertion
//! counts, from a Levenshtein alignment (as `jiwer`/Kaldi's `compute-wer` report them).

/// Edit counts of one or more hypothesis/reference pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Reference tokens replaced by another token.
    pub substitutions: usize,
    /// Reference tokens missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis tokens not in the reference.
    pub insertions: usize,
    /// Tokens in the reference.
    pub reference_len: usize,
}

impl ErrorCounts {
    /// Total edits (S + D + I).
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }
    /// `(S + D + I) / N`; 0 for an empty reference with an empty hypothesis, and the insertion
    /// count (as a rate over 1) when only the reference is empty.
    pub fn rate(&self) -> f64 {
        if self.reference_len == 0 {
            return self.errors() as f64;
        }
        self.errors() as f64 / self.reference_len as f64
    }
}

impl std::ops::AddAssign for ErrorCounts {
    fn add_assign(&mut self, o: ErrorCounts) {
        self.substitutions += o.substitutions;
        self.deletions += o.deletions;
        self.insertions += o.insertions;
        self.reference_len += o.reference_len;
    }
}

/// Aligns `hyp` to `reference` with unit costs and returns the counts of one minimum-cost
/// alignment (ties broken towards substitutions, then deletions, as Kaldi does).
pub fn edit_counts<T: PartialEq>(reference: &[T], hyp: &[T]) -> ErrorCounts {
    let (n, m) = (reference.len(), hyp.len());
    // cost[i][j] with backpointers packed as (cost, op); two rows would lose the traceback,
    // and utterances are short, so keep the full table.
    let w = m + 1;
    let mut cost = vec![0usize; (n + 1) * w];
    for (j, c) in cost.iter_mut().take(w).enumerate() {
        *c = j;
    }
    for i in 1..=n {
        cost[i * w] = i;
        for j in 1..=m {
            let sub = cost[(i - 1) * w + j - 1] + usize::from(reference[i - 1] != hyp[j - 1]);
            let del = cost[(i - 1) * w + j] + 1;
            let ins = cost[i * w + j - 1] + 1;
            cost[i * w + j] = sub.min(del).min(ins);
        }
    }
    let mut c = ErrorCounts { reference_len: n, ..ErrorCounts::default() };
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        let here = cost[i * w + j];
        if i > 0 && j > 0 && here == cost[(i - 1) * w + j - 1] + usize::from(reference[i - 1] != hyp[j - 1]) {
            if reference[i - 1] != hyp[j - 1] {
                c.substitutions += 1;
            }
            i -= 1;
            j -= 1;
        } else if i > 0 && here == cost[(i - 1) * w + j] + 1 {
            c.deletions += 1;
            i -= 1;
        } else {
            c.insertions += 1;
            j -= 1;
        }
    }
    c
}

/// Word error counts: both strings split on whitespace.
pub fn word_errors(reference: &str, hyp: &str) -> ErrorCounts {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hyp.split_whitespace().collect();
    edit_counts(&r, &h)
}

/// Character error counts: characters of the strings with runs of whitespace collapsed to
/// one space and the ends trimmed (spaces count as characters, as in SpeechBrain's CER).
pub fn char_errors(reference: &str, hyp: &str) -> ErrorCounts {
    let norm = |s: &str| -> Vec<char> { s.split_whitespace().collect::<Vec<_>>().join(" ").chars().collect() };
    edit_counts(&norm(reference), &norm(hyp))
}

/// [`corpus_error_rates`] per speaker: `(speaker, reference, hypothesis)` triples in, word and
/// character counts per speaker out, by speaker id.
pub fn error_rates_by_speaker<'a>(
    triples: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> std::collections::BTreeMap<String, (ErrorCounts, ErrorCounts)> {
    let mut out: std::collections::BTreeMap<String, (ErrorCounts, ErrorCounts)> = Default::default();
    for (s, r, h) in triples {
        let e = out.entry(s.to_string()).or_default();
        e.0 += word_errors(r, h);
        e.1 += char_errors(r, h);
    }
    out
}

/// Corpus-level WER and CER over pairs `(reference, hypothesis)`.
pub fn corpus_error_rates<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> (ErrorCounts, ErrorCounts) {
    let (mut w, mut c) = (ErrorCounts::default(), ErrorCounts::default());
    for (r, h) in pairs {
        w += word_errors(r, h);
        c += char_errors(r, h);
    }
    (w, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_kind_of_error() {
        let c = word_errors("the cat sat on the mat", "the cat sit on mat today");
        assert_eq!((c.errors(), c.reference_len), (3, 6));
        assert!((c.rate() - 0.5).abs() < 1e-12);
        let c = word_errors("a b c d", "a x c d e");
        assert_eq!((c.substitutions, c.deletions, c.insertions), (1, 0, 1));
        let c = word_errors("a b c d", "a c d");
        assert_eq!((c.substitutions, c.deletions, c.insertions), (0, 1, 0));
        assert_eq!(word_errors("a b c", "a b c").errors(), 0);
        assert_eq!(word_errors("", "").rate(), 0.0);
        assert_eq!(word_errors("a b", "").deletions, 2);
        assert_eq!(word_errors("", "x y").insertions, 2);
        let c = char_errors("one  two", " one tw ");
        assert_eq!((c.errors(), c.reference_len), (1, 7));
    }

    #[test]
    fn distance_is_minimal_against_brute_force() {
        // Compare the S+D+I total with a plain recursive edit distance on small strings.
        fn lev(a: &[u8], b: &[u8]) -> usize {
            if a.is_empty() || b.is_empty() {
                return a.len().max(b.len());
            }
            let s = lev(&a[1..], &b[1..]) + usize::from(a[0] != b[0]);
            s.min(lev(&a[1..], b) + 1).min(lev(a, &b[1..]) + 1)
        }
        let words = [b"abca".as_ref(), b"", b"bca", b"aaab", b"cab", b"abcabc"];
        for a in words {
            for b in words {
                let c = edit_counts(a, b);
                assert_eq!(c.errors(), lev(a, b), "{a:?} {b:?}");
                assert_eq!(c.reference_len - c.deletions - c.substitutions + c.insertions + c.substitutions, b.len());
            }
        }
    }
}
