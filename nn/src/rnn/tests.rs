//! Unit tests of the recurrent layers. Parity with PyTorch (values and every gradient) is
//! checked by `tests/parity_nn_rnn.rs` at the workspace root.

use super::*;
use crate::module::Module;
use stapes_autograd::gradcheck;
use stapes_tensor::{Generator, Tensor};

fn randn(seed: u64, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, dtype, &Device::Cpu).unwrap()
}

fn bi2(input: usize, hidden: usize) -> RnnConfig {
    RnnConfig { num_layers: 2, bidirectional: true, ..RnnConfig::new(input, hidden) }
}

#[test]
fn parameter_names_order_shapes_and_init_bounds() {
    let lstm = Lstm::new(bi2(5, 7)).unwrap();
    let named = lstm.named_parameters();
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = Vec::new();
    for k in 0..2 {
        for s in ["", "_reverse"] {
            for w in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                want.push(format!("{w}_l{k}{s}"));
            }
        }
    }
    assert_eq!(names, want);
    assert_eq!(named[0].1.dims(), vec![28, 5]);
    assert_eq!(named[1].1.dims(), vec![28, 7]);
    assert_eq!(named[8].1.dims(), vec![28, 14]);
    let bound = 1.0 / 7f64.sqrt();
    for (_, p) in &named {
        assert!(p.tensor().to_vec_f64().unwrap().iter().all(|v| v.abs() <= bound));
    }
    let gru = Gru::new(RnnConfig { bias: false, ..RnnConfig::new(3, 4) }).unwrap();
    let names: Vec<String> = gru.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight_ih_l0", "weight_hh_l0"]);
    assert_eq!(gru.parameters()[0].dims(), vec![12, 3]);
}

/// Changing the padded frames of a batch changes neither the outputs at real positions nor
/// the final states, and padded outputs are zero; for both cells and both layouts.
#[test]
fn padded_frames_change_nothing() {
    let (t, b, i, h) = (6, 3, 5, 7);
    let lengths = [6, 2, 4];
    for batch_first in [false, true] {
        let cfg = RnnConfig { batch_first, ..bi2(i, h) };
        let lstm = Lstm::new_with(cfg.clone(), DType::F64, &Device::Cpu).unwrap();
        let gru = Gru::new_with(cfg, DType::F64, &Device::Cpu).unwrap();
        let shape = if batch_first { [b, t, i] } else { [t, b, i] };
        let x1 = randn(1, &shape, DType::F64);
        let mut v = x1.to_vec::<f64>().unwrap();
        for (bi, &len) in lengths.iter().enumerate() {
            for ti in len..t {
                for k in 0..i {
                    let idx = if batch_first { (bi * t + ti) * i + k } else { (ti * b + bi) * i + k };
                    v[idx] = 100.0 + (idx as f64).sin() * 50.0;
                }
            }
        }
        let x2 = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        let run = |x: &Tensor| {
            let x = Var::constant(x.clone());
            let l = lstm.forward_with(&x, None, Some(&lengths)).unwrap();
            let g = gru.forward_with(&x, None, Some(&lengths)).unwrap();
            [l.output, l.h_n, l.c_n, g.output, g.h_n].map(|v| v.tensor().to_vec::<f64>().unwrap())
        };
        let (a, c) = (run(&x1), run(&x2));
        for (k, (p, q)) in a.iter().zip(&c).enumerate() {
            assert_eq!(p, q, "output {k} depends on padded frames (batch_first {batch_first})");
        }
        // padded outputs are zero, real ones are not
        let out = &a[0];
        for (bi, &len) in lengths.iter().enumerate() {
            for ti in 0..t {
                let row = if batch_first { bi * t + ti } else { ti * b + bi };
                let r = &out[row * 2 * h..(row + 1) * 2 * h];
                assert_eq!(r.iter().all(|&x| x == 0.0), ti >= len, "b {bi} t {ti}");
            }
        }
    }
}

/// The reverse direction of a short sequence equals that of the same sequence run alone.
#[test]
fn reverse_direction_starts_at_the_last_real_frame() {
    let (t, i, h) = (5, 3, 4);
    let lstm =
        Lstm::new_with(RnnConfig { bidirectional: true, ..RnnConfig::new(i, h) }, DType::F64, &Device::Cpu).unwrap();
    let x = randn(3, &[t, 2, i], DType::F64);
    let full = lstm.forward_with(&Var::constant(x.clone()), None, Some(&[5, 3])).unwrap();
    let alone = x.narrow(0usize, 0, 3).unwrap().narrow(1usize, 1, 1).unwrap();
    let single = lstm.forward_with(&Var::constant(alone), None, None).unwrap();
    let got = full.output.tensor().narrow(0usize, 0, 3).unwrap().narrow(1usize, 1, 1).unwrap();
    let (g, s) = (got.to_vec::<f64>().unwrap(), single.output.tensor().to_vec::<f64>().unwrap());
    assert!(g.iter().zip(&s).all(|(a, b)| (a - b).abs() < 1e-14));
    let hn = full.h_n.tensor().narrow(1usize, 1, 1).unwrap().to_vec::<f64>().unwrap();
    assert!(hn.iter().zip(single.h_n.tensor().to_vec::<f64>().unwrap()).all(|(a, b)| (a - b).abs() < 1e-14));
}

/// Backward through input and initial states against finite differences (f64), with
/// variable lengths, 2 bidirectional layers and batch_first.
#[test]
fn gradients_match_finite_differences() {
    let (t, b, i, h) = (4, 3, 3, 4);
    let lengths = [4, 1, 3];
    let cfg = RnnConfig { batch_first: true, ..bi2(i, h) };
    let lstm = Lstm::new_with(cfg.clone(), DType::F64, &Device::Cpu).unwrap();
    let gru = Gru::new_with(cfg, DType::F64, &Device::Cpu).unwrap();
    let inputs = [randn(5, &[b, t, i], DType::F64), randn(6, &[4, b, h], DType::F64), randn(7, &[4, b, h], DType::F64)];
    let f_lstm = |v: &[Var]| {
        let o = lstm.forward_with(&v[0], Some((&v[1], &v[2])), Some(&lengths))?;
        let flat = |x: &Var| x.contiguous()?.reshape(x.tensor().elem_count());
        Var::cat(&[&flat(&o.output)?, &flat(&o.h_n)?, &flat(&o.c_n)?], 0usize)
    };
    let r = gradcheck(f_lstm, &inputs, 1e-6, 1e-7, 1e-6).unwrap();
    assert!(r.checked > 0);
    let f_gru = |v: &[Var]| {
        let o = gru.forward_with(&v[0], Some(&v[1]), Some(&lengths))?;
        let flat = |x: &Var| x.contiguous()?.reshape(x.tensor().elem_count());
        Var::cat(&[&flat(&o.output)?, &flat(&o.h_n)?], 0usize)
    };
    gradcheck(f_gru, &inputs[..2], 1e-6, 1e-7, 1e-6).unwrap();
}

#[test]
fn dropout_between_layers_only_in_training() {
    let cfg = RnnConfig { num_layers: 2, dropout: 0.5, ..RnnConfig::new(3, 4) };
    let lstm = Lstm::new(cfg).unwrap();
    let x = Var::constant(randn(8, &[5, 2, 3], DType::F32));
    lstm.eval();
    let a = lstm.forward_with(&x, None, None).unwrap().output.tensor().to_vec::<f32>().unwrap();
    let b = lstm.forward_with(&x, None, None).unwrap().output.tensor().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    lstm.train(true);
    let c = lstm.forward_with(&x, None, None).unwrap().output.tensor().to_vec::<f32>().unwrap();
    assert_ne!(a, c);
}

#[test]
fn bad_inputs_are_errors() {
    let lstm = Lstm::new(bi2(5, 7)).unwrap();
    let gru = Gru::new(RnnConfig::new(5, 7)).unwrap();
    let x = Var::constant(randn(1, &[6, 3, 5], DType::F32));
    let msg = |r: Result<LstmOutput>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(lstm.forward_with(&Var::constant(randn(1, &[6, 5], DType::F32)), None, None)).contains("3-D"));
    assert!(msg(lstm.forward_with(&Var::constant(randn(1, &[6, 3, 4], DType::F32)), None, None)).contains("input_size"));
    assert!(msg(lstm.forward_with(&x, None, Some(&[6, 7, 1]))).contains("lengths[1] = 7"));
    assert!(msg(lstm.forward_with(&x, None, Some(&[6, 0, 1]))).contains("lengths[1] = 0"));
    assert!(msg(lstm.forward_with(&x, None, Some(&[6, 1]))).contains("3 lengths"));
    let h_bad = Var::constant(randn(2, &[2, 3, 7], DType::F32));
    let h_ok = Var::constant(randn(2, &[4, 3, 7], DType::F32));
    assert!(msg(lstm.forward_with(&x, Some((&h_bad, &h_ok)), None)).contains("h0"));
    assert!(msg(lstm.forward_with(&x, Some((&h_ok, &h_bad)), None)).contains("c0"));
    let h64 = Var::constant(randn(2, &[4, 3, 7], DType::F64));
    assert!(matches!(lstm.forward_with(&x, Some((&h64, &h_ok)), None), Err(Error::DTypeMismatch { .. })));
    let x64 = Var::constant(randn(1, &[6, 3, 5], DType::F64));
    assert!(matches!(gru.forward_with(&x64, None, None), Err(Error::DTypeMismatch { .. })));
    let xi = Var::constant(Tensor::zeros([6, 3, 5], DType::I64, &Device::Cpu).unwrap());
    assert!(matches!(gru.forward_with(&xi, None, None), Err(Error::UnsupportedDType { .. })));
    assert!(gru.forward_with(&Var::constant(randn(1, &[0, 3, 5], DType::F32)), None, None).is_err());
    assert!(Lstm::new(RnnConfig { dropout: 1.5, ..RnnConfig::new(2, 2) }).is_err());
    assert!(Gru::new(RnnConfig::new(2, 0)).is_err());
}

/// Buffers of 1 MiB and more come from the CPU cache with stale contents: results must not
/// depend on them. Run A, then B (other values, same sizes), then A again; and check A against
/// the same model in f64.
#[test]
fn results_do_not_depend_on_reused_buffers() {
    let (t, b, i, h) = (64, 8, 16, 128);
    let lengths = [64, 10, 33, 64, 1, 50, 64, 7];
    let cfg = RnnConfig { bidirectional: true, ..RnnConfig::new(i, h) };
    let lstm = Lstm::new(cfg.clone()).unwrap();
    let gru = Gru::new(cfg.clone()).unwrap();
    let run = |seed: u64| {
        let x = Var::leaf(randn(seed, &[t, b, i], DType::F32));
        let l = lstm.forward_with(&x, None, Some(&lengths)).unwrap();
        let g = gru.forward_with(&x, None, Some(&lengths)).unwrap();
        let loss = l.output.sum_all().unwrap().add(&g.output.sum_all().unwrap()).unwrap();
        loss.add(&l.c_n.sum_all().unwrap()).unwrap().backward().unwrap();
        let mut v = l.output.tensor().to_vec_f64().unwrap();
        v.extend(g.output.tensor().to_vec_f64().unwrap());
        v.extend(x.grad().unwrap().to_vec_f64().unwrap());
        v
    };
    let a = run(1);
    let _ = run(2);
    assert_eq!(a, run(1));
    // the same weights in f64 (sizes differ, so the cache holds other buffers)
    let l64 = Lstm::new_with(cfg.clone(), DType::F64, &Device::Cpu).unwrap();
    let g64 = Gru::new_with(cfg, DType::F64, &Device::Cpu).unwrap();
    l64.load_state_dict(&lstm.state_dict(), true).unwrap();
    g64.load_state_dict(&gru.state_dict(), true).unwrap();
    let x = Var::constant(randn(1, &[t, b, i], DType::F32).to_dtype(DType::F64).unwrap());
    let want = l64.forward_with(&x, None, Some(&lengths)).unwrap().output.tensor().to_vec::<f64>().unwrap();
    let worst = a.iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "f32 vs f64: {worst}");
    let want = g64.forward_with(&x, None, Some(&lengths)).unwrap().output.tensor().to_vec::<f64>().unwrap();
    let got = &a[t * b * 2 * h..2 * t * b * 2 * h];
    let worst = got.iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "GRU f32 vs f64: {worst}");
}

#[test]
fn forward_trait_is_the_common_case_and_chains_in_sequential() {
    use crate::layers::{Linear, Sequential};
    use crate::module::Forward;
    let x = Var::constant(randn(21, &[6, 3, 5], DType::F32));
    let lstm = Lstm::new(bi2(5, 7)).unwrap();
    let rich = lstm.forward_with(&x, None, None).unwrap().output.tensor().to_vec::<f32>().unwrap();
    assert_eq!(Forward::forward(&lstm, &x).unwrap().tensor().to_vec::<f32>().unwrap(), rich);
    let gru = Gru::new(RnnConfig::new(5, 4)).unwrap();
    let rich = gru.forward_with(&x, None, None).unwrap().output.tensor().to_vec::<f32>().unwrap();
    assert_eq!(gru.forward(&x).unwrap().tensor().to_vec::<f32>().unwrap(), rich);
    // An LSTM inside a Sequential, as nn.Sequential cannot do without a wrapper in PyTorch.
    let net = Sequential::new().with(Lstm::new(bi2(5, 7)).unwrap()).with(Linear::new(14, 3, true).unwrap());
    assert_eq!(net.forward(&x).unwrap().dims(), &[6, 3, 3]);
    assert!(net.named_parameters().iter().any(|(n, _)| n == "0.weight_hh_l1_reverse"));
}
