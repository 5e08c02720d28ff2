"""Golden files for wav2vec2 (issue 17): random-initialised `Wav2Vec2ForCTC` models saved as a
user's checkpoint directory would be, and their outputs from transformers.

Run: python tools/golden/wav2vec2.py   (torch 2.11.0, transformers 5.x, safetensors)

Two configurations cover the two families of public CTC checkpoints:
* `group_postnorm`: wav2vec2-base-960h's layout: `feat_extract_norm = "group"` (GroupNorm with
  one group per channel on the first conv layer), no conv bias, post-norm encoder
  (`do_stable_layer_norm = false`), an even positional-conv kernel (its last frame dropped), no
  attention mask from the feature extractor;
* `layer_prenorm`: wav2vec2-large-960h-lv60-self's layout: `feat_extract_norm = "layer"`, conv
  bias, pre-norm encoder, an odd positional-conv kernel, an attention mask.
Both are small (hidden 32, 2 layers) so the directories stay tiny.

For each case `<case>` the script writes under `tests/golden/wav2vec2/`:
* `<case>/`: `config.json`, `model.safetensors` (weight norm spelled as transformers 5 saves it,
  `parametrizations.weight.original0/1`), `vocab.json`, `preprocessor_config.json`;
* `<case>_legacy/`: the same model with the hub checkpoints' spelling `weight_g`/`weight_v`, as
  a `pytorch_model.bin` (zip + pickle, `torch.save` of the state dict, as `save_pretrained`
  wrote it before safetensors) and no safetensors file;
* `malicious/`: a `config.json` and a `pytorch_model.bin` whose pickle calls `os.system` when
  unpickled (it would create `/tmp/stapes-malicious-checkpoint-ran`);
* `<case>.safetensors`: the batch and the outputs:
  `audio` [2, 8000] raw samples (the second utterance 6000 long, zero-padded), `audio_lengths`,
  `input_values` and `attention_mask` from `Wav2Vec2FeatureExtractor` (per-utterance
  normalisation), `logits` [2, T', vocab] (eval mode, eager attention), `hidden.<i>` for
  i = 0..=layers (transformers' `output_hidden_states`: the first layer's input, after the
  positional convolution, then every layer's output, before the pre-norm stack's final layer
  norm), `projected` (the feature projection's
  output, the encoder's input), `last_hidden_state`, `extract_features` (the conv stack's
  output, [2, T', C]); and for one fine-tuning step (train mode with every dropout, LayerDrop
  and SpecAugment off, so it is deterministic): `labels` (padded with -100), `loss`
  (transformers' own CTC loss, f32, with `ctc_loss_reduction = "mean"` as fine-tuning recipes
  set it), `loss64` (the same step with the model and the loss in f64) and `grad.<param>` (f64),
  the gradients of `loss64` for every parameter that requires one (the feature encoder frozen,
  as `freeze_feature_encoder()` does).
"""

import collections
import json
import os
import shutil
import sys

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "wav2vec2")
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H"]

CASES = {
    "group_postnorm": dict(feat_extract_norm="group", conv_bias=False, do_stable_layer_norm=False,
                           num_conv_pos_embeddings=16, return_attention_mask=False),
    "layer_prenorm": dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True,
                          num_conv_pos_embeddings=15, return_attention_mask=True),
}


def make_config(case):
    c = CASES[case]
    return Wav2Vec2Config(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu", conv_dim=(32, 32, 32), conv_stride=(5, 2, 2),
        conv_kernel=(10, 3, 3), conv_bias=c["conv_bias"], feat_extract_norm=c["feat_extract_norm"],
        do_stable_layer_norm=c["do_stable_layer_norm"], num_conv_pos_embeddings=c["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        layer_norm_eps=1e-5, mask_time_prob=0.05, ctc_loss_reduction="mean", ctc_zero_infinity=True,
    )


def audio_batch():
    g = torch.Generator().manual_seed(17)
    n = 8000
    t = torch.arange(n, dtype=torch.float64) / 16000
    a = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 1375 * t)
    a = a.float() + 0.05 * torch.randn(n, generator=g)
    b = 0.2 * torch.randn(n, generator=g)
    b[6000:] = 0
    return torch.stack([a, b]), torch.tensor([8000, 6000])


def legacy_state_dict(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        out[k] = v
    return out


class Malicious:
    """Unpickling this runs a shell command: what a hostile checkpoint does."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/stapes-malicious-checkpoint-ran",))


def main():
    os.makedirs(OUT, exist_ok=True)
    # A checkpoint directory whose pytorch_model.bin would run a command when unpickled.
    dm = os.path.join(OUT, "malicious")
    shutil.rmtree(dm, ignore_errors=True)
    os.makedirs(dm)
    make_config("group_postnorm").to_json_file(os.path.join(dm, "config.json"))
    torch.save({"lm_head.weight": Malicious()}, os.path.join(dm, "pytorch_model.bin"))
    for case, c in CASES.items():
        torch.manual_seed(1234)
        config = make_config(case)
        config._attn_implementation = "eager"
        model = Wav2Vec2ForCTC(config)
        assert model.config._attn_implementation == "eager"
        # Random init leaves the LayerNorm/GroupNorm affines at 1/0 and the biases at 0; make
        # them random too so a parameter loaded into the wrong place cannot go unnoticed.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or "layer_norm" in name or name.endswith("original0"):
                    p.copy_(p + 0.1 * torch.randn_like(p))
        model.eval()

        fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                      do_normalize=True, return_attention_mask=c["return_attention_mask"])
        d = os.path.join(OUT, case)
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=True)
        fe.save_pretrained(d)
        with open(os.path.join(d, "vocab.json"), "w") as f:
            json.dump({t: i for i, t in enumerate(VOCAB)}, f, indent=2)
        dl = os.path.join(OUT, case + "_legacy")
        shutil.rmtree(dl, ignore_errors=True)
        os.makedirs(dl)
        shutil.copy(os.path.join(d, "config.json"), dl)
        shutil.copy(os.path.join(d, "preprocessor_config.json"), dl)
        shutil.copy(os.path.join(d, "vocab.json"), dl)
        sd = model.state_dict()
        legacy = collections.OrderedDict(legacy_state_dict(sd))
        legacy._metadata = sd._metadata  # as a module's state_dict() has it (pickled with BUILD)
        torch.save(legacy, os.path.join(dl, "pytorch_model.bin"))
        # the legacy directory loads in transformers to the same model
        reloaded = Wav2Vec2ForCTC.from_pretrained(dl)
        for k, v in model.state_dict().items():
            assert torch.equal(reloaded.state_dict()[k], v), k

        audio, lengths = audio_batch()
        feats = fe([a[:l].numpy() for a, l in zip(audio, lengths)], sampling_rate=16000,
                   padding="longest", return_tensors="pt", return_attention_mask=True)
        input_values, attention_mask = feats["input_values"].float(), feats["attention_mask"].long()
        mask_arg = attention_mask if c["return_attention_mask"] else None

        proj = []
        hooks = [model.wav2vec2.feature_projection.register_forward_hook(
            lambda m, i, o: proj.append(o[0].detach().clone()))]
        with torch.no_grad():
            out = model(input_values, attention_mask=mask_arg)
            base = model.wav2vec2(input_values, attention_mask=mask_arg, output_hidden_states=True)
        for h in hooks:
            h.remove()
        tensors = {
            "audio": audio, "audio_lengths": lengths.long(), "input_values": input_values,
            "attention_mask": attention_mask, "logits": out.logits.float(),
            "last_hidden_state": base.last_hidden_state, "extract_features": base.extract_features,
            "projected": proj[0],
        }
        for i, h in enumerate(base.hidden_states):
            tensors[f"hidden.{i}"] = h

        # one fine-tuning step, deterministic: dropout, LayerDrop and SpecAugment off
        model.config.mask_time_prob = 0.0
        model.config.layerdrop = 0.0
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(m, Wav2Vec2Attention):
                m.dropout = 0.0  # a float, not a Dropout module: the attention-probability dropout
        model.freeze_feature_encoder()
        model.zero_grad()
        labels = torch.tensor([[5, 6, 4, 7, 8, 9], [10, 11, 5, -100, -100, -100]])
        out = model(input_values, attention_mask=mask_arg, labels=labels)
        tensors["labels"] = labels
        tensors["loss"] = out.loss.detach().reshape(1)  # transformers' own (f32 CTC)
        # The gradients: the same model and loss in f64. In f32, transformers' own gradients
        # differ from f64 ones by up to 4e-3 (base) and 1.7e-2 (lv60) of a tensor's largest
        # gradient (the q/k projections, whose gradients cancel), and its f32 CTC by 1.3e-3:
        # rounding, not the model. In f64 both sides agree to rounding of 1e-12.
        model.double()
        mask = attention_mask if mask_arg is not None else torch.ones_like(attention_mask)
        in_len = model._get_feat_extract_output_lengths(mask.sum(-1))
        tgt_len = (labels >= 0).sum(-1)
        logits64 = model(input_values.double(), attention_mask=mask_arg).logits
        lp = torch.log_softmax(logits64, dim=-1).transpose(0, 1)
        loss64 = torch.nn.functional.ctc_loss(lp, labels[labels >= 0], in_len, tgt_len, blank=config.pad_token_id,
                                              reduction="mean", zero_infinity=True)
        loss64.backward()
        tensors["loss64"] = loss64.detach().reshape(1)
        for name, p in model.named_parameters():
            if p.requires_grad and p.grad is not None:
                tensors["grad." + name] = p.grad.detach().clone()
        write_safetensors(os.path.join(OUT, case + ".safetensors"), tensors,
                          {"torch": torch.__version__, "case": case})
        print(case, {k: tuple(v.shape) for k, v in tensors.items() if not k.startswith("grad.")})


if __name__ == "__main__":
    main()
