//! `nn::Lstm` and `nn::Gru` on `cuda:0` (a GPU, or the CUDA emulator in CI) against the same
//! modules on the CPU: outputs, final states, every parameter gradient and the input and
//! initial-state gradients; unidirectional and bidirectional, two layers, variable lengths.

use stapes_autograd::Var;
use stapes_nn::rnn::{Gru, Lstm, RnnConfig};
use stapes_nn::Module;
use stapes_tensor::{cuda, DType, Device, Error, Generator, Tensor};

const T: usize = 7;
const B: usize = 3;
const I: usize = 5;
const H: usize = 6;
/// Two sequences shorter than the padded length.
const LENGTHS: [usize; B] = [7, 4, 6];

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).unwrap()
}

fn close(what: &str, got: &Tensor, want: &Tensor) {
    const TOL: f64 = 1e-5;
    assert_eq!(got.dims(), want.dims(), "{what}");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= TOL * (1.0 + b.abs()), "{what}[{i}]: cuda {a} vs cpu {b}");
    }
}

/// Everything one run produces, on the CPU.
struct Run {
    values: Vec<(String, Tensor)>,
    grads: Vec<(String, Tensor)>,
}

fn config(bidirectional: bool) -> RnnConfig {
    RnnConfig { num_layers: 2, bidirectional, ..RnnConfig::new(I, H) }
}

/// The inputs of a run: `x` and the initial states (leaves that want gradients) on `dev`.
struct Inputs {
    x: Var,
    h0: Option<Var>,
    c0: Option<Var>,
}

fn inputs(dev: &Device, states: usize, with_state: bool) -> Inputs {
    let leaf = |t: Tensor| Var::new(t.to_device(dev).unwrap(), true);
    let x = leaf(randn(1, &[T, B, I]));
    let (h0, c0) = if with_state {
        (Some(leaf(randn(2, &[states, B, H]))), Some(leaf(randn(3, &[states, B, H]))))
    } else {
        (None, None)
    };
    Inputs { x, h0, c0 }
}

/// Backpropagates fixed random gradients `r_k` into every output (so every output element
/// gets its own gradient): the gradient of `Σ_k Σ out_k · r_k`. (Reductions have no CUDA
/// kernel yet, so no scalar loss.)
fn backprop(outs: &[&Var], dev: &Device) {
    for (k, o) in outs.iter().enumerate() {
        let r = randn(100 + k as u64, o.dims()).to_device(dev).unwrap();
        o.backward_with_options(&r, k + 1 < outs.len()).unwrap();
    }
}

fn collect(module: &dyn Module, inp: &Inputs, outs: Vec<(&str, &Var)>) -> Run {
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
    let values = outs.iter().map(|(n, v)| (n.to_string(), cpu(v.tensor()))).collect();
    let mut grads: Vec<(String, Tensor)> = module
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n.clone(), cpu(&p.grad().unwrap_or_else(|| panic!("no gradient for {n}")))))
        .collect();
    grads.push(("x".into(), cpu(&inp.x.grad().expect("no input gradient"))));
    for (n, v) in [("h0", &inp.h0), ("c0", &inp.c0)] {
        if let Some(v) = v {
            grads.push((n.into(), cpu(&v.grad().unwrap_or_else(|| panic!("no gradient for {n}")))));
        }
    }
    Run { values, grads }
}

fn run_lstm(lstm: &Lstm, dev: &Device, with_state: bool) -> Run {
    let states = 2 * lstm.config().num_directions();
    let inp = inputs(dev, states, with_state);
    let state = inp.h0.as_ref().zip(inp.c0.as_ref());
    let out = lstm.forward_with(&inp.x, state, Some(&LENGTHS)).unwrap();
    assert_eq!(out.output.tensor().device(), dev);
    backprop(&[&out.output, &out.h_n, &out.c_n], dev);
    collect(lstm, &inp, vec![("output", &out.output), ("h_n", &out.h_n), ("c_n", &out.c_n)])
}

fn run_gru(gru: &Gru, dev: &Device, with_state: bool) -> Run {
    let states = 2 * gru.config().num_directions();
    let mut inp = inputs(dev, states, with_state);
    inp.c0 = None;
    let out = gru.forward_with(&inp.x, inp.h0.as_ref(), Some(&LENGTHS)).unwrap();
    assert_eq!(out.output.tensor().device(), dev);
    backprop(&[&out.output, &out.h_n], dev);
    collect(gru, &inp, vec![("output", &out.output), ("h_n", &out.h_n)])
}

fn compare(what: &str, got: &Run, want: &Run) {
    assert_eq!(got.grads.len(), want.grads.len(), "{what}: number of gradients");
    for ((n, g), (_, w)) in got.values.iter().zip(&want.values) {
        close(&format!("{what} {n}"), g, w);
    }
    for ((n, g), (m, w)) in got.grads.iter().zip(&want.grads) {
        assert_eq!(n, m);
        close(&format!("{what} grad {n}"), g, w);
    }
}

#[test]
fn lstm_on_cuda_matches_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for (bidirectional, with_state) in [(false, false), (false, true), (true, true), (true, false)] {
        let what = format!("LSTM bidirectional={bidirectional} state={with_state}");
        let lstm = Lstm::new(config(bidirectional)).unwrap();
        let want = run_lstm(&lstm, &Device::Cpu, with_state);
        lstm.zero_grad();
        lstm.to_device(&dev).unwrap();
        let got = run_lstm(&lstm, &dev, with_state);
        compare(&what, &got, &want);
    }
}

/// Bidirectional layers without biases (the stacked-bias path is skipped on the device).
#[test]
fn rnn_without_bias_on_cuda_matches_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let cfg = RnnConfig { bias: false, ..config(true) };
    let lstm = Lstm::new(cfg.clone()).unwrap();
    let want = run_lstm(&lstm, &Device::Cpu, true);
    lstm.zero_grad();
    lstm.to_device(&dev).unwrap();
    compare("LSTM without bias", &run_lstm(&lstm, &dev, true), &want);
    let gru = Gru::new(cfg).unwrap();
    let want = run_gru(&gru, &Device::Cpu, false);
    gru.zero_grad();
    gru.to_device(&dev).unwrap();
    compare("GRU without bias", &run_gru(&gru, &dev, false), &want);
}

#[test]
fn gru_on_cuda_matches_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for (bidirectional, with_state) in [(false, false), (false, true), (true, true), (true, false)] {
        let what = format!("GRU bidirectional={bidirectional} state={with_state}");
        let gru = Gru::new(config(bidirectional)).unwrap();
        let want = run_gru(&gru, &Device::Cpu, with_state);
        gru.zero_grad();
        gru.to_device(&dev).unwrap();
        let got = run_gru(&gru, &dev, with_state);
        compare(&what, &got, &want);
    }
}

/// Errors, not panics: f64 has no CUDA kernel, and a module left on the CPU refuses a CUDA
/// input.
#[test]
fn cuda_rnn_errors() {
    let Some(dev) = cuda::test_device() else { return };
    let lstm = Lstm::new_with(config(false), DType::F64, &Device::Cpu).unwrap();
    lstm.to_device(&dev).unwrap();
    let x = Var::constant(randn(1, &[T, B, I]).to_dtype(DType::F64).unwrap().to_device(&dev).unwrap());
    match lstm.forward_with(&x, None, None) {
        Err(Error::NoCudaKernel { .. }) => {}
        Err(e) => panic!("expected NoCudaKernel, got {e}"),
        Ok(_) => panic!("expected NoCudaKernel, got a result"),
    }
    let gru = Gru::new(config(true)).unwrap();
    let x = Var::constant(randn(1, &[T, B, I]).to_device(&dev).unwrap());
    match gru.forward_with(&x, None, None) {
        Err(Error::DeviceMismatch { .. }) => {}
        Err(e) => panic!("expected DeviceMismatch, got {e}"),
        Ok(_) => panic!("expected DeviceMismatch, got a result"),
    }
}

/// No time steps, or no batch rows: the device answers as the CPU does (today both refuse an
/// empty input with the same error; the same values if that changes), never a panic.
#[test]
fn empty_sequences_on_cuda_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    for (t, b) in [(0usize, 2usize), (3, 0)] {
        let lstm = Lstm::new(config(true)).unwrap();
        let run = |d: &Device| {
            let x = Var::constant(randn(7, &[t, b, I]).to_device(d).unwrap());
            lstm.forward_with(&x, None, None)
                .map(|o| [o.output, o.h_n, o.c_n].map(|v| v.tensor().to_device(&Device::Cpu).unwrap()))
        };
        let want = run(&Device::Cpu);
        lstm.to_device(&dev).unwrap();
        let got = run(&dev);
        match (got, want) {
            (Ok(g), Ok(w)) => {
                for (name, (g, w)) in ["output", "h_n", "c_n"].iter().zip(g.iter().zip(&w)) {
                    close(&format!("T={t} B={b} {name}"), g, w);
                }
            }
            (Err(g), Err(w)) => assert_eq!(g.to_string(), w.to_string(), "T={t} B={b}"),
            (g, w) => panic!("T={t} B={b}: the device gave {:?}, the CPU {:?}", g.err(), w.err()),
        }
    }
}
