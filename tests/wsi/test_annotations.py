"""Annotation regions outside their slide are reported, not silently ignored."""
from __future__ import annotations

import json

import numpy as np

from fastmed.wsi.annotations import Region, outside_slide_warning, read_annotations


def _square(x, y, side=10.0):
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def test_geojson_region_outside_the_slide_is_named_in_one_line(tmp_path):
    path = tmp_path / "s.geojson"
    feats = [{"type": "Feature", "properties": {"classification": {"name": name}},
              "geometry": {"type": "Polygon", "coordinates": [_square(x, y)]}}
             for name, x, y in [("Tumor", 20, 20), ("Tumor", 5000, 20), ("Other", -50, -50), ("Tumor", 95, 95)]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    msg = outside_slide_warning(path, read_annotations(path), width=100, height=100)
    assert msg is not None and len(msg.splitlines()) == 1 and str(path) in msg
    assert "2 of 4 region(s)" in msg and "100x100 px" in msg
    assert "region 2 (Tumor, x 5000..5010, y 20..30)" in msg and "region 3 (Other, x -50..-40" in msg
    assert "region 1 " not in msg and "region 4 " not in msg  # inside, and crossing the border (it labels edge patches)


def test_asap_xml_region_outside_the_slide_is_reported(tmp_path):
    path = tmp_path / "s.xml"
    coords = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate([(900, 0), (990, 0), (990, 50)]))
    path.write_text(f'<ASAP_Annotations><Annotations><Annotation Name="A" PartOfGroup="Tumor" Type="Polygon">'
                    f'<Coordinates>{coords}</Coordinates></Annotation></Annotations></ASAP_Annotations>')
    assert "1 of 1 region(s)" in outside_slide_warning(path, read_annotations(path), width=800, height=600)
    assert outside_slide_warning(path, read_annotations(path), width=1000, height=600) is None


def test_long_lists_are_shortened():
    regions = [Region(np.array(_square(1000 + i, 0)), [], "t") for i in range(5)]
    msg = outside_slide_warning("a.geojson", regions, 10, 10)
    assert msg.count("region ") == 3 and msg.endswith("and 2 more")  # three listed, the rest counted
