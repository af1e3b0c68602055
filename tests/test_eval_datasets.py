"""Each evaluation reader on a tiny folder in its published format, and a broken one apiece."""

from __future__ import annotations

import json
from pathlib import Path

import eval_fixtures as fx
import pytest

from cmcr.errors import CmcrError, ConfigError, InputError
from cmcr.eval.datasets import DATASET_READERS, load_dataset
from cmcr.eval.media import AudioSegment, VideoFrame


# -- zero-shot sets ----------------------------------------------------------------------------------
def test_esc50_laion_clap_protocol_reads_fold_one_only(tmp_path):
    dataset = load_dataset("esc50", fx.make_esc50(tmp_path))
    assert dataset.protocol == "laion-clap"
    assert dataset.ids == ["1-100032-A-0", "1-110389-A-0", "1-26806-A-1", "1-27724-A-1"]
    assert dataset.labels == [0, 0, 1, 1] and dataset.class_names == ["dog", "rooster"]


def test_esc50_all_folds_protocol_reads_every_clip(tmp_path):
    dataset = load_dataset("esc50", fx.make_esc50(tmp_path), "all-folds")
    assert len(dataset) == 6 and dataset.ids[-1] == "2-65750-A-1"
    assert all(Path(p).is_file() for p in dataset.inputs["audio"])


def test_esc50_without_its_csv_names_the_missing_file(tmp_path):
    root = fx.make_esc50(tmp_path)
    (root / "meta" / "esc50.csv").unlink()
    with pytest.raises(InputError, match=r"meta/esc50\.csv: file not found; expected .*filename,fold,target,category"):
        load_dataset("esc50", root)


def test_imagenet_default_names_are_clips_curated_ones(tmp_path):
    dataset = load_dataset("imagenet", fx.make_imagenet(tmp_path))
    assert dataset.ids == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    assert dataset.labels == [2, 1]
    assert dataset.class_names == ["tench", "goldfish", "great white shark"]


def test_imagenet_synsets_that_share_a_first_synonym_get_distinct_names(tmp_path):
    """Defect 3: 'crane' and 'maillot' each name two synsets in LOC_synset_mapping.txt."""
    fx.write(tmp_path / "LOC_synset_mapping.txt", "n02012849 crane\nn03126707 crane\n"
             "n03710637 maillot\nn03710721 maillot, tank suit\n")
    fx.write_image(tmp_path / "val" / "n03126707" / "a.JPEG")
    dataset = load_dataset("imagenet", tmp_path)
    assert dataset.class_names == ["crane bird", "construction crane", "tights", "one-piece bathing suit"]
    assert dataset.labels == [1]


def test_imagenet_custom_names_that_collide_are_refused(tmp_path):
    fx.write(tmp_path / "LOC_synset_mapping.txt", fx.SYNSETS)
    fx.write(tmp_path / "classnames.txt", "tench\nGoldfish\ngoldfish \n")
    fx.write_image(tmp_path / "val" / "n01443537" / "a.JPEG")
    with pytest.raises(InputError, match=r"classnames\.txt: duplicate class names \(1 and 2 are both"):
        load_dataset("imagenet", tmp_path)


def test_imagenet_reads_class_folders_and_custom_names(tmp_path):
    fx.write(tmp_path / "LOC_synset_mapping.txt", fx.SYNSETS)
    fx.write(tmp_path / "classnames.txt", "tench fish\ngoldfish\nwhite shark\n")
    fx.write_image(tmp_path / "val" / "n01443537" / "a.JPEG")
    dataset = load_dataset("imagenet", tmp_path)
    assert dataset.labels == [1] and dataset.class_names[2] == "white shark"


def test_imagenet_without_the_synset_mapping_names_it(tmp_path):
    root = fx.make_imagenet(tmp_path)
    (root / "LOC_synset_mapping.txt").unlink()
    with pytest.raises(InputError, match=r"LOC_synset_mapping\.txt: file not found"):
        load_dataset("imagenet", root)


def test_modelnet40_labels_ids_by_their_class_prefix(tmp_path):
    dataset = load_dataset("modelnet40", fx.make_modelnet40(tmp_path))
    assert dataset.labels == [0, 2, 1] and dataset.protocol == "ulip"
    assert dataset.class_names == ["airplane", "bathtub", "flower pot"]
    assert dataset.inputs["point_cloud"] == ["airplane_0627", "flower_pot_0150", "bathtub_0107"]


# -- text retrieval sets -----------------------------------------------------------------------------
def test_clotho_gives_five_captions_per_clip_with_quoted_commas(tmp_path):
    dataset = load_dataset("clotho", fx.make_clotho(tmp_path))
    assert dataset.ids == ["clip 0", "clip 1", "clip 2"]
    assert [len(c) for c in dataset.captions] == [5, 5, 5]
    assert dataset.captions[1][4] == "sound 1, caption 5"


def test_audiocaps_finds_audio_named_the_audioset_way(tmp_path):
    """Defect 5: Y<youtube_id>_<start>.000_<end>.000.wav is how most downloaders name clips."""
    dataset = load_dataset("audiocaps", fx.make_audiocaps(tmp_path))
    assert dataset.ids == ["7fmOlUlwoNg_20", "6BJ455B1aAs_0"]
    assert Path(dataset.inputs["audio"][0]).name == "Y7fmOlUlwoNg_20.000_30.000.wav"
    assert Path(dataset.inputs["audio"][1]).name == "6BJ455B1aAs_0.wav"
    assert dataset.skipped == ["GOD8Bt5LfDE_100"]


def test_audiocaps_reads_crlf_rows_and_quoted_captions_by_clip(tmp_path):
    root = fx.make_audiocaps(tmp_path)
    fx.write_wav(root / "audio" / "test" / "YGOD8Bt5LfDE_100.000_110.000.flac", 2)
    dataset = load_dataset("audiocaps", root)
    assert dataset.captions[0] == ["Constant rattling noise and sharp vibrations",
                                   "Vibrations and rattling with people speaking in the distance"]
    assert dataset.captions[2][1] == "A train chugging, a child speaking, and then a female speaking and laughter"
    assert dataset.skipped == []


def test_audiocaps_with_a_wrong_header_names_the_missing_column(tmp_path):
    root = fx.make_audiocaps(tmp_path)
    fx.write(root / "test.csv", "id,youtube_id,start_time,caption\n1,a,0,x\n")
    with pytest.raises(InputError, match=r"test\.csv: missing column\(s\) \['audiocap_id'\]"):
        load_dataset("audiocaps", root)


def test_coco_keeps_the_karpathy_test_split(tmp_path):
    dataset = load_dataset("coco", fx.make_coco(tmp_path))
    assert dataset.ids == ["0", "1", "3"]
    assert dataset.captions[2] == ["image 3 caption 0", "image 3 caption 1"]


# -- audio-visual sets -------------------------------------------------------------------------------
def test_vggss_reads_corner_boxes_classes_and_counts_corrupt_boxes(tmp_path):
    dataset = load_dataset("vggss", fx.make_vggss(tmp_path))
    assert len(dataset) == 4 and dataset.box_consensus == 1
    assert dataset.boxes[0] == [(0.403125, 0.253125, 0.6, 0.75)]
    assert dataset.labels == [0, 1, 2, 2] and dataset.class_names[0] == "elk bugling"
    assert dataset.notes == ["1 box(es) cover no area (corrupt corners), as in EZ-VSL"]


def test_vggss_refuses_boxes_that_read_like_width_and_height(tmp_path):
    entries = [{"file": "zpWuikVorYg_000032", "class": "elk bugling", "bbox": [[0.4, 0.25, 0.2, 0.5]]}]
    with pytest.raises(InputError, match=r"entry 0 \(zpWuikVorYg_000032\): box .* reads like x, y, width, height"):
        load_dataset("vggss", fx.make_vggss(tmp_path, entries))


def test_vggss_without_its_json_names_the_path(tmp_path):
    root = fx.make_vggss(tmp_path)
    (root / "metadata" / "vggss.json").unlink()
    with pytest.raises(InputError, match=r"metadata/vggss\.json: file not found; expected a JSON list"):
        load_dataset("vggss", root)


def test_music_solo_reads_dsols_solotest_json(tmp_path):
    """Defect 1: the published file is keyed by frame path, with x, y, w, h boxes and empty frames."""
    dataset = load_dataset("music-solo", fx.make_music_solo(tmp_path))
    assert dataset.ids == list(fx.MUSIC_SOLO) and dataset.protocol == "dsol"
    assert dataset.boxes[0] == [] and dataset.boxes[2] == []
    x0, y0, x1, y1 = dataset.boxes[1][0]  # normbox [0.3515625, 0.2889, 0.346875, 0.6833] is x, y, w, h
    assert (x0, y0) == pytest.approx((0.3515625, 0.28888888888888886))
    assert (x1, y1) == pytest.approx((0.3515625 + 0.346875, 0.28888888888888886 + 0.6833333333333333))
    assert dataset.class_names == ["cello", "violin", "accordion"] and dataset.labels == [-1, 2, -1, 1, 0]
    assert dataset.inputs["audio"][3] == AudioSegment(tmp_path / "audio" / "9dOqmTMqp1k_0_1000.flac", 6.0, 7.0)
    assert dataset.notes == ["2 of 5 frames have no box: localisation skips them (DSOL cal_ciou)"]


def test_music_solo_refuses_corner_boxes_given_as_normbox(tmp_path):
    entries = {"QaOUijKCqZU_0_1000/frame_001/00051.jpg": {
        "bbox": [{"normbox": [0.3515625, 0.2889, 0.6984375, 0.9722], "category_id": 13}],
        "wdith": 640, "height": 360}}
    with pytest.raises(InputError, match=r"frame_001/00051\.jpg, box 0: box .* is not x, y, width, height"):
        load_dataset("music-solo", fx.make_music_solo(tmp_path, entries))


def test_music_solo_refuses_a_normbox_that_disagrees_with_the_pixel_box(tmp_path):
    entries = {"QaOUijKCqZU_0_1000/frame_001/00051.jpg": {
        "bbox": [{"box": [225, 104, 447, 350], "normbox": [0.3515625, 0.2889, 0.346875, 0.6833],
                  "category_id": 13}], "wdith": 640, "height": 360}}
    with pytest.raises(InputError, match=r"normbox .* is not box \[225, 104, 447, 350\] over the frame size 640 x 360"):
        load_dataset("music-solo", fx.make_music_solo(tmp_path, entries))


def test_music_solo_without_its_audio_names_the_folder(tmp_path):
    root = fx.make_music_solo(tmp_path)
    for path in (root / "audio").iterdir():
        path.unlink()
    (root / "audio").rmdir()
    with pytest.raises(InputError, match=r"audio: folder not found"):
        load_dataset("music-solo", root)


def test_flickr_reads_only_the_shipped_test_list(tmp_path):
    """Defect 4: the labelled download annotates 5,000 pairs; only the test images count."""
    dataset = load_dataset("flickr-soundnet", fx.make_flickr(tmp_path))
    assert dataset.ids == fx.FLICKR_TEST and dataset.protocol == "lvs"
    assert dataset.box_consensus == 2
    assert dataset.boxes[0] == [(0.125, 0.25, 0.5, 0.75), (0.0, 0.0, 1.0, 0.5)]
    assert len(dataset.skipped) == 249 - 4


@pytest.mark.parametrize("layout", ["sspl", "download"])
def test_flickr_reads_the_labelled_download_layouts(tmp_path, layout):
    dataset = load_dataset("flickr-soundnet", fx.make_flickr(tmp_path, layout))
    assert dataset.ids == fx.FLICKR_TEST
    assert all(Path(p).is_file() for m in ("image", "audio") for p in dataset.inputs[m])


def test_flickr_slavc_protocol_adds_its_250th_image(tmp_path):
    root = fx.make_flickr(tmp_path, ids=fx.FLICKR_TEST + ["3908875350"])
    assert load_dataset("flickr-soundnet", root, "slavc").ids[-1] == "3908875350"
    assert "3908875350" not in load_dataset("flickr-soundnet", root, "lvs").ids


def test_flickr_without_annotations_names_the_folder(tmp_path):
    root = tmp_path / "Flickr"
    fx.write_image(root / "frames" / "1.jpg")
    with pytest.raises(InputError, match=r"Annotations: folder not found; expected the test boxes"):
        load_dataset("flickr-soundnet", root)


def test_extended_flickr_reads_slavcs_csvs_and_boxes(tmp_path):
    dataset = load_dataset("flickr-soundnet-extended", fx.make_extended(tmp_path))
    assert dataset.matched == [True] * 4 + [False] * 3 and dataset.protocol == "slavc"
    assert dataset.ids[4] == "10000130166+10437048305"
    assert Path(dataset.inputs["audio"][4]).parent.name == "extend_audio"
    assert dataset.boxes[0] == [(0.125, 0.25, 0.5, 0.75), (0.0, 0.0, 1.0, 0.5)] and dataset.boxes[4] == []


def test_extended_vggss_pairs_a_test_image_with_another_clips_sound(tmp_path):
    dataset = load_dataset("vggss-extended", fx.make_extended(tmp_path, "vggss"))
    assert dataset.matched == [True] * 3 + [False] * 3 and dataset.notes == []
    assert dataset.ids[-1] == "gEvCUcZ6w88_000030+aW3_8p1ElDw_000030"
    assert Path(dataset.inputs["image"][-1]) == tmp_path / "frames" / "gEvCUcZ6w88_000030.jpg"
    assert Path(dataset.inputs["audio"][-1]) == tmp_path / "audio" / "aW3_8p1ElDw_000030.wav"
    assert Path(dataset.inputs["audio"][-2]).parent.name == "extend_audio"


def test_extended_vggss_says_when_a_non_sounding_pair_reads_sounding_files(tmp_path):
    root = fx.make_extended(tmp_path, "vggss")
    first = fx.VGGSS_ENTRIES[0]["file"]
    fx.write(root / "metadata" / "vggss_test_plus_silent.csv",
             f"video,audio,label\r\n{first},{first},non-sounding")
    dataset = load_dataset("vggss-extended", root)
    assert dataset.matched == [True, True, True, False]
    assert dataset.notes[0].startswith("1 non-sounding pair(s) read the same files as a sounding pair")


def test_extended_slavc_protocol_without_boxes_suggests_the_global_one(tmp_path):
    root = fx.make_extended(tmp_path, "vggss")
    (root / "metadata" / "vggss.json").unlink()
    with pytest.raises(InputError, match=r"vggss\.json: file not found.*--protocol global needs no boxes"):
        load_dataset("vggss-extended", root)
    assert load_dataset("vggss-extended", root, "global").boxes is None


def test_extended_vggss_without_the_plus_silent_csv_names_it(tmp_path):
    root = fx.make_extended(tmp_path, "vggss")
    (root / "metadata" / "vggss_test_plus_silent.csv").unlink()
    with pytest.raises(InputError, match=r"vggss_test_plus_silent\.csv: file not found; expected rows video"):
        load_dataset("vggss-extended", root)


def test_ave_event_protocol_reads_the_annotated_seconds(tmp_path):
    dataset = load_dataset("ave", fx.make_ave(tmp_path))
    assert dataset.ids == ["MH3m4AwEcRY", "3jS8tWfLJxI", "0giAfYq9oVM"]
    assert dataset.class_names == ["Bark", "Church bell", "Male speech, man speaking"]
    video = tmp_path / "AVE" / "MH3m4AwEcRY.mp4"
    assert dataset.inputs["image"][0] == (VideoFrame(video, 6.5), VideoFrame(video, 7.5))
    assert dataset.inputs["audio"][0] == AudioSegment(video, 6.0, 8.0)


def test_ave_middle_frame_protocol_counts_clips_whose_event_it_misses(tmp_path):
    dataset = load_dataset("ave", fx.make_ave(tmp_path), "middle-frame")
    assert dataset.inputs["image"] == dataset.inputs["audio"]
    assert dataset.notes == ["2 of 3 clips' annotated event does not cover the middle second (5 s): "
                             "their frame may not show the event"]


def test_ave_with_a_malformed_line_names_file_and_line(tmp_path):
    root = fx.make_ave(tmp_path)
    fx.write(root / "testSet.txt", "Dog&abc&good\n")
    with pytest.raises(InputError, match=r"testSet\.txt, line 1: expected Category&VideoID"):
        load_dataset("ave", root)


# -- every reader, protocols and subsets -------------------------------------------------------------
def test_every_registered_reader_fails_cleanly_on_an_empty_folder(tmp_path):
    for name in DATASET_READERS:
        with pytest.raises(CmcrError, match=str(tmp_path)):
            load_dataset(name, tmp_path)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="known: ave, flickr-soundnet"):
        load_dataset("nope", tmp_path)


def test_unknown_protocol_lists_the_datasets_protocols(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset 'esc50' has no protocol 'lvs'; known: laion-clap, all-folds"):
        load_dataset("esc50", tmp_path, "lvs")


def test_limit_on_a_counterfactual_set_keeps_both_classes(tmp_path):
    """Defect 2: the list holds every sounding pair before every silent one."""
    dataset = load_dataset("flickr-soundnet-extended", fx.make_extended(tmp_path))
    subset = dataset.subset(2)
    assert subset.matched == [True, False]
    assert subset.boxes[1] == [] and len(subset.inputs["image"]) == 2
    assert "stratified by matched/unmatched" in subset.notes[-1]


def test_limit_on_a_zero_shot_set_is_stratified_by_class(tmp_path):
    dataset = load_dataset("esc50", fx.make_esc50(tmp_path), "all-folds")
    assert dataset.subset(2).labels == [0, 1]
    assert sorted(dataset.subset(4).labels) == [0, 0, 1, 1]


def test_limit_without_labels_spreads_through_the_list(tmp_path):
    root = fx.make_flickr(tmp_path, ids=fx.FLICKR_TEST)
    subset = load_dataset("flickr-soundnet", root).subset(2)
    assert subset.ids == [fx.FLICKR_TEST[0], fx.FLICKR_TEST[2]]


def test_music_solo_fixture_copies_the_published_json_format(tmp_path):
    text = (fx.make_music_solo(tmp_path) / "solotest.json").read_text()
    assert text.startswith('{"5_NsbkyLO2Q_0_1000/frame_000/00014.jpg": {"bbox": [], "wdith": 640, "height": 360}, ')
    assert json.loads(text) == fx.MUSIC_SOLO
