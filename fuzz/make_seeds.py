#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpus (fuzz/corpus/<target>/seed-*), small and valid, so
mutations start from real structure. Run from the repository root: python3 fuzz/make_seeds.py.
Needs Pillow (for two tiny JPEG/PNG images). `cargo fuzz` adds its own findings beside them."""
import io
import os
import struct
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent / "corpus"


def img(fmt, w=16, h=12, **kw):
    im = Image.new("RGB", (w, h))
    for y in range(h):
        for x in range(w):
            im.putpixel((x, y), (x * 16 % 256, y * 20 % 256, (x + y) * 8 % 256))
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


jpeg = img("JPEG", quality=70)
jpeg2 = img("JPEG", 24, 8, quality=40)
png = img("PNG")

# frame: format byte, width/height (u16 LE), flags, data.
def frame(fmt, w, h, flags, body):
    return bytes([fmt]) + struct.pack("<HH", w, h) + bytes([flags]) + body

write("frame", "rgb", frame(0, 8, 6, 0, bytes(range(144))))
write("frame", "gray", frame(1, 8, 6, 0, bytes(range(48))))
write("frame", "yuyv", frame(2, 8, 6, 0, bytes(range(96))))
write("frame", "nv12", frame(3, 8, 6, 0, bytes(range(72))))
write("frame", "mjpeg", frame(4, 0, 0, 0, jpeg))
write("frame", "mjpeg-scaled", frame(4, 0, 0, 1, jpeg))
write("frame", "png", frame(5, 0, 0, 0, png))
write("frame", "wrong-size", frame(2, 7, 5, 2, bytes(10)))

# jpeg_stream: read size, then a stream with garbage, two images and a truncated one.
write("jpeg_stream", "two", bytes([31]) + b"garbage" + jpeg + jpeg2)
write("jpeg_stream", "truncated", bytes([7]) + jpeg + jpeg2[: len(jpeg2) // 2] + jpeg)
write("jpeg_stream", "bytewise", bytes([0]) + jpeg)

# multipart: content type line, URL line, body.
def part(data, length=True):
    head = b"--frame\r\nContent-Type: image/jpeg\r\n"
    if length:
        head += b"Content-Length: %d\r\n" % len(data)
    return head + b"\r\n" + data + b"\r\n"

write("multipart", "lengths",
      b"multipart/x-mixed-replace; boundary=frame\nhttp://user:pw@cam.local:81/stream?x=1\n"
      + bytes([63]) + part(jpeg) + part(jpeg2))
write("multipart", "no-lengths",
      b'multipart/x-mixed-replace;boundary="--frame"\nhttp://192.168.1.20/video.mjpg\n'
      + bytes([9]) + part(jpeg, False) + part(jpeg2, False) + b"--frame--\r\n")
write("multipart", "headers-only",
      b"multipart/x-mixed-replace; boundary=frame\nhttp://[::1]:8080/\n" + bytes([0]) + b"--frame\r\nX: y\r\n")

# config: the reference configuration, the worked examples and a few small ones.
repo = ROOT.parent.parent
write("config", "reference", (repo / "config/lookout.toml").read_text())
for p in sorted((repo / "config/examples").glob("*.toml")):
    write("config", "example-" + p.stem, p.read_text())
write("config", "small", """
device_id = "line-3"
[source]
type = "synthetic"
fps = 5
[[rules]]
name = "defect"
labels = ["scratch", "dent"]
min_score = 0.8
frames = 3
window = 5
cooldown_secs = 10
[[sinks]]
type = "jsonl"
path = "events.jsonl"
[http]
listen = "127.0.0.1:9090"
""")

# labels: files and ONNX metadata values.
write("labels", "file", "ok\nscratch\n dent \nmissing\n\n")
write("labels", "json-list", '["ok", "scratch", "dent"]')
write("labels", "json-dict", '{"0": "ok", "1": "scratch", "2": "dent"}')
write("labels", "python-dict", "{0: 'ok', 1: 'scratch', 2: \"dent\"}")
write("labels", "plain", "ok, scratch, dent")
