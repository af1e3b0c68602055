"""Named evaluation protocols: one per way a benchmark is scored, each tied to the public file it
follows (docs/eval.md explains each). The first protocol listed for a dataset is its default.

A protocol is data: readers look at its ``name`` (which test list, fold or frames to read) and
tasks at its rule fields (which prompt templates, heat-map rule, recognition rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from cmcr.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    """One way to evaluate a dataset, and the reference file it follows."""

    name: str
    reference: str  # repository and file whose behaviour this protocol reproduces
    summary: str
    templates: str | None = None  # zero-shot: a key of cmcr.eval.prompts.TEMPLATE_SETS
    localization: str = "ezvsl"  # heat-map rule: "ezvsl" (median) or "dsol" (0.1 x max)
    recognition: str = "global"  # counterfactual rule: "global" (pair cosine) or "slavc"


def _standard(reference: str) -> tuple[Protocol, ...]:
    return (Protocol("standard", reference, "the customary protocol, see docs/eval.md"),)


_EXTENDED = (
    Protocol("slavc", "stoneMo/SLAVC test.py, utils.py (EvaluatorFull)",
             "found = confidence (mean of the top 25% of the heat map) over the threshold and "
             "cIoU >= 0.5; AP and max-F1 over SLAVC's sampled thresholds", recognition="slavc"),
    Protocol("global", "cmcr (no public reference)",
             "score = cosine of the pair's global embeddings; AP, max-F1 over all thresholds, "
             "cross-fitted accuracy", recognition="global"),
)

PROTOCOLS: dict[str, tuple[Protocol, ...]] = {
    "ave": (
        Protocol("event", "YapengTian/AVE-ECCV18 Annotations.txt (StartTime&EndTime)",
                 "frames at the centre of each annotated event second (embeddings averaged) and "
                 "the event's audio"),
        Protocol("middle-frame", "cmcr (no public reference)",
                 "the frame at the middle of the clip and the whole audio track"),
    ),
    "flickr-soundnet": (
        Protocol("lvs", "hche11/Localizing-Visual-Sounds-the-Hard-Way metadata/flickr_test.csv, "
                 "stoneMo/EZ-VSL test.py", "the 249 LVS / EZ-VSL test images; EZ-VSL's cIoU"),
        Protocol("slavc", "stoneMo/SLAVC metadata/flickr_test.csv",
                 "SLAVC's 250 test images; EZ-VSL's cIoU"),
    ),
    "vggss": (Protocol("ezvsl", "stoneMo/EZ-VSL test.py, utils.py",
                       "all of vggss.json still on disk; cIoU with the map cut at its median"),),
    "music-solo": (
        Protocol("dsol", "DTaoo/Discriminative-Sounding-Objects-Localization music-exp/tools.py "
                 "cal_ciou", "cIoU with the map binarised at 0.1 x its maximum; frames without "
                 "a box skipped", localization="dsol"),
        Protocol("ezvsl", "stoneMo/EZ-VSL utils.py cal_CIOU",
                 "cIoU with the map cut at its median; frames without a box skipped"),
    ),
    "flickr-soundnet-extended": _EXTENDED,
    "vggss-extended": _EXTENDED,
    "esc50": (
        Protocol("laion-clap", "LAION-AI/CLAP experiment_scripts/esc50_api.py",
                 "fold 1's 400 clips, prompt 'This is a sound of ' + class", templates="esc50-laion"),
        Protocol("all-folds", "cmcr (no public reference)",
                 "all 2,000 clips, prompt 'this is a sound of {}.'", templates="esc50"),
    ),
    "modelnet40": (
        Protocol("ulip", "salesforce/ULIP main.py test_zeroshot_3d_core, data/templates.json",
                 "the 64-template prompt ensemble modelnet40_64", templates="modelnet40-ulip"),
        Protocol("single", "cmcr (no public reference)", "one prompt 'a point cloud model of {}.'",
                 templates="modelnet40"),
    ),
    "imagenet": (
        Protocol("clip-7", "openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb",
                 "CLIP's curated class names, its 7-template subset", templates="imagenet-7"),
        Protocol("clip-80", "openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb",
                 "CLIP's curated class names, all 80 templates", templates="imagenet-80"),
    ),
    "audiocaps": _standard("cdjkim/audiocaps dataset/test.csv"),
    "clotho": _standard("Clotho v2.1 clotho_captions_evaluation.csv"),
    "coco": _standard("Karpathy dataset_coco.json, split 'test'"),
}


def protocols_for(dataset: str) -> tuple[Protocol, ...]:
    """The protocols of ``dataset``, its default first."""
    if dataset not in PROTOCOLS:
        raise ConfigError(f"no protocols for dataset '{dataset}'; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[dataset]


def resolve_protocol(dataset: str, name: str | None = None) -> Protocol:
    """The protocol ``name`` of ``dataset`` (its default when None); an error lists the names."""
    known = protocols_for(dataset)
    if name is None:
        return known[0]
    for protocol in known:
        if protocol.name == name:
            return protocol
    raise ConfigError(f"dataset '{dataset}' has no protocol '{name}'; known: "
                      f"{', '.join(p.name for p in known)} (default {known[0].name})")
