"""gpt2-data: datasets, tokenization into llm.c shards, and the sharded loader.

``build_dataset(name, options)`` finds a dataset by name among the built-ins and every plugin's;
``gpt2_data.prepare.prepare`` tokenizes one into shards; ``gpt2_data.loader.ShardLoader`` reads them.
"""

from importlib.metadata import version

from gpt2_data.datasets import TextDataset, build_dataset

__version__ = version("gpt2-data")
__all__ = ["TextDataset", "__version__", "build_dataset"]
