"""Build format-faithful LAION-CLAP checkpoints with random weights, and laion_clap's own embeddings.

Runs in a separate environment with the ``laion-clap`` package (it pins numpy<2); see README.md
beside this file. Writes, next to this script:

- ``htsat-mini-unfused.pt.xz``, ``htsat-mini-fused.pt.xz``: laion_clap's own ``CLAP_Module``
  (HTSAT audio tower, RoBERTa text tower), random weights, saved as its training code saves them
  (``{"epoch", "name", "state_dict", "optimizer", "scaler"}``, keys prefixed ``module.``), then
  xz-compressed (the tests decompress them: the bytes torch.save wrote);
- ``tokenizer/``: the byte-level BPE files the text tower was built for;
- ``reference.npz`` / ``reference.json``: laion_clap's ``get_audio_embedding_from_filelist``,
  ``get_audio_embedding_from_data`` and ``get_text_embedding`` outputs, and how they were made.

Only the sizes differ from the published checkpoints (the published HTSAT-tiny is 110 MB): a small
HTSAT built with laion_clap's own ``HTSAT_Swin_Transformer`` class, and a small RoBERTa built from
a local config instead of ``RobertaModel.from_pretrained('roberta-base')`` (no hub here). The audio
front end keeps the published settings (48 kHz, 1024-sample window, hop 480, 64 mel bins,
50-14000 Hz), so the checkpoints hold the same spectrogram and filter-bank tensors.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import lzma
import platform
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import soundfile
import torch

HERE = Path(__file__).resolve().parent
SEEDS = {"unfused": 1, "fused": 2}
TEXTS = ["a toilet", "BBQ", "a train", "a dog barks in the distance while rain falls on a tin roof",
         "a very long caption that goes on and on, " * 4 + "longer than the 77 tokens kept"]
WORDS = ["a", "toilet", "bbq", "train", "dog", "barks", "rain", "falls", "on", "the", "roof"]
# the small towers (everything else is laion_clap's own code and defaults)
# (window 4: every stage has shifted windows, and the stored masks stay small; 8 tagging classes:
# the published 527-class tagging head is not part of the embedding)
HTSAT_MINI = {"spec_size": 256, "patch_size": 4, "patch_stride": (4, 4), "embed_dim": 8,
              "depths": [2, 2, 2, 2], "num_heads": [2, 2, 4, 8], "window_size": 4}
CLASSES = 8
ROBERTA_MINI = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
                "intermediate_size": 128, "max_position_embeddings": 80, "type_vocab_size": 1,
                "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5,
                "hidden_act": "gelu"}
JOINT_DIM = 32
SHARPEN = 5.0  # query/key weight scale over laion_clap's init (see randomise)


# -- environment shims: what laion_clap imports but this machine cannot give it --------------------
def shim_torch_extensions() -> None:
    """torchvision's and torchaudio's compiled parts do not load beside this torch: declare the
    two operator names torchvision's import registers fakes for, and skip torchaudio's library.
    laion_clap uses only their pure-Python parts (transforms.Resize, MelSpectrogram)."""
    for name in ("nms", "qnms"):
        torch.library.define(f"torchvision::{name}",
                             "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    extension = types.ModuleType("torchaudio._extension")
    extension._IS_TORCHAUDIO_EXT_AVAILABLE = False
    extension._IS_ALIGN_AVAILABLE = False
    extension.fail_if_no_align = lambda function: function
    sys.modules["torchaudio._extension"] = extension


def shim_hub(tokenizer_dir: Path) -> None:
    """laion_clap loads tokenizers and roberta-base from the hub: use local small ones instead."""
    import transformers

    def local_tokenizer(*args, **kwargs):
        return transformers.RobertaTokenizer(str(tokenizer_dir / "vocab.json"),
                                             str(tokenizer_dir / "merges.txt"))

    def local_roberta(*args, **kwargs):
        vocab_size = len(local_tokenizer())
        return transformers.RobertaModel(transformers.RobertaConfig(vocab_size=vocab_size,
                                                                    **ROBERTA_MINI))

    for name in ("BertTokenizer", "RobertaTokenizer", "BartTokenizer"):
        getattr(transformers, name).from_pretrained = local_tokenizer
    transformers.RobertaModel.from_pretrained = local_roberta


def register_htsat_mini(config_dir: Path) -> None:
    """An ``HTSAT-mini`` model config, built by laion_clap's own HTSAT class at a small size."""
    from clap_module import factory, htsat, model

    audio_cfg = dict(factory._MODEL_CONFIGS["HTSAT-tiny"]["audio_cfg"], model_name="mini",
                     class_num=CLASSES)
    config = dict(factory._MODEL_CONFIGS["HTSAT-tiny"], audio_cfg=audio_cfg,
                  embed_dim=HTSAT_MINI["embed_dim"] * 2 ** (len(HTSAT_MINI["depths"]) - 1),
                  joint_embed_shape=JOINT_DIM)
    (config_dir / "HTSAT-mini.json").write_text(json.dumps(config))
    factory.add_model_config(config_dir)
    original = model.create_htsat_model

    def create(audio_cfg, enable_fusion=False, fusion_type="None"):
        if audio_cfg.model_name != "mini":
            return original(audio_cfg, enable_fusion, fusion_type)
        return htsat.HTSAT_Swin_Transformer(num_classes=audio_cfg.class_num, config=audio_cfg,
                                            enable_fusion=enable_fusion, fusion_type=fusion_type,
                                            **HTSAT_MINI)

    model.create_htsat_model = create


def write_tokenizer(directory: Path) -> None:
    """cmcr's byte-level BPE writer (loaded by path: cmcr itself needs numpy 2)."""
    path = HERE.parents[2] / "src" / "cmcr" / "spaces" / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("cmcr_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_bpe_files(directory, WORDS, style="roberta")


# -- the checkpoints --------------------------------------------------------------------------------
def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every tensor a distinct random value, so a swapped key changes the embeddings:
    laion_clap's init leaves norms at 1/0 and BatchNorm statistics at 0/1, and its attention
    nearly uniform (query and key weights are sharpened 5x, position biases spread, as in trained
    models). bn0's statistics are set near a real log-mel's (mean about -40 dB, spread 15 dB)."""
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point() or "extractor" in name or "attn_mask" in name:
                continue  # the frozen STFT/mel tensors and the shifted-window masks stay exact
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_((225.0 if ".bn0." in name else 1.0) * (0.5 + noise.abs()))
            elif name.endswith("running_mean"):
                tensor.copy_(-40.0 + 10 * noise if ".bn0." in name else 0.2 * noise)
            elif "logit_scale" in name:
                continue
            elif name.endswith(("qkv.weight", "query.weight", "key.weight")):
                tensor.mul_(SHARPEN * (1 + 0.2 * noise))
            elif "relative_position_bias_table" in name:
                tensor.add_(noise)
            elif tensor.dim() == 1 and name.endswith("weight"):
                tensor.mul_(1 + 0.2 * noise)  # norm gains
            elif name.endswith("bias"):
                tensor.add_(0.05 * noise)
            else:
                tensor.mul_(1 + 0.2 * noise)


def build_module(fused: bool, seed: int):
    """laion_clap's CLAP_Module with random weights. The text projection's first layer is sized
    for roberta-base (768 inputs, hard-coded in laion_clap); it is rebuilt for the small tower."""
    import laion_clap

    torch.manual_seed(seed)
    module = laion_clap.CLAP_Module(enable_fusion=fused, device="cpu", amodel="HTSAT-mini",
                                    tmodel="roberta")
    module.model.text_projection[0] = torch.nn.Linear(ROBERTA_MINI["hidden_size"], JOINT_DIM)
    return module.eval()


def reload(fused: bool, checkpoint: Path):
    """A fresh CLAP_Module loaded through laion_clap's own ``load_ckpt``, as users load the
    published files: the references come from what the file holds."""
    module = build_module(fused, seed=12345)
    module.load_ckpt(str(checkpoint), verbose=False)
    return module.eval()


def save_like_training(module, path: Path, name: str) -> None:
    """What laion_clap's training/main.py saves: the DDP-wrapped model's state dict (``module.``
    prefixes), the optimizer (AdamW, two groups, as main.py builds it), the AMP scaler.
    ``text_branch.embeddings.position_ids`` is added as transformers 4.2x saved it (the published
    files hold it; laion_clap's loader deletes it)."""
    model = module.model
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    positions = ROBERTA_MINI["max_position_embeddings"]
    state["module.text_branch.embeddings.position_ids"] = torch.arange(positions).expand((1, -1))
    gain_or_bias = [p for n, p in model.named_parameters()
                    if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n]
    rest = [p for n, p in model.named_parameters() if all(p is not q for q in gain_or_bias)]
    optimizer = torch.optim.AdamW([{"params": gain_or_bias, "weight_decay": 0.0},
                                   {"params": rest, "weight_decay": 0.0}], lr=1e-4,
                                  betas=(0.9, 0.99), eps=1e-9)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
              "growth_interval": 2000, "_growth_tracker": 0}
    torch.save({"epoch": 1, "name": name, "state_dict": state,
                "optimizer": optimizer.state_dict(), "scaler": scaler}, path)


# -- the audio --------------------------------------------------------------------------------------
def make_clips(assets: Path, directory: Path) -> list[Path]:
    """The three demo WAVs (32 kHz, 10 s) and three derived clips (tests/test_laion_clap.py makes
    the same): 30 s (fusion windows, crop), 3.3 s (repeat-padding), 10 s + 200 samples (the
    corner case laion_clap treats as not longer)."""
    clips = [assets / f"{name}.wav" for name in ("BBQ", "toilet", "train")]
    waves = [soundfile.read(str(path), dtype="int16")[0] for path in clips]
    return clips + derive_clips(waves, directory, "")


def derive_clips(waves: list[np.ndarray], directory: Path, prefix: str) -> list[Path]:
    """The three clips derived from three 10 s, 32 kHz int16 waves, written in ``directory``."""
    derived = {"long30s.wav": np.concatenate(waves), "short3s.wav": waves[0][:105600],
               "edge10s.wav": np.concatenate([waves[1], waves[2][:200]])}
    paths = []
    for name, samples in derived.items():
        soundfile.write(str(directory / f"{prefix}{name}"), samples, 32000, subtype="PCM_16")
        paths.append(directory / f"{prefix}{name}")
    return paths


def synthetic_waves(rate: int = 32000, seconds: float = 10.0) -> list[np.ndarray]:
    """Three 10 s int16 waves made here, the same on every machine (so the test needs no file it
    cannot ship): a rising chirp with harmonics, a pulsed tone over hum, a swept noise band."""
    rng = np.random.default_rng(20261205)
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (200 * t + (3800 / (2 * seconds)) * t ** 2)
    chirp = sum(np.sin(k * phase) / k for k in (1, 2, 3))
    pulses = np.sin(2 * np.pi * 880 * t) * (np.sin(2 * np.pi * 3 * t) > 0.3) + 0.3 * np.sin(2 * np.pi * 60 * t)
    noise = rng.standard_normal(len(t))
    band = np.convolve(noise, np.hanning(64) / 32, mode="same") * np.sin(np.pi * t / seconds) ** 2
    waves = []
    for wave in (chirp, pulses, band + 0.05 * noise):
        wave = 0.7 * wave / np.abs(wave).max()
        waves.append(np.round(wave * 32767).astype(np.int16))
    return waves


def make_synthetic_clips(directory: Path) -> list[Path]:
    """The synthetic waves as WAVs, then the same three derived clips as the demo's."""
    waves = synthetic_waves()
    clips = []
    for index, wave in enumerate(waves):
        soundfile.write(str(directory / f"synthetic{index}.wav"), wave, 32000, subtype="PCM_16")
        clips.append(directory / f"synthetic{index}.wav")
    return clips + derive_clips(waves, directory, "synthetic-")


@contextlib.contextmanager
def centred_randomness():
    """laion_clap draws its fusion windows (np.random.choice over each third of the start
    positions) and its rand_trunc crop (np.random.randint) at random: take the centre of each."""
    choice, randint = np.random.choice, np.random.randint
    np.random.choice = lambda values: values[len(values) // 2]
    np.random.randint = lambda low, high: low + (high - 1 - low) // 2
    try:
        yield
    finally:
        np.random.choice, np.random.randint = choice, randint


@contextlib.contextmanager
def resize_antialias(antialias: bool):
    """laion_clap shrinks the whole clip's mel with torchvision's Resize and its default
    antialias, which changed in torchvision 0.17 (tensors: False before, True since)."""
    import torchvision

    resize = torchvision.transforms.Resize
    torchvision.transforms.Resize = lambda size: resize(size, antialias=antialias)
    try:
        yield
    finally:
        torchvision.transforms.Resize = resize


def audio_embeddings(module, clips: list[Path], antialias: bool = False) -> dict[str, np.ndarray]:
    import librosa

    with centred_randomness(), resize_antialias(antialias), torch.no_grad():
        from_files = module.get_audio_embedding_from_filelist([str(p) for p in clips])
        waves = np.stack([librosa.load(str(p), sr=48000)[0] for p in clips[:3]])
        from_data = module.get_audio_embedding_from_data(waves)
    return {"files": from_files, "data": from_data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, required=True,
                        help="folder with the demo BBQ.wav, toilet.wav, train.wav")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--no-shims", action="store_true",
                        help="torchvision and torchaudio pair with this torch: import them as is")
    args = parser.parse_args()
    if not args.no_shims:
        shim_torch_extensions()
    write_tokenizer(args.out / "tokenizer")
    shim_hub(args.out / "tokenizer")
    import laion_clap  # noqa: F401  (puts clap_module on sys.path)

    scratch = Path(tempfile.mkdtemp())
    register_htsat_mini(scratch)
    clips = make_clips(args.assets, scratch)
    synthetic = make_synthetic_clips(scratch)
    arrays, notes = {}, {}
    for kind, seed in SEEDS.items():
        module = build_module(kind == "fused", seed)
        randomise(module.model, torch.Generator().manual_seed(seed))
        checkpoint = scratch / f"htsat-mini-{kind}.pt"
        save_like_training(module, checkpoint, f"htsat-mini-{kind}")
        (args.out / f"{checkpoint.name}.xz").write_bytes(lzma.compress(checkpoint.read_bytes()))
        module = reload(kind == "fused", checkpoint)
        for route, embeddings in audio_embeddings(module, clips).items():
            arrays[f"{kind}_audio_{route}"] = embeddings
        for route, embeddings in audio_embeddings(module, synthetic).items():
            arrays[f"{kind}_synthetic_{route}"] = embeddings
        with torch.no_grad():
            arrays[f"{kind}_text"] = module.get_text_embedding(TEXTS)
        if kind == "fused":  # what today's torchvision default would give instead
            antialiased = audio_embeddings(module, clips, antialias=True)["files"]
            notes["fused_antialias_cosines"] = [
                round(float(a @ b), 6) for a, b in zip(antialiased, arrays["fused_audio_files"])]
    np.savez(args.out / "reference.npz", **arrays)
    from importlib.metadata import version

    record = {"clips": [p.name for p in clips], "data_clips": [p.name for p in clips[:3]],
              "synthetic_clips": [p.name for p in synthetic],
              "texts": TEXTS, "seeds": SEEDS, "htsat": HTSAT_MINI, "roberta": ROBERTA_MINI,
              "joint_dim": JOINT_DIM, "randomness": "centre of each range", "resize_antialias": False,
              "versions": {name: version(name) for name in (
                  "laion_clap", "torch", "torchvision", "torchaudio", "torchlibrosa", "transformers",
                  "librosa", "soxr", "numpy")} | {"python": platform.python_version()}, **notes}
    (args.out / "reference.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
