"""The built-in audit steps, registered on import in the order their frames are shown: heads, block cells,
per-position blocks, paths, features. A new step is one module like these plus its import here."""

from . import heads, cells, blocks, paths, features  # noqa: F401  (registration order)
