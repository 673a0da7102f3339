"""Write a request body that takes the service seconds: a multipart/form-data POST
of 4 large PNGs (6000 x 6000 RGB, 36 megapixels each, 3.1 MB in all).

    /usr/bin/python3 tests/docker/make_slow_body.py OUT [IMAGES]

tests/docker/test_swarm.sh posts it (tests/docker/post_body.lua, boundary
"mfslowbatch") so that requests are still inside a replica when Swarm stops it:
each image is decoded (36 million pixels, about 0.25 s) and resized to 32 x 32,
one after the other, so a request takes about 1 s on an idle core.  Within the
service's limits: max_pixels 40 M per image, max_body_bytes 16 MiB.  The rows
repeat, so the PNG compresses to 0.8 MB but still decodes pixel by pixel.
Python's zlib only.
"""
import struct
import sys
import zlib

BOUNDARY = b"mfslowbatch"
W = H = 6000


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png():
    ramp = bytes((x * 255 // W) & 0xFF for x in range(W))
    line = bytearray(W * 3)
    line[0::3] = ramp
    line[1::3] = ramp[::-1]
    line[2::3] = bytes([77]) * W
    raw = (b"\0" + bytes(line)) * H
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    img = png()
    body = b"".join(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big%d.png\"\r\n"
                    b"Content-Type: image/png\r\n\r\n" % i + img + b"\r\n" for i in range(n))
    with open(out, "wb") as f:
        f.write(body + b"--" + BOUNDARY + b"--\r\n")


if __name__ == "__main__":
    main()
