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
        for i in 0..b {
            for k in 0..lens[i] {
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
        for i in 0..b {
            for k in 0..lens[i] - 1 {
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

#[test]
fn cached_steps_equal_the_full_forward() {
    for case in ["prenorm_gelu", "postnorm_relu_tied"] {
        let (m, g) = model(case);
        m.eval();
        let all = g["ids"].to_vec::<i64>().unwrap();
        let lens: Vec<usize> = g["lengths"].to_vec::<i64>().unwrap().iter().map(|&n| n as usize).collect();
        let seqs: Vec<Vec<i64>> = (0..3).map(|i| all[i * 7..i * 7 + lens[i]].to_vec()).collect();
        // the full forward's next-token log-probabilities at every position
        let full: Vec<Vec<f64>> = seqs
            .iter()
            .map(|s| {
                let ids = Tensor::from_vec(s.clone(), [1, s.len()], &stapes::tensor::Device::Cpu).unwrap();
                let lp = stapes::autograd::no_grad(|| m.forward(&ids, None)).unwrap().tensor().log_softmax(-1).unwrap();
                lp.to_vec::<f64>().unwrap()
            })
            .collect();
        // the three prefixes extended together, one token per step (they end at different times)
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
                    assert!((a - w).abs() < 1e-5, "{case}: seq {i} pos {k} class {c}: {a} vs {w}");
                }
                assert_eq!(st.len(), k + 1);
                states[i] = st;
            }
        }
    }
}
