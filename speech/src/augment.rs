//! SpecAugment masking as torchaudio does it: [`FrequencyMasking`], [`TimeMasking`] and
//! [`SpecAugment`] on `[..., freq, time]` f32 spectrograms, drawing from a
//! [`stapes_tensor::Generator`] so a seed gives the same masks every time.
//!
//! One mask along an axis of length `L` with parameter `W` is drawn like
//! `torchaudio.functional.mask_along_axis(_iid)`: `v = u1 * W`, `v0 = u2 * (L - v)` with `u1`,
//! `u2` uniform in `[0, 1)`, and the masked range is `[floor(v0), floor(v0) + floor(v))`, so
//! a mask is `0..W-1` wide and always inside the axis. With `p < 1`, `W` is first lowered to
//! `min(W, floor(L * p))`; a `W` below 1 masks nothing. With `iid_masks` each example (every
//! index of the dims before `[freq, time]`) gets its own mask, else one mask is shared by all.
//! The random stream is stapes' own, so the masks are not torch's for the same seed; the
//! distribution is the same.
//!
//! Differences from torchaudio: `iid_masks` on a 2-D `[freq, time]` input treats it as one
//! example (torchaudio raises an error).

use stapes_tensor::{DType, Device, Error, Generator, Result, Tensor};

/// A masked range `[start, end)` along the frequency or time axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskSpan {
    /// First masked index.
    pub start: usize,
    /// One past the last masked index (`start` when the mask is empty).
    pub end: usize,
}

impl MaskSpan {
    /// Number of masked indices.
    pub fn width(&self) -> usize {
        self.end - self.start
    }
}

/// Which axis of `[..., freq, time]` a mask runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    Freq,
    Time,
}

/// The shape of a spectrogram batch: examples, frequency bins, frames.
#[derive(Clone, Copy, Debug)]
struct Dims {
    examples: usize,
    freqs: usize,
    frames: usize,
}

fn dims_of(op: &'static str, x: &Tensor) -> Result<Dims> {
    if x.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype(), msg: "expected an f32 spectrogram" });
    }
    if x.rank() < 2 {
        return Err(Error::shape(op, format!("expected a [..., freq, time] spectrogram, got shape {:?}", x.dims())));
    }
    let d = x.dims();
    Ok(Dims { examples: d[..d.len() - 2].iter().product(), freqs: d[d.len() - 2], frames: d[d.len() - 1] })
}

fn check_p(op: &'static str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid(op, format!("p must be within [0, 1], got {p}")));
    }
    Ok(())
}

/// Draws and applies one mask per example (iid) or one for all, returning the spans (one per
/// example when iid, else one).
#[allow(clippy::too_many_arguments)]
fn mask_along_axis(
    data: &mut [f32],
    d: Dims,
    axis: Axis,
    mask_param: usize,
    p: f64,
    iid: bool,
    value: f32,
    gen: &mut Generator,
) -> Vec<MaskSpan> {
    let len = match axis {
        Axis::Freq => d.freqs,
        Axis::Time => d.frames,
    };
    let param = if p == 1.0 { mask_param } else { mask_param.min((len as f64 * p) as usize) };
    let draws = if iid { d.examples } else { 1 };
    if param < 1 || d.examples == 0 {
        return vec![MaskSpan { start: 0, end: 0 }; draws];
    }
    let widths: Vec<f64> = (0..draws).map(|_| gen.next_f64() * param as f64).collect();
    let spans: Vec<MaskSpan> = widths
        .iter()
        .map(|&v| {
            let start = (gen.next_f64() * (len as f64 - v)) as usize;
            MaskSpan { start, end: (start + v as usize).min(len) }
        })
        .collect();
    for (e, block) in data.chunks_mut((d.freqs * d.frames).max(1)).enumerate() {
        let s = spans[if iid { e } else { 0 }];
        match axis {
            Axis::Freq => block[s.start * d.frames..s.end * d.frames].fill(value),
            Axis::Time => block.chunks_mut(d.frames.max(1)).for_each(|row| row[s.start..s.end].fill(value)),
        }
    }
    spans
}

fn masked(op: &'static str, x: &Tensor, f: impl FnOnce(&mut [f32], Dims) -> Result<()>) -> Result<Tensor> {
    let d = dims_of(op, x)?;
    let mut data = x.to_vec::<f32>()?;
    f(&mut data, d)?;
    Tensor::from_vec(data, x.dims().to_vec(), &Device::Cpu)
}

/// `torchaudio.transforms.FrequencyMasking`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrequencyMasking {
    /// Masks are `0..freq_mask_param - 1` bins wide.
    pub freq_mask_param: usize,
    /// A different mask per example. Default false.
    pub iid_masks: bool,
}

impl FrequencyMasking {
    /// Masks a `[..., freq, time]` f32 spectrogram with `mask_value`.
    pub fn forward(&self, x: &Tensor, mask_value: f32, gen: &mut Generator) -> Result<Tensor> {
        masked("FrequencyMasking", x, |data, d| {
            mask_along_axis(data, d, Axis::Freq, self.freq_mask_param, 1.0, self.iid_masks, mask_value, gen);
            Ok(())
        })
    }
}

/// `torchaudio.transforms.TimeMasking`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeMasking {
    /// Masks are `0..time_mask_param - 1` frames wide (before the `p` limit).
    pub time_mask_param: usize,
    /// A different mask per example. Default false.
    pub iid_masks: bool,
    /// At most this proportion of the frames is masked (`0..=1`). Default 1.
    pub p: f64,
}

impl TimeMasking {
    /// Masks a `[..., freq, time]` f32 spectrogram with `mask_value`.
    pub fn forward(&self, x: &Tensor, mask_value: f32, gen: &mut Generator) -> Result<Tensor> {
        check_p("TimeMasking", self.p)?;
        masked("TimeMasking", x, |data, d| {
            mask_along_axis(data, d, Axis::Time, self.time_mask_param, self.p, self.iid_masks, mask_value, gen);
            Ok(())
        })
    }
}

/// The masks one [`SpecAugment`] call applied: per mask drawn, the spans of each example
/// (one span shared by all when not iid).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AppliedMasks {
    /// `n_time_masks` entries.
    pub time: Vec<Vec<MaskSpan>>,
    /// `n_freq_masks` entries.
    pub freq: Vec<Vec<MaskSpan>>,
}

/// `torchaudio.transforms.SpecAugment`: `n_time_masks` time masks, then `n_freq_masks`
/// frequency masks, filled with 0 (`zero_masking`) or the mean of the input spectrogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpecAugment {
    /// Number of time masks.
    pub n_time_masks: usize,
    /// Time masks are `0..time_mask_param - 1` frames wide.
    pub time_mask_param: usize,
    /// Number of frequency masks.
    pub n_freq_masks: usize,
    /// Frequency masks are `0..freq_mask_param - 1` bins wide.
    pub freq_mask_param: usize,
    /// A different mask per example (inputs of rank >= 3). torchaudio's default: true.
    pub iid_masks: bool,
    /// Largest proportion of an axis one mask may cover (applies to both axes, as in
    /// torchaudio). Default 1.
    pub p: f64,
    /// Fill with 0 (true) or with the input's mean (false, torchaudio's default).
    pub zero_masking: bool,
}

impl SpecAugment {
    /// A SpecAugment with torchaudio's defaults for `iid_masks` (true), `p` (1) and
    /// `zero_masking` (false).
    pub fn new(n_time_masks: usize, time_mask_param: usize, n_freq_masks: usize, freq_mask_param: usize) -> Self {
        SpecAugment {
            n_time_masks,
            time_mask_param,
            n_freq_masks,
            freq_mask_param,
            iid_masks: true,
            p: 1.0,
            zero_masking: false,
        }
    }

    /// Masks a `[..., freq, time]` spectrogram held in `data` (row-major, `examples * freqs *
    /// frames` values) in place, and returns the masks applied.
    pub fn apply_slice(
        &self,
        data: &mut [f32],
        freqs: usize,
        frames: usize,
        gen: &mut Generator,
    ) -> Result<AppliedMasks> {
        check_p("SpecAugment", self.p)?;
        let per = freqs * frames;
        if (per == 0 && !data.is_empty()) || (per > 0 && !data.len().is_multiple_of(per)) {
            return Err(Error::shape(
                "SpecAugment",
                format!("{} values is not a whole number of [{freqs}, {frames}] spectrograms", data.len()),
            ));
        }
        let d = Dims { examples: data.len().checked_div(per).unwrap_or(0), freqs, frames };
        let value = if self.zero_masking || data.is_empty() {
            0.0
        } else {
            (data.iter().map(|&v| f64::from(v)).sum::<f64>() / data.len() as f64) as f32
        };
        let mut masks = AppliedMasks::default();
        for _ in 0..self.n_time_masks {
            let s = mask_along_axis(data, d, Axis::Time, self.time_mask_param, self.p, self.iid_masks, value, gen);
            masks.time.push(s);
        }
        for _ in 0..self.n_freq_masks {
            let s = mask_along_axis(data, d, Axis::Freq, self.freq_mask_param, self.p, self.iid_masks, value, gen);
            masks.freq.push(s);
        }
        Ok(masks)
    }

    /// Masks a `[..., freq, time]` f32 spectrogram; also returns the masks applied.
    pub fn forward_with_masks(&self, x: &Tensor, gen: &mut Generator) -> Result<(Tensor, AppliedMasks)> {
        let d = dims_of("SpecAugment", x)?;
        let mut data = x.to_vec::<f32>()?;
        let masks = self.apply_slice(&mut data, d.freqs, d.frames, gen)?;
        Ok((Tensor::from_vec(data, x.dims().to_vec(), &Device::Cpu)?, masks))
    }

    /// Masks a `[..., freq, time]` f32 spectrogram.
    pub fn forward(&self, x: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        Ok(self.forward_with_masks(x, gen)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(examples: usize, freqs: usize, frames: usize) -> Tensor {
        let n = examples * freqs * frames;
        let data: Vec<f32> = (0..n).map(|i| 1.0 + (i % 97) as f32).collect();
        Tensor::from_vec(data, [examples, freqs, frames], &Device::Cpu).unwrap()
    }

    #[test]
    fn same_seed_same_masks_other_seed_other_masks() {
        let x = spec(4, 80, 300);
        let sa = SpecAugment { zero_masking: true, ..SpecAugment::new(2, 40, 2, 27) };
        let (a, ma) = sa.forward_with_masks(&x, &mut Generator::new(7)).unwrap();
        let (b, mb) = sa.forward_with_masks(&x, &mut Generator::new(7)).unwrap();
        let (c, mc) = sa.forward_with_masks(&x, &mut Generator::new(8)).unwrap();
        assert_eq!(ma, mb);
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_ne!(ma, mc);
        assert_ne!(a.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
    }

    #[test]
    fn masks_are_within_bounds_counted_and_exactly_where_reported() {
        let (examples, freqs, frames) = (3, 40, 120);
        let x = spec(examples, freqs, frames);
        let orig = x.to_vec::<f32>().unwrap();
        for seed in 0..50 {
            let sa = SpecAugment { zero_masking: true, ..SpecAugment::new(3, 30, 2, 10) };
            let (y, m) = sa.forward_with_masks(&x, &mut Generator::new(seed)).unwrap();
            assert_eq!(m.time.len(), 3);
            assert_eq!(m.freq.len(), 2);
            for (spans, param, len) in
                m.time.iter().map(|s| (s, 30, frames)).chain(m.freq.iter().map(|s| (s, 10, freqs)))
            {
                assert_eq!(spans.len(), examples, "iid: one span per example");
                for s in spans {
                    assert!(s.start <= s.end && s.end <= len && s.width() < param, "{s:?}");
                }
            }
            let y = y.to_vec::<f32>().unwrap();
            for e in 0..examples {
                for f in 0..freqs {
                    for t in 0..frames {
                        let i = (e * freqs + f) * frames + t;
                        let in_mask = m.time.iter().any(|s| (s[e].start..s[e].end).contains(&t))
                            || m.freq.iter().any(|s| (s[e].start..s[e].end).contains(&f));
                        assert_eq!(y[i], if in_mask { 0.0 } else { orig[i] }, "seed {seed} at {e},{f},{t}");
                    }
                }
            }
        }
    }

    #[test]
    fn widths_cover_the_range_and_p_limits_them() {
        let x = spec(1, 20, 50);
        let mut gen = Generator::new(3);
        let mut seen = [false; 10];
        for _ in 0..500 {
            let (_, m) = SpecAugment::new(1, 10, 0, 0).forward_with_masks(&x, &mut gen).unwrap();
            seen[m.time[0][0].width()] = true;
        }
        assert!(seen.iter().all(|&s| s), "widths 0..=9 all drawn: {seen:?}");
        let limited = SpecAugment { p: 0.1, ..SpecAugment::new(1, 40, 0, 0) };
        for _ in 0..200 {
            let (_, m) = limited.forward_with_masks(&x, &mut gen).unwrap();
            assert!(m.time[0][0].width() < 5);
        }
        assert!(SpecAugment { p: 1.5, ..limited }.forward(&x, &mut gen).is_err());
    }

    #[test]
    fn mean_fill_shared_masks_and_single_transforms() {
        let x = spec(2, 16, 40);
        let mean = x.to_vec::<f32>().unwrap().iter().map(|&v| f64::from(v)).sum::<f64>() / x.elem_count() as f64;
        let sa = SpecAugment { iid_masks: false, ..SpecAugment::new(1, 20, 1, 8) };
        for seed in 0..20 {
            let (y, m) = sa.forward_with_masks(&x, &mut Generator::new(seed)).unwrap();
            assert_eq!(m.time[0].len(), 1);
            let y = y.to_vec::<f32>().unwrap();
            let s = m.time[0][0];
            for e in 0..2 {
                for t in s.start..s.end {
                    assert_eq!(y[e * 16 * 40 + t], mean as f32);
                }
            }
        }
        let mut gen = Generator::new(1);
        let y = FrequencyMasking { freq_mask_param: 16, iid_masks: true }.forward(&x, -1.0, &mut gen).unwrap();
        let masked_rows = y.to_vec::<f32>().unwrap().chunks(40).filter(|r| r.iter().all(|&v| v == -1.0)).count();
        assert!(masked_rows < 2 * 16);
        let y = TimeMasking { time_mask_param: 1, iid_masks: false, p: 1.0 }.forward(&x, -1.0, &mut gen).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap(), "param 1 masks are empty");
        let ints = Tensor::from_vec(vec![1i64; 4], [2, 2], &Device::Cpu).unwrap();
        assert!(SpecAugment::new(1, 1, 1, 1).forward(&ints, &mut gen).is_err());
    }
}
