"""changegen: synthetic change pairs (prompt, query, mask) written as WebDataset shards.

Python API (what `metauas generate` calls):

    from metauas.changegen import GenerateConfig, generate_dataset
    index_json = generate_dataset(GenerateConfig(out="pairs", num_pairs=240, builtin_split="train"))

Importing this package never imports torch; only the `lama` inpainter does. The shard
format and writer it uses are `metauas.data` (CHANGE_TYPES is re-exported from there).
"""

from metauas.changegen.config import GenerateConfig
from metauas.changegen.preview import contact_sheet
from metauas.changegen.run import generate_dataset
from metauas.data.format import CHANGE_TYPES

__all__ = ["CHANGE_TYPES", "GenerateConfig", "contact_sheet", "generate_dataset"]
