"""Tiny random-init CLIP and CLAP checkpoints, built locally and saved like real ones.

For tests, benchmarks and smoke checks of the real loading code (``load_space("clip:DIR")`` goes
through ``from_pretrained``) where real weights cannot be downloaded. The tokenizers are
byte-level BPE with only the 256 byte symbols (no merges), which CLIPTokenizer and
RobertaTokenizer accept.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cmcr.spaces.clip import clip_image_processor
from cmcr.spaces.tokenizer import write_bpe_files


def build_tiny_clip(directory: str | Path, *, image_size: int = 32, patch_size: int = 8,
                    seed: int = 0) -> Path:
    """A random-init CLIPModel (dim 16) + CLIPProcessor saved to ``directory``."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_bpe_files(directory, style="clip")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    vocab_size = len(tokenizer)
    image_processor = clip_image_processor(image_size)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=image_size, patch_size=patch_size),
        projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    return directory


def build_tiny_clap(directory: str | Path, *, fused: bool = True, seed: int = 0) -> Path:
    """A random-init ClapModel (dim 16, 16 kHz, 1 s clips) + ClapProcessor saved to ``directory``.

    64 mel bins because transformers' fusion path resizes the global view to 64 bins.
    """
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              RobertaTokenizer)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_bpe_files(directory, style="roberta")
    tokenizer = RobertaTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=16000, hop_length=320,
                                     max_length_s=1, fft_window_size=1024, frequency_max=8000,
                                     truncation="fusion" if fused else "rand_trunc")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=80,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, projection_dim=16),
        audio_config=dict(num_mel_bins=64, spec_size=64, patch_size=4, patch_stride=(4, 4),
                          patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2],
                          hidden_size=16, window_size=4, enable_fusion=fused, projection_dim=16),
        projection_dim=16)
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(directory)
    return directory
