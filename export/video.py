"""Frame sources (video files via PyAV, image-sequence folders) and an annotated-video writer.

PyAV is the optional ``video`` extra (``pip install 'fastmed[video]'``);
image-sequence folders need nothing extra. Sources yield ``(index, frame)``
where ``frame`` is ``(H, W, 3)`` uint8 RGB, or an exception for a frame that
failed to decode (the caller counts and skips it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from fastmed.errors import FastmedError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
NO_AV = "reading or writing video needs PyAV: pip install 'fastmed[video]' (image-sequence folders work without it)"

Frame = tuple[int, "np.ndarray | Exception"]


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise FastmedError(NO_AV) from exc
    return av


def video_frames(path: str | os.PathLike) -> Iterator[Frame]:
    """Decode a video's first video stream; a packet that fails to decode yields its exception.

    A container that fails while being read (damaged beyond one packet) yields
    that exception as a last bad frame and ends the stream. A packet FFmpeg
    conceals or drops without an error cannot be seen here.
    """
    av = _import_av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise FastmedError(f"cannot open video {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise FastmedError(f"{path} has no video stream")
        stream = container.streams.video[0]
        index = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:  # the container itself is damaged: report it and stop
                yield index, exc
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:  # a corrupt packet: one bad frame, keep going
                yield index, exc
                index += 1
                continue
            for frame in frames:
                yield index, frame.to_ndarray(format="rgb24")
                index += 1


def folder_frames(folder: str | os.PathLike) -> Iterator[Frame]:
    """Images of a folder in name order as frames; an unreadable file yields its exception."""
    from fastmed.data.images import read_image
    from fastmed.data.images import list_images

    for index, path in enumerate(list_images(folder)):
        try:
            yield index, read_image(path)
        except FastmedError as exc:
            yield index, exc


def open_frames(source: str | os.PathLike) -> Iterator[Frame]:
    """Frames of a video file or an image-sequence folder."""
    p = Path(source)
    if p.is_dir():
        return folder_frames(p)
    if p.is_file() and is_video(p):
        return video_frames(p)
    raise FastmedError(f"stream source must be a video ({', '.join(VIDEO_SUFFIXES)}) or an image folder, got {source}")


def annotate(frame: np.ndarray, label: str, prob: float) -> np.ndarray:
    """The frame with ``label prob`` written on a dark band at the top."""
    im = Image.fromarray(frame)
    draw = ImageDraw.Draw(im)
    band = max(12, frame.shape[0] // 12)
    draw.rectangle([0, 0, frame.shape[1], band], fill=(0, 0, 0))
    draw.text((2, 1), f"{label} {prob:.2f}", fill=(255, 255, 0))
    return np.asarray(im)


class VideoWriter:
    """Write RGB frames to a video file (H.264 in .mp4/.mkv/.mov, MPEG-4 Part 2 otherwise)."""

    def __init__(self, path: str | os.PathLike, fps: float = 25.0):
        self.av = _import_av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.container = None
        self.stream = None

    def write(self, frame: np.ndarray) -> None:
        if self.container is None:
            from fractions import Fraction

            self.container = self.av.open(str(self.path), mode="w")
            codec = "libx264" if self.path.suffix.lower() in (".mp4", ".mkv", ".mov") else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1000))
            self.stream.width, self.stream.height = frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2
            self.stream.pix_fmt = "yuv420p"
        frame = frame[: self.stream.height, : self.stream.width]
        vf = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None
