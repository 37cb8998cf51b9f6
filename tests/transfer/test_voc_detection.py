"""VOC detection annotations: boxes, classes, difficult flags; degenerate boxes skipped with a warning."""

import numpy as np
import pytest

from transfer.voc_detection import load_voc_detection

BOX_XML = """<annotation><size><width>100</width><height>80</height></size>
<object><name>cat</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>
<object><name>cow</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
<object><name>cat</name><difficult>0</difficult><bndbox><xmin>50</xmin><ymin>5</ymin><xmax>50</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""


def voc_tree(tmp_path, xml: str):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "Annotations/a.xml").write_text(xml)
    (tmp_path / "JPEGImages/a.jpg").write_bytes(b"")
    (tmp_path / "ImageSets/Main/test.txt").write_text("a\n")
    return tmp_path


def test_boxes_classes_difficult_and_degenerate(tmp_path):
    root = voc_tree(tmp_path, BOX_XML)
    with pytest.warns(UserWarning, match=r"skipped 1 degenerate box.*a\.xml object 3 \(cat\)"):
        data = load_voc_detection([root], "test", ["cat", "dog"])
    im = data.images[0]
    assert (im.width, im.height) == (100, 80)
    np.testing.assert_array_equal(im.boxes, [[10, 20, 30, 40], [1, 1, 100, 80]])  # cow: not a listed class
    np.testing.assert_array_equal(im.labels, [0, 1])
    np.testing.assert_array_equal(im.difficult, [False, True])
    np.testing.assert_array_equal(im.boxes_0based(), [[9, 19, 30, 40], [0, 0, 100, 80]])
    assert len(data.skipped) == 1


def test_bad_annotations_name_the_file(tmp_path):
    root = voc_tree(tmp_path, "<annotation><size><width>1</width></size>")
    with pytest.raises(ValueError, match=r"a\.xml is not valid XML"):
        load_voc_detection([root], "test", ["cat"])
    (root / "Annotations/a.xml").write_text("<annotation><size><width>1</width></size></annotation>")
    with pytest.raises(ValueError, match=r"a\.xml is not a valid VOC annotation"):
        load_voc_detection([root], "test", ["cat"])
    with pytest.raises(FileNotFoundError, match=r"train\.txt is missing"):
        load_voc_detection([root], "train", ["cat"])
    bad_box = BOX_XML.replace("<xmax>30</xmax>", "<xmax>thirty</xmax>")
    (root / "Annotations/a.xml").write_text(bad_box)
    with pytest.raises(ValueError, match=r"a\.xml: object 0 \(cat\) has a missing or non-numeric bndbox"):
        load_voc_detection([root], "test", ["cat"])


def test_real_bccd_degenerate_box_is_skipped(bccd_mini):
    with pytest.warns(UserWarning, match="BloodImage_00343"):
        data = load_voc_detection([bccd_mini], "train", ["RBC", "WBC", "Platelets"])
    assert len(data.skipped) == 1 and len(data.images) == 6
    for im in data.images:
        assert (im.boxes[:, 2] > im.boxes[:, 0]).all() and (im.boxes[:, 3] > im.boxes[:, 1]).all()
