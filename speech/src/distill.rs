//! Knowledge distillation of CTC models (`stapes distill`): a student learns from a teacher's
//! soft labels as well as from the transcripts.
//!
//! The training loss is `alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 −
//! alpha) · CTC`, the KL term summed over the classes and averaged over the frames that count
//! (those inside both models' output lengths, less the blank-dominated ones when
//! `skip_blank_above` is set) — what PyTorch users write as
//! `F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True, reduction="batchmean") · T²`
//! over the valid frames stacked as rows ([`kd_loss`]).
//!
//! The teacher is a stapes run directory or a Hugging Face wav2vec2 CTC directory
//! ([`load_teacher`]); it runs in inference mode. Teacher and student may differ in architecture
//! and front end but must share the output vocabulary (checked character by character) and
//! the frame rate (checked on two probe signals; the frame counts of one utterance may differ
//! by a frame or two at the edges, and the term covers the frames both have). When the front
//! ends are the same, the teacher runs on each training batch; otherwise (or with
//! `cache_teacher`) its logits are computed once over the training set from the clean audio
//! and kept in `teacher_logits.safetensors` in the run directory, which a resumed run reuses.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stapes_autograd::{no_grad, Var};
use stapes_nn::loss::{kl_div, KlReduction};
use stapes_nn::Module;
use stapes_tensor::{DType, Device, Error, Result, Tensor};

use crate::config::{AugmentConfig, DistillConfig};
use crate::data::{Batch, DataLoader, Dataset, LoaderConfig, Order, Vocab};
use crate::models::wav2vec2::{CtcVocab, Wav2Vec2Pipeline};
use crate::models::{AcousticModel, Wav2Vec2Acoustic, Wav2Vec2RunConfig};
use crate::train::{load_run, Frontend};

/// The name of the cached teacher logits in a run directory.
pub const TEACHER_LOGITS_FILE: &str = "teacher_logits.safetensors";

/// A teacher ready to run: its model (eval mode), front end and vocabulary.
pub struct Teacher {
    /// The model.
    pub model: AcousticModel,
    /// What it is fed.
    pub frontend: Frontend,
    /// Its output characters (blank at 0).
    pub vocab: Vocab,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

/// Loads a teacher: a stapes run directory (it has `config.toml`) or a Hugging Face wav2vec2
/// CTC directory (`config.json`, the weights, `vocab.json`), whose vocabulary must be the blank
/// `<pad>` at 0 and single characters (`|` is the space).
///
/// # Errors
/// If `dir` is neither, or its files are missing or corrupt.
pub fn load_teacher(dir: &Path) -> Result<Teacher> {
    const OP: &str = "load_teacher";
    if !dir.is_dir() {
        return Err(Error::io(OP, dir, "the teacher is not a directory (a stapes run or a wav2vec2 checkpoint)"));
    }
    if dir.join("config.toml").is_file() {
        let run = load_run(dir)?;
        let frontend = run.frontend();
        return Ok(Teacher { model: run.model, frontend, vocab: run.vocab, dir: dir.to_path_buf() });
    }
    if !dir.join("config.json").is_file() {
        return Err(Error::io(
            OP,
            dir,
            "neither a stapes run (config.toml) nor a Hugging Face checkpoint (config.json)",
        ));
    }
    let p = Wav2Vec2Pipeline::load(dir, &Device::Cpu)?;
    let vocab = chars_of(&p.vocab, dir)?;
    let frontend = Frontend::Waveform { normalize: p.preprocessor.do_normalize };
    let config = Wav2Vec2RunConfig {
        pretrained: Some(dir.to_path_buf()),
        encoder: Some(p.model.config().clone()),
        preprocessor: Some(p.preprocessor.clone()),
        ..Wav2Vec2RunConfig::default()
    };
    let model = AcousticModel::Wav2Vec2(Box::new(Wav2Vec2Acoustic { model: p.model, config }));
    model.eval();
    Ok(Teacher { model, frontend, vocab, dir: dir.to_path_buf() })
}

/// The output characters of a teacher directory (as [`load_teacher`] reads it), without
/// loading its weights.
///
/// # Errors
/// As [`load_teacher`] for a missing or corrupt vocabulary.
pub fn teacher_vocab(dir: &Path) -> Result<Vocab> {
    if dir.join("config.toml").is_file() {
        return crate::train::load_vocab(dir);
    }
    let cfg = crate::models::wav2vec2::Wav2Vec2Config::from_json_file(dir.join("config.json"))?;
    let ctc = CtcVocab::from_json_file(dir.join("vocab.json"), cfg.pad_token_id)?;
    chars_of(&ctc, dir)
}

/// A transformers CTC vocabulary as stapes characters: the blank at 0, then single characters
/// (`|` is the space).
fn chars_of(ctc: &CtcVocab, dir: &Path) -> Result<Vocab> {
    const OP: &str = "load_teacher";
    if ctc.blank != 0 {
        return Err(Error::io(OP, dir, format!("the blank (pad token) is id {}; stapes puts it at 0", ctc.blank)));
    }
    let mut chars = String::new();
    for (id, tok) in ctc.tokens.iter().enumerate().skip(1) {
        let mut it = tok.chars();
        match (it.next(), it.next()) {
            (Some('|'), None) => chars.push(' '),
            (Some(c), None) => chars.push(c),
            _ => {
                return Err(Error::io(
                    OP,
                    dir,
                    format!("token {tok:?} (id {id}) is not one character: a stapes student emits characters"),
                ))
            }
        }
    }
    Vocab::new(&chars).map_err(|e| Error::io(OP, dir, e.to_string()))
}

/// The distillation term of a batch: `T² ·` the KL divergence from the teacher's tempered
/// distribution to the student's, summed over the classes and averaged over the frames that
/// count. `student` and `teacher` are logits `[B, T, C]` of the same shape (the teacher's a
/// constant); `lengths[b]` frames of utterance `b` count, less those where the teacher's blank
/// (class `blank`) has probability above `skip_blank_above` at temperature 1. No frame
/// counting gives 0. Returns the term and the number of frames counted.
///
/// # Errors
/// For shapes that differ, lengths beyond `T` or of the wrong count, a temperature that is not
/// positive, or a non-float student.
pub fn kd_loss(
    student: &Var,
    teacher: &Tensor,
    lengths: &[usize],
    temperature: f64,
    skip_blank_above: Option<f64>,
    blank: usize,
) -> Result<(Var, usize)> {
    const OP: &str = "kd_loss";
    let dims = student.dims().to_vec();
    if dims.len() != 3 || teacher.dims() != dims.as_slice() {
        return Err(Error::shape(
            OP,
            format!("student logits {:?} and teacher logits {:?} must both be [B, T, C]", dims, teacher.dims()),
        ));
    }
    let (b, t, c) = (dims[0], dims[1], dims[2]);
    if lengths.len() != b || lengths.iter().any(|&l| l > t) {
        return Err(Error::shape(OP, format!("lengths {lengths:?} for {b} utterances of at most {t} frames")));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::invalid(OP, format!("temperature must be finite and > 0, got {temperature}")));
    }
    if blank >= c.max(1) {
        return Err(Error::invalid(OP, format!("blank {blank} is not one of the {c} classes")));
    }
    let dtype = student.tensor().dtype();
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType { op: OP, dtype, msg: "needs float logits" });
    }
    // in f32 at least: the log-softmax of tempered f16 logits loses the small probabilities
    let work = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
    let s = if work != dtype { student.to_dtype(work)? } else { student.clone() };
    let teacher = teacher.to_device(student.tensor().device())?.to_dtype(work)?;
    let mut counts = vec![false; b * t];
    for (i, &l) in lengths.iter().enumerate() {
        counts[i * t..i * t + l].iter_mut().for_each(|v| *v = true);
    }
    if let Some(p) = skip_blank_above {
        let probs = teacher.softmax(-1)?.narrow(2usize, blank, 1)?.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        for (v, pb) in counts.iter_mut().zip(probs.contiguous()?.to_vec::<f64>()?) {
            if pb > p {
                *v = false;
            }
        }
    }
    let n = counts.iter().filter(|&&v| v).count();
    let w = if n == 0 { 0.0 } else { temperature * temperature / n as f64 };
    let weights: Vec<f64> = counts.iter().map(|&v| if v { w } else { 0.0 }).collect();
    let weights = Tensor::from_vec(weights, [b, t, 1], &Device::Cpu)?.to_dtype(work)?.to_device(teacher.device())?;
    let inv_t = 1.0 / temperature;
    let log_s = s.mul_scalar(inv_t)?.log_softmax(-1)?;
    let log_t = Var::constant(teacher.affine(inv_t, 0.0)?.log_softmax(-1)?);
    let per = kl_div(&log_s, &log_t, KlReduction::None, true)?;
    Ok((per.mul(&Var::constant(weights))?.sum_all()?, n))
}

/// Output frames per second of a model behind a front end, measured on two probe signals
/// (1 s and 4 s of a chirp at 16 kHz).
fn frame_rate(model: &AcousticModel, frontend: &Frontend) -> Result<f64> {
    let probe = |secs: usize| -> Result<usize> {
        let n = 16_000 * secs;
        let audio: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                0.1 * (2.0 * std::f32::consts::PI * (200.0 + 300.0 * t) * t).sin()
            })
            .collect();
        let (_, frames) = frontend.prepare(&audio)?;
        Ok(model.output_lengths(&[frames])[0])
    };
    Ok((probe(4)? as f64 - probe(1)? as f64) / 3.0)
}

/// The teacher's logits for training batches: from the teacher itself on each batch, or from
/// the cache of its logits over the training set.
pub struct Distiller {
    cfg: DistillConfig,
    source: TeacherSource,
    blank: usize,
}

enum TeacherSource {
    /// Runs on each batch (same front end as the student's).
    Live(Box<Teacher>),
    /// Logits `[frames, C]` by utterance id.
    Cached(HashMap<String, Tensor>),
}

impl Distiller {
    /// Loads the teacher of `cfg` for the student `student` (fed by `frontend`, emitting
    /// `vocab`) and checks that they are compatible; when the teacher's logits are to be
    /// cached, computes them over `train` (or reads them back from `run_dir`). `say` receives
    /// progress lines.
    ///
    /// # Errors
    /// If the teacher cannot be loaded, emits another vocabulary or frame rate, the cached mode
    /// meets speed perturbation or repeated utterance ids, or the cache cannot be written.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &DistillConfig,
        student: &AcousticModel,
        frontend: &Frontend,
        vocab: &Vocab,
        train: &Arc<dyn Dataset>,
        augment: &AugmentConfig,
        run_dir: &Path,
        device: Device,
        batch_size: usize,
        say: &mut dyn FnMut(String),
    ) -> Result<Distiller> {
        const OP: &str = "distill";
        let teacher = load_teacher(&cfg.teacher)?;
        if teacher.vocab != *vocab {
            return Err(Error::invalid(
                OP,
                format!(
                    "the teacher {} emits {} classes {:?}, the student {} classes {:?}: they must share the output \
                     vocabulary",
                    teacher.dir.display(),
                    teacher.vocab.len(),
                    teacher.vocab.chars().iter().collect::<String>(),
                    vocab.len(),
                    vocab.chars().iter().collect::<String>()
                ),
            ));
        }
        let (rt, rs) = (frame_rate(&teacher.model, &teacher.frontend)?, frame_rate(student, frontend)?);
        if (rt - rs).abs() > 0.05 * rs.max(rt) {
            return Err(Error::invalid(
                OP,
                format!(
                    "the teacher {} emits {rt:.1} frames per second, the student {rs:.1}: they must share the frame \
                     rate (change the student's subsampling)",
                    teacher.dir.display()
                ),
            ));
        }
        let live = !cfg.cache_teacher && teacher.frontend == *frontend;
        say(format!(
            "distilling from {} ({}, {} parameters, {rt:.0} frames/s; alpha {}, T {}{})",
            teacher.dir.display(),
            teacher.model.config().name(),
            teacher.model.num_parameters(),
            cfg.alpha,
            cfg.temperature,
            if live { ", the teacher runs on every batch" } else { ", teacher logits cached" }
        ));
        teacher.model.to_device(&device)?;
        let source = if live {
            TeacherSource::Live(Box::new(teacher))
        } else {
            if augment.speed_factors.iter().any(|&f| f != 1.0) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "speed perturbation ({:?}) changes the student's frames, so cached teacher logits no longer \
                         line up: turn it off ([augment] speed_factors = [1.0]) or distil from a teacher with the \
                         student's front end without cache_teacher",
                        augment.speed_factors
                    ),
                ));
            }
            TeacherSource::Cached(cached_logits(&teacher, train, run_dir, device, batch_size, say)?)
        };
        Ok(Distiller { cfg: cfg.clone(), source, blank: vocab.blank() as usize })
    }

    /// The configuration.
    pub fn config(&self) -> &DistillConfig {
        &self.cfg
    }

    /// The distillation term ([`kd_loss`], unweighted) of the student's `logits` `[B, T', C]`
    /// for `batch`, whose inputs had `in_lens` frames and the student's outputs `out_lens`.
    ///
    /// # Errors
    /// If an utterance has no cached logits, or a tensor op fails.
    pub fn term(&self, logits: &Var, batch: &Batch, in_lens: &[usize], out_lens: &[usize]) -> Result<Var> {
        const OP: &str = "Distiller::term";
        let dims = logits.dims().to_vec();
        let (b, t, c) = (dims[0], dims[1], dims[2]);
        let device = *logits.tensor().device();
        let (teacher, teacher_lens) = match &self.source {
            TeacherSource::Live(teacher) => {
                let x = Var::constant(batch.inputs.to_device(&device)?);
                let y = no_grad(|| teacher.model.forward(&x, in_lens))?.tensor().to_dtype(DType::F32)?;
                let lens = teacher.model.output_lengths(in_lens);
                let tt = y.dims()[1];
                let y = if tt >= t {
                    y.narrow(1usize, 0, t)?
                } else {
                    Tensor::cat(&[&y, &Tensor::zeros([b, t - tt, c], DType::F32, &device)?], 1usize)?
                };
                (y, lens)
            }
            TeacherSource::Cached(cache) => {
                let mut host = vec![0f32; b * t * c];
                let mut lens = Vec::with_capacity(b);
                for (i, id) in batch.ids.iter().enumerate() {
                    let l = cache
                        .get(id)
                        .ok_or_else(|| Error::invalid(OP, format!("no cached teacher logits for utterance {id:?}")))?;
                    let frames = l.dims()[0];
                    let n = frames.min(t);
                    let v = l.narrow(0usize, 0, n)?.contiguous()?.to_vec::<f32>()?;
                    host[i * t * c..i * t * c + n * c].copy_from_slice(&v);
                    lens.push(frames);
                }
                (Tensor::from_vec(host, [b, t, c], &Device::Cpu)?.to_device(&device)?, lens)
            }
        };
        let lens: Vec<usize> = out_lens.iter().zip(&teacher_lens).map(|(&s, &tl)| s.min(tl).min(t)).collect();
        Ok(kd_loss(logits, &teacher, &lens, self.cfg.temperature, self.cfg.skip_blank_above, self.blank)?.0)
    }
}

/// The teacher's logits over the training set, by utterance id: read from the run directory
/// when it holds them for this teacher and these utterances, else computed (clean audio, the
/// teacher's front end) and written there.
fn cached_logits(
    teacher: &Teacher,
    train: &Arc<dyn Dataset>,
    run_dir: &Path,
    device: Device,
    batch_size: usize,
    say: &mut dyn FnMut(String),
) -> Result<HashMap<String, Tensor>> {
    const OP: &str = "distill";
    let path = run_dir.join(TEACHER_LOGITS_FILE);
    let source = std::fs::canonicalize(&teacher.dir).unwrap_or_else(|_| teacher.dir.clone()).display().to_string();
    if path.is_file() {
        let f = stapes_nn::checkpoint::load_safetensors(&path)?;
        if f.metadata.get("teacher").is_some_and(|t| *t == source) && f.tensors.len() == train.len() {
            say(format!("teacher logits: {} utterances read from {}", f.tensors.len(), path.display()));
            return Ok(f.tensors.into_iter().collect());
        }
        say(format!("{} is for another teacher or data set: computing it again", path.display()));
    }
    let t0 = std::time::Instant::now();
    let loader = DataLoader::new(
        train.clone(),
        crate::train::input_transform(teacher.vocab.clone(), &teacher.frontend, Default::default())?,
        LoaderConfig { batch_size, order: Order::Sequential, num_workers: 1, ..LoaderConfig::default() },
    )?;
    let mut out = BTreeMap::new();
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let in_lens = crate::train::lengths(&batch.input_lengths)?;
        let x = Var::constant(batch.inputs.to_device(&device)?);
        let y =
            no_grad(|| teacher.model.forward(&x, &in_lens))?.tensor().to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        for (i, (id, &n)) in batch.ids.iter().zip(&teacher.model.output_lengths(&in_lens)).enumerate() {
            let n = n.min(y.dims()[1]);
            let row = y.narrow(0usize, i, 1)?.narrow(1usize, 0, n)?.squeeze(0usize)?.contiguous()?;
            if out.insert(id.clone(), row).is_some() {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "utterance id {id:?} appears twice in the training set: cached teacher logits need unique ids"
                    ),
                ));
            }
        }
    }
    let meta = HashMap::from([("teacher".to_string(), source), ("utterances".to_string(), out.len().to_string())]);
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(OP, run_dir, e))?;
    stapes_nn::checkpoint::save_safetensors(&path, &out, Some(meta))?;
    say(format!(
        "teacher logits: {} utterances in {:.1}s, kept in {}",
        out.len(),
        t0.elapsed().as_secs_f64(),
        path.display()
    ));
    Ok(out.into_iter().collect())
}
