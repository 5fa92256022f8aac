"""Reading Pascal VOC detection annotations: one XML file per image, image lists per split."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from autotimm._errors import closest
from autotimm.data.detection.records import (
    CocoRecord,
    DetectionSource,
    check_files,
    first,
    make_record,
    warn_degenerate,
)

__all__ = ["LAYOUT", "VocSource"]

LAYOUT = (
    "Expected the Pascal VOC layout: data_dir/Annotations/<id>.xml, data_dir/JPEGImages/<images> and "
    "data_dir/ImageSets/Main/train.txt (one image id a line), optionally val.txt and test.txt."
)

# One parsed XML file: the image's file name and its objects `(name, [xmin, ymin, xmax, ymax], difficult)`.
_Parsed = tuple[str, list[tuple[str, list[float], int]]]


def _parse_xml(path: Path) -> _Parsed:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"'{path}' is not valid XML: {e}.") from e
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if not name or box is None:
            raise ValueError(f"'{path}': object #{i} lacks `name` or `bndbox`.")
        try:
            coords = [float(box.findtext(key) or "") for key in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise ValueError(f"'{path}': object #{i} ({name.strip()}) needs numbers xmin, ymin, xmax, ymax.") from None
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false")
        objects.append((name.strip(), coords, int(difficult)))
    return (root.findtext("filename") or "").strip() or f"{path.stem}.jpg", objects


class VocSource(DetectionSource):
    """The Pascal VOC layout. `difficult` objects are flagged like COCO's `iscrowd`: left out of training, ignored
    by evaluation. VOC's 1-based inclusive pixel boxes become `[xmin - 1, ymin - 1, xmax, ymax]`.

    Class names are `class_names` when given (a file with another class is an error), else the
    names found in every split's files, sorted.

    Raises:
        FileNotFoundError: If a folder, an id list, an XML file or an image is missing (the first few named).
        ValueError: If an XML file is malformed or names a class not in `class_names`.

    Examples:
        >>> VocSource(Path("data/VOC2007")).class_names[:2]  # doctest: +SKIP
        ['aeroplane', 'bicycle']
    """

    format = "voc"
    layout = LAYOUT

    def __init__(self, root: Path, class_names: Sequence[str] | None = None) -> None:
        self.root = root
        for path in (root / "Annotations", root / "JPEGImages", self._list("train")):
            if not path.exists():
                raise FileNotFoundError(f"'{path}' does not exist. {LAYOUT}")
        self._parsed = {split: self._parse_split(split) for split in ("train", "val", "test") if self.has_split(split)}
        if class_names is None:
            found = {
                name for parsed in self._parsed.values() for _, objects in parsed.values() for name, _, _ in objects
            }
            class_names = sorted(found)
        self.class_names = list(class_names)
        self.category_ids = list(range(len(self.class_names)))

    def _list(self, split: str) -> Path:
        return self.root / "ImageSets" / "Main" / f"{split}.txt"

    def has_split(self, split: str) -> bool:
        return self._list(split).is_file()

    def where(self, split: str) -> str:
        return f"'{self._list(split)}'"

    def _parse_split(self, split: str) -> dict[str, _Parsed]:
        ids = [line.split()[0] for line in self._list(split).read_text(encoding="utf-8").splitlines() if line.strip()]
        xmls = [self.root / "Annotations" / f"{i}.xml" for i in ids]
        missing = [p.name for p in xmls if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} annotation file(s) listed in '{self._list(split)}' do not exist in "
                f"'{self.root / 'Annotations'}': {first(missing)}."
            )
        return {i: _parse_xml(p) for i, p in zip(ids, xmls, strict=True)}

    def read(self, split: str) -> list[CocoRecord]:
        label_of = {name: k for k, name in enumerate(self.class_names)}
        records, degenerate = [], []
        for image_id, (key, (file_name, objects)) in enumerate(self._parsed[split].items(), start=1):
            boxes, labels, difficult = [], [], []
            for i, (name, (x0, y0, x1, y1), hard) in enumerate(objects):
                if name not in label_of:
                    near = closest(name, self.class_names)
                    raise ValueError(
                        f"'{self.root / 'Annotations' / key}.xml': object #{i} has class {name!r}, which is not in "
                        f"`class_names` {self.class_names}." + (f" Did you mean {near[0]!r}?" if near else "")
                    )
                if not (x1 > x0 - 1 and y1 > y0 - 1):
                    degenerate.append(f"{key}.xml#{i}")
                    continue
                boxes.append([x0 - 1, y0 - 1, x1, y1])
                labels.append(label_of[name])
                difficult.append(hard)
            records.append(make_record(self.root / "JPEGImages" / file_name, image_id, boxes, labels, difficult))
        warn_degenerate(self._list(split), degenerate, what="objects")
        check_files([r.path for r in records], self._list(split), self.root / "JPEGImages")
        return records
