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
    ref = predictor.predict(sorted(p for p in seq.iterdir() if p.name != "frame_003.png"), batch_size=1)  # the stream's kernel
    assert [p["class"] for p in rep.predictions] == [predictor.class_names[k] for k in ref.argmax(1)]


def test_percentiles_and_errors(predictor, tmp_path):
    p = percentiles_ms([0.001] * 99 + [0.1])
    assert p["p50"] == pytest.approx(1.0) and p["p99.9"] > 50
    with pytest.raises(ValueError, match="queue_size"):
        stream_predict(predictor, tmp_path, queue_size=0)
    from fastmed.errors import FastmedError

    with pytest.raises(FastmedError, match="video"):
        stream_predict(predictor, tmp_path / "x.txt")


def test_corrupt_video_packet_keeps_every_frame_before_it(predictor, tmp_path):
    """Bytes flipped inside one packet: no crash, and the frames decoded before it are all there, unchanged.

    Whether FFmpeg then raises, conceals or drops the damaged frame is its business, so only
    what fastmed guarantees is asserted (the reporting of a raising packet is tested below).
    """
    av = pytest.importorskip("av")
    from fastmed.export.video import VideoWriter

    rng = np.random.default_rng(0)
    writer = VideoWriter(tmp_path / "clip.avi", fps=10)  # MPEG-4 Part 2: no B-frames, a frame never depends on a later one
    for _ in range(30):
        writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer.close()
    with av.open(str(tmp_path / "clip.avi")) as c:
        pos, size = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size][15]
    data = bytearray((tmp_path / "clip.avi").read_bytes())
    for off in range(pos + size // 4, pos + 3 * size // 4, 3):  # inside packet 15's payload, not the container's
        data[off] ^= 0xFF
    (tmp_path / "bad.avi").write_bytes(bytes(data))
    clean = stream_predict(predictor, tmp_path / "clip.avi", warmup=0)
    rep = stream_predict(predictor, tmp_path / "bad.avi", warmup=0)
    assert clean.frames == 30 and clean.bad_frames == 0
    got, ref = rep.predictions[:15], clean.predictions[:15]
    assert [(p["frame"], p["class"]) for p in got] == [(p["frame"], p["class"]) for p in ref]
    assert [p["prob"] for p in got] == pytest.approx([p["prob"] for p in ref], rel=1e-5)
    indices = [p["frame"] for p in rep.predictions] + [b["frame"] for b in rep.bad]
    assert len(indices) == len(set(indices)) <= 30 and all(b["error"] for b in rep.bad)


class _FakePacket:
    def __init__(self, n, error):
        self.n, self.error = n, error

    def decode(self):
        if self.error:
            raise self.error
        return [type("Frame", (), {"to_ndarray": lambda _self, format: np.full((64, 64, 3), 40 * (self.n % 6), np.uint8)})()]


def test_a_packet_that_fails_to_decode_is_reported_and_the_stream_goes_on(predictor, tmp_path, monkeypatch):
    """Packet 4 fails to decode, the container fails at packet 9: both reported with their error, no crash."""
    av = pytest.importorskip("av")
    from types import SimpleNamespace

    from fastmed.export import video

    class Container:
        streams = SimpleNamespace(video=["stream"])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def demux(self, stream):
            for n in range(12):
                if n == 9:
                    raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
                yield _FakePacket(n, av.error.InvalidDataError(1094995529, "corrupt packet") if n == 4 else None)

    monkeypatch.setattr(video, "_import_av", lambda: SimpleNamespace(error=av.error, open=lambda path: Container()))
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    rep = stream_predict(predictor, tmp_path / "clip.mp4", warmup=0)
    assert [p["frame"] for p in rep.predictions] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert [b["frame"] for b in rep.bad] == [4, 9] and rep.bad_frames == 2
    assert "corrupt packet" in rep.bad[0]["error"] and "Invalid data" in rep.bad[1]["error"]


def test_missing_pyav_names_the_video_extra(predictor, tmp_path, monkeypatch):
    import sys

    from fastmed.errors import FastmedError

    monkeypatch.setitem(sys.modules, "av", None)
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    with pytest.raises(FastmedError, match=r"fastmed\[video\]"):
        stream_predict(predictor, tmp_path / "clip.mp4", warmup=0)
