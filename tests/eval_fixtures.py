"""Tiny benchmark folders in each dataset's published format, written by the tests themselves.

Each annotation file copies the real one's header, delimiters, quoting, line endings and key
layout, and (where it helps) real rows of it, cut to a few; the source is named in each function.
Media are small random images and sounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_wav(path: Path, seed: int = 0, seconds: float = 0.5, rate: int = 16000) -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * rate)).astype(np.float32)
    soundfile.write(str(path), samples, rate)
    return path


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 32)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write(path: Path, text: str) -> Path:
    """``text`` byte for byte (CRLF line ends stay CRLF)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def write_video(path: Path, seconds: int = 10, rate: int = 2, audio_rate: int = 16000,
                channels: int = 1) -> Path:
    """A tiny mp4 whose frame brightness rises with time, with a tone as its audio track."""
    import av

    layout = {1: "mono", 2: "stereo"}[channels]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=rate)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = layout
        for index in range(seconds * rate):
            shade = int(255 * index / (seconds * rate - 1))
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), shade, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        tone = (0.3 * np.sin(np.arange(seconds * audio_rate) / 10)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = np.stack([tone[start:start + 1024]] * channels)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = audio_rate
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


# -- zero-shot ------------------------------------------------------------------------------------
def make_esc50(root: Path) -> Path:
    """karolpiczak/ESC-50 meta/esc50.csv: header, LF, unquoted; fold 1 and fold 2 clips."""
    header = "filename,fold,target,category,esc10,src_file,take\n"
    rows = ["1-100032-A-0.wav,1,0,dog,True,100032,A", "1-110389-A-0.wav,1,0,dog,True,110389,A",
            "1-26806-A-1.wav,1,1,rooster,True,26806,A", "1-27724-A-1.wav,1,1,rooster,True,27724,A",
            "2-100648-A-0.wav,2,0,dog,True,100648,A", "2-65750-A-1.wav,2,1,rooster,True,65750,A"]
    write(root / "meta" / "esc50.csv", header + "\n".join(rows) + "\n")
    for seed, row in enumerate(rows):
        write_wav(root / "audio" / row.split(",")[0], seed)
    return root


SYNSETS = ("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
           "n01484850 great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias\n")


def make_imagenet(root: Path, mapping: str = SYNSETS) -> Path:
    """Kaggle ILSVRC: LOC_synset_mapping.txt ("<wnid> <synonyms>"), LOC_val_solution.csv."""
    write(root / "LOC_synset_mapping.txt", mapping)
    rows = ["ImageId,PredictionString", "ILSVRC2012_val_00000002,n01443537 1 2 30 40 n01443537 3 4 20 20 ",
            "ILSVRC2012_val_00000001,n01484850 5 5 10 10 "]
    write(root / "LOC_val_solution.csv", "\n".join(rows) + "\n")
    for k in (1, 2):
        write_image(root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    return root


def make_modelnet40(root: Path) -> Path:
    """ULIP modelnet40_normal_resampled: modelnet40_shape_names.txt, modelnet40_test.txt."""
    write(root / "modelnet40_shape_names.txt", "airplane\nbathtub\nflower_pot\n")
    write(root / "modelnet40_test.txt", "airplane_0627\nflower_pot_0150\nbathtub_0107\n")
    return root


# -- text retrieval --------------------------------------------------------------------------------
def make_clotho(root: Path) -> Path:
    """Clotho v2 clotho_captions_evaluation.csv: header, captions quoted when they hold a comma."""
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    rows = [f"clip {k}.wav," + ",".join(f"sound {k} caption {c}" for c in range(1, 5))
            + f',"sound {k}, caption 5"' for k in range(3)]
    write(root / "clotho_captions_evaluation.csv", header + "\n".join(rows) + "\n")
    for k in range(3):
        write_wav(root / "evaluation" / f"clip {k}.wav", k)
    return root


AUDIOCAPS_ROWS = [  # cdjkim/audiocaps dataset/test.csv, real rows of three clips
    "103549,7fmOlUlwoNg,20,Constant rattling noise and sharp vibrations",
    "103548,6BJ455B1aAs,0,A rocket flies by followed by a loud explosion and fire crackling as a truck engine runs idle",
    "103541,GOD8Bt5LfDE,100,Humming and vibrating with a man and children speaking and laughing",
    "107201,7fmOlUlwoNg,20,Vibrations and rattling with people speaking in the distance",
    "103117,6BJ455B1aAs,0,A whooshing noise followed by an explosion",
    '105942,GOD8Bt5LfDE,100,"A train chugging, a child speaking, and then a female speaking and laughter"',
]


def make_audiocaps(root: Path) -> Path:
    """AudioCaps test.csv (header, CRLF, a quoted caption); the first clip's audio named the
    AudioSet way (Y<id>_<start>.000_<end>.000.wav), the second <id>_<start>.wav, the third absent."""
    write(root / "test.csv", "\r\n".join(["audiocap_id,youtube_id,start_time,caption", *AUDIOCAPS_ROWS]) + "\r\n")
    write_wav(root / "audio" / "test" / "Y7fmOlUlwoNg_20.000_30.000.wav", 0)
    write_wav(root / "audio" / "test" / "6BJ455B1aAs_0.wav", 1)
    return root


# -- audio-visual ----------------------------------------------------------------------------------
VGGSS_ENTRIES = [  # LVS metadata/vggss.json, real entries (the last holds a corrupt corner)
    {"file": "zpWuikVorYg_000032", "class": "elk bugling", "bbox": [[0.403125, 0.253125, 0.6, 0.75]]},
    {"file": "gEvCUcZ6w88_000030", "class": "female speech, woman speaking",
     "bbox": [[0.45, 0.190625, 0.584375, 0.47812499999999997]]},
    {"file": "JIemsK_0lXc_000364", "class": "playing bass drum", "bbox": [[0.03125, 0.3625, 0.36875, 0.9875]]},
    {"file": "Db6Hjt0x28k_000056", "class": "playing bass drum",
     "bbox": [[0.384375, 0.859375, 0.696875, -2.8823037615171176e+16]]},
]


def make_vggss(root: Path, entries: list | None = None) -> Path:
    """LVS / EZ-VSL layout: frames/<file>.jpg, audio/<file>.wav, metadata/vggss.json (a JSON list
    as json.dumps writes it, like the published file)."""
    entries = VGGSS_ENTRIES if entries is None else entries
    for seed, entry in enumerate(entries):
        write_image(root / "frames" / f"{entry['file']}.jpg", seed)
        write_wav(root / "audio" / f"{entry['file']}.wav", seed)
    write(root / "metadata" / "vggss.json", json.dumps(entries))
    return root


MUSIC_SOLO = {  # DSOL music-exp/solotest.json, real entries (two without a box)
    "5_NsbkyLO2Q_0_1000/frame_000/00014.jpg": {"bbox": [], "wdith": 640, "height": 360},
    "QaOUijKCqZU_0_1000/frame_001/00051.jpg": {"bbox": [{
        "box": [225, 104, 222, 246], "normbox": [0.3515625, 0.28888888888888886, 0.346875, 0.6833333333333333],
        "category_id": 13}], "wdith": 640, "height": 360},
    "TSEWnnKagqQ_0_1000/frame_001/00030.jpg": {"bbox": [], "wdith": 270, "height": 360},
    "9dOqmTMqp1k_0_1000/frame_006/00201.jpg": {"bbox": [{
        "box": [43, 174, 224, 178],
        "normbox": [0.15925925925925927, 0.48333333333333334, 0.8296296296296296, 0.49444444444444446],
        "category_id": 11}], "wdith": 270, "height": 360},
    "-_-TDDxoaAc_0_1000/frame_010/00300.jpg": {"bbox": [{
        "box": [213, 91, 153, 253], "normbox": [0.3328125, 0.25277777777777777, 0.2390625, 0.7027777777777777],
        "category_id": 1}], "wdith": 640, "height": 360},
}


def make_music_solo(root: Path, entries: dict | None = None) -> Path:
    """DSOL's solotest.json as published, frames at video_frames/<key>, each clip's audio as
    audio/<video>_0_1000.flac long enough for its frames' seconds."""
    entries = MUSIC_SOLO if entries is None else entries
    seconds: dict[str, int] = {}
    for seed, key in enumerate(entries):
        write_image(root / "video_frames" / key, seed, size=(64, 36))
        video, second = key.split("/")[0], int(key.split("/")[1][len("frame_"):])
        seconds[video] = max(seconds.get(video, 0), second + 1)
    for seed, (video, length) in enumerate(seconds.items()):
        write_wav(root / "audio" / f"{video}.flac", seed, seconds=length, rate=8000)
    write(root / "solotest.json", json.dumps(entries))
    return root


FLICKR_XML = """<?xml version="1.0"?>
<annotation>
  <file>{id}.jpg</file>
  <size><width>256</width><height>256</height></size>
  <object><bbox><annotator>1</annotator><xmin>32</xmin><ymin>64</ymin><xmax>128</xmax><ymax>192</ymax></bbox></object>
  <object><bbox><annotator>2</annotator><xmin>0</xmin><ymin>0</ymin><xmax>256</xmax><ymax>128</ymax></bbox></object>
</annotation>
"""  # the tag names are not published (EZ-VSL reads the fields by position): these are made up
FLICKR_TEST = ["10000130166", "10007936344", "10008553263", "10009662863"]  # the first LVS test ids
FLICKR_OTHERS = ["9992787425", "9992947874"]  # annotated in the 5k download, not test images


def make_flickr(root: Path, layout: str = "flat", ids: list[str] | None = None) -> Path:
    """Flickr-SoundNet: Annotations/<id>.xml plus the images and sounds in one of the layouts the
    reader takes: "flat" (frames/, audio/), "sspl" (5k_labeled/Data/frames, Data/audio), or
    "download" (Data/<k>/<id>.jpg and .wav, as the labelled download is distributed)."""
    ids = FLICKR_TEST + FLICKR_OTHERS if ids is None else ids
    base = root / "5k_labeled" if layout == "sspl" else root
    for seed, item in enumerate(ids):
        if layout == "flat":
            image, sound = base / "frames" / f"{item}.jpg", base / "audio" / f"{item}.wav"
        elif layout == "sspl":
            image, sound = base / "Data" / "frames" / f"{item}.jpg", base / "Data" / "audio" / f"{item}.wav"
        else:
            image = base / "Data" / str(seed % 10) / f"{item}.jpg"
            sound = image.with_suffix(".wav")
        write_image(image, seed)
        write_wav(sound, seed)
        write(base / "Annotations" / f"{item}.xml", FLICKR_XML.format(id=item))
    return root


def make_extended(root: Path, prefix: str = "flickr") -> Path:
    """SLAVC's extended set: metadata/<set>_test.csv (CRLF, no header; flickr rows "id,N", the last
    without a line end), <set>_test_plus_silent.csv (header video,audio,label, CRLF), the added
    files in extend_frames/ and extend_audio/, and the boxes (Annotations/ or vggss.json)."""
    if prefix == "flickr":
        sounding = FLICKR_TEST
        write(root / "metadata" / "flickr_test.csv", "10000130166,202\r\n10007936344,0\r\n"
              "10008553263,309\r\n10009662863,0")
        extra = [("10000130166", "10437048305"), ("10007936344", "10079676496"),
                 ("10008553263", "10163352444")]
        for item in sounding:
            write(root / "Annotations" / f"{item}.xml", FLICKR_XML.format(id=item))
    else:
        sounding = [entry["file"] for entry in VGGSS_ENTRIES[:3]]
        write(root / "metadata" / "vggss_test.csv", "\r\n".join(sounding) + "\r\n")
        extra = [("9PmzQI8ZYpg_000147", "9PmzQI8ZYpg_000147"), ("dYQ-nXyfhho_000007", "dYQ-nXyfhho_000007")]
        write(root / "metadata" / "vggss.json", json.dumps(VGGSS_ENTRIES[:3]))
        write_wav(root / "audio" / "aW3_8p1ElDw_000030.wav", 20)  # a test image with another clip's sound
        extra.append(("gEvCUcZ6w88_000030", "aW3_8p1ElDw_000030"))
    for seed, item in enumerate(sounding):
        write_image(root / "frames" / f"{item}.jpg", seed)
        write_wav(root / "audio" / f"{item}.wav", seed)
    for seed, (image, sound) in enumerate(extra, 10):
        if image not in sounding:
            write_image(root / "extend_frames" / f"{image}.jpg", seed)
        if sound not in sounding and not (root / "audio" / f"{sound}.wav").is_file():
            write_wav(root / "extend_audio" / f"{sound}.wav", seed)
    rows = ["video,audio,label", *(f"{image},{sound},non-sounding" for image, sound in extra)]
    write(root / "metadata" / f"{prefix}_test_plus_silent.csv", "\r\n".join(rows))
    return root


AVE_LINES = ["Church bell&RUhOCu3LNXM&good&0&10", "Church bell&MH3m4AwEcRY&good&6&8",
             "Bark&3jS8tWfLJxI&good&7&9", "Male speech, man speaking&0giAfYq9oVM&good&3&9"]  # real rows


def make_ave(root: Path, videos: bool = False) -> Path:
    """AVE_Dataset.zip: Annotations.txt and testSet.txt ('&'-separated, a header line), AVE/*.mp4
    (tiny real videos when ``videos``, else placeholders the reader never decodes)."""
    header = "Category&VideoID&Quality&StartTime&EndTime\n"
    write(root / "Annotations.txt", header + "\n".join(AVE_LINES) + "\n")
    write(root / "testSet.txt", header + "\n".join(AVE_LINES[1:]) + "\n")
    for line in AVE_LINES:
        path = root / "AVE" / f"{line.split('&')[1]}.mp4"
        if videos:
            write_video(path)
        else:
            write(path, "not decoded by the reader")
    return root


def make_coco(root: Path) -> Path:
    """Karpathy's dataset_coco.json ({"images": [...], "dataset": "coco"}) and val2014/."""
    images = []
    for k, split in enumerate(["test", "test", "train", "test"]):
        name = f"COCO_val2014_{k:012d}.jpg"
        write_image(root / "val2014" / name, k)
        images.append({"filepath": "val2014", "filename": name, "split": split, "cocoid": k,
                       "sentences": [{"raw": f"image {k} caption {c}", "tokens": []} for c in range(2)]})
    write(root / "dataset_coco.json", json.dumps({"images": images, "dataset": "coco"}))
    return root
