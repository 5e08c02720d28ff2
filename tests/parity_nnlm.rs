//! The Transformer LM against PyTorch (issue 18): `tools/golden/nnlm.py` built PyTorch's
//! `word_language_model`-style TransformerModel (embedding × sqrt(d), sinusoidal positions,
//! `nn.TransformerEncoder` under a causal mask, a linear output), in f64, for a pre-norm GELU
//! model and a post-norm ReLU model with the output tied to the embedding. Its `state_dict`
//! loads by name; logits of a padded batch, sequence log-probabilities and one training step's
//! gradients are compared. Both sides build the sinusoidal table in f32 (PyTorch's buffer),
//! computed in a slightly different order, so f64 results agree to about 1e-8 relative rather
//! than to the last bit. The cached incremental `step` gives the same log-probabilities as the
//! full forward pass.

mod common;

use std::collections::BTreeMap;

use common::{assert_close, load_golden};
use stapes::autograd::Var;
use stapes::nn::Module;
use stapes::speech::nnlm::{TransformerLm, TransformerLmConfig};
use stapes::tensor::{DType, Tensor};

fn model(case: &str) -> (TransformerLm, BTreeMap<String, Tensor>) {
    let g = load_golden(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/nnlm_").to_string() + case + ".safetensors")
        .tensors;
    let tied = case.contains("tied");
    let cfg = TransformerLmConfig {
        vocab_size: 20,
        d_model: 32,
        nhead: 4,
        num_layers: 2,
        dim_feedforward: 64,
        dropout: 0.0,
        max_len: 64,
        norm_first: case.starts_with("prenorm"),
        activation: if case.contains("gelu") { "gelu" } else { "relu" }.into(),
        tie_weights: tied,
    };
    let m = TransformerLm::new(&cfg).unwrap();
    m.to_dtype(DType::F64).unwrap();
    let mut state: BTreeMap<String, Tensor> =
        g.iter().filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone()))).collect();
    if tied {
        // PyTorch lists the shared matrix twice; stapes holds it once, as the embedding
        assert_eq!(state["out.weight"].to_vec::<f64>().unwrap(), state["embed.weight"].to_vec::<f64>().unwrap());
        state.remove("out.weight");
    }
    m.load_state_dict(&state, true).unwrap();
    (m, g)
}

#[test]
fn logits_log_probs_and_gradients_match_pytorch() {
    for case in ["prenorm_gelu", "postnorm_relu_tied"] {
        let (m, g) = model(case);
        m.train(true);
        let ids = &g["ids"];
        let lens: Vec<usize> = g["lengths"].to_vec::<i64>().unwrap().iter().map(|&n| n as usize).collect();
        let logits = m.forward(ids, Some(&lens)).unwrap();
        // padded positions' outputs are meaningless (PyTorch's are too): compare valid ones
        let (b, t, v) = (3, 7, 20);
        let got = logits.tensor().to_vec::<f64>().unwrap();
        let want = g["logits"].to_vec::<f64>().unwrap();
        for (i, &len) in lens.iter().enumerate() {
            for k in 0..len {
                for c in 0..v {
                    let at = (i * t + k) * v + c;
                    assert!(
                        (got[at] - want[at]).abs() < 1e-6 * want[at].abs().max(1.0),
                        "{case}: logits[{i},{k},{c}] {} vs {}",
                        got[at],
                        want[at]
                    );
                }
            }
        }
        // sequence log-probabilities
        let all = ids.to_vec::<i64>().unwrap();
        let seqs: Vec<Vec<i64>> = (0..b).map(|i| all[i * t..i * t + lens[i]].to_vec()).collect();
        let lp = m.sequence_log_probs(&seqs).unwrap();
        for (i, (a, w)) in lp.iter().zip(g["seq_logp"].to_vec::<f64>().unwrap()).enumerate() {
            assert!((a - w).abs() < 1e-4, "{case}: sequence {i}: {a} vs {w}");
        }
        // one training step: mean cross-entropy over the valid positions
        let lsm = logits.log_softmax(2usize).unwrap();
        let mut targets = vec![0i64; b * t];
        let mut weights = vec![0f64; b * t];
        let n_valid: usize = lens.iter().map(|l| l - 1).sum();
        for (i, &len) in lens.iter().enumerate() {
            for k in 0..len - 1 {
                targets[i * t + k] = all[i * t + k + 1];
                weights[i * t + k] = 1.0 / n_valid as f64;
            }
        }
        let tgt = Tensor::from_vec(targets, [b, t, 1], &stapes::tensor::Device::Cpu).unwrap();
        let w = Var::constant(Tensor::from_vec(weights, [b, t], &stapes::tensor::Device::Cpu).unwrap());
        let picked = lsm.gather(2usize, &tgt).unwrap().reshape([b, t]).unwrap();
        let loss = picked.mul(&w).unwrap().sum_all().unwrap().neg().unwrap();
        let l = loss.tensor().to_vec::<f64>().unwrap()[0];
        let want_l = g["loss"].to_vec::<f64>().unwrap()[0];
        assert!((l - want_l).abs() < 1e-7 * want_l.abs().max(1.0), "{case}: loss {l} vs {want_l}");
        loss.backward().unwrap();
        for (name, p) in m.named_parameters() {
            let grad = p.grad().unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            assert_close(&grad, &g[&format!("grad.{name}")], Some(1e-5), Some(1e-6), &format!("{case} grad.{name}"));
        }
    }
}

/// The cached step against the full forward pass: in f64 (the step as tensor ops) and in f32
/// on the CPU (the packed host step), three prefixes of different lengths extended together.
#[test]
fn cached_steps_equal_the_full_forward() {
    for case in ["prenorm_gelu", "postnorm_relu_tied"] {
        let (m, g) = model(case);
        m.eval();
        let all = g["ids"].to_vec::<i64>().unwrap();
        let lens: Vec<usize> = g["lengths"].to_vec::<i64>().unwrap().iter().map(|&n| n as usize).collect();
        let seqs: Vec<Vec<i64>> = (0..3).map(|i| all[i * 7..i * 7 + lens[i]].to_vec()).collect();
        // the full forward's next-token log-probabilities at every position (f64)
        let full: Vec<Vec<f64>> = seqs
            .iter()
            .map(|s| {
                let ids = Tensor::from_vec(s.clone(), [1, s.len()], &stapes::tensor::Device::Cpu).unwrap();
                let lp = stapes::autograd::no_grad(|| m.forward(&ids, None)).unwrap().tensor().log_softmax(-1).unwrap();
                lp.to_vec::<f64>().unwrap()
            })
            .collect();
        for (dtype, tol) in [(DType::F64, 1e-5), (DType::F32, 2e-5)] {
            m.to_dtype(dtype).unwrap();
            // the three prefixes extended together, one token per step (they end at different
            // times)
            let mut states: Vec<_> = (0..3).map(|_| m.empty_state()).collect();
            for k in 0..7 {
                let live: Vec<usize> = (0..3).filter(|&i| k < lens[i]).collect();
                let refs: Vec<_> = live.iter().map(|&i| &states[i]).collect();
                let toks: Vec<i64> = live.iter().map(|&i| seqs[i][k]).collect();
                let (lp, next) = m.step(&refs, &toks).unwrap();
                let lp = lp.to_vec::<f32>().unwrap();
                for (j, (&i, st)) in live.iter().zip(next).enumerate() {
                    for c in 0..20 {
                        let (a, w) = (lp[j * 20 + c] as f64, full[i][k * 20 + c]);
                        assert!((a - w).abs() < tol, "{case} {dtype:?}: seq {i} pos {k} class {c}: {a} vs {w}");
                    }
                    assert_eq!(st.len(), k + 1);
                    states[i] = st;
                }
            }
            // one prefix branching into two continuations shares its cache: both branches
            // score as their own full sequences
            let (_, mut st) = m.step(&[&states[0]], &[3]).unwrap();
            let branch = st.pop().unwrap();
            let (lp, _) = m.step(&[&branch, &branch], &[5, 7]).unwrap();
            let lp = lp.to_vec::<f32>().unwrap();
            for (r, tok) in [5i64, 7].into_iter().enumerate() {
                let mut s = seqs[0].clone();
                s.extend([3, tok]);
                let ids = Tensor::from_vec(s.clone(), [1, s.len()], &stapes::tensor::Device::Cpu).unwrap();
                let want = stapes::autograd::no_grad(|| m.forward(&ids, None))
                    .unwrap()
                    .tensor()
                    .log_softmax(-1)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec::<f64>()
                    .unwrap();
                let last = &want[(s.len() - 1) * 20..];
                for c in 0..20 {
                    assert!((f64::from(lp[r * 20 + c]) - last[c]).abs() < tol, "{case} {dtype:?} branch {tok}");
                }
            }
            // a state of another model is refused, not misread
            let other = TransformerLm::new(&TransformerLmConfig {
                vocab_size: 20,
                d_model: 8,
                nhead: 2,
                num_layers: 1,
                dim_feedforward: 8,
                dropout: 0.0,
                max_len: 16,
                ..TransformerLmConfig::default()
            })
            .unwrap();
            let (_, foreign) = other.step(&[&other.empty_state()], &[1]).unwrap();
            let msg = m.step(&[&foreign[0]], &[1]).unwrap_err().to_string();
            assert!(msg.contains("another model"), "{msg}");
            m.to_dtype(DType::F64).unwrap();
        }
    }
}

#[test]
fn sequences_longer_than_the_context_are_scored_in_half_overlapping_windows() {
    let cfg = TransformerLmConfig {
        vocab_size: 9,
        d_model: 8,
        nhead: 2,
        num_layers: 1,
        dim_feedforward: 16,
        dropout: 0.0,
        max_len: 8,
        ..TransformerLmConfig::default()
    };
    let m = TransformerLm::new(&cfg).unwrap();
    m.eval();
    let seq: Vec<i64> = (0..19).map(|i| (i * 7 + 3) % 9).collect();
    let lp_of = |window: &[i64]| {
        let x = Tensor::from_vec(window.to_vec(), [1, window.len()], &stapes::tensor::Device::Cpu).unwrap();
        stapes::autograd::no_grad(|| m.forward(&x, None))
            .unwrap()
            .tensor()
            .log_softmax(-1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    // windows [0, 8), [4, 12), [8, 16), [12, 19): each scores the positions past the previous
    let mut want = 0f64;
    let mut scored = 1;
    for start in [0usize, 4, 8, 12] {
        let end = (start + 8).min(seq.len());
        let lp = lp_of(&seq[start..end]);
        for pos in scored.max(start + 1)..end {
            want += f64::from(lp[(pos - start - 1) * 9 + seq[pos] as usize]);
        }
        scored = end;
    }
    let got = m.sequence_log_probs(&[seq.clone(), seq[..5].to_vec()]).unwrap();
    assert!((got[0] - want).abs() < 1e-5, "{} vs {want}", got[0]);
    let short = lp_of(&seq[..5]);
    let want_short: f64 = (1..5).map(|p| f64::from(short[(p - 1) * 9 + seq[p] as usize])).sum();
    assert!((got[1] - want_short).abs() < 1e-5);
    // the cached step refuses to go past max_len
    let mut st = m.empty_state();
    for &t in &seq[..8] {
        st = m.step(&[&st], &[t]).unwrap().1.pop().unwrap();
    }
    assert!(m.step(&[&st], &[1]).unwrap_err().to_string().contains("max_len"));
}
