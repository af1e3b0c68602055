"""Each evaluation reader on a tiny folder in its published layout, and a broken one apiece."""

from __future__ import annotations

from pathlib import Path

import pytest

import eval_fixtures as fx
from cmcr.errors import CmcrError, ConfigError, InputError
from cmcr.eval.datasets import DATASET_READERS, load_dataset


def test_esc50_reads_clips_labels_and_readable_class_names(tmp_path):
    dataset = load_dataset("esc50", fx.make_esc50(tmp_path))
    assert dataset.ids == ["1-100032-A-0", "1-100038-A-14", "2-100648-A-0"]
    assert dataset.labels == [0, 1, 0]
    assert dataset.class_names == ["dog", "chirping birds"]
    assert all(Path(p).is_file() for p in dataset.inputs["audio"])


def test_esc50_without_its_csv_names_the_missing_file(tmp_path):
    root = fx.make_esc50(tmp_path)
    (root / "meta" / "esc50.csv").unlink()
    with pytest.raises(InputError, match=r"meta/esc50\.csv: file not found; expected .*filename,fold,target,category"):
        load_dataset("esc50", root)


def test_clotho_gives_five_captions_per_clip(tmp_path):
    dataset = load_dataset("clotho", fx.make_clotho(tmp_path))
    assert dataset.ids == ["clip 0", "clip 1", "clip 2"]
    assert [len(c) for c in dataset.captions] == [5, 5, 5]
    assert dataset.captions[1][4] == "sound 1 caption 5"


def test_clotho_with_a_missing_clip_names_it(tmp_path):
    root = fx.make_clotho(tmp_path)
    (root / "evaluation" / "clip 1.wav").unlink()
    with pytest.raises(InputError, match=r"evaluation/clip 1\.wav: file not found"):
        load_dataset("clotho", root)


def test_audiocaps_groups_captions_by_clip_and_skips_absent_audio(tmp_path):
    dataset = load_dataset("audiocaps", fx.make_audiocaps(tmp_path))
    assert dataset.ids == ["abcdefghijk_0", "lmnopqrstuv_30"]
    assert dataset.captions == [["clip 0 caption 0", "clip 0 caption 1"],
                                ["clip 1 caption 0", "clip 1 caption 1"]]
    assert Path(dataset.inputs["audio"][1]).name == "Ylmnopqrstuv.wav"
    assert dataset.skipped == ["wxyz0123456_60"]


def test_audiocaps_with_a_wrong_header_names_the_missing_column(tmp_path):
    root = fx.make_audiocaps(tmp_path)
    fx.write(root / "test.csv", "id,youtube_id,start_time,caption\n1,a,0,x\n")
    with pytest.raises(InputError, match=r"test\.csv: missing column\(s\) \['audiocap_id'\]"):
        load_dataset("audiocaps", root)


def test_vggss_reads_boxes_as_fractions(tmp_path):
    dataset = load_dataset("vggss", fx.make_vggss(tmp_path))
    assert len(dataset) == 4 and dataset.box_consensus == 1
    assert dataset.boxes[0] == [(0.1, 0.2, 0.6, 0.9)]
    assert set(dataset.tasks) == {"retrieval", "localization"}


def test_vggss_without_its_json_names_the_path(tmp_path):
    root = fx.make_vggss(tmp_path)
    (root / "metadata" / "vggss.json").unlink()
    with pytest.raises(InputError, match=r"metadata/vggss\.json: file not found; expected a JSON list"):
        load_dataset("vggss", root)


def test_music_solo_reads_the_vggss_style_box_file(tmp_path):
    dataset = load_dataset("music-solo", fx.make_music_solo(tmp_path))
    assert dataset.ids == ["accordion_0001", "violin_0002"]


def test_music_solo_without_frames_names_the_folder(tmp_path):
    root = fx.make_music_solo(tmp_path)
    for path in (root / "frames").iterdir():
        path.unlink()
    (root / "frames").rmdir()
    with pytest.raises(InputError, match=r"frames: folder not found"):
        load_dataset("music-solo", root)


def test_flickr_reads_every_annotators_box_on_the_256_grid(tmp_path):
    dataset = load_dataset("flickr-soundnet", fx.make_flickr(tmp_path))
    assert dataset.ids == ["1000", "1001", "1002", "1003"]
    assert dataset.box_consensus == 2
    assert dataset.boxes[0] == [(0.125, 0.25, 0.5, 0.75), (0.0, 0.0, 1.0, 0.5)]


def test_flickr_without_a_test_list_uses_every_annotation(tmp_path):
    dataset = load_dataset("flickr-soundnet", fx.make_flickr(tmp_path, listed=False))
    assert len(dataset) == 4


def test_flickr_without_annotations_names_the_folder(tmp_path):
    root = tmp_path / "Flickr"
    fx.write_image(root / "frames" / "1.jpg")
    with pytest.raises(InputError, match=r"Annotations: folder not found; expected the test boxes"):
        load_dataset("flickr-soundnet", root)


def test_extended_flickr_marks_sounding_and_non_sounding_pairs(tmp_path):
    dataset = load_dataset("flickr-soundnet-extended", fx.make_extended(tmp_path))
    assert dataset.matched == [True, True, True, True, False, False]
    assert Path(dataset.inputs["audio"][5]).parent.name == "extend_audio"
    assert dataset.ids[4] == "1000+1002"


def test_extended_vggss_without_the_plus_silent_csv_names_it(tmp_path):
    root = fx.make_extended(tmp_path, "vggss")
    (root / "metadata" / "vggss_test_plus_silent.csv").unlink()
    with pytest.raises(InputError, match=r"vggss_test_plus_silent\.csv: file not found; expected rows image_id"):
        load_dataset("vggss-extended", root)


def test_ave_reads_the_test_split_with_categories(tmp_path):
    dataset = load_dataset("ave", fx.make_ave(tmp_path))
    assert dataset.ids == ["abcdefghijk", "lmnopqrstuv"]
    assert dataset.class_names == ["Church bell", "Dog"] and dataset.labels == [1, 1]
    assert dataset.inputs["image"] == dataset.inputs["audio"]


def test_ave_with_a_malformed_line_names_file_and_line(tmp_path):
    root = fx.make_ave(tmp_path)
    fx.write(root / "testSet.txt", "Dog&abc&good\n")
    with pytest.raises(InputError, match=r"testSet\.txt, line 1: expected Category&VideoID"):
        load_dataset("ave", root)


def test_coco_keeps_the_karpathy_test_split(tmp_path):
    dataset = load_dataset("coco", fx.make_coco(tmp_path))
    assert dataset.ids == ["0", "1", "3"]
    assert dataset.captions[2] == ["image 3 caption 0", "image 3 caption 1"]


def test_coco_with_a_missing_image_names_it(tmp_path):
    root = fx.make_coco(tmp_path)
    (root / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    with pytest.raises(InputError, match=r"val2014/COCO_val2014_000000000003\.jpg: file not found"):
        load_dataset("coco", root)


def test_imagenet_reads_the_kaggle_solution_in_synset_order(tmp_path):
    dataset = load_dataset("imagenet", fx.make_imagenet(tmp_path))
    assert dataset.ids == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    assert dataset.labels == [2, 1]
    assert dataset.class_names == ["tench", "goldfish", "great white shark"]


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
    assert dataset.labels == [0, 2, 1]
    assert dataset.class_names == ["airplane", "bathtub", "flower pot"]
    assert dataset.inputs["point_cloud"] == ["airplane_0627", "flower_pot_0150", "bathtub_0107"]


def test_modelnet40_without_the_test_list_names_it(tmp_path):
    root = fx.make_modelnet40(tmp_path)
    (root / "modelnet40_test.txt").unlink()
    with pytest.raises(InputError, match=r"modelnet40_test\.txt: file not found"):
        load_dataset("modelnet40", root)


def test_every_registered_reader_fails_cleanly_on_an_empty_folder(tmp_path):
    for name in DATASET_READERS:
        with pytest.raises(CmcrError, match=str(tmp_path)):
            load_dataset(name, tmp_path)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="known: ave, flickr-soundnet"):
        load_dataset("nope", tmp_path)
