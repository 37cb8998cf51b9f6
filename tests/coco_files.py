"""COCO instance files made from VOC annotations (BCCD), for the transfer tests."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

COCO_IDS = {"RBC": 3, "WBC": 7, "Platelets": 11}  # sparse, as COCO's are


def ellipse(box: list[float], n: int = 16) -> list[float]:
    """A polygon (flat x, y list) inscribed in the box: blood cells are round."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [
        v
        for k in range(n)
        for v in (cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n))
    ]


def voc_to_coco(root: Path, split: str, crowd: bool) -> dict:
    """The split's VOC annotations as a COCO instances dict: xywh boxes (VOC's 1-based corners
    minus one), ellipse polygons, the degenerate box kept as it is, optionally one crowd region."""
    images, annotations = [], []
    for n, image_id in enumerate((root / "ImageSets/Main" / f"{split}.txt").read_text().split()):
        tree = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
        w, h = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
        images.append({"id": 100 + n, "file_name": f"JPEGImages/{image_id}.jpg", "width": w, "height": h})
        for obj in tree.iter("object"):
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            box = [x0 - 1, y0 - 1, x1, y1]
            if x1 <= x0 or y1 <= y0:  # a box without area stays without area
                box = [x0, y0, x1, y1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + n,
                    "category_id": COCO_IDS[obj.findtext("name")],
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "iscrowd": 0,
                    "area": (box[2] - box[0]) * (box[3] - box[1]),
                    "segmentation": [ellipse(box)],
                }
            )
    if crowd:
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": 100,
                "category_id": COCO_IDS["RBC"],
                "iscrowd": 1,
                "bbox": [0.0, 0.0, 60.0, 40.0],
                "area": 2400.0,
                "segmentation": [[0, 0, 60, 0, 60, 40, 0, 40]],
            }
        )
    categories = [{"id": i, "name": name, "supercategory": "cell"} for name, i in COCO_IDS.items()]
    return {"images": images, "annotations": annotations, "categories": categories}
