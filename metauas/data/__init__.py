"""data: image I/O and the `changepair/1` shard format, torch-free.

The floor under generation, training, inference and evaluation: reading and encoding
images (`images`), and the shard schema with its one reader (`format`). It imports only
the base modules, NumPy and OpenCV, so a generation node, `metauas preview` and a user's
own change model need no torch to read (or write) our shards.
"""
