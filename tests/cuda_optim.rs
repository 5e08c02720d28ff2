//! Optimizers on CUDA parameters: Adam, AdamW, AMSGrad and SGD (momentum, Nesterov, weight
//! decay, maximize) step parameters on cuda:0 with one fused kernel each, with the state on the
//! device, and give the CPU optimizers' parameters and state after several steps. The state
//! round-trips through state_dict.

use stapes::nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use stapes::nn::Param;
use stapes::tensor::{cuda, DType, Device, Generator, Tensor};

fn randn(seed: u64, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn_with(&mut Generator::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Runs `steps` steps with the same gradients on the CPU and on `dev`; returns both parameter
/// lists (on the host) and both optimizers' saved state tensors.
fn run(dev: &Device, dtype: DType, make: &dyn Fn(Vec<Param>) -> Box<dyn Optimizer>) -> Vec<(Vec<f64>, Vec<f64>)> {
    let shapes: [&[usize]; 3] = [&[7, 5], &[33], &[1000]];
    let cpu: Vec<Param> = shapes.iter().enumerate().map(|(k, s)| Param::new(randn(k as u64, s, dtype))).collect();
    let gpu: Vec<Param> = cpu.iter().map(|p| Param::new(p.tensor().to_device(dev).unwrap())).collect();
    let (mut oc, mut og) = (make(cpu.clone()), make(gpu.clone()));
    for step in 0..4u64 {
        for (k, (pc, pg)) in cpu.iter().zip(&gpu).enumerate() {
            let g = randn(100 + 10 * step + k as u64, pc.dims().as_slice(), dtype);
            pc.set_grad(Some(g.clone()));
            pg.set_grad(Some(g.to_device(dev).unwrap()));
        }
        oc.step().unwrap();
        og.step().unwrap();
        for p in &gpu {
            assert_eq!(p.tensor().device(), dev, "parameters stay on the device");
            assert_eq!(p.dtype(), dtype);
        }
    }
    let mut out: Vec<(Vec<f64>, Vec<f64>)> = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (b.tensor().to_vec_f64().unwrap(), a.tensor().to_vec_f64().unwrap()))
        .collect();
    let (sc, _) = oc.state_dict().unwrap();
    let (sg, meta) = og.state_dict().unwrap();
    assert_eq!(sc.keys().collect::<Vec<_>>(), sg.keys().collect::<Vec<_>>());
    for (k, t) in &sg {
        assert_eq!(t.device(), &Device::Cpu, "saved state is on the host: {k}");
        out.push((t.to_vec_f64().unwrap(), sc[k].to_vec_f64().unwrap()));
    }
    // loading the saved state puts it back on the device and the next step still matches
    og.load_state_dict(&sg, &meta).unwrap();
    oc.load_state_dict(&sc, &meta).unwrap();
    for (k, (pc, pg)) in cpu.iter().zip(&gpu).enumerate() {
        let g = randn(999 + k as u64, pc.dims().as_slice(), dtype);
        pc.set_grad(Some(g.clone()));
        pg.set_grad(Some(g.to_device(dev).unwrap()));
    }
    oc.step().unwrap();
    og.step().unwrap();
    for (pc, pg) in cpu.iter().zip(&gpu) {
        out.push((pg.tensor().to_vec_f64().unwrap(), pc.tensor().to_vec_f64().unwrap()));
    }
    out
}

fn assert_close(what: &str, pairs: &[(Vec<f64>, Vec<f64>)], tol: f64) {
    for (k, (g, c)) in pairs.iter().enumerate() {
        assert_eq!(g.len(), c.len(), "{what} #{k}");
        for (i, (a, b)) in g.iter().zip(c).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what} #{k}[{i}]: cuda {a} vs cpu {b}");
        }
    }
}

#[test]
fn adam_variants_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let configs = [
        ("adam", AdamConfig { lr: 1e-2, ..AdamConfig::adam() }),
        ("adamw", AdamConfig { lr: 1e-2, ..AdamConfig::adamw() }),
        (
            "adam l2 amsgrad maximize",
            AdamConfig { lr: 1e-2, weight_decay: 0.1, amsgrad: true, maximize: true, ..AdamConfig::adam() },
        ),
        ("adam beta1 0.3", AdamConfig { lr: 1e-2, betas: (0.3, 0.99), ..AdamConfig::adam() }),
    ];
    for (name, cfg) in configs {
        for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-12), (DType::BF16, 1e-2)] {
            let pairs = run(&dev, dtype, &|ps| Box::new(Adam::new(ps, cfg).unwrap()));
            assert_close(&format!("{name} {dtype}"), &pairs, tol);
        }
    }
}

#[test]
fn sgd_variants_match_the_cpu() {
    let Some(dev) = cuda::test_device() else { return };
    let configs = [
        ("plain", SgdConfig { lr: 0.1, ..Default::default() }),
        ("momentum wd", SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 0.01, ..Default::default() }),
        (
            "nesterov maximize",
            SgdConfig { lr: 0.05, momentum: 0.8, nesterov: true, maximize: true, ..Default::default() },
        ),
    ];
    for (name, cfg) in configs {
        for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-12)] {
            let pairs = run(&dev, dtype, &|ps| Box::new(Sgd::new(ps, cfg).unwrap()));
            assert_close(&format!("sgd {name} {dtype}"), &pairs, tol);
        }
    }
}
