//! Resuming from a checkpoint restores training exactly: N steps, save, load in a NEW
//! PROCESS, N more steps gives bit for bit the parameters, buffers and optimizer state of 2N
//! steps in one go (CPU). The model has dropout and draws its batches from the default
//! generator, so the RNG state must be restored too; BatchNorm's running statistics, Adam's
//! moments, the CyclicLR position (which also cycles Adam's beta1) and the GradScaler state
//! all travel in the checkpoint.
//!
//! The test re-runs its own binary (`--exact <this test>`) with `STAPES_RESUME_PHASE` set
//! for the two halves.

use stapes_autograd::Var;
use stapes_nn::amp::{GradScaler, GradScalerConfig};
use stapes_nn::checkpoint::{load_safetensors, save_safetensors, Checkpoint};
use stapes_nn::layers::{BatchNorm1d, Dropout, Linear, ReLU, Sequential};
use stapes_nn::loss::{cross_entropy, CrossEntropyOptions};
use stapes_nn::optim::{Adam, AdamConfig, Optimizer};
use stapes_nn::schedule::{CyclicLR, CyclicLRConfig, CyclicMode, LrSchedule};
use stapes_nn::{Forward, Module};
use stapes_tensor::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const N: u64 = 6;
const TEST_NAME: &str = "resume_in_a_new_process_is_bit_exact";

struct Run {
    model: Sequential,
    opt: Adam,
    sched: CyclicLR,
    scaler: GradScaler,
    step: u64,
}

fn fresh() -> Run {
    stapes_tensor::manual_seed(42);
    let model = Sequential::new()
        .with(Linear::new(8, 32, true).unwrap())
        .with(BatchNorm1d::new(32).unwrap())
        .with(ReLU::new())
        .with(Dropout::new(0.2).unwrap())
        .with(Linear::new(32, 4, true).unwrap());
    let opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-3, ..AdamConfig::adam() }).unwrap();
    let sched = CyclicLR::new(CyclicLRConfig {
        base_lr: 1e-3,
        max_lr: 1e-2,
        step_size_up: 3,
        mode: CyclicMode::Triangular2,
        cycle_momentum: true,
        base_momentum: 0.8,
        max_momentum: 0.9,
        ..CyclicLRConfig::default()
    })
    .unwrap();
    let scaler =
        GradScaler::new(GradScalerConfig { init_scale: 256.0, growth_interval: 4, ..Default::default() }).unwrap();
    Run { model, opt, sched, scaler, step: 0 }
}

fn train_step(r: &mut Run) {
    // A batch from the default generator: restoring the RNG state matters.
    let x = Tensor::randn([16, 8], DType::F32, &Device::Cpu).unwrap();
    let xs = x.to_vec::<f32>().unwrap();
    let labels: Vec<i64> =
        xs.chunks(8).map(|row| if row[0] + row[1] > 0.0 { 1 } else { (row[2] > 0.0) as i64 * 2 }).collect();
    let target = Tensor::from_vec(labels, 16, &Device::Cpu).unwrap();
    r.opt.zero_grad();
    let logits = r.model.forward(&Var::constant(x)).unwrap();
    let loss = cross_entropy(&logits, &target, &CrossEntropyOptions::default()).unwrap();
    r.scaler.scale(&loss).unwrap().backward().unwrap();
    r.opt.apply_schedule(&r.sched);
    let params = r.model.parameters();
    let opt = &mut r.opt;
    r.scaler.step(&params, || opt.step()).unwrap();
    r.scaler.update().unwrap();
    r.sched.step();
    r.step += 1;
}

fn save(r: &Run, path: &Path) {
    let (optimizer_tensors, optimizer) = r.opt.state_dict().unwrap();
    Checkpoint {
        model: r.model.state_dict(),
        optimizer_tensors,
        optimizer,
        scheduler: r.sched.state_dict(),
        scaler: r.scaler.state_dict(),
        step: r.step,
        rng: Some(stapes_tensor::default_generator_state()),
        extra: Default::default(),
    }
    .save(path)
    .unwrap();
}

fn load(path: &Path) -> Run {
    let mut r = fresh();
    let ck = Checkpoint::load(path).unwrap();
    r.model.load_state_dict(&ck.model, true).unwrap();
    // The optimizer was built over the same Param handles, which now hold the loaded values.
    r.opt.load_state_dict(&ck.optimizer_tensors, &ck.optimizer).unwrap();
    r.sched.load_state_dict(&ck.scheduler).unwrap();
    r.scaler.load_state_dict(&ck.scaler).unwrap();
    stapes_tensor::set_default_generator_state(ck.rng.unwrap()).unwrap();
    r.step = ck.step;
    r
}

/// Everything that must agree: parameters, buffers and the optimizer's state tensors.
fn fingerprint(r: &Run) -> BTreeMap<String, Tensor> {
    let mut m: BTreeMap<String, Tensor> =
        r.model.state_dict().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    for (k, v) in r.opt.state_dict().unwrap().0 {
        m.insert(format!("optimizer.{k}"), v);
    }
    m
}

fn run_child(phase: &str, dir: &Path) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env("STAPES_RESUME_PHASE", phase)
        .env("STAPES_RESUME_DIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "phase {phase} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resume_in_a_new_process_is_bit_exact() {
    if let Ok(phase) = std::env::var("STAPES_RESUME_PHASE") {
        let dir = std::path::PathBuf::from(std::env::var("STAPES_RESUME_DIR").unwrap());
        match phase.as_str() {
            "first-half" => {
                let mut r = fresh();
                for _ in 0..N {
                    train_step(&mut r);
                }
                save(&r, &dir.join("ckpt.safetensors"));
            }
            "second-half" => {
                let mut r = load(&dir.join("ckpt.safetensors"));
                assert_eq!(r.step, N);
                for _ in 0..N {
                    train_step(&mut r);
                }
                save_safetensors(dir.join("final.safetensors"), &fingerprint(&r), None).unwrap();
            }
            other => panic!("unknown phase {other}"),
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("stapes-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    run_child("first-half", &dir);
    run_child("second-half", &dir);
    let resumed = load_safetensors(dir.join("final.safetensors")).unwrap().tensors;

    let mut r = fresh();
    for _ in 0..2 * N {
        train_step(&mut r);
    }
    let straight = fingerprint(&r);
    assert_eq!(straight.keys().collect::<Vec<_>>(), resumed.keys().collect::<Vec<_>>());
    assert!(straight.keys().any(|k| k.contains("exp_avg_sq")) && straight.contains_key("model.1.running_var"));
    for (k, t) in &straight {
        let (a, b) = (t.to_vec_f64().unwrap(), resumed[k].to_vec_f64().unwrap());
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{k} differs between 2N straight steps and N + save/load + N");
    }
    // And the run did train: the parameters moved away from the initial values.
    let init = fingerprint(&fresh());
    assert!(!init["model.0.weight"].equal(&straight["model.0.weight"]).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}
