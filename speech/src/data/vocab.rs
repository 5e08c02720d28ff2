//! A character vocabulary for CTC: blank at index 0, then one id per character.

use std::collections::{BTreeSet, HashMap};

use stapes_tensor::{Error, Result};

/// Characters to ids and back. Id 0 is the CTC blank; characters are `1..len()`.
///
/// Unknown characters are an **error** in [`Vocab::encode`] (naming the character and its
/// position), never silently dropped or mapped: a transcript the model cannot emit is a data
/// problem to fix (normalise case and punctuation before encoding).
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    chars: Vec<char>,
    ids: HashMap<char, i64>,
}

impl Vocab {
    /// A vocabulary of `chars` in the given order (ids 1, 2, ...). Repeated characters are an
    /// error.
    pub fn new(chars: &str) -> Result<Vocab> {
        let mut ids = HashMap::new();
        let mut list = vec![];
        for c in chars.chars() {
            if ids.insert(c, list.len() as i64 + 1).is_some() {
                return Err(Error::invalid("Vocab::new", format!("character {c:?} appears twice")));
            }
            list.push(c);
        }
        Ok(Vocab { chars: list, ids })
    }

    /// Lower-case English: space, apostrophe and `a`–`z` (29 ids with the blank).
    pub fn english() -> Vocab {
        Vocab::new(" 'abcdefghijklmnopqrstuvwxyz").expect("no repeated characters")
    }

    /// Every character in `transcripts`, in sorted order.
    pub fn from_transcripts<'a>(transcripts: impl IntoIterator<Item = &'a str>) -> Vocab {
        let set: BTreeSet<char> = transcripts.into_iter().flat_map(|t| t.chars()).collect();
        Vocab::new(&set.into_iter().collect::<String>()).expect("a set has no repeats")
    }

    /// Number of ids, the blank included.
    pub fn len(&self) -> usize {
        self.chars.len() + 1
    }

    /// Always false: the blank is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The blank id (0).
    pub fn blank(&self) -> i64 {
        0
    }

    /// The characters, in id order (id `i + 1` is `chars()[i]`).
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The ids of `text`'s characters. An unknown character is an error.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.ids.get(&c).copied().ok_or_else(|| {
                    Error::invalid(
                        "Vocab::encode",
                        format!("character {c:?} at position {i} of {text:?} is not in the vocabulary"),
                    )
                })
            })
            .collect()
    }

    /// The text of `ids`; blanks are skipped (no CTC collapsing of repeats: that is the
    /// decoder's job). An id outside `0..len()` is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        ids.iter()
            .filter(|&&i| i != 0)
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|u| self.chars.get(u.wrapping_sub(1)))
                    .copied()
                    .ok_or_else(|| Error::invalid("Vocab::decode", format!("id {i} outside 0..{}", self.len())))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let v = Vocab::english();
        assert_eq!(v.len(), 29);
        let ids = v.encode("it's a b").unwrap();
        assert!(ids.iter().all(|&i| i > 0));
        assert_eq!(ids[0], 2 + (b'i' - b'a') as i64 + 1);
        assert_eq!(v.decode(&ids).unwrap(), "it's a b");
        let mut with_blanks = vec![0];
        with_blanks.extend(&ids);
        with_blanks.push(0);
        assert_eq!(v.decode(&with_blanks).unwrap(), "it's a b");
        let e = v.encode("abC").unwrap_err().to_string();
        assert!(e.contains("'C'") && e.contains("position 2"), "{e}");
        assert!(v.decode(&[29]).is_err());
        assert!(v.decode(&[-1]).is_err());
        assert!(Vocab::new("abca").is_err());
        let t = Vocab::from_transcripts(["one two", "three"]);
        assert_eq!(t.chars().iter().collect::<String>(), " ehnortw");
    }
}
