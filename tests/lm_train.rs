//! Training the Transformer LM on streamed text (issue 18): the held-out perplexity falls far
//! below the uniform one, an interrupted run resumes bit for bit, the run directory loads back,
//! greedy generation with the KV cache equals generation by full recomputation, and bad input
//! (no text, a truncated run directory) is a clear error.

use std::path::{Path, PathBuf};

use stapes::autograd::no_grad;
use stapes::nn::Module;
use stapes::speech::config::ScheduleConfig;
use stapes::speech::lm_train::{load_lm_run, sample, train_lm, LmRunConfig, LmTrainOptions, BOS, EOS};
use stapes::speech::nnlm::TransformerLmConfig;
use stapes::speech::synth::DIGITS;
use stapes::tensor::{Device, Generator, Tensor};

/// Training draws from the process-wide default generator (as PyTorch's does), so the tests of
/// this binary that train run one at a time: a concurrent run would take numbers from the
/// stream of another and break its exact-resume check.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stapes-lm-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Digit words counting up from a random start ("three four five six"): easy to predict
/// once the spellings and the order are learnt.
fn corpus(dir: &Path, lines: usize) -> PathBuf {
    let mut g = Generator::new(7);
    let mut text = String::new();
    for _ in 0..lines {
        let start = (g.next_u64() % 10) as usize;
        let n = 2 + (g.next_u64() % 4) as usize;
        let words: Vec<&str> = (0..n).map(|k| DIGITS[(start + k) % 10]).collect();
        text.push_str(&words.join(" "));
        text.push('\n');
    }
    let p = dir.join("text.txt");
    std::fs::write(&p, text).unwrap();
    p
}

fn config(epochs: usize) -> LmRunConfig {
    let mut cfg = LmRunConfig {
        model: TransformerLmConfig {
            d_model: 32,
            nhead: 4,
            num_layers: 2,
            dim_feedforward: 64,
            dropout: 0.1,
            max_len: 64,
            ..TransformerLmConfig::default()
        },
        ..LmRunConfig::default()
    };
    cfg.training.batch_size = 16;
    cfg.training.seq_len = 48;
    cfg.training.epochs = epochs;
    cfg.training.shuffle_blocks = 32;
    cfg.training.dev_fraction = 0.05;
    cfg.training.checkpoint_every_steps = 0;
    cfg.schedule = ScheduleConfig::Constant { lr: 3e-3 };
    cfg.logging.tensorboard = false;
    cfg
}

#[test]
fn the_lm_learns_resumes_loads_and_generates() {
    let _serial = serial();
    let dir = tmp("train");
    let text = corpus(&dir, 1500);
    let run = dir.join("run");
    let report = train_lm(&config(3), std::slice::from_ref(&text), &run, &LmTrainOptions::default(), |_| {}).unwrap();
    let ppl: Vec<f64> = report.epochs.iter().map(|e| e.dev_perplexity).collect();
    let uniform = report.tokenizer.vocab_size() as f64;
    assert!(ppl[2] < ppl[1] && ppl[1] < ppl[0] && ppl[2] < 3.0, "held-out perplexity {ppl:?} (uniform {uniform})");

    // interrupted after 2 epochs, resumed to 3: the same weights as straight through
    let run2 = dir.join("run2");
    train_lm(&config(2), std::slice::from_ref(&text), &run2, &LmTrainOptions::default(), |_| {}).unwrap();
    let resumed = train_lm(
        &config(3),
        std::slice::from_ref(&text),
        &run2,
        &LmTrainOptions { resume: true, ..Default::default() },
        |_| {},
    )
    .unwrap();
    let (a, b) = (report.model.state_dict(), resumed.model.state_dict());
    for (k, v) in &a {
        assert_eq!(v.to_vec::<f32>().unwrap(), b[k].to_vec::<f32>().unwrap(), "{k} differs after resuming");
    }
    let key = |l: &stapes::speech::lm_train::LmEpochLog| (l.epoch, l.step, l.train_loss, l.dev_perplexity);
    assert_eq!(report.epochs.iter().map(key).collect::<Vec<_>>(), resumed.epochs.iter().map(key).collect::<Vec<_>>());

    // loads back; greedy generation with the cache = greedy by full recomputation
    let lm = load_lm_run(&run).unwrap();
    let mut g = Generator::new(0);
    let cached = sample(&lm.model, &lm.tokenizer, "four", 30, 0.0, &mut g).unwrap();
    let mut ids = vec![BOS];
    ids.extend(lm.tokenizer.encode("four"));
    let mut full = Vec::new();
    for _ in 0..30 {
        let x = Tensor::from_vec(ids.clone(), [1, ids.len()], &Device::Cpu).unwrap();
        let logits = no_grad(|| lm.model.forward(&x, None)).unwrap().tensor().to_vec::<f32>().unwrap();
        let v = lm.tokenizer.vocab_size();
        let last = &logits[(ids.len() - 1) * v..];
        let next = last.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
            as i64;
        if next == EOS {
            break;
        }
        full.push(next);
        ids.push(next);
    }
    assert_eq!(cached, full);
    let continuation = lm.tokenizer.decode(&cached);
    assert!(continuation.starts_with(" five"), "after \"four\": {continuation:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_lm_input_is_a_clear_error() {
    let _serial = serial();
    let dir = tmp("bad");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n  \n").unwrap();
    let e = train_lm(&config(1), &[empty], &dir.join("r"), &LmTrainOptions::default(), |_| {}).err().unwrap();
    assert!(e.to_string().contains("no text"), "{e}");
    let e = train_lm(&config(1), &[dir.join("missing.txt")], &dir.join("r"), &LmTrainOptions::default(), |_| {})
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing.txt"), "{e}");
    // a run directory without its tokenizer
    let text = corpus(&dir, 200);
    let run = dir.join("run");
    train_lm(&config(1), &[text], &run, &LmTrainOptions::default(), |_| {}).unwrap();
    std::fs::remove_file(run.join("tokenizer.json")).unwrap();
    let e = load_lm_run(&run).err().unwrap();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    assert!(load_lm_run(&dir.join("nope")).is_err());
    // a config that cannot work names the field
    let mut cfg = config(1);
    cfg.training.seq_len = 100;
    let e = cfg.validate().err().unwrap();
    assert!(e.to_string().contains("seq_len"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

fn stapes(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stapes")).args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_cli_trains_evaluates_samples_and_decodes_with_the_lm() {
    let dir = tmp("cli");
    // words of the golden wav2vec2 checkpoint's letters (E T A O N I H), so that the LM can
    // spell what that model emits
    let words = ["tea", "hat", "eat", "neat", "oath", "tin", "hot", "ant", "the", "thin", "ten", "note"];
    let mut g = Generator::new(3);
    let text: Vec<String> = (0..400)
        .map(|_| (0..3).map(|_| words[(g.next_u64() % words.len() as u64) as usize]).collect::<Vec<_>>().join(" "))
        .collect();
    std::fs::write(dir.join("text.txt"), text.join("\n")).unwrap();
    std::fs::write(
        dir.join("lm.toml"),
        "[model]\nd_model = 32\nnhead = 2\nnum_layers = 1\ndim_feedforward = 64\nmax_len = 64\n\n\
         [training]\nbatch_size = 8\nseq_len = 32\nepochs = 2\n\n[schedule]\nkind = \"constant\"\nlr = 3e-3\n\n\
         [logging]\ntensorboard = false\n",
    )
    .unwrap();
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let run = dir.join("lm");
    let (ok, log) = stapes(&[
        os("lm"),
        os("train"),
        os("--text"),
        dir.join("text.txt").as_os_str(),
        os("--config"),
        dir.join("lm.toml").as_os_str(),
        os("--run-dir"),
        run.as_os_str(),
    ]);
    assert!(ok && log.contains("held-out perplexity"), "{log}");
    let (ok, log) =
        stapes(&[os("lm"), os("eval"), os("--run"), run.as_os_str(), os("--text"), dir.join("text.txt").as_os_str()]);
    assert!(ok && log.starts_with("perplexity "), "{log}");
    let (ok, log) =
        stapes(&[os("lm"), os("sample"), os("--run"), run.as_os_str(), os("--prompt"), os("the"), os("--n"), os("2")]);
    assert!(ok && log.lines().take(2).all(|l| l.starts_with("the")), "{log}");

    // decoding a checkpoint directory with the LM fused, and rescoring
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wav2vec2/layer_prenorm");
    let audio: Vec<f32> = (0..8000).map(|i| 0.3 * ((i as f32) * 0.05).sin() * ((i as f32) * 0.0007).sin()).collect();
    let wav = dir.join("a.wav");
    stapes::speech::audio::write_wav(&wav, &audio, 16000).unwrap();
    std::fs::write(
        dir.join("m.jsonl"),
        format!("{{\"audio\": {:?}, \"text\": \"THE HAT\"}}\n", wav.display().to_string()),
    )
    .unwrap();
    for extra in [None, Some("--rescore")] {
        let mut args = vec![os("eval"), os("--model"), golden.as_os_str(), os("--data")];
        let m = dir.join("m.jsonl");
        args.push(m.as_os_str());
        args.extend([os("--beam"), os("4"), os("--nnlm"), run.as_os_str()]);
        args.extend(extra.map(os));
        let (ok, log) = stapes(&args);
        assert!(ok, "{log}");
        let want = if extra.is_some() { "rescoring the n-best" } else { "fused" };
        assert!(log.contains(want) && log.contains("WER"), "{log}");
    }
    // an LM run directory that is not one
    let (ok, log) = stapes(&[
        os("lm"),
        os("eval"),
        os("--run"),
        dir.join("nope").as_os_str(),
        os("--text"),
        dir.join("text.txt").as_os_str(),
    ]);
    assert!(!ok && log.contains("nope") && !log.contains("panicked"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The LM trains and generates on `cuda:0` (the GPU, or the CUDA emulator in CI) as on the CPU:
/// the same losses within f32 rounding, and the cached step gives the CPU's distribution.
#[test]
fn the_lm_trains_and_steps_on_cuda() {
    let _serial = serial();
    let Some(dev) = stapes::tensor::cuda::test_device() else {
        eprintln!("skipped: no GPU and no CUDA emulator in this build");
        return;
    };
    let dir = tmp("cuda");
    let text = corpus(&dir, 60);
    let mut cfg = config(1);
    cfg.model = TransformerLmConfig {
        d_model: 16,
        nhead: 2,
        num_layers: 1,
        dim_feedforward: 32,
        dropout: 0.0,
        max_len: 32,
        ..TransformerLmConfig::default()
    };
    cfg.training.batch_size = 4;
    cfg.training.seq_len = 16;
    let mut losses = Vec::new();
    for device in [Device::Cpu, dev] {
        let mut l = Vec::new();
        let report = train_lm(
            &cfg,
            std::slice::from_ref(&text),
            &dir.join(format!("{device:?}")),
            &LmTrainOptions { device, ..Default::default() },
            |e| {
                if let stapes::speech::lm_train::LmEvent::Step { loss, .. } = e {
                    l.push(*loss);
                }
            },
        )
        .unwrap();
        let (lp, _) = report.model.step(&[&report.model.empty_state()], &[BOS]).unwrap();
        losses.push((l, lp.to_vec::<f32>().unwrap()));
    }
    let ((cpu_l, cpu_lp), (gpu_l, gpu_lp)) = (&losses[0], &losses[1]);
    assert_eq!(cpu_l.len(), gpu_l.len());
    for (a, b) in cpu_l.iter().zip(gpu_l) {
        assert!((a - b).abs() < 1e-3 * a.abs().max(1.0), "loss {a} on the CPU, {b} on cuda");
    }
    for (a, b) in cpu_lp.iter().zip(gpu_lp) {
        assert!((a - b).abs() < 1e-3, "log-prob {a} on the CPU, {b} on cuda");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A subword LM: a BPE model trained on the text (the `tokenizers` crate), the LM trained over
/// its units, the tokenizer saved as `tokenizers`' own `tokenizer.json` and read back; it scores
/// sentences (rescoring) and refuses shallow fusion with a character beam search by name.
#[cfg(feature = "bpe")]
#[test]
fn a_bpe_lm_trains_loads_and_rescores() {
    subword_lm("bpe", "BPE");
}

/// The same with sentencepiece's unigram LM model (the `tokenizers` crate's `UnigramTrainer`).
#[cfg(feature = "bpe")]
#[test]
fn a_unigram_lm_trains_loads_and_rescores() {
    subword_lm("unigram", "Unigram");
}

#[cfg(feature = "bpe")]
fn subword_lm(kind: &str, model_type: &str) {
    use stapes::speech::beam::{beam_search_decode, BeamSearchConfig, NeuralLm};
    use stapes::speech::data::Vocab;
    use std::sync::Arc;
    let _serial = serial();
    let dir = tmp(kind);
    let text = corpus(&dir, 800);
    let mut cfg = config(2);
    cfg.tokenizer.kind = kind.into();
    cfg.tokenizer.vocab_size = 60;
    let run = dir.join("run");
    let report = train_lm(&cfg, std::slice::from_ref(&text), &run, &LmTrainOptions::default(), |_| {}).unwrap();
    let tok = &report.tokenizer;
    assert_eq!(tok.kind, kind);
    assert!(tok.vocab_size() <= 60 && tok.vocab_size() > 30, "{}", tok.vocab_size());
    // subword units: a word is fewer ids than characters, and decoding restores the text
    let ids = tok.encode("seven eight nine");
    assert!(ids.len() < "seven eight nine".len(), "{ids:?}");
    assert_eq!(tok.decode(&ids), "seven eight nine");
    let ppl = report.epochs.last().unwrap().dev_perplexity;
    assert!(ppl.is_finite() && ppl < tok.vocab_size() as f64, "{ppl}");
    // tokenizer.json is the tokenizers library's file, and it loads back the same
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(saved["model"]["type"], model_type);
    let lm = load_lm_run(&run).unwrap();
    assert_eq!(lm.tokenizer.encode("seven eight nine"), ids);
    // in order is likelier than shuffled
    let nn = NeuralLm { model: Arc::new(lm.model), tokenizer: Arc::new(lm.tokenizer), weight: 1.0, word_bonus: 0.0 };
    let lp = nn
        .model
        .sequence_log_probs(&[
            nn.tokenizer.encode_sentence("two three four"),
            nn.tokenizer.encode_sentence("four two three"),
        ])
        .unwrap();
    assert!(lp[0] > lp[1], "{lp:?}");
    // fusion needs characters
    let vocab = Vocab::new(" eot").unwrap();
    let cfg = BeamSearchConfig { nnlm: Some(Arc::new(nn)), ..Default::default() };
    let e = beam_search_decode(&[0.0; 5], 1, 5, &vocab, &cfg).unwrap_err().to_string();
    assert!(e.contains("character"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Mixed precision: bf16 autocast, and f16 with the GradScaler, train the LM with finite
/// losses close to f32's on the same batches.
#[test]
fn the_lm_trains_in_mixed_precision() {
    use stapes::speech::config::Precision;
    let _serial = serial();
    let dir = tmp("amp");
    let text = corpus(&dir, 300);
    let mut last = Vec::new();
    for precision in [Precision::F32, Precision::Bf16, Precision::F16] {
        let mut cfg = config(1);
        cfg.model.dropout = 0.0;
        cfg.training.precision = precision;
        let mut losses = Vec::new();
        train_lm(
            &cfg,
            std::slice::from_ref(&text),
            &dir.join(format!("{precision:?}")),
            &LmTrainOptions::default(),
            |e| {
                if let stapes::speech::lm_train::LmEvent::Step { loss, .. } = e {
                    losses.push(*loss);
                }
            },
        )
        .unwrap();
        assert!(losses.iter().all(|l| l.is_finite()), "{precision:?}: {losses:?}");
        last.push(losses);
    }
    // the first step's loss (the same initial weights and batch) agrees within half-precision
    // rounding
    for (p, l) in [("bf16", &last[1]), ("f16", &last[2])] {
        assert!((l[0] - last[0][0]).abs() < 0.05 * last[0][0], "{p}: {} vs f32 {}", l[0], last[0][0]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
