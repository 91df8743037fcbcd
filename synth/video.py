"""Video files: encoding frames into a deterministic mp4 and decoding them back (PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def pick_codec() -> str:
    """libx264 when this PyAV build has it (H.264, what real datasets use), else mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV raises its own error types for an unknown codec
        return "mpeg4"


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """Write frames (F, H, W, 3) uint8 RGB as a yuv420p mp4; single-threaded, so the bytes
    depend only on the frames."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "tune": "zerolatency"}
        else:
            stream.bit_rate = 2_000_000
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def decode_video(path: Path) -> np.ndarray:
    """All frames of a video as (F, H, W, 3) uint8 RGB, decoded with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_luma(path: Path) -> np.ndarray:
    """The Y (brightness) plane of every frame, (F, H, W) uint8; skips RGB conversion."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]
    height = frames[0].shape[0] * 2 // 3
    return np.stack([f[:height] for f in frames])
