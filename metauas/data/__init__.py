"""data: image I/O and the `changepair/1` shard format, torch-free.

The floor under generation, training, inference and evaluation: reading, encoding and
drawing images (`images`), the shard schema with its one reader (`format`) and its
writer (`shards`). It imports only the base modules, NumPy and OpenCV, so a generation
node, `metauas preview` and a user's own change model read and write our shards without
torch (docs/shards.md):

    from metauas.data import ShardWriter, iter_pairs
    with ShardWriter("pairs", generator="my-renderer") as writer:
        writer.write(prompt, query, mask, {"change": "local"})
    for pair in iter_pairs("pairs"):
        ...
"""

from metauas.data.format import (
    CHANGE_TYPES,
    SCHEMA,
    ReadStats,
    count_samples,
    decode_pair,
    encode_pair,
    expand_urls,
    iter_pairs,
    iter_samples,
)
from metauas.data.images import decode, draw_mask, encode, list_images, read_image
from metauas.data.shards import ShardWriter

__all__ = [
    "CHANGE_TYPES",
    "SCHEMA",
    "ReadStats",
    "ShardWriter",
    "count_samples",
    "decode",
    "decode_pair",
    "draw_mask",
    "encode",
    "encode_pair",
    "expand_urls",
    "iter_pairs",
    "iter_samples",
    "list_images",
    "read_image",
]
