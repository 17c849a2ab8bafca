"""gpt2-core: the GPT-2 model, its presets, tokenizer, generation and weight files.

Importing this package is cheap and side-effect free; nothing is downloaded, ever.
"""

from importlib.metadata import version

from gpt2_core.errors import UserError
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.presets import PRESETS, get_preset

__version__ = version("gpt2-core")
__all__ = ["GPT", "GPTConfig", "PRESETS", "UserError", "get_preset", "__version__"]
