//! CTC decoding: prefix beam search against greedy decoding, against brute-force enumeration of
//! alignments, and against pyctcdecode 0.5.0 with and without a kenlm language model
//! (`tests/golden/beam.safetensors`, made by `tools/golden/beam.py`); the ARPA n-gram reader
//! against hand-computed scores and kenlm's; and the acceptance test of LM fusion: on synthetic
//! posteriors with realistic character confusions, beam search with a bigram LM of the
//! sentences' vocabulary has a lower WER than greedy decoding
//! (`cargo test --test speech_decode -- --nocapture` prints the figures).

mod common;
#[path = "support/confusable.rs"]
mod confusable;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::{load_golden, Json, Params};
use confusable::*;
use stapes::speech::beam::{beam_search_decode, beam_search_decode_batch, BeamSearchConfig, Hypothesis};
use stapes::speech::data::Vocab;
use stapes::speech::decode::{collapse, greedy_decode, greedy_decode_batch};
use stapes::speech::lm::NgramLm;
use stapes::speech::metrics::corpus_error_rates;
use stapes::tensor::random::Generator;
use stapes::tensor::{Device, Tensor};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// Runs of delimiters collapsed, ends trimmed.
fn words_of(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A labelling in the beam search's canonical form: no delimiter (id `space`) at the ends or
/// twice in a row.
fn canonical(tokens: &[usize], space: Option<usize>) -> Vec<usize> {
    let mut out: Vec<usize> = vec![];
    for &t in tokens {
        if Some(t) == space && out.last().is_none_or(|&l| l == t) {
            continue;
        }
        out.push(t);
    }
    if out.last().is_some() && out.last().copied() == space {
        out.pop();
    }
    out
}

fn tokens_text(vocab: &Vocab, tokens: &[usize]) -> String {
    words_of(&vocab.decode(&tokens.iter().map(|&t| t as i64).collect::<Vec<_>>()).unwrap())
}

/// `[B, T, C]` (or `[T, B, C]`) tensor of utterances padded with zeros to the longest.
fn batch_tensor(utts: &[Vec<f32>], c: usize, batch_first: bool) -> (Tensor, Vec<usize>) {
    let lens: Vec<usize> = utts.iter().map(|u| u.len() / c).collect();
    let t = lens.iter().copied().max().unwrap_or(0);
    let mut data = vec![0.0f32; utts.len() * t * c];
    for (b, u) in utts.iter().enumerate() {
        data[b * t * c..b * t * c + u.len()].copy_from_slice(u);
    }
    let x = Tensor::from_vec(data, [utts.len(), t, c], &Device::Cpu).unwrap();
    let x = if batch_first { x } else { x.transpose(0usize, 1usize).unwrap().contiguous().unwrap() };
    (x, lens)
}

fn exact_config() -> BeamSearchConfig {
    BeamSearchConfig {
        beam_width: usize::MAX,
        beam_prune_logp: f64::NEG_INFINITY,
        token_min_logp: f64::NEG_INFINITY,
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Beam search without a language model
// ------------------------------------------------------------------------------------------------

/// Width 1 keeps one prefix, chosen by the summed probability of its alignments; greedy keeps
/// the best path. They agree when every frame's arg-max has probability q >= 0.75: a blank or a
/// new label then wins outright (it has q of the mass, the rest 1 - q); within a run of one
/// label, p_nb >= p_b holds once q >= 2/3, so the repeat stays merged; and after a blank frame
/// p_b >= p_nb q / (1 - q), so a second copy of the label wins when 2q^2 > 1 (q > 0.707).
/// (`width_one_can_differ_from_greedy` in the unit tests shows a case below that bound.)
#[test]
fn width_one_equals_greedy_on_confident_frames() {
    let mut g = Generator::new(11);
    let mut checked = 0;
    for case in 0..40 {
        let c = 3 + case % 4;
        let vocab = Vocab::new(&" abcd"[..c - 1]).unwrap();
        let cfg = BeamSearchConfig { beam_width: 1, ..Default::default() };
        let mut utts = vec![];
        for _ in 0..8 {
            let t = 1 + below(&mut g, 40);
            let mut probs = vec![];
            let mut prev = 0;
            for _ in 0..t {
                let r = g.next_f64();
                let top = if r < 0.3 {
                    prev
                } else if r < 0.6 {
                    0
                } else {
                    below(&mut g, c)
                };
                let q = uniform(&mut g, 0.75, 0.99);
                probs.extend(frame_with(&mut g, c, top, q));
                prev = top;
            }
            let lp = ln_f32(&probs);
            let greedy = greedy_decode(&Tensor::from_vec(lp.clone(), [t, c], &Device::Cpu).unwrap(), t, 0).unwrap();
            let hyps = beam_search_decode(&lp, t, c, &vocab, &cfg).unwrap();
            assert_eq!(hyps.len(), 1);
            assert_eq!(hyps[0].tokens, canonical(&greedy, Some(1)), "case {case}, T={t}");
            assert_eq!(hyps[0].text, tokens_text(&vocab, &greedy));
            utts.push(lp);
            checked += 1;
        }
        // The batch functions agree too, in both layouts, with padding past each length.
        for batch_first in [true, false] {
            let (x, lens) = batch_tensor(&utts, c, batch_first);
            let greedy = greedy_decode_batch(&x, &lens, 0, batch_first).unwrap();
            let beams = beam_search_decode_batch(&x, &lens, batch_first, &vocab, &cfg).unwrap();
            let best: Vec<Vec<usize>> = beams.iter().map(|h| h[0].tokens.clone()).collect();
            let greedy: Vec<Vec<usize>> = greedy.iter().map(|g| canonical(g, Some(1))).collect();
            assert_eq!(best, greedy, "case {case}, batch_first {batch_first}");
        }
    }
    println!("width 1 == greedy on {checked} random utterances");
}

/// Sums over all C^T alignments: the probability of every labelling, grouped by transcript
/// (labellings that differ only in delimiters at the ends or repeated, `space`, are one).
fn brute_force(lp: &[f32], t: usize, c: usize, space: Option<usize>) -> HashMap<Vec<usize>, f64> {
    let mut out = HashMap::new();
    let mut path = vec![0usize; t];
    loop {
        let logp: f64 = path.iter().enumerate().map(|(i, &k)| f64::from(lp[i * c + k])).sum();
        *out.entry(canonical(&collapse(path.iter().copied(), 0), space)).or_insert(0.0) += logp.exp();
        // Next path (odometer).
        let mut i = 0;
        while i < t {
            path[i] += 1;
            if path[i] < c {
                break;
            }
            path[i] = 0;
            i += 1;
        }
        if i == t {
            return out;
        }
    }
}

#[test]
fn unpruned_search_finds_the_most_probable_labelling() {
    let mut g = Generator::new(5);
    // With a delimiter, hypotheses are transcripts; without one ("ab"), every labelling is its
    // own transcript and the test is on labellings.
    let vocabs = [
        (Vocab::new(" a").unwrap(), Some(1)),
        (Vocab::new(" ab").unwrap(), Some(1)),
        (Vocab::new("ab").unwrap(), None),
    ];
    let (mut cases, mut labellings) = (0, 0);
    for case in 0..300 {
        let (vocab, space) = &vocabs[case % 3];
        let c = vocab.len();
        let t = 1 + case % 6;
        let probs: Vec<f64> = (0..t).flat_map(|_| simplex(&mut g, c, 1.0, 1 + (case % 2) as i32)).collect();
        let lp = ln_f32(&probs);
        let exact = brute_force(&lp, t, c, *space);
        let hyps = beam_search_decode(&lp, t, c, vocab, &exact_config()).unwrap();
        // Every transcript, with its exact probability.
        assert_eq!(hyps.len(), exact.len(), "case {case}");
        for h in &hyps {
            let p = exact[&h.tokens];
            assert!(
                (h.acoustic_score - p.ln()).abs() < 1e-9,
                "case {case} {:?}: {} vs {}",
                h.tokens,
                h.acoustic_score,
                p.ln()
            );
            assert_eq!(h.score, h.acoustic_score);
        }
        // Best first, and the best is the most probable transcript (ties aside).
        assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
        let best_p = exact.values().cloned().fold(0.0, f64::max);
        assert!((exact[&hyps[0].tokens] - best_p).abs() <= 1e-12 * best_p, "case {case}");
        let runner_up = exact.values().filter(|&&p| p < best_p * (1.0 - 1e-9)).cloned().fold(0.0, f64::max);
        let unique = exact.values().filter(|&&p| p >= best_p * (1.0 - 1e-9)).count() == 1;
        if unique && runner_up < best_p * (1.0 - 1e-6) {
            let argmax = exact.iter().find(|(_, &p)| p == best_p).unwrap().0;
            assert_eq!(&hyps[0].tokens, argmax, "case {case}");
        }
        cases += 1;
        labellings += exact.len();
    }
    println!("exact prefix search: {cases} cases, {labellings} transcripts checked against brute force");
}

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/beam.safetensors");
const ABC_ARPA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lm/abc_bigram.arpa");

/// One decoding case of `tests/golden/beam.safetensors` (see `tools/golden/beam.py`).
struct GoldenDecode {
    name: String,
    log_probs: Vec<f32>,
    t: usize,
    c: usize,
    texts: Vec<String>,
    logit_scores: Vec<f64>,
    /// pyctcdecode's fused scores (LM cases).
    scores: Option<Vec<f64>>,
    config: BeamSearchConfig,
}

fn json_strings(j: Option<&Json>) -> Vec<String> {
    match j {
        Some(Json::Arr(v)) => v
            .iter()
            .map(|x| match x {
                Json::Str(s) => s.clone(),
                other => panic!("expected a string, got {other:?}"),
            })
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

fn json_numbers(j: Option<&Json>) -> Vec<f64> {
    match j {
        Some(Json::Arr(v)) => v
            .iter()
            .map(|x| match x {
                Json::Num(n) => *n,
                other => panic!("expected a number, got {other:?}"),
            })
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The decoding cases whose name starts with `prefix`; `lm` is attached to LM cases.
fn golden_decodes(prefix: &str, lm: Option<Arc<NgramLm>>) -> Vec<GoldenDecode> {
    let golden = load_golden(GOLDEN);
    let mut out = vec![];
    for (name, meta) in golden.metadata.iter().filter(|(n, _)| n.starts_with(prefix)) {
        let p = Params::parse(meta).unwrap();
        let mut config = BeamSearchConfig {
            beam_width: p.usize("beam_width").unwrap(),
            beam_prune_logp: p.f64("beam_prune_logp").unwrap(),
            token_min_logp: p.f64("token_min_logp").unwrap(),
            ..Default::default()
        };
        let scores = p.has("scores").then(|| json_numbers(p.get("scores")));
        if scores.is_some() {
            config.lm = lm.clone();
            config.alpha = p.f64("alpha").unwrap();
            config.beta = p.f64("beta").unwrap();
            config.unk_score_offset = p.f64("unk_score_offset").unwrap();
            config.score_boundary = p.bool("score_boundary").unwrap();
        }
        let texts = json_strings(p.get("texts"));
        let logit_scores = json_numbers(p.get("logit_scores"));
        assert!(p.unused().is_empty(), "{name}: unread parameters {:?}", p.unused());
        let x = &golden.tensors[&format!("{name}.log_probs")];
        out.push(GoldenDecode {
            name: name.clone(),
            log_probs: x.to_vec::<f32>().unwrap(),
            t: x.dims()[0],
            c: x.dims()[1],
            texts,
            logit_scores,
            scores,
            config,
        });
    }
    assert!(!out.is_empty(), "no {prefix}* case in {GOLDEN}");
    out
}

/// Checks one golden case. Unpruned (`*exact*`): both searches are exact, so the n-best lists
/// must be the same transcripts with the same acoustic and fused scores. Pruned: the searches
/// differ by design (pyctcdecode's beams split each prefix in two, ending in a blank or not,
/// that compete for the width and are pruned apart, so it keeps fewer prefixes and fewer of
/// their alignments); then our best must be the same transcript with at least pyctcdecode's
/// acoustic mass, or a transcript that scores higher under a much wider search. Returns
/// whether the best transcripts agree.
///
/// One known pyctcdecode 0.5.0 quirk is allowed for: at the end of the utterance it scores the
/// beam's unfinished word, which is the empty string when the kept beam of a transcript ends in
/// a delimiter (and for the empty transcript); the LM then scores "" as an unknown word. Such a
/// transcript's pyctcdecode score is ours plus `spurious_word(text)`, that word's score.
fn check_against_pyctcdecode(case: &GoldenDecode, vocab: &Vocab, spurious_word: &dyn Fn(&str) -> f64) -> bool {
    let name = &case.name;
    let hyps = beam_search_decode(&case.log_probs, case.t, case.c, vocab, &case.config).unwrap();
    let fused = case.scores.as_ref().unwrap_or(&case.logit_scores);
    if name.contains("exact") {
        assert_eq!(hyps.len(), case.texts.len(), "{name}: number of transcripts");
        let ours: HashMap<&str, &Hypothesis> = hyps.iter().map(|h| (h.text.as_str(), h)).collect();
        let mut quirks = 0;
        for ((text, logit), score) in case.texts.iter().zip(&case.logit_scores).zip(fused) {
            let h = ours.get(text.as_str()).unwrap_or_else(|| panic!("{name}: {text:?} missing"));
            assert!(
                (h.acoustic_score - logit).abs() < 1e-5,
                "{name} {text:?}: acoustic {} vs {logit}",
                h.acoustic_score
            );
            if (h.score - score).abs() >= 1e-4 {
                let extra = spurious_word(text);
                assert!(
                    extra != 0.0 && (h.score + extra - score).abs() < 1e-4,
                    "{name} {text:?}: score {} vs pyctcdecode's {score} (with an empty last word: {})",
                    h.score,
                    h.score + extra
                );
                quirks += 1;
            }
        }
        assert!(quirks * 2 < hyps.len(), "{name}: {quirks} of {} scores differ", hyps.len());
        let best = hyps[0].text == case.texts[0];
        println!(
            "{name}: T={}: {} transcripts, same acoustic scores; same fused scores but for {quirks} with \
             pyctcdecode's empty last word; best {:?} {:.4} (pyctcdecode {:?})",
            case.t,
            hyps.len(),
            hyps[0].text,
            hyps[0].score,
            case.texts[0]
        );
        return best;
    }
    let wide_cfg =
        BeamSearchConfig { beam_width: 5000, beam_prune_logp: -40.0, token_min_logp: -20.0, ..case.config.clone() };
    let wide = beam_search_decode(&case.log_probs, case.t, case.c, vocab, &wide_cfg).unwrap();
    let wide_score = |text: &str| wide.iter().find(|h| h.text == text).map_or(f64::NEG_INFINITY, |h| h.score);
    println!(
        "{name}: T={}: ours {:?} {:.4} (wide {:.4}) | pyctcdecode {:?} {:.4} (wide {:.4})",
        case.t,
        hyps[0].text,
        hyps[0].score,
        wide_score(&hyps[0].text),
        case.texts[0],
        fused[0],
        wide_score(&case.texts[0])
    );
    if hyps[0].text == case.texts[0] {
        assert!(hyps[0].acoustic_score >= case.logit_scores[0] - 1e-5, "{name}: we keep less of the transcript's mass");
        true
    } else {
        assert!(
            wide_score(&hyps[0].text) > wide_score(&case.texts[0]),
            "{name}: ours {:?} scores lower than pyctcdecode's {:?}",
            hyps[0].text,
            case.texts[0]
        );
        false
    }
}

#[test]
fn beam_search_against_pyctcdecode() {
    let vocab = Vocab::new(" abc").unwrap();
    let cases = golden_decodes("nolm_", None);
    let same = cases.iter().filter(|c| check_against_pyctcdecode(c, &vocab, &|_| 0.0)).count();
    println!("pyctcdecode, no LM: same best on {same} of {} cases (the others: ours scores higher)", cases.len());
}

#[test]
fn lm_fusion_against_pyctcdecode() {
    let vocab = Vocab::new(" abc").unwrap();
    let lm = Arc::new(NgramLm::from_arpa_file(ABC_ARPA).unwrap());
    let cases = golden_decodes("lm_", Some(lm.clone()));
    let mut same = 0;
    for case in &cases {
        let cfg = &case.config;
        // pyctcdecode's score of an empty last word: an unknown word after the transcript's
        // words, which, with `score_boundary`, also changes the context of `</s>`.
        let spurious_word = |text: &str| {
            let mut context: Vec<&str> = if cfg.score_boundary { vec!["<s>"] } else { vec![] };
            context.extend(text.split_whitespace());
            let mut log10 = f64::from(lm.log10_prob(&context, "")) + cfg.unk_score_offset;
            if cfg.score_boundary {
                let eos_before = f64::from(lm.log10_prob(&context, "</s>"));
                context.push("");
                log10 += f64::from(lm.log10_prob(&context, "</s>")) - eos_before;
            }
            cfg.alpha * std::f64::consts::LN_10 * log10 + cfg.beta
        };
        if check_against_pyctcdecode(case, &vocab, &spurious_word) {
            same += 1;
        }
    }
    println!(
        "pyctcdecode + kenlm: same best on {same} of {} cases (the others: pyctcdecode's empty last word in \
         unpruned cases, ours scores higher in pruned ones)",
        cases.len()
    );
}

#[test]
fn arpa_scores_match_kenlm() {
    let golden = load_golden(GOLDEN);
    let p = Params::parse(&golden.metadata["kenlm_sentences"]).unwrap();
    let sentences = json_strings(p.get("sentences"));
    let expected = json_numbers(p.get("log10"));
    let lm = NgramLm::from_arpa_file(ABC_ARPA).unwrap();
    for (s, e) in sentences.iter().zip(&expected) {
        let ours = f64::from(lm.sentence_log10_prob(s, true, true));
        assert!((ours - e).abs() < 1e-5, "{s:?}: {ours} vs kenlm's {e}");
    }
    println!("kenlm: {} sentence scores agree", sentences.len());
}

// ------------------------------------------------------------------------------------------------
// The ARPA reader
// ------------------------------------------------------------------------------------------------

const TINY_ARPA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lm/tiny_trigram.arpa");

#[test]
fn arpa_file_scores_by_hand() {
    let lm = NgramLm::from_arpa_file(TINY_ARPA).unwrap();
    assert_eq!((lm.order(), lm.counts()), (3, vec![7, 5, 2]));
    let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    // Listed trigram.
    close(lm.log10_prob(&["<s>", "a"], "red"), -0.1);
    // The context is cut to its last two words: "a red bus" is listed.
    close(lm.log10_prob(&["<s>", "a", "red"], "bus"), -0.15);
    // "<s> a bus": bo(<s> a) -0.05, "a bus" unlisted: bo(a) -0.25, p(bus) -1.0 = -1.30.
    close(lm.log10_prob(&["<s>", "a"], "bus"), -1.3);
    // "a red stops": bo(a red) -0.1, bo(red) -0.2, p(stops) -1.3 = -1.6.
    close(lm.log10_prob(&["a", "red"], "stops"), -1.6);
    // "bus stops </s>": bo(bus stops) = 0 (listed without a backoff), p(</s> | stops) -0.2.
    close(lm.log10_prob(&["bus", "stops"], "</s>"), -0.2);
    // An unknown word is <unk>: bo(red bus) 0, bo(bus) -0.3, p(<unk>) -0.8 = -1.1.
    close(lm.log10_prob(&["red", "bus"], "zebra"), -1.1);
    // No context: the unigram.
    close(lm.log10_prob(&[], "a"), -0.7);
    // "<s> a red bus stops </s>": -0.3 (a|<s>) - 0.1 (red|<s> a) - 0.15 (bus|a red)
    //   - 0.4 (stops|red bus: bo 0 + p(stops|bus)) - 0.2 (</s>|bus stops) = -1.15.
    close(lm.sentence_log10_prob("a red bus stops", true, true), -1.15);
}

#[test]
fn malformed_arpa_files_are_errors_with_the_line() {
    let good = std::fs::read_to_string(TINY_ARPA).unwrap();
    let dir = std::env::temp_dir().join(format!("stapes_speech_decode_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        // (edit, what the message must say)
        (good.replace("ngram 2=5", "ngram 2=6"), vec!["line 18", "declares 6 2-grams", "lists 5"]),
        (good.replace("-0.6\tred bus", "-0.6\tred bus\tzero"), vec!["line 21", "\"zero\""]),
        (good.replace("-0.6\tred bus", "-0.6\tred"), vec!["line 21", "fields"]),
        (good.replace("-0.15\ta red bus", "-0.15\ta red car"), vec!["line 27", "\"car\"", "not a unigram"]),
        (good.replace("\\end\\", ""), vec!["expected \\end\\"]),
        (good.replace("\\3-grams:", "\\4-grams:"), vec!["line 25", "expected \\3-grams:"]),
        (good.replace("ngram 1=7", "ngram 1=x"), vec!["line 5", "\"x\""]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.arpa"));
        std::fs::write(&path, text).unwrap();
        let e = NgramLm::from_arpa_file(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        for n in needles {
            assert!(e.contains(n), "case {i}: {e:?} lacks {n:?}");
        }
        assert!(NgramLm::from_arpa_str(text).is_err());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------------------------------------
// LM fusion: beam search with an LM against greedy
// ------------------------------------------------------------------------------------------------

/// A bigram ARPA model of `sentences` with absolute discounting (D = 0.5) and Katz backoff to
/// an ML unigram that reserves one count for `<unk>`:
///   p(w | h) = (c(h w) - D) / c(h)             for seen bigrams
///            = bo(h) p1(w)                      otherwise,
///   bo(h)    = (D * types(h) / c(h)) / (1 - sum of p1 over the words seen after h),
/// so that every p(. | h) sums to 1 over the vocabulary, `</s>` and `<unk>`.
fn bigram_arpa(sentences: &[String]) -> String {
    const D: f64 = 0.5;
    let mut uni: BTreeMap<&str, f64> = BTreeMap::new();
    let mut bi: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for s in sentences {
        let toks: Vec<&str> = std::iter::once("<s>").chain(s.split_whitespace()).chain(["</s>"]).collect();
        for w in &toks[1..] {
            *uni.entry(w).or_default() += 1.0;
        }
        for p in toks.windows(2) {
            *bi.entry((p[0], p[1])).or_default() += 1.0;
        }
    }
    let n: f64 = uni.values().sum::<f64>() + 1.0;
    let p1 = |w: &str| uni.get(w).map_or(1.0 / n, |c| c / n);
    let mut hist: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new(); // count, types, seen p1 mass
    for (&(h, w), &c) in &bi {
        let e = hist.entry(h).or_default();
        e.0 += c;
        e.1 += 1.0;
        e.2 += p1(w);
    }
    let backoff = |h: &str| hist.get(h).map(|&(c, types, seen)| (D * types / c) / (1.0 - seen));
    let mut out = format!("\\data\\\nngram 1={}\nngram 2={}\n\n\\1-grams:\n", uni.len() + 2, bi.len());
    out += &format!("{:.7}\t<unk>\n", (1.0 / n).log10());
    out += &format!("-99\t<s>\t{:.7}\n", backoff("<s>").unwrap().log10());
    for &w in uni.keys() {
        match backoff(w) {
            Some(b) => out += &format!("{:.7}\t{w}\t{:.7}\n", p1(w).log10(), b.log10()),
            None => out += &format!("{:.7}\t{w}\n", p1(w).log10()),
        }
    }
    out += "\n\\2-grams:\n";
    for (&(h, w), &c) in &bi {
        out += &format!("{:.7}\t{h} {w}\n", ((c - D) / hist[h].0).log10());
    }
    out + "\n\\end\\\n"
}

fn wer(refs: &[String], hyps: &[String]) -> f64 {
    corpus_error_rates(refs.iter().map(String::as_str).zip(hyps.iter().map(String::as_str))).0.rate()
}

fn best_texts(hyps: &[Vec<Hypothesis>]) -> Vec<String> {
    hyps.iter().map(|h| h[0].text.clone()).collect()
}

#[test]
fn lm_fusion_lowers_wer_against_greedy() {
    let vocab = Vocab::english();
    let c = vocab.len();
    // The LM: 400 sentences of the grammar (a disjoint seed from the test sentences).
    let mut g = Generator::new(2024);
    let train: Vec<String> = (0..400).map(|_| sentence(&mut g)).collect();
    let dir = std::env::temp_dir().join(format!("stapes_speech_decode_lm_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let arpa = dir.join("bigram.arpa");
    std::fs::write(&arpa, bigram_arpa(&train)).unwrap();
    let lm = Arc::new(NgramLm::from_arpa_file(&arpa).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(lm.order(), 2);

    // The estimator is a proper model: every conditional distribution sums to 1.
    let mut support: Vec<&str> = lm.vocabulary().iter().map(String::as_str).filter(|&w| w != "<s>").collect();
    support.sort();
    for h in lm.vocabulary().iter().filter(|&w| w != "</s>" && w != "<unk>") {
        let total: f64 = support.iter().map(|w| 10f64.powf(f64::from(lm.log10_prob(&[h], w)))).sum();
        assert!((total - 1.0).abs() < 1e-4, "p(. | {h}) sums to {total}");
    }

    // 50 test utterances.
    let mut g = Generator::new(7);
    let refs: Vec<String> = (0..50).map(|_| sentence(&mut g)).collect();
    let utts: Vec<Vec<f32>> = refs.iter().map(|r| synthesize(&mut g, &vocab, r, 0.12)).collect();
    let (x, lens) = batch_tensor(&utts, c, true);

    let greedy: Vec<String> =
        greedy_decode_batch(&x, &lens, 0, true).unwrap().iter().map(|t| tokens_text(&vocab, t)).collect();
    let no_lm_cfg = BeamSearchConfig::default();
    let lm_cfg = BeamSearchConfig { lm: Some(lm.clone()), ..Default::default() };
    let no_lm = beam_search_decode_batch(&x, &lens, true, &vocab, &no_lm_cfg).unwrap();
    let started = std::time::Instant::now();
    let with_lm = beam_search_decode_batch(&x, &lens, true, &vocab, &lm_cfg).unwrap();
    let lm_seconds = started.elapsed().as_secs_f64();
    let pruned_cfg = BeamSearchConfig { prune_history: true, ..lm_cfg.clone() };
    let pruned = beam_search_decode_batch(&x, &lens, true, &vocab, &pruned_cfg).unwrap();

    let w_greedy = wer(&refs, &greedy);
    let w_beam = wer(&refs, &best_texts(&no_lm));
    let w_lm = wer(&refs, &best_texts(&with_lm));
    let w_pruned = wer(&refs, &best_texts(&pruned));
    let frames: usize = lens.iter().sum();
    println!(
        "50 utterances, {} words, {frames} frames: WER greedy {:.2}%, beam (no LM) {:.2}%, beam + bigram LM {:.2}% \
         (alpha 0.5, beta 1.5, width 100), with prune_history {:.2}%",
        refs.iter().map(|r| r.split_whitespace().count()).sum::<usize>(),
        100.0 * w_greedy,
        100.0 * w_beam,
        100.0 * w_lm,
        100.0 * w_pruned
    );
    println!(
        "  beam + LM decoding: {:.0} ms for the batch ({:.1} us per frame, rayon over {} threads)",
        1e3 * lm_seconds,
        1e6 * lm_seconds / frames as f64,
        rayon::current_num_threads()
    );
    for (i, r) in refs.iter().enumerate().take(3) {
        println!("  ref:    {r}\n  greedy: {}\n  lm:     {}", greedy[i], with_lm[i][0].text);
    }
    assert!(w_greedy >= 0.1, "the synthetic confusions should make greedy err ({w_greedy})");
    assert!(w_lm < w_greedy, "beam + LM WER {w_lm} is not below greedy's {w_greedy}");
    assert!(w_lm <= 0.5 * w_greedy, "beam + LM WER {w_lm} should at least halve greedy's {w_greedy}");
    assert!(w_pruned < w_greedy);
    // The LM terms are in the scores.
    for h in &with_lm {
        assert!((h[0].score - h[0].acoustic_score - h[0].lm_score).abs() < 1e-9);
        assert!(h[0].lm_score != 0.0);
    }

    // An LM with alpha = beta = 0 decodes exactly as no LM (same hypotheses, same scores).
    let zero_cfg = BeamSearchConfig { alpha: 0.0, beta: 0.0, ..lm_cfg.clone() };
    let zero = beam_search_decode_batch(&x, &lens, true, &vocab, &zero_cfg).unwrap();
    assert_eq!(zero, no_lm);
}

// ------------------------------------------------------------------------------------------------
// A Transformer LM trained by stapes: n-best rescoring and shallow fusion (issue 18)
// ------------------------------------------------------------------------------------------------

#[test]
fn transformer_lm_rescoring_and_fusion_lower_wer() {
    use stapes::speech::beam::NeuralLm;
    use stapes::speech::lm_train::{train_lm, LmRunConfig, LmTrainOptions};
    use stapes::speech::nnlm::TransformerLmConfig;
    let vocab = Vocab::english();
    let c = vocab.len();
    // The LM: a character Transformer trained on 3000 sentences of the grammar (other seeds
    // than the test sentences).
    let mut g = Generator::new(2025);
    let train: Vec<String> = (0..3000).map(|_| sentence(&mut g)).collect();
    let dir = std::env::temp_dir().join(format!("stapes_nnlm_decode_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("text.txt"), train.join("\n")).unwrap();
    let mut cfg = LmRunConfig {
        model: TransformerLmConfig {
            d_model: 64,
            nhead: 4,
            num_layers: 2,
            dim_feedforward: 128,
            dropout: 0.0,
            max_len: 128,
            ..TransformerLmConfig::default()
        },
        ..LmRunConfig::default()
    };
    // the acoustic model's characters, so that the LM can score every transcript
    cfg.tokenizer.chars = Some(vocab.chars().iter().collect());
    cfg.training.batch_size = 16;
    cfg.training.seq_len = 64;
    cfg.training.epochs = 4;
    cfg.training.checkpoint_every_steps = 0;
    cfg.schedule = stapes::speech::config::ScheduleConfig::Constant { lr: 2e-3 };
    cfg.logging.tensorboard = false;
    let t0 = std::time::Instant::now();
    let report = train_lm(&cfg, &[dir.join("text.txt")], &dir.join("run"), &LmTrainOptions::default(), |_| {}).unwrap();
    let train_s = t0.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).unwrap();
    let ppl = report.epochs.last().unwrap().dev_perplexity;
    let (model, tokenizer) = (Arc::new(report.model), Arc::new(report.tokenizer));

    let mut g = Generator::new(7);
    let refs: Vec<String> = (0..40).map(|_| sentence(&mut g)).collect();
    let utts: Vec<Vec<f32>> = refs.iter().map(|r| synthesize(&mut g, &vocab, r, 0.12)).collect();
    let (x, lens) = batch_tensor(&utts, c, true);
    let greedy: Vec<String> =
        greedy_decode_batch(&x, &lens, 0, true).unwrap().iter().map(|t| tokens_text(&vocab, t)).collect();
    let beam = BeamSearchConfig { beam_width: 16, ..Default::default() };
    let t0 = std::time::Instant::now();
    let no_lm = beam_search_decode_batch(&x, &lens, true, &vocab, &beam).unwrap();
    let beam_s = t0.elapsed().as_secs_f64();
    let nn = |weight: f64, word_bonus: f64| {
        Arc::new(NeuralLm { model: model.clone(), tokenizer: tokenizer.clone(), weight, word_bonus })
    };
    let nnlm = nn(0.8, 1.0);
    // (a) rescoring the no-LM search's 16-best
    let mut rescored = no_lm.clone();
    for h in &mut rescored {
        nnlm.rescore(h).unwrap();
    }
    // (b) shallow fusion
    let fusion_cfg = BeamSearchConfig { nnlm: Some(nnlm.clone()), ..beam.clone() };
    let t0 = std::time::Instant::now();
    let fused = beam_search_decode_batch(&x, &lens, true, &vocab, &fusion_cfg).unwrap();
    let fusion_s = t0.elapsed().as_secs_f64();

    let (w_greedy, w_beam) = (wer(&refs, &greedy), wer(&refs, &best_texts(&no_lm)));
    let (w_rescore, w_fusion) = (wer(&refs, &best_texts(&rescored)), wer(&refs, &best_texts(&fused)));
    println!(
        "char Transformer LM (d 64, 2 layers): held-out perplexity {ppl:.3} after {:.1}s of training; 40 \
         utterances: WER greedy {:.2}%, beam 16 {:.2}%, + LM rescoring {:.2}%, + LM fusion {:.2}%; decoding \
         {:.0} ms without the LM, {:.0} ms with fusion",
        train_s,
        100.0 * w_greedy,
        100.0 * w_beam,
        100.0 * w_rescore,
        100.0 * w_fusion,
        1e3 * beam_s,
        1e3 * fusion_s
    );
    assert!(ppl < 5.0, "held-out perplexity {ppl} (uniform: {})", tokenizer.vocab_size());
    assert!(w_greedy >= 0.1, "the synthetic confusions should make greedy err ({w_greedy})");
    assert!(w_rescore < w_greedy && w_rescore < w_beam, "rescoring {w_rescore} vs greedy {w_greedy}, beam {w_beam}");
    assert!(w_fusion < w_greedy && w_fusion < w_beam, "fusion {w_fusion} vs greedy {w_greedy}, beam {w_beam}");
    for h in &fused {
        assert!((h[0].score - h[0].acoustic_score - h[0].lm_score).abs() < 1e-9);
    }
    // weight and bonus 0: exactly the search without the LM
    let zero_cfg = BeamSearchConfig { nnlm: Some(nn(0.0, 0.0)), ..beam.clone() };
    assert_eq!(beam_search_decode_batch(&x, &lens, true, &vocab, &zero_cfg).unwrap(), no_lm);
    // an LM that cannot spell the acoustic model's characters is refused
    let digits_only = Arc::new(NeuralLm {
        model: model.clone(),
        tokenizer: Arc::new(stapes::speech::lm_train::LmTokenizer::chars(" abc", true).unwrap()),
        weight: 1.0,
        word_bonus: 0.0,
    });
    let e = beam_search_decode_batch(&x, &lens, true, &vocab, &BeamSearchConfig { nnlm: Some(digits_only), ..beam })
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot express"), "{e}");
}
