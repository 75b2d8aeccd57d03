"""Streaming: a real video through the bounded-queue pipeline, an image sequence with a bad frame."""
import shutil

import numpy as np
import pytest

from fastmed.export import Predictor
from fastmed.data.images import list_images
from fastmed.export.preprocess import read_images
from fastmed.export.stream import percentiles_ms, stream_predict


@pytest.fixture(scope="module")
def predictor(mobilenet_onnx):
    return Predictor(mobilenet_onnx)


def test_video_stream_with_annotated_output(predictor, polyp_dir, tmp_path):
    av = pytest.importorskip("av")
    from fastmed.export.video import VideoWriter

    images, _ = read_images(list_images(polyp_dir / "val")[:5])
    writer = VideoWriter(tmp_path / "clip.mp4", fps=10)
    for i in range(20):
        writer.write(images[i % 5])
    writer.close()
    rep = stream_predict(predictor, tmp_path / "clip.mp4", queue_size=2, annotate_to=tmp_path / "out.mp4")
    assert rep.frames == 20 and rep.bad_frames == 0 and len(rep.predictions) == 20
    assert set(rep.compute_ms) == {"p50", "p95", "p99", "p99.9"}
    assert rep.compute_ms["p50"] <= rep.end_to_end_ms["p50"] <= rep.latency_ms["p99"] + 1e-9
    assert rep.fps > 0 and rep.compute_fps >= rep.fps * 0.5
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 20
    rep5 = stream_predict(predictor, tmp_path / "clip.mp4", max_frames=5, warmup=0)
    assert rep5.frames == 5


def test_image_sequence_counts_and_skips_a_bad_frame(predictor, polyp_dir, tmp_path):
    seq = tmp_path / "seq"
    seq.mkdir()
    for i, f in enumerate(list_images(polyp_dir / "val")[:6]):
        shutil.copy(f, seq / f"frame_{i:03d}.png")
    (seq / "frame_003.png").write_bytes(b"not a png")
    rep = stream_predict(predictor, seq, queue_size=1)
    assert rep.frames == 5 and rep.bad_frames == 1 and rep.bad[0]["frame"] == 3
    assert [p["frame"] for p in rep.predictions] == [0, 1, 2, 4, 5]
    ref = predictor.predict(sorted(p for p in seq.iterdir() if p.name != "frame_003.png"))
    assert [p["class"] for p in rep.predictions] == [predictor.class_names[k] for k in ref.argmax(1)]


def test_percentiles_and_errors(predictor, tmp_path):
    p = percentiles_ms([0.001] * 99 + [0.1])
    assert p["p50"] == pytest.approx(1.0) and p["p99.9"] > 50
    with pytest.raises(ValueError, match="queue_size"):
        stream_predict(predictor, tmp_path, queue_size=0)
    from fastmed.errors import FastmedError

    with pytest.raises(FastmedError, match="video"):
        stream_predict(predictor, tmp_path / "x.txt")


def test_corrupt_video_packet_is_counted_and_skipped(predictor, tmp_path):
    """Flip bytes inside an H.264 stream: the packet that fails to decode is one bad frame, the rest stream on."""
    pytest.importorskip("av")
    from fastmed.export.video import VideoWriter

    rng = np.random.default_rng(0)
    writer = VideoWriter(tmp_path / "clip.mp4", fps=10)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))  # noise: large packets, easy to hit
    writer.close()
    data = bytearray((tmp_path / "clip.mp4").read_bytes())
    for off in range(len(data) // 3, len(data) // 3 + 2000, 7):
        data[off] ^= 0xFF
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    rep = stream_predict(predictor, tmp_path / "bad.mp4", warmup=0)
    assert rep.bad_frames >= 1 and rep.frames >= 20
    assert rep.frames + rep.bad_frames <= 30 and rep.bad[0]["error"]


def test_missing_pyav_names_the_video_extra(predictor, tmp_path, monkeypatch):
    import sys

    from fastmed.errors import FastmedError

    monkeypatch.setitem(sys.modules, "av", None)
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    with pytest.raises(FastmedError, match=r"fastmed\[video\]"):
        stream_predict(predictor, tmp_path / "clip.mp4", warmup=0)
