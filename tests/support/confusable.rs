//! Synthetic CTC posteriors with realistic character confusions, over sentences of a small
//! grammar: the test set of the LM-fusion tests (`tests/speech_decode.rs`) and of the decoding
//! benchmark (`examples/bench_decode.rs`), shared by path.

use stapes::speech::data::Vocab;
use stapes::tensor::random::Generator;

pub fn uniform(g: &mut Generator, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * g.next_f64()
}

pub fn below(g: &mut Generator, n: usize) -> usize {
    ((g.next_f64() * n as f64) as usize).min(n - 1)
}

/// A random point of the probability simplex over `n` classes, scaled to sum to `mass`; `peak`
/// above 1 concentrates the mass on fewer classes.
pub fn simplex(g: &mut Generator, n: usize, mass: f64, peak: i32) -> Vec<f64> {
    let w: Vec<f64> = (0..n).map(|_| (-(g.next_f64().max(1e-300)).ln()).powi(peak)).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| v / s * mass).collect()
}

/// A frame whose class `top` has probability `q` and the rest is spread over the others.
pub fn frame_with(g: &mut Generator, c: usize, top: usize, q: f64) -> Vec<f64> {
    let rest = simplex(g, c - 1, 1.0 - q, 1);
    let mut f = Vec::with_capacity(c);
    let mut it = rest.into_iter();
    for i in 0..c {
        f.push(if i == top { q } else { it.next().unwrap() });
    }
    f
}

pub fn ln_f32(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|&p| p.ln() as f32).collect()
}

pub const DET: [&str; 5] = ["the", "a", "my", "his", "her"];
pub const ADJ: [&str; 8] = ["big", "small", "red", "old", "quick", "lazy", "tiny", "bad"];
pub const NOUN: [&str; 14] =
    ["cat", "dog", "bird", "fish", "man", "kid", "boat", "house", "cake", "toy", "kit", "pig", "cap", "bed"];
pub const VERB: [&str; 8] = ["sees", "likes", "chased", "found", "wanted", "kicked", "made", "took"];
// Some confusions of the acoustic model below make other words of the vocabulary (kid/kit,
// big/pig, bed/bad, cap/cab is not one: "cab" is unknown), which the LM can only undo from
// context; most make unknown words ("cat" -> "kat"), which the LM's word list catches.

/// "det [adj] noun verb det [adj] noun".
pub fn sentence(g: &mut Generator) -> String {
    let mut w = vec![];
    for part in 0..2 {
        w.push(DET[below(g, DET.len())]);
        if g.next_f64() < 0.5 {
            w.push(ADJ[below(g, ADJ.len())]);
        }
        w.push(NOUN[below(g, NOUN.len())]);
        if part == 0 {
            w.push(VERB[below(g, VERB.len())]);
        }
    }
    w.join(" ")
}

/// The two-way confusions of the synthetic acoustic model.
pub fn partner(ch: char) -> Option<char> {
    const PAIRS: [(char, char); 10] = [
        ('c', 'k'),
        ('e', 'a'),
        ('i', 'y'),
        ('o', 'u'),
        ('s', 'z'),
        ('t', 'd'),
        ('m', 'n'),
        ('b', 'p'),
        ('g', 'j'),
        ('f', 'v'),
    ];
    PAIRS.iter().find_map(|&(a, b)| {
        if a == ch {
            Some(b)
        } else if b == ch {
            Some(a)
        } else {
            None
        }
    })
}

/// Posteriors `[T, C]` (natural log) for `text`: each character lasts 1-3 frames, blanks between
/// (always between repeats). A character with a confusable partner is, with probability
/// `p_confuse`, heard as its partner on all its frames (partner 0.45-0.6, the true character
/// 0.25-0.35); otherwise the true character has 0.6-0.95 and the partner part of the rest.
pub fn synthesize(g: &mut Generator, vocab: &Vocab, text: &str, p_confuse: f64) -> Vec<f32> {
    let c = vocab.len();
    let id = |ch: char| vocab.encode(&ch.to_string()).unwrap()[0] as usize;
    let mut probs: Vec<f64> = vec![];
    let blank = |g: &mut Generator, probs: &mut Vec<f64>| {
        let q = uniform(g, 0.7, 0.98);
        probs.extend(frame_with(g, c, 0, q));
    };
    for _ in 0..1 + below(g, 2) {
        blank(g, &mut probs);
    }
    let chars: Vec<char> = text.chars().collect();
    for (i, &ch) in chars.iter().enumerate() {
        let alt = partner(ch);
        let confused = alt.is_some() && g.next_f64() < p_confuse;
        for _ in 0..1 + below(g, 3) {
            let mut f = vec![0.0; c];
            let (x, mass) = match alt {
                Some(a) if confused => {
                    let (pa, px) = (uniform(g, 0.45, 0.6), uniform(g, 0.25, 0.35));
                    f[id(a)] = pa;
                    f[id(ch)] = px;
                    (vec![id(ch), id(a)], 1.0 - pa - px)
                }
                Some(a) => {
                    let px = uniform(g, 0.6, 0.95);
                    let pa = uniform(g, 0.0, 0.5) * (1.0 - px);
                    f[id(ch)] = px;
                    f[id(a)] = pa;
                    (vec![id(ch), id(a)], 1.0 - px - pa)
                }
                None => {
                    let px = uniform(g, 0.6, 0.95);
                    f[id(ch)] = px;
                    (vec![id(ch)], 1.0 - px)
                }
            };
            let others: Vec<usize> = (0..c).filter(|k| !x.contains(k)).collect();
            for (k, p) in others.iter().zip(simplex(g, others.len(), mass, 3)) {
                f[*k] = p;
            }
            probs.extend(f);
        }
        let repeat = chars.get(i + 1) == Some(&ch);
        for _ in 0..usize::from(repeat) + below(g, 2) {
            blank(g, &mut probs);
        }
    }
    for _ in 0..1 + below(g, 2) {
        blank(g, &mut probs);
    }
    ln_f32(&probs)
}
