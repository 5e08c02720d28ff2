//! Learning-rate schedules against PyTorch: every step of every series in
//! `tests/golden/schedules.safetensors` (made by `tools/golden/schedules.py`, torch 2.11.0).
//!
//! Each case here builds the same schedule as the case of the same name in the script, runs it
//! for as many steps as the golden series holds, and compares `lr()` (and `momentum()` where the
//! file has a `.momentum` series) at every step with rtol 1e-12, atol 1e-15. All mismatching
//! series are listed at the end, with the worst step of each.

use std::collections::BTreeSet;

use safetensors::{Dtype, SafeTensors};
use stapes::nn::schedule::{
    AnnealStrategy, CosineAnnealingLR, CyclicLR, CyclicLRConfig, CyclicMode, ExponentialLR, LinearWarmup, LrSchedule,
    MultiStepLR, OneCycleLR, OneCycleLRConfig, StepLR,
};

const RTOL: f64 = 1e-12;
const ATOL: f64 = 1e-15;

/// The schedule the script builds for `case`.
fn schedule_for(case: &str) -> Result<Box<dyn LrSchedule>, String> {
    let err = |e: stapes::nn::schedule::ScheduleError| e.to_string();
    Ok(match case {
        "cyclic_triangular2" => Box::new(
            CyclicLR::new(CyclicLRConfig {
                base_lr: 1e-5,
                max_lr: 1e-4,
                step_size_up: 2000,
                mode: CyclicMode::Triangular2,
                ..CyclicLRConfig::default()
            })
            .map_err(err)?,
        ),
        "cyclic_triangular" => Box::new(
            CyclicLR::new(CyclicLRConfig {
                base_lr: 1e-3,
                max_lr: 6e-3,
                step_size_up: 300,
                step_size_down: Some(700),
                mode: CyclicMode::Triangular,
                cycle_momentum: false,
                ..CyclicLRConfig::default()
            })
            .map_err(err)?,
        ),
        "cyclic_exp_range" => Box::new(
            CyclicLR::new(CyclicLRConfig {
                base_lr: 1e-4,
                max_lr: 1e-3,
                step_size_up: 500,
                step_size_down: Some(1500),
                mode: CyclicMode::ExpRange { gamma: 0.9997 },
                cycle_momentum: true,
                base_momentum: 0.85,
                max_momentum: 0.95,
            })
            .map_err(err)?,
        ),
        "step" => Box::new(StepLR::new(0.1, 300, 0.7).map_err(err)?),
        "multistep" => Box::new(MultiStepLR::new(0.05, &[100, 700, 700, 1500], 0.3).map_err(err)?),
        "exponential" => Box::new(ExponentialLR::new(0.1, 0.999).map_err(err)?),
        "cosine" => Box::new(CosineAnnealingLR::new(0.1, 2500, 1e-6).map_err(err)?),
        "onecycle_cos" => Box::new(
            OneCycleLR::new(OneCycleLRConfig { max_lr: 0.01, total_steps: 10_000, ..OneCycleLRConfig::default() })
                .map_err(err)?,
        ),
        "onecycle_linear_three_phase" => Box::new(
            OneCycleLR::new(OneCycleLRConfig {
                max_lr: 0.02,
                total_steps: 10_000,
                pct_start: 0.25,
                anneal_strategy: AnnealStrategy::Linear,
                div_factor: 10.0,
                final_div_factor: 100.0,
                three_phase: true,
                ..OneCycleLRConfig::default()
            })
            .map_err(err)?,
        ),
        "linear_warmup" => Box::new(LinearWarmup::new(3e-4, 0.01, 1000).map_err(err)?),
        other => return Err(format!("no Rust schedule for golden case {other:?}")),
    })
}

/// A stored f64 series.
fn series(file: &SafeTensors, name: &str) -> Result<Vec<f64>, String> {
    let view = file.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    if view.dtype() != Dtype::F64 || view.shape().len() != 1 {
        return Err(format!("{name}: expected a 1-D f64 tensor, got {:?} {:?}", view.dtype(), view.shape()));
    }
    Ok(view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect())
}

/// Compares `actual` with `expected` step by step; on failure says the worst step.
fn compare(what: &str, actual: &[f64], expected: &[f64]) -> Result<(), String> {
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ratio = (a - e).abs() / (ATOL + RTOL * e.abs());
        if ratio.is_nan() || ratio > 1.0 {
            bad += 1;
            if worst.is_none_or(|(_, r)| ratio > r || ratio.is_nan()) {
                worst = Some((i, ratio));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, ratio)) => Err(format!(
            "{what}: {bad}/{} steps differ; worst at step {i}: {} vs torch {} ({ratio:.3e} x tolerance)",
            expected.len(),
            actual[i],
            expected[i]
        )),
    }
}

#[test]
fn schedules_match_pytorch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/schedules.safetensors");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let file = SafeTensors::deserialize(&bytes).expect("schedules.safetensors is not valid safetensors");
    let names: BTreeSet<String> = file.names().into_iter().map(String::from).collect();
    let cases: BTreeSet<&str> = names.iter().filter_map(|n| n.split_once('.').map(|(c, _)| c)).collect();
    assert!(cases.len() >= 10, "expected at least 10 cases in {path}, found {cases:?}");

    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &cases {
        for name in names.iter().filter(|n| n.starts_with(&format!("{case}."))) {
            if !matches!(name.split_once('.').map(|(_, s)| s), Some("lr" | "momentum")) {
                failures.push(format!("{name}: unknown series"));
            }
        }
        let mut sched = match schedule_for(case) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{case}: {e}"));
                continue;
            }
        };
        let expected_lr = match series(&file, &format!("{case}.lr")) {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let momentum_name = format!("{case}.momentum");
        let expected_momentum = names.contains(&momentum_name).then(|| series(&file, &momentum_name)).transpose();
        let expected_momentum = match expected_momentum {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let mut lrs = Vec::with_capacity(expected_lr.len());
        let mut momenta = Vec::with_capacity(expected_lr.len());
        for _ in 0..expected_lr.len() {
            lrs.push(sched.lr());
            momenta.push(sched.momentum());
            sched.step();
        }
        checked += 1;
        if let Err(e) = compare(&format!("{case}.lr"), &lrs, &expected_lr) {
            failures.push(e);
        }
        match (expected_momentum, momenta.iter().copied().collect::<Option<Vec<f64>>>()) {
            (Some(expected), Some(actual)) => {
                if let Err(e) = compare(&momentum_name, &actual, &expected) {
                    failures.push(e);
                }
            }
            (Some(_), None) => failures.push(format!("{momentum_name}: the Rust schedule reports no momentum")),
            (None, Some(_)) => failures.push(format!("{case}: the Rust schedule cycles momentum, torch's does not")),
            (None, None) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatching series (of {checked} cases):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
